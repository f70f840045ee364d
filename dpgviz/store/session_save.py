"""Writing a session file: `save_session` (every branch, atomically), and `atomic_writer` for any file.

Saving is atomic: the file is written beside the target under a temporary name,
fsynced, then renamed over it, so a crash never leaves a half-written session behind.
`set_aside_damaged` keeps a partially read file's original before a save replaces it.
The format is store.session_format's docstring.

numpy and the standard library only: never imports torch, Pillow or dearpygui, nor the
session file's reader (store.session_open).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import os
import secrets
import shutil
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

import dpgviz
from dpgviz.core.vocab import Vocabulary
from dpgviz.store.layers import layer_columns, layer_header
from dpgviz.store.provenance import runtime_of
from dpgviz.store.session import Progress, Session, SessionError
from dpgviz.store.session_format import _PREFIX, FORMAT_NAME, FORMAT_VERSION, MAGIC, _aligned
from dpgviz.store.step_store import StepStore

log = logging.getLogger(__name__)

_WRITE_CHUNK_BYTES = 16 * 1024 * 1024  # progress granularity when writing columns


# -- atomic writing ---------------------------------------------------------------------
@contextlib.contextmanager
def atomic_writer(path: str | Path) -> Iterator[BinaryIO]:
    """A binary file that becomes `path` only if the block finishes: write aside, fsync, rename.

    The temporary file sits in the target's folder (a rename across file systems is not
    atomic) as `NAME.tmp-XXXXXXXX`, and is removed if anything fails.
    """
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp-{secrets.token_hex(4)}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    except OSError as exc:
        raise SessionError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError):
            raise SessionError(f"cannot write {path}: {exc.strerror or exc}") from None
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable (POSIX); folders cannot be opened for this on Windows."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        log.debug("fsync of folder %s not supported", folder)
    finally:
        os.close(fd)


# -- saving ---------------------------------------------------------------------------------
def _little_endian(col: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(col.astype(col.dtype.newbyteorder("<"), copy=False))


def _plain(value: object) -> object:
    """json.dumps fallback: numpy scalars and arrays become Python numbers and lists."""
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON data")


def _header_bytes(header: dict) -> bytes:
    # ASCII-only JSON: a vocabulary string with a lone surrogate still round-trips.
    try:
        return json.dumps(header, ensure_ascii=True, allow_nan=False, separators=(",", ":"), default=_plain).encode(
            "ascii"
        )
    except (TypeError, ValueError) as exc:
        raise SessionError(f"session header is not plain JSON data ({exc})") from None


def save_session(
    path: str | Path,
    store: StepStore,
    vocab: Vocabulary,
    *,
    settings: dict | None = None,
    model_path: str | Path | None = None,
    model_sha256: str | None = None,
    model_info: dict | None = None,
    progress: Progress | None = None,
    runtime: dict | None = None,
) -> Path:
    """Write every record and branch of `store` to `path` atomically; returns the path.

    `settings` are the generation settings to reopen with (GenerationSettings.to_dict());
    `model_sha256` is the checkpoint's hash (see `checkpoint_sha256`; the caller hashes so
    a GUI can do it once per model). `progress(done_bytes, total_bytes)` is called as
    columns are written. `store` may itself be memory-mapped from `path`: the old file
    stays mapped until the rename replaces it.

    The rows present when the call starts are saved: a frame loop may keep appending
    while a worker thread saves (rows are never rewritten, and growing the store copies
    into new arrays, leaving the ones held here intact); later rows are left out.
    """
    path = Path(path)
    frozen = store.view()  # the rows present now and the pool entries they use
    layout, count = frozen.layout, len(frozen)
    columns = {name: _little_endian(col) for name, col in frozen.columns.items()}
    columns.update({name: _little_endian(arr) for name, arr in frozen.pool.items()})  # pool last
    layers = [layer for layer in frozen.layers if layer.branch in frozen.branches]  # a deleted branch's go
    for i, layer in enumerate(layers):  # score layers (store.layers), after the pool; none: as before
        columns.update({name: _little_endian(arr) for name, arr in layer_columns(layer, i).items()})
    tree = frozen.tree()
    if vocab.n_ids > layout.n_ids or vocab.mask_id >= layout.n_ids:
        raise SessionError(f"vocabulary has {vocab.n_ids} ids but the records were laid out for {layout.n_ids}")
    table, offset = [], 0  # offsets are made absolute once the header length is known
    for name, col in columns.items():
        table.append(
            {
                "name": name,
                "dtype": col.dtype.str,
                "shape": list(col.shape),
                "offset": offset,
                "nbytes": col.nbytes,
                "crc32": "00000000",
            }
        )
        offset = _aligned(offset + col.nbytes)
    header = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "app_version": dpgviz.__version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "layout": layout.to_dict(),
        "count": count,
        "pool_count": frozen.pool_count,
        "columns": table,
        "data_end": 0,
        "settings": dict(settings or {}),
        "model": {
            "path": str(model_path) if model_path else None,
            "sha256": model_sha256,
            "info": dict(model_info or {}),
        },
        "vocab": vocab.to_dict(),
        "mask_id": vocab.mask_id,
        "tree": tree,
        "next_branch_id": store.next_branch_id,  # so a deleted branch's id is not handed out again
        # what a re-run needs beyond the model and settings (store.provenance; `verify`)
        "runtime": dict(runtime) if runtime else runtime_of(model_info),
    }
    if layers:  # optional: a file without score layers has no such key
        header["layers"] = [layer_header(layer) for layer in layers]
    # Offsets and data_end change the header's length, which moves the data: iterate to a fixpoint
    # (digits only grow, so this settles in two or three rounds).
    data_start = 0
    for _ in range(8):
        for entry, rel in zip(table, _relative_offsets(table), strict=True):
            entry["offset"] = data_start + rel
        header["data_end"] = table[-1]["offset"] + table[-1]["nbytes"] if table else data_start
        needed = _aligned(_PREFIX.size + len(_header_bytes(header)))
        if needed == data_start:
            break
        data_start = needed
    else:  # pragma: no cover - the loop converges for any realistic size
        raise SessionError("could not lay out the session header")
    total = sum(c.nbytes for c in columns.values())
    done = 0
    with atomic_writer(path) as f:
        f.write(b"\0" * data_start)  # prefix and header are written last, once the checksums are known
        for entry, (name, col) in zip(table, columns.items(), strict=True):
            f.write(b"\0" * (entry["offset"] - f.tell()))
            crc = 0
            flat = col.reshape(-1).view(np.uint8) if col.size else np.zeros(0, np.uint8)
            for start in range(0, flat.size, _WRITE_CHUNK_BYTES):
                chunk = flat[start : start + _WRITE_CHUNK_BYTES]
                f.write(memoryview(chunk))
                crc = zlib.crc32(chunk, crc)
                done += chunk.size
                if progress is not None:
                    progress(done, total)
            entry["crc32"] = f"{crc:08x}"
            log.debug("wrote column %s (%d bytes)", name, col.nbytes)
        blob = _header_bytes(header)  # same length: the crc32 placeholders had 8 digits too
        assert _PREFIX.size + len(blob) <= data_start, (len(blob), data_start)
        f.seek(0)
        f.write(_PREFIX.pack(MAGIC, FORMAT_VERSION, zlib.crc32(blob), len(blob)))
        f.write(blob)
    if progress is not None and total == 0:
        progress(0, 0)
    log.debug(
        "saved session %s: %d records, %d branches, %d bytes", path, count, len(store.branch_order), header["data_end"]
    )
    return path


def _relative_offsets(table: list[dict]) -> list[int]:
    offsets, at = [], 0
    for entry in table:
        offsets.append(at)
        at = _aligned(at + entry["nbytes"])
    return offsets


def set_aside_damaged(session: Session, target: str | Path) -> Path | None:
    """Before a save over the damaged file `session` was partially read from: copy it to NAME.damaged.

    What the read left out stays on disk (a later tool may recover more). Returns the
    copy's path; None when nothing needed keeping. SessionError if the copy fails.
    """
    if session.damage is None or session.path is None or not Path(target).exists():
        return None
    if Path(target).resolve() != session.path.resolve():
        return None
    copy = session.path.with_name(session.path.name + ".damaged")
    n = 1
    while copy.exists():
        n += 1
        copy = session.path.with_name(f"{session.path.name}.damaged-{n}")
    try:
        shutil.copyfile(session.path, copy)
    except OSError as exc:
        raise SessionError(f"cannot keep the damaged {session.path} aside before saving over it: {exc.strerror or exc}") from None
    log.warning("%s is damaged (%s); its original is kept as %s", session.path, session.damage.describe(), copy)
    return copy
