"""The step store: every record of every branch, dense per-token fields plus a sparse candidate pool.

Rows are appended in arrival order (the transport's poll copies into them). What a row
and a pool entry hold, and how a record's candidates are compacted into the pool, is
store.step_columns' docstring; a branch and a fork's 'edit' record are store.branch's.

Readers use the accessors, never the pool: `top_k(row)` (dense (N, K) expansion),
`candidates_at(row, pos)`, `candidate_mask(row)`, `has_candidates(rows, pos)` and
`candidates_across(rows, pos)`; `column(name)` / `get(name, row)` for dense fields.

Capacity: `StepStore(layout, capacity=rows)` and `reserve(extra_rows)` allocate exactly
the rows a caller knows it will append (a run yields record_count(steps) records), so a
run never copies its columns; appending past that grows by 1.5x. The pool's size is
not known in advance (it depends on how many positions each prediction filled): it
grows by 1.5x, or exactly when `reserve(..., candidates=)` is told. Growing copies into
fresh arrays: a row or a pool entry, once written, never changes within an array
generation, so a reader holding old arrays (a save on another thread) stays consistent.

A branch's history (`StepStore.history`) is what its timeline shows: the parent's
history up to and including the forked record, then the branch's own rows.

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

import numpy as np

from dpgviz.core.records import FLAG_MASKED, KIND_CODE, KINDS, SCALAR_FIELDS, RecordLayout, StepRecord
from dpgviz.store.branch import Branch, edit_record
from dpgviz.store.step_columns import (
    CANDIDATE_FIELDS,
    GROWTH,
    candidate_mask,
    candidates_across,
    check_columns,
    check_offsets,
    check_pool,
    compacted,
    dense_top_k,
    grown,
    has_candidates,
    is_repeat,
    pool_specs,
    row_specs,
)

log = logging.getLogger(__name__)

class StepStore:
    """All records of a session for one layout. Rows grow by doubling."""

    ROOT = "0"

    def __init__(
        self, layout: RecordLayout, capacity: int = 64, mask_id: int | None = None, candidates: int = 0
    ) -> None:
        """An empty store with room for `capacity` rows and `candidates` pool entries."""
        self.layout = layout
        # The mask id is the vocabulary's (vocab.mask_id), which the layout cannot tell
        # (n_ids may include reserved ids). Given here or found from a masked cell; see mask_of.
        self.mask_id = mask_id
        self.next_branch_id = 0  # ids are never reused, even after delete (session files keep it)
        self._count = 0
        self._capacity = 0
        self._pool_count = 0
        self._pool_capacity = 0
        self.columns: dict[str, np.ndarray] = {}
        self.pool: dict[str, np.ndarray] = {}
        self._specs = row_specs(layout)
        self._pool_spec = pool_specs(layout)
        self.branches: dict[str, Branch] = {}
        self.branch_order: list[str] = []
        self.layers: list = []  # store.layers.ScoreLayer: a second model's values on a branch's records
        self._grow(max(1, capacity))
        self._grow_pool(max(0, candidates))
        self.version = 0  # bumped on every change, so views can tell when to refresh

    # -- size ------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._count

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def pool_count(self) -> int:
        """Candidate rows stored (pool entries in use)."""
        return self._pool_count

    @property
    def pool_capacity(self) -> int:
        return self._pool_capacity

    @property
    def nbytes(self) -> int:
        """Bytes of everything stored: rows present plus pool entries in use."""
        return sum(self.byte_breakdown().values())

    def byte_breakdown(self) -> dict[str, int]:
        """Stored bytes by part: 'dense' token fields, 'bitmaps', 'scalars' (incl. offsets), 'pool'."""
        n = self._count
        dense = sum(self.columns[name][:n].nbytes for name in self.layout.token_fields() if name in self.columns)
        bitmaps = self.columns["cand_bits"][:n].nbytes
        scalars = sum(col[:n].nbytes for col in self.columns.values()) - dense - bitmaps
        pool = sum(arr[: self._pool_count].nbytes for arr in self.pool.values())
        return {"dense": dense, "bitmaps": bitmaps, "scalars": scalars, "pool": pool}

    @property
    def bytes_per_token_step(self) -> float:
        """Stored bytes (`nbytes`) per position per record; 0.0 for an empty store."""
        if not self._count:
            return 0.0
        return self.nbytes / (self._count * self.layout.seq_len)

    def reserve(self, extra_rows: int, candidates: int = 0) -> None:
        """Make room for `extra_rows` more rows (and `candidates` more pool entries), exactly.

        Appending up to that many then never reallocates. Callers that know a run's
        record count (core.records.record_count) reserve it before the run starts.
        """
        if self._count + extra_rows > self._capacity:
            self._grow(self._count + int(extra_rows))
        if self._pool_count + candidates > self._pool_capacity:
            self._grow_pool(self._pool_count + int(candidates))

    def _grow(self, capacity: int) -> None:
        log.debug("store rows: %d -> %d", self._capacity, capacity)
        self.columns, self._capacity = grown(self.columns, self._specs, self._count, capacity), capacity

    def _grow_pool(self, capacity: int) -> None:
        self.pool, self._pool_capacity = grown(self.pool, self._pool_spec, self._pool_count, capacity), capacity

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

        The edit record is the source record with `tokens` in place of its own (see
        store.branch.edit_record). `mask_id` defaults to `mask_of()`. Raises KeyError / IndexError / ValueError for
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
        """The 'edit' record `fork` and `amend_edit` store (store.branch.edit_record)."""
        mask = self.mask_of() if mask_id is None else int(mask_id)
        hist = self.history(parent)
        if not 0 <= fork_record < len(hist):
            raise IndexError(f"branch {parent!r} has records 0..{len(hist) - 1}, not {fork_record}")
        return edit_record(self.record(int(hist[fork_record])), tokens, protected, edited, mask, self.layout)

    # -- records ---------------------------------------------------------------------
    def append(self, scalars: dict, arrays: dict[str, np.ndarray], branch: str) -> int:
        """Copy one record into the next row of `branch`; returns the row.

        `arrays` are the record's dense per-token arrays (RecordLayout.token_fields);
        top_ids / top_probs are compacted into the pool (see the module docstring). A
        scalar missing from `scalars` is stored as 0, as session files without it read
        (fields added to SCALAR_FIELDS later, like a block's offset, are 0 for older callers).
        """
        if branch not in self.branches:
            raise KeyError(f"no branch {branch!r}")
        if self._count == self._capacity:
            self._grow(max(self._capacity + 1, int(self._capacity * GROWTH)))
        row = self._count
        # Candidates first: a reader on another thread sees a row only once _count passes
        # it, and by then its pool entries are written.
        self._store_candidates(row, arrays.get("top_ids"), arrays.get("top_probs"))
        for name, value in arrays.items():
            if name not in CANDIDATE_FIELDS:
                self.columns[name][row] = value
        for name in SCALAR_FIELDS:
            value = scalars.get(name, 0)
            self.columns[name][row] = KIND_CODE[value] if isinstance(value, str) else value
        self.columns["branch_index"][row] = int(branch) if branch.isdigit() else -1
        self._count += 1
        self.branches[branch].rows.append(row)
        self.version += 1
        return row

    def append_record(self, record: StepRecord, branch: str) -> int:
        return self.append(record.scalars(), record.arrays(), branch)

    def _store_candidates(self, row: int, top_ids: np.ndarray | None, top_probs: np.ndarray | None) -> None:
        """Fill cand_bits / cand_start / cand_count of `row`, adding its candidates to the pool.

        Entries equal to the previous row's (same positions, same ids and probabilities
        bit for bit) are shared rather than stored again.
        """
        bits, m, ids, probs = compacted(top_ids, top_probs, self.layout.seq_len)
        start = self._pool_count
        if m:
            if row and is_repeat(self.columns, self.pool, row - 1, bits, m, ids, probs):
                start = int(self.columns["cand_start"][row - 1])
            else:
                need = self._pool_count + m
                if need > self._pool_capacity:
                    self._grow_pool(max(need, int(self._pool_capacity * GROWTH)))
                self.pool["cand_ids"][start:need] = ids
                self.pool["cand_probs"][start:need] = probs
                self._pool_count = need
        self.columns["cand_bits"][row] = bits
        self.columns["cand_start"][row] = start
        self.columns["cand_count"][row] = m

    def column(self, name: str) -> np.ndarray:
        """All rows of one row-indexed field (a view; do not write). Candidates: see top_k."""
        if name in CANDIDATE_FIELDS:
            raise KeyError(f"{name} is stored sparsely; use top_k / candidates_at / candidates_across")
        return self.columns[name][: self._count]

    def get(self, name: str, row: int) -> np.ndarray:
        self._check_row(row)
        if name in CANDIDATE_FIELDS:
            raise KeyError(f"{name} is stored sparsely; use top_k / candidates_at")
        return self.columns[name][row]

    def _check_row(self, row: int) -> int:
        if not 0 <= row < self._count:
            raise IndexError(f"row {row} outside 0..{self._count - 1}")
        return int(row)

    def _check_pos(self, pos: int) -> int:
        if not 0 <= pos < self.layout.seq_len:
            raise IndexError(f"position {pos} outside 0..{self.layout.seq_len - 1}")
        return int(pos)

    def record(self, row: int) -> StepRecord:
        """A StepRecord of copies of one row (top-K expanded to dense (N, K))."""
        self._check_row(row)
        scalars = {name: self.columns[name][row] for name in SCALAR_FIELDS}
        arrays = {name: self.columns[name][row].copy() for name in self.layout.token_fields() if name not in CANDIDATE_FIELDS}
        arrays["top_ids"], arrays["top_probs"] = self.top_k(row)
        return StepRecord.from_parts(scalars, arrays)

    # -- candidates (store.step_columns does the lookups) ------------------------------
    def candidate_mask(self, row: int) -> np.ndarray:
        """(N,) bool: positions of `row` with candidates stored."""
        return candidate_mask(self.columns, self._check_row(row), self.layout.seq_len)

    def top_k(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids (N, K), probs (N, K) float16) of `row`, zeros where no candidates are stored (fresh arrays)."""
        return dense_top_k(self.columns, self.pool, self._check_row(row), self.layout)

    def has_candidates(self, rows: np.ndarray | list[int], pos: int) -> np.ndarray:
        """(len(rows),) bool: which of `rows` stored candidates at position `pos`."""
        return has_candidates(self.columns, self._rows(rows), self._check_pos(pos))

    def candidates_at(self, row: int, pos: int) -> tuple[np.ndarray, np.ndarray] | None:
        """(ids (K,), probs (K,) float16) stored at (`row`, `pos`), copies; None where none were."""
        self._check_row(row)
        ids, probs = self.candidates_across(np.array([row]), pos)
        return (ids[0], probs[0]) if self.has_candidates([row], pos)[0] else None

    def candidates_across(self, rows: np.ndarray | list[int], pos: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids (R, K), probs (R, K) float16) at position `pos` of each of `rows`; zeros where none."""
        return candidates_across(self.columns, self.pool, self._rows(rows), self._check_pos(pos), self.layout)

    def _rows(self, rows: np.ndarray | list[int]) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if len(rows) and (rows.min() < 0 or rows.max() >= self._count):
            raise IndexError(f"rows outside 0..{self._count - 1}")
        return rows

    def kind(self, row: int) -> str:
        return KINDS[int(self.columns["kind"][row])]

    # -- whole-store access for session files ------------------------------------------
    def tree(self) -> list[dict]:
        return [self.branches[b].to_dict() for b in self.branch_order]

    @classmethod
    def from_columns(
        cls,
        layout: RecordLayout,
        columns: dict[str, np.ndarray],
        count: int,
        tree: list[dict],
        mask_id: int | None = None,
        pool: dict[str, np.ndarray] | None = None,
    ) -> StepStore:
        """A store over existing arrays (e.g. memory-mapped), holding `count` rows.

        `columns` are the row-indexed columns (see the module docstring) and `pool` the
        candidate pool (cand_ids, cand_probs), both used as given (not copied). Legacy
        dense candidates instead (columns top_ids (count, N, K) and top_probs, no
        cand_* columns and no pool, as format-1 session files hold) are compacted into
        memory record by record; the other columns stay as given.
        """
        store = cls.__new__(cls)
        store.layout = layout
        store.mask_id = mask_id
        store.layers = []  # session files attach theirs after (store.session_open)
        store._specs = row_specs(layout)
        store._pool_spec = pool_specs(layout)
        cand_cols = ("cand_start", "cand_count", "cand_bits")
        is_legacy = pool is None and all(name in columns for name in CANDIDATE_FIELDS) and not any(
            name in columns for name in cand_cols
        )
        need = {name: spec for name, spec in store._specs.items() if not (is_legacy and name in cand_cols)}
        if is_legacy:
            n, k = layout.seq_len, layout.top_k
            need.update({"top_ids": ((n, k), layout.id_dtype), "top_probs": ((n, k), np.dtype(np.float16))})
        check_columns(need, columns, count, is_legacy)
        store.columns = {name: columns[name] for name in store._specs if name in columns}
        store._count = count
        store._capacity = count
        if is_legacy:
            store.pool, store._pool_count, store._pool_capacity = {}, 0, 0
            store._grow_pool(0)
            for name in cand_cols:
                shape, dtype = store._specs[name]
                store.columns[name] = np.empty((count, *shape), dtype)
            top_ids, top_probs = columns["top_ids"], columns["top_probs"]
            for row in range(count):  # one record at a time: a large file's candidates are never all in memory
                store._store_candidates(row, top_ids[row], top_probs[row])
        else:
            store.pool = check_pool(store._pool_spec, pool or {})
            store._pool_count = store._pool_capacity = len(store.pool["cand_ids"])
            check_offsets(store.columns, count, store._pool_count)
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

    def view(self, count: int | None = None) -> StepStore:
        """A store over the same arrays holding the first `count` rows (default: all now) and their pool.

        Nothing is copied. Meant for a reader on another thread (a save) while appends go
        on here: rows and pool entries are never rewritten, and growth copies into new
        arrays, so the view stays as it was. Its first append copies, like a mapped store's.
        """
        count = len(self) if count is None else int(count)
        columns = {name: col[:count] for name, col in self.columns.items()}
        used = 0
        if count:
            used = int((columns["cand_start"] + columns["cand_count"]).max())
        pool = {name: arr[:used] for name, arr in self.pool.items()}
        tree = [{**b, "rows": [r for r in b["rows"] if r < count]} for b in self.tree()]
        frozen = StepStore.from_columns(self.layout, columns, count, tree, mask_id=self.mask_id, pool=pool)
        frozen.next_branch_id = max(frozen.next_branch_id, self.next_branch_id)
        frozen.layers = [layer for layer in self.layers if layer.fits(count)]  # immutable: shared, not copied
        return frozen

