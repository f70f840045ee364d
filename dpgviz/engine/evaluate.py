"""Quality numbers for any model: held-out masked CE and how corpus-like its samples are.

1. Masked-token cross-entropy (nats, softmax over the real vocabulary) on the last 10%
   of a text, averaged over mask ratios 0.1, 0.3, 0.5, 0.7, 0.9.
2. Word realism: the share of alphabetic words in 10 seeded 512-token samples (default
   settings) that occur somewhere in the text.
"""

from __future__ import annotations

import re

import numpy as np
import torch
from torch.nn import functional as F

from dpgviz.core.settings import GenerationSettings
from dpgviz.engine.checkpoint import LoadedModel
from dpgviz.engine.sampler import Sampler
from dpgviz.engine.train import EVAL_RATIOS, split_corpus

_WORD = re.compile(r"[A-Za-z]+")


@torch.inference_mode()
def heldout_ce(loaded: LoadedModel, text: str, max_windows: int = 0, batch_size: int = 8, seed: int = 0) -> dict[float, float]:
    """Masked CE at each ratio over non-overlapping windows of the held-out 10% of `text`."""
    _, held = split_corpus(text)
    vocab, model = loaded.vocab, loaded.model
    block = min(loaded.config.block_size, 1024, len(held))
    ids = vocab.encode(held)
    n_windows = len(ids) // block
    if max_windows:
        n_windows = min(n_windows, max_windows)
    windows = torch.as_tensor(ids[: n_windows * block].reshape(n_windows, block), device=loaded.device)
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for ratio in EVAL_RATIOS:
        total, count = 0.0, 0
        for start in range(0, n_windows, batch_size):
            x0 = windows[start : start + batch_size]
            is_masked = (torch.rand(x0.shape, generator=gen) < ratio).to(x0.device)
            xt = torch.where(is_masked, vocab.mask_id, x0)
            logits = model(xt)[..., : vocab.size].float()
            ce = F.cross_entropy(logits.transpose(1, 2), x0, reduction="none")
            total += float((ce * is_masked).sum())
            count += int(is_masked.sum())
        out[ratio] = total / max(1, count)
    return out


def word_realism(loaded: LoadedModel, text: str, samples: int = 10, length: int = 512) -> tuple[float, list[str]]:
    """Share of alphabetic words in seeded default-settings samples that occur in `text`."""
    known = set(_WORD.findall(text))
    sampler = Sampler(loaded.model, loaded.vocab, loaded.device)
    texts, hits, total = [], 0, 0
    for seed in range(samples):
        settings = GenerationSettings(length=min(length, loaded.config.block_size), seed=seed)
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
