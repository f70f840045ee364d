"""The frame loop's boundaries (gui.guard) and the view kept inside what is shown, without a window."""

from __future__ import annotations

import logging

import pytest

from dpgviz.app.workspace import Workspace
from dpgviz.bench.synthetic import synthetic_store, synthetic_vocab
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
    assert "off until restart" in said[-1][0]


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
