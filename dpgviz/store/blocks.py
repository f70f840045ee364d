"""Full-length views of semi-autoregressive runs, composed from their block records.

A block run (settings.block_length > 0, `RecordLayout.is_blocks`) stores in each record
only the block being generated: `layout.seq_len` positions starting at the record's
`offset` scalar (block index in `block`), of a sequence of `layout.total_len`. Readers
that show the whole sequence at history record r compose it, block by block:

    a block with a record at or before r    that block's last such record (for a finished
                                             block: its 'final' record)
    a block not started by r                 all masked: tokens = mask id, confidence /
                                             score / entropy NaN, flags = FLAG_MASKED
    the prompt before the first block        `layout.prefix` (a block run after a prompt):
                                             its ids, FLAG_PROMPT | FLAG_PROTECTED, NaN

Only the positions [offset, offset + layout.span(offset)) of a record are real; a shorter
last block's padding never reaches a composed array.

    comp = Composer(store, rows, mask_id)   # rows: a branch's history (store rows)
    comp.field("tokens", r)                 # (total_len,) at history record r
    comp.record(r)                          # dict of tokens / confidence / score / entropy / flags

A Composer caches, per field, the composed array and which record each block came from:
moving to a neighbouring record re-copies only the blocks whose record changed (usually
one). When the store is not a block run, a field is the row's array itself (a view).
numpy only.
"""

from __future__ import annotations

import numpy as np

from dpgviz.core.records import FLAG_MASKED, FLAG_PROMPT, FLAG_PROTECTED, KINDS
from dpgviz.core.vocab import Vocabulary
from dpgviz.store.step_store import StepStore, records_json

COMPOSED_FIELDS = ("tokens", "confidence", "score", "entropy", "flags")


def _fill_value(field: str, mask_id: int) -> float | int:
    """What a position of a block that has not started holds in `field`."""
    if field == "tokens":
        return mask_id
    if field == "flags":
        return FLAG_MASKED
    return np.nan


def _prefix_value(field: str, prefix: tuple[int, ...]) -> np.ndarray | float | int:
    """What the prompt's positions before the first block hold in `field`."""
    if field == "tokens":
        return np.asarray(prefix)
    if field == "flags":
        return FLAG_PROMPT | FLAG_PROTECTED
    return np.nan


class Composer:
    """Composes full-length arrays of one history (`rows`) of a store; see the module doc."""

    def __init__(self, store: StepStore, rows: np.ndarray | list[int], mask_id: int) -> None:
        self.store = store
        self.rows = np.asarray(rows, dtype=np.int64)
        self.mask_id = int(mask_id)
        self.layout = store.layout
        self.n_blocks = self.layout.n_blocks
        # (block, index) pairs as one sorted int64 key each, so "the last record of every
        # block at or before r" is one vectorised searchsorted (no per-record loop).
        n = max(1, len(self.rows))
        self._stride = n
        blocks = store.column("block")[self.rows].astype(np.int64)  # (R,)
        self._keys = np.sort(blocks * n + np.arange(len(self.rows), dtype=np.int64))  # (R,)
        self._cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # field -> (sources (B,), composed (B*L, ...))

    def _check(self, record: int) -> int:
        if not 0 <= record < len(self.rows):
            raise IndexError(f"record {record} outside 0..{len(self.rows) - 1}")
        return int(record)

    def sources(self, record: int) -> np.ndarray:
        """(n_blocks,) int64: for each block, the index into rows of its last record at or
        before `record`; -1 for a block not started by then."""
        record = self._check(record)
        wanted = np.arange(self.n_blocks, dtype=np.int64)  # (B,)
        pos = np.searchsorted(self._keys, wanted * self._stride + record, side="right") - 1  # (B,)
        found = self._keys[np.maximum(pos, 0)] if len(self._keys) else np.zeros_like(pos)
        ok = (pos >= 0) & (found // self._stride == wanted)
        return np.where(ok, found % self._stride, -1)

    def field(self, name: str, record: int) -> np.ndarray:
        """(total_len,) `name` at history record `record`.

        Not a block run: the row's own array (a view into the store; do not write). A block run: a fresh array.
        """
        if name not in COMPOSED_FIELDS:
            raise KeyError(f"cannot compose {name!r}; one of {', '.join(COMPOSED_FIELDS)}")
        column = self.store.column(name)
        if not self.layout.is_blocks:
            return column[self.rows[self._check(record)]]
        src = self.sources(record)
        cached = self._cache.get(name)
        P = self.layout.prefix_len
        if cached is None:
            prev = np.full(self.n_blocks, -2, dtype=np.int64)  # -2: nothing copied yet
            out = np.empty((P + self.n_blocks * self.layout.seq_len, *column.shape[2:]), column.dtype)
            out[:P] = _prefix_value(name, self.layout.prefix)  # the prompt: the same at every record
        else:
            prev, out = cached
        changed = np.flatnonzero(src != prev)  # (C,) blocks whose record differs from the cached one
        if len(changed):
            view = out[P:].reshape(self.n_blocks, self.layout.seq_len, *column.shape[2:])  # (B, L, ...)
            started = changed[src[changed] >= 0]
            view[started] = column[self.rows[src[started]]]  # (S, L, ...) whole block records
            view[changed[src[changed] < 0]] = _fill_value(name, self.mask_id)
        self._cache[name] = (src, out)
        return out[: self.layout.total_len].copy()

    def record(self, record: int) -> dict[str, np.ndarray]:
        """tokens / confidence / score / entropy / flags at `record`, each (total_len,)."""
        return {name: self.field(name, record) for name in COMPOSED_FIELDS}


def compose(store: StepStore, rows: np.ndarray | list[int], record: int, field: str, mask_id: int) -> np.ndarray:
    """(total_len,) `field` of history `rows` at record `record` (one call; use Composer to repeat)."""
    return Composer(store, rows, mask_id).field(field, record)


def compose_record(store: StepStore, rows: np.ndarray | list[int], record: int, mask_id: int) -> dict[str, np.ndarray]:
    """tokens / confidence / score / entropy / flags of `rows` at `record`, each (total_len,)."""
    return Composer(store, rows, mask_id).record(record)


def final_text_ids(store: StepStore, rows: np.ndarray | list[int], mask_id: int) -> np.ndarray:
    """(total_len,) token ids at the last record of `rows`: a finished run's whole text."""
    if len(rows) == 0:
        raise ValueError("no records")
    return compose(store, rows, len(rows) - 1, "tokens", mask_id)


def composed_records_json(store: StepStore, rows: np.ndarray | list[int], vocab: Vocabulary) -> list[dict]:
    """Records as `generate --json` and `show --json` print them, composed for block runs.

    Not a block run: `step_store.records_json` as is. A block run:

        {"iteration", "kind", "block", "offset", "text", "masked"}

    with "text" the whole sequence at that record (finished blocks, the record's block,
    then masks as U+2588) and "masked" its mask count.
    """
    rows = np.asarray(rows, dtype=np.int64)
    if not store.layout.is_blocks:
        return records_json(store, rows, vocab)
    table = vocab.strings()
    comp = Composer(store, rows, vocab.mask_id)
    iteration, kind, block, offset = (store.column(n) for n in ("iteration", "kind", "block", "offset"))
    out = []
    for i, r in enumerate(rows):
        ids = comp.field("tokens", i).astype(np.int64)  # (total_len,)
        out.append(
            {
                "iteration": int(iteration[r]),
                "kind": KINDS[int(kind[r])],
                "block": int(block[r]),
                "offset": int(offset[r]),
                "text": "".join(table[ids]),
                "masked": int(np.count_nonzero(ids == vocab.mask_id)),
            }
        )
    return out
