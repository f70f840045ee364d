"""A session held in memory: its records and branch tree (a StepStore), vocabulary and provenance.

`Session` is what opening a session file (store.session_open), replaying a journal
(store.journal_reader) or a run gives; `SessionError` is every session failure in one
line; `Damage` says what a partial read of an append-only file left out;
`checkpoint_sha256` hashes the model a session names. The file format is
store.session_format's docstring.

numpy and the standard library only: never imports torch (the GUI process opens
sessions), Pillow or dearpygui, nor the session file's reader or writer.
"""

from __future__ import annotations

import hashlib
import logging
import mmap
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import dpgviz
from dpgviz.core.discovery import model_file
from dpgviz.core.vocab import Vocabulary
from dpgviz.store.branch import Branch
from dpgviz.store.step_store import StepStore

log = logging.getLogger(__name__)

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
