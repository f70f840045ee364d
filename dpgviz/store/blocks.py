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

Whole-run views never compose every record in full:

    comp.sources_at(records)               (H, n_blocks) sources of many records at once
    comp.cells("flags", records, positions)  (H, W) composed values at sampled cells only
                                             (the overview: a gather, no composed rows)
    comp.stack("tokens", start, stop)      (stop - start, total_len), walking records in
                                             order (one block re-copied per record)
    block_sources(store, rows, b)          (R,) the record each record shows block b from
    running_sum(store, rows, values, fill) (R,) a per-record sum over each record's block,
                                             composed over the whole sequence: one cumsum
                                             of the change each record makes to its block

`records_json` is the JSON of records as `generate --json` prints them, and
`composed_records_json` the compact one of a block run (each record's own block, the
whole text only where asked). numpy only: never imports torch or dearpygui.
"""

from __future__ import annotations

import numpy as np

from dpgviz.core.records import FLAG_MASKED, FLAG_PROMPT, FLAG_PROTECTED, KINDS
from dpgviz.core.vocab import Vocabulary
from dpgviz.store.step_store import StepStore

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

    def sources_at(self, records: np.ndarray | list[int]) -> np.ndarray:
        """(H, n_blocks) int64: `sources` of each of `records` (history indices), in one searchsorted."""
        records = np.asarray(records, dtype=np.int64).reshape(-1)
        if len(records) and (records.min() < 0 or records.max() >= len(self.rows)):
            raise IndexError(f"records outside 0..{len(self.rows) - 1}")
        wanted = np.arange(self.n_blocks, dtype=np.int64)  # (B,)
        query = wanted[None, :] * self._stride + records[:, None]  # (H, B)
        pos = np.searchsorted(self._keys, query, side="right") - 1
        found = self._keys[np.maximum(pos, 0)] if len(self._keys) else np.zeros_like(pos)
        ok = (pos >= 0) & (found // self._stride == wanted[None, :])
        return np.where(ok, found % self._stride, -1)

    def cells(self, name: str, records: np.ndarray | list[int], positions: np.ndarray | list[int]) -> np.ndarray:
        """(H, W) `name` at history records `records` and sequence positions `positions`, composed.

        A gather of the H x W cells alone (no composed rows are built): what the overview
        samples. Not a block run: the store's own cells.
        """
        if name not in COMPOSED_FIELDS:
            raise KeyError(f"cannot compose {name!r}; one of {', '.join(COMPOSED_FIELDS)}")
        records = np.asarray(records, dtype=np.int64).reshape(-1)
        positions = np.asarray(positions, dtype=np.int64).reshape(-1)
        column = self.store.column(name)
        if not self.layout.is_blocks:
            return column[np.ix_(self.rows[records], positions)]
        P, L = self.layout.prefix_len, self.layout.seq_len
        if len(positions) and (positions.min() < 0 or positions.max() >= self.layout.total_len):
            raise IndexError(f"positions outside 0..{self.layout.total_len - 1}")
        in_prefix = positions < P
        block = np.where(in_prefix, 0, (positions - P) // L)  # (W,)
        local = np.where(in_prefix, 0, (positions - P) % L)  # (W,)
        src = self.sources_at(records)[:, block]  # (H, W) history index of each cell's block record
        values = column[self.rows[np.maximum(src, 0)], local[None, :]]  # (H, W)
        values[src < 0] = _fill_value(name, self.mask_id)
        if in_prefix.any():
            prefix = _prefix_value(name, self.layout.prefix)
            values[:, in_prefix] = prefix[positions[in_prefix]] if isinstance(prefix, np.ndarray) else prefix
        return values

    def stack(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """(stop - start, total_len) `name` at history records start..stop-1, composed in order."""
        stop = len(self.rows) if stop is None else int(stop)
        if not self.layout.is_blocks:
            return self.store.column(name)[self.rows[start:stop]]
        column = self.store.column(name)
        out = np.empty((max(0, stop - start), self.layout.total_len, *column.shape[2:]), column.dtype)
        for i, record in enumerate(range(start, stop)):  # one record at a time: each copies its own block
            out[i] = self.field(name, record)
        return out


def block_sources(store: StepStore, rows: np.ndarray | list[int], block: int) -> np.ndarray:
    """(R,) int64: for each history record, the index of the last record of `block` at or before
    it (the record whose values the composed sequence shows in that block); -1 before the block starts."""
    rows = np.asarray(rows, dtype=np.int64)
    is_block = store.column("block")[rows] == block
    return np.maximum.accumulate(np.where(is_block, np.arange(len(rows)), -1)) if len(rows) else np.zeros(0, np.int64)


def block_spans(store: StepStore) -> np.ndarray:
    """(n_blocks,) int64: the real positions of each block (a shorter last block has fewer)."""
    layout = store.layout
    return np.array([layout.span(layout.block_offset(b)) for b in range(layout.n_blocks)], dtype=np.int64)


def running_sum(store: StepStore, rows: np.ndarray | list[int], values: np.ndarray, fill: np.ndarray) -> np.ndarray:
    """(R,) a per-record sum composed over the whole sequence, for a block run.

    `values` (R,) is each record's sum over its own block (its masks, say) and `fill`
    (n_blocks,) the sum a block holds before it starts. At record r the whole sequence holds,
    per block, its last record at or before r (else the fill), so its sum is sum(fill) plus,
    over records i <= r, values[i] minus what i's block held before i: one cumsum, O(R).
    """
    rows = np.asarray(rows, dtype=np.int64)
    values = np.asarray(values)
    fill = np.asarray(fill)
    if not len(rows):
        return values[:0]
    blocks = store.column("block")[rows].astype(np.int64)  # (R,)
    order = np.argsort(blocks, kind="stable")  # by block, then by record
    before = np.empty_like(values)
    sorted_values, sorted_blocks = values[order], blocks[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = sorted_blocks[1:] != sorted_blocks[:-1]  # a block's first record replaces its fill
    before[order] = np.where(first, fill[sorted_blocks], np.roll(sorted_values, 1))
    return fill.sum() + np.cumsum(values - before)


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


def composed_masked(store: StepStore, rows: np.ndarray | list[int]) -> np.ndarray:
    """(R,) int64 masks in the whole sequence at each history record (`n_masked` of a non-block run)."""
    rows = np.asarray(rows, dtype=np.int64)
    n_masked = store.column("n_masked")[rows].astype(np.int64)
    if not store.layout.is_blocks:
        return n_masked
    return running_sum(store, rows, n_masked, block_spans(store))  # a block not started: all masked


def records_json(store: StepStore, rows: np.ndarray | list[int], vocab: Vocabulary) -> list[dict]:
    """Records in the form `generate --json` and `show --json` print (masks as U+2588).

        {"iteration": int, "kind": str, "text": str, "masked": int}
    """
    table = vocab.strings()
    tokens, iteration, kind, masked = (store.column(n) for n in ("tokens", "iteration", "kind", "n_masked"))
    return [
        {
            "iteration": int(iteration[r]),
            "kind": KINDS[int(kind[r])],
            "text": "".join(table[tokens[r].astype(np.int64)]),
            "masked": int(masked[r]),
        }
        for r in rows
    ]

def composed_records_json(
    store: StepStore, rows: np.ndarray | list[int], vocab: Vocabulary, full_text: bool = False
) -> list[dict]:
    """Records as `generate --json` and `show --json` print them.

    Not a block run: `records_json` as is (the whole sequence in every record).
    A block run, compactly (U+2588 for a mask):

        {"iteration", "kind", "block", "offset",
         "text",           # the record's own block: positions offset .. offset + len(text) - 1;
                           # after a prompt (layout.prefix), the prompt's text and then the block
                           # (positions 0 .. P-1, then offset ..), so every record starts with it
         "masked",         # masks in the whole sequence at this record
         "block_masked",   # masks in "text"
         "full_text"}      # the whole sequence composed at this record: only in the last
                           # record, or in every record with `full_text`

    so a 65,536-token run in blocks of 256 prints each record's 256 characters, not 65,536.
    """
    rows = np.asarray(rows, dtype=np.int64)
    if not store.layout.is_blocks:
        return records_json(store, rows, vocab)
    table = vocab.strings()
    layout = store.layout
    comp = Composer(store, rows, vocab.mask_id)
    iteration, kind, block, offset = (store.column(n) for n in ("iteration", "kind", "block", "offset"))
    tokens, own_masked = store.column("tokens"), store.column("n_masked")
    masked = composed_masked(store, rows)
    prompt = "".join(table[np.asarray(layout.prefix, dtype=np.int64)]) if layout.prefix else ""
    out = []
    for i, r in enumerate(rows):  # one dict per record: the JSON form itself
        off = int(offset[r])
        record = {
            "iteration": int(iteration[r]),
            "kind": KINDS[int(kind[r])],
            "block": int(block[r]),
            "offset": off,
            "text": prompt + "".join(table[tokens[r, : layout.span(off)].astype(np.int64)]),
            "masked": int(masked[i]),
            "block_masked": int(own_masked[r]),
        }
        if full_text or i == len(rows) - 1:
            record["full_text"] = "".join(table[comp.field("tokens", i).astype(np.int64)])
        out.append(record)
    return out


def final_text(records: list[dict]) -> str:
    """The finished text of `composed_records_json` records: the last record's whole sequence."""
    if not records:
        return ""
    return records[-1].get("full_text", records[-1]["text"])
