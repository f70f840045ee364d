"""Models named on the command line and models found by content hash, for compare --models,
score and verify.

    load_named(name)          `default` = the embedded model, else a checkpoint / HF folder / adapter file
    provenance_of(loaded)     {"model": {name, path, sha256, block_size}, "runtime": {...}} (store.provenance)
    check_same_vocabulary()   one-line refusal when two models do not share their token strings
    find_by_hash(...)         the local file whose sha256 a session recorded: the recorded path,
                              then the known models (the embedded default, ./out, --models-dir)

Torch is imported only inside the functions that load a model.
"""

from __future__ import annotations

from pathlib import Path

from dpgviz.cli.common import UserError
from dpgviz.core.discovery import default_model_entry, find_checkpoints, model_file
from dpgviz.store.provenance import model_ref, runtime_of
from dpgviz.store.session import checkpoint_sha256

DEFAULT_NAME = "default"


def model_list(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    if len(names) < 2:
        raise UserError("--models needs at least two models, comma-separated (default = the embedded model)")
    return names


def path_of(name: str) -> str | None:
    """None for `default` (the embedded model), else the path as given."""
    return None if name == DEFAULT_NAME else name


def load_named(name: str, meta: str | None = None, device: str = "auto", dtype: str = "auto"):
    """engine.checkpoint.LoadedModel of `name`; CheckpointError (a ValueError, one line) when unusable."""
    from dpgviz.engine.checkpoint import load_model

    path = path_of(name)
    if path is not None and not Path(path).exists() and not path.endswith(".py"):
        raise UserError(f"no such model: {name}")
    return load_model(path, meta, device, dtype)


def sha256_of(path: str | Path | None) -> str | None:
    weights = model_file(default_model_entry().path if path is None else path)
    return checkpoint_sha256(weights) if weights is not None else None


def provenance_of(loaded, threads: int = 0) -> dict:
    """Which model made a branch's records, by content hash, and in what runtime."""
    ref = model_ref(loaded.name, str(loaded.path), sha256_of(loaded.path))
    ref["block_size"] = loaded.block_size
    return {"model": ref, "runtime": runtime_of(loaded.info(threads=threads).to_dict(with_itos=False))}


def check_same_vocabulary(named: list[tuple[str, object]]) -> None:
    """UserError in one line unless every (name, vocabulary) has the first one's token strings."""
    first_name, first = named[0]
    for name, vocab in named[1:]:
        if tuple(vocab.itos) != tuple(first.itos):
            raise UserError(
                f"models {first_name} and {name} do not share a vocabulary ({first.size} and {vocab.size} tokens"
                f"{', different strings' if vocab.size == first.size else ''}): they cannot be compared on the same ids"
            )


def known_models(models_dir: str | None) -> list[Path]:
    """Weight files of every model this machine knows: the embedded default, ./out, --models-dir."""
    entries = find_checkpoints(Path("out"), models_dir)
    files = [model_file(e.path) for e in entries]
    return [f for f in files if f is not None]


def find_by_hash(sha256: str | None, recorded: str | None, models_dir: str | None) -> str | None:
    """The path (None = the embedded default) of the model with this hash; UserError when none has it."""
    default = model_file(default_model_entry().path)
    recorded_file = model_file(recorded) if recorded else None
    if sha256 is None:
        if recorded_file is not None:
            return str(recorded)
        raise UserError(f"the session records no model hash and its model {recorded or '(none)'} is not there; pass --model")
    if recorded_file is not None and checkpoint_sha256(recorded_file) == sha256:
        return None if default is not None and recorded_file.resolve() == default.resolve() else str(recorded)
    for weights in known_models(models_dir):
        if checkpoint_sha256(weights) == sha256:
            if default is not None and weights.resolve() == default.resolve():
                return None
            return str(_model_path_for(weights))
    raise UserError(
        f"the model that made these records (sha256 {sha256[:12]}..., recorded as {recorded or 'unknown'}) is not "
        "among the known models (the embedded default, ./out, --models-dir); pass --model"
    )


def _model_path_for(weights: Path) -> Path:
    """A Hugging Face folder's weight file stands for its folder; a checkpoint for itself."""
    folder = weights.parent
    return folder if (folder / "config.json").is_file() and weights.suffix in (".safetensors", ".bin") else weights


def check_given(given: str, sha256: str | None, what: str) -> str | None:
    """`--model GIVEN` for records made by the model of `sha256`: its path (None = default), or
    UserError naming both hashes when it is another model."""
    path = path_of(given)
    if path is not None and model_file(path) is None:
        raise UserError(f"no such model: {given}")
    digest = sha256_of(path)
    if sha256 is not None and digest != sha256:
        raise UserError(
            f"{given} is not the model that made {what}: its sha256 is {str(digest)[:12]}..., the session "
            f"records {sha256[:12]}..."
        )
    return path


def recorded_device(runtime: dict, device: str | None, dtype: str | None) -> tuple[str, str]:
    """(device, dtype) to re-run on: the ones given, else the recorded run's (cpu / cuda), else auto."""
    from dpgviz.core.settings import DTYPES

    recorded = str(runtime.get("device") or "")
    if device is None:
        device = "cuda" if recorded.startswith("cuda") else "cpu" if recorded.startswith("cpu") else "auto"
    if dtype is None:
        dtype = str(runtime.get("dtype") or "auto")
        dtype = dtype if dtype in DTYPES else "auto"
    return device, dtype
