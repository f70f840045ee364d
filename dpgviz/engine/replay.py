"""Re-run a saved branch and compare every record, bit for bit (`python main.py verify`).

A branch's history is a chain of segments, one per branch on the way from the root, each
the records that branch made itself (store.step_store.Branch.rows, cut where the next one
forks). `plan` turns each segment into what started it:

    the root          its settings from the start (all masked, or its prompt)
    a fork with edits its 'edit' record is the start (the user's input, not re-run): tokens,
                      protected and edited positions and its iteration; the run opens with
                      the first prediction
    any other fork    the parent's record it forked at, continued from there (the run opens
                      with an 'initial' only if the branch's own records do)

and `replay` runs each through the sampler of the model that made it (by content hash,
store.provenance.Origin; the caller resolves and loads it), appending every record to a
scratch store of the same layout so that it is rounded and compacted exactly as the saved
one was, then compares the two rows: tokens, flags, confidence, remask score, entropy
(float16 bit patterns), the stored top-K ids and probabilities, and every scalar. The
first record that differs ends the replay.

On the CPU a re-run with the same torch, the same thread count and dtype repeats every
operation in the same order, so it is exact. torch; CLI-side only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from dpgviz.core.records import FLAG_EDITED, FLAG_PROTECTED, SCALAR_FIELDS, continue_point
from dpgviz.core.settings import GenerationSettings
from dpgviz.engine.sampler import Sampler, StartState
from dpgviz.store.blocks import compose
from dpgviz.store.provenance import Origin, branch_origin
from dpgviz.store.step_store import StepStore

VALUE_FIELDS = ("tokens", "flags", "confidence", "score", "entropy")


@dataclass
class Segment:
    """Records of one branch on the target's timeline, and how its run started."""

    branch: str
    first: int  # index in the target's history of the first record compared
    rows: np.ndarray  # store rows to compare, in order
    settings: GenerationSettings
    start: StartState
    origin: Origin


@dataclass(frozen=True)
class Outcome:
    """What `verify` reports: identical, or where the re-run first differs."""

    n_records: int  # records compared (all of them when identical)
    record: int | None = None  # index in the branch's history of the first record that differs
    iteration: int | None = None
    n_positions: int = 0  # positions whose value differs there
    fields: tuple[str, ...] = ()  # which fields differ
    ended_early: bool = False  # the re-run produced fewer records than the branch has

    @property
    def is_identical(self) -> bool:
        return self.record is None

    def line(self) -> str:
        """The one line `verify` prints (its exact form is what scripts read)."""
        if self.is_identical:
            return f"identical: {self.n_records} records"
        return f"diverges at record {self.record} (iteration {self.iteration}, {self.n_positions} positions differ)"

    def detail(self) -> str:
        """What differs there, for stderr."""
        if self.ended_early:
            return f"the re-run ended after {self.n_records} records, before this one"
        return f"fields that differ: {', '.join(self.fields)}" if self.fields else ""

    def to_dict(self) -> dict:
        return {
            "identical": self.is_identical, "records": self.n_records, "record": self.record,
            "iteration": self.iteration, "positions": self.n_positions, "fields": list(self.fields),
            "ended_early": self.ended_early, "line": self.line(),
        }


def plan(session, branch: str) -> list[Segment]:
    """The segments of `branch`'s history (`session`: store.session.Session)."""
    store = session.store
    history = store.history(branch)
    owners = {int(r): bid for bid in store.branch_order for r in store.branches[bid].rows}
    mask_id = session.vocab.mask_id
    segments: list[Segment] = []
    k = 0
    while k < len(history):
        owner = owners[int(history[k])]
        end = k
        while end < len(history) and owners[int(history[end])] == owner:
            end += 1
        b = store.branches[owner]
        settings = GenerationSettings.from_dict(b.settings or session.settings)
        rows = history[k:end]
        if b.parent is None or b.fork_record is None:
            start, first = StartState(), k
        elif store.kind(int(rows[0])) == "edit":
            start, first = _start_at(store, history, k, mask_id, emit_initial=False, edit=True), k + 1
            rows = rows[1:]
        else:
            start = _start_at(store, history, b.fork_record, mask_id, emit_initial=store.kind(int(rows[0])) == "initial")
            first = k
        segments.append(Segment(owner, first, rows, settings, start, branch_origin(session, owner)))
        k = end
    return segments


def _start_at(store: StepStore, history: np.ndarray, k: int, mask_id: int, *, emit_initial: bool, edit: bool = False) -> StartState:
    """The start state a run continued from history record `k` had (the whole sequence)."""
    row = int(history[k])
    if store.layout.is_blocks:
        tokens = compose(store, history, k, "tokens", mask_id).astype(np.int64)
        flags = compose(store, history, k, "flags", mask_id)
    else:
        tokens, flags = store.get("tokens", row).astype(np.int64), store.get("flags", row)
    iteration = int(store.columns["iteration"][row])
    if not edit:  # an edit record stores where its restart begins already
        iteration = continue_point(store.kind(row), iteration)
    protected = (flags & FLAG_PROTECTED) != 0
    edited = (flags & FLAG_EDITED) != 0
    return StartState(
        tokens=tokens, iteration=iteration, protected=protected if protected.any() else None,
        edited=edited, emit_initial=emit_initial,
    )


def _float_differs(x: np.ndarray, y: np.ndarray, tolerance: float) -> np.ndarray:
    """Exact: the bit patterns differ (NaN equals NaN, -0.0 differs from 0.0). With a tolerance:
    |x - y| > tolerance, or one is NaN and the other not."""
    if tolerance <= 0:
        return x.view(np.uint16 if x.itemsize == 2 else np.uint32) != y.view(np.uint16 if y.itemsize == 2 else np.uint32)
    x, y = x.astype(np.float32), y.astype(np.float32)
    nan_x, nan_y = np.isnan(x), np.isnan(y)
    return (nan_x != nan_y) | (~nan_x & ~nan_y & (np.abs(x - y) > tolerance))


def differences(
    a: StepStore, row_a: int, b: StepStore, row_b: int, tolerance: float = 0.0
) -> tuple[int, tuple[str, ...]]:
    """(positions whose values differ, names of the fields that differ) between two rows.
    Ids, flags and scalars compare exactly; probabilities, scores and entropies bit for bit,
    or within `tolerance` (absolute) when it is above 0."""
    n = a.layout.seq_len
    differs = np.zeros(n, dtype=bool)
    fields: list[str] = []
    for name in VALUE_FIELDS:
        x, y = a.get(name, row_a), b.get(name, row_b)
        d = _float_differs(x, y, tolerance) if x.dtype.kind == "f" else x != y
        if d.any():
            fields.append(name)
            differs |= d
    (ids_a, probs_a), (ids_b, probs_b) = a.top_k(row_a), b.top_k(row_b)
    d = (ids_a != ids_b).any(-1) | _float_differs(probs_a, probs_b, tolerance).any(-1)
    if d.any():
        fields.append("candidates")
        differs |= d
    for name in SCALAR_FIELDS:
        if a.columns[name][row_a] != b.columns[name][row_b]:
            fields.append(name)
    return int(differs.sum()), tuple(fields)


def replay(store: StepStore, segments: list[Segment], sampler_for: Callable[[Origin], Sampler],
           progress: Callable[[int, int], None] | None = None, tolerance: float = 0.0) -> Outcome:
    """Re-run every segment and compare record by record (`differences`); stops at the first difference."""
    total = sum(len(s.rows) for s in segments)
    done = 0
    scratch = StepStore(store.layout, capacity=max(1, total), mask_id=store.mask_id)
    for seg in segments:
        if not len(seg.rows):
            continue
        sampler = sampler_for(seg.origin)
        branch = scratch.new_branch(seg.settings.to_dict(), label=seg.branch).id
        records = sampler.run(seg.settings, seg.start)
        try:
            for j, row in enumerate(seg.rows):
                record = next(records, None)
                index = seg.first + j
                if record is None:
                    it = int(store.columns["iteration"][int(row)])
                    return Outcome(done, index, it, store.layout.span(int(store.columns["offset"][int(row)])),
                                   ended_early=True)
                mine = scratch.append_record(record, branch)
                n_pos, fields = differences(store, int(row), scratch, mine, tolerance)
                if fields:
                    return Outcome(done, index, int(store.columns["iteration"][int(row)]), n_pos, fields)
                done += 1
                if progress is not None:
                    progress(done, total)
        finally:
            records.close()
    return Outcome(done)
