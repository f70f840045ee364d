"""The workspace's editing half: edit the step shown, restart it, and manage branches.

    edit(op, text)     mask / unmask / replace / protect / unprotect the selection: the first
                       edit of a step forks an 'edit' branch, later ones amend it until it runs
    restart(settings)  run the model from the step shown (an unrun edit in its own branch)
    pick_candidate     place a stored candidate at a position, through the same edit path
    rename / delete / compare branches
    compare_strategies run several strategies as siblings of one start, then compare them

`Editing` is a mixin of `gui.workspace.Workspace`: it acts on the workspace's store and
view through store.edits and StepStore.fork, and reports through the workspace's
notices. numpy and dpgviz.core/store only; no dearpygui, no torch.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from dpgviz.core.discovery import model_file
from dpgviz.core.records import FLAG_EDITED, FLAG_PROTECTED
from dpgviz.core.settings import OPEN_ENDED, GenerationSettings
from dpgviz.gui.notices import CompareShown, ModelOffered
from dpgviz.store.edits import EditError, apply_edit, encode_text, predicted_tokens
from dpgviz.store.step_store import Branch, StepStore


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


class Editing:
    """Editing and branch operations of the workspace (see the module docstring)."""

    def pick_candidate(self, pos: int, token_id: int) -> bool:
        """Place candidate `token_id` at `pos` as an edit of the record shown (the edit path typing takes)."""
        if self.vocab is None or not 0 <= token_id < self.vocab.size:
            self.say("That candidate is not a token of the vocabulary.", is_error=True)
            return False
        self.view.sel_anchor = self.view.sel_cursor = int(pos)
        # By id: in byte-level vocabularies several ids share a display string ("\ufffd").
        return self.edit("replace", self.vocab.itos[token_id], ids=np.array([token_id]))

    def draft(self) -> Branch | None:
        """The shown branch when it is an edit that has not run yet (its own only record: 'edit')."""
        store = self.store
        if store is None or self.view.branch not in store.branches:
            return None
        b = store.branches[self.view.branch]
        if b.parent is None or len(b.rows) != 1 or store.kind(b.rows[0]) != "edit":
            return None
        return b

    def edit(self, op: str, text: str | None = None, ids: np.ndarray | None = None) -> bool:
        """Mask / unmask / replace / protect / unprotect the selected tokens of the record shown.

        The first edit of a record forks a child branch whose first record is the edited
        one ('edit'); further edits amend that record until the branch runs. A run in
        progress is stopped first. False (and a message) when the edit cannot be made.
        A replacement's tokens are `text` encoded, or `ids` when given (`text` then only labels it).
        """
        store, row = self.store, self.current_row()
        if store is None or row is None or self.vocab is None:
            self.say("Nothing to edit: generate a run or open a session.", is_error=True)
            return False
        if store.layout.is_blocks:
            self.say("Editing a run generated in blocks is not supported yet: generate it in one block to edit it.",
                     is_error=True)
            return False
        selection = self.view.selection()
        if selection is None:
            self.say("Select tokens on the canvas first: click, drag or shift-click.", is_error=True)
            return False
        start, stop = selection
        stop = min(stop, store.layout.seq_len)
        branch, record = self.view.branch, min(self.view.record, self.n_records() - 1)
        mask_id = self.vocab.mask_id
        flags = store.get("flags", row)
        tokens = store.get("tokens", row).astype(np.int64)
        protected = (flags & FLAG_PROTECTED).astype(bool)
        edited = (flags & FLAG_EDITED).astype(bool)
        try:
            text_ids = None
            if op == "replace":
                text_ids = np.asarray(ids, dtype=np.int64) if ids is not None else encode_text(text or "", self.vocab)
            predicted = predicted_tokens(store, branch, record) if op == "unmask" else None
            tokens, protected, changed = apply_edit(
                tokens, protected, op, start, stop, mask_id=mask_id, text_ids=text_ids, predicted=predicted
            )
        except EditError as exc:
            self.say(str(exc), is_error=True)
            return False
        if self.run is not None:
            self.stop()
            self.say("The run was stopped so this step can be edited.")
        entry = {"op": op, "start": start, "stop": stop, "text": text if op == "replace" else None}
        draft = self.draft()
        if draft is not None and self.view.record == self.n_records() - 1:
            store.amend_edit(draft.id, tokens, protected, edited | changed, [*draft.edits, entry], mask_id=mask_id)
        else:
            parent = store.branches[branch]
            child = store.fork(
                branch, record, tokens, protected, edited | changed, dict(parent.settings),
                label=f"edit of {parent.label or branch} @ {record + 1}", edits=[entry], mask_id=mask_id,
            )
            self.view.branch = child.id
        self.view.record = self.n_records() - 1
        self.view.follow_live = self.view.playing = False
        what = f"{op} {start}:{stop}" + (f" = {text!r}" if op == "replace" else "")
        self.say(f"Edited ({what}). Restart from here (Ctrl+R) runs the model from this step.")
        return True

    def restart(self, settings: GenerationSettings) -> bool:
        """Run the sampler from the record shown with `settings`: an unrun edit runs in its own
        branch (its edited and protected tokens reach the worker); any other record forks a child."""
        if self.model_info is None or self.client is None or self.is_loading:
            self._ask_for_model()
            return False
        draft = self.draft()
        if draft is None or self.view.record != self.n_records() - 1:
            return self.continue_from(settings)
        store, row = self.store, draft.rows[0]
        if settings.length != store.layout.seq_len:
            self.say(f"To restart this edit, length must stay {store.layout.seq_len}.", is_error=True)
            return False
        start_it = int(store.columns["iteration"][row])
        if start_it >= settings.steps and settings.strategy not in OPEN_ENDED:
            self.say(f"This step is after iteration {start_it}; raise steps above {start_it} to restart.", is_error=True)
            return False
        flags = store.get("flags", row)
        protected = (flags & FLAG_PROTECTED).astype(bool)
        edited = (flags & FLAG_EDITED).astype(bool)
        draft.settings = settings.to_dict()
        return self._launch(
            settings, draft.id, tokens=store.get("tokens", row).astype(np.int64), iteration=start_it,
            protected=protected if protected.any() else None, edited=edited if edited.any() else None,
            emit_initial=False,
        )

    def _ask_for_model(self) -> None:
        """Restarting needs a model: name the one the session came from and offer it."""
        path = self.session.model_path if self.session is not None else None
        if model_file(path) is not None:
            self._notices.append(ModelOffered(str(path)))
            self.say(f"Restarting needs a model. This session was made with {path}: it is picked, press Load.", True)
        elif path:
            self.say(f"Restarting needs a model. This session was made with {path}, which is not there: load one.", True)
        else:
            self.say("Restarting needs a model: load one.", is_error=True)

    def rename_branch(self, branch: str, label: str) -> None:
        if self.store is not None and branch in self.store.branches:
            self.store.rename(branch, label.strip())

    def delete_branch(self, branch: str) -> bool:
        """Delete a branch and its descendants (a run in one of them is stopped first)."""
        store = self.store
        if store is None or branch not in store.branches:
            return False
        parent = store.branches[branch].parent
        try:
            doomed = set(store.delete(branch))
        except ValueError as exc:
            self.say(str(exc), is_error=True)
            return False
        if self.run is not None and self.run.branch in doomed:
            self.stop()
        if self.view.branch in doomed:
            self.select_branch(parent if parent in store.branches else store.branch_order[0])
        if self.compare is not None and doomed & set(self.compare):
            self.compare = None
        self.say(f"Deleted {len(doomed)} branch{'es' if len(doomed) > 1 else ''}: {', '.join(sorted(doomed, key=int))}.")
        return True

    def compare_strategies(self, settings: GenerationSettings, strategies: list[str]) -> bool:
        """Run `settings` once per strategy from the same all-masked start, one after another:
        the first as a root branch, the others forked at its 'initial' record (siblings, as
        `main.py compare --out` saves them); the compare view opens on the first two when the
        last finishes. False (and a message) when it cannot start."""
        if len(strategies) < 2:
            self.say("Pick at least two strategies to compare.", is_error=True)
            return False
        if settings.n_blocks > 1:
            self.say("Strategies are compared within one block: lower the length to the block size.", is_error=True)
            return False
        if not self.start(dataclasses.replace(settings, strategy=strategies[0]), label=strategies[0]):
            return False
        self._strategy_queue = (self.run.branch, settings, list(strategies[1:]))
        self.say(f"Comparing {len(strategies)} strategies: {strategies[0]} first, then {', '.join(strategies[1:])}.")
        return True

    def _next_strategy(self) -> None:
        """After a run of a strategy comparison: start the next strategy, or show the comparison."""
        root, settings, left = self._strategy_queue
        if not left:
            self._strategy_queue = None
            children = self.store.children(root) if self.store is not None and root in self.store.branches else []
            if children and self.start_compare(root, children[0]):
                self._notices.append(CompareShown())
                self.say(f"Compared {len(children) + 1} strategies; pick any two in the compare view.")
            return
        name = left.pop(0)
        runs = dataclasses.replace(settings, strategy=name)
        if not self.continue_from(runs, branch=root, record=0, label=name, repeat_start=False):
            self._strategy_queue = None

    def start_compare(self, left: str, right: str) -> bool:
        """Show `left` and `right` side by side; the timeline scrubs `left`, `right` follows by iteration."""
        store = self.store
        if store is None or left not in store.branches or right not in store.branches:
            self.say("Pick two branches to compare.", is_error=True)
            return False
        if left == right:
            self.say("Pick two different branches to compare.", is_error=True)
            return False
        self.compare = (left, right)
        if self.view.branch != left:
            self.select_branch(left)
        return True

    def compare_rows(self) -> tuple[int, int] | None:
        """Store rows of the two compare panes at the shown step (synchronised by iteration)."""
        if self.compare is None or self.store is None:
            return None
        left = self.current_row()
        right_rows = self.rows(self.compare[1])
        if left is None or not len(right_rows):
            return None
        store = self.store
        k = matching_record(
            store.column("iteration")[right_rows], store.column("kind")[right_rows],
            int(store.columns["iteration"][left]), int(store.columns["kind"][left]),
        )
        return left, int(right_rows[k])
