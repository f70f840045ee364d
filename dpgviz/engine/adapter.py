"""The model adapter: what the sampler needs from any masked-diffusion model.

An adapter is three things: a tokenizer (`core.vocab.Vocabulary`: encode, decode, the
mask id, each token's display string and width, the ids never to sample), the logits
for a batch of ids, and the longest sequence the model takes. dpgviz's id space is the
vocabulary's: real tokens 0..V-1, the mask at V (`vocab.mask_id`), reserved ids above.
A model whose own ids differ (a Hugging Face tokenizer puts [MASK] at 103) maps them in
its adapter, so the sampler, the store and the GUI never see the model's numbering.

Plugging in another model (LLaDA, Dream, ... with local weights) is a class with these
three members; see README "Bring your own model":

    class MyAdapter:
        def __init__(self, model, vocab, block_size):
            self.model, self.vocab, self.block_size = model, vocab, block_size

        def logits(self, ids: torch.Tensor) -> torch.Tensor:
            # ids: (B, T) in dpgviz's id space -> (B, T, >= V) logits; columns past V-1 are ignored
            return self.model(ids).logits
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from dpgviz.core.vocab import Vocabulary


@runtime_checkable
class ModelAdapter(Protocol):
    """Tokenizer + logits for a batch of ids + the mask id (through the tokenizer)."""

    vocab: Vocabulary
    block_size: int  # longest sequence `logits` accepts

    def logits(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, T) ids in dpgviz's id space -> (B, T, >= vocab.size) logits (any float dtype)."""
        ...


class GPTAdapter:
    """The seed's bidirectional GPT (`engine.model.DiffusionGPT`): ids are its own."""

    def __init__(self, model: torch.nn.Module, vocab: Vocabulary) -> None:
        self.model = model.eval()
        self.vocab = vocab
        self.block_size = int(model.config.block_size)

    def logits(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model(ids)


def as_adapter(model: torch.nn.Module | ModelAdapter, vocab: Vocabulary) -> ModelAdapter:
    """An adapter as is; a bare nanoGPT-style module wrapped in GPTAdapter."""
    if isinstance(model, ModelAdapter) and not isinstance(model, torch.nn.Module):
        return model
    return GPTAdapter(model, vocab)
