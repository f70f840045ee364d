"""The model explorer's engine: how well loaded models repair corrupted real text.

    predict(loaded, ids)          one forward pass over (B, N) corrupted windows -> Prediction
    sample_windows(...)           seeded windows of a text's ids (the held-out 10% for a corpus)
    explore_batch(models, ...)    samples x ratios x models -> one BatchRow per (model, ratio)

The corruption itself (`core.corruption`) is numpy and the same for every model: each
(ratio, sample) pair draws its own seed from `seed`, so all models see the very same
corrupted windows, and a rerun with the same seed repeats the table. The models must
share a vocabulary (same `itos`): a sample is one id array.

Imported only in the worker process and by the CLI (torch).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from dpgviz.core.corruption import CorruptionSettings, corrupt, per_window_metrics
from dpgviz.core.vocab import Vocabulary
from dpgviz.engine.checkpoint import LoadedModel
from dpgviz.engine.train import split_corpus

log = logging.getLogger(__name__)

BATCH_WINDOWS = 16  # windows per forward pass: 16 x 256 tokens of the default model is ~0.1 s on a CPU core
METRICS = ("accuracy", "true_prob", "ce")


class ExploreError(ValueError):
    """Explorer input a user can fix (text too short, vocabularies that differ); one line."""


@dataclass
class Prediction:
    """What a model believed at every position of (B, N) windows (numpy, on the CPU)."""

    predicted: np.ndarray  # (B, N) int64 argmax over the real vocabulary
    log_p_true: np.ndarray  # (B, N) float32 log p(true token)
    top_ids: np.ndarray  # (B, N, K) int64, most probable first
    top_probs: np.ndarray  # (B, N, K) float32
    entropy: np.ndarray  # (B, N) float32 nats


@dataclass
class BatchRow:
    """One (model, ratio) cell of the batch table: means and spreads (std) over samples."""

    model: str
    ratio: float
    accuracy: float
    true_prob: float
    ce: float
    n: int  # samples (windows) evaluated
    accuracy_std: float = 0.0
    true_prob_std: float = 0.0
    ce_std: float = 0.0
    positions: int = 0  # corrupted positions scored in all samples together

    def result(self) -> dict:
        """The `explore --json` row: exactly model, ratio, accuracy, true_prob, ce, n."""
        return {
            "model": self.model, "ratio": self.ratio, "accuracy": self.accuracy,
            "true_prob": self.true_prob, "ce": self.ce, "n": self.n,
        }

    def to_dict(self) -> dict:
        return {**self.result(), "accuracy_std": self.accuracy_std, "true_prob_std": self.true_prob_std,
                "ce_std": self.ce_std, "positions": self.positions}


def block_size_of(loaded: LoadedModel) -> int:
    return int(loaded.adapter.block_size)


@torch.inference_mode()
def predict(loaded: LoadedModel, ids: np.ndarray, targets: np.ndarray, top_k: int = 8) -> Prediction:
    """One forward pass of `loaded` over corrupted windows `ids` (B, N); `targets` the true ids."""
    ids = np.asarray(ids, dtype=np.int64)
    assert ids.ndim == 2 and ids.shape == np.shape(targets), (ids.shape, np.shape(targets))
    v = loaded.vocab.size
    x = torch.as_tensor(ids, device=loaded.device)
    logits = loaded.adapter.logits(x)[..., :v].float()  # (B, N, V): the real vocabulary only
    never = [i for i in loaded.vocab.never_sample if 0 <= i < v]
    if never:  # special tokens ([CLS], [UNK], ...) are never a prediction, as in the sampler
        logits[..., never] = -float("inf")
    logp = torch.log_softmax(logits, dim=-1)  # (B, N, V)
    y = torch.as_tensor(np.asarray(targets, dtype=np.int64), device=loaded.device)
    log_p_true = logp.gather(-1, y[..., None])[..., 0]  # (B, N)
    probs = logp.exp()
    top_probs, top_ids = probs.topk(min(top_k, v), dim=-1)  # (B, N, K)
    entropy = -(probs * logp).sum(-1)  # (B, N)
    return Prediction(
        predicted=top_ids[..., 0].cpu().numpy(),
        log_p_true=log_p_true.cpu().numpy(),
        top_ids=top_ids.cpu().numpy(),
        top_probs=top_probs.cpu().numpy(),
        entropy=entropy.cpu().numpy(),
    )


def prediction_arrays(pred: Prediction, index: int = 0) -> dict[str, np.ndarray]:
    """One window's arrays of a Prediction, by field name (what ExploreSampleDone carries)."""
    return {k: np.ascontiguousarray(v[index]) for k, v in dataclasses.asdict(pred).items()}


def source_ids(text: str, vocab: Vocabulary, held_out: bool = True) -> np.ndarray:
    """Ids of the text windows are drawn from: its held-out last 10% (engine.train.split_corpus)."""
    part = split_corpus(text)[1] if held_out else text
    return vocab.encode(part)


def sample_windows(ids: np.ndarray, length: int, samples: int, seed: int) -> np.ndarray:
    """`samples` windows (samples, length) of `ids` at seeded random offsets."""
    if len(ids) < length:
        raise ExploreError(f"the text has {len(ids)} tokens, fewer than the window length {length}")
    offsets = np.random.default_rng(seed).integers(0, len(ids) - length + 1, samples)
    return np.asarray(ids)[offsets[:, None] + np.arange(length)[None, :]]


def sample_seed(seed: int, ratio_index: int, sample: int) -> int:
    """The corruption seed of one (ratio, sample) cell: independent streams from one user seed."""
    return int(np.random.SeedSequence([seed, ratio_index, sample]).generate_state(1)[0])


def check_same_vocab(models: Sequence[tuple[str, LoadedModel]]) -> Vocabulary:
    first_name, first = models[0]
    for name, loaded in models[1:]:
        if loaded.vocab.itos != first.vocab.itos:
            raise ExploreError(f"{name} and {first_name} have different vocabularies; compare models that share one")
    return first.vocab


def explore_batch(
    models: Sequence[tuple[str, LoadedModel]],
    ids: np.ndarray,
    ratios: Sequence[float],
    settings: CorruptionSettings,
    samples: int,
    length: int,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> list[BatchRow]:
    """Rows for every (model, ratio), models outermost; [] rows so far when `should_stop()` says so.

    `ids`: the text to draw windows from (e.g. `source_ids`); fragments copy from it too.
    `progress(done, total)` after each forward pass; `should_stop()` is checked before each.
    """
    if not models:
        raise ExploreError("no model to explore")
    vocab = check_same_vocab(models)
    length = min(length, *(block_size_of(m) for _, m in models))
    windows = sample_windows(ids, length, samples, seed)  # (S, N)
    choices = np.setdiff1d(np.arange(vocab.size), np.asarray(vocab.never_sample, dtype=np.int64))
    corrupted = []  # per ratio: (S, N) ids and (S, N) is_corrupted
    for r, ratio in enumerate(ratios):
        cs = [
            corrupt(w, dataclasses.replace(settings, ratio=float(ratio), seed=sample_seed(seed, r, s)),
                    vocab.mask_id, choices, source=ids)
            for s, w in enumerate(windows)
        ]
        corrupted.append((np.stack([c.ids for c in cs]), np.stack([c.is_corrupted for c in cs])))
    n_batches = -(-samples // BATCH_WINDOWS)
    total, done = len(models) * len(ratios) * n_batches, 0
    rows: list[BatchRow] = []
    for name, loaded in models:
        for r, ratio in enumerate(ratios):
            x, sel = corrupted[r]
            per: dict[str, list[np.ndarray]] = {k: [] for k in METRICS}
            for start in range(0, samples, BATCH_WINDOWS):
                if should_stop is not None and should_stop():
                    return rows
                part = slice(start, start + BATCH_WINDOWS)
                pred = predict(loaded, x[part], windows[part], top_k=1)
                for k, v in per_window_metrics(pred.log_p_true, pred.predicted, windows[part], sel[part]).items():
                    per[k].append(v)
                done += 1
                if progress is not None:
                    progress(done, total)
            stats = {k: np.concatenate(v) for k, v in per.items()}
            rows.append(BatchRow(
                model=name, ratio=float(ratio),
                accuracy=float(np.nanmean(stats["accuracy"])), true_prob=float(np.nanmean(stats["true_prob"])),
                ce=float(np.nanmean(stats["ce"])), n=samples,
                accuracy_std=float(np.nanstd(stats["accuracy"])), true_prob_std=float(np.nanstd(stats["true_prob"])),
                ce_std=float(np.nanstd(stats["ce"])), positions=int(sel.sum()),
            ))
    return rows
