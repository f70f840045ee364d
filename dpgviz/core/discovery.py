"""Finding checkpoints and their vocabularies on disk without torch: the model list and `models`.

A model is a `*.pt` file as the seed's trainer writes it (`out/ckpt_unmasking_<iter>.pt`,
`ckpt_<type>_<iter>.pt`, `ckpt.pt`); the embedded default ships inside the package. Its
vocabulary is searched the way the seed's users lay out their files (`find_meta`). The
model list shows each file's `iter_num` and `best_val_loss`, read by `peek_training_stats`
with an inert unpickler that resolves no name at all; the worker does the real, checked load.

A Hugging Face masked LM is a folder with `config.json`, weights (HF_WEIGHT_FILES) and
tokenizer files (HF_TOKENIZER_FILES), as `save_pretrained` writes it; `engine.hf` loads it.
LLaDA and Dream folders bring their own modelling code: they are named with a prefix,
`llada:FOLDER` or `dream:FOLDER` (REMOTE_CODE_PREFIXES), the user's consent to run that code
(`engine.dllm`); a scan lists such a folder under that name and never imports anything.
"""

from __future__ import annotations

import io
import logging
import math
import pickle
import re
import struct
import zipfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "shakespeare-char (embedded)"
SEED_DATASET = "shakespeare_char"  # the seed trainer's default data set
_PARENT_LEVELS = 4  # ckpt folder and 3 above: out/, experiments/<batch>/<name>/ layouts
_ITER_IN_NAME = re.compile(r"_(\d+)\.pt$")
_PEEK_LIMIT = 64 << 20  # data.pkl bigger than this is not worth peeking at for a label
# What `save_pretrained` writes: safetensors first (no pickle at all), then torch's .bin,
# either whole or sharded with an index.
HF_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
# Any one of these lets AutoTokenizer build a tokenizer offline: the `tokenizers` JSON,
# WordPiece's vocab.txt, byte-level BPE's vocab.json (+ merges.txt), SentencePiece models.
HF_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "tokenizer.model", "spiece.model", "sentencepiece.bpe.model")
# Model families whose folders run their own modelling code, by the prefix that names them,
# and the config.json model_type that tells a scan a folder is one (LLaDA-8B: "llada",
# Dream-v0: "Dream").
REMOTE_CODE_PREFIXES = {"llada": ("llada",), "dream": ("dream",)}


def split_prefixed(path: str | Path | None) -> tuple[str, Path] | None:
    """("llada", FOLDER) for "llada:FOLDER" (and "dream:..."); None for any other path."""
    if path is None:
        return None
    kind, sep, rest = str(path).partition(":")
    if sep and rest and kind in REMOTE_CODE_PREFIXES:
        return kind, Path(rest).expanduser()
    return None


def remote_code_kind(folder: Path) -> str | None:
    """The prefix a Hugging Face folder's config.json model_type calls for ("llada", "dream"),
    read as JSON (nothing imported); None for any other folder."""
    import json

    try:
        model_type = str(json.loads((folder / "config.json").read_text(encoding="utf-8")).get("model_type", ""))
    except (OSError, ValueError, AttributeError):
        return None
    return next((k for k, types in REMOTE_CODE_PREFIXES.items() if model_type.lower() in types), None)


@dataclass(frozen=True)
class ModelEntry:
    name: str
    path: Path
    meta: Path | None
    is_default: bool = False
    iter_num: int | None = None  # the trainer's iteration, from the file (or its name)
    best_val_loss: float | None = None

    def label(self) -> str:
        """What the model list shows: name, then iteration and best loss when known."""
        extra = []
        if self.iter_num is not None:
            extra.append(f"iter {self.iter_num}")
        if self.best_val_loss is not None:
            extra.append(f"val {self.best_val_loss:.3f}")
        return self.name + (f"  ({', '.join(extra)})" if extra else "")


def given_model_entry(path: str | Path) -> ModelEntry:
    """An entry for a model named on the command line (`python main.py --model PATH`): a
    checkpoint, a Hugging Face folder or an adapter file; listed even where no scan finds it."""
    prefixed = split_prefixed(path)
    if prefixed is not None:  # llada:FOLDER keeps its prefix, the consent to run the folder's code
        return ModelEntry(f"{prefixed[0]}:{prefixed[1].name}", Path(str(path)), None)
    path = Path(path)
    name = path.name if path.name != "ckpt.pt" else f"{path.parent.name}/ckpt.pt"
    return ModelEntry(name, path, None)


def default_model_dir() -> Path:
    """Folder of the embedded default model, as package data."""
    return Path(str(resources.files("dpgviz") / "models" / "default"))


def default_model_entry() -> ModelEntry:
    folder = default_model_dir()
    return ModelEntry(DEFAULT_MODEL_NAME, folder / "ckpt.pt", folder / "meta.pkl", True)


def _roots(ckpt: Path) -> list[Path]:
    """Folders that may hold a nanoGPT `data/`: the current folder, then the checkpoint's parents."""
    roots = [Path.cwd()]
    parent = Path(ckpt).absolute().parent
    for _ in range(_PARENT_LEVELS):
        roots.append(parent)
        if parent.parent == parent:
            break
        parent = parent.parent
    unique: dict[Path, Path] = {}
    for root in roots:
        unique.setdefault(root.resolve(), root)
    return list(unique.values())


def _meta_candidates(ckpt: Path, dataset: str | None) -> list[Path]:
    """Steps 1-3 of the search, in order: beside, data/<dataset>/, data/shakespeare_char/."""
    ckpt = Path(ckpt)
    candidates = [ckpt.with_name("meta.pkl")]
    roots = _roots(ckpt)
    if dataset and "/" not in dataset and dataset not in (".", ".."):
        candidates += [root / "data" / dataset / "meta.pkl" for root in roots]
    candidates += [root / "data" / SEED_DATASET / "meta.pkl" for root in roots]
    return list(dict.fromkeys(candidates))


def meta_search_places(ckpt: Path, dataset: str | None = None) -> list[str]:
    """Where `find_meta` looks, in order, for the error message when it finds nothing."""
    places = [str(p) for p in _meta_candidates(ckpt, dataset)]
    places += [f"the only {root / 'data' / '*' / 'meta.pkl'}" for root in _roots(ckpt)]
    return places


def find_meta(ckpt: Path, dataset: str | None = None) -> Path | None:
    """The vocabulary for `ckpt`, searched as the seed's users lay out their files.

    1. `meta.pkl` beside the checkpoint; 2. `data/<dataset>/meta.pkl` when the checkpoint
    names its data set; 3. the seed's default `data/shakespeare_char/meta.pkl`; 4. the only
    `data/*/meta.pkl`. Steps 2-4 look under the current folder, then the checkpoint's parents.
    """
    for candidate in _meta_candidates(ckpt, dataset):
        if candidate.is_file():
            return candidate
    found: dict[Path, Path] = {}
    for root in _roots(ckpt):
        if (root / "data").is_dir():
            for meta in sorted((root / "data").glob("*/meta.pkl")):
                found.setdefault(meta.resolve(), meta)
    return next(iter(found.values())) if len(found) == 1 else None  # several are ambiguous


# -- peeking at the trainer's numbers without torch ------------------------------------------
class _Opaque:
    """Whatever a pickle names, as inert data: stores arguments and state, runs nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _Mapping(dict):
    """An OrderedDict's items and attributes, without OrderedDict's pickling hooks."""


@dataclass
class _TensorRef:
    storage: Any  # the persistent id: ('storage', storage type, key, location, numel)
    offset: int
    size: Any


def _rebuild_tensor(storage: Any, offset: Any = 0, size: Any = (), *args: Any) -> _TensorRef:
    return _TensorRef(storage, offset if isinstance(offset, int) else 0, size)


class _PeekUnpickler(pickle.Unpickler):
    """Resolves no global: torch's tensor rebuilders become _TensorRef, the rest _Opaque."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch._utils" and name.startswith("_rebuild_tensor"):
            return _rebuild_tensor
        if (module, name) == ("collections", "OrderedDict"):
            return _Mapping  # state dicts are OrderedDicts (with a _metadata attribute)
        if module == "torch" and name.endswith("Storage"):
            return name  # a label for the dtype, never called
        return type(name, (_Opaque,), {})

    def persistent_load(self, pid: Any) -> Any:
        return pid


_STORAGE_FORMATS = {"FloatStorage": ("<f", 4), "DoubleStorage": ("<d", 8), "HalfStorage": ("<e", 2)}


def _scalar(zf: zipfile.ZipFile, prefix: str, value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, _TensorRef) or not isinstance(value.storage, tuple) or len(value.storage) < 3:
        return None
    fmt = _STORAGE_FORMATS.get(str(value.storage[1]))
    if fmt is None or tuple(value.size or ()) not in ((), (1,)):
        return None
    raw = zf.read(f"{prefix}data/{value.storage[2]}")
    start = value.offset * fmt[1]
    result = struct.unpack(fmt[0], raw[start : start + fmt[1]])[0]
    return result if math.isfinite(result) else None


def peek_training_stats(path: Path) -> tuple[int | None, float | None]:
    """(iter_num, best_val_loss) stored in a torch zip checkpoint, or None where absent/unreadable.

    Only for the model list's labels; never trusted beyond that. A file this cannot read
    (legacy format, cut short, foreign) gets (None, None); loading it reports the problem.
    """
    try:
        with zipfile.ZipFile(path) as zf:
            pkl = next(n for n in zf.namelist() if n == "data.pkl" or n.endswith("/data.pkl"))
            if zf.getinfo(pkl).file_size > _PEEK_LIMIT:
                return None, None
            top = _PeekUnpickler(io.BytesIO(zf.read(pkl))).load()
            if not isinstance(top, dict):
                return None, None
            iter_num = top.get("iter_num")
            iter_num = iter_num if isinstance(iter_num, int) and not isinstance(iter_num, bool) else None
            return iter_num, _scalar(zf, pkl[: -len("data.pkl")], top.get("best_val_loss"))
    except Exception as exc:  # any malformed file only loses its label details, so no need to tell which
        log.debug("no training stats from %s: %s", path, exc)
        return None, None


def is_hf_folder(path: str | Path) -> bool:
    """A folder with a config.json: what engine.hf tries to load as a Hugging Face model."""
    return Path(path).is_dir() and (Path(path) / "config.json").is_file()


def hf_weights(folder: str | Path) -> list[Path]:
    """The weight files of a Hugging Face folder, in the order they are preferred."""
    return [Path(folder) / name for name in HF_WEIGHT_FILES if (Path(folder) / name).is_file()]


def model_file(path: str | Path | None) -> Path | None:
    """The file that is a model's weights: a checkpoint itself, or a Hugging Face folder's
    preferred weight file; None when `path` is neither (missing, or a folder without weights).
    Sessions hash it to tell whether the recorded model is still the same."""
    if path is None:
        return None
    prefixed = split_prefixed(path)
    path = prefixed[1] if prefixed is not None else Path(path)
    if path.is_file():
        return path
    if path.is_dir() and (path / "config.json").is_file():
        weights = hf_weights(path)
        return weights[0] if weights else None
    return None


def hf_has_tokenizer(folder: str | Path) -> bool:
    return any((Path(folder) / name).is_file() for name in HF_TOKENIZER_FILES)


def _entry(folder: Path, path: Path) -> ModelEntry:
    name = str(path.relative_to(folder)) if path.parent != folder else path.name
    iter_num, best = peek_training_stats(path)
    if iter_num is None and (m := _ITER_IN_NAME.search(path.name)):
        iter_num = int(m.group(1))  # the trainer's file name carries the iteration
    return ModelEntry(f"{folder.name}/{name}", path, find_meta(path), iter_num=iter_num, best_val_loss=best)


def _order(entry: ModelEntry) -> tuple:
    # Folder by folder; inside one, by iteration (unnumbered files such as ckpt.pt last).
    return (str(entry.path.parent), entry.iter_num is None, entry.iter_num or 0, entry.path.name)


def find_checkpoints(*dirs: str | Path | None) -> list[ModelEntry]:
    """The embedded default first, then `*.pt` files under each existing folder, by iteration,
    and Hugging Face model folders (config.json and weights) among them, by path."""
    entries = [default_model_entry()]
    seen = {entries[0].path.resolve()}
    for folder in dirs:
        if folder is None or not Path(folder).is_dir():
            continue
        found = []
        for path in Path(folder).rglob("*.pt"):
            if path.resolve() in seen or not path.is_file():
                continue
            seen.add(path.resolve())
            found.append(_entry(Path(folder), path))
        for config in Path(folder).rglob("config.json"):
            hf = config.parent
            if hf.resolve() in seen or not hf_weights(hf):
                continue
            seen.add(hf.resolve())
            name = str(hf.relative_to(folder)) if hf != Path(folder) else hf.name
            kind = remote_code_kind(hf)  # LLaDA, Dream: listed by the prefixed name that loads them
            if kind is not None:
                found.append(ModelEntry(f"{kind}:{Path(folder).name}/{name}", Path(f"{kind}:{hf}"), None))
            else:
                found.append(ModelEntry(f"{Path(folder).name}/{name}", hf, None))
        entries += sorted(found, key=_order)
    return entries
