"""Quality numbers for any model: held-out masked CE and how corpus-like its samples are.

1. Masked-token cross-entropy (nats, softmax over the real vocabulary) on the last 10%
   of a text, averaged over mask ratios 0.1, 0.3, 0.5, 0.7, 0.9 (train.masked_ce_by_ratio,
   the same loop training's periodic evaluation runs).
2. Word realism: the share of alphabetic words in 10 seeded 512-token samples (default
   settings) that occur somewhere in the text.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import numpy as np
import torch

from dpgviz.core.settings import GenerationSettings
from dpgviz.engine.checkpoint import LoadedModel
from dpgviz.engine.sampler import Sampler
from dpgviz.engine.train import masked_ce_by_ratio, split_corpus

_WORD = re.compile(r"[A-Za-z]+")


@torch.inference_mode()
def heldout_ce(loaded: LoadedModel, text: str, max_windows: int = 0, batch_size: int = 8, seed: int = 0) -> dict[float, float]:
    """Masked CE at each ratio over non-overlapping windows of the held-out 10% of `text`."""
    _, held = split_corpus(text)
    vocab, logits = loaded.vocab, loaded.adapter.logits  # masked_ce calls it as it calls a model
    ids = vocab.encode(held)  # one id per character for a char model, fewer for subword tokens
    block = min(loaded.block_size, 1024, len(ids))
    n_windows = len(ids) // block
    if max_windows:
        n_windows = min(n_windows, max_windows)
    windows = torch.as_tensor(ids[: n_windows * block].reshape(n_windows, block), device=loaded.device)
    gen = torch.Generator().manual_seed(seed)

    def batches() -> Iterator[torch.Tensor]:
        for start in range(0, n_windows, batch_size):
            yield windows[start : start + batch_size]

    return masked_ce_by_ratio(logits, batches, vocab.size, vocab.mask_id, gen)


def word_realism(loaded: LoadedModel, text: str, samples: int = 10, length: int = 512) -> tuple[float, list[str]]:
    """Share of alphabetic words in seeded default-settings samples that occur in `text`."""
    known = set(_WORD.findall(text))
    sampler = Sampler(loaded.adapter, loaded.vocab, loaded.device)
    texts, hits, total = [], 0, 0
    for seed in range(samples):
        settings = GenerationSettings(length=min(length, loaded.block_size), seed=seed)
        final = None
        for record in sampler.run(settings):
            final = record
        sample = loaded.vocab.decode(final.tokens)
        texts.append(sample)
        words = _WORD.findall(sample)
        hits += sum(w in known for w in words)
        total += len(words)
    return hits / max(1, total), texts


def evaluate(loaded: LoadedModel, text: str, max_windows: int = 0, samples: int = 10) -> dict:
    ces = heldout_ce(loaded, text, max_windows=max_windows)
    share, texts = word_realism(loaded, text, samples=samples)
    return {
        "masked_ce": float(np.mean(list(ces.values()))),
        "masked_ce_by_ratio": {str(k): v for k, v in ces.items()},
        "word_share": share,
        "samples": texts,
    }
