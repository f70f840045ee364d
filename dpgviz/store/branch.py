"""A branch of the run tree (`Branch`) and the 'edit' record a fork starts from (`edit_record`).

The branch tree says which rows belong to which branch: a branch is a parent, the
record of the parent's history it forked from, the settings it ran with, the edits
made at the fork and its own rows in order.

A branch's history (`StepStore.history`) is what its timeline shows: the parent's
history up to and including the forked record, then the branch's own rows (for a fork
made with `StepStore.fork`, the first of these is the 'edit' record).

The step store (store.step_store) holds the branches and their rows; `StepStore.fork`
and `amend_edit` store what `edit_record` builds.

numpy and dpgviz.core only: never imports torch or dearpygui, nor the step store.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dpgviz.core.records import (
    FLAG_EDITED,
    FLAG_MASKED,
    FLAG_PROMPT,
    FLAG_PROTECTED,
    RecordLayout,
    StepRecord,
    continue_point,
)


@dataclass
class Branch:
    """One path through the run tree. The root has no parent."""

    id: str
    parent: str | None = None
    fork_record: int | None = None  # index, within the parent's HISTORY, of the record forked from
    settings: dict = field(default_factory=dict)
    rows: list[int] = field(default_factory=list)  # store rows of this branch's records, in order
    label: str = ""
    # What the user changed at the fork, in order: {"op", "start", "stop", "text"} dicts
    # (see store.edits); informative only, the edit record holds the result.
    edits: list[dict] = field(default_factory=list)
    # What made this branch's own records when it was not the session's model (`compare
    # --models`, `branch --model`): {"model": {"name", "path", "sha256"}, "runtime": {...}}
    # (store.provenance). Empty: the session header's model and runtime. Saved only when set.
    provenance: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        data = {
            "id": self.id,
            "parent": self.parent,
            "fork_record": self.fork_record,
            "settings": self.settings,
            "label": self.label,
            "edits": [dict(e) for e in self.edits],
            "rows": list(self.rows),
        }
        if self.provenance:  # optional: files without it read as before
            data["provenance"] = dict(self.provenance)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> Branch:
        return cls(
            id=str(data["id"]),
            parent=data.get("parent"),
            fork_record=data.get("fork_record"),
            settings=dict(data.get("settings") or {}),
            rows=[int(r) for r in data.get("rows", [])],
            label=str(data.get("label", "")),
            edits=[dict(e) for e in data.get("edits") or []],  # files before edits lack the key
            provenance=dict(data.get("provenance") or {}),  # absent before issue 24
        )


def edit_record(
    rec: StepRecord, tokens: np.ndarray, protected: np.ndarray, edited: np.ndarray, mask: int, layout: RecordLayout
) -> StepRecord:
    """The forked-from record `rec` (a copy, changed in place) turned into the 'edit' record of a fork.

    `tokens` replace its own: flags = FLAG_MASKED where tokens == `mask`, FLAG_PROTECTED
    where `protected`, FLAG_EDITED where `edited`, FLAG_PROMPT kept where the source had
    it and it stays protected; iteration = continue_point(source kind, iteration), i.e.
    where a restart from it begins; n_masked counted; target_masks and forward_passes
    copied. Confidence, score, entropy and top-k are copied except at positions whose
    token differs from the source or that are masked now: no model pass has seen the
    edited sequence, so there they are NaN / 0 rather than stale. ValueError for arrays
    of the wrong shape, ids outside the layout or a protected mask.
    """
    n = layout.seq_len
    tokens = np.asarray(tokens)
    protected = np.asarray(protected, dtype=bool)
    edited = np.asarray(edited, dtype=bool)
    for name, arr in (("tokens", tokens), ("protected", protected), ("edited", edited)):
        if arr.shape != (n,):
            raise ValueError(f"{name} has shape {arr.shape}, expected ({n},)")
    if ((tokens < 0) | (tokens >= layout.n_ids)).any():
        raise ValueError(f"tokens hold ids outside 0..{layout.n_ids - 1}")
    is_masked = tokens == mask
    if (protected & is_masked).any():
        raise ValueError("a protected position is masked; protect only visible tokens")
    stale = is_masked | (tokens != rec.tokens)
    rec.tokens[:] = tokens
    for name in ("confidence", "score", "entropy"):
        getattr(rec, name)[stale] = np.nan
    rec.top_ids[stale] = 0
    rec.top_probs[stale] = 0
    rec.flags[:] = (
        is_masked.astype(np.uint8) * FLAG_MASKED
        | protected.astype(np.uint8) * FLAG_PROTECTED
        | edited.astype(np.uint8) * FLAG_EDITED
        | np.where(protected, rec.flags & FLAG_PROMPT, 0).astype(np.uint8)  # a prompt's cells stay the prompt's
    )
    rec.iteration = continue_point(rec.kind, rec.iteration)
    rec.kind = "edit"
    rec.n_masked = int(is_masked.sum())
    return rec
