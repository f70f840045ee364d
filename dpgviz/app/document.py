"""What is shown: the step store, its vocabulary, the session file behind it, and the view.

    Document.store      every record of every branch (store.StepStore), or None
    Document.view       which branch and record, the selection, pins, zoom (ViewState)
    rows(branch)        a branch's timeline as store rows (cached until the store changes)
    current_row()       the store row of the record shown

Every part of the workspace is handed the one `Document` and reads what is shown from it;
only `show_store`, `new_store` and `close_session` replace the store. The document keeps
positions the view refers to (selection, pins, hover) inside the branch shown: whenever
the store, the branch or its length changes, `settle()` drops positions that no longer
exist and says so.

numpy and dpgviz.core/store only; no dearpygui, no torch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dpgviz.app.notices import Notices, StoreShown
from dpgviz.app.view_state import ViewState
from dpgviz.core.records import RecordLayout
from dpgviz.core.vocab import Vocabulary
from dpgviz.store.session import Session
from dpgviz.store.step_store import StepStore


class Document:
    """The records shown and how they are looked at (see the module docstring)."""

    def __init__(self, notices: Notices) -> None:
        self.notices = notices
        self.view = ViewState()
        self.store: StepStore | None = None
        self.vocab: Vocabulary | None = None  # of the shown store
        self.session: Session | None = None  # an opened session file backing the store, if any
        self.path: Path | None = None  # where Save writes: the last file saved or opened
        self._history_key: tuple | None = None
        self._history = np.zeros(0, dtype=np.int64)
        self._settled: tuple | None = None  # (store id, branch, total length) the view was last checked against

    # -- queries ---------------------------------------------------------------------------
    def rows(self, branch: str | None = None) -> np.ndarray:
        """Store rows of a branch's timeline (default: the shown branch): its history.

        A child's timeline is its parent's records up to the fork, then its own
        (`StepStore.history`); cached until the store changes.
        """
        branch = self.view.branch if branch is None else branch
        if self.store is None or branch not in self.store.branches:
            return np.zeros(0, dtype=np.int64)
        key = (id(self.store), self.store.version, branch)
        if self._history_key != key:
            self._history_key, self._history = key, self.store.history(branch)
        return self._history

    def n_records(self) -> int:
        return len(self.rows())

    def current_row(self) -> int | None:
        """Store row of the record shown, or None when there is nothing to show."""
        rows = self.rows()
        if not len(rows):
            return None
        return int(rows[min(max(0, self.view.record), len(rows) - 1)])

    @property
    def total_len(self) -> int:
        """Positions of the sequence shown (the whole sequence in a run made in blocks); 0 with no store."""
        return self.store.layout.total_len if self.store is not None else 0

    # -- what is shown ---------------------------------------------------------------------
    def select_branch(self, branch: str, live_branch: str | None = None) -> None:
        """Show `branch` at its last record (following it when it is the live run's, `live_branch`)."""
        if self.store is not None and branch in self.store.branches:
            self.view.branch = branch
            self.view.record = max(0, len(self.rows(branch)) - 1)
            self.view.playing = False
            self.view.follow_live = live_branch == branch

    def show_store(self, store: StepStore, vocab: Vocabulary, branch: str | None = None) -> None:
        """Show records that did not come from the worker (a session file, a test fixture)."""
        self.store, self.vocab = store, vocab
        self.view.branch = branch or (store.branch_order[0] if store.branch_order else None)
        self.view.record = max(0, self.n_records() - 1)
        self.view.follow_live = False
        self.notices.post(StoreShown(vocab, store.layout.seq_len))

    def new_store(self, layout: RecordLayout, vocab: Vocabulary) -> StepStore:
        """An empty store of `layout` replaces what was shown (a run of another length or model)."""
        self.close_session()
        self.store, self.vocab, self.path = StepStore(layout), vocab, None
        return self.store

    def close_session(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None

    def settle(self) -> None:
        """Drop view positions outside the sequence shown, once per change of store, branch or length.

        A pin, a selection or a hover kept from a longer run would index past the arrays of
        a shorter one (issue 25's crash: "position 874 outside 0..182").
        """
        key = (id(self.store), self.view.branch, self.total_len)
        if key == self._settled:
            return
        self._settled = key
        dropped = self.view.drop_positions(self.total_len)
        if dropped:
            self.notices.say(f"{dropped} no longer in the sequence shown ({self.total_len} positions): cleared.")
