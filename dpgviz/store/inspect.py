"""Probability inspection: one position's history, run-wide series, decoding order.

Everything here reads a `StepStore` and a branch's history rows (the int array
`StepStore.history(branch)` / `Session.rows` returns; "record i" below is index i into
those rows, as on the timeline) and answers with numpy arrays or plain dicts:

    position_history    one position across the records, as JSON-ready dicts (`show --position`)
    history_arrays      the same as arrays for plotting, plus an event code per record
    sampled_at          the record whose candidates a settled token was drawn from
    last_sampled_records  the same for every position of one record
    run_series          per record: masked fraction, mean confidence, mean entropy
    changed_since_previous  which tokens differ from the previous record
    commit_records      decoding order: the record from which each position keeps its final token
    (the overview: store.overview; re-sampling previews: store.resample)

Work is vectorised over positions; the only Python loops run over records (at most a
few thousand), and whole-run passes go through the rows in chunks, so a 1,000-record x
65,536-token run never has a full records x positions float array in memory.

Runs made in blocks (`RecordLayout.is_blocks`): position_history, run_series,
changed_since_previous, commit_records and the overview speak of the WHOLE sequence
(positions 0..total_len-1) at each record, composed as `store.blocks` does (finished
blocks, the record's block, masks to come), without composing every record in full:
the series compose per-record block sums (`store.blocks.running_sum`), the overview
gathers only its sampled cells (`Composer.cells`), decoding order walks each block's own
records. history_arrays, sampled_at and last_sampled_records stay per record (a block
record's own positions).

numpy and dpgviz.core only (and store.blocks): never imports torch, Pillow, dearpygui,
anything from export/gui/cli (the GUI process, the CLI and the exporters all import it),
nor the overview or re-sampling modules.
"""

from __future__ import annotations

import logging

import numpy as np

from dpgviz.core.palette import STATE_NAMES, mask_states
from dpgviz.core.records import FLAG_MASKED, FLAG_PROMPT, FLAG_PROTECTED, KINDS
from dpgviz.core.vocab import Vocabulary
from dpgviz.store.blocks import Composer, block_sources, block_spans, composed_masked, running_sum
from dpgviz.store.step_store import StepStore

log = logging.getLogger(__name__)

# -- event codes of history_arrays -------------------------------------------------------
# What happened at the position in each record, relative to the previous record of the
# history (record 0 has no previous one: masked or visible).
EVENT_VISIBLE = 0  # visible, same token as before
EVENT_MASKED = 1  # masked, and was masked before (or record 0 is masked)
EVENT_UNMASKED = 2  # masked before, visible now
EVENT_REMASKED = 3  # visible before, masked now
EVENT_CHANGED = 4  # visible before and now, with another token (an edit, or a re-drawn token)
EVENT_NAMES = ("visible", "masked", "unmasked", "remasked", "changed")

_SERIES_CHUNK_CELLS = 256 * 1024  # cells per chunk of rows in run_series: ~1 MB of float32, cache-sized


def _rows(rows: np.ndarray | list[int]) -> np.ndarray:
    return np.asarray(rows, dtype=np.int64).reshape(-1)


def _check_pos(store: StepStore, pos: int) -> int:
    n = store.layout.seq_len
    if not 0 <= int(pos) < n:
        raise IndexError(f"position {pos} outside 0..{n - 1}")
    return int(pos)


def _check_seq_pos(store: StepStore, pos: int) -> int:
    """A position of the whole sequence (total_len; seq_len unless the run is in blocks)."""
    n = store.layout.total_len
    if not 0 <= int(pos) < n:
        raise IndexError(f"position {pos} outside 0..{n - 1}")
    return int(pos)


def _mask_id(store: StepStore) -> int:
    """The mask id (for composing block runs); 0 for a store without one and no masks (nothing to fill).

    A store that was not told its mask id finds it from a masked cell once (StepStore.mask_of).
    """
    try:
        return store.mask_of()
    except ValueError:
        return 0


def _check_record(rows: np.ndarray, record: int) -> int:
    if not 0 <= int(record) < len(rows):
        raise IndexError(f"record {record} outside 0..{len(rows) - 1}")
    return int(record)


# -- one position ----------------------------------------------------------------------------
def history_arrays(store: StepStore, rows: np.ndarray | list[int], pos: int) -> dict[str, np.ndarray]:
    """Position `pos` across the records of `rows`, as arrays of length len(rows) (for plots).

    confidence, entropy, score   float32, NaN where the record holds none
    tokens                       int64 token ids (the mask id where masked)
    is_masked                    bool (FLAG_MASKED)
    events                       uint8 EVENT_* code (see EVENT_NAMES)
    computed                     bool: candidates (top-k) were stored at this record
    iteration, kind              int32 iteration and uint8 KIND code of each record
    """
    rows, pos = _rows(rows), _check_pos(store, pos)
    col = store.column
    tokens = col("tokens")[rows, pos].astype(np.int64)
    is_masked = (col("flags")[rows, pos] & FLAG_MASKED) != 0
    return {
        "confidence": col("confidence")[rows, pos].astype(np.float32),
        "entropy": col("entropy")[rows, pos].astype(np.float32),
        "score": col("score")[rows, pos].astype(np.float32),
        "tokens": tokens,
        "is_masked": is_masked,
        "events": _events(tokens, is_masked),
        "computed": store.has_candidates(rows, pos),
        "iteration": col("iteration")[rows].astype(np.int32),
        "kind": col("kind")[rows].astype(np.uint8),
    }


def _events(tokens: np.ndarray, is_masked: np.ndarray) -> np.ndarray:
    """(R,) uint8 EVENT_* code of each record from a position's tokens and mask bits across them."""
    events = np.where(is_masked, EVENT_MASKED, EVENT_VISIBLE).astype(np.uint8)
    if len(tokens) > 1:
        was_masked, now_masked = is_masked[:-1], is_masked[1:]
        later = events[1:]  # a view: writes land in `events`
        later[was_masked & ~now_masked] = EVENT_UNMASKED
        later[~was_masked & now_masked] = EVENT_REMASKED
        later[~was_masked & ~now_masked & (tokens[1:] != tokens[:-1])] = EVENT_CHANGED
    return events


def position_sources(store: StepStore, rows: np.ndarray | list[int], pos: int) -> tuple[np.ndarray, int]:
    """(sources (R,), position within a record) of sequence position `pos` across the records of `rows`.

    sources[i] is the index (into rows) of the record whose values the whole sequence shows
    at `pos` at record i: i itself in a run in one block; in a block run the last record of
    pos's block at or before i, -1 before that block starts and for the prompt before the
    first block (no record holds it: `store.layout.prefix`).
    """
    rows, pos = _rows(rows), _check_seq_pos(store, pos)
    layout = store.layout
    if not layout.is_blocks:
        return np.arange(len(rows), dtype=np.int64), pos
    block, local = layout.block_of(pos)
    if block < 0:
        return np.full(len(rows), -1, dtype=np.int64), pos
    return block_sources(store, rows, block), int(local)


def _number(x: float) -> float | None:
    """A stored number for JSON: the shortest decimal that reads back as the same float32
    (1e-05, not 8e-06 or 9.999999747378752e-06); None where NaN or infinite."""
    return None if not np.isfinite(x) else float(str(np.float32(x)))


def position_history(store: StepStore, rows: np.ndarray | list[int], pos: int, vocab: Vocabulary) -> list[dict]:
    """One dict per record of `rows`, in order, describing position `pos` (`show --position --json`).

        {"record": i, "iteration": int, "kind": str,
         "token": str | None,      # None where masked
         "state": str,             # core.palette STATE_NAMES name of the cell
         "p": float | None,        # confidence; None where NaN
         "entropy": float | None, "score": float | None,
         "top": [[token, prob], ...]}  # stored candidates, most probable first; [] where none

    Numbers are rounded to 6 decimals; zero-probability padding of the top-k is left out.

    A block run: `pos` is a position of the whole sequence, and each record describes what
    the sequence composed at that record holds there (`position_sources`): masked, with no
    values, before pos's block starts; that block's latest record from then on (its final
    record once done); the prompt's fixed token before the first block. Each dict then
    also has "source": the record those values come from (None where none).
    """
    rows = _rows(rows)
    if store.layout.is_blocks:
        return _block_position_history(store, rows, pos, vocab)
    pos = _check_pos(store, pos)
    arrays = history_arrays(store, rows, pos)
    return _history_dicts(store, rows, pos, vocab, arrays, mask_states(store.column("flags")[rows, pos]))


def _history_dicts(
    store: StepStore, rows: np.ndarray, pos: int, vocab: Vocabulary, arrays: dict, states: np.ndarray,
    has_values: np.ndarray | None = None,
) -> list[dict]:
    """position_history's dicts from history_arrays-like `arrays` over `rows` (the records the
    values come from) at record-local `pos`; `has_values` False: a cell no record holds (no top-k)."""
    table = vocab.strings()
    top_ids, top_probs = store.candidates_across(rows, pos)  # (R, K) each, zeros where none
    if has_values is not None:
        top_probs[~has_values] = 0
    top_ids, top_probs = top_ids.astype(np.int64), top_probs.astype(np.float32)
    order = np.argsort(-top_probs, axis=1, kind="stable")  # most probable first, ties in stored order
    top_ids = np.take_along_axis(top_ids, order, axis=1)
    top_probs = np.take_along_axis(top_probs, order, axis=1)
    out = []
    for i in range(len(rows)):  # one dict per record: the JSON form itself, not a per-token loop
        keep = top_probs[i] > 0
        out.append(
            {
                "record": i,
                "iteration": int(arrays["iteration"][i]),
                "kind": KINDS[int(arrays["kind"][i])],
                "token": None if arrays["is_masked"][i] else str(table[arrays["tokens"][i]]),
                "state": STATE_NAMES[int(states[i])],
                "p": _number(arrays["confidence"][i]),
                "entropy": _number(arrays["entropy"][i]),
                "score": _number(arrays["score"][i]),
                "top": [
                    [str(table[t]), _number(p)] for t, p in zip(top_ids[i][keep], top_probs[i][keep], strict=True)
                ],
            }
        )
    return out


def _block_position_history(store: StepStore, rows: np.ndarray, pos: int, vocab: Vocabulary) -> list[dict]:
    """position_history of a block run: the composed sequence's value at `pos` at each record."""
    src, local = position_sources(store, rows, pos)
    has = src >= 0
    in_prefix = pos < store.layout.prefix_len
    local = 0 if in_prefix else local  # a prompt position: no record holds it (read, then replaced)
    source_rows = rows[np.maximum(src, 0)] if len(rows) else rows
    values = {name: store.column(name)[source_rows, local] for name in ("tokens", "flags", "confidence",
                                                                         "entropy", "score")}
    if in_prefix:  # the prompt before the first block: fixed, never predicted
        values["tokens"] = np.full(len(rows), store.layout.prefix[pos], dtype=np.int64)
        values["flags"] = np.full(len(rows), FLAG_PROMPT | FLAG_PROTECTED, dtype=np.uint8)
    else:  # a block not started: masked, no values
        values["tokens"] = np.where(has, values["tokens"], vocab.mask_id)
        values["flags"] = np.where(has, values["flags"], FLAG_MASKED).astype(np.uint8)
    for name in ("confidence", "entropy", "score"):
        values[name] = np.where(has, values[name].astype(np.float32), np.nan).astype(np.float32)
    tokens = values["tokens"].astype(np.int64)
    is_masked = (values["flags"] & FLAG_MASKED) != 0
    arrays = {
        "confidence": values["confidence"], "entropy": values["entropy"], "score": values["score"],
        "tokens": tokens, "is_masked": is_masked, "events": _events(tokens, is_masked),
        "iteration": store.column("iteration")[rows].astype(np.int32), "kind": store.column("kind")[rows].astype(np.uint8),
    }
    out = _history_dicts(store, source_rows, local, vocab, arrays, mask_states(values["flags"]), has)
    for entry, s in zip(out, src.tolist(), strict=True):
        entry["source"] = None if s < 0 else int(s)
    return out


def sampled_at(store: StepStore, rows: np.ndarray | list[int], pos: int, record: int) -> int | None:
    """Index (into rows) of the last record at or before `record` that stored candidates for `pos`.

    "The step that last sampled it": a settled token's tooltip shows the candidates from
    there. None when no record up to `record` computed any.
    """
    rows, pos = _rows(rows), _check_pos(store, pos)
    record = _check_record(rows, record)
    computed = store.has_candidates(rows[: record + 1], pos)
    hits = np.flatnonzero(computed)
    return int(hits[-1]) if len(hits) else None


def last_sampled_records(store: StepStore, rows: np.ndarray | list[int], record: int) -> np.ndarray:
    """`sampled_at` for every position of record `record`: (N,) int32, -1 where never computed.

    Walks back from `record` one record at a time and stops once every position is
    found, so positions sampled recently cost one record each; the worst case reads the
    candidate bitmap (N/8 bytes) of every earlier record, never a candidate.
    """
    rows = _rows(rows)
    record = _check_record(rows, record)
    last = np.full(store.layout.seq_len, -1, dtype=np.int32)
    missing = np.ones(store.layout.seq_len, dtype=bool)
    for i in range(record, -1, -1):
        hit = missing & store.candidate_mask(int(rows[i]))
        last[hit] = i
        missing &= ~hit
        if not missing.any():
            break
    return last


# -- whole run ---------------------------------------------------------------------------------
def _row_sums(values: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sums float64, counts int64) of float32 `values` over `valid` cells per row (zeroes the rest in place)."""
    np.copyto(values, 0.0, where=~valid)
    # float32 sums are pairwise along a contiguous row: ample for a mean of <= 65,536
    # values, and a float64 accumulator would double the pass's cost.
    return values.sum(axis=1, dtype=np.float32).astype(np.float64), np.count_nonzero(valid, axis=1).astype(np.int64)


def record_sums(store: StepStore, rows: np.ndarray | list[int]) -> dict[str, np.ndarray]:
    """Per record of `rows`, over the record's own positions (a block run: its block):

        confidence_sum, confidence_n   float64 sum and int64 count of the confidences of visible tokens
        entropy_sum, entropy_n         the same for the entropies where computed

    Goes through the rows in chunks of ~256K cells (cache-sized: measured fastest, and
    memory stays bounded). Each record's sums depend on that record alone, so a view can
    extend cached sums with `record_sums(store, new_rows)` as records arrive and hand
    them all to `series_from_sums`.
    """
    rows = _rows(rows)
    seq_len = store.layout.seq_len
    out = {k: np.zeros(len(rows), dtype=np.float64 if k.endswith("sum") else np.int64)
           for k in ("confidence_sum", "confidence_n", "entropy_sum", "entropy_n")}
    flags_col, conf_col, ent_col = store.column("flags"), store.column("confidence"), store.column("entropy")
    chunk = max(1, _SERIES_CHUNK_CELLS // max(1, seq_len))
    for start in range(0, len(rows), chunk):
        part = rows[start : start + chunk]
        sl = slice(start, start + len(part))
        confidence = conf_col[part].astype(np.float32)
        valid = np.isfinite(confidence)
        valid &= (flags_col[part] & FLAG_MASKED) == 0
        out["confidence_sum"][sl], out["confidence_n"][sl] = _row_sums(confidence, valid)
        entropy = ent_col[part].astype(np.float32)
        out["entropy_sum"][sl], out["entropy_n"][sl] = _row_sums(entropy, np.isfinite(entropy))
    return out


def _means(total: np.ndarray, n: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, total / np.maximum(n, 1), np.nan)


def series_from_sums(store: StepStore, rows: np.ndarray | list[int], sums: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`run_series` from `record_sums(store, rows)`: O(len(rows)), no token reads but the scalars."""
    rows = _rows(rows)
    total_len = store.layout.total_len
    if store.layout.is_blocks:  # the whole sequence at each record: compose the block sums
        none = np.zeros(store.layout.n_blocks)
        sums = {k: running_sum(store, rows, v, none.astype(v.dtype)) for k, v in sums.items()}
    return {
        "masked_fraction": composed_masked(store, rows).astype(np.float64) / max(1, total_len),
        "mean_confidence": _means(sums["confidence_sum"], sums["confidence_n"]),
        "mean_entropy": _means(sums["entropy_sum"], sums["entropy_n"]),
        "iteration": store.column("iteration")[rows].astype(np.int32),
        "record": np.arange(len(rows), dtype=np.int64),
    }


def run_series(store: StepStore, rows: np.ndarray | list[int]) -> dict[str, np.ndarray]:
    """Per record of `rows` (float64 arrays of len(rows), plus the x axes):

        masked_fraction   masks / the sequence's length
        mean_confidence   mean confidence over visible tokens that have one; NaN if none
        mean_entropy      mean entropy over positions where it was computed; NaN if none
        iteration         int32 iteration, record  int64 0..len(rows)-1

    A block run: over the whole sequence composed at each record (blocks not started are
    masked and hold no values). `record_sums` + `series_from_sums`, which a view can
    extend as records arrive.
    """
    return series_from_sums(store, rows, record_sums(store, rows))


def changed_since_previous(store: StepStore, rows: np.ndarray | list[int], record: int) -> np.ndarray:
    """(N,) bool: the token at each position differs from the previous record's (record 0: all False).

    Masking and unmasking count as changes (the id becomes or stops being the mask id).
    A block run: N = total_len, the whole sequences composed at the two records.
    """
    rows = _rows(rows)
    record = _check_record(rows, record)
    if record == 0:
        return np.zeros(store.layout.total_len, dtype=bool)
    if store.layout.is_blocks:
        comp = Composer(store, rows, _mask_id(store))
        return comp.field("tokens", record) != comp.field("tokens", record - 1)
    tokens = store.column("tokens")
    return tokens[rows[record]] != tokens[rows[record - 1]]


def _commit_rows(store: StepStore, rows: np.ndarray) -> np.ndarray:
    """commit_records over records that hold the same positions (a run in one block, or one block's records)."""
    commit = np.full(store.layout.seq_len, -1, dtype=np.int32)
    if len(rows) == 0:
        return commit
    tokens, flags = store.column("tokens"), store.column("flags")
    final = tokens[rows[-1]]
    holding = (flags[rows[-1]] & FLAG_MASKED) == 0
    commit[holding] = len(rows) - 1
    for i in range(len(rows) - 2, -1, -1):
        holding &= (tokens[rows[i]] == final) & ((flags[rows[i]] & FLAG_MASKED) == 0)
        if not holding.any():
            break
        commit[holding] = i
    return commit


def commit_records(store: StepStore, rows: np.ndarray | list[int]) -> np.ndarray:
    """Decoding order: (N,) int32 index (into rows) of the record from which each position holds
    its final token for good (never masked or changed after); -1 where the last record is masked.

    Walks back from the last record keeping the positions whose token still equals the
    final one, and stops once none are left. A block run: N = total_len; a position's value
    changes only at its own block's records, so each block walks back over those alone
    (-1 for a block not started; the prompt before the first block holds from record 0).
    """
    rows = _rows(rows)
    layout = store.layout
    if not layout.is_blocks:
        return _commit_rows(store, rows)
    commit = np.full(layout.total_len, -1, dtype=np.int32)
    if len(rows) == 0:
        return commit
    commit[: layout.prefix_len] = 0
    blocks = store.column("block")[rows]
    spans = block_spans(store)
    for b in np.unique(blocks).tolist():  # one walk per block (at most a few hundred)
        mine = np.flatnonzero(blocks == b)  # (R_b,) the block's records, in history order
        local = _commit_rows(store, rows[mine])[: spans[b]]
        off = layout.block_offset(b)
        commit[off : off + spans[b]] = np.where(local >= 0, mine[np.maximum(local, 0)], -1)
    return commit


def eos_mass(store: StepStore, rows: np.ndarray | list[int], eos_ids: tuple[int, ...] | list[int]) -> np.ndarray:
    """Per record of `rows`: the probability the model put on end tokens (`eos_ids`), summed over the
    positions it predicted (those with stored candidates: the masked ones) and divided by their
    count: the share of the masked positions' mass on EOS/EOT. From the stored top-k only, so an
    end token outside a position's top K counts nothing there. NaN where nothing was predicted."""
    rows = _rows(rows)
    out = np.full(len(rows), np.nan)
    ends = np.asarray(list(eos_ids), dtype=np.int64)
    if not len(ends):
        return out
    for i, row in enumerate(rows.tolist()):  # one record's (N, K) candidates at a time
        ids, probs = store.top_k(int(row))
        has = (probs > 0).any(axis=1)
        if has.any():
            on_end = np.isin(ids[has], ends)
            out[i] = float((probs[has].astype(np.float64) * on_end).sum() / has.sum())
    return out
