"""The model adapter: what the sampler needs from any masked-diffusion model.

An adapter is three things: a tokenizer (`core.vocab.Vocabulary`: encode, decode, the
mask id, each token's display string and width, the ids never to sample), the logits
for a batch of ids, and the longest sequence the model takes. dpgviz's id space is the
vocabulary's: real tokens 0..V-1, the mask at V (`vocab.mask_id`), reserved ids above.
A model whose own ids differ (a Hugging Face tokenizer puts [MASK] at 103) maps them in
its adapter, so the sampler, the store and the GUI never see the model's numbering.

LLaDA and Dream have theirs (engine.dllm: `--model llada:FOLDER`, `dream:FOLDER`). Plugging
in another model with local weights is a class with these
three members (README "Hugging Face models and your own models"). Put it in a Python
file with a `load_adapter(device, dtype)` function and pass the file as the model
(`--model my_model.py`, in the window too): `load_adapter_file` imports it, as
`python my_model.py` would run it, only when it is named that way, never from a scan.

    class MyAdapter:
        def __init__(self, model, vocab, block_size):
            self.model, self.vocab, self.block_size = model, vocab, block_size

        def logits(self, ids: torch.Tensor) -> torch.Tensor:
            # ids: (B, T) in dpgviz's id space -> (B, T, >= V) logits; columns past V-1 are ignored
            return self.model(ids).logits

The prefix cache (`--cache prefix`, engine.model) is a capability, not a type: an adapter
that can run part of its window against cached keys and values says so with a true
`supports_prefix_cache` and two more methods, `logits_filling_cache(ids, prefix_len)` ->
(logits, cache) and `logits_with_cache(ids, cache)` -> logits of the positions after the
prefix. GPTAdapter has them when its model does (engine.model.DiffusionGPT); the Hugging
Face, LLaDA / Dream and adapter-file models do not, and the sampler refuses the setting
for them in one line (`check_prefix_cache`).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch

from dpgviz.core.settings import SettingsError
from dpgviz.core.vocab import Vocabulary
from dpgviz.engine.model import PrefixCache


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

    @property
    def supports_prefix_cache(self) -> bool:
        """True when the wrapped module has DiffusionGPT's cached forward (a bare module may not)."""
        return callable(getattr(self.model, "forward_with_cache", None))

    def logits_filling_cache(self, ids: torch.Tensor, prefix_len: int) -> tuple[torch.Tensor, PrefixCache]:
        """(B, T) ids -> the plain logits (B, T, V') and the K/V of the first `prefix_len` positions."""
        return self.model.forward_filling_cache(ids, prefix_len)

    def logits_with_cache(self, ids: torch.Tensor, cache: PrefixCache) -> torch.Tensor:
        """(B, n) ids that follow the cached prefix -> their logits (B, n, V')."""
        return self.model.forward_with_cache(ids, cache)


def check_prefix_cache(adapter: ModelAdapter) -> None:
    """Raise SettingsError (one line) when `adapter` cannot run with the prefix cache."""
    if not getattr(adapter, "supports_prefix_cache", False):
        raise SettingsError(
            f"the prefix cache needs a model that can reuse cached keys and values (the built-in GPT); "
            f"this one ({type(adapter).__name__}) cannot: turn the prefix cache off (--cache none)"
        )


class AdapterFileError(ValueError):
    """A `--model FILE.py` cannot give an adapter; the message says why, in one line."""


def is_adapter_file(path: str | Path) -> bool:
    return Path(path).suffix == ".py"


def load_adapter_file(path: str | Path, device: torch.device, dtype: torch.dtype) -> ModelAdapter:
    """Import the Python file `path` and return its `load_adapter(device, dtype)`, checked."""
    path = Path(path)
    if not path.is_file():
        raise AdapterFileError(f"adapter file {path} does not exist")
    spec = importlib.util.spec_from_file_location(f"dpgviz_adapter_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise AdapterFileError(f"{path} cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # the user's code: any error, said in one line
        raise AdapterFileError(f"{path} failed to import ({type(exc).__name__}: {exc})") from None
    make = getattr(module, "load_adapter", None)
    if not callable(make):
        raise AdapterFileError(f"{path} has no load_adapter(device, dtype) function")
    try:
        adapter = make(device=device, dtype=dtype)
    except Exception as exc:
        raise AdapterFileError(f"{path}: load_adapter failed ({type(exc).__name__}: {exc})") from None
    missing = [m for m in ("vocab", "block_size", "logits") if not hasattr(adapter, m)]
    if missing:
        raise AdapterFileError(f"{path}: load_adapter returned a {type(adapter).__name__} without {', '.join(missing)}")
    if not isinstance(adapter.vocab, Vocabulary):
        raise AdapterFileError(f"{path}: the adapter's vocab is a {type(adapter.vocab).__name__}, not a Vocabulary")
    if int(adapter.block_size) < 1:
        raise AdapterFileError(f"{path}: the adapter's block_size is {adapter.block_size}")
    return adapter


def as_adapter(model: torch.nn.Module | ModelAdapter, vocab: Vocabulary) -> ModelAdapter:
    """An adapter as is; a bare nanoGPT-style module wrapped in GPTAdapter."""
    if isinstance(model, ModelAdapter) and not isinstance(model, torch.nn.Module):
        return model
    return GPTAdapter(model, vocab)
