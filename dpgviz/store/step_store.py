"""The step store: every record of every branch, in preallocated numpy arrays.

Rows are appended in arrival order (the transport's poll copies into them); a column
per layout field, first axis = row, growing by doubling so appends are amortised O(1)
and a row, once written, never moves within an array generation. The branch tree says
which rows belong to which branch: a branch is a parent, the record of the parent's
history it forked from, the settings it ran with, the edits made at the fork and its
own rows in order.

A branch's history (`StepStore.history`) is what its timeline shows: the parent's
history up to and including the forked record, then the branch's own rows (for a fork
made with `StepStore.fork`, the first of these is the 'edit' record).

Branch ids are decimal integers as strings, never reused: `StepStore.delete` removes a
branch and its descendants from the tree (their rows stay in the columns, unreferenced)
and a new branch takes max id ever seen + 1. The `branch_index` column holds each row's
branch id as an integer (the same as its index in `branch_order` while nothing has been
deleted, which is all that files written before deletion existed ever held).

Stored arrays may be np.memmap views of a session file (opened read-only): the first
append then copies into fresh memory, like any growth.

numpy only: no torch, no dearpygui, no shared memory (the transport hands copies).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from dpgviz.core.records import (
    FLAG_EDITED,
    FLAG_MASKED,
    FLAG_PROTECTED,
    KIND_CODE,
    KINDS,
    SCALAR_FIELDS,
    RecordLayout,
    StepRecord,
    continue_point,
)
from dpgviz.core.vocab import Vocabulary

log = logging.getLogger(__name__)


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

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "parent": self.parent,
            "fork_record": self.fork_record,
            "settings": self.settings,
            "label": self.label,
            "edits": [dict(e) for e in self.edits],
            "rows": list(self.rows),
        }

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
        )


class StepStore:
    """All records of a session for one layout. Rows grow by doubling."""

    ROOT = "0"

    def __init__(self, layout: RecordLayout, capacity: int = 64, mask_id: int | None = None) -> None:
        self.layout = layout
        # The mask id is the vocabulary's (vocab.mask_id), which the layout cannot tell
        # (n_ids may include reserved ids). Given here or found from a masked cell; see mask_of.
        self.mask_id = mask_id
        self.next_branch_id = 0  # ids are never reused, even after delete (session files keep it)
        self._count = 0
        self._capacity = 0
        self.columns: dict[str, np.ndarray] = {}
        self._specs = {name: (shape, dtype) for name, (shape, dtype) in layout.token_fields().items()}
        self._specs.update({name: ((), dtype) for name, dtype in SCALAR_FIELDS.items()})
        self._specs["branch_index"] = ((), np.dtype(np.int32))  # index into branch_order
        self.branches: dict[str, Branch] = {}
        self.branch_order: list[str] = []
        self._grow(max(1, capacity))
        self.version = 0  # bumped on every change, so views can tell when to refresh

    # -- size ------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._count

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def nbytes(self) -> int:
        return sum(col[: self._count].nbytes for col in self.columns.values())

    def _grow(self, capacity: int) -> None:
        fresh = {}
        for name, (shape, dtype) in self._specs.items():
            col = np.empty((capacity, *shape), dtype)
            if name in self.columns and self._count:
                col[: self._count] = self.columns[name][: self._count]
            fresh[name] = col
        self.columns, self._capacity = fresh, capacity

    # -- branches --------------------------------------------------------------------
    def new_branch(self, settings: dict | None = None, parent: str | None = None, fork_record: int | None = None, label: str = "") -> Branch:
        if parent is not None and parent not in self.branches:
            raise KeyError(f"no branch {parent!r}")
        if parent is not None and fork_record is not None and not 0 <= fork_record < self.history_length(parent):
            raise IndexError(f"branch {parent!r} has no record {fork_record}")
        branch_id = str(self.next_branch_id)
        self.next_branch_id += 1
        branch = Branch(branch_id, parent, fork_record, dict(settings or {}), [], label)
        self.branches[branch_id] = branch
        self.branch_order.append(branch_id)
        self.version += 1
        return branch

    def rows(self, branch: str) -> np.ndarray:
        """Store rows of the branch's own records (not its parents'), int64."""
        return np.asarray(self.branches[branch].rows, dtype=np.int64)

    def history(self, branch: str) -> np.ndarray:
        """Store rows of everything the branch's timeline shows, int64.

        A root: its own rows. A child: history(parent)[:fork_record + 1], then its own rows
        (a child without fork_record has only its own rows).
        """
        b = self._branch(branch)
        own = np.asarray(b.rows, dtype=np.int64)
        if b.parent is None or b.fork_record is None:
            return own
        return np.concatenate((self.history(b.parent)[: b.fork_record + 1], own))

    def history_length(self, branch: str) -> int:
        b = self._branch(branch)
        if b.parent is None or b.fork_record is None:
            return len(b.rows)
        return min(b.fork_record + 1, self.history_length(b.parent)) + len(b.rows)

    def children(self, branch: str) -> list[str]:
        """Ids of the branches forked directly from `branch`, in creation order."""
        self._branch(branch)
        return [b for b in self.branch_order if self.branches[b].parent == branch]

    def rename(self, branch: str, label: str) -> None:
        self._branch(branch).label = str(label)
        self.version += 1

    def delete(self, branch: str) -> list[str]:
        """Remove `branch` and all its descendants from the tree; returns their ids.

        Their rows stay in the columns, unreferenced (saving keeps them; nothing reads
        them). Deleting the last remaining root would leave an empty session: refused.
        """
        b = self._branch(branch)
        if b.parent is None and not any(self.branches[r].parent is None for r in self.branch_order if r != branch):
            raise ValueError(f"branch {branch!r} is the only root left; a session keeps at least one")
        doomed = {branch}
        for bid in self.branch_order:  # parents precede children, so one pass finds every descendant
            if self.branches[bid].parent in doomed:
                doomed.add(bid)
        removed = [bid for bid in self.branch_order if bid in doomed]
        for bid in removed:
            del self.branches[bid]
        self.branch_order = [bid for bid in self.branch_order if bid not in doomed]
        self.version += 1
        return removed

    def _branch(self, branch: str) -> Branch:
        try:
            return self.branches[branch]
        except KeyError:
            raise KeyError(f"no branch {branch!r}") from None

    # -- forking -----------------------------------------------------------------------
    def mask_of(self) -> int:
        """The mask id: `self.mask_id` when known, else the token of any cell flagged masked."""
        if self.mask_id is None and self._count:
            masked = (self.column("flags") & FLAG_MASKED).astype(bool)
            if masked.any():
                row, pos = np.argwhere(masked)[0]
                self.mask_id = int(self.columns["tokens"][row, pos])
        if self.mask_id is None:
            raise ValueError("the store does not know the mask id; pass mask_id")
        return self.mask_id

    def fork(
        self,
        parent: str,
        fork_record: int,
        tokens: np.ndarray,
        protected: np.ndarray,
        edited: np.ndarray,
        settings: dict,
        label: str = "",
        edits: list[dict] | None = None,
        *,
        mask_id: int | None = None,
    ) -> Branch:
        """A child of `parent` forked at record `fork_record` of its history, holding one 'edit' record.

        The edit record is the source record with `tokens` in place of its own:
        flags = FLAG_MASKED where tokens == mask id, FLAG_PROTECTED where `protected`,
        FLAG_EDITED where `edited`; iteration = continue_point(source kind, iteration),
        i.e. where a restart from it begins; n_masked counted; target_masks and
        forward_passes copied. Confidence, score, entropy and top-k are copied except at
        positions whose token differs from the source or that are masked now: no model
        pass has seen the edited sequence, so there they are NaN / 0 rather than stale.
        `mask_id` defaults to `mask_of()`. Raises KeyError / IndexError / ValueError for
        an unknown parent, a record outside its history or arrays of the wrong shape.
        """
        rec = self._edit_record(parent, fork_record, tokens, protected, edited, mask_id)
        child = self.new_branch(settings, parent=parent, fork_record=fork_record, label=label)
        child.edits = [dict(e) for e in edits or []]
        self.append_record(rec, child.id)
        log.debug("forked branch %s from %s @ %d (%d edits)", child.id, parent, fork_record, len(child.edits))
        return child

    def amend_edit(
        self,
        branch: str,
        tokens: np.ndarray,
        protected: np.ndarray,
        edited: np.ndarray,
        edits: list[dict],
        *,
        mask_id: int | None = None,
    ) -> int:
        """Replace the 'edit' record of a fork that has not run yet (its only record); returns the new row.

        The new edit record is built from the same source record as `fork` builds it, and
        appended as a new row: rows are never rewritten (a save may be reading them), the
        old row is simply no longer referenced. ValueError when `branch` has run already.
        """
        b = self._branch(branch)
        if b.parent is None or b.fork_record is None or len(b.rows) != 1 or self.kind(b.rows[0]) != "edit":
            raise ValueError(f"branch {branch!r} is not an edit that has yet to run")
        rec = self._edit_record(b.parent, b.fork_record, tokens, protected, edited, mask_id)
        row = self.append_record(rec, branch)  # appended to b.rows ...
        b.rows = [row]  # ... then it stands in for the old edit record
        b.edits = [dict(e) for e in edits]
        self.version += 1
        return row

    def _edit_record(
        self,
        parent: str,
        fork_record: int,
        tokens: np.ndarray,
        protected: np.ndarray,
        edited: np.ndarray,
        mask_id: int | None,
    ) -> StepRecord:
        """The 'edit' record `fork` and `amend_edit` store (see `fork` for its contents)."""
        mask = self.mask_of() if mask_id is None else int(mask_id)
        hist = self.history(parent)
        if not 0 <= fork_record < len(hist):
            raise IndexError(f"branch {parent!r} has records 0..{len(hist) - 1}, not {fork_record}")
        n = self.layout.seq_len
        tokens = np.asarray(tokens)
        protected = np.asarray(protected, dtype=bool)
        edited = np.asarray(edited, dtype=bool)
        for name, arr in (("tokens", tokens), ("protected", protected), ("edited", edited)):
            if arr.shape != (n,):
                raise ValueError(f"{name} has shape {arr.shape}, expected ({n},)")
        if ((tokens < 0) | (tokens >= self.layout.n_ids)).any():
            raise ValueError(f"tokens hold ids outside 0..{self.layout.n_ids - 1}")
        is_masked = tokens == mask
        if (protected & is_masked).any():
            raise ValueError("a protected position is masked; protect only visible tokens")
        rec = self.record(int(hist[fork_record]))
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
        )
        rec.iteration = continue_point(rec.kind, rec.iteration)
        rec.kind = "edit"
        rec.n_masked = int(is_masked.sum())
        return rec

    # -- records ---------------------------------------------------------------------
    def append(self, scalars: dict, arrays: dict[str, np.ndarray], branch: str) -> int:
        """Copy one record into the next row of `branch`; returns the row."""
        if branch not in self.branches:
            raise KeyError(f"no branch {branch!r}")
        if self._count == self._capacity:
            self._grow(self._capacity * 2)
        row = self._count
        for name, value in arrays.items():
            self.columns[name][row] = value
        for name in SCALAR_FIELDS:
            value = scalars[name]
            self.columns[name][row] = KIND_CODE[value] if isinstance(value, str) else value
        self.columns["branch_index"][row] = int(branch) if branch.isdigit() else -1
        self._count += 1
        self.branches[branch].rows.append(row)
        self.version += 1
        return row

    def append_record(self, record: StepRecord, branch: str) -> int:
        return self.append(record.scalars(), record.arrays(), branch)

    def column(self, name: str) -> np.ndarray:
        """All rows of one field (a view; do not write)."""
        return self.columns[name][: self._count]

    def get(self, name: str, row: int) -> np.ndarray:
        if not 0 <= row < self._count:
            raise IndexError(f"row {row} outside 0..{self._count - 1}")
        return self.columns[name][row]

    def record(self, row: int) -> StepRecord:
        """A StepRecord of copies of one row."""
        if not 0 <= row < self._count:
            raise IndexError(f"row {row} outside 0..{self._count - 1}")
        scalars = {name: self.columns[name][row] for name in SCALAR_FIELDS}
        arrays = {name: self.columns[name][row].copy() for name in self.layout.token_fields()}
        return StepRecord.from_parts(scalars, arrays)

    def kind(self, row: int) -> str:
        return KINDS[int(self.columns["kind"][row])]

    # -- whole-store access for session files ------------------------------------------
    def tree(self) -> list[dict]:
        return [self.branches[b].to_dict() for b in self.branch_order]

    @classmethod
    def from_columns(
        cls, layout: RecordLayout, columns: dict[str, np.ndarray], count: int, tree: list[dict], mask_id: int | None = None
    ) -> StepStore:
        """A store over existing column arrays (e.g. memory-mapped), holding `count` rows."""
        store = cls.__new__(cls)
        store.layout = layout
        store.mask_id = mask_id
        store._specs = {name: (shape, dtype) for name, (shape, dtype) in layout.token_fields().items()}
        store._specs.update({name: ((), dtype) for name, dtype in SCALAR_FIELDS.items()})
        store._specs["branch_index"] = ((), np.dtype(np.int32))
        missing = set(store._specs) - set(columns)
        if missing:
            raise ValueError(f"missing columns: {', '.join(sorted(missing))}")
        for name, (shape, dtype) in store._specs.items():
            col = columns[name]
            if col.shape[1:] != shape or col.dtype != dtype or col.shape[0] < count:
                raise ValueError(f"column {name} has shape {col.shape} {col.dtype}, expected ({count}, *{shape}) {dtype}")
        store.columns = dict(columns)
        store._count = count
        store._capacity = count
        store.branches = {}
        store.branch_order = []
        for data in tree:
            branch = Branch.from_dict(data)
            store.branches[branch.id] = branch
            store.branch_order.append(branch.id)
        # Past every id in the tree and every id a row still carries (a deleted branch's
        # rows keep theirs), so a new branch never takes a deleted branch's id.
        known = [int(b) for b in store.branch_order if b.isdigit()]
        if count:
            known.append(int(store.columns["branch_index"][:count].max()))
        store.next_branch_id = max(known, default=-1) + 1
        store.version = 1
        return store


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
