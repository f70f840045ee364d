"""Messages without a window: every message said is kept whole with its time (View > Messages
reads them), and what opening a session says about its model.

The session tests use a real worker and the tiny model, as tests/test_workspace.py does.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from model_data import tiny_checkpoint

from dpgviz.app import notices as notices_module
from dpgviz.app.notices import Message, Notices, Said, counted
from dpgviz.app.workspace import Workspace
from dpgviz.core.discovery import ModelEntry
from dpgviz.core.settings import GenerationSettings

LONG = ("Replacing 'abc' at 12:15 would shift every token after it and change the block layout, "
        "so mask it at a record of block 4, or replace it with text of the same length")


# -- the message log ----------------------------------------------------------------------------
def test_every_message_is_kept_whole_with_its_time_oldest_first() -> None:
    notices = Notices()
    before = time.time()
    texts = [f"message {i}" for i in range(50)] + [LONG]
    for i, text in enumerate(texts):
        notices.say(text, is_error=i % 7 == 0)
    after = time.time()
    assert [m.text for m in notices.messages] == texts  # whole, in order, none dropped
    assert [m.is_error for m in notices.messages] == [i % 7 == 0 for i in range(len(texts))]
    assert all(before <= m.at_s <= after for m in notices.messages)
    assert [m.at_s for m in notices.messages] == sorted(m.at_s for m in notices.messages)
    assert re.fullmatch(r"\d\d:\d\d:\d\d", notices.messages[-1].clock())


def test_taking_the_notices_keeps_the_messages() -> None:
    """The status bar drains the queue once a frame; the log is not drained with it."""
    notices = Notices()
    notices.say("first")
    assert [n.text for n in notices.take() if isinstance(n, Said)] == ["first"]
    notices.say("second")
    notices.take()
    assert [m.text for m in notices.messages] == ["first", "second"]


def test_since_gives_only_the_messages_a_reader_has_not_seen() -> None:
    notices = Notices()
    notices.say("a")
    seen = notices.n_said
    notices.say("b")
    notices.say("c")
    assert [m.text for m in notices.since(seen)] == ["b", "c"]
    assert notices.since(notices.n_said) == []


def test_past_the_cap_the_oldest_go(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(notices_module, "MAX_MESSAGES", 5)
    notices = Notices()
    for i in range(8):
        notices.say(str(i))
    assert [m.text for m in notices.messages] == ["3", "4", "5", "6", "7"]
    assert notices.n_said == 8
    assert [m.text for m in notices.since(0)] == ["3", "4", "5", "6", "7"]  # a reader from the start gets what is kept


def test_clock_is_local_hh_mm_ss() -> None:
    at = time.mktime((2026, 12, 8, 1, 2, 3, 0, 0, -1))
    assert Message("x", at_s=at).clock() == "01:02:03"


def test_counted_says_one_branch_and_two_branches() -> None:
    assert counted(1, "branch") == "1 branch"
    assert counted(2, "branch") == "2 branches"
    assert counted(1, "record") == "1 record"
    assert counted(0, "record") == "0 records"


# -- what opening a session says about its model ----------------------------------------------
@pytest.fixture(scope="module")
def entry(tmp_path_factory: pytest.TempPathFactory) -> ModelEntry:
    path = tiny_checkpoint(tmp_path_factory.mktemp("messages") / "tiny")
    return ModelEntry("tiny", path, path.with_name("meta.pkl"))


def until(ws: Workspace, condition: Callable[[], bool], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out; said: {[m.text for m in ws.notices.messages[-4:]]}"
        ws.update(0.01)
        ws.take_notices()
        time.sleep(0.002)


def opened_message(ws: Workspace, path: Path) -> str:
    assert ws.files.open(path)
    ws.wait_for_job()  # the recorded model's hash check, then its message
    return ws.notices.messages[-1].text


def test_opening_a_session_whose_model_is_loaded_says_nothing_about_load(entry: ModelEntry, tmp_path: Path) -> None:
    with Workspace(device="cpu") as ws:
        ws.runs.load_model(entry)
        until(ws, lambda: ws.model_info is not None)
        ws.runs.start(GenerationSettings(length=60, steps=4, seed=2))
        until(ws, lambda: ws.n_records() > 0 and not ws.is_running)
        path = tmp_path / "one.dpgviz"
        assert ws.files.save(path)
        ws.wait_for_job()
        said = opened_message(ws, path)
        assert "Load" not in said, said
        assert said == f"Opened {ws.n_records()} records in 1 branch. Its model ckpt.pt is loaded.", said

    with Workspace(device="cpu") as other:  # no model loaded: its model is picked, press Load
        said = opened_message(other, path)
        assert "in 1 branch." in said and "is picked: press Load" in said, said
