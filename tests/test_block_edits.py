"""Editing, restarting, continuing and re-sampling runs made in blocks (issue 23).

Positions are whole-sequence positions (what the canvas and `branch` use); a record holds
one block and store.blocks composes the rest. The window-free tests drive a Workspace
with a real worker and a tiny model (block size 128, runs of 200 tokens in blocks of 64:
three whole blocks and a last one of 8); the CLI tests run `main.py` as a user does.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from test_cli import run
from test_engine import make_checkpoint
from test_workspace import entry, until  # noqa: F401  (the tiny-model fixture)

from dpgviz.app.workspace import Workspace
from dpgviz.core.records import FLAG_EDITED, record_count
from dpgviz.core.settings import GenerationSettings
from dpgviz.store.blocks import Composer
from dpgviz.store.session_open import open_session

MASK = "\u2588"
BLOCKS = GenerationSettings(length=200, block_length=64, steps=4, seed=2)  # blocks at 0, 64, 128, 192 (8 long)


@pytest.fixture(scope="module")
def ws(entry):  # noqa: F811
    workspace = Workspace(device="cpu")
    workspace.runs.load_model(entry)
    until(workspace, lambda: workspace.model_info is not None)
    yield workspace
    workspace.close()


@pytest.fixture(scope="module")
def parent(ws: Workspace) -> str:
    assert ws.runs.start(BLOCKS)
    until(ws, lambda: not ws.is_running)
    ws.take_notices()
    assert ws.store.layout.is_blocks and ws.store.layout.total_len == 200
    return ws.view.branch


def snapshot(ws: Workspace, branch: str) -> dict[str, np.ndarray]:
    rows = ws.rows(branch)
    return {name: ws.store.column(name)[rows].copy() for name in ws.store.columns}


def same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return all(np.array_equal(a[k], b[k], equal_nan=a[k].dtype.kind == "f") for k in a)


def composed(ws: Workspace, branch: str, record: int = -1, field: str = "tokens") -> np.ndarray:
    rows = ws.rows(branch)
    return Composer(ws.store, rows, ws.vocab.mask_id).field(field, record % len(rows))


def record_of(ws: Workspace, branch: str, block: int, kind: str, iteration: int) -> int:
    """History index of the record of `block` with `kind` at `iteration`."""
    cols = ws.store.columns
    rows = ws.rows(branch)
    for i, r in enumerate(rows):
        if int(cols["block"][r]) == block and ws.store.kind(int(r)) == kind and int(cols["iteration"][r]) == iteration:
            return i
    raise AssertionError(f"no {kind} record of block {block} at iteration {iteration}")


def select(ws: Workspace, branch: str, record: int, start: int, stop: int) -> None:
    ws.doc.select_branch(branch)
    ws.view.record = record
    ws.view.select_tokens(start)
    ws.view.drag_to(stop - 1)


def run_out(ws: Workspace) -> list:
    seen = until(ws, lambda: not ws.is_running)
    return seen


def test_masking_a_block_record_forks_the_composed_edit_and_leaves_the_parent(ws: Workspace, parent: str) -> None:
    before = snapshot(ws, parent)
    k = record_of(ws, parent, 2, "remask", 1)  # block 2 (positions 128..191) half done
    at_k = composed(ws, parent, k)
    select(ws, parent, k, 140, 150)
    assert ws.edits.edit("mask")
    child = ws.store.branches[ws.view.branch]
    assert child.parent == parent and child.fork_record == k and len(child.rows) == 1
    row = child.rows[0]
    assert ws.store.kind(row) == "edit" and int(ws.store.columns["block"][row]) == 2
    assert int(ws.store.columns["iteration"][row]) == 2  # a remask of iteration 1: a restart begins at 2
    tokens = composed(ws, child.id)
    assert ws.inspect.shown().get("tokens").shape == (200,)  # the canvas draws the whole edited sequence
    assert np.array_equal(ws.inspect.shown().get("tokens"), tokens)
    assert (tokens[140:150] == ws.vocab.mask_id).all()
    assert np.array_equal(np.delete(tokens, range(140, 150)), np.delete(at_k, range(140, 150)))
    flags = composed(ws, child.id, field="flags")
    assert np.array_equal((flags[140:150] & FLAG_EDITED) != 0, at_k[140:150] != ws.vocab.mask_id)
    assert same(before, snapshot(ws, parent))


def test_a_block_not_started_at_the_record_cannot_be_edited(ws: Workspace, parent: str) -> None:
    k = record_of(ws, parent, 1, "prediction", 2)
    n_branches = len(ws.store.branch_order)
    select(ws, parent, k, 120, 140)  # reaches into block 2, all masked at a record of block 1
    assert not ws.edits.edit("mask")
    said = " ".join(n.text for n in ws.take_notices() if hasattr(n, "text"))
    assert "positions 128:140 are in block 3 of 4, which has not started" in said
    assert len(ws.store.branch_order) == n_branches and ws.view.branch == parent


def test_restart_runs_the_edited_block_on_then_every_later_block(ws: Workspace, parent: str) -> None:
    before = snapshot(ws, parent)
    k = record_of(ws, parent, 2, "remask", 1)
    select(ws, parent, k, 140, 150)
    assert ws.edits.edit("mask")
    draft = ws.view.branch
    assert ws.edits.restart(BLOCKS)
    run_out(ws)
    rows = ws.rows(draft)
    cols = ws.store.columns
    own = ws.store.branches[draft].rows
    # the edit, then block 2 from iteration 2 (no 'initial': the edit is its start), then block 3 whole
    assert [ws.store.kind(r) for r in own[:2]] == ["edit", "prediction"] and int(cols["iteration"][own[1]]) == 2
    assert len(own) == 1 + record_count(4, 2) - 1 + record_count(4)
    assert [int(cols["block"][r]) for r in own[-record_count(4):]] == [3] * record_count(4)
    final, parent_final = composed(ws, draft), composed(ws, parent)
    assert len(rows) == ws.n_records() and len(final) == 200 and not (final == ws.vocab.mask_id).any()
    assert np.array_equal(final[:128], parent_final[:128])  # blocks before the edited one come from the parent
    assert same(before, snapshot(ws, parent))


def test_an_edit_of_a_finished_block_is_context_for_the_blocks_after(ws: Workspace, parent: str) -> None:
    k = record_of(ws, parent, 2, "initial", 0)  # block 2 not begun: blocks 0 and 1 are finished text
    select(ws, parent, k, 64, 68)
    assert ws.edits.edit("replace", "the ")
    select(ws, ws.view.branch, ws.n_records() - 1, 130, 132)  # the edited view: amend the same draft
    assert ws.edits.edit("replace", "ab")
    assert ws.edits.edit("protect")  # else the strategy may send it back to mask, as in any run
    draft = ws.store.branches[ws.view.branch]
    assert [int(ws.store.columns["block"][r]) for r in draft.rows] == [1, 2]  # one edit record per block, own last
    assert [e["op"] for e in draft.edits] == ["replace", "replace", "protect"]
    assert ws.edits.restart(BLOCKS)
    run_out(ws)
    final, parent_final = composed(ws, draft.id), composed(ws, parent)
    text = "".join(ws.vocab.strings()[final])
    assert text[64:68] == "the " and text[130:132] == "ab" and MASK not in text
    assert np.array_equal(final[:64], parent_final[:64]) and np.array_equal(final[68:128], parent_final[68:128])
    first_run = draft.rows[2]  # block 2 from its edit at iteration 0, then block 3
    assert ws.store.kind(first_run) == "prediction" and int(ws.store.columns["block"][first_run]) == 2
    assert len(draft.rows) == 2 + record_count(4) - 1 + record_count(4)


def test_a_mask_in_a_finished_block_is_refused(ws: Workspace, parent: str) -> None:
    k = record_of(ws, parent, 3, "prediction", 1)
    n_branches = len(ws.store.branch_order)
    select(ws, parent, k, 10, 20)
    assert not ws.edits.edit("mask")
    said = " ".join(n.text for n in ws.take_notices() if hasattr(n, "text"))
    assert "position 10 is in block 1, finished before this record's block 4" in said
    assert not ws.edits.edit("replace", "abc")  # shorter text masks the rest of the selection
    assert len(ws.store.branch_order) == n_branches and ws.view.branch == parent


def test_an_edit_at_a_blocks_final_fills_its_masks_then_runs_the_blocks_after(ws: Workspace, parent: str) -> None:
    k = record_of(ws, parent, 1, "final", 3)
    select(ws, parent, k, 70, 80)
    assert ws.edits.edit("mask")
    draft = ws.view.branch
    assert ws.edits.restart(BLOCKS)
    run_out(ws)
    own, cols = ws.store.branches[draft].rows, ws.store.columns
    assert [ws.store.kind(r) for r in own[:3]] == ["edit", "prediction", "final"]
    assert int(cols["block"][own[1]]) == 1 and int(cols["iteration"][own[1]]) == 3  # its last iteration
    assert len(own) == 3 + 2 * record_count(4)
    final, parent_final = composed(ws, draft), composed(ws, parent)
    assert not (final == ws.vocab.mask_id).any()
    assert np.array_equal(np.delete(final[:128], range(70, 80)), np.delete(parent_final[:128], range(70, 80)))


def test_continue_a_block_run_with_new_settings(ws: Workspace, parent: str) -> None:
    before = snapshot(ws, parent)
    k = record_of(ws, parent, 1, "remask", 0)
    ws.doc.select_branch(parent)
    ws.view.record = k
    faster = GenerationSettings(length=999, steps=6, seed=9, temperature=0.7)  # the window's length is ignored
    assert ws.runs.continue_from(faster)
    child = ws.view.branch
    run_out(ws)
    b = ws.store.branches[child]
    assert b.settings["steps"] == 6 and b.settings["length"] == 200 and b.settings["block_length"] == 64
    cols = ws.store.columns
    assert ws.store.kind(b.rows[0]) == "initial" and int(cols["iteration"][b.rows[0]]) == 1
    assert len(b.rows) == record_count(6, 1) + 2 * record_count(6)
    final = composed(ws, child)
    assert not (final == ws.vocab.mask_id).any() and np.array_equal(final[:64], composed(ws, parent)[:64])
    assert same(before, snapshot(ws, parent))


def test_continue_from_a_block_final_starts_the_next_block_and_the_last_final_is_refused(
    ws: Workspace, parent: str
) -> None:
    ws.doc.select_branch(parent)
    ws.view.record = record_of(ws, parent, 1, "final", 3)
    assert ws.runs.continue_from(BLOCKS, repeat_start=False)
    child = ws.view.branch
    run_out(ws)
    b = ws.store.branches[child]
    assert int(ws.store.columns["block"][b.rows[0]]) == 2 and ws.store.kind(b.rows[0]) == "initial"
    assert len(b.rows) == 2 * record_count(4)
    ws.doc.select_branch(parent)
    assert not ws.runs.continue_from(BLOCKS)  # the run's last record: every block is done
    said = " ".join(n.text for n in ws.take_notices() if hasattr(n, "text"))
    assert "nothing is left to generate" in said


def test_run_from_a_prediction_of_a_block_draws_it_again(ws: Workspace, parent: str) -> None:
    k = record_of(ws, parent, 2, "prediction", 1)  # every mask of block 2 filled: nothing to go on from
    ws.doc.select_branch(parent)
    ws.view.record = k
    assert ws.runs.continue_from(BLOCKS, repeat_start=False)  # Run from here after a preview takes this path
    child = ws.store.branches[ws.view.branch]
    run_out(ws)
    assert child.fork_record == k - 1  # the remask before it, whose masks the new prediction fills
    first = child.rows[0]
    assert ws.store.kind(first) == "prediction" and int(ws.store.columns["iteration"][first]) == 1
    assert int(ws.store.columns["block"][first]) == 2 and len(child.rows) == record_count(4, 1) - 1 + record_count(4)
    assert not (composed(ws, child.id) == ws.vocab.mask_id).any()


def test_resample_preview_of_a_block_record_lies_in_its_block(ws: Workspace, parent: str) -> None:
    ws.doc.select_branch(parent)
    ws.view.record = record_of(ws, parent, 2, "prediction", 0)
    assert ws.inspect.preview_resample(3.0, 1.0, seed=4)
    preview = ws.inspect.preview.tokens
    assert preview.shape == (200,)
    assert (preview[:128] == -1).all() and (preview[192:] == -1).all() and (preview[128:192] >= 0).any()
    extras = ws.inspect.cell_extras("state")
    assert extras.arrays["preview"] is preview and extras.label.startswith("PREVIEW")
    changes = ws.inspect.preview_changes()
    assert changes.shape == (200,) and changes.any() and not changes[:128].any()
    ws.inspect.clear_preview()
    assert "preview" not in ws.inspect.cell_extras("state").arrays


def test_a_block_run_after_a_prompt_edits_past_the_prompt_only(ws: Workspace, parent: str) -> None:
    """Last of the window-free tests: its run has another layout, so it replaces the store shown."""
    prompted = GenerationSettings(prompt="ROMEO:\n", length=130, block_length=64, steps=3, seed=5)
    assert ws.runs.start(prompted)
    run_out(ws)
    root = ws.view.branch
    layout = ws.store.layout
    assert layout.prefix_len == 7 and layout.total_len == 137
    k = record_of(ws, root, 1, "remask", 0)  # block 1: positions 71..134
    select(ws, root, k, 2, 5)
    assert not ws.edits.edit("mask")
    assert any("the prompt, fixed" in getattr(n, "text", "") for n in ws.take_notices())
    select(ws, root, k, 80, 90)
    assert ws.edits.edit("mask")
    draft = ws.view.branch
    assert ws.edits.restart(prompted)
    run_out(ws)
    final = composed(ws, draft)
    text = "".join(ws.vocab.strings()[final])
    assert text.startswith("ROMEO:\n") and len(text) == 137 and MASK not in text
    assert np.array_equal(final[:71], composed(ws, root)[:71])


# -- the command line -------------------------------------------------------------------------
def final_text(doc: dict) -> str:
    """The composed text at a branch's last record (`full_text` in compact block JSON)."""
    last = doc["records"][-1]
    return last.get("full_text", last["text"])


def show(path, *args: str) -> dict:
    out = run("show", str(path), "--json", *args)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    folder = tmp_path_factory.mktemp("block_branch")
    ckpt = make_checkpoint(folder / "out", block_size=128)
    session = folder / "s.dpgviz"
    out = run("generate", "--model", str(ckpt), "--length", "300", "--block-length", "64", "--steps", "3",
              "--seed", "1", "--device", "cpu", "--out", str(session))
    assert out.returncode == 0, out.stderr
    return ckpt, session


def parent_arrays(path, branch: str = "0") -> dict[str, np.ndarray]:
    with open_session(path) as s:
        rows = s.rows(branch)
        return {name: np.array(col[: len(s.store)][rows]) for name, col in s.store.columns.items()}


def test_branch_edits_the_fourth_block_and_keeps_what_came_before(made, tmp_path) -> None:
    session = tmp_path / "s.dpgviz"
    shutil.copy(made[1], session)
    parent = show(session)
    arrays = parent_arrays(session)
    k = next(i for i, r in enumerate(parent["records"]) if r["block"] == 3 and r["kind"] == "remask")
    out = run("branch", str(session), "--record", str(k), "--mask", "200:210", "--device", "cpu")
    assert out.returncode == 0, out.stderr
    new_id = out.stdout.splitlines()[-1]
    assert new_id == "1"
    child = show(session, "--branch", new_id)
    text, before = final_text(child), final_text(parent)
    assert len(text) == 300 and MASK not in text and text[:192] == before[:192]
    assert child["records"][: k + 1] == parent["records"][: k + 1]
    assert child["records"][k + 1]["kind"] == "edit" and child["records"][k + 1]["block"] == 3
    assert show(session) == {**parent, "branches": show(session)["branches"]}  # the parent's JSON as it was
    after = parent_arrays(session)
    assert all(np.array_equal(arrays[n], after[n], equal_nan=arrays[n].dtype.kind == "f") for n in arrays)


def test_branch_refuses_a_block_not_started_and_leaves_the_file(made, tmp_path) -> None:
    session = tmp_path / "s.dpgviz"
    shutil.copy(made[1], session)
    data = session.read_bytes()
    k = next(i for i, r in enumerate(show(session)["records"]) if r["block"] == 1 and r["kind"] == "final")
    out = run("branch", str(session), "--record", str(k), "--mask", "250:260", "--device", "cpu")
    assert out.returncode != 0
    assert "positions 250:260 are in block 4 of 5, which has not started at this record" in out.stderr
    assert session.read_bytes() == data
