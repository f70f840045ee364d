"""A recorder's file: the recovery journal's append-only format (store.journal_format), one entry per log.

    f = RecordFile(path, layout, vocab, meta)     header entry: layout, vocabulary, settings, model
    f.append(rows, pool, tree, next_branch_id)    one batch entry: the log's B rows and their candidates
    f.close()                                     an end entry: the counts written, then the file closes

Why the journal's format and not a session file's: a session file (store.session_format) puts its
column table in the header and each column in one run of bytes, so it can only be written
whole, at the end; a recorder must leave a readable file whenever its process dies. The
journal was made for exactly that: entries appended back to back, each with its CRC-32, and
a reader (`store.journal_reader.recover`) that replays them and stops at the first torn one. So a
recorder's file is a journal, and `store.session_open.open_session` reads a journal like a
session (its magic says which), which gives `show`, `export`, `branch` and File > Open.

Each `append` is one os.write of the whole entry, before `Recorder.log` returns: what was
logged is in the OS's page cache, which a SIGKILL does not lose, so a killed recorder leaves
every record but at most the one being written (its entry fails its CRC or is cut short,
and replay stops before it). The header's `end_entry` says that `close` ends the file with
an E entry of the counts written; a reader of such a file without it says the read is
partial (cut short at an entry boundary, or a recorder killed or still writing), while a
file of a version before the end entry reads as it always did. fsync (what a power cut needs) happens at most every FSYNC_S
seconds and at close.

Rows are laid out as the step store lays out its columns (store.step_store): dense fields,
scalars, branch_index, cand_start / cand_count / cand_bits, and pool entries cand_ids /
cand_probs for the positions whose candidates are non-zero (`step_store.has_probs`).

numpy, the standard library and the journal's framing; no torch.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import time
from pathlib import Path

import numpy as np

import dpgviz
from dpgviz.core.records import SCALAR_FIELDS, RecordLayout
from dpgviz.core.vocab import Vocabulary

# The journal's own framing: one home for the format (store.journal_format's module docstring).
from dpgviz.store.journal_format import (
    _JSON_LEN,
    _PREFIX,
    ENTRY_BATCH,
    ENTRY_END,
    ENTRY_HEADER,
    FORMAT_NAME,
    JOURNAL_VERSION,
    MAGIC,
    _bytes_of,
    _entry,
    _json,
)
from dpgviz.store.step_columns import CANDIDATE_FIELDS, has_probs

FSYNC_S = 2.0  # a power cut loses at most this much; a SIGKILL loses nothing written


def rows_of(layout: RecordLayout, scalars: list[dict], arrays: dict[str, np.ndarray], branch_ids: list[int],
            pool_start: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The step store's row columns (B rows) and pool entries of B dense records (`arrays`: (B, ...))."""
    has = has_probs(arrays["top_probs"])  # (B, N) positions with candidates
    counts = has.sum(axis=1).astype(np.int32)  # (B,)
    starts = pool_start + np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64)
    rows = {name: arrays[name] for name in layout.token_fields() if name not in CANDIDATE_FIELDS}
    for name, dtype in SCALAR_FIELDS.items():
        rows[name] = np.asarray([s.get(name, 0) for s in scalars], dtype=dtype)
    rows["branch_index"] = np.asarray(branch_ids, dtype=np.int32)
    rows["cand_start"] = starts
    rows["cand_count"] = counts
    rows["cand_bits"] = np.packbits(has, axis=1)
    pool = {"cand_ids": arrays["top_ids"][has], "cand_probs": arrays["top_probs"][has]}  # (M, K), position order
    return rows, pool


class RecordFile:
    """An append-only record file (see the module docstring). One thread; `append` writes before it returns."""

    def __init__(self, path: str | Path, layout: RecordLayout, vocab: Vocabulary, meta: dict) -> None:
        self.path = Path(path)
        self.n_rows = 0
        self.n_pool = 0
        self._last_fsync = time.monotonic()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0), 0o644)
        header = {
            "format": FORMAT_NAME,
            "app_version": dpgviz.__version__,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "layout": layout.to_dict(),
            "vocab": vocab.to_dict(),
            "mask_id": vocab.mask_id,
            "meta": meta,
            "recorded": True,  # written by dpgviz.record, not the window's recovery journal
            "end_entry": True,  # close() ends the file with an E entry: a file without it was cut short or killed
        }
        self._write([_PREFIX.pack(MAGIC, JOURNAL_VERSION), *_entry(ENTRY_HEADER, [_json(header)])])

    def append(self, rows: dict[str, np.ndarray], pool: dict[str, np.ndarray], tree: list[dict] | None,
               next_branch_id: int) -> None:
        """One batch entry: rows n_rows.. and pool entries n_pool.. (`tree`: the whole tree, first batch)."""
        arrays = [*rows.items(), *pool.items()]
        count, m = len(rows["branch_index"]), len(pool["cand_ids"])
        info: dict = {
            "start": self.n_rows, "count": count, "pool_start": self.n_pool, "pool_count": m,
            "columns": [[name, arr.dtype.newbyteorder("<").str, list(arr.shape)] for name, arr in arrays],
            "next_branch_id": next_branch_id,
        }
        if tree is not None:
            info["tree"] = tree
        blob = _json(info)
        self._write(_entry(ENTRY_BATCH, [_JSON_LEN.pack(len(blob)), blob, *(_bytes_of(a) for _, a in arrays)]))
        self.n_rows += count
        self.n_pool += m
        if time.monotonic() - self._last_fsync >= FSYNC_S:
            self.sync()

    def _write(self, parts: list) -> None:
        if self._fd is None:
            raise ValueError(f"{self.path} is closed")
        data = b"".join(memoryview(p).cast("B") for p in parts)  # one write per entry: a kill tears at most this one
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]

    def sync(self) -> None:
        if self._fd is not None:
            os.fsync(self._fd)
        self._last_fsync = time.monotonic()

    def close(self) -> None:
        """Write the end entry (what was written, so a reader can tell a whole file from a cut one) and close."""
        if self._fd is not None:
            self._write(_entry(ENTRY_END, [_json({"records": self.n_rows, "pool_count": self.n_pool})]))
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.fsync(fd)
            os.close(fd)
