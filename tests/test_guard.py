"""The frame loop's boundaries (gui.guard) and the view kept inside what is shown, without a window."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from model_data import tiny_checkpoint

from dpgviz.app.workspace import Workspace
from dpgviz.bench.synthetic import synthetic_store, synthetic_vocab
from dpgviz.core.discovery import ModelEntry
from dpgviz.core.settings import GenerationSettings
from dpgviz.gui.guard import BOUNDARY_TAG, MAX_FAILURES, Guard


class Said(list):
    def __call__(self, text: str, is_error: bool = False) -> None:
        self.append((text, is_error))


def boom() -> None:
    raise IndexError("position 874 outside 0..182")


def test_an_exception_at_a_boundary_is_logged_said_and_reset(caplog: pytest.LogCaptureFixture) -> None:
    said, resets = Said(), []
    guard = Guard(said, "/tmp/x.log")
    with caplog.at_level(logging.ERROR, logger="dpgviz.gui.guard"):
        assert guard.call("Inspector", boom, reset=lambda: resets.append(1)) is None
    assert resets == [1] and guard.caught == 1
    text, is_error = said[-1]
    assert is_error and text.startswith("Inspector failed: IndexError: position 874") and "details in /tmp/x.log" in text
    record = caplog.records[-1]
    assert BOUNDARY_TAG in record.getMessage() and record.exc_info is not None  # the traceback is in the log


def test_a_part_failing_every_frame_is_disabled_after_a_few_tries() -> None:
    said, calls = Said(), []

    def failing() -> None:
        calls.append(1)
        boom()

    guard = Guard(said)
    for _ in range(10):
        guard.call("Plots", failing)
    assert len(calls) == MAX_FAILURES and "Plots" in guard.disabled
    assert "off until the run, record or layout changes" in said[-1][0]


def test_a_disabled_part_comes_back_when_the_run_record_or_layout_changes() -> None:
    said, calls = Said(), []

    def canvas(fail: bool) -> str:
        calls.append(fail)
        if fail:
            boom()
        return "drawn"

    guard = Guard(said, "/tmp/x.log")
    watched = dict(run="3", record=("3", 7), layout=(False, 16, 89, 40))
    for _ in range(MAX_FAILURES + 2):
        guard.revive_on_change(**watched)
        guard.call("Canvas", canvas, True)
    assert "Canvas" in guard.disabled and len(calls) == MAX_FAILURES
    assert guard.revive_on_change(**watched) == [] and "Canvas" in guard.disabled  # nothing changed: stays off
    assert guard.revive_on_change(**{**watched, "record": ("3", 8)}) == ["Canvas"]
    assert said[-1] == ("Canvas back on (the record changed); if it fails again, details in /tmp/x.log", False)
    assert guard.call("Canvas", canvas, False) == "drawn" and guard.revived == 1
    for _ in range(MAX_FAILURES - 1):  # the count starts over: off again only after MAX_FAILURES more
        guard.call("Canvas", canvas, True)
    assert "Canvas" not in guard.disabled
    guard.call("Canvas", canvas, True)
    assert "Canvas" in guard.disabled
    assert guard.revive_on_change(run=None, record=("3", 8), layout=(True, 22, 60, 30)) == ["Canvas"]
    assert said[-1][0].startswith("Canvas back on (the run and layout changed)")


def test_a_success_clears_the_count_and_callbacks_are_never_disabled() -> None:
    guard = Guard(Said())
    for _ in range(MAX_FAILURES - 1):
        guard.call("Canvas", boom)
    assert guard.call("Canvas", lambda: 7) == 7
    for _ in range(MAX_FAILURES - 1):
        guard.call("Canvas", boom)
    assert "Canvas" not in guard.disabled
    got = []
    jobs = [(lambda sender, app_data: boom(), 1, 2, None), (lambda sender: got.append(sender), 5, None, None), (None,)]
    for _ in range(2 * MAX_FAILURES):
        guard.run_callbacks(jobs)  # the failing callback does not stop the next one
    assert got == [5] * (2 * MAX_FAILURES) and not any(n.startswith("callback") for n in guard.disabled)


def test_keyboard_interrupt_is_not_swallowed() -> None:
    def interrupt() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Guard(Said()).call("Canvas", interrupt)


def test_pins_selection_and_hover_past_a_shorter_run_are_dropped_with_a_word() -> None:
    vocab = synthetic_vocab()
    with Workspace(device="cpu") as ws:
        ws.doc.show_store(synthetic_store(1024, 3, vocab=vocab), vocab)
        ws.update(0.0)
        ws.view.pin(874), ws.view.pin(12)
        ws.view.select_tokens(900), ws.view.drag_to(1000)
        ws.view.hover_pos = 950
        ws.take_notices()
        ws.doc.show_store(synthetic_store(183, 3, vocab=vocab), vocab)  # the crash found by random input
        ws.update(0.0)
        assert ws.view.pinned == [12] and ws.view.selection() is None and ws.view.hover_pos is None
        said = [n.text for n in ws.take_notices() if hasattr(n, "text")]
        assert any("874" in t and "183 positions" in t for t in said), said
        ws.update(0.0)  # said once, not every frame
        assert not ws.take_notices()


def test_a_compare_pair_not_in_the_new_store_closes() -> None:
    vocab = synthetic_vocab()
    with Workspace(device="cpu") as ws:
        ws.doc.show_store(synthetic_store(64, 3, vocab=vocab, forks=1), vocab)
        a, b = ws.store.branch_order[:2]
        assert ws.compare.start(a, b)
        ws.doc.show_store(synthetic_store(32, 3, vocab=vocab), vocab)
        ws.store.new_branch(label="x")  # ids restart at 0: same names, other records
        ws.update(0.0)
        assert ws.compare.pair is None  # same branch ids, other records: not the pair that was compared
        assert any("compare view closed" in getattr(n, "text", "") for n in ws.take_notices())


def test_progress_of_a_run_whose_branch_was_deleted_says_it_is_stopping(tmp_path: Path) -> None:
    """gui-monkey seed 32: "Deleted 1 branch: 5" during a run, then `KeyError: '5'` in
    Runs.progress (the status panel, every frame) until the worker's RunStopped came back."""
    path = tiny_checkpoint(tmp_path / "tiny")
    with Workspace(device="cpu") as ws:
        ws.runs.load_model(ModelEntry("tiny", path, path.with_name("meta.pkl")))
        deadline = time.monotonic() + 60
        for steps in (2, 400):  # a short run, so the long one's branch is not the only root
            while ws.model_info is None or ws.is_running:
                assert time.monotonic() < deadline, "no model, or the short run never ended"
                ws.update(0.01)
                time.sleep(0.002)
            assert ws.runs.start(GenerationSettings(length=120, steps=steps, seed=1))
        branch = ws.runs.live_branch
        while not ws.store.branches[branch].rows:
            assert time.monotonic() < deadline, "no record within 60 s"
            ws.update(0.01)
            time.sleep(0.002)
        assert ws.edits.delete_branch(branch) and branch not in ws.store.branches
        assert ws.is_running  # the stop is sent, the run ends when the worker says so
        fraction, text = ws.progress()  # KeyError before the fix
        assert fraction == 0.0 and f"branch {branch} was deleted" in text
        while ws.is_running:
            assert time.monotonic() < deadline, "the run never stopped"
            ws.update(0.01)
            ws.progress()
            time.sleep(0.002)
        assert ws.progress() == (1.0, "idle")
