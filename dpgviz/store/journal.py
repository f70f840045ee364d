"""The recovery journal's writer: the shown store's records, edits and branches, appended to a file as they happen.

If the process dies (SIGKILL, a power cut, a GL driver crash) the next start finds the
journal (store.journal_reader.find_recovery) and can reopen it like a session
(`recover`). A save or a normal close clears it. The file lives in the cache folder
beside the log; its format is store.journal_format's docstring.

Threads: `sync` (once a frame), `flush`, `clear` and `close` run on the frame thread
and never touch the disk: `sync` compares the store's version and row count with
what it handed over last and, when they moved, appends to a deque (no lock) the row
range and references to the store's column arrays (a shallow dict copy, no row
data): rows and pool entries below the count handed over are never rewritten, and
growth copies into new arrays (see store.step_store), so the writer reads them
unlocked. The writer thread polls the deque every POLL_S, does every write, and
fsyncs at most every `flush_s` seconds while changes come, and at once on `flush()`.
Not `store.view()` per frame: it checks every row's offsets, O(rows).

numpy and the standard library only: never imports torch, dearpygui, engine/, gui/ or app/
(the GUI process owns a Journal; a worker never does); the journal's reader only for
the re-export marked below.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import math
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import dpgviz
from dpgviz.core.records import RecordLayout
from dpgviz.core.vocab import Vocabulary
from dpgviz.store.journal_format import (
    _JSON_LEN,
    _PREFIX,
    ENTRY_BATCH,
    ENTRY_HEADER,
    ENTRY_META,
    FORMAT_NAME,
    JOURNAL_VERSION,
    MAGIC,
    _bytes_of,
    _entry,
    _json,
    _vocab_dict,
)

# Re-exported for tests/test_gui_real_input.py only (another helper's uncommitted work
# imports them from here); everything else imports them from store.journal_reader.
from dpgviz.store.journal_reader import find_recovery, recover  # noqa: F401
from dpgviz.store.step_store import StepStore

log = logging.getLogger(__name__)

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

