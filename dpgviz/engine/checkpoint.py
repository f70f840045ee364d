"""Loading users' nanoGPT-style diffusion checkpoints (and the embedded default) safely.

`torch.load(weights_only=True)` only, so a checkpoint cannot run code; the vocabulary goes
through `core.vocab`'s restricted unpickler. Everything a user can get wrong raises
CheckpointError with a one-line message the CLI and GUI show as is.
"""

from __future__ import annotations

import logging
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from dpgviz.core.discovery import DEFAULT_MODEL_NAME, default_model_entry, find_meta
from dpgviz.core.model_info import ModelInfo
from dpgviz.core.vocab import VocabError, Vocabulary
from dpgviz.engine.model import DiffusionGPT, ModelConfig

log = logging.getLogger(__name__)

_REQUIRED_ARGS = ("n_layer", "n_head", "n_embd", "block_size", "vocab_size")
_COMPILE_PREFIX = "_orig_mod."  # torch.compile wraps the module and prefixes every key


class CheckpointError(ValueError):
    """A checkpoint cannot be used; the message says why in one line."""


@dataclass
class LoadedModel:
    model: DiffusionGPT
    vocab: Vocabulary
    config: ModelConfig
    path: Path
    meta_path: Path | None
    device: torch.device
    name: str

    @property
    def params(self) -> int:
        return self.model.num_params()

    def info(self, threads: int = 0) -> ModelInfo:
        """The typed description the worker sends to the GUI (and `models --json` prints)."""
        return ModelInfo(
            name=self.name,
            path=str(self.path),
            meta=str(self.meta_path) if self.meta_path else None,
            block_size=self.config.block_size,
            params=self.params,
            itos=tuple(self.vocab.itos),
            n_ids=self.vocab.n_ids,
            device=str(self.device),
            threads=threads,
        )


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise CheckpointError("--device cuda was asked for, but no CUDA device is available")
    if device not in ("cpu", "cuda"):
        raise CheckpointError(f"device must be auto, cpu or cuda, got {device!r}")
    return torch.device(device)


def read_checkpoint(path: str | Path) -> dict:
    """torch.load a checkpoint dict with weights_only=True, or raise CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unsafe content"
        raise CheckpointError(f"{path} is not a loadable checkpoint (refused by weights_only: {first})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        # A cut-short zip surfaces as any of these from inside torch's reader.
        raise CheckpointError(f"{path} is not a checkpoint or is cut short ({type(exc).__name__})") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "model_args" not in ckpt:
        raise CheckpointError(f"{path} is not a nanoGPT-style checkpoint (needs 'model' and 'model_args')")
    return ckpt


def check_model_args(model_args: dict, path: Path) -> ModelConfig:
    """Refuse checkpoints dpgviz cannot sample from, with the reason."""
    missing = [k for k in _REQUIRED_ARGS if k not in model_args]
    if missing:
        raise CheckpointError(f"{path}: model_args lacks {', '.join(missing)}")
    attention = model_args.get("attention_type")
    if attention is None:
        raise CheckpointError(f"{path}: model_args has no attention_type; not a diffusion checkpoint")
    if attention == "causal":
        raise CheckpointError(f"{path}: attention_type 'causal' is an autoregressive model, not a diffusion model")
    if attention != "bidirectional":
        raise CheckpointError(f"{path}: unknown attention_type {attention!r}")
    if model_args.get("binary_classification"):
        raise CheckpointError(f"{path}: binary_classification head; dpgviz needs a token-prediction head")
    return ModelConfig.from_model_args(model_args)


def load_vocab(ckpt: dict, path: Path, meta: str | Path | None, model_vocab_size: int) -> tuple[Vocabulary, Path | None]:
    """Vocabulary from --meta, else meta.pkl nearby, else one embedded in the checkpoint."""
    if meta is not None:
        return Vocabulary.load(meta, model_vocab_size), Path(meta)
    dataset = (ckpt.get("config") or {}).get("dataset") if isinstance(ckpt.get("config"), dict) else None
    found = find_meta(path, dataset)
    if found is not None:
        return Vocabulary.load(found, model_vocab_size), found
    if isinstance(ckpt.get("vocab"), dict):
        return Vocabulary.from_meta(ckpt["vocab"], model_vocab_size), None
    raise CheckpointError(f"no vocabulary for {path}: put meta.pkl beside it or pass --meta")


def load_model(path: str | Path | None = None, meta: str | Path | None = None, device: str = "auto") -> LoadedModel:
    """Load a checkpoint (None = the embedded default) ready to sample, on `device`."""
    name = DEFAULT_MODEL_NAME
    if path is None:
        entry = default_model_entry()
        if not entry.path.is_file():
            raise CheckpointError("the embedded default model is missing from this install; pass --model")
        path, meta = entry.path, meta or entry.meta
    else:
        name = Path(path).name if Path(path).name != "ckpt.pt" else f"{Path(path).parent.name}/ckpt.pt"
    path = Path(path)
    dev = resolve_device(device)
    ckpt = read_checkpoint(path)
    config = check_model_args(dict(ckpt["model_args"]), path)
    try:
        vocab, meta_path = load_vocab(ckpt, path, meta, config.vocab_size)
    except VocabError as exc:
        raise CheckpointError(f"vocabulary for {path}: {exc}") from None
    state = {k.removeprefix(_COMPILE_PREFIX): v for k, v in ckpt["model"].items()}
    config.dropout = 0.0
    model = DiffusionGPT(config)
    # nanoGPT's state dicts may carry non-parameter buffers (e.g. attention bias); ignore those.
    state = {k: v for k, v in state.items() if not k.endswith(".attn.bias") or k in model.state_dict()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        summary = str(exc).splitlines()[0]
        raise CheckpointError(f"{path}: weights do not match model_args ({summary})") from None
    model.to(dev).eval()
    log.info("loaded %s (%d params) on %s", path, model.num_params(), dev)
    return LoadedModel(model, vocab, config, path, meta_path, dev, name)
