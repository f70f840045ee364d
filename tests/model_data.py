"""A tiny random checkpoint with the Shakespeare vocabulary, for tests that need a model to run.

One layer, two heads, 32 dimensions, seeded: fast on a CPU and the same every time. The
window and workspace tests load it through the worker as a user's checkpoint would be.
"""

from __future__ import annotations

import pickle
from pathlib import Path

from vocab_data import shakespeare_vocab


def tiny_checkpoint(folder: Path, block_size: int = 128) -> Path:
    """Write `folder/ckpt.pt` and `folder/meta.pkl`; returns the checkpoint's path."""
    import torch

    from dpgviz.engine.model import DiffusionGPT, ModelConfig

    folder.mkdir(parents=True, exist_ok=True)
    vocab = shakespeare_vocab()
    torch.manual_seed(0)
    config = ModelConfig(block_size=block_size, vocab_size=vocab.size + 1, n_layer=1, n_head=2, n_embd=32)
    torch.save({"model": DiffusionGPT(config).state_dict(), "model_args": config.to_model_args()}, folder / "ckpt.pt")
    with open(folder / "meta.pkl", "wb") as f:
        pickle.dump(vocab.to_meta(), f)
    return folder / "ckpt.pt"
