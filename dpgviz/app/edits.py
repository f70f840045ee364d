"""Editing a step and managing branches.

    edit(op, text)     mask / unmask / replace / protect / unprotect the selection: the first
                       edit of a step forks an 'edit' branch, later ones amend it until it runs
    restart(settings)  run the model from the step shown (an unrun edit in its own branch)
    pick_candidate     place a stored candidate at a position, through the same edit path
    rename / delete    branches (a deleted branch leaves the compare view)

A run made in blocks is edited in whole-sequence positions, as the canvas composes it: at a
record of block b, any position up to b's end (later blocks have not started there), masks
only in b itself (the blocks before are finished context). Its restart runs b on from the
record, then every later block, each after the text before it (store.edits: edit_state,
fork_edit, start_point).

`Edits` is handed the `Document` (the store and the view it edits), the `Runs` (restart and
stop), the `Compare` part (deleted branches leave it) and the `Notices`; it acts through
store.edits (fork_edit, amend_edit). numpy and dpgviz.core/store only; no dearpygui, no torch.
"""

from __future__ import annotations

import numpy as np

from dpgviz.app.compare import Compare
from dpgviz.app.document import Document
from dpgviz.app.notices import ModelOffered, Notices
from dpgviz.app.runs import Runs, in_recorded_blocks
from dpgviz.core.discovery import model_file
from dpgviz.core.prompt import continued
from dpgviz.core.records import FLAG_EDITED, FLAG_PROTECTED
from dpgviz.core.settings import OPEN_ENDED, GenerationSettings
from dpgviz.store.branch import Branch
from dpgviz.store.edits import (
    EditError,
    amend_edit,
    apply_edit,
    check_editable,
    check_masks,
    edit_state,
    encode_text,
    fork_edit,
    is_draft,
    predicted_tokens,
    start_point,
)


class Edits:
    """Edits of the record shown and branch operations (see the module docstring)."""

    def __init__(self, doc: Document, runs: Runs, compare: Compare, notices: Notices) -> None:
        self.doc, self.runs, self.compare, self.notices = doc, runs, compare, notices

    def pick_candidate(self, pos: int, token_id: int) -> bool:
        """Place candidate `token_id` at `pos` as an edit of the record shown (the edit path typing takes)."""
        if self.doc.vocab is None or not 0 <= token_id < self.doc.vocab.size:
            self.notices.say("That candidate is not a token of the vocabulary.", is_error=True)
            return False
        self.doc.view.sel_anchor = self.doc.view.sel_cursor = int(pos)
        # By id: in byte-level vocabularies several ids share a display string ("\ufffd").
        return self.edit("replace", self.doc.vocab.itos[token_id], ids=np.array([token_id]))

    def draft(self) -> Branch | None:
        """The shown branch when it is an edit that has not run yet (its own records are all
        'edit': one, or in a block run one per block it changed; store.edits.is_draft)."""
        store = self.doc.store
        if store is None or not is_draft(store, self.doc.view.branch):
            return None
        return store.branches[self.doc.view.branch]

    def edit(self, op: str, text: str | None = None, ids: np.ndarray | None = None) -> bool:
        """Mask / unmask / replace / protect / unprotect the selected tokens of the record shown.

        The first edit of a record forks a child branch whose first record is the edited
        one ('edit'); further edits amend that record until the branch runs. A run in
        progress is stopped first. False (and a message) when the edit cannot be made.
        A replacement's tokens are `text` encoded, or `ids` when given (`text` then only labels it).
        """
        store, row = self.doc.store, self.doc.current_row()
        if store is None or row is None or self.doc.vocab is None:
            self.notices.say("Nothing to edit: generate a run or open a session.", is_error=True)
            return False
        selection = self.doc.view.selection()
        if selection is None:
            self.notices.say("Select tokens on the canvas first: click, drag or shift-click.", is_error=True)
            return False
        start, stop = selection
        stop = min(stop, store.layout.total_len)  # positions in the whole sequence (composed in a block run)
        branch, record = self.doc.view.branch, min(self.doc.view.record, self.doc.n_records() - 1)
        mask_id = self.doc.vocab.mask_id
        state = edit_state(store, self.doc.rows(), record, mask_id)
        tokens, protected, edited = state.tokens, state.protected, state.edited
        try:
            check_editable(store.layout, state, start, stop)
            text_ids = None
            if op == "replace":
                text_ids = np.asarray(ids, dtype=np.int64) if ids is not None else encode_text(text or "", self.doc.vocab)
            predicted = predicted_tokens(store, branch, record) if op == "unmask" else None
            tokens, protected, changed = apply_edit(
                tokens, protected, op, start, stop, mask_id=mask_id, text_ids=text_ids, predicted=predicted
            )
            check_masks(store.layout, state, tokens, mask_id)
        except EditError as exc:
            self.notices.say(str(exc), is_error=True)
            return False
        if self.runs.is_running:
            self.runs.stop()
            self.notices.say("The run was stopped so this step can be edited.")
        entry = {"op": op, "start": start, "stop": stop, "text": text if op == "replace" else None}
        draft = self.draft()
        if draft is not None and self.doc.view.record == self.doc.n_records() - 1:
            amend_edit(store, draft.id, tokens, protected, edited | changed, [*draft.edits, entry], mask_id=mask_id)
        else:
            parent = store.branches[branch]
            child = fork_edit(
                store, branch, record, tokens, protected, edited | changed, dict(parent.settings),
                label=f"edit of {parent.label or branch} @ {record + 1}", edits=[entry], mask_id=mask_id,
            )
            self.doc.view.branch = child.id
        self.doc.view.record = self.doc.n_records() - 1
        self.doc.view.follow_live = self.doc.view.playing = False
        what = f"{op} {start}:{stop}" + (f" = {text!r}" if op == "replace" else "")
        self.notices.say(f"Edited ({what}). Restart from here (Ctrl+R) runs the model from this step.")
        return True

    def restart(self, settings: GenerationSettings) -> bool:
        """Run the sampler from the record shown with `settings`: an unrun edit runs in its own
        branch (its edited and protected tokens reach the worker); any other record forks a child."""
        if not self.runs.can_run:
            self._ask_for_model()
            return False
        draft = self.draft()
        if draft is None or self.doc.view.record != self.doc.n_records() - 1:
            return self.runs.continue_from(settings)
        store, row = self.doc.store, draft.rows[-1]
        settings = continued(settings, draft.settings)  # a prompt's positions stay fixed
        if store.layout.is_blocks:
            return self._restart_blocks(settings, draft)
        if not settings.has_prompt and settings.length != store.layout.seq_len:
            self.notices.say(f"To restart this edit, length must stay {store.layout.seq_len}.", is_error=True)
            return False
        start_it = int(store.columns["iteration"][row])
        if start_it >= settings.steps and settings.strategy not in OPEN_ENDED:
            self.notices.say(f"This step is after iteration {start_it}; raise steps above {start_it} to restart.", is_error=True)
            return False
        flags = store.get("flags", row)
        protected = (flags & FLAG_PROTECTED).astype(bool)
        edited = (flags & FLAG_EDITED).astype(bool)
        draft.settings = settings.to_dict()
        return self.runs.launch(
            settings, draft.id, tokens=store.get("tokens", row).astype(np.int64), iteration=start_it,
            protected=protected if protected.any() else None, edited=edited if edited.any() else None,
            emit_initial=False,
        )

    def _restart_blocks(self, settings: GenerationSettings, draft: Branch) -> bool:
        """restart() of an edit of a run made in blocks: the whole edited sequence goes to the
        worker, which runs the edited block on from the record's iteration, then every later
        block (store.edits.start_point)."""
        store, mask_id = self.doc.store, self.doc.vocab.mask_id
        settings = in_recorded_blocks(settings, draft.settings)
        rows = self.doc.rows(draft.id)
        state = edit_state(store, rows, len(rows) - 1, mask_id)
        source = int(store.history(draft.parent)[draft.fork_record])  # the record the edit was made at
        where = start_point(
            store.layout, state.tokens, mask_id, state.block, int(store.columns["iteration"][draft.rows[-1]]),
            store.kind(source) == "final", settings.steps,
        )
        if where is None:
            self.notices.say("Nothing is masked, so nothing is left to generate: mask positions to regenerate them.",
                             is_error=True)
            return False
        if where.iteration >= settings.steps and settings.strategy not in OPEN_ENDED:
            self.notices.say(f"This step is after iteration {where.iteration}; raise steps above {where.iteration} "
                             "to restart.", is_error=True)
            return False
        draft.settings = settings.to_dict()
        return self.runs.launch(
            settings, draft.id, start_block=where.block, tokens=state.tokens, iteration=where.iteration,
            protected=state.protected if state.protected.any() else None,
            edited=state.edited if state.edited.any() else None, emit_initial=not where.has_record,
        )

    def _ask_for_model(self) -> None:
        """Restarting needs a model: name the one the session came from and offer it."""
        path = self.doc.session.model_path if self.doc.session is not None else None
        if model_file(path) is not None:
            self.notices.post(ModelOffered(str(path)))
            self.notices.say(f"Restarting needs a model. This session was made with {path}: it is picked, press Load.", True)
        elif path:
            self.notices.say(f"Restarting needs a model. This session was made with {path}, which is not there: load one.", True)
        else:
            self.notices.say("Restarting needs a model: load one.", is_error=True)

    def rename_branch(self, branch: str, label: str) -> None:
        if self.doc.store is not None and branch in self.doc.store.branches:
            self.doc.store.rename(branch, label.strip())

    def delete_branch(self, branch: str) -> bool:
        """Delete a branch and its descendants (a run in one of them is stopped first)."""
        store = self.doc.store
        if store is None or branch not in store.branches:
            return False
        parent = store.branches[branch].parent
        try:
            doomed = set(store.delete(branch))
        except ValueError as exc:
            self.notices.say(str(exc), is_error=True)
            return False
        if self.runs.is_running and self.runs.live_branch in doomed:
            self.runs.stop()
        if self.doc.view.branch in doomed:
            self.doc.select_branch(parent if parent in store.branches else store.branch_order[0], self.runs.live_branch)
        self.compare.forget(doomed)
        self.notices.say(f"Deleted {len(doomed)} branch{'es' if len(doomed) > 1 else ''}: {', '.join(sorted(doomed, key=int))}.")
        return True
