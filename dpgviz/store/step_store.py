"""The step store: every record of every branch, in preallocated numpy arrays.

Rows are appended in arrival order (the transport's poll copies into them); a column
per layout field, first axis = row, growing by doubling so appends are amortised O(1)
and a row, once written, never moves within an array generation. The branch tree says
which rows belong to which branch: a branch is a parent, the parent row it forked
from, the settings it ran with and its own rows in order.

Stored arrays may be np.memmap views of a session file (opened read-only): the first
append then copies into fresh memory, like any growth.

numpy only: no torch, no dearpygui, no shared memory (the transport hands copies).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dpgviz.core.records import KINDS, SCALAR_FIELDS, RecordLayout, StepRecord
from dpgviz.core.vocab import Vocabulary


@dataclass
class Branch:
    """One path through the run tree. The root has no parent."""

    id: str
    parent: str | None = None
    fork_record: int | None = None  # index, within the parent's records, of the record forked from
    settings: dict = field(default_factory=dict)
    rows: list[int] = field(default_factory=list)  # store rows of this branch's records, in order
    label: str = ""

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "parent": self.parent,
            "fork_record": self.fork_record,
            "settings": self.settings,
            "label": self.label,
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
        )


class StepStore:
    """All records of a session for one layout. Rows grow by doubling."""

    ROOT = "0"

    def __init__(self, layout: RecordLayout, capacity: int = 64) -> None:
        self.layout = layout
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
        if parent is not None and fork_record is not None and not 0 <= fork_record < len(self.branches[parent].rows):
            raise IndexError(f"branch {parent!r} has no record {fork_record}")
        branch_id = str(len(self.branch_order))
        branch = Branch(branch_id, parent, fork_record, dict(settings or {}), [], label)
        self.branches[branch_id] = branch
        self.branch_order.append(branch_id)
        self.version += 1
        return branch

    def rows(self, branch: str) -> np.ndarray:
        return np.asarray(self.branches[branch].rows, dtype=np.int64)

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
            self.columns[name][row] = KINDS.index(value) if isinstance(value, str) else value
        self.columns["branch_index"][row] = self.branch_order.index(branch)
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
    def from_columns(cls, layout: RecordLayout, columns: dict[str, np.ndarray], count: int, tree: list[dict]) -> StepStore:
        """A store over existing column arrays (e.g. memory-mapped), holding `count` rows."""
        store = cls.__new__(cls)
        store.layout = layout
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
