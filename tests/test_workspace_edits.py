"""Editing a step, restarting it as a branch, and comparing branches, without a window.

A real worker process and a tiny model; the workspace is driven as the frame loop drives it.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_workspace import entry, until  # noqa: F401  (the tiny-model fixture)

from dpgviz.app.compare import matching_record
from dpgviz.app.notices import ModelOffered
from dpgviz.app.workspace import Workspace
from dpgviz.core.records import FLAG_EDITED, FLAG_PROTECTED, record_count
from dpgviz.core.settings import GenerationSettings
from dpgviz.store.session_open import open_session

SHORT = GenerationSettings(length=60, steps=6, seed=2)


@pytest.fixture(scope="module")
def ws(entry):  # noqa: F811
    workspace = Workspace(device="cpu")
    workspace.runs.load_model(entry)
    until(workspace, lambda: workspace.model_info is not None)
    yield workspace
    workspace.close()


def fresh_run(ws: Workspace) -> str:
    assert ws.runs.start(SHORT)
    until(ws, lambda: not ws.is_running)
    ws.take_notices()
    return ws.view.branch


def snapshot(ws: Workspace, branch: str) -> dict[str, np.ndarray]:
    rows = ws.rows(branch)
    return {name: ws.store.column(name)[rows].copy() for name in ws.store.columns}


def same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return all(np.array_equal(a[k], b[k], equal_nan=a[k].dtype.kind == "f") for k in a)


def test_an_edit_forks_a_branch_shown_before_anything_runs(ws: Workspace) -> None:
    parent = fresh_run(ws)
    before = snapshot(ws, parent)
    ws.view.record = 6  # a remask record in the middle
    fork_tokens = ws.store.get("tokens", ws.current_row()).copy()
    ws.view.select_tokens(10)
    ws.view.drag_to(14)
    assert ws.edits.edit("mask")
    child = ws.store.branches[ws.view.branch]
    assert child.parent == parent and child.fork_record == 6 and len(child.rows) == 1
    assert ws.n_records() == 8  # the parent's records 0..6, then the edit
    row = ws.current_row()
    assert ws.store.kind(row) == "edit" and not ws.is_running
    tokens, flags = ws.store.get("tokens", row), ws.store.get("flags", row)
    assert (tokens[10:15] == ws.vocab.mask_id).all()
    assert np.array_equal(np.delete(tokens, range(10, 15)), np.delete(fork_tokens, range(10, 15)))
    changed = fork_tokens[10:15] != ws.vocab.mask_id
    assert np.array_equal((flags[10:15] & FLAG_EDITED).astype(bool), changed)
    assert same(before, snapshot(ws, parent))  # the parent is byte for byte as it was
    assert child.edits == [{"op": "mask", "start": 10, "stop": 15, "text": None}]


def test_more_edits_amend_the_same_unrun_branch(ws: Workspace) -> None:
    fresh_run(ws)
    ws.view.record = ws.n_records() - 1
    ws.view.select_tokens(0)
    ws.view.drag_to(4)
    assert ws.edits.edit("replace", "Hello")
    branch, n_branches = ws.view.branch, len(ws.store.branch_order)
    ws.view.select_tokens(0)
    ws.view.drag_to(4)
    assert ws.edits.edit("protect")
    assert ws.view.branch == branch and len(ws.store.branch_order) == n_branches
    assert [e["op"] for e in ws.store.branches[branch].edits] == ["replace", "protect"]
    row = ws.current_row()
    assert ws.vocab.decode(ws.store.get("tokens", row)[:5]) == "Hello"
    assert (ws.store.get("flags", row)[:5] & FLAG_PROTECTED).all()


def test_text_outside_the_vocabulary_is_refused_by_name_and_nothing_changes(ws: Workspace) -> None:
    fresh_run(ws)
    n_branches, shown = len(ws.store.branch_order), ws.current_row()
    ws.view.select_tokens(3)
    ws.view.drag_to(8)
    assert not ws.edits.edit("replace", "h€llé")
    note = ws.take_notices()[-1]
    assert note.is_error and "'€'" in note.text and "'é'" in note.text
    assert len(ws.store.branch_order) == n_branches and ws.current_row() == shown


def test_restart_runs_the_edit_and_keeps_protected_text(ws: Workspace) -> None:
    parent = fresh_run(ws)
    before = snapshot(ws, parent)
    ws.view.record = 4  # remask of iteration 1: the restart begins at iteration 2
    ws.view.select_tokens(20)
    ws.view.drag_to(24)
    assert ws.edits.edit("replace", "crown")
    ws.view.select_tokens(20)
    ws.view.drag_to(24)
    assert ws.edits.edit("protect")
    ws.view.select_tokens(40)
    ws.view.drag_to(49)
    assert ws.edits.edit("mask")
    child = ws.view.branch
    settings = GenerationSettings(length=SHORT.length, steps=SHORT.steps, seed=9, temperature=1.3, strategy="random")
    assert ws.edits.restart(settings)
    until(ws, lambda: not ws.is_running)
    own = ws.store.branches[child].rows
    kinds = [ws.store.kind(r) for r in own]
    assert kinds[0] == "edit" and kinds[1] == "prediction" and "initial" not in kinds and kinds[-1] == "final"
    assert len(own) == 1 + record_count(SHORT.steps, start_iteration=2) - 1
    crown = ws.vocab.encode("crown")
    for r in own:  # the protected word is in every record of the child
        assert np.array_equal(ws.store.get("tokens", r)[20:25], crown)
        assert (ws.store.get("flags", r)[20:25] & FLAG_PROTECTED).all()
    assert ws.store.branches[child].settings["seed"] == 9
    assert ws.n_records() == 5 + len(own)  # history: the parent's 0..4, then the child's own
    assert same(before, snapshot(ws, parent))


def test_restart_from_an_unedited_record_forks_like_continue(ws: Workspace) -> None:
    parent = fresh_run(ws)
    ws.view.record = 2
    assert ws.edits.restart(SHORT)
    until(ws, lambda: not ws.is_running)
    child = ws.store.branches[ws.view.branch]
    assert child.parent == parent and child.fork_record == 2
    assert ws.store.kind(child.rows[0]) == "initial"


def test_editing_during_a_run_stops_it_and_says_so(ws: Workspace) -> None:
    ws.runs.start(GenerationSettings(length=60, steps=300, seed=1))
    until(ws, lambda: ws.n_records() >= 5)
    ws.view.follow_live = False
    ws.view.record = 3
    ws.view.select_tokens(0)
    ws.view.drag_to(2)
    assert ws.edits.edit("mask")
    assert any("stopped" in n.text for n in ws.take_notices() if hasattr(n, "text"))
    until(ws, lambda: not ws.is_running, timeout_s=30)
    assert ws.store.kind(ws.current_row()) == "edit"


def test_edits_in_a_session_opened_without_a_model_are_saved(ws: Workspace, tmp_path) -> None:
    fresh_run(ws)
    path = tmp_path / "run.dpgviz"
    ws.files.save(path)
    ws.wait_for_job()
    with Workspace(device="cpu") as other:
        assert other.files.open(path)
        other.wait_for_job()
        other.view.record = 3
        other.view.select_tokens(5)
        other.view.drag_to(9)
        assert other.edits.edit("mask")
        edited_branch = other.view.branch
        assert not other.edits.restart(SHORT)  # no model: it says which, and offers it
        notices = other.take_notices()
        assert any(isinstance(n, ModelOffered) and n.path == other.doc.session.model_path for n in notices)
        assert "Restarting needs a model" in notices[-1].text and other.doc.session.model_path in notices[-1].text
        out = tmp_path / "edited.dpgviz"
        other.files.save(out)
        other.wait_for_job()
    with open_session(out) as saved:
        branch = saved.store.branches[edited_branch]
        assert branch.edits == [{"op": "mask", "start": 5, "stop": 10, "text": None}]
        assert saved.store.kind(branch.rows[0]) == "edit"
        assert len(saved.store.history(edited_branch)) == 5


def test_compare_follows_the_shown_iteration(ws: Workspace) -> None:
    first = fresh_run(ws)
    second = fresh_run(ws)
    assert ws.compare.start(first, second)
    assert ws.view.branch == first
    for record in (0, 3, 7, ws.n_records() - 1):
        ws.view.record = record
        left, right = ws.compare.rows()
        store = ws.store
        assert store.columns["iteration"][left] == store.columns["iteration"][right]
        assert store.columns["kind"][left] == store.columns["kind"][right]
    assert not ws.compare.start(first, first)


def test_matching_record_falls_back_to_the_last_earlier_iteration() -> None:
    iterations = np.array([0, 0, 0, 1, 1, 2])
    kinds = np.array([0, 1, 2, 1, 2, 1])
    assert matching_record(iterations, kinds, 1, 2) == 4
    assert matching_record(iterations, kinds, 1, 3) == 4  # no such kind: the last at iteration <= 1
    assert matching_record(iterations, kinds, 9, 1) == 5
    assert matching_record(iterations[3:], kinds[3:], 0, 0) == 0


def test_delete_removes_descendants_and_shows_the_parent(ws: Workspace) -> None:
    root = fresh_run(ws)
    ws.view.record = 2
    ws.view.select_tokens(1)
    ws.edits.edit("mask")
    child = ws.view.branch
    ws.view.select_tokens(2)
    ws.view.record = ws.n_records() - 2  # a record before the edit: a fork of the parent's part... of the child
    ws.edits.edit("mask")
    grandchild = ws.view.branch
    assert ws.store.branches[grandchild].parent == child
    ws.edits.rename_branch(child, "  my edit ")
    assert ws.store.branches[child].label == "my edit"
    assert ws.edits.delete_branch(child)
    assert child not in ws.store.branches and grandchild not in ws.store.branches
    assert ws.view.branch == root
