"""Test data for session and export tests: step stores from real runs of a tiny random model.

A root branch of one sampler run, and a child branch forked from one of its remask
records: the child starts with the edited record (a few visible tokens changed by hand)
and continues sampling from there, as the app's edit-and-restart does.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from vocab_data import shakespeare_vocab

from dpgviz.core.settings import GenerationSettings
from dpgviz.core.vocab import Vocabulary
from dpgviz.engine.model import DiffusionGPT, ModelConfig
from dpgviz.engine.sampler import Sampler, StartState
from dpgviz.store.step_store import StepStore

FORK_RECORD = 4  # a remask record of the root (initial, then prediction/remask pairs)


@functools.lru_cache(maxsize=1)
def _sampler() -> Sampler:
    vocab = shakespeare_vocab()
    torch.manual_seed(0)
    model = DiffusionGPT(ModelConfig(n_layer=2, n_head=2, n_embd=32, block_size=128, vocab_size=66))
    return Sampler(model, vocab)


def sampled_store(length: int = 64, steps: int = 8) -> tuple[StepStore, Vocabulary, GenerationSettings]:
    """A fresh store with a root run and one edited child branch (branch '1', fork at FORK_RECORD)."""
    sampler = _sampler()
    settings = GenerationSettings(length=length, steps=steps)
    root_records = list(sampler.run(settings))
    store = StepStore(sampler.layout(settings), capacity=8)
    root = store.new_branch(settings.to_dict(), label="root")
    for rec in root_records:
        store.append_record(rec, root.id)

    forked = root_records[FORK_RECORD]
    assert forked.kind == "remask", forked.kind
    tokens = forked.tokens.astype(np.int64)
    visible = np.flatnonzero(tokens != sampler.vocab.mask_id)[:3]
    edited = np.zeros(length, dtype=bool)
    edited[visible] = True
    tokens[visible] = sampler.vocab.itos.index("e")
    child_settings = GenerationSettings(length=length, steps=steps, seed=1)
    child = store.new_branch(child_settings.to_dict(), parent=root.id, fork_record=FORK_RECORD, label="edit")
    start = StartState(tokens=tokens, iteration=forked.iteration + 1, edited=edited)
    for rec in sampler.run(child_settings, start):
        store.append_record(rec, child.id)
    return store, sampler.vocab, settings
