"""What a re-run needs to know: which model made a branch's records, and in what runtime.

A session records, for `python main.py verify` (engine.replay):

    header "model"    {"path", "sha256", "info"}: the session's model (store.session_format)
    header "runtime"  {"dpgviz", "numpy", "torch", "python", "device", "dtype", "threads", "mkl_cbwr"}
    branch settings   strategy, seed, schedule and every other GenerationSettings field
    branch provenance {"model": {"name", "path", "sha256"}, "runtime": {...}} on a branch whose
                      own records another model made (`compare --models`, `branch --model`)

`branch_origin` resolves a branch to the model and runtime that made its own records: its
provenance where it has one, else the session's. `runtime_of` builds the runtime from a
worker's ModelInfo (device, dtype, threads and torch are the worker's; numpy and dpgviz are
this process's, the same install).

numpy and the standard library only.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass

import numpy as np

import dpgviz

RUNTIME_KEYS = ("dpgviz", "numpy", "torch", "python", "device", "dtype", "threads", "mkl_cbwr")


def runtime_of(model_info: dict | None) -> dict:
    """The runtime of a run on a model described by `model_info` (ModelInfo.to_dict())."""
    info = model_info or {}
    return {
        "dpgviz": dpgviz.__version__,
        "numpy": np.__version__,
        "torch": info.get("torch_version") or None,
        "python": platform.python_version(),
        "device": info.get("device"),
        "dtype": info.get("dtype"),
        "threads": info.get("threads"),
        "mkl_cbwr": os.environ.get("MKL_CBWR"),  # core.determinism: MKL's reproducible mode, when set
    }


def model_ref(name: str | None, path: str | None, sha256: str | None) -> dict:
    return {"name": name, "path": str(path) if path else None, "sha256": sha256}


def provenance_of_info(info) -> dict:
    """A branch's provenance from the worker's ModelInfo (the window's runs): the model's
    path (its hash is the session's when it is the session's model, else found by path),
    block size and runtime."""
    ref = {**model_ref(info.name, info.path, None), "block_size": info.block_size}
    return {"model": ref, "runtime": runtime_of(info.to_dict(with_itos=False))}


@dataclass(frozen=True)
class Origin:
    """The model (by content hash) and runtime that made a branch's own records."""

    name: str
    path: str | None
    sha256: str | None
    runtime: dict
    block_size: int | None  # the model's window (a block run's context depends on it)

    @property
    def short_hash(self) -> str:
        return self.sha256[:12] if self.sha256 else "unrecorded"


def branch_origin(session, branch: str) -> Origin:
    """Where `branch`'s own records came from (`session`: a store.session.Session)."""
    b = session.store.branches[branch]
    prov = b.provenance or {}
    info = session.model_info or {}
    if prov.get("model"):
        m, runtime = prov["model"], dict(prov.get("runtime") or {})
        sha = m.get("sha256")
        if sha is None and m.get("path") and m.get("path") == session.model_path:
            sha = session.model_sha256  # a window run on the session's model: hashed when saved
        return Origin(
            str(m.get("name") or m.get("path") or "?"), m.get("path"), sha,
            runtime or dict(session.runtime or {}) or runtime_of(info), m.get("block_size") or info.get("block_size"),
        )
    runtime = dict(getattr(session, "runtime", None) or {}) or runtime_of(info)
    return Origin(
        str(info.get("name") or session.model_path or "?"), session.model_path, session.model_sha256, runtime,
        info.get("block_size"),
    )
