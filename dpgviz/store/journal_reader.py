"""The recovery journal's reader: what a journal holds (`find_recovery`) and its replay into a Session (`recover`).

The format is store.journal_format's docstring; store.journal writes it, and so does
a recorder (record.file).

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

numpy and the standard library only: never imports torch, dearpygui, engine/, gui/ or
app/, nor the journal's writer.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import mmap
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

import dpgviz
from dpgviz.core.paths import recovery_path
from dpgviz.core.records import RecordLayout
from dpgviz.store.journal_format import (
    _ENTRY,
    _JSON_LEN,
    _PREFIX,
    ENTRY_BATCH,
    ENTRY_END,
    ENTRY_HEADER,
    ENTRY_META,
    FORMAT_NAME,
    JOURNAL_VERSION,
    MAGIC,
    _vocab_from,
)
from dpgviz.store.session import Damage, Session, SessionError
from dpgviz.store.session_format import _checked_tree
from dpgviz.store.step_columns import POOL_FIELDS
from dpgviz.store.step_store import StepStore

log = logging.getLogger(__name__)


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
