"""Session files: a whole run (every branch, every record array, settings, vocabulary) on disk.

One file, laid out so that opening it maps the arrays instead of reading them:

    offset  size  content
    0       8     magic b"\\x89DPGVIZ\\n" (a high-bit byte and a newline, as PNG's
                  signature has, catch 7-bit transfers and newline conversion)
    8       4     format version, uint32 little-endian (FORMAT_VERSION)
    12      4     CRC-32 of the header bytes, uint32 little-endian
    16      8     header length H in bytes, uint64 little-endian
    24      H     header: UTF-8 JSON (below)
    ...           zero padding to a multiple of 64
    c.offset      array c, raw C-order little-endian bytes, each starting on a
                  64-byte boundary; the last one ends at `data_end`, which is the
                  file size

The arrays are the step store's (store.step_store), in this order:

    row-indexed (count rows)   tokens, confidence, score, entropy, flags,
                               SCALAR_FIELDS..., branch_index,
                               cand_start (int64), cand_count (int32),
                               cand_bits (N/8 uint8: np.packbits of "has candidates")
    pool (pool_count entries)  cand_ids (M, K) ids, cand_probs (M, K) float16

so a record's candidates are pool[cand_start : cand_start + cand_count], one per set
bit of cand_bits, in position order; rows may share entries (a 'remask' record
repeating its prediction's candidates).

The header holds `format`, `format_version`, `app_version`, `created`, `layout`
(RecordLayout.to_dict), `count` (rows), `pool_count` (pool entries), `columns` (a table
of every array: name, dtype as numpy's `dtype.str`, shape, offset, nbytes and crc32 as
8 hex digits; pool arrays last), `data_end`, `settings`
(the generation settings the session was saved with), `model` (path, sha256 of the
checkpoint, free-form info), `vocab` (Vocabulary.to_dict: itos, model_vocab_size,
never_sample: absent in older files, read as none; eos_id for a model that pads after its
end of text), `mask_id` and `tree`
(StepStore.tree(): each branch's id, parent, fork_record, settings, label, edits, rows)
and `next_branch_id` (the id the next new branch gets; ids are never reused).
Optional keys, absent from files written before them: `runtime` (dpgviz, numpy and torch
versions, device, dtype, threads: store.provenance, for `verify`), `layers` (score layers,
store.layers: one entry per layer, whose arrays are the columns `layer<i>/<field>` with the
layer's own row counts) and a branch's `provenance` in the tree.
`fork_record` indexes the parent's history (StepStore.history); `edits` may be absent
(files written before branches could be edited) and then reads as none. Rows of deleted
branches may remain in the columns, named by no branch.

Opening checks the magic, the version, the header checksum and JSON, that every column
lies inside the file (a file cut short is refused, not half-read) and that the branch
tree only names rows that exist; then one read-only mmap backs every array, so a
session larger than memory opens in milliseconds and pages in only what is looked at
(the offsets and bitmaps, 12 bytes per record plus N/8, are read once to check them).

Format version 1 (READABLE_VERSIONS) had no pool: dense top_ids / top_probs (count, N, K)
columns and uint16 ids. Such a file opens into the same store: its dense columns stay
mapped (tokens cast to this layout's id dtype), its candidates are compacted into memory
one record at a time. Saving always writes version 2. Column checksums are verified on open when the data is small
(VERIFY_LIMIT_BYTES) and on request (`verify_session`) otherwise.

Saving is atomic: the file is written beside the target under a temporary name,
fsynced, then renamed over it, so a crash never leaves a half-written session behind.

numpy and the standard library only: no torch (the GUI process opens sessions), no
Pillow, no dearpygui.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import logging
import mmap
import os
import secrets
import shutil
import struct
import threading
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

import dpgviz
from dpgviz.core.discovery import model_file
from dpgviz.core.records import SCALAR_FIELDS, RecordLayout
from dpgviz.core.vocab import Vocabulary
from dpgviz.store.layers import (
    is_layer_column,
    layer_column_rows,
    layer_columns,
    layer_header,
    layers_from_columns,
)
from dpgviz.store.provenance import runtime_of
from dpgviz.store.step_store import POOL_FIELDS, Branch, StepStore

log = logging.getLogger(__name__)

MAGIC = b"\x89DPGVIZ\n"
FORMAT_NAME = "dpgviz-session"
FORMAT_VERSION = 2  # 2: candidates in a pool (cand_*), ids uint8 when they fit; 1: dense top_ids/top_probs
READABLE_VERSIONS = (1, 2)
SUFFIX = ".dpgviz"  # suggested file extension; any name opens
_PREFIX = struct.Struct("<8sIIQ")  # magic, format version, header crc32, header length
ALIGN = 64  # column alignment: cache lines, and any SIMD load of a column start
VERIFY_LIMIT_BYTES = 64 * 1024 * 1024  # verify column checksums on open below this (~50 ms of CRC)
_MAX_HEADER_BYTES = 1 << 30  # a corrupt length must not make us allocate terabytes
_WRITE_CHUNK_BYTES = 16 * 1024 * 1024  # progress granularity when writing columns

Progress = Callable[[int, int], None]  # progress(done, total), called from the working thread


class SessionError(ValueError):
    """A session cannot be saved, opened or shown; the message says why in one line."""


@dataclass(frozen=True)
class Damage:
    """What a partial read of a damaged append-only file (a recorder's, a journal) left out.

    Only whole records before the damage are read (each entry has its CRC-32), so
    `records_recovered` never exceeds what was written. `records_written` is what
    checksummed entries after the damage show was written, None when nothing says.
    """

    records_recovered: int
    records_written: int | None
    reason: str  # one line: where the damage is and what it is

    def describe(self) -> str:
        """'partial: N of M records recovered (reason)' (M left out when unknown)."""
        of = "" if self.records_written is None else f" of {self.records_written}"
        return f"partial: {self.records_recovered}{of} records recovered ({self.reason})"

    def json(self) -> dict:
        """The keys `show --json` adds on a partial read."""
        return {"partial": True, "records_recovered": self.records_recovered,
                "records_written": self.records_written, "damage": self.reason}


# -- checkpoint hashing ---------------------------------------------------------------
_HASH_CACHE_SIZE = 32  # checkpoints a user switches between in one sitting; each entry is ~200 bytes
# checkpoint_sha256 runs on the GUI's job thread (save) and its frame thread (model info),
# so the cache is an LRU behind a lock. The lock guards only the dict: the hashing itself
# runs unlocked, so a long hash never stalls the other thread (two threads hashing the
# same new file at once both do the work once and store the same digest).
_hash_cache: OrderedDict[tuple[str, int, int], str] = OrderedDict()
_hash_lock = threading.Lock()


def checkpoint_sha256(path: str | Path) -> str:
    """Hex sha256 of a file, streamed in 1 MiB chunks and cached by (resolved path, size, mtime_ns).

    Thread-safe; the cache keeps the `_HASH_CACHE_SIZE` most recently used files.
    """
    path = Path(path)
    try:
        st = path.stat()
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
        with _hash_lock:
            if key in _hash_cache:
                _hash_cache.move_to_end(key)
                return _hash_cache[key]
        digest = hashlib.sha256()
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as exc:
        raise SessionError(f"cannot hash checkpoint {path}: {exc.strerror or exc}") from None
    hexdigest = digest.hexdigest()
    with _hash_lock:
        _hash_cache[key] = hexdigest
        _hash_cache.move_to_end(key)
        while len(_hash_cache) > _HASH_CACHE_SIZE:
            _hash_cache.popitem(last=False)  # least recently used
    return hexdigest


# -- the opened session -----------------------------------------------------------------
@dataclass
class Session:
    """A run held in memory or opened from a file: records, branch tree, vocabulary, provenance."""

    store: StepStore
    vocab: Vocabulary
    settings: dict = field(default_factory=dict)
    model_path: str | None = None
    model_sha256: str | None = None
    model_info: dict = field(default_factory=dict)
    runtime: dict = field(default_factory=dict)  # store.provenance: versions, device, dtype, threads of the run
    app_version: str = dpgviz.__version__
    created: str = ""
    path: Path | None = None
    damage: Damage | None = None  # a partial read: what was left out (None: the file read whole)
    _mmap: mmap.mmap | None = field(default=None, repr=False)

    # -- branches --------------------------------------------------------------------
    @property
    def root(self) -> str:
        if not self.store.branch_order:
            raise SessionError("the session has no branches")
        return self.store.branch_order[0]

    def branch(self, branch_id: str | None = None) -> Branch:
        """The branch `branch_id` (None = the root), or SessionError naming the ones there are."""
        branch_id = self.root if branch_id is None else str(branch_id)
        if branch_id not in self.store.branches:
            known = ", ".join(self.store.branch_order) or "none"
            raise SessionError(f"no branch {branch_id!r} in this session (branches: {known})")
        return self.store.branches[branch_id]

    def rows(self, branch_id: str | None = None) -> np.ndarray:
        """Store rows of a branch's history, in order (int64): for a child, the parent's
        history up to the forked record, then its own records (StepStore.history)."""
        return self.store.history(self.branch(branch_id).id)

    def record_index(self, branch_id: str | None, record: int | None) -> int:
        """Index of record `record` in a branch's history (None = its last; negatives count back)."""
        branch = self.branch(branch_id)
        n = self.store.history_length(branch.id)
        if n == 0:
            raise SessionError(f"branch {branch.id!r} has no records")
        k = n - 1 if record is None else int(record)
        if not -n <= k < n:
            raise SessionError(f"branch {branch.id!r} has records 0..{n - 1}, not {record}")
        return k % n

    def record_row(self, branch_id: str | None, record: int | None) -> int:
        """Store row of record `record` of a branch's history (None = its last)."""
        return int(self.rows(branch_id)[self.record_index(branch_id, record)])

    # -- the model ---------------------------------------------------------------------
    def model_status(self) -> str:
        """'ok' (the recorded checkpoint is there, same hash), 'changed', 'missing' or 'unrecorded'.

        Hashes the checkpoint (cached); the GUI calls it when the user edits or restarts a
        session, to offer the recorded model or ask for one.
        """
        if not self.model_path:
            return "unrecorded"
        weights = model_file(self.model_path)
        if weights is None:
            return "missing"
        if self.model_sha256 and checkpoint_sha256(weights) != self.model_sha256:
            return "changed"
        return "ok"

    # -- lifetime ----------------------------------------------------------------------
    def close(self) -> None:
        """Release the file mapping. Arrays still referenced elsewhere keep it alive until freed."""
        mm, self._mmap = self._mmap, None
        if mm is None:
            return
        self.store = StepStore(self.store.layout, capacity=1)  # drop our views into the map
        try:
            mm.close()
        except BufferError:  # someone still holds a column view; the map goes with the last one
            log.debug("session %s: mapping still referenced; released when its arrays are freed", self.path)

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
def _aligned(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


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


# -- opening --------------------------------------------------------------------------------
def read_header(path: str | Path) -> dict:
    """The checked JSON header of a session file, without mapping its data."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(_PREFIX.size)
            if len(head) < _PREFIX.size:
                probe = head[: len(MAGIC)]
                if probe and MAGIC.startswith(probe):
                    raise SessionError(f"{path} is cut short ({size} bytes; not even a header)")
                raise SessionError(f"{path} is not a dpgviz session ({size} bytes, too small)")
            magic, version, header_crc, header_len = _PREFIX.unpack(head)
            if magic != MAGIC:
                raise SessionError(f"{path} is not a dpgviz session{_guess_kind(head)}")
            if version not in READABLE_VERSIONS:
                newer = "newer than" if version > FORMAT_VERSION else "older than"
                raise SessionError(
                    f"{path} is a session of format version {version}, {newer} the version {FORMAT_VERSION} "
                    f"this dpgviz {dpgviz.__version__} reads"
                )
            if header_len > _MAX_HEADER_BYTES:
                raise SessionError(f"{path} is corrupt (header length {header_len} is impossible)")
            if _PREFIX.size + header_len > size:
                raise SessionError(
                    f"{path} is cut short ({size} bytes; the header alone needs {_PREFIX.size + header_len})"
                )
            blob = f.read(header_len)
    except OSError as exc:
        raise SessionError(f"cannot read {path}: {exc.strerror or exc}") from None
    if zlib.crc32(blob) != header_crc:
        raise SessionError(f"{path} is corrupt (header checksum does not match)")
    try:
        header = json.loads(blob.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SessionError(f"{path} is corrupt (header is not JSON: {exc})") from None
    _check_header(path, header, size, _aligned(_PREFIX.size + header_len), version)
    header["format_version"] = version  # the prefix's, which decides how the arrays read
    return header


def _guess_kind(head: bytes) -> str:
    if head.startswith(b"PK\x03\x04"):
        return " (it is a zip archive; a PyTorch checkpoint?)"
    if head.startswith(b"\x80"):
        return " (it looks like a pickle)"
    if head[:1] in (b"{", b"["):
        return " (it looks like JSON; exported statistics?)"
    return ""


def _check_header(path: Path, header: dict, size: int, data_start: int, version: int = FORMAT_VERSION) -> None:
    """Refuse a header that does not describe a complete, consistent session file."""

    def bad(why: str) -> SessionError:
        return SessionError(f"{path} is corrupt ({why})")

    if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
        raise SessionError(f"{path} is not a dpgviz session (header names no {FORMAT_NAME!r} format)")
    for key, kind in (
        ("layout", dict),
        ("count", int),
        ("columns", list),
        ("data_end", int),
        ("vocab", dict),
        ("tree", list),
        ("mask_id", int),
    ):
        if not isinstance(header.get(key), kind):
            raise bad(f"header field {key!r} is missing or not a {kind.__name__}")
    if size < header["data_end"]:
        raise SessionError(f"{path} is cut short ({size} of {header['data_end']} bytes)")
    if size > header["data_end"]:
        raise bad(f"{size - header['data_end']} unexpected bytes after the data")
    count = header["count"]
    pool_count = header.get("pool_count", 0)
    if version >= 2 and not isinstance(pool_count, int):
        raise bad("header field 'pool_count' is missing or not a int")
    for entry in header["columns"]:
        try:
            name, dtype, shape = str(entry["name"]), np.dtype(entry["dtype"]), tuple(int(s) for s in entry["shape"])
            offset, nbytes = int(entry["offset"]), int(entry["nbytes"])
            int(entry["crc32"], 16)
        except (KeyError, TypeError, ValueError) as exc:
            raise bad(f"column table entry {entry!r} is malformed ({exc})") from None
        rows = layer_column_rows(header, name)  # a score layer's own count (store.layers)
        if rows is None:
            rows = pool_count if version >= 2 and name in POOL_FIELDS else count
        if not shape or shape[0] != rows:
            raise bad(f"column {name} has shape {shape}, expected {rows} rows")
        if nbytes != int(np.prod(shape)) * dtype.itemsize:
            raise bad(f"column {name} says {nbytes} bytes for shape {shape} {dtype}")
        if offset < data_start or offset % ALIGN or offset + nbytes > header["data_end"]:
            raise bad(f"column {name} at {offset}+{nbytes} lies outside the data")


# Append-only files open_session reads too, by their first 8 bytes: the recovery journal's
# format (store.journal), which dpgviz.Recorder writes. store/__init__.py puts its reader
# here: store.journal imports this module, so this one cannot import it.
APPEND_ONLY_READERS: dict[bytes, Callable[[Path], Session]] = {}


def open_session(path: str | Path, *, verify: bool | None = None) -> Session:
    """Open a session file read-only and memory-mapped, without any model.

    `verify` checks every column's CRC-32 (reads all the data); None verifies only
    files whose data is under VERIFY_LIMIT_BYTES. Raises SessionError for a file that
    is not a session, of another format version, cut short or corrupt. An append-only
    file (APPEND_ONLY_READERS: a recorder's) is replayed into memory instead, up to its
    first torn entry.
    """
    path = Path(path)
    reader = APPEND_ONLY_READERS.get(_magic(path))
    if reader is not None:
        session = reader(path)
        session.path = path
        return session
    header = read_header(path)
    try:
        layout = RecordLayout.from_dict(header["layout"])  # a block run after a prompt adds its prefix
        vocab = Vocabulary.from_dict(header["vocab"])  # never_sample absent before subword models
    except (KeyError, TypeError, ValueError) as exc:
        raise SessionError(f"{path} is corrupt (layout or vocabulary: {exc})") from None
    if vocab.mask_id != header["mask_id"] or vocab.n_ids > layout.n_ids:
        raise SessionError(
            f"{path} is corrupt (mask id {header['mask_id']} and {vocab.n_ids} ids do not fit a vocabulary of "
            f"{vocab.size} and records of {layout.n_ids} ids)"
        )
    count = header["count"]
    tree = _checked_tree(path, header["tree"], count)
    data_bytes = sum(int(e["nbytes"]) for e in header["columns"])
    if verify is None:
        verify = data_bytes <= VERIFY_LIMIT_BYTES
    try:
        with path.open("rb") as f:
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError) as exc:
        raise SessionError(f"cannot map {path}: {exc}") from None
    try:
        if verify:
            _verify_columns(path, mm, header["columns"])
        columns = {
            e["name"]: np.frombuffer(
                mm, dtype=np.dtype(e["dtype"]), count=int(np.prod(e["shape"])), offset=int(e["offset"])
            ).reshape(e["shape"])
            for e in header["columns"]
        }
        for name, dtype in SCALAR_FIELDS.items():
            if name not in columns:  # a scalar added after the file was written (block offset...): 0 there
                columns[name] = np.zeros(count, dtype)
        pool = None
        if header["format_version"] >= 2:
            pool = {name: columns.pop(name) for name in POOL_FIELDS if name in columns}
        elif "tokens" in columns and columns["tokens"].dtype != layout.id_dtype:
            # Format 1 stored uint16 ids even where uint8 fits: a copy of this one column
            # (count x N bytes); the candidates are compacted by from_columns.
            columns["tokens"] = columns["tokens"][:count].astype(layout.id_dtype)
        try:
            layer_cols = {name: columns.pop(name) for name in list(columns) if is_layer_column(name)}
            store = StepStore.from_columns(layout, columns, count, tree, mask_id=vocab.mask_id, pool=pool)
            store.layers = layers_from_columns(header, layer_cols)
        except (ValueError, KeyError) as exc:  # KeyError: a listed score layer without its columns
            raise SessionError(f"{path} does not match its layout ({exc})") from None
    except BaseException:
        columns = pool = store = None  # release the views before closing the map
        with contextlib.suppress(BufferError):
            mm.close()
        raise
    next_id = header.get("next_branch_id")  # absent in files written before branches could be deleted
    if isinstance(next_id, int):
        store.next_branch_id = max(store.next_branch_id, next_id)
    model = header.get("model") or {}
    log.debug("opened session %s: %d records, %d branches (verified: %s)", path, count, len(tree), verify)
    return Session(
        store=store,
        vocab=vocab,
        settings=dict(header.get("settings") or {}),
        model_path=model.get("path"),
        model_sha256=model.get("sha256"),
        model_info=dict(model.get("info") or {}),
        runtime=dict(header.get("runtime") or {}),  # absent before issue 24
        app_version=str(header.get("app_version", "")),
        created=str(header.get("created", "")),
        path=path,
        _mmap=mm,
    )


def _magic(path: Path) -> bytes:
    """The first 8 bytes of a file (b"" when it cannot be read: read_header then says why)."""
    try:
        with path.open("rb") as f:
            return f.read(len(MAGIC))
    except OSError:
        return b""


def _verify_columns(path: Path, mm: mmap.mmap, table: list[dict]) -> None:
    with memoryview(mm) as view:
        for e in table:
            offset, nbytes = int(e["offset"]), int(e["nbytes"])
            if zlib.crc32(view[offset : offset + nbytes]) != int(e["crc32"], 16):
                raise SessionError(f"{path} is corrupt (column {e['name']} does not match its checksum)")


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


def verify_session(path: str | Path) -> None:
    """Read every byte of a session and check all checksums; SessionError if any is off."""
    open_session(path, verify=True).close()


def _checked_tree(path: Path, tree: list, count: int) -> list[dict]:
    """The branch tree, refused unless ids are unique, parents precede children and rows exist."""
    seen: dict[str, int] = {}
    all_rows: list[int] = []
    for data in tree:
        try:
            branch = Branch.from_dict(data)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise SessionError(f"{path} is corrupt (branch entry {exc})") from None
        if branch.id in seen:
            raise SessionError(f"{path} is corrupt (branch {branch.id!r} appears twice)")
        if branch.parent is not None:
            if branch.parent not in seen:
                raise SessionError(f"{path} is corrupt (branch {branch.id!r} names unknown parent {branch.parent!r})")
            if branch.fork_record is not None and not 0 <= branch.fork_record < seen[branch.parent]:
                raise SessionError(
                    f"{path} is corrupt (branch {branch.id!r} forks from missing record {branch.fork_record})"
                )
        if any(not 0 <= r < count for r in branch.rows):
            raise SessionError(f"{path} is corrupt (branch {branch.id!r} names rows outside 0..{count - 1})")
        # History length: fork_record indexes the parent's history (StepStore.history).
        inherited = 0 if branch.parent is None or branch.fork_record is None else branch.fork_record + 1
        seen[branch.id] = inherited + len(branch.rows)
        all_rows.extend(branch.rows)
    if len(set(all_rows)) != len(all_rows):
        raise SessionError(f"{path} is corrupt (a row belongs to two branches)")
    return tree
