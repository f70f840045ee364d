"""Finding checkpoints on disk without torch: the GUI's model list and the CLI's `models`.

A model is a `ckpt.pt` (or any `*.pt`) with a vocabulary either beside it (`meta.pkl`) or
in a nanoGPT data folder (`data/<dataset>/meta.pkl`); the embedded default ships inside
the package. Only paths are found here; the worker reads the files.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

DEFAULT_MODEL_NAME = "shakespeare-char (embedded)"


@dataclass(frozen=True)
class ModelEntry:
    name: str
    path: Path
    meta: Path | None
    is_default: bool = False


def default_model_dir() -> Path:
    """Folder of the embedded default model, as package data."""
    return Path(str(resources.files("dpgviz") / "models" / "default"))


def default_model_entry() -> ModelEntry:
    folder = default_model_dir()
    return ModelEntry(DEFAULT_MODEL_NAME, folder / "ckpt.pt", folder / "meta.pkl", True)


def find_meta(ckpt: Path, dataset: str | None = None) -> Path | None:
    """The vocabulary for `ckpt`: beside it, else in a nanoGPT `data/` folder nearby."""
    ckpt = Path(ckpt)
    beside = ckpt.with_name("meta.pkl")
    if beside.is_file():
        return beside
    roots = [ckpt.parent, ckpt.parent.parent, Path.cwd()]
    if dataset:
        for root in roots:
            candidate = root / "data" / dataset / "meta.pkl"
            if candidate.is_file():
                return candidate
    for root in roots:  # a single data set nearby is unambiguous
        found = sorted((root / "data").glob("*/meta.pkl")) if (root / "data").is_dir() else []
        if len(found) == 1:
            return found[0]
    return None


def find_checkpoints(*dirs: str | Path | None) -> list[ModelEntry]:
    """The embedded default first, then `*.pt` files under each existing folder (sorted)."""
    entries = [default_model_entry()]
    seen = {entries[0].path.resolve()}
    for folder in dirs:
        if folder is None or not Path(folder).is_dir():
            continue
        for path in sorted(Path(folder).rglob("*.pt")):
            if path.resolve() in seen or not path.is_file():
                continue
            seen.add(path.resolve())
            name = str(path.relative_to(folder)) if path.parent != Path(folder) else path.name
            entries.append(ModelEntry(f"{Path(folder).name}/{name}", path, find_meta(path)))
    return entries
