"""The recovery journal: the shown store's records, edits and branches, appended to a file as they happen.

If the process dies (SIGKILL, a power cut, a GL driver crash) the next start finds the
journal (`find_recovery`) and can reopen it like a session (`recover`). A save or a
normal close clears it. The file lives in the cache folder beside the log:

    offset  size  content
    0       8     magic b"\\x89JOURNAL" (a high-bit byte first, as the session's magic)
    8       4     format version, uint32 little-endian (JOURNAL_VERSION)
    12      ...   entries, back to back, each
                    4  CRC-32 of the next 9 bytes and the payload, uint32 LE
                    8  payload length L, uint64 LE
                    1  type: b"H" header, b"B" batch, b"M" meta
                    L  payload

    H  UTF-8 JSON: format, app_version, created, layout (RecordLayout.to_dict), vocab
       (itos, model_vocab_size, never_sample), mask_id and meta (settings, model_path,
       model_sha256, model_info: what save_session records). Always the first entry.
    B  uint32 LE J, J bytes of JSON {start, count, pool_start, pool_count, columns:
       [[name, dtype.str, shape]...], tree?, next_branch_id}, then the raw little-endian
       bytes of each named array in that order: rows start..start+count of every
       row-indexed column of the store, then pool entries pool_start..+pool_count.
    M  UTF-8 JSON {meta?, vocab?, mask_id?}: replaces the header's (a later entry wins).
    E  UTF-8 JSON {records, pool_count}: the end of a closed recorder's file (record.file;
       its header says `end_entry: true`); nothing after it is read. Readers before it skip
       it as an unknown type, and files before it (no `end_entry`) read as they did.

Replaying reads entries in order and stops at the first that is cut short, fails its
CRC or does not continue the rows (the process died while writing it): everything
before it is recovered, and the Session's `damage` (store.session.Damage) says so: how
many records were recovered, how many checksummed entries after the damage show were
written (found by their JSON's first key; None when none is left), and where the damage
is. A file whose header promises an end entry and that has none is partial too.
A batch's rows are appended to the branch their
`branch_index` names; a batch carrying `tree` (StepStore.tree() as of its last row:
the first batch, and any batch after a fork, amend_edit, rename, delete or new
branch) then replaces the whole tree, rows included. Rows are never rewritten in a
store (amend_edit appends a new row and points the branch at it), so the rows and
the tree say everything. A different store (a new run, an opened session) starts a
new generation: the file is rewritten from its header.

Threads: `sync` (once a frame), `flush`, `clear` and `close` run on the frame thread
and never touch the disk: `sync` compares the store's version and row count with
what it handed over last and, when they moved, appends to a deque (no lock) the row
range and references to the store's column arrays (a shallow dict copy, no row
data): rows and pool entries below the count handed over are never rewritten, and
growth copies into new arrays (see store.step_store), so the writer reads them
unlocked. The writer thread polls the deque every POLL_S, does every write, and
fsyncs at most every `flush_s` seconds while changes come, and at once on `flush()`.
Not `store.view()` per frame: it checks every row's offsets, O(rows).

numpy and the standard library only: no torch, no dearpygui, nothing from engine/,
gui/ or app/ (the GUI process owns a Journal; a worker never does).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import math
import mmap
import os
import struct
import threading
import time
import zlib
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

import dpgviz
from dpgviz.core.paths import recovery_path
from dpgviz.core.records import RecordLayout
from dpgviz.core.vocab import Vocabulary
from dpgviz.store.session import Damage, Session, SessionError, _checked_tree
from dpgviz.store.step_store import POOL_FIELDS, StepStore

log = logging.getLogger(__name__)

MAGIC = b"\x89JOURNAL"
FORMAT_NAME = "dpgviz-journal"
JOURNAL_VERSION = 1
SUFFIX = ".dpgjournal"
ENTRY_HEADER, ENTRY_BATCH, ENTRY_META, ENTRY_END = b"H", b"B", b"M", b"E"
_PREFIX = struct.Struct("<8sI")  # magic, format version
_ENTRY = struct.Struct("<IQc")  # crc32, payload length, type
_CRC_PART = struct.Struct("<Qc")  # what the crc covers besides the payload: a torn length fails it too
_JSON_LEN = struct.Struct("<I")
# A batch bigger than this (a new generation of a large opened session) is written as
# several entries, so a death mid-write loses one chunk rather than the whole store.
CHUNK_BYTES = 32 * 1024 * 1024
CLOSE_TIMEOUT_S = 5.0  # close() waits this long for the writer; a hung disk must not hang the exit
RETRY_S = 10.0  # after a failed write, the next whole generation is tried this much later (disk full)
# The writer looks for new items this often. `sync` appends to a deque and signals
# nothing: a lock taken on the frame thread could wait on the writer for the GIL (up
# to the 5 ms switch interval). So a record reaches the OS (what a SIGKILL spares)
# within POLL_S of its sync, and the disk within flush_s.
POLL_S = 0.05


# -- encoding ------------------------------------------------------------------------------
def _plain(value: object) -> object:
    """json.dumps fallback: numpy values become Python ones; anything else its str (the journal must not die on it)."""
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    return str(value)


def _json(obj: object) -> bytes:
    # ASCII-only, as session headers: a vocabulary string with a lone surrogate round-trips.
    return json.dumps(obj, ensure_ascii=True, separators=(",", ":"), default=_plain).encode("ascii")


def _vocab_dict(vocab: Vocabulary) -> dict:
    return vocab.to_dict()  # as session headers write it (eos_id too, for LLaDA and Dream)


def _vocab_from(data: dict) -> Vocabulary:
    return Vocabulary.from_dict(data)


def _bytes_of(arr: np.ndarray) -> memoryview:
    """The raw little-endian bytes of an array, flat (a view when it already is)."""
    arr = np.ascontiguousarray(arr.astype(arr.dtype.newbyteorder("<"), copy=False))
    return memoryview(arr.reshape(-1).view(np.uint8))


def _entry(kind: bytes, parts: list) -> list:
    """The byte strings of one framed entry: its 13-byte frame, then `parts` as they are."""
    length = sum(memoryview(p).nbytes for p in parts)
    head = _CRC_PART.pack(length, kind)
    crc = zlib.crc32(head)
    for part in parts:
        crc = zlib.crc32(part, crc)
    return [struct.pack("<I", crc) + head, *parts]


# -- what the frame thread hands the writer ---------------------------------------------------
@dataclass
class _Generation:
    layout: RecordLayout
    vocab: Vocabulary
    meta: dict


@dataclass
class _Batch:
    """Rows start..stop and pool entries pool_start..pool_stop of `columns` / `pool` (shared arrays)."""

    start: int
    stop: int
    columns: dict[str, np.ndarray]
    pool: dict[str, np.ndarray]
    pool_start: int
    pool_stop: int
    tree: list[dict] | None  # the whole tree as of `stop` when it changed other than by appends
    next_branch_id: int


def _signature(store: StepStore) -> tuple | None:
    """What of the tree changes other than by appending rows; None when rows cannot be
    traced to their branch by `branch_index` (a non-numeric id): then the tree always goes.

    Holds references to each branch's settings dict and edits list: the store and the
    app assign new ones (amend_edit, a restart's settings), so a compare is mostly identity.
    """
    sig = []
    for bid in store.branch_order:
        b = store.branches[bid]
        if not bid.isdigit():
            return None
        sig.append((bid, b.parent, b.fork_record, b.label, b.settings, b.edits, b.rows[0] if b.rows else -1))
    return (store.next_branch_id, *sig)


# -- the journal --------------------------------------------------------------------------------
class Journal:
    """Journals one store at a time to `path`, off the frame thread (see the module docstring).

    `sync`, `flush`, `clear` and `close` are for one thread (the frame loop's). Nothing
    is written until the store holds a record and a vocabulary is known.
    """

    def __init__(self, path: str | Path, *, flush_s: float = 1.0) -> None:
        self.path = Path(path)
        self.flush_s = float(flush_s)
        self._items: deque = deque()  # append and popleft are atomic in CPython: no lock on the frame thread
        self._writer = _Writer(self.path, self.flush_s, self._items)
        self._writer.start()
        self._is_closed = False
        self._store: StepStore | None = None
        self._is_written = False  # the file holds a generation of self._store
        self._version = -1  # store.version handed over last (or saved, after clear)
        self._count = 0  # rows handed over
        self._pool_count = 0  # pool entries handed over
        self._signature: tuple | None = None
        self._is_odd = False  # a branch id that rows cannot name (branch_index -1): the tree goes with every batch
        self._next_tree_check = 0.0  # monotonic time of the next look at the tree's signature
        self._vocab: Vocabulary | None = None
        self._meta: dict = {}
        self._failures_seen = 0
        self._retry_at = 0.0

    @property
    def error(self) -> str | None:
        """The last write failure, in one line (None: every write went through)."""
        return self._writer.error

    # -- the frame thread ---------------------------------------------------------------------
    def sync(self, store: StepStore | None, vocab: Vocabulary | None, meta: dict) -> None:
        """Hand the writer what changed in `store` since the last call; cheap when nothing did.

        `meta` holds what a session records besides the store: settings, model_path,
        model_sha256, model_info. It and `vocab` are compared only when the store
        changed (a new meta reaches the file with the next record or branch change).
        """
        if self._is_closed or store is None or vocab is None:
            return
        failed = self._writer.failures != self._failures_seen
        if store is self._store and store.version == self._version and not failed:
            return  # the frame path: two compares
        if store is not self._store:
            self._store, self._is_written, self._version = store, False, -1
        if failed:
            if time.monotonic() < self._retry_at:
                return
            self._failures_seen = self._writer.failures
            self._retry_at = time.monotonic() + RETRY_S
            self._is_written = False  # the file may end in a torn entry: start over
        if not self._is_written:
            if len(store) == 0:
                self._version = store.version  # nothing worth a file yet
                return
            self._vocab, self._meta = vocab, dict(meta)
            self._items.append(("gen", _Generation(store.layout, vocab, self._meta)))
            self._count = self._pool_count = 0  # and so the first batch carries the tree
            self._is_written = True
        elif vocab is not self._vocab or meta != self._meta:
            update: dict = {"meta": dict(meta)}
            if vocab != self._vocab:  # O(vocabulary) only when a different object comes
                update.update(vocab=vocab, mask_id=vocab.mask_id)
            self._vocab, self._meta = vocab, dict(meta)
            self._items.append(("meta", update))
        self._hand_over(store)

    def _hand_over(self, store: StepStore, *, is_tree_checked: bool = False) -> None:
        """Queue the rows since the last hand-over, and the tree if it changed other than by appends.

        Each append bumps the version once, so a version that moved more than the row
        count means new_branch, fork, amend_edit, rename or delete: the tree goes. What
        changes without a bump (a branch's settings assigned for a restart) is found by
        comparing `_signature`, O(branches), at most once per flush_s (and on flush).
        """
        count, version = len(store), store.version
        signature = self._signature
        is_structural = self._count == 0 or self._is_odd or version - self._version != count - self._count
        now = time.monotonic()
        if is_structural or is_tree_checked or now >= self._next_tree_check:
            signature = _signature(store)
            is_structural = is_structural or signature is None or signature != self._signature
            self._next_tree_check = now + self.flush_s
        if count > self._count or is_structural:
            tree = store.tree() if is_structural else None
            batch = _Batch(
                self._count, count, dict(store.columns), dict(store.pool), self._pool_count, store.pool_count, tree,
                store.next_branch_id,
            )
            self._items.append(("batch", batch))
        self._count, self._pool_count, self._version = count, store.pool_count, version
        self._signature, self._is_odd = signature, signature is None

    def flush(self) -> None:
        """Write and fsync what was handed over, now (the end of a run); does not wait for it."""
        if self._is_closed:
            return
        if self._store is not None and self._is_written:
            self._hand_over(self._store, is_tree_checked=True)  # the end of a run never leaves the tree behind
        self._send(("flush", None))

    def _send(self, item: tuple) -> None:
        """Queue an item and wake the writer now (not for `sync`: see POLL_S)."""
        self._items.append(item)
        self._writer.wake.set()

    def clear(self, store: StepStore | None = None, *, version: int | None = None) -> None:
        """Delete the file: `store` (default: the one synced last) is safe on disk as of `version`.

        For a save (`version`: the store's version when its snapshot was taken, default
        now) or an opened session. The store is journaled again, whole, from its next
        change; if it moved past `version` already, from the next `sync`.
        """
        if self._is_closed:
            return
        self._send(("clear", None))
        if store is not None and store is not self._store:
            self._store = store
        self._is_written = False
        if self._store is not None:
            self._version = self._store.version if version is None else int(version)

    def wait(self, timeout_s: float = 5.0) -> bool:
        """Block until everything handed over is written (tests, benchmarks); False on timeout."""
        if self._is_closed:
            return True
        done = threading.Event()
        self._send(("ping", done))
        return done.wait(timeout_s)

    def close(self, delete: bool = False) -> None:
        """Write what is pending, stop the writer (waits up to CLOSE_TIMEOUT_S) and delete the file if asked.

        `delete=True` for a normal close of the window; a kept journal is offered at the next start.
        """
        if self._is_closed:
            return
        self._is_closed = True
        if not delete and self._store is not None and self._is_written:
            self._hand_over(self._store)
        self._send(("stop", delete))
        self._writer.join(CLOSE_TIMEOUT_S)
        if self._writer.is_alive():
            log.warning("journal writer did not stop within %.0f s; %s may miss its last entries", CLOSE_TIMEOUT_S, self.path)
        if delete:
            with contextlib.suppress(OSError):
                self.path.unlink()
        self._store = None

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.close(delete=exc_type is None)  # an exception leaves the journal for the next start


class _Writer(threading.Thread):
    """The journal's only file user: takes items from the deque, writes entries, fsyncs.

    Items: ("gen", _Generation) truncate and write a header; ("batch", _Batch);
    ("meta", dict); ("flush", None) fsync now; ("clear", None) delete the file;
    ("ping", Event) set once the items before it are written; ("stop", delete).
    After a failed write the file is closed and later batches are dropped until the
    next "gen" (which the frame thread sends when it sees `failures` move).
    """

    def __init__(self, path: Path, flush_s: float, items: deque) -> None:
        super().__init__(name="dpgviz-journal", daemon=True)  # daemon: a forgotten close never hangs the exit
        self.path = path
        self.flush_s = flush_s
        self.items = items
        self.wake = threading.Event()  # set by flush, clear, wait and close; sync only appends
        self.failures = 0  # read by the frame thread
        self.error: str | None = None
        self._fd: int | None = None
        self._is_dirty = False
        self._last_fsync = -math.inf

    def run(self) -> None:
        is_running = True
        while is_running:
            batch = []
            with contextlib.suppress(IndexError):
                while True:
                    batch.append(self.items.popleft())
            if not batch and not (self._is_dirty and time.monotonic() - self._last_fsync >= self.flush_s):
                timeout = POLL_S
                if self._is_dirty:
                    timeout = min(timeout, max(0.0, self._last_fsync + self.flush_s - time.monotonic()))
                self.wake.wait(timeout)
                self.wake.clear()  # items sent before this are drained next round; after it, set again
                continue
            try:
                is_running = self._handle(batch)
            except Exception:  # a bug here must not end the thread: later generations still get written
                log.exception("journal writer")
                self.failures += 1
                self._close_fd()
        self._close_fd()

    def _handle(self, items: list) -> bool:
        """Carry out `items`; False once a stop was among them."""
        # Everything before the last gen/clear would be truncated or deleted anyway.
        cut = max((i for i, (what, _) in enumerate(items) if what in ("gen", "clear")), default=0)
        is_forced, waiting, delete, is_stopping = False, [], False, False
        pending: _Batch | None = None
        for i, (what, arg) in enumerate(items):
            if what == "ping":
                waiting.append(arg)
            elif what == "flush":
                is_forced = True
            elif what == "stop":
                is_forced, is_stopping, delete = True, True, bool(arg)
            elif i < cut:
                continue
            elif what == "batch" and pending is not None and pending.tree is None and pending.stop == arg.start:
                # Adjacent batches merge: the later one's arrays hold every earlier row too.
                pending = _Batch(
                    pending.start, arg.stop, arg.columns, arg.pool, pending.pool_start, arg.pool_stop, arg.tree,
                    arg.next_branch_id,
                )
            else:
                if pending is not None:
                    self._guarded(self._write_batch, pending)
                    pending = None
                if what == "batch":
                    pending = arg
                elif what == "gen":
                    self._guarded(self._start, arg)
                elif what == "meta":
                    self._guarded(self._write_meta, arg)
                elif what == "clear":
                    self._clear()
        if pending is not None:
            self._guarded(self._write_batch, pending)
        if self._is_dirty and (is_forced or time.monotonic() - self._last_fsync >= self.flush_s):
            self._guarded(self._fsync)
        if delete:
            self._clear()
        for event in waiting:
            event.set()
        return not is_stopping

    # -- file operations (all on this thread) ----------------------------------------------------
    def _guarded(self, fn, *args) -> None:
        """Run one file operation; a failure is recorded and closes the file, never ends the thread."""
        try:
            fn(*args)
        except Exception as exc:  # a writer that died would leave every later change unjournaled
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            self.error = f"cannot write the recovery journal {self.path}: {why}"
            if not isinstance(exc, OSError):
                log.exception("journal writer")
            elif self.failures == 0 or log.isEnabledFor(logging.DEBUG):
                log.warning("%s", self.error)  # once: a full disk would repeat it every RETRY_S
            self.failures += 1
            self._close_fd()

    def _start(self, gen: _Generation) -> None:
        self._close_fd()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        is_new = not self.path.exists()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0), 0o600)
        header = {
            "format": FORMAT_NAME,
            "app_version": dpgviz.__version__,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "layout": gen.layout.to_dict(),
            "vocab": _vocab_dict(gen.vocab),
            "mask_id": gen.vocab.mask_id,
            "meta": gen.meta,
        }
        self._write_raw([_PREFIX.pack(MAGIC, JOURNAL_VERSION)])
        self._write(ENTRY_HEADER, [_json(header)])
        if is_new:
            _fsync_dir(self.path.parent)
        log.debug("journal %s: new generation (%d-token records)", self.path, gen.layout.seq_len)

    def _write_batch(self, b: _Batch) -> None:
        if self._fd is None:
            return  # after a failure or a clear: nothing until the next generation
        row_bytes = sum(col[:1].nbytes for col in b.columns.values()) or 1
        rows_per_chunk = max(1, CHUNK_BYTES // row_bytes)
        start, pool_start = b.start, b.pool_start
        while True:
            stop = min(b.stop, start + rows_per_chunk)
            is_last = stop == b.stop
            if is_last:
                pool_stop = b.pool_stop
            else:  # the pool entries this chunk's rows use (pool order follows row order)
                ends = b.columns["cand_start"][start:stop] + b.columns["cand_count"][start:stop]
                pool_stop = max(pool_start, int(ends.max()))
            self._write_chunk(b, start, stop, pool_start, pool_stop, b.tree if is_last else None)
            if is_last:
                return
            start, pool_start = stop, pool_stop

    def _write_chunk(self, b: _Batch, start: int, stop: int, pool_start: int, pool_stop: int, tree) -> None:
        arrays = [(name, col[start:stop]) for name, col in b.columns.items()]
        arrays += [(name, arr[pool_start:pool_stop]) for name, arr in b.pool.items()]
        info: dict = {
            "start": start,
            "count": stop - start,
            "pool_start": pool_start,
            "pool_count": pool_stop - pool_start,
            "columns": [[name, arr.dtype.newbyteorder("<").str, list(arr.shape)] for name, arr in arrays],
            "next_branch_id": b.next_branch_id,
        }
        if tree is not None:
            info["tree"] = tree
        blob = _json(info)
        self._write(ENTRY_BATCH, [_JSON_LEN.pack(len(blob)), blob, *(_bytes_of(arr) for _, arr in arrays)])

    def _write_meta(self, update: dict) -> None:
        entry = {"meta": update["meta"]}
        if "vocab" in update:
            entry["vocab"], entry["mask_id"] = _vocab_dict(update["vocab"]), update["mask_id"]
        self._write(ENTRY_META, [_json(entry)])

    def _write(self, kind: bytes, parts: list) -> None:
        if self._fd is None:
            return
        self._write_raw(_entry(kind, parts))

    def _write_raw(self, parts: list) -> None:
        for part in parts:
            view = memoryview(part).cast("B")
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
        self._is_dirty = True

    def _fsync(self) -> None:
        if self._fd is not None:
            os.fsync(self._fd)
        self._is_dirty = False
        self._last_fsync = time.monotonic()

    def _clear(self) -> None:
        self._close_fd()
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("cannot delete the recovery journal %s: %s", self.path, exc.strerror or exc)

    def _close_fd(self) -> None:
        fd, self._fd = self._fd, None
        self._is_dirty = False
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.fsync(fd)
        with contextlib.suppress(OSError):
            os.close(fd)


def _fsync_dir(folder: Path) -> None:
    """Make the new file's name durable (POSIX); folders cannot be opened for this on Windows."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    with contextlib.suppress(OSError):
        os.fsync(fd)
    os.close(fd)


# -- reading a journal back ----------------------------------------------------------------------
@dataclass(frozen=True)
class RecoveryInfo:
    """What an existing journal holds, for the offer at start."""

    path: Path
    mtime: _dt.datetime  # local time of the last write
    n_records: int
    n_branches: int

    def describe(self) -> str:
        records = f"{self.n_records} record{'s' * (self.n_records != 1)}"
        branches = f"{self.n_branches} branch{'es' * (self.n_branches != 1)}"
        return f"Recover the unsaved work of {self.mtime:%Y-%m-%d %H:%M} ({records}, {branches})"


class _Entries:
    """A journal's entries as (type, payload), in order, read one at a time.

    Stops at the first entry that is cut short or fails its CRC (what precedes it is what
    there is: `damage_at` and `why` say where and what), and after an end entry (`end`:
    its counts). `written_after` then looks past the damage for what was written.
    """

    def __init__(self, path: Path, f: BinaryIO, size: int) -> None:
        self.path, self.f, self.size = path, f, size
        self.damage_at: int | None = None
        self.why = ""
        self.end: dict | None = None

    def __iter__(self) -> Iterator[tuple[bytes, bytes]]:
        at, f, size = _PREFIX.size, self.f, self.size
        while at < size:
            frame = f.read(_ENTRY.size)
            if len(frame) < _ENTRY.size:
                self._stop(at, "is cut short")
                return
            crc, length, kind = _ENTRY.unpack(frame)
            if at + _ENTRY.size + length > size:  # checked before reading: a torn length must not allocate
                self._stop(at, "is cut short")
                return
            payload = f.read(length)
            if len(payload) != length or zlib.crc32(payload, zlib.crc32(frame[4:])) != crc:
                self._stop(at, "fails its checksum")
                return
            if kind == ENTRY_END:
                self.end = _end_info(payload)
                if self.end is None:
                    self._stop(at, "is an end entry that is not JSON")
                elif at + _ENTRY.size + length < size:
                    log.warning("journal %s: %d bytes after its end entry ignored", self.path,
                                size - at - _ENTRY.size - length)
                return
            at += _ENTRY.size + length
            yield kind, payload

    def _stop(self, at: int, what: str) -> None:
        self.damage_at, self.why = at, f"the entry at byte {at} {what}"
        log.debug("journal %s: %s; recovering what precedes it", self.path, self.why)  # recover() says it once

    def written_after(self, at: int) -> int | None:
        """The most records that a checksummed batch or end entry after byte `at` says were written (None: none says).

        Finds candidates by their JSON's first key (a batch's '{"start":', an end's
        '{"records":'): memory-mapped, so O(file) bytes searched and CRC-checked, nothing copied.
        """
        try:
            mm = mmap.mmap(self.f.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError):
            return None
        most = None
        with mm, memoryview(mm) as view:
            for key, kind, before in ((b'{"start":', ENTRY_BATCH, _JSON_LEN.size), (b'{"records":', ENTRY_END, 0)):
                hit = mm.find(key, at + 1)
                while hit >= 0:
                    n = _checked_count(view, hit - before - _ENTRY.size, kind)
                    if n is not None:
                        most = n if most is None else max(most, n)
                    hit = mm.find(key, hit + 1)
        return most


def _checked_count(view: memoryview, at: int, kind: bytes) -> int | None:
    """Rows written up to the end of the entry framed at byte `at` if one of type `kind` passes its CRC there."""
    if at < _PREFIX.size or at + _ENTRY.size > len(view):
        return None
    crc, length, got = _ENTRY.unpack_from(view, at)
    stop = at + _ENTRY.size + length
    if got != kind or stop > len(view):
        return None
    payload = view[at + _ENTRY.size : stop]
    if zlib.crc32(payload, zlib.crc32(view[at + 4 : at + _ENTRY.size])) != crc:
        return None
    try:
        if kind == ENTRY_END:
            return int(_end_info(bytes(payload))["records"])
        info, _ = _batch_info(payload)
        return int(info["start"]) + int(info["count"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return None


def _end_info(payload: bytes) -> dict | None:
    try:
        info = json.loads(payload.decode("ascii"))
        return info if isinstance(info, dict) and isinstance(info.get("records"), int) else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None


@contextlib.contextmanager
def _entries(path: Path) -> Iterator[_Entries]:
    """The journal's entries (`_Entries`); SessionError for a file that cannot be read or is no journal."""
    try:
        with path.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(_PREFIX.size)
            if len(head) < _PREFIX.size:
                raise SessionError(f"{path} is not a dpgviz recovery journal ({size} bytes, too small)")
            magic, version = _PREFIX.unpack(head)
            if magic != MAGIC:
                raise SessionError(f"{path} is not a dpgviz recovery journal")
            if version != JOURNAL_VERSION:
                raise SessionError(
                    f"{path} is a recovery journal of format version {version}; "
                    f"dpgviz {dpgviz.__version__} reads {JOURNAL_VERSION}"
                )
            yield _Entries(path, f, size)
    except OSError as exc:
        raise SessionError(f"cannot read {path}: {exc.strerror or exc}") from None


def _batch_info(payload: bytes | memoryview) -> tuple[dict, int]:
    """The JSON part of a batch and where its arrays start; ValueError if malformed."""
    if len(payload) < _JSON_LEN.size:
        raise ValueError("batch shorter than its length field")
    (n,) = _JSON_LEN.unpack_from(payload)
    info = json.loads(bytes(payload[_JSON_LEN.size : _JSON_LEN.size + n]).decode("ascii"))  # bytes or a memoryview
    if not isinstance(info, dict):
        raise ValueError("batch info is not an object")
    return info, _JSON_LEN.size + n


def _header(path: Path, kind: bytes | None, payload: bytes | None) -> dict:
    if kind != ENTRY_HEADER or payload is None:
        raise SessionError(f"{path} holds no journal header; nothing to recover")
    try:
        header = json.loads(payload.decode("ascii"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SessionError(f"{path} is corrupt (journal header is not JSON: {exc})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
        raise SessionError(f"{path} is not a dpgviz recovery journal (header names no {FORMAT_NAME!r} format)")
    return header


def find_recovery(path: str | Path | None = None) -> RecoveryInfo | None:
    """What the journal at `path` (default: recovery_path()) holds, or None when there is nothing to recover.

    A missing file, an empty one or a journal of zero records gives None (and the
    latter two are deleted). A file that is no journal raises SessionError: it is left
    alone. Reads the file once, an entry at a time (CRCs and batch headers; no arrays are built).
    """
    path = recovery_path() if path is None else Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SessionError(f"cannot read {path}: {exc.strerror or exc}") from None
    n_records, branches = 0, set()
    if st.st_size:
        with _entries(path) as entries:
            read = iter(entries)
            kind, payload = next(read, (None, None))
            if kind is not None:
                _header(path, kind, payload)
            for kind, payload in read:
                if kind != ENTRY_BATCH:
                    continue
                try:
                    info, _ = _batch_info(payload)
                    if int(info["start"]) != n_records:
                        break  # recover stops here too
                    n_records += int(info["count"])
                    if "tree" in info:
                        branches = {str(b["id"]) for b in info["tree"]}
                except (ValueError, KeyError, TypeError, UnicodeDecodeError):
                    break
    if n_records == 0:
        log.info("recovery journal %s holds no records; deleting it", path)
        discard_recovery(path)
        return None
    return RecoveryInfo(path, _dt.datetime.fromtimestamp(st.st_mtime), n_records, len(branches))


def discard_recovery(path: str | Path | None = None) -> None:
    """Delete the journal (the user declined to recover it); a missing file is fine."""
    path = recovery_path() if path is None else Path(path)
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("cannot delete the recovery journal %s: %s", path, exc.strerror or exc)


def recover(path: str | Path) -> Session:
    """Replay a journal into a Session held in memory (its `path` is None: no session file holds it yet).

    A torn last entry is left out; everything before it is recovered. Raises
    SessionError for a file that is no journal, holds no records or does not add up.
    """
    path = Path(path)
    with _entries(path) as entries:
        read = iter(entries)
        kind, payload = next(read, (None, None))
        header = _header(path, kind, payload)
        try:
            layout = RecordLayout.from_dict(header["layout"])
            vocab = _vocab_from(header["vocab"])
            meta = dict(header.get("meta") or {})
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise SessionError(f"{path} is corrupt (layout or vocabulary: {exc})") from None
        rows: dict[str, list[np.ndarray]] = {}
        pool: dict[str, list[np.ndarray]] = {}
        count = pool_count = next_branch_id = 0
        tree: list[dict] = []
        unjoined = ""
        for kind, payload in read:
            if kind == ENTRY_META:
                try:
                    update = json.loads(payload.decode("ascii"))
                    meta = dict(update.get("meta", meta))
                    if "vocab" in update:
                        vocab = _vocab_from(update["vocab"])
                except (ValueError, KeyError, TypeError, AttributeError) as exc:
                    log.warning("journal %s: unreadable meta entry skipped (%s)", path, exc)
            elif kind == ENTRY_BATCH:
                try:
                    info, at = _batch_info(payload)
                    parts = _batch_arrays(info, payload, at, count, pool_count, rows)
                    new_tree = [dict(b) for b in info["tree"]] if "tree" in info else None
                    next_branch_id = max(next_branch_id, int(info.get("next_branch_id", 0)))
                except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
                    log.warning("journal %s: batch at row %d does not continue the rows (%s); recovering before it", path, count, exc)
                    unjoined = f"the batch at row {count} does not continue the rows ({exc})"
                    break
                for name, arr in parts.items():
                    (pool if name in POOL_FIELDS else rows).setdefault(name, []).append(arr)
                start, count = count, count + int(info["count"])
                pool_count += int(info["pool_count"])
                if new_tree is not None:
                    tree = new_tree
                else:  # appends only: each row to the branch its branch_index names
                    by_id = {str(b["id"]): b for b in tree}
                    for row, bid in enumerate(parts["branch_index"].tolist(), start=start):
                        if str(bid) in by_id:
                            by_id[str(bid)].setdefault("rows", []).append(row)
            else:
                log.debug("journal %s: entry of unknown type %r skipped", path, kind)
        damage = _damage(entries, header, count, unjoined)
    if count == 0:
        why = f" (it is damaged before its first: {damage.reason})" if damage is not None else ""
        raise SessionError(f"{path} holds no records to recover{why}")
    if vocab.n_ids > layout.n_ids:
        raise SessionError(f"{path} is corrupt ({vocab.n_ids} vocabulary ids do not fit records of {layout.n_ids})")
    tree = _checked_tree(path, tree, count)
    columns = {name: _native(np.concatenate(chunks)) for name, chunks in rows.items()}
    cand = {name: _native(np.concatenate(chunks)) for name, chunks in pool.items()}
    try:
        store = StepStore.from_columns(layout, columns, count, tree, mask_id=vocab.mask_id, pool=cand)
    except ValueError as exc:
        raise SessionError(f"{path} does not match its layout ({exc})") from None
    store.next_branch_id = max(store.next_branch_id, next_branch_id)
    log.debug("recovered %d records in %d branches from %s", count, len(store.branch_order), path)
    if damage is not None:
        log.warning("%s: %s", path, damage.describe())
    return Session(
        store=store,
        vocab=vocab,
        settings=dict(meta.get("settings") or {}),
        model_path=meta.get("model_path"),
        model_sha256=meta.get("model_sha256"),
        model_info=dict(meta.get("model_info") or {}),
        app_version=str(header.get("app_version", "")),
        created=str(header.get("created", "")),
        path=None,
        damage=damage,
    )


def _damage(entries: _Entries, header: dict, count: int, unjoined: str) -> Damage | None:
    """What a replay of `count` rows left out (None: the file read whole)."""
    if entries.damage_at is not None or unjoined:
        written = entries.written_after(entries.damage_at if entries.damage_at is not None else _PREFIX.size)
        why = unjoined or entries.why
        return Damage(count, None if written is None or written <= count else written, why)
    if entries.end is not None and entries.end["records"] != count:
        return Damage(min(count, entries.end["records"]), entries.end["records"], "its end entry counts other records")
    if entries.end is None and header.get("end_entry"):
        why = "it has no end entry: it was cut short, or its recorder was killed or is still writing"
        return Damage(count, None, why)
    return None


def _batch_arrays(
    info: dict, payload: bytes, at: int, count: int, pool_count: int, rows: dict[str, list]
) -> dict[str, np.ndarray]:
    """The arrays of one batch (views of `payload`); ValueError unless it continues the rows and pool."""
    n, m = int(info["count"]), int(info["pool_count"])
    if int(info["start"]) != count or int(info["pool_start"]) != pool_count:
        raise ValueError(f"it starts at row {info['start']}, pool {info['pool_start']}")
    arrays = {}
    for name, dtype, shape in info["columns"]:
        dtype, shape = np.dtype(dtype), tuple(int(s) for s in shape)
        expected = m if name in POOL_FIELDS else n
        if not shape or shape[0] != expected:
            raise ValueError(f"array {name} has shape {shape}, expected {expected} rows")
        nbytes = int(np.prod(shape)) * dtype.itemsize
        if at + nbytes > len(payload):
            raise ValueError(f"array {name} runs past the entry")
        arrays[str(name)] = np.frombuffer(payload, dtype=dtype, count=int(np.prod(shape)), offset=at).reshape(shape)
        at += nbytes
    if at != len(payload):
        raise ValueError(f"{len(payload) - at} bytes after the arrays")
    if rows and set(rows) - set(arrays):
        raise ValueError(f"columns missing: {', '.join(sorted(set(rows) - set(arrays)))}")
    if "branch_index" not in arrays:
        raise ValueError("no branch_index column")
    return arrays


def _native(arr: np.ndarray) -> np.ndarray:
    return arr.astype(arr.dtype.newbyteorder("="), copy=False)
