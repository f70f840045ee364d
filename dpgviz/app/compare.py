"""Two branches side by side, and strategy comparisons that make them.

    start(left, right)          show two branches side by side (the timeline scrubs `left`)
    rows()                      the two panes' store rows at the step shown, matched by iteration
    strategies(settings, names) run one strategy after another as siblings of one all-masked
                                start, then show the comparison (as `main.py compare --out`)
    run_ended(outcome)          the runs part reports each run's end: the next strategy starts

`Compare` is handed the `Document`, the `Runs` (to start the strategies' runs) and the
`Notices`. numpy and dpgviz.core/store only; no dearpygui, no torch.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from dpgviz.app.document import Document
from dpgviz.app.notices import CompareShown, Notices
from dpgviz.app.runs import RunOutcome, Runs
from dpgviz.core.settings import GenerationSettings
from dpgviz.store.step_store import StepStore


def matching_record(iterations: np.ndarray, kinds: np.ndarray, iteration: int, kind: int) -> int:
    """Index of the record showing the same moment: same iteration and kind if there is one,
    else the last record at or before that iteration, else the first."""
    same = np.flatnonzero((iterations == iteration) & (kinds == kind))
    if same.size:
        return int(same[-1])
    before = np.flatnonzero(iterations <= iteration)
    return int(before[-1]) if before.size else 0


def sibling_runs(store: StepStore) -> tuple[str, str] | None:
    """The first two runs forked from a bare start (a root holding only its 'initial' record),
    as `main.py compare --out` saves them; None when the store has no such pair."""
    for root in store.branch_order:
        b = store.branches[root]
        children = store.children(root)
        if b.parent is None and len(b.rows) == 1 and store.kind(b.rows[0]) == "initial" and len(children) >= 2:
            return children[0], children[1]
    return None


@dataclasses.dataclass
class StrategyQueue:
    """A strategy comparison in progress: the root branch, the settings, the strategies still to run."""

    root: str
    settings: GenerationSettings
    left: list[str]


class Compare:
    """The compare view's state and the strategy comparisons (see the module docstring)."""

    def __init__(self, doc: Document, runs: Runs, notices: Notices) -> None:
        self.doc, self.runs, self.notices = doc, runs, notices
        self.pair: tuple[str, str] | None = None  # two branches side by side (the first is the shown one)
        self._pair_store = 0  # id() of the store the pair's branches belong to
        self.queue: StrategyQueue | None = None

    def start(self, left: str, right: str) -> bool:
        """Show `left` and `right` side by side; the timeline scrubs `left`, `right` follows by iteration."""
        store = self.doc.store
        if store is None or left not in store.branches or right not in store.branches:
            self.notices.say("Pick two branches to compare.", is_error=True)
            return False
        if left == right:
            self.notices.say("Pick two different branches to compare.", is_error=True)
            return False
        self.pair, self._pair_store = (left, right), id(store)
        if self.doc.view.branch != left:
            self.doc.select_branch(left, self.runs.live_branch)
        return True

    def stop(self) -> None:
        self.pair = None

    def forget(self, branches: set[str]) -> None:
        """Branches that are gone (deleted, or a new store): a pair naming one closes."""
        if self.pair is not None and branches & set(self.pair):
            self.pair = None

    def settle(self) -> None:
        """Close a pair whose branches are not in the store shown (a session opened, a new run's store)."""
        store = self.doc.store
        if self.pair is None:
            return
        if store is None or id(store) != self._pair_store or not all(b in store.branches for b in self.pair):
            self.pair = None
            self.notices.say("The compared branches are not in the records shown: the compare view closed.")

    def rows(self) -> tuple[int, int] | None:
        """Store rows of the two compare panes at the shown step (synchronised by iteration)."""
        store = self.doc.store
        if self.pair is None or store is None:
            return None
        left = self.doc.current_row()
        right_rows = self.doc.rows(self.pair[1])
        if left is None or not len(right_rows):
            return None
        k = matching_record(
            store.column("iteration")[right_rows], store.column("kind")[right_rows],
            int(store.columns["iteration"][left]), int(store.columns["kind"][left]),
        )
        return left, int(right_rows[k])

    # -- strategy comparisons -----------------------------------------------------------------
    def strategies(self, settings: GenerationSettings, strategies: list[str]) -> bool:
        """Run `settings` once per strategy from the same all-masked start, one after another:
        the first as a root branch, the others forked at its 'initial' record (siblings, as
        `main.py compare --out` saves them); the compare view opens on the first two when the
        last finishes. False (and a message) when it cannot start."""
        if len(strategies) < 2:
            self.notices.say("Pick at least two strategies to compare.", is_error=True)
            return False
        if settings.n_blocks > 1:
            self.notices.say("Strategies are compared within one block: lower the length to the block size.", is_error=True)
            return False
        if not self.runs.start(dataclasses.replace(settings, strategy=strategies[0]), label=strategies[0]):
            return False
        self.queue = StrategyQueue(self.runs.live_branch, settings, list(strategies[1:]))
        self.notices.say(
            f"Comparing {len(strategies)} strategies: {strategies[0]} first, then {', '.join(strategies[1:])}."
        )
        return True

    def run_ended(self, outcome: RunOutcome) -> None:
        """A run ended: a finished one starts the next strategy (or shows the comparison); any
        other end (stopped, failed, the worker died) drops what was queued."""
        if self.queue is None:
            return
        if outcome is not RunOutcome.FINISHED:
            self.queue = None
            return
        queue, store = self.queue, self.doc.store
        if not queue.left:
            self.queue = None
            children = store.children(queue.root) if store is not None and queue.root in store.branches else []
            if children and self.start(queue.root, children[0]):
                self.notices.post(CompareShown())
                self.notices.say(f"Compared {len(children) + 1} strategies; pick any two in the compare view.")
            return
        name = queue.left.pop(0)
        runs = dataclasses.replace(queue.settings, strategy=name)
        if not self.runs.continue_from(runs, branch=queue.root, record=0, label=name, repeat_start=False):
            self.queue = None
