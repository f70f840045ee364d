"""Text and per-step statistics of a branch: the text, CSV and JSON exports.

A branch's records are its own rows in the store, in order (a child branch starts with
the edited record it forked from). Statistics are computed over whole columns in
chunks of rows, so a long session never has all its probabilities in memory at once.

numpy and the standard library only.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np

from dpgviz.core.records import FLAG_MASKED, FLAG_NEW, FLAG_REMASKED, KINDS
from dpgviz.store.blocks import compose
from dpgviz.store.session import Progress, Session
from dpgviz.store.session_save import atomic_writer

# Per-step statistics, in column order. mean_* are over the cells that have the value:
# confidence of visible tokens, entropy where the model predicted (masked before the step).
STAT_COLUMNS = (
    "record",
    "iteration",
    "kind",
    "n_masked",
    "target_masks",
    "mean_confidence",
    "mean_entropy",
    "n_new",
    "n_remasked",
    "forward_passes",
)
_CHUNK_CELLS = 4 * 1024 * 1024  # cells per chunk of rows: ~8 MB of float16 per field


def record_text(session: Session, branch: str | None = None, record: int | None = None) -> str:
    """Text of one record of a branch (default: the last), masks as U+2588, newlines as is.

    A block run's record holds one block: its text is the whole sequence composed at that
    record (store.blocks), so the last record's is the finished text.
    """
    if session.store.layout.is_blocks:
        rows, index = session.rows(branch), session.record_index(branch, record)
        return session.vocab.decode(compose(session.store, rows, index, "tokens", session.vocab.mask_id))
    row = session.record_row(branch, record)
    return session.vocab.decode(session.store.get("tokens", row))


def _masked_mean(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Row means of `values` over `valid` cells; NaN where a row has none."""
    n = valid.sum(axis=1)
    total = np.where(valid, values, 0.0).sum(axis=1, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, total / np.maximum(n, 1), np.nan)


def step_stats(session: Session, branch: str | None = None, progress: Progress | None = None) -> list[dict]:
    """One dict per record of the branch, keyed by STAT_COLUMNS; a missing mean is None."""
    store, rows = session.store, session.rows(branch)
    seq_len = store.layout.seq_len
    chunk = max(1, _CHUNK_CELLS // max(1, seq_len))
    mean_conf = np.full(len(rows), np.nan)
    mean_entropy = np.full(len(rows), np.nan)
    n_new = np.zeros(len(rows), dtype=np.int64)
    n_remasked = np.zeros(len(rows), dtype=np.int64)
    for start in range(0, len(rows), chunk):
        part = rows[start : start + chunk]
        flags = store.column("flags")[part]
        confidence = store.column("confidence")[part].astype(np.float32)
        entropy = store.column("entropy")[part].astype(np.float32)
        visible = (flags & FLAG_MASKED) == 0
        mean_conf[start : start + len(part)] = _masked_mean(confidence, visible & np.isfinite(confidence))
        mean_entropy[start : start + len(part)] = _masked_mean(entropy, np.isfinite(entropy))
        n_new[start : start + len(part)] = ((flags & FLAG_NEW) != 0).sum(axis=1)
        n_remasked[start : start + len(part)] = ((flags & FLAG_REMASKED) != 0).sum(axis=1)
        if progress is not None:
            progress(start + len(part), len(rows))
    scalars = {
        name: store.column(name)[rows] for name in ("iteration", "kind", "n_masked", "target_masks", "forward_passes")
    }
    return [
        {
            "record": k,
            "iteration": int(scalars["iteration"][k]),
            "kind": KINDS[int(scalars["kind"][k])],
            "n_masked": int(scalars["n_masked"][k]),
            "target_masks": int(scalars["target_masks"][k]),
            "mean_confidence": _number(mean_conf[k]),
            "mean_entropy": _number(mean_entropy[k]),
            "n_new": int(n_new[k]),
            "n_remasked": int(n_remasked[k]),
            "forward_passes": int(scalars["forward_passes"][k]),
        }
        for k in range(len(rows))
    ]


def _number(x: float) -> float | None:
    return None if not math.isfinite(x) else round(float(x), 6)


# -- writers --------------------------------------------------------------------------------
def write_text(session: Session, out: str | Path, branch: str | None = None, record: int | None = None) -> Path:
    """The text of a record (default: the branch's last) as a UTF-8 file."""
    text = record_text(session, branch, record)
    with atomic_writer(out) as f:
        f.write(text.encode("utf-8"))
    return Path(out)


def write_csv(session: Session, out: str | Path, branch: str | None = None, progress: Progress | None = None) -> Path:
    """Per-step statistics as CSV with a header row; a missing mean is an empty field."""
    stats = step_stats(session, branch, progress)
    buf = io.StringIO(newline="")
    writer = csv.DictWriter(buf, fieldnames=STAT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: ("" if v is None else v) for k, v in s.items()} for s in stats)
    with atomic_writer(out) as f:
        f.write(buf.getvalue().encode("utf-8"))
    return Path(out)


def write_json(session: Session, out: str | Path, branch: str | None = None, progress: Progress | None = None) -> Path:
    """Per-step statistics as JSON: the branch, its settings, and `steps` (a missing mean is null)."""
    b = session.branch(branch)
    doc = {
        "branch": b.id,
        "parent": b.parent,
        "fork_record": b.fork_record,
        "settings": b.settings,
        "seq_len": session.store.layout.seq_len,
        "total_len": session.store.layout.total_len,  # > seq_len for a block run: stats are per block record
        "columns": list(STAT_COLUMNS),
        "steps": step_stats(session, b.id, progress),
    }
    with atomic_writer(out) as f:
        f.write(json.dumps(doc, ensure_ascii=False, indent=1).encode("utf-8"))
        f.write(b"\n")
    return Path(out)
