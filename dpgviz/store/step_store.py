"""The step store: every record of every branch, dense per-token fields plus a sparse candidate pool.

Rows are appended in arrival order (the transport's poll copies into them). Per row:

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

The branch tree says which rows belong to which branch: a branch is a parent, the
record of the parent's history it forked from, the settings it ran with, the edits
made at the fork and its own rows in order.

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
    FLAG_PROMPT,
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

CANDIDATE_FIELDS = ("top_ids", "top_probs")  # dense (N, K) in a record; sparse in the store
POOL_FIELDS = ("cand_ids", "cand_probs")  # the pool's arrays, (M, K)
GROWTH = 1.5  # capacity factor when the final size is unknown: a third of the overshoot of doubling


def _row_specs(layout: RecordLayout) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """name -> (shape of one row, dtype) of every row-indexed column."""
    specs = {name: spec for name, spec in layout.token_fields().items() if name not in CANDIDATE_FIELDS}
    specs.update({name: ((), dtype) for name, dtype in SCALAR_FIELDS.items()})
    specs["branch_index"] = ((), np.dtype(np.int32))  # the row's branch id
    specs["cand_start"] = ((), np.dtype(np.int64))
    specs["cand_count"] = ((), np.dtype(np.int32))
    specs["cand_bits"] = (((layout.seq_len + 7) // 8,), np.dtype(np.uint8))
    return specs


def _pool_specs(layout: RecordLayout) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
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


def _grown(arrays: dict[str, np.ndarray], specs: dict, count: int, capacity: int) -> dict[str, np.ndarray]:
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
        self._specs = _row_specs(layout)
        self._pool_spec = _pool_specs(layout)
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
        self.columns, self._capacity = _grown(self.columns, self._specs, self._count, capacity), capacity

    def _grow_pool(self, capacity: int) -> None:
        self.pool, self._pool_capacity = _grown(self.pool, self._pool_spec, self._pool_count, capacity), capacity

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
        FLAG_EDITED where `edited`, FLAG_PROMPT kept where the source had it and it stays protected; iteration = continue_point(source kind, iteration),
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
            | np.where(protected, rec.flags & FLAG_PROMPT, 0).astype(np.uint8)  # a prompt's cells stay the prompt's
        )
        rec.iteration = continue_point(rec.kind, rec.iteration)
        rec.kind = "edit"
        rec.n_masked = int(is_masked.sum())
        return rec

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
        n = self.layout.seq_len
        if top_probs is None:
            mask = np.zeros(n, dtype=bool)
        else:
            top_probs = np.asarray(top_probs, dtype=np.float16)
            mask = has_probs(top_probs)
        bits = np.packbits(mask)
        m = int(np.count_nonzero(mask))
        start = self._pool_count
        if m:
            ids = np.asarray(top_ids)[mask]
            probs = top_probs[mask]
            if row and self._is_repeat(row - 1, bits, m, ids, probs):
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

    def _is_repeat(self, prev: int, bits: np.ndarray, m: int, ids: np.ndarray, probs: np.ndarray) -> bool:
        if int(self.columns["cand_count"][prev]) != m or not np.array_equal(self.columns["cand_bits"][prev], bits):
            return False
        a = int(self.columns["cand_start"][prev])
        return np.array_equal(self.pool["cand_ids"][a : a + m], ids) and np.array_equal(
            self.pool["cand_probs"][a : a + m].view(np.uint16), probs.view(np.uint16)
        )

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

    # -- candidates --------------------------------------------------------------------
    def candidate_mask(self, row: int) -> np.ndarray:
        """(N,) bool: positions of `row` with candidates stored."""
        self._check_row(row)
        return np.unpackbits(self.columns["cand_bits"][row], count=self.layout.seq_len).view(bool)

    def top_k(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids (N, K), probs (N, K) float16) of `row`, zeros where no candidates are stored (fresh arrays)."""
        mask = self.candidate_mask(row)
        n, k = self.layout.seq_len, self.layout.top_k
        ids = np.zeros((n, k), self.layout.id_dtype)
        probs = np.zeros((n, k), np.float16)
        m = int(self.columns["cand_count"][row])
        if m:
            a = int(self.columns["cand_start"][row])
            ids[mask] = self.pool["cand_ids"][a : a + m]
            probs[mask] = self.pool["cand_probs"][a : a + m]
        return ids, probs

    def has_candidates(self, rows: np.ndarray | list[int], pos: int) -> np.ndarray:
        """(len(rows),) bool: which of `rows` stored candidates at position `pos`."""
        rows = self._rows(rows)
        pos = self._check_pos(pos)
        byte = self.columns["cand_bits"][rows, pos >> 3]
        return ((byte >> np.uint8(7 - (pos & 7))) & np.uint8(1)).astype(bool)  # packbits: big-endian bits

    def candidates_at(self, row: int, pos: int) -> tuple[np.ndarray, np.ndarray] | None:
        """(ids (K,), probs (K,) float16) stored at (`row`, `pos`), copies; None where none were."""
        self._check_row(row)
        ids, probs = self.candidates_across(np.array([row]), pos)
        return (ids[0], probs[0]) if self.has_candidates([row], pos)[0] else None

    def candidates_across(self, rows: np.ndarray | list[int], pos: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids (R, K), probs (R, K) float16) at position `pos` of each of `rows`; zeros where none.

        Vectorised: the pool entry is cand_start + popcount of the row's bits before `pos`.
        """
        rows = self._rows(rows)
        pos = self._check_pos(pos)
        k = self.layout.top_k
        ids = np.zeros((len(rows), k), self.layout.id_dtype)
        probs = np.zeros((len(rows), k), np.float16)
        hit = self.has_candidates(rows, pos)
        sel = rows[hit]
        if len(sel):
            bits = self.columns["cand_bits"]
            before = np.bitwise_count(bits[sel, : pos >> 3]).sum(axis=1, dtype=np.int64)
            if pos & 7:  # the bits of the same byte that come before pos (its high bits)
                before += np.bitwise_count(bits[sel, pos >> 3] >> np.uint8(8 - (pos & 7)))
            entry = self.columns["cand_start"][sel] + before
            ids[hit] = self.pool["cand_ids"][entry]
            probs[hit] = self.pool["cand_probs"][entry]
        return ids, probs

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
        store._specs = _row_specs(layout)
        store._pool_spec = _pool_specs(layout)
        cand_cols = ("cand_start", "cand_count", "cand_bits")
        is_legacy = pool is None and all(name in columns for name in CANDIDATE_FIELDS) and not any(
            name in columns for name in cand_cols
        )
        need = {name: spec for name, spec in store._specs.items() if not (is_legacy and name in cand_cols)}
        if is_legacy:
            n, k = layout.seq_len, layout.top_k
            need.update({"top_ids": ((n, k), layout.id_dtype), "top_probs": ((n, k), np.dtype(np.float16))})
        missing = set(need) - set(columns)
        if missing:
            raise ValueError(f"missing columns: {', '.join(sorted(missing))}")
        for name, (shape, dtype) in need.items():
            col = columns[name]
            # Legacy top_ids may be wider than this layout's ids (format 1 had no uint8 ids).
            dtype_ok = col.dtype.kind in "ui" if (is_legacy and name == "top_ids") else col.dtype == dtype
            if col.shape[1:] != shape or not dtype_ok or col.shape[0] < count:
                raise ValueError(f"column {name} has shape {col.shape} {col.dtype}, expected ({count}, *{shape}) {dtype}")
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
            pool = pool or {}
            for name, (shape, dtype) in store._pool_spec.items():
                arr = pool.get(name)
                if arr is None or arr.shape[1:] != shape or arr.dtype != dtype:
                    got = "missing" if arr is None else f"{arr.shape} {arr.dtype}"
                    raise ValueError(f"pool array {name} is {got}, expected (M, *{shape}) {dtype}")
            store.pool = {name: pool[name] for name in store._pool_spec}
            if len(store.pool["cand_ids"]) != len(store.pool["cand_probs"]):
                raise ValueError("pool arrays cand_ids and cand_probs differ in length")
            store._pool_count = store._pool_capacity = len(store.pool["cand_ids"])
            store._check_offsets()
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

    def _check_offsets(self) -> None:
        """ValueError unless every row's bitmap, count and pool range agree (reads offsets and bitmaps only)."""
        n = self._count
        start = self.columns["cand_start"][:n]
        count = self.columns["cand_count"][:n].astype(np.int64)
        if n and (start.min() < 0 or count.min() < 0 or (start + count).max() > self._pool_count):
            raise ValueError(f"candidate offsets point outside the pool of {self._pool_count} entries")
        bits = np.bitwise_count(self.columns["cand_bits"][:n]).sum(axis=1, dtype=np.int64)
        if not np.array_equal(bits, count):
            raise ValueError("candidate counts do not match the candidate bitmaps")

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
