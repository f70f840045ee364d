"""The real window driven by real X input (xdotool on a private Xvfb with a window manager):
what only a real key press or a real kill shows.

- Enter typed in a settings box ends the edit there and never fires the Replace shortcut.
- SIGKILL of the window process mid-run, a restart and Recover bring back every record
  received over a second before the kill, and the branches.

Coordinates are the window's client pixels of today's layout (settings panel on the left,
the recovery prompt centred); a miss fails the positive checks, never passes silently.
"""

from __future__ import annotations

import datetime
import os
import re
import time
from pathlib import Path

import pytest

from dpgviz.bench.soak import RealWindow, missing_tools
from dpgviz.store.journal import find_recovery

pytestmark = [
    pytest.mark.gui,
    pytest.mark.slow,
    pytest.mark.skipif(bool(missing_tools()), reason=f"needs {', '.join(missing_tools())} (Debian: xvfb openbox xdotool wmctrl)"),
]

LENGTH_BOX = (154, 323)  # the settings panel's length number box
RECOVER_BUTTON = (506, 355)  # the recovery prompt's Recover
FILE_MENU = (22, -9)  # the menu bar lies above the origin RealWindow reads from xdotool
REOPEN_ITEM = (80, 39)  # File > Reopen unsaved work of the last window, under Open...
APP = ["--device", "cpu"]


def test_enter_in_a_settings_box_stays_there_and_never_fires_replace(tmp_path: Path) -> None:
    with RealWindow(APP, cache_dir=tmp_path / "cache", workdir=tmp_path) as window:
        assert window.wait_log("Loaded", 90), window.log_text
        window.click(*LENGTH_BOX)
        window.key("ctrl+a")
        window.type("300")
        window.key("Return")
        time.sleep(1.0)
        window.key("ctrl+Return")  # Start: the run's length says the box took what was typed
        assert window.wait_log("Generating 300 tokens", 30), window.log_text
        assert "Type the replacement" not in window.log_text  # the shortcut stayed quiet
        assert window.wait_log("Done:", 120), window.log_text
        assert window.close() == 0


def test_a_killed_window_offers_its_records_back_and_a_closed_one_keeps_them_to_reopen(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with RealWindow(APP, cache_dir=cache, workdir=tmp_path) as window:
        assert window.wait_log("Loaded", 90), window.log_text
        window.key("ctrl+Return")  # run 1: the panel's defaults, to the end
        assert window.wait_log("Done:", 120), window.log_text
        first = int(re.findall(r"Done: (\d+) records", window.log_text)[-1])
        mark = len(window.log_text)
        window.key("ctrl+Return")  # run 2: a second root branch, killed while its records arrive
        assert window.wait_log("Generating", 30, after=mark)
        time.sleep(2.5)
        window.kill()

        info = find_recovery(cache / "recovery.dpgjournal")
        assert info is not None and info.n_branches == 2 and info.n_records > first, info
        window.start()  # the next start finds the journal and asks
        time.sleep(4.0)
        window.screenshot(tmp_path / "recover-prompt.png")
        window.click(*RECOVER_BUTTON)
        assert window.wait_log("Recovered", 30), window.log_text
        said = re.findall(r"Recovered (\d+) records? in (\d+) branch(?:es)?", window.log_text)[-1]
        assert int(said[0]) == info.n_records and int(said[1]) == 2
        assert window.close() == 0
        assert not (cache / "recovery.dpgjournal").exists()  # a normal close: nothing is offered at start ...
        kept = find_recovery(cache / "recovery-closed.dpgjournal")  # ... and the unsaved work is kept aside
        assert kept is not None and (kept.n_records, kept.n_branches) == (info.n_records, 2)

        mark = len(window.log_text)
        window.start()
        assert window.wait_log("Loaded", 90, after=mark), window.log_text
        window.click(*FILE_MENU)
        time.sleep(1.0)
        window.screenshot(tmp_path / "file-menu.png")
        window.click(*REOPEN_ITEM)
        assert window.wait_log("Reopened", 30, after=mark), window.log_text
        said = re.findall(r"Reopened (\d+) unsaved records? in (\d+) branch(?:es)?", window.log_text)[-1]
        assert int(said[0]) == info.n_records and int(said[1]) == 2
        assert window.close() == 0


# -- dialogs, the Prompt box, Connect and Reopen (issue 29) -----------------------------------------
PROMPT_BOX = (149, 767)  # the settings panel's Prompt box
HELP_MENU = (176, -9)
HELP_KEYS_ITEM = (216, 18)  # Help > Keyboard and mouse...
CONNECT_ITEM = (74, 129)  # File > Connect to worker...
CONNECT_WHERE, CONNECT_KEY = (412, 267), (412, 296)  # the Connect window's two boxes
CONNECT_BUTTON, LOCAL_BUTTON = (296, 325), (533, 325)  # its Connect and Use the local model
# Parts of the settings panel (still during a run) that a dialog covers: only the Keyboard and mouse
# window, and a part the Connect window covers (the Keyboard and mouse window too, when both are open).
MENU_S = 2.0  # a menu or window opens a frame or two after the click: slow frames while a run draws
HELP_ONLY = (205, 387, 235, 571)  # (x0, y0, x1, y1) client pixels
UNDER_CONNECT = (245, 168, 290, 364)


def shots_dir(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("DPGVIZ_SHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def region(window: RealWindow, path: Path, box: tuple[int, int, int, int]):
    """The pixels (H, W, 3) of client box (x0, y0, x1, y1) in a screenshot of the whole screen, saved at `path`."""
    import numpy as np
    from PIL import Image

    assert window.screenshot(path) is not None, "no screenshot"
    x0, y0, x1, y1 = box
    ox, oy = window.origin
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB").crop((ox + x0, oy + y0, ox + x1, oy + y1))).astype(int)


def is_same(a, b) -> bool:
    """Two regions look the same (mean difference under 3 levels: the same widgets, same text)."""
    return float(abs(a - b).mean()) < 3.0


def set_length(window: RealWindow, length: int) -> None:
    window.click(*LENGTH_BOX)
    window.key("ctrl+a")
    window.type(str(length))
    window.key("Return")
    time.sleep(0.5)


def test_ctrl_enter_in_the_prompt_box_starts_the_run_and_adds_no_newline(tmp_path: Path) -> None:
    from dpgviz.store.journal import recover

    cache = tmp_path / "cache"
    with RealWindow(APP, cache_dir=cache, workdir=tmp_path) as window:
        assert window.wait_log("Loaded", 90), window.log_text
        set_length(window, 200)
        window.click(*PROMPT_BOX)
        time.sleep(1.0)
        window.type("ROMEO:")
        time.sleep(1.0)
        window.screenshot(shots_dir(tmp_path) / "prompt-typed.png")
        window.key("ctrl+Return")  # in the box: Start, not a new line
        assert window.wait_log("Generating", 30), window.log_text
        assert window.wait_log("Done:", 120), window.log_text
        window.screenshot(shots_dir(tmp_path) / "prompt-ctrl-enter.png")
        assert window.close() == 0
    with recover(cache / "recovery-closed.dpgjournal") as kept:  # the run's own settings, as the window kept them
        prompts = [b.settings.get("prompt") for b in kept.store.branches.values()]
    assert prompts == ["ROMEO:"], prompts


def test_escape_closes_the_dialogs_first_and_the_run_goes_on(tmp_path: Path) -> None:
    shots = shots_dir(tmp_path)
    with RealWindow(APP, cache_dir=tmp_path / "cache", workdir=tmp_path) as window:
        assert window.wait_log("Loaded", 90), window.log_text
        set_length(window, 4096)  # in blocks: a run long enough to open and close two dialogs during it
        mark = len(window.log_text)
        window.key("ctrl+Return")
        assert window.wait_log("Generating", 30, after=mark), window.log_text
        page_help = region(window, shots / "escape-0-run.png", HELP_ONLY)
        page_connect = region(window, shots / "escape-0-run.png", UNDER_CONNECT)
        window.click(*FILE_MENU)
        time.sleep(MENU_S)
        window.click(*CONNECT_ITEM)
        time.sleep(MENU_S)
        connect = region(window, shots / "escape-1-connect.png", UNDER_CONNECT)
        assert not is_same(connect, page_connect), "the Connect window did not open"
        window.click(*HELP_MENU)
        time.sleep(MENU_S)
        window.click(*HELP_KEYS_ITEM)  # Keyboard and mouse opens over it, and has the focus
        time.sleep(MENU_S)
        assert not is_same(region(window, shots / "escape-2-both-dialogs.png", HELP_ONLY), page_help)
        window.key("Escape")  # closes Keyboard and mouse (the focused one)
        time.sleep(1.0)
        assert is_same(region(window, shots / "escape-3-help-closed.png", HELP_ONLY), page_help)
        assert is_same(region(window, shots / "escape-3-help-closed.png", UNDER_CONNECT), connect)  # still open
        window.key("Escape")  # closes Connect
        time.sleep(1.0)
        assert is_same(region(window, shots / "escape-4-connect-closed.png", UNDER_CONNECT), page_connect)
        text = window.log_text[mark:]
        assert "Done:" not in text, "the run ended before the dialogs were closed: make it longer"
        assert "Stopped" not in text, text  # the run went on behind the dialogs
        window.key("Escape")  # no dialog open: now Escape stops the run
        assert window.wait_log("Stopped after", 30, after=mark), window.log_text
        assert window.close() == 0


def test_a_refused_connect_says_so_in_seconds_and_the_local_model_comes_back(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:  # a port nothing listens on (bound, then closed)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    shots = shots_dir(tmp_path)
    with RealWindow(APP, cache_dir=tmp_path / "cache", workdir=tmp_path) as window:
        assert window.wait_log("Loaded", 90), window.log_text
        set_length(window, 200)
        window.click(*FILE_MENU)
        time.sleep(0.7)
        window.click(*CONNECT_ITEM)
        time.sleep(1.0)
        window.click(*CONNECT_WHERE)
        window.type(f"127.0.0.1:{port}")
        window.click(*CONNECT_KEY)
        window.type("0123456789abcdef")
        mark = len(window.log_text)
        window.click(*CONNECT_BUTTON)
        t0 = time.monotonic()
        assert window.wait_log("nothing answers", 20, after=mark), window.log_text[mark:]
        click_s = time.monotonic() - t0
        # The window's own time, Connect pressed ('Connecting to ...') to the refusal, from its log's
        # clock: the click's own way through a loaded machine's slow frames is not the app's to spend.
        stamps = {
            what: datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f")
            for what, m in (
                ("connecting", re.search(r"^(\S+ \S+) .*Connecting to 127\.0\.0\.1", window.log_text[mark:], re.M)),
                ("refused", re.search(r"^(\S+ \S+) .*nothing answers", window.log_text[mark:], re.M)),
            )
        }
        refused_s = (stamps["refused"] - stamps["connecting"]).total_seconds()
        print(f"refused {refused_s:.2f} s after Connect was pressed ({click_s:.2f} s after the click, log polled every 0.1 s)")
        assert refused_s < 5.0, refused_s  # the timeout was 10.4 s; the goal is 2 s (bounded loosely: a loaded machine)
        time.sleep(1.0)
        window.screenshot(shots / "connect-refused.png")  # the Connect window says it, beside Use the local model
        mark = len(window.log_text)
        window.click(*LOCAL_BUTTON)
        assert window.wait_log("Loaded shakespeare-char", 90, after=mark), window.log_text[mark:]
        time.sleep(0.5)
        window.key("ctrl+Return")
        assert window.wait_log("Done:", 120, after=mark), window.log_text[mark:]
        window.screenshot(shots / "connect-local-again.png")
        assert window.close() == 0


def test_reopen_beside_a_new_run_then_close_and_start_keeps_every_branch(tmp_path: Path) -> None:
    from dpgviz.store.journal import recover

    cache, shots = tmp_path / "cache", shots_dir(tmp_path)
    closed = cache / "recovery-closed.dpgjournal"
    with RealWindow(APP, cache_dir=cache, workdir=tmp_path) as window:
        assert window.wait_log("Loaded", 90), window.log_text
        set_length(window, 200)
        window.key("ctrl+Return")  # the last window's run, closed without saving
        assert window.wait_log("Done:", 120), window.log_text
        assert window.close() == 0
        first = find_recovery(closed)
        assert first is not None and first.n_branches == 1

        mark = len(window.log_text)
        window.start()
        assert window.wait_log("Loaded", 90, after=mark), window.log_text
        set_length(window, 200)
        window.key("ctrl+Return")  # this window's own run, unsaved
        assert window.wait_log("Done:", 120, after=mark), window.log_text
        own = int(re.findall(r"Done: (\d+) records", window.log_text[mark:])[-1])
        window.click(*FILE_MENU)
        time.sleep(1.0)
        window.click(*REOPEN_ITEM)
        assert window.wait_log("Reopened", 30, after=mark), window.log_text
        time.sleep(1.0)
        window.screenshot(shots / "reopen-beside-own-run.png")
        assert window.close() == 0
        both = find_recovery(closed)  # the close kept this window's run and the reopened one
        assert both is not None and (both.n_branches, both.n_records) == (2, first.n_records + own), (both, first, own)

        mark = len(window.log_text)
        window.start()
        assert window.wait_log("Loaded", 90, after=mark), window.log_text
        window.click(*FILE_MENU)
        time.sleep(1.0)
        window.click(*REOPEN_ITEM)
        assert window.wait_log("Reopened", 30, after=mark), window.log_text
        said = re.findall(r"Reopened (\d+) unsaved records? in (\d+) branch(?:es)?", window.log_text[mark:])[-1]
        assert (int(said[0]), int(said[1])) == (first.n_records + own, 2)
        time.sleep(1.0)
        window.screenshot(shots / "reopen-next-start.png")
        assert window.close() == 0
    with recover(closed) as kept:  # every record of every branch reachable
        store = kept.store
        assert sum(len(store.history(b)) for b in store.branch_order) == first.n_records + own


def test_ctrl_f_during_a_long_run_always_opens_find_with_the_keyboard_in_its_box(tmp_path: Path) -> None:
    """Ctrl+F, the query typed at once, Enter, Escape, and Ctrl+F then Enter at once: four times
    while a run draws (slow frames). Each Enter searches what the find box holds (its notice names
    it; a key or two typed in the frames before the box takes the keyboard may be lost) and never
    opens Replace; each Escape closes the bar, not the run."""
    tries = 4
    with RealWindow(APP, cache_dir=tmp_path / "cache", workdir=tmp_path) as window:
        assert window.wait_log("Loaded", 90), window.log_text
        set_length(window, 4096)  # in blocks: frames stay slow while it runs
        mark = len(window.log_text)
        window.key("ctrl+Return")
        assert window.wait_log("Generating", 30, after=mark), window.log_text
        time.sleep(2.0)
        for _ in range(tries):
            window.key("ctrl+f")
            window.type("the")  # at once, as a user does: the box may not have the keyboard yet
            window.key("Return")
            time.sleep(1.0)
            window.key("Escape")
            time.sleep(1.0)
            window.key("ctrl+f", "Return")  # Enter before the box can have the keyboard: the next match
            time.sleep(1.0)
            window.key("Escape")
            time.sleep(1.0)
        window.screenshot(shots_dir(tmp_path) / "ctrl-f-after.png")
        text = window.log_text[mark:]
        assert "Done:" not in text, "the run ended before the tries: make it longer"
        assert "Type the replacement" not in text and "Stopped" not in text, text
        searched = re.findall(r"Find:? (?:no )?'(\w*)'", text)  # 'Find 'the': match k of N' or 'Find: no 'the' ...'
        assert len(searched) == 2 * tries and all(q and "the".endswith(q) for q in searched), text
        assert window.close() == 0
