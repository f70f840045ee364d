"""The step store's arrays: the row-indexed columns and the candidate pool, their specs, growth and checks.

Per row (first axis = row) and per pool entry (first axis = entry):

    columns (first axis = row)     shape      dtype
    tokens                         (N,)       ids (uint8 for <= 256 ids, see id_dtype_for)
    confidence, score, entropy     (N,)       float16
    flags                          (N,)       uint8
    SCALAR_FIELDS, branch_index    ()         int32 / uint8
    cand_start                     ()         int64   first pool entry of the record
    cand_count                     ()         int32   pool entries of the record
    cand_bits                      (N/8,)     uint8   np.packbits of "has candidates" per position

    pool (first axis = entry)      shape      dtype
    cand_ids                       (M, K)     ids
    cand_probs                     (M, K)     float16

A record arrives dense (top_ids / top_probs (N, K), zero where the sampler computed no
candidates); `append` keeps only the positions whose top_probs row is non-zero, in
position order, at pool[cand_start : cand_start + cand_count]. The entry of position p
is cand_start + popcount(cand_bits[:p]), so a lookup reads N/8 bytes at most. A record
whose candidates equal the previous row's (the sampler repeats a prediction's in its
'remask' and 'final' records) shares that row's entries instead of storing them again.
With uint8 ids that is 8 bytes per token-step dense + N/8 bitmap + 24 bytes per stored
candidate row; a run stores candidates about once per position per sampling, so a whole
run averages 12-15 bytes per token-step (`bytes_per_token_step`), against 41 when top-K
was dense.

Functions over plain dicts of arrays (a StepStore holds them): `row_specs` / `pool_specs`
(shape and dtype of one row or entry), `grown` (a bigger fresh copy), `has_probs` (which
positions of a dense record hold candidates), `check_columns` / `check_pool` (arrays
handed to StepStore.from_columns) and `check_offsets` (every row's pool range).

numpy and dpgviz.core only: never imports torch, dearpygui or shared memory, nor the
store itself (store.step_store) or its branch tree.
"""

from __future__ import annotations

import numpy as np

from dpgviz.core.records import SCALAR_FIELDS, RecordLayout

CANDIDATE_FIELDS = ("top_ids", "top_probs")  # dense (N, K) in a record; sparse in the store
POOL_FIELDS = ("cand_ids", "cand_probs")  # the pool's arrays, (M, K)
GROWTH = 1.5  # capacity factor when the final size is unknown: a third of the overshoot of doubling


def row_specs(layout: RecordLayout) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """name -> (shape of one row, dtype) of every row-indexed column."""
    specs = {name: spec for name, spec in layout.token_fields().items() if name not in CANDIDATE_FIELDS}
    specs.update({name: ((), dtype) for name, dtype in SCALAR_FIELDS.items()})
    specs["branch_index"] = ((), np.dtype(np.int32))  # the row's branch id
    specs["cand_start"] = ((), np.dtype(np.int64))
    specs["cand_count"] = ((), np.dtype(np.int32))
    specs["cand_bits"] = (((layout.seq_len + 7) // 8,), np.dtype(np.uint8))
    return specs


def pool_specs(layout: RecordLayout) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    k = layout.top_k
    return {"cand_ids": ((k,), layout.id_dtype), "cand_probs": ((k,), np.dtype(np.float16))}


def has_probs(top_probs: np.ndarray) -> np.ndarray:
    """Rows of float16 `top_probs` (..., K) with any non-zero probability (±0 both count as none).

    Compares the bit patterns as integers: numpy has no native float16 compare, and this
    runs on every appended record.
    """
    probs = np.ascontiguousarray(top_probs, dtype=np.float16)
    k = probs.shape[-1]
    if k and k % 4 == 0:  # K float16 = K/4 uint64 words: OR the words, a reduction over 8 bytes at a time
        words = probs.view(np.uint64).reshape(*probs.shape[:-1], k // 4)
        acc = words[..., 0].copy()
        for j in range(1, k // 4):  # K/4 column ORs (2 for K=8): numpy's reduce over a short axis is 10x slower
            acc |= words[..., j]
        return (acc & np.uint64(0x7FFF_7FFF_7FFF_7FFF)) != 0  # sign bits off: -0.0 counts as none
    return (probs.view(np.uint16) & np.uint16(0x7FFF)).any(axis=-1)


def grown(arrays: dict[str, np.ndarray], specs: dict, count: int, capacity: int) -> dict[str, np.ndarray]:
    """New arrays of `capacity` rows for each spec, holding the first `count` rows of `arrays`.

    Fresh arrays, never resized in place: a save or a view may still hold the old ones.
    """
    fresh = {}
    for name, (shape, dtype) in specs.items():
        arr = np.empty((capacity, *shape), dtype)
        if name in arrays and count:
            arr[:count] = arrays[name][:count]
        fresh[name] = arr
    return fresh


def check_columns(need: dict, columns: dict[str, np.ndarray], count: int, is_legacy: bool) -> None:
    """ValueError unless `columns` holds each column of `need` (name -> (row shape, dtype)) for `count` rows."""
    missing = set(need) - set(columns)
    if missing:
        raise ValueError(f"missing columns: {', '.join(sorted(missing))}")
    for name, (shape, dtype) in need.items():
        col = columns[name]
        # Legacy top_ids may be wider than this layout's ids (format 1 had no uint8 ids).
        dtype_ok = col.dtype.kind in "ui" if (is_legacy and name == "top_ids") else col.dtype == dtype
        if col.shape[1:] != shape or not dtype_ok or col.shape[0] < count:
            raise ValueError(f"column {name} has shape {col.shape} {col.dtype}, expected ({count}, *{shape}) {dtype}")


def check_pool(spec: dict, pool: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The pool arrays of `spec` from `pool`; ValueError if one is missing, of another shape or dtype, or their lengths differ."""
    for name, (shape, dtype) in spec.items():
        arr = pool.get(name)
        if arr is None or arr.shape[1:] != shape or arr.dtype != dtype:
            got = "missing" if arr is None else f"{arr.shape} {arr.dtype}"
            raise ValueError(f"pool array {name} is {got}, expected (M, *{shape}) {dtype}")
    checked = {name: pool[name] for name in spec}
    if len(checked["cand_ids"]) != len(checked["cand_probs"]):
        raise ValueError("pool arrays cand_ids and cand_probs differ in length")
    return checked


def check_offsets(columns: dict[str, np.ndarray], n: int, pool_count: int) -> None:
    """ValueError unless each of the first `n` rows' bitmap, count and pool range agree (reads offsets and bitmaps only)."""
    start = columns["cand_start"][:n]
    count = columns["cand_count"][:n].astype(np.int64)
    if n and (start.min() < 0 or count.min() < 0 or (start + count).max() > pool_count):
        raise ValueError(f"candidate offsets point outside the pool of {pool_count} entries")
    bits = np.bitwise_count(columns["cand_bits"][:n]).sum(axis=1, dtype=np.int64)
    if not np.array_equal(bits, count):
        raise ValueError("candidate counts do not match the candidate bitmaps")


# -- candidates: compaction on append, lookups on read (rows and positions already checked) --
def compacted(
    top_ids: np.ndarray | None, top_probs: np.ndarray | None, seq_len: int
) -> tuple[np.ndarray, int, np.ndarray | None, np.ndarray | None]:
    """(cand_bits, m, ids (m, K), probs (m, K)) of a dense record: the m positions holding candidates, in order."""
    if top_probs is None:
        mask = np.zeros(seq_len, dtype=bool)
    else:
        top_probs = np.asarray(top_probs, dtype=np.float16)
        mask = has_probs(top_probs)
    m = int(np.count_nonzero(mask))
    if not m:
        return np.packbits(mask), 0, None, None
    return np.packbits(mask), m, np.asarray(top_ids)[mask], top_probs[mask]


def is_repeat(
    columns: dict[str, np.ndarray], pool: dict[str, np.ndarray], prev: int, bits: np.ndarray, m: int,
    ids: np.ndarray, probs: np.ndarray,
) -> bool:
    """Row `prev` stored these very candidates (same positions, ids and probabilities bit for bit)."""
    if int(columns["cand_count"][prev]) != m or not np.array_equal(columns["cand_bits"][prev], bits):
        return False
    a = int(columns["cand_start"][prev])
    return np.array_equal(pool["cand_ids"][a : a + m], ids) and np.array_equal(
        pool["cand_probs"][a : a + m].view(np.uint16), probs.view(np.uint16)
    )


def candidate_mask(columns: dict[str, np.ndarray], row: int, seq_len: int) -> np.ndarray:
    """(N,) bool: positions of `row` with candidates stored."""
    return np.unpackbits(columns["cand_bits"][row], count=seq_len).view(bool)


def dense_top_k(
    columns: dict[str, np.ndarray], pool: dict[str, np.ndarray], row: int, layout: RecordLayout
) -> tuple[np.ndarray, np.ndarray]:
    """(ids (N, K), probs (N, K) float16) of `row`, zeros where no candidates are stored (fresh arrays)."""
    mask = candidate_mask(columns, row, layout.seq_len)
    n, k = layout.seq_len, layout.top_k
    ids = np.zeros((n, k), layout.id_dtype)
    probs = np.zeros((n, k), np.float16)
    m = int(columns["cand_count"][row])
    if m:
        a = int(columns["cand_start"][row])
        ids[mask] = pool["cand_ids"][a : a + m]
        probs[mask] = pool["cand_probs"][a : a + m]
    return ids, probs


def has_candidates(columns: dict[str, np.ndarray], rows: np.ndarray, pos: int) -> np.ndarray:
    """(len(rows),) bool: which of `rows` stored candidates at position `pos`."""
    byte = columns["cand_bits"][rows, pos >> 3]
    return ((byte >> np.uint8(7 - (pos & 7))) & np.uint8(1)).astype(bool)  # packbits: big-endian bits


def candidates_across(
    columns: dict[str, np.ndarray], pool: dict[str, np.ndarray], rows: np.ndarray, pos: int, layout: RecordLayout
) -> tuple[np.ndarray, np.ndarray]:
    """(ids (R, K), probs (R, K) float16) at position `pos` of each of `rows`; zeros where none.

    Vectorised: the pool entry is cand_start + popcount of the row's bits before `pos`.
    """
    k = layout.top_k
    ids = np.zeros((len(rows), k), layout.id_dtype)
    probs = np.zeros((len(rows), k), np.float16)
    hit = has_candidates(columns, rows, pos)
    sel = rows[hit]
    if len(sel):
        bits = columns["cand_bits"]
        before = np.bitwise_count(bits[sel, : pos >> 3]).sum(axis=1, dtype=np.int64)
        if pos & 7:  # the bits of the same byte that come before pos (its high bits)
            before += np.bitwise_count(bits[sel, pos >> 3] >> np.uint8(8 - (pos & 7)))
        entry = columns["cand_start"][sel] + before
        ids[hit] = pool["cand_ids"][entry]
        probs[hit] = pool["cand_probs"][entry]
    return ids, probs
