"""Edit operations on one record's tokens: what the GUI's edit buttons and `main.py branch` share.

An edit works on copies of (tokens, protected) and returns the new pair plus `changed`,
the positions whose token it altered (the caller ORs these into the FLAG_EDITED mask it
passes to `StepStore.fork`). Ranges are token positions [start, stop), end exclusive.

    mask       sets the mask id on [start, stop). Protected positions are SKIPPED (the
               user fixed them; unprotect first), and a range that is all protected is an
               EditError, so a click never silently does nothing.
    unmask     puts back, at the masked positions of the range, the token the step's
               prediction sampled there (`predicted`, see `predicted_tokens`).
    replace    `text_ids` (L token ids, L <= stop - start: whole tokens, one per position, as
               `encode_text` splits the typed text) go to start..start+L and the rest of
               the range is masked: the same length replaces the selection, shorter text
               masks the rest; longer text is an EditError. A range holding protected
               positions is refused (replacing would silently drop the protection).
    protect    marks the VISIBLE positions of the range protected; masked ones are skipped
               (the sampler never changes a protected position, so a protected mask would
               stay masked forever) and a range with no visible position is an EditError.
    unprotect  clears protection on the range.

Every user mistake raises EditError (a ValueError) with a one-line message.

Runs made in blocks (`RecordLayout.is_blocks`: a record holds one block) are edited in
whole-sequence positions, the way the window and `show` compose them (store.blocks):

    edit_state(store, rows, record)   the composed tokens / protected / edited at a record,
                                      and `limit`: the end of the record's block. Positions
                                      before it may be edited (finished blocks and the
                                      record's own); later blocks have not started there
                                      (all masked), so `check_editable` refuses them.
    fork_edit / amend_edit            the child branch of an edit: a run in one block gets
                                      StepStore.fork's one 'edit' record; a block run gets one
                                      'edit' record per block the edit changed, in block order,
                                      the record's own block always and last (its iteration
                                      is where a restart begins), so store.blocks composes the
                                      edited sequence at the child's last record.
    check_masks(...)                  finished blocks before the record's take no masks: they
                                      are context, a restart runs on from the record's block
                                      (an edit there that leaves no mask, say a replacement of
                                      the same length or a protection, is fine).
    start_point(...)                  where a run from a whole-sequence state begins: the
                                      record's block at the record's iteration when it has
                                      masks (in its last iteration when it was finished
                                      there), else the next block at iteration 0.

numpy and the standard library only: no torch, no dearpygui.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dpgviz.core.records import (
    FLAG_EDITED,
    FLAG_MASKED,
    FLAG_PROMPT,
    FLAG_PROTECTED,
    KINDS,
    RecordLayout,
    StepRecord,
    continue_point,
)
from dpgviz.core.vocab import MASK_GLYPH, VocabError, Vocabulary
from dpgviz.store.blocks import Composer, compose
from dpgviz.store.branch import Branch
from dpgviz.store.step_store import StepStore

OPS = ("mask", "unmask", "replace", "protect", "unprotect")


class EditError(ValueError):
    """An edit cannot be made; the message says why in one line."""


def _check_range(start: int, stop: int, n: int) -> None:
    if not 0 <= start < stop <= n:
        raise EditError(f"range {start}:{stop} is not inside 0:{n} (start < stop, end exclusive)")


def apply_edit(
    tokens: np.ndarray,
    protected: np.ndarray,
    op: str,
    start: int,
    stop: int,
    *,
    mask_id: int,
    text_ids: np.ndarray | None = None,
    predicted: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Apply one edit to copies of `tokens` and `protected`; returns (tokens, protected, changed).

    See the module docstring for each op's rules. The inputs are never modified.
    """
    tokens = np.array(tokens, copy=True)
    protected = np.array(protected, dtype=bool, copy=True)
    before = tokens.copy()
    n = len(tokens)
    start, stop = int(start), int(stop)
    _check_range(start, stop, n)
    span = slice(start, stop)
    is_masked = tokens == mask_id
    if op == "mask":
        if protected[span].all():
            raise EditError(f"every position in {start}:{stop} is protected; unprotect them first")
        sel = ~protected[span]
        tokens[span][sel] = mask_id
    elif op == "unmask":
        if predicted is None:
            raise EditError("this record has no prediction to unmask from")
        predicted = np.asarray(predicted)
        if predicted.shape != tokens.shape:
            raise EditError(f"prediction has {predicted.shape[0]} positions, the record {n}")
        fill = is_masked[span] & (predicted[span] != mask_id)
        tokens[span][fill] = predicted[span][fill]
    elif op == "replace":
        if text_ids is None:
            raise EditError("replace needs text")
        text_ids = np.asarray(text_ids)
        if len(text_ids) > stop - start:
            raise EditError(f"text of {len(text_ids)} tokens does not fit the {stop - start} positions {start}:{stop}")
        if protected[span].any():
            first = start + int(np.flatnonzero(protected[span])[0])
            raise EditError(f"position {first} in {start}:{stop} is protected; unprotect it first")
        tokens[start : start + len(text_ids)] = text_ids
        tokens[start + len(text_ids) : stop] = mask_id
    elif op == "protect":
        visible = ~is_masked[span]
        if not visible.any():
            raise EditError(f"every position in {start}:{stop} is masked; only visible tokens can be protected")
        protected[span] |= visible
    elif op == "unprotect":
        protected[span] = False
    else:
        raise EditError(f"unknown edit {op!r}; choose one of {', '.join(OPS)}")
    return tokens, protected, tokens != before


def parse_range(text: str, seq_len: int) -> tuple[int, int]:
    """'A:B' -> (A, B), token positions, end exclusive; 'A:' runs to the end, ':B' from 0."""
    a, sep, b = str(text).partition(":")
    if not sep:
        raise EditError(f"range {text!r} is not START:STOP (end exclusive)")
    try:
        start = int(a) if a.strip() else 0
        stop = int(b) if b.strip() else seq_len
    except ValueError:
        raise EditError(f"range {text!r} is not START:STOP with integer positions") from None
    _check_range(start, stop, seq_len)
    return start, stop


def parse_replace(text: str) -> tuple[int, str]:
    """'POS:TEXT' -> (POS, TEXT); TEXT may itself hold colons and must not be empty."""
    pos, sep, body = str(text).partition(":")
    try:
        start = int(pos)
    except ValueError:
        raise EditError(f"replacement {text!r} is not POS:TEXT with an integer position") from None
    if not sep or not body:
        raise EditError(f"replacement {text!r} is not POS:TEXT with some text")
    if start < 0:
        raise EditError(f"replacement position {start} is negative")
    return start, body


def encode_text(text: str, vocab: Vocabulary) -> np.ndarray:
    """Token ids of `text` (MASK_GLYPH = the mask) by `Vocabulary.encode`: one per character for a
    char-level model, whole subword tokens (greedy longest match) otherwise. EditError names
    EVERY character no token holds, or where the text cannot be split into tokens."""
    bad = vocab.unknown_chars(text, MASK_GLYPH)
    if bad:
        raise EditError(f"characters not in the model's vocabulary: {', '.join(repr(ch) for ch in bad)}")
    try:
        return vocab.encode(text)
    except VocabError as exc:
        raise EditError(str(exc)) from None


_PREDICTED_KINDS = (KINDS.index("prediction"), KINDS.index("final"))


def predicted_tokens(store: StepStore, branch: str, record: int) -> np.ndarray | None:
    """Tokens the prediction behind history record `record` of `branch` sampled (a copy), or None.

    The nearest 'prediction' or 'final' record at or before `record` in the branch's
    history: its own tokens for those kinds, the prediction just before for a 'remask'.
    For an 'initial' or 'edit' record that is the last prediction before the fork (so
    unmasking an edit restores what the model had sampled); None when the history holds
    no prediction before it (a fresh run's 'initial').
    """
    hist = store.history(branch)
    if not -len(hist) <= record < len(hist):
        raise EditError(f"branch {branch!r} has records 0..{len(hist) - 1}, not {record}")
    upto = hist[: record % len(hist) + 1]
    kinds = store.column("kind")[upto]
    hits = np.flatnonzero(np.isin(kinds, _PREDICTED_KINDS))
    if hits.size == 0:
        return None
    if store.layout.is_blocks:  # the whole sequence at that prediction (finished blocks, its block, masks)
        return compose(store, hist, int(hits[-1]), "tokens", store.mask_of()).astype(np.int64)
    return store.get("tokens", int(upto[hits[-1]])).copy()


# -- whole-sequence edits of block runs --------------------------------------------------------
@dataclass
class EditState:
    """What an edit of one history record works on: whole-sequence arrays (copies)."""

    tokens: np.ndarray  # (total_len,) int64
    protected: np.ndarray  # (total_len,) bool
    edited: np.ndarray  # (total_len,) bool: FLAG_EDITED as shown
    block: int  # the record's block (0 in a run in one block)
    limit: int  # positions [0, limit) may be edited: up to the end of the record's block


def edit_state(store: StepStore, rows: np.ndarray, record: int, mask_id: int) -> EditState:
    """The sequence at history record `record` of `rows` as an edit sees it (see the module doc)."""
    layout, row = store.layout, int(rows[record])
    if not layout.is_blocks:
        flags = store.get("flags", row)
        return EditState(
            store.get("tokens", row).astype(np.int64), (flags & FLAG_PROTECTED).astype(bool),
            (flags & FLAG_EDITED).astype(bool), 0, layout.seq_len,
        )
    comp = Composer(store, rows, mask_id)
    flags = comp.field("flags", record)
    block = int(store.get("block", row))
    offset = layout.block_offset(block)
    return EditState(
        comp.field("tokens", record).astype(np.int64), (flags & FLAG_PROTECTED).astype(bool),
        (flags & FLAG_EDITED).astype(bool), block, offset + layout.span(offset),
    )


def check_editable(layout: RecordLayout, state: EditState, start: int, stop: int) -> None:
    """EditError when [start, stop) reaches past the record's block: those blocks have not started.
    (A range past the sequence's end is apply_edit's to refuse.)"""
    if not layout.is_blocks or start >= layout.total_len or stop > layout.total_len:
        return
    if start < layout.prefix_len:
        raise EditError(f"positions 0:{layout.prefix_len} are the prompt, fixed in a run made in blocks")
    if stop <= state.limit:
        return
    first = max(start, state.limit)
    block, _ = layout.block_of(first)
    raise EditError(
        f"positions {first}:{stop} are in block {block + 1} of {layout.n_blocks}, which has not started at this "
        f"record (it is all masked); edit up to position {state.limit - 1}, or at a record of block {block + 1}"
    )


def _block_edit_records(
    store: StepStore, parent: str, fork_record: int, tokens: np.ndarray, protected: np.ndarray,
    edited: np.ndarray, mask_id: int,
) -> list[StepRecord]:
    """The 'edit' records of a block run's fork (see the module doc), built from each block's
    record at the fork the way StepStore.fork builds its one: values NaN (top-k 0) where the
    token changed or is masked, flags from the new state, iteration where a restart begins."""
    layout = store.layout
    hist = store.history(parent)
    if not 0 <= fork_record < len(hist):
        raise IndexError(f"branch {parent!r} has records 0..{len(hist) - 1}, not {fork_record}")
    n = layout.total_len
    tokens, protected, edited = np.asarray(tokens), np.asarray(protected, bool), np.asarray(edited, bool)
    for name, arr in (("tokens", tokens), ("protected", protected), ("edited", edited)):
        if arr.shape != (n,):
            raise ValueError(f"{name} has shape {arr.shape}, expected ({n},)")
    if ((tokens < 0) | (tokens >= layout.n_ids)).any():
        raise ValueError(f"tokens hold ids outside 0..{layout.n_ids - 1}")
    is_masked = tokens == mask_id
    if (protected & is_masked).any():
        raise ValueError("a protected position is masked; protect only visible tokens")
    comp = Composer(store, hist, mask_id)
    before_tokens, before_flags = comp.field("tokens", fork_record), comp.field("flags", fork_record)
    # A block gets an edit record when its tokens or protection changed (and the record's own
    # block always); `edited` only flags positions, in the blocks that get one.
    differs = (tokens != before_tokens) | (protected != ((before_flags & FLAG_PROTECTED) != 0))
    P = layout.prefix_len
    if differs[:P].any():
        raise ValueError("the prompt before the first block is fixed")
    own = int(store.get("block", int(hist[fork_record])))
    touched = np.unique(np.flatnonzero(differs[P:]) // layout.seq_len)
    if len(touched) and touched[-1] > own:
        raise ValueError(f"block {int(touched[-1]) + 1} has not started at record {fork_record}")
    sources = comp.sources(fork_record)
    records = []
    for block in [*(int(b) for b in touched if b != own), own]:
        rec = store.record(int(hist[sources[block]]))
        off = layout.block_offset(block)
        span = slice(0, layout.span(off))
        new, prot, edit = tokens[off : off + span.stop], protected[off : off + span.stop], edited[off : off + span.stop]
        masked = new == mask_id
        stale = masked | (new != rec.tokens[span])
        rec.tokens[span] = new
        for name in ("confidence", "score", "entropy"):
            getattr(rec, name)[span][stale] = np.nan
        rec.top_ids[span][stale] = 0
        rec.top_probs[span][stale] = 0
        rec.flags[span] = (
            masked.astype(np.uint8) * FLAG_MASKED
            | prot.astype(np.uint8) * FLAG_PROTECTED
            | edit.astype(np.uint8) * FLAG_EDITED
            | np.where(prot, rec.flags[span] & FLAG_PROMPT, 0).astype(np.uint8)
        )
        rec.iteration = continue_point(rec.kind, rec.iteration)
        rec.kind = "edit"
        rec.n_masked = int(masked.sum())
        records.append(rec)
    return records


def fork_edit(
    store: StepStore, parent: str, fork_record: int, tokens: np.ndarray, protected: np.ndarray,
    edited: np.ndarray, settings: dict, *, label: str = "", edits: list[dict] | None = None, mask_id: int,
) -> Branch:
    """The child of an edit at history record `fork_record` of `parent`; whole-sequence arrays
    (StepStore.fork for a run in one block, one 'edit' record per changed block otherwise)."""
    if not store.layout.is_blocks:
        return store.fork(parent, fork_record, tokens, protected, edited, settings, label=label, edits=edits,
                          mask_id=mask_id)
    records = _block_edit_records(store, parent, fork_record, tokens, protected, edited, mask_id)
    child = store.new_branch(settings, parent=parent, fork_record=fork_record, label=label)
    child.edits = [dict(e) for e in edits or []]
    for rec in records:
        store.append_record(rec, child.id)
    return child


def is_draft(store: StepStore, branch: str) -> bool:
    """True for an edit that has not run yet: a fork whose own records are all 'edit' records."""
    b = store.branches.get(branch)
    return (
        b is not None and b.parent is not None and bool(b.rows)
        and all(store.kind(r) == "edit" for r in b.rows)
    )


def amend_edit(
    store: StepStore, branch: str, tokens: np.ndarray, protected: np.ndarray, edited: np.ndarray,
    edits: list[dict], *, mask_id: int,
) -> None:
    """Replace the edit records of an unrun fork (`is_draft`) with those of a new state, as
    StepStore.amend_edit does for a run in one block: new rows, the old ones unreferenced."""
    if not store.layout.is_blocks:
        store.amend_edit(branch, tokens, protected, edited, edits, mask_id=mask_id)
        return
    if not is_draft(store, branch):
        raise ValueError(f"branch {branch!r} is not an edit that has yet to run")
    b = store.branches[branch]
    records = _block_edit_records(store, b.parent, b.fork_record, tokens, protected, edited, mask_id)
    b.rows = []
    for rec in records:
        store.append_record(rec, branch)  # appended to b.rows, now only the new ones
    b.edits = [dict(e) for e in edits]
    store.version += 1


@dataclass(frozen=True)
class StartPoint:
    """Where a block run goes on from a whole-sequence state (engine.sampler.StartState)."""

    block: int  # the first block with a mask: the sampler starts there
    iteration: int  # that block's first iteration
    has_record: bool  # the block has a record at the start (the record's own): no 'initial' needed


def start_point(
    layout: RecordLayout, tokens: np.ndarray, mask_id: int, record_block: int, record_iteration: int,
    is_finished: bool, steps: int,
) -> StartPoint | None:
    """Where a run of `steps` iterations from `tokens` (whole sequence) begins, for a record of
    block `record_block` whose restart iteration is `record_iteration`; None when nothing is masked.

    The record's own block, when it has masks, goes on at `record_iteration`; when it was
    finished there (`is_finished`: its 'final') or the iteration is past `steps`, its masks are
    filled in its last iteration (steps - 1). Otherwise the next block starts at iteration 0.
    Blocks before the record's are finished text: `check_masks` keeps masks out of them.
    """
    masked = np.asarray(tokens)[layout.prefix_len :] == mask_id
    hits = np.flatnonzero(masked)
    if not len(hits):
        return None
    first = int(hits[0]) // layout.seq_len
    if first != record_block:
        return StartPoint(first, 0, first < record_block)
    if is_finished or record_iteration >= steps:
        return StartPoint(first, max(0, steps - 1), True)
    return StartPoint(first, int(record_iteration), True)


def check_masks(layout: RecordLayout, state: EditState, tokens: np.ndarray, mask_id: int) -> None:
    """EditError when an edit leaves a mask in a block finished before the record's: a restart runs
    from the record's block on, so a finished block keeps its text (replace it, or mask it at a
    record of its own block)."""
    start = layout.block_offset(state.block)
    masked = np.flatnonzero(np.asarray(tokens)[layout.prefix_len : start] == mask_id)
    if len(masked):
        pos = layout.prefix_len + int(masked[0])
        block = layout.block_of(pos)[0] + 1
        raise EditError(
            f"position {pos} is in block {block}, finished before this record's block {state.block + 1}: "
            f"a restart runs on from block {state.block + 1}, so mask it at a record of block {block}, "
            "or replace it with text of the same length"
        )
