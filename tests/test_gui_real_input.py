"""The real window driven by real X input (xdotool on a private Xvfb with a window manager):
what only a real key press or a real kill shows.

- Enter typed in a settings box ends the edit there and never fires the Replace shortcut.
- SIGKILL of the window process mid-run, a restart and Recover bring back every record
  received over a second before the kill, and the branches.

Coordinates are the window's client pixels of today's layout (settings panel on the left,
the recovery prompt centred); a miss fails the positive checks, never passes silently.
"""

from __future__ import annotations

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
        said = re.findall(r"Recovered (\d+) records in (\d+) branches", window.log_text)[-1]
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
        said = re.findall(r"Reopened (\d+) unsaved records in (\d+) branches", window.log_text)[-1]
        assert int(said[0]) == info.n_records and int(said[1]) == 2
        assert window.close() == 0
