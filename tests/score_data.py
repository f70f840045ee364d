"""Checkpoints for the compare --models, score and verify tests: a tiny model, the same with its
weights perturbed, and one with another vocabulary.

The tiny model is model_data.tiny_checkpoint (one layer, 32 dimensions, seeded). The
perturbed copy adds seeded noise to every weight, as "checkpoint 2 of the same run" would
differ: same vocabulary, same shapes, other beliefs.
"""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

from model_data import tiny_checkpoint


def tiny_pair(folder: Path, block_size: int = 64, scale: float = 0.5) -> tuple[Path, Path]:
    """(tiny/ckpt.pt, perturbed/ckpt.pt) under `folder`, each with its meta.pkl."""
    import torch

    first = tiny_checkpoint(folder / "tiny", block_size=block_size)
    (folder / "perturbed").mkdir(parents=True, exist_ok=True)
    ckpt = torch.load(first, weights_only=True)
    gen = torch.Generator().manual_seed(1)
    for name, weights in ckpt["model"].items():
        if weights.is_floating_point():
            ckpt["model"][name] = weights + scale * torch.randn(weights.shape, generator=gen) * weights.std().clamp_min(0.02)
    second = folder / "perturbed" / "ckpt.pt"
    torch.save(ckpt, second)
    shutil.copy(first.with_name("meta.pkl"), second.with_name("meta.pkl"))
    return first, second


def other_vocab_checkpoint(folder: Path) -> Path:
    """A tiny model over the letters a-z only: another vocabulary than the Shakespeare one."""
    import torch

    from dpgviz.core.vocab import Vocabulary
    from dpgviz.engine.model import DiffusionGPT, ModelConfig

    folder.mkdir(parents=True, exist_ok=True)
    vocab = Vocabulary(itos=tuple("abcdefghijklmnopqrstuvwxyz "))
    torch.manual_seed(0)
    config = ModelConfig(block_size=64, vocab_size=vocab.size + 1, n_layer=1, n_head=2, n_embd=32)
    torch.save({"model": DiffusionGPT(config).state_dict(), "model_args": config.to_model_args()}, folder / "ckpt.pt")
    with open(folder / "meta.pkl", "wb") as f:
        pickle.dump(vocab.to_meta(), f)
    return folder / "ckpt.pt"
