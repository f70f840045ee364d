"""Loading users' nanoGPT-style diffusion checkpoints (and the embedded default) safely.

`load_model` takes a checkpoint file (or None: the embedded default) or a Hugging Face
masked-LM folder (config.json + weights + tokenizer, read by `engine.hf`), on a device and
in a dtype, and returns a LoadedModel whose `adapter` the sampler drives.

`torch.load(weights_only=True)` only, so a checkpoint cannot run code; the vocabulary goes
through `core.vocab`'s restricted unpickler. The seed's trainer pickles its own classes
into checkpoints (`config` is a `train_utils.StickyStageConfig`); those get an inert
`StandIn` that keeps the pickled state as plain data, registered with weights_only for
that one load. Names from torch, the standard library (`os`, `subprocess`, `builtins`, ...)
and names that look like functions stay refused. Everything a user can get wrong raises
CheckpointError with a one-line message the CLI and GUI show as is.
"""

from __future__ import annotations

import logging
import pickle
import re
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from dpgviz.core.discovery import (
    DEFAULT_MODEL_NAME,
    default_model_entry,
    find_meta,
    is_hf_folder,
    meta_search_places,
    split_prefixed,
)
from dpgviz.core.model_info import ModelInfo
from dpgviz.core.vocab import VocabError, Vocabulary
from dpgviz.engine.adapter import AdapterFileError, GPTAdapter, ModelAdapter, is_adapter_file, load_adapter_file
from dpgviz.engine.model import DiffusionGPT, ModelConfig

log = logging.getLogger(__name__)

_REQUIRED_ARGS = ("n_layer", "n_head", "n_embd", "block_size", "vocab_size")
_COMPILE_PREFIX = "_orig_mod."  # torch.compile wraps the module and prefixes every key
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# Never stood in for, whatever weights_only says: modules whose names a malicious pickle
# reaches for. The standard library as a whole is refused as well (sys.stdlib_module_names);
# this list also covers aliases and third-party runners outside it.
_DENIED_MODULES = frozenset({
    "os", "posix", "nt", "subprocess", "sys", "builtins", "__builtin__", "shutil", "importlib",
    "pickle", "_pickle", "socket", "runpy", "code", "codeop", "ctypes", "marshal", "pty",
    "multiprocessing", "threading", "signal", "webbrowser", "pdb", "types", "functools",
    "operator", "io", "_io", "tempfile", "pathlib", "glob", "inspect", "torch", "numpy",
    "dill", "cloudpickle", "joblib", "setuptools", "pip", "pkg_resources",
})
_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
# PEP 8 class names; a lower-case name (`train_utils.make_config`) is a function and stays refused.
_CLASS_NAME = re.compile(r"_*[A-Z][A-Za-z0-9_]*$")


class CheckpointError(ValueError):
    """A checkpoint cannot be used; the message says why in one line."""


class StandIn:
    """An inert placeholder for a class the checkpoint names but dpgviz never imports.

    weights_only builds it the way pickle builds any instance (`cls.__new__(cls, *args)`,
    then `__setstate__(state)`); it only records the arguments and the state, which the
    restricted unpickler has already decoded into plain data and tensors. No method of the
    original class exists here, so nothing in the file can run.
    """

    stands_for = ""  # "module.Name", set on the per-name subclass

    def __new__(cls, *args: Any, **kwargs: Any) -> StandIn:
        self = object.__new__(cls)
        self.args = args
        self.state = None
        return self

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass  # state arrives through __setstate__; there is no behaviour to set up

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def fields(self) -> dict:
        """The pickled attributes (a dataclass's fields), or {} when the state is not a dict."""
        state = self.state
        if isinstance(state, tuple) and len(state) == 2:  # (dict, slots) as pickle writes it
            merged = dict(state[0] or {})
            merged.update(state[1] or {})
            return merged
        return dict(state) if isinstance(state, dict) else {}

    def __repr__(self) -> str:
        return f"<{self.stands_for} stored as data: {self.fields() or self.args!r}>"


def _refusal(name: str) -> str | None:
    """Why the global `name` must stay refused, or None when an inert StandIn may replace it."""
    module, _, attr = name.rpartition(".")
    if not module or not _DOTTED.match(name):
        return "not a plain module.Name"
    top = module.split(".")[0]
    if top in _DENIED_MODULES or top in sys.stdlib_module_names or top.startswith("torch"):
        return f"module {module} is never loaded"
    if not _CLASS_NAME.match(attr):
        return "a function, not a class"
    return None


def _stand_ins_for(path: Path) -> list[tuple[type, str]]:
    """(StandIn subclass, "module.Name") for each class the file needs beyond torch's allow-list.

    Reads only the pickle's opcodes (torch lists the globals without loading anything).
    Raises CheckpointError when any needed name must stay refused.
    """
    needed = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    pairs = []
    for name in needed:
        reason = _refusal(name)
        if reason is not None:
            raise CheckpointError(f"{path} is not a loadable checkpoint (refused by weights_only: it needs {name}, {reason}; nothing was run)")
        # One subclass per name, because weights_only matches the class object itself.
        stub = type(f"StandIn[{name}]", (StandIn,), {"stands_for": name, "__module__": __name__})
        pairs.append((stub, name))
    return pairs


def describe_stand_ins(ckpt: Any, where: str = "") -> list[str]:
    """'config: train_utils.StickyStageConfig (not loaded; stored as data)' for each StandIn."""
    found: list[str] = []
    if isinstance(ckpt, StandIn):
        found.append(f"{where or '(top)'}: {ckpt.stands_for} (not loaded; stored as data)")
        found += describe_stand_ins(ckpt.fields(), where)
        found += describe_stand_ins(list(ckpt.args), f"{where}()")
    elif isinstance(ckpt, dict):
        for key, value in ckpt.items():
            found += describe_stand_ins(value, f"{where}.{key}" if where else str(key))
    elif isinstance(ckpt, (list, tuple)):
        for i, value in enumerate(ckpt):
            found += describe_stand_ins(value, f"{where}[{i}]")
    return list(dict.fromkeys(found))


def _as_float(value: Any) -> float | None:
    """The trainer stores best_val_loss as a 0-d tensor; older files as a float."""
    if isinstance(value, torch.Tensor):
        return float(value.item()) if value.numel() == 1 else None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


@dataclass
class LoadedModel:
    """A model ready to sample: `adapter` is what the sampler drives (`Sampler(loaded.adapter, ...)`)."""

    model: torch.nn.Module  # DiffusionGPT, or a transformers masked LM
    vocab: Vocabulary
    config: Any  # ModelConfig for a nanoGPT checkpoint, transformers' config for a HF folder
    path: Path  # the checkpoint file or the HF folder
    meta_path: Path | None
    device: torch.device
    name: str
    iter_num: int | None = None  # the trainer's iteration count, when the file has one
    best_val_loss: float | None = None
    stand_ins: tuple[str, ...] = field(default_factory=tuple)  # describe_stand_ins lines
    adapter: ModelAdapter | None = None  # None: the nanoGPT model's own GPTAdapter
    dtype: torch.dtype = torch.float32
    tokenizer: str = "char"  # "char", or the Hugging Face tokenizer's class name

    def __post_init__(self) -> None:
        if self.adapter is None:
            self.adapter = GPTAdapter(self.model, self.vocab)

    @property
    def block_size(self) -> int:
        return int(self.adapter.block_size)

    @property
    def params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def info(self, threads: int = 0) -> ModelInfo:
        """The typed description the worker sends to the GUI (and `models --json` prints)."""
        return ModelInfo(
            name=self.name,
            path=str(self.path),
            meta=str(self.meta_path) if self.meta_path else None,
            block_size=self.block_size,
            params=self.params,
            itos=tuple(self.vocab.itos),
            n_ids=self.vocab.n_ids,
            device=str(self.device),
            threads=threads,
            iter_num=self.iter_num,
            best_val_loss=self.best_val_loss,
            stand_ins=self.stand_ins,
            never_sample=tuple(self.vocab.never_sample),
            dtype=str(self.dtype).removeprefix("torch."),
            tokenizer=self.tokenizer,
            chat_wrap=getattr(self.adapter, "chat_wrap", None),  # LLaDA / Dream (engine.dllm): --chat
            eos_id=self.vocab.eos_id,
            torch_version=str(torch.__version__),  # a torch.torch_version.TorchVersion: unpickling it imports torch
            model_mask_id=_model_mask_id(self.adapter, self.vocab),
        )


def _model_mask_id(adapter: Any, vocab: Vocabulary) -> int | None:
    """The model's own mask id when its adapter renumbers ids (engine.hf, engine.dllm), else None."""
    to_model = getattr(adapter, "to_model_ids", None)
    return None if to_model is None else int(to_model[vocab.mask_id])


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise CheckpointError("--device cuda was asked for, but no CUDA device is available")
    if device not in ("cpu", "cuda"):
        raise CheckpointError(f"device must be auto, cpu or cuda, got {device!r}")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """auto: bfloat16 on a CUDA device that supports it, else float32; or the dtype named.

    float16 and bfloat16 run on the CPU too (torch 2.13), about 5x slower than float32 there:
    allowed, with a warning in the log, not refused (they are for GPU memory).
    """
    if dtype == "auto":
        is_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if is_bf16 else torch.float32
    if dtype not in DTYPES:
        raise CheckpointError(f"dtype must be auto, {', '.join(DTYPES)}; got {dtype!r}")
    if device.type == "cpu" and dtype != "float32":
        # Measured: the embedded model, 256 tokens x 20 steps, one thread: 2.6 s in float32, 13.8-15.3 s in 16 bits.
        log.warning("%s on the CPU runs about 5x slower than float32; it saves memory, not time", dtype)
    return DTYPES[dtype]


def read_checkpoint(path: str | Path) -> dict:
    """torch.load a checkpoint dict with weights_only=True, or raise CheckpointError.

    Classes of the trainer's own modules are loaded as StandIns (see the module docstring).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        stand_ins = _stand_ins_for(path)
        with torch.serialization.safe_globals(stand_ins):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except CheckpointError:
        raise  # a refused global, already said in one line (it is a ValueError, caught below)
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
        raise CheckpointError(
            f"{path}: binary_classification head: a remasking classifier (it scores each token keep/remask), "
            "not a token predictor; dpgviz needs an unmasking checkpoint"
        )
    return ModelConfig.from_model_args(model_args)


def _dataset_of(config: Any) -> str | None:
    """The data set a checkpoint names: nanoGPT's config dict, or a stood-in dataclass's fields."""
    fields = config.fields() if isinstance(config, StandIn) else config
    dataset = fields.get("dataset") if isinstance(fields, dict) else None
    return dataset if isinstance(dataset, str) and dataset else None


def load_vocab(ckpt: dict, path: Path, meta: str | Path | None, model_vocab_size: int) -> tuple[Vocabulary, Path | None]:
    """Vocabulary from --meta, else meta.pkl found the seed's way (`find_meta`), else one embedded."""
    if meta is not None:
        return Vocabulary.load(meta, model_vocab_size), Path(meta)
    dataset = _dataset_of(ckpt.get("config"))
    found = find_meta(path, dataset)
    if found is not None:
        return Vocabulary.load(found, model_vocab_size), found
    if isinstance(ckpt.get("vocab"), dict):
        return Vocabulary.from_meta(ckpt["vocab"], model_vocab_size), None
    places = ", ".join(meta_search_places(path, dataset))
    raise CheckpointError(f"no vocabulary (meta.pkl) for {path}; searched {places}; pass --meta PATH/meta.pkl")


def _load_hf(
    path: Path, dev: torch.device, dtype: torch.dtype, device_map: str | None = None, max_memory: dict | None = None
) -> LoadedModel:
    from dpgviz.engine.hf import HFError, load_hf

    try:
        hf = load_hf(path, dev, dtype, device_map=device_map, max_memory=max_memory)
    except HFError as exc:
        raise CheckpointError(str(exc)) from None
    dev = hf.adapter.to_model_ids.device  # with a device map: where the first layers run (inputs go there)
    return LoadedModel(
        hf.model, hf.vocab, hf.config, path, None, dev, path.name,
        adapter=hf.adapter, dtype=dtype, tokenizer=hf.tokenizer,
    )


def _load_dllm(kind: str, folder: Path, dev: torch.device, dtype: torch.dtype) -> LoadedModel:
    """`llada:FOLDER` / `dream:FOLDER`: the folder's own modelling code runs (engine.dllm)."""
    from dpgviz.engine.dllm import load_dllm
    from dpgviz.engine.hf import HFError

    try:
        loaded = load_dllm(kind, folder, dev, dtype)
    except HFError as exc:
        raise CheckpointError(str(exc)) from None
    return LoadedModel(
        loaded.model, loaded.vocab, loaded.config, Path(f"{kind}:{folder}"), None, dev, f"{kind}:{folder.name}",
        adapter=loaded.adapter, dtype=dtype, tokenizer=loaded.tokenizer,
    )


def _load_adapter_file(path: Path, dev: torch.device, dtype: torch.dtype) -> LoadedModel:
    try:
        adapter = load_adapter_file(path, dev, dtype)
    except AdapterFileError as exc:
        raise CheckpointError(str(exc)) from None
    model = getattr(adapter, "model", None)
    if not isinstance(model, torch.nn.Module):
        model = torch.nn.Module()  # no parameters to count
    log.info("loaded adapter %s (%s, %d tokens, block %d) on %s", path, type(adapter).__name__,
             adapter.vocab.size, adapter.block_size, dev)
    return LoadedModel(
        model, adapter.vocab, None, path, None, dev, path.name, adapter=adapter, dtype=dtype,
        tokenizer=type(adapter).__name__,
    )


def load_model(
    path: str | Path | None = None, meta: str | Path | None = None, device: str = "auto", dtype: str = "auto",
    *, device_map: str | None = None, max_memory: dict | None = None,
) -> LoadedModel:
    """Load a checkpoint (None = the embedded default), a Hugging Face masked-LM folder or an
    adapter file (FILE.py with load_adapter, engine.adapter) ready to sample, on `device` in
    `dtype` (auto | float32 | bfloat16 | float16). `device_map="auto"` (Hugging Face folders
    only; others load on `device` as usual) spreads the layers over the GPUs, the CPU and disk
    within `max_memory` (engine.hf.load_hf)."""
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
    torch_dtype = resolve_dtype(dtype, dev)
    prefixed = split_prefixed(path)
    if prefixed is not None:  # llada:FOLDER, dream:FOLDER: the prefix consents to the folder's code
        return _load_dllm(*prefixed, dev, torch_dtype)
    if is_hf_folder(path):
        return _load_hf(path, dev, torch_dtype, device_map, max_memory)
    if device_map is not None:
        log.info("%s is not a Hugging Face folder: the device map is not used, it loads on %s", path, dev)
    if is_adapter_file(path):
        return _load_adapter_file(path, dev, torch_dtype)
    if path.is_dir():
        raise CheckpointError(
            f"{path} is a folder without config.json: not a Hugging Face model folder; pass a checkpoint file (ckpt.pt)"
        )
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
    model.to(device=dev, dtype=torch_dtype).eval()
    log.info("loaded %s (%d params) on %s in %s", path, model.num_params(), dev, str(torch_dtype).removeprefix("torch."))
    stand_ins = tuple(describe_stand_ins({k: v for k, v in ckpt.items() if k != "model"}))
    for line in stand_ins:
        log.debug("%s: %s", path, line)
    iter_num = ckpt.get("iter_num")
    return LoadedModel(
        model, vocab, config, path, meta_path, dev, name,
        iter_num=int(iter_num) if isinstance(iter_num, int) and not isinstance(iter_num, bool) else None,
        best_val_loss=_as_float(ckpt.get("best_val_loss")),
        stand_ins=stand_ins,
        dtype=torch_dtype,
    )
