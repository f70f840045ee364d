"""The app's state without a window: a real worker, a tiny model, runs, branches, files.

`Workspace` is driven the way the frame loop drives it (`update` once a "frame") with
no Dear PyGui context, so these run anywhere, display or not.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from model_data import tiny_checkpoint

from dpgviz.app.notices import ModelReady, Said, SettingsRestored, StoreShown
from dpgviz.app.workspace import Workspace
from dpgviz.core.discovery import ModelEntry
from dpgviz.core.records import record_count
from dpgviz.core.settings import GenerationSettings
from dpgviz.store.journal_reader import find_recovery
from dpgviz.store.session_open import open_session

SHORT = GenerationSettings(length=60, steps=4, seed=2)


@pytest.fixture(scope="module")
def entry(tmp_path_factory: pytest.TempPathFactory) -> ModelEntry:
    path = tiny_checkpoint(tmp_path_factory.mktemp("ws") / "tiny")
    return ModelEntry("tiny", path, path.with_name("meta.pkl"))


@pytest.fixture(scope="module")
def ws(entry: ModelEntry):
    workspace = Workspace(device="cpu")
    workspace.runs.load_model(entry)
    until(workspace, lambda: workspace.model_info is not None)
    yield workspace
    client = workspace.runs.source
    workspace.close()
    assert client is None or not client.is_alive


def until(ws: Workspace, condition: Callable[[], bool], timeout_s: float = 60.0) -> list:
    """Run 'frames' until `condition`; returns the notices seen meanwhile."""
    seen: list = []
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out; notices: {seen[-5:]}"
        ws.update(0.01)
        seen += ws.take_notices()
        time.sleep(0.002)
    ws.update(0.01)
    return seen + ws.take_notices()


def journaled(entry: ModelEntry, journal: Path) -> Workspace:
    """A workspace (a window's state) journaling to `journal`, with `entry` loaded."""
    ws = Workspace(device="cpu", journal=journal)
    ws.runs.load_model(entry)
    until(ws, lambda: ws.model_info is not None)
    return ws


def test_loading_reports_the_model(entry: ModelEntry) -> None:
    with Workspace(device="cpu") as ws:
        ws.runs.load_model(entry)
        assert ws.runs.is_loading and not ws.runs.can_run
        seen = until(ws, lambda: ws.model_info is not None)
        assert ws.runs.can_run and ws.model_info.block_size == 128 and ws.model_info.device == "cpu"
        assert any(isinstance(n, ModelReady) and n.info == ws.model_info for n in seen)


def test_start_runs_to_the_end_and_follows_live(ws: Workspace) -> None:
    assert ws.runs.start(SHORT)
    first = ws.take_notices()
    assert any(isinstance(n, StoreShown) and n.seq_len == SHORT.length for n in first)
    seen = until(ws, lambda: not ws.is_running)
    assert ws.n_records() == record_count(SHORT.steps)
    assert ws.view.record == ws.n_records() - 1  # followed the run to its last record
    assert ws.store.kind(ws.current_row()) == "final"
    assert any(isinstance(n, Said) and n.text.startswith("Done") for n in seen)
    assert ws.progress() == (1.0, "idle")


def test_continue_forks_a_child_branch_with_the_parents_tokens(ws: Workspace) -> None:
    ws.runs.start(SHORT)
    until(ws, lambda: not ws.is_running)
    parent = ws.view.branch
    parent_rows = list(ws.rows())
    before = {name: ws.store.column(name)[parent_rows].copy() for name in ws.store.columns}
    ws.view.record = 4  # a remask record: iteration 1's state
    fork_tokens = ws.store.get("tokens", parent_rows[4]).copy()
    assert ws.runs.continue_from(SHORT)
    until(ws, lambda: not ws.is_running)
    child = ws.store.branches[ws.view.branch]
    assert child.parent == parent and child.fork_record == 4
    assert len(child.rows) == record_count(SHORT.steps, start_iteration=2)
    assert np.array_equal(ws.store.get("tokens", child.rows[0]), fork_tokens)  # starts where it forked
    for name, col in before.items():  # the parent's records are untouched
        assert np.array_equal(ws.store.column(name)[parent_rows], col, equal_nan=col.dtype.kind == "f"), name


def test_continue_refuses_a_changed_length(ws: Workspace) -> None:
    ws.runs.start(SHORT)
    until(ws, lambda: not ws.is_running)
    n_branches = len(ws.store.branch_order)
    assert not ws.runs.continue_from(GenerationSettings(length=SHORT.length + 1, steps=SHORT.steps))
    assert "length must stay" in ws.take_notices()[-1].text
    assert len(ws.store.branch_order) == n_branches


def test_stop_ends_a_long_run_early(ws: Workspace) -> None:
    long = GenerationSettings(length=100, steps=300, seed=1)
    ws.runs.start(long)
    until(ws, lambda: ws.n_records() >= 4)
    ws.runs.stop()
    seen = until(ws, lambda: not ws.is_running, timeout_s=30)
    assert 4 <= ws.n_records() < record_count(long.steps)
    assert any(isinstance(n, Said) and n.text.startswith("Stopped") for n in seen)


def test_save_and_open_again_round_trips_every_branch(ws: Workspace, tmp_path: Path) -> None:
    ws.runs.start(SHORT)
    until(ws, lambda: not ws.is_running)
    ws.view.record = 2
    ws.runs.continue_from(SHORT)
    until(ws, lambda: not ws.is_running)
    store = ws.store
    count, tree = len(store), store.tree()
    columns = {name: store.column(name).copy() for name in store.columns}
    path = tmp_path / "run.dpgviz"
    assert ws.files.save(path)
    ws.wait_for_job()
    assert ws.doc.path == path and path.is_file()
    assert not ws.take_notices()[-1].is_error

    with Workspace(device="cpu") as other:  # a second window-free app opens it without a model
        assert other.files.open(path)
        seen = other.take_notices()
        assert any(isinstance(n, SettingsRestored) for n in seen)
        assert other.model_info is None and other.doc.session is not None
        assert len(other.store) == count and other.store.tree() == tree
        for name, col in columns.items():
            assert np.array_equal(other.store.column(name), col, equal_nan=col.dtype.kind == "f"), name
        assert other.view.branch == tree[0]["id"] and other.view.record == len(tree[0]["rows"]) - 1
        other.wait_for_job()  # the recorded model's hash check
        assert "press Load" in other.take_notices()[-1].text


def test_saving_while_a_run_appends_writes_the_snapshot(ws: Workspace, tmp_path: Path) -> None:
    long = GenerationSettings(length=100, steps=400, seed=4)
    ws.runs.start(long)
    until(ws, lambda: ws.n_records() >= 6)
    path = tmp_path / "live.dpgviz"
    assert ws.files.save(path)  # the snapshot is taken now; the run keeps appending meanwhile
    job = ws.jobs.job
    snapshot_count = job is not None and len(ws.store)
    until(ws, lambda: ws.jobs.job is None, timeout_s=60)
    grown = len(ws.store)
    ws.runs.stop()
    until(ws, lambda: not ws.is_running, timeout_s=30)
    with open_session(path) as saved:
        n = len(saved.store)
        assert 6 <= n <= snapshot_count
        for name in ("tokens", "flags", "confidence", "iteration"):
            col = ws.store.column(name)[:n]
            assert np.array_equal(saved.store.column(name), col, equal_nan=col.dtype.kind == "f"), name
    assert grown >= n  # records kept arriving while it saved


def test_open_failure_keeps_what_is_shown(ws: Workspace, tmp_path: Path) -> None:
    ws.runs.start(SHORT)
    until(ws, lambda: not ws.is_running)
    store, shown = ws.store, ws.n_records()
    bad = tmp_path / "bad.dpgviz"
    bad.write_bytes(b"\x89DPGVIZ\n" + b"\0" * 10)
    assert not ws.files.open(bad)
    note = ws.take_notices()[-1]
    assert note.is_error and "Cannot open" in note.text
    assert ws.store is store and ws.n_records() == shown


def test_start_without_a_model_says_so() -> None:
    with Workspace(device="cpu") as ws:
        assert not ws.runs.start(SHORT)
        assert ws.take_notices() == [Said("Load a model first.", True)]
        assert ws.store is None


def test_comparing_strategies_runs_them_as_siblings_and_opens_the_compare_view(ws: Workspace) -> None:
    from dpgviz.app.notices import CompareShown

    assert not ws.compare.strategies(SHORT, ["llada"])  # one is no comparison
    assert ws.compare.strategies(SHORT, ["llada", "margin", "entropy"])
    seen = until(ws, lambda: not ws.is_running and ws.compare.queue is None, timeout_s=120)
    store = ws.store
    root = ws.compare.pair[0]
    assert store.branches[root].label == "llada" and store.branches[root].parent is None
    children = store.children(root)
    assert [store.branches[c].label for c in children] == ["margin", "entropy"]
    for child in children:
        b = store.branches[child]
        assert b.fork_record == 0 and b.settings["strategy"] == b.label
        kinds = [store.kind(int(r)) for r in store.history(child)]
        assert kinds[0] == "initial" and kinds[-1] == "final" and len(kinds) == record_count(SHORT.steps)
    assert ws.compare.pair == (root, children[0]) and any(isinstance(n, CompareShown) for n in seen)
    ws.compare.pair = None


def test_stopping_a_strategy_comparison_runs_nothing_more(ws: Workspace) -> None:
    long = GenerationSettings(length=120, steps=40, seed=1)
    assert ws.compare.strategies(long, ["llada", "margin"])
    n_branches = len(ws.store.branch_order)
    ws.runs.stop()
    until(ws, lambda: not ws.is_running)
    for _ in range(20):
        ws.update(0.01)
    assert ws.compare.queue is None and not ws.is_running
    assert len(ws.store.branch_order) == n_branches  # margin never started


def test_a_preview_goes_when_another_session_replaces_the_store(ws: Workspace, tmp_path: Path) -> None:
    ws.runs.start(SHORT)
    until(ws, lambda: not ws.is_running)
    path = tmp_path / "run.dpgviz"
    assert ws.files.save(path)
    ws.wait_for_job()
    ws.view.record = 1
    assert ws.inspect.preview_resample(2.0, 1.0)
    ws.update(0.0)
    assert ws.inspect.preview is not None  # the same store: the preview stays
    assert ws.files.open(path)
    ws.update(0.0)
    assert ws.inspect.preview is None  # another store: its row would name another record


def test_deleting_the_running_branch_drops_the_records_still_on_their_way(ws: Workspace) -> None:
    ws.runs.start(SHORT)
    root = ws.runs.live_branch  # a store of this layout may be shown already: the run joins it
    until(ws, lambda: not ws.is_running)
    kept = list(ws.store.branches)
    ws.view.branch, ws.view.record = root, 2
    long = GenerationSettings(length=SHORT.length, steps=300, seed=5)
    assert ws.runs.continue_from(long)
    branch = ws.runs.live_branch
    until(ws, lambda: len(ws.store.history(branch)) > len(ws.store.history(root)) // 2 + 3)
    assert ws.edits.delete_branch(branch)  # records already written by the worker are still in the pipe
    until(ws, lambda: not ws.is_running, timeout_s=30)  # update() takes them without a KeyError
    assert branch not in ws.store.branches and list(ws.store.branches) == kept


def test_a_normal_close_asks_nothing_next_time_and_keeps_unsaved_work_to_reopen(entry: ModelEntry, tmp_path: Path) -> None:
    journal = tmp_path / "recovery.dpgjournal"
    closed = tmp_path / "recovery-closed.dpgjournal"

    def loaded() -> Workspace:
        return journaled(entry, journal)

    with loaded() as ws:
        assert ws.recovery.last_closed() is None and not ws.recovery.reopen_last_closed()
        ws.runs.start(SHORT)
        until(ws, lambda: not ws.is_running)
        ws.view.record = 2
        assert ws.runs.continue_from(GenerationSettings(length=SHORT.length, steps=6, seed=9))
        until(ws, lambda: not ws.is_running)
        made = {b: len(ws.store.history(b)) for b in ws.store.branch_order}
    assert not journal.exists() and closed.exists()  # nothing offered at start; the work kept aside

    with loaded() as ws:
        assert ws.recovery.pending is None
        info = ws.recovery.last_closed()
        assert info is not None and (info.n_records, info.n_branches) == (sum(made.values()) - 3, 2)  # a child shares its first records
        assert ws.recovery.reopen_last_closed()
        assert {b: len(ws.store.history(b)) for b in ws.store.branch_order} == made and ws.doc.path is None
        assert ws.files.save(tmp_path / "kept.dpgviz")
        ws.wait_for_job()
        ws.update(0.0)
    assert not journal.exists()  # saved: nothing unsaved at this close, so nothing new is kept aside

    with loaded() as ws:  # a window that shows nothing leaves the earlier work where it is
        pass
    assert find_recovery(closed) is not None


def test_reopening_one_branch_says_one_branch(entry: ModelEntry, tmp_path: Path) -> None:
    journal = tmp_path / "recovery.dpgjournal"
    with journaled(entry, journal) as ws:
        ws.runs.start(SHORT)
        until(ws, lambda: not ws.is_running)
    with journaled(entry, journal) as ws:
        assert ws.recovery.reopen_last_closed()
        said = ws.notices.messages[-1].text
    assert re.search(r"^Reopened \d+ unsaved records in 1 branch, closed ", said), said


def test_two_windows_write_two_journals_and_only_a_gone_ones_is_offered(entry: ModelEntry, tmp_path: Path) -> None:
    journal = tmp_path / "recovery.dpgjournal"

    def loaded() -> Workspace:
        return journaled(entry, journal)

    first = loaded()
    first.runs.start(SHORT)
    until(first, lambda: not first.is_running)
    first.recovery.run_ended()
    assert first.recovery.journal.wait()
    n_first = len(first.store)
    with loaded() as second:  # the first one still runs: its journal is neither offered nor written here
        assert second.recovery.pending is None and second.recovery.path != journal
        second.runs.start(GenerationSettings(length=40, steps=3, seed=1))
        until(second, lambda: not second.is_running)
        second.recovery.run_ended()
        assert second.recovery.journal.wait()  # the journal writes on its own thread
        assert find_recovery(journal).n_records == n_first  # untouched by the second window
        assert find_recovery(second.recovery.path).n_records == len(second.store)
        first.recovery.close(delete=False)  # the first window dies (its journal stays, as after a kill)
        first.close()
        with loaded() as third:  # offered: the gone window's journal, not the live second one's
            assert third.recovery.pending is not None and third.recovery.pending.path == journal
            assert third.recovery.pending.n_records == n_first
            assert third.recovery.accept() and len(third.store) == n_first
    leftovers = sorted(p.name for p in tmp_path.iterdir() if p.suffix != ".dpgjournal" or "closed" not in p.name)
    assert not [n for n in leftovers if n.endswith(".lock") and n != "recovery.dpgjournal.lock"], leftovers


def branch_histories(ws: Workspace) -> list[bytes]:
    """Each branch's timeline as one bytes string (tokens and flags of every record), sorted."""
    store = ws.store
    return sorted(
        b"".join(store.get("tokens", int(r)).tobytes() + store.get("flags", int(r)).tobytes() for r in store.history(b))
        for b in store.branch_order
    )


def test_reopen_adds_the_last_windows_branches_beside_the_unsaved_ones_and_a_close_keeps_all(
    entry: ModelEntry, tmp_path: Path
) -> None:
    journal = tmp_path / "recovery.dpgjournal"
    with journaled(entry, journal) as ws:  # the last window: a run and a child, closed without saving
        ws.runs.start(SHORT)
        until(ws, lambda: not ws.is_running)
        ws.view.record = 2
        assert ws.runs.continue_from(GenerationSettings(length=SHORT.length, steps=6, seed=9))
        until(ws, lambda: not ws.is_running)
        closed = branch_histories(ws)
    with journaled(entry, journal) as ws:  # this window: run A, unsaved, then File > Reopen
        ws.runs.start(GenerationSettings(length=SHORT.length, steps=5, seed=3))
        until(ws, lambda: not ws.is_running)
        run_a = branch_histories(ws)
        assert ws.recovery.reopen_last_closed()
        assert branch_histories(ws) == sorted(run_a + closed)  # A's branch and the reopened ones, all there
        assert ws.store.branches[ws.view.branch].parent is None  # the first reopened branch is shown
        assert not ws.recovery.reopen_last_closed()  # the same work twice would only duplicate it
        ws.update(0.0)
        both = branch_histories(ws)
    with journaled(entry, journal) as ws:  # the next start: the close kept every branch
        assert ws.recovery.reopen_last_closed()
        assert branch_histories(ws) == both and len(both) == 3


def test_records_recovered_at_start_stay_when_the_last_windows_work_is_reopened(entry: ModelEntry, tmp_path: Path) -> None:
    journal = tmp_path / "recovery.dpgjournal"
    with journaled(entry, journal) as ws:  # a window closed normally: its run kept aside
        ws.runs.start(SHORT)
        until(ws, lambda: not ws.is_running)
        closed = branch_histories(ws)
    killed = journaled(entry, journal)  # a window that dies: its journal stays to be recovered
    killed.runs.start(GenerationSettings(length=SHORT.length, steps=5, seed=7))
    until(killed, lambda: not killed.is_running)
    lost = branch_histories(killed)
    killed.recovery.close(delete=False)
    killed.close()
    with journaled(entry, journal) as ws:
        assert ws.recovery.pending is not None and ws.recovery.accept()
        assert branch_histories(ws) == lost
        assert ws.recovery.reopen_last_closed()
        assert branch_histories(ws) == sorted(lost + closed)  # the recovered records stay beside the reopened
    with journaled(entry, journal) as ws:
        assert ws.recovery.reopen_last_closed() and branch_histories(ws) == sorted(lost + closed)
