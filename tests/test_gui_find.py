"""Find (Ctrl+F) and Go to (Ctrl+G) in the real window, driven by real X key presses (xdotool on a
private Xvfb with a window manager, bench.soak.RealWindow): the keys reach the find box and its
Enter / Shift+Enter / F3 / Escape, the canvas tints the matches, scrubbing re-searches the
record shown, and Go to selects a position and refuses one past the end.

The window opens a saved session (`main.py open FILE`, no model) whose text is English
(bench.find.text_store), so a query matches where the text says. What the app did is read
from its log file (every notice is logged) and from screenshots of the screen: the current
match's tint, the canvas's orange over a settled cell, is counted in pixels. Screenshots go
to DPGVIZ_SHOTS when set (to look at), else the test's tmp folder.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from dpgviz.bench.find import PASSAGE, text_store
from dpgviz.bench.soak import RealWindow, missing_tools
from dpgviz.bench.synthetic import synthetic_vocab
from dpgviz.core import palette as shared
from dpgviz.gui import palette

pytestmark = [
    pytest.mark.gui,
    pytest.mark.skipif(bool(missing_tools()), reason=f"needs {', '.join(missing_tools())} (Debian: xvfb openbox xdotool wmctrl)"),
]

OPEN_S = 0.8  # after Ctrl+F / Ctrl+G: the box takes the keyboard a frame or two later (frames are slow under load)
LENGTH = 16384  # more rows than the canvas shows at once: Go to has to scroll
GOTO = 12000
CANVAS = (760, 500)  # a point on the canvas in the window's client pixels (today's layout, 1440 x 900)
AWAY = (1300, 12)  # the menu bar's empty end: the mouse parked off the canvas (no tooltip over the cells)


def blend(rgba: tuple[int, int, int, int], under: np.ndarray) -> np.ndarray:
    """An overlay colour drawn over a cell colour, as the renderer blends it."""
    a = rgba[3] / 255.0
    return np.asarray(rgba[:3]) * a + under.astype(float) * (1 - a)


VISIBLE = shared.STATE_RGB[shared.STATE_NAMES.index("visible")]
CURRENT_OVER_VISIBLE = blend(palette.OVERLAY_RGBA["match_current"], VISIBLE)
SELECTED_OVER_VISIBLE = blend(palette.OVERLAY_RGBA["selected"], VISIBLE)
RING = np.asarray(palette.SELECTION_OUTLINE[1][:3])  # the bright ring around a selection within one row


def tinted_pixels(path: Path | None, rgb: np.ndarray = CURRENT_OVER_VISIBLE, k: int = 3) -> int:
    """Solid k x k squares of colour `rgb` in the screenshot (a tinted cell's background; text's
    anti-aliased edges make no such square), by default the current match's tint over a settled
    cell. -1: no screenshot."""
    if path is None or not path.exists():
        return -1
    from PIL import Image

    with Image.open(path) as im:
        pixels = np.asarray(im.convert("RGB")).astype(int)
    is_rgb = (np.abs(pixels - rgb).max(axis=-1) <= 3).astype(np.int64)
    sums = np.pad(is_rgb.cumsum(0).cumsum(1), ((1, 0), (1, 0)))  # (H+1, W+1) summed-area table
    squares = sums[k:, k:] - sums[:-k, k:] - sums[k:, :-k] + sums[:-k, :-k]
    return int((squares == k * k).sum())


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("DPGVIZ_SHOTS") or tmp_path / "shots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_find_and_go_to_through_real_keys(tmp_path: Path, shots: Path) -> None:
    from dpgviz.store.session_save import save_session

    vocab = synthetic_vocab()
    session = save_session(tmp_path / "prologue.dpgviz", text_store(LENGTH, 6, vocab=vocab), vocab)
    text = "".join(np.resize(list(PASSAGE), LENGTH))  # the last record's text: the passage, no masks
    n_verona = text.count("Verona")
    with RealWindow(["open", str(session)], cache_dir=tmp_path / "cache", workdir=tmp_path) as window:
        assert window.wait_log("Opened", 30), window.log_text
        time.sleep(0.5)
        before = tinted_pixels(window.screenshot(shots / "find-0-before.png"))

        window.key("ctrl+f")
        time.sleep(OPEN_S)
        window.type("Verona")  # typed into the find box: the first match is current
        time.sleep(0.5)
        mark = len(window.log_text)
        window.key("Return")  # Enter in the box: the next match (the app's Enter shortcut stays quiet)
        assert window.wait_log(f"Find 'Verona': match 2 of {n_verona}, position {text.index('Verona', 100)}", 10,
                               after=mark), window.log_text[mark:]
        window.key("Return")  # the box took the keyboard back: Enter again goes on
        assert window.wait_log(f"match 3 of {n_verona}", 10, after=mark), window.log_text[mark:]
        back = len(window.log_text)
        window.key("shift+Return")
        assert window.wait_log(f"match 2 of {n_verona}", 10, after=back), window.log_text[mark:]
        window.key("F3", "F3")
        assert window.wait_log(f"match 4 of {n_verona}", 10, after=mark), window.log_text[mark:]
        time.sleep(0.5)
        found = tinted_pixels(window.screenshot(shots / "find-1-matches.png"))
        assert "Type the replacement" not in window.log_text  # Enter never reached the edit bar's shortcut

        window.click(*CANVAS)  # the canvas has the keyboard now: scrub to the first record (all masked)
        window.key("Home")
        mark = len(window.log_text)
        window.key("F3")  # re-searched: no text there yet
        assert window.wait_log("Find: no 'Verona' in the text shown", 10, after=mark), window.log_text[mark:]
        window.key("End")
        mark = len(window.log_text)
        window.key("shift+F3")
        assert window.wait_log(f"of {n_verona}, position", 10, after=mark), window.log_text[mark:]

        window.key("ctrl+f")  # back in the box: Escape there closes the bar and ends the search
        time.sleep(OPEN_S)
        window.key("Escape")
        time.sleep(0.5)
        closed = tinted_pixels(window.screenshot(shots / "find-2-closed.png"))
        mark = len(window.log_text)
        window.key("F3")
        assert window.wait_log("type what to look for first", 10, after=mark), window.log_text[mark:]

        window.xdotool("mousemove", str(window.origin[0] + AWAY[0]), str(window.origin[1] + AWAY[1]))
        window.key("Escape")  # the canvas's selection cleared: only Go to's is tinted from here
        window.key("ctrl+g")
        time.sleep(OPEN_S)
        window.type(str(GOTO))
        time.sleep(0.6)  # the last digit drawn before the screenshot
        unselected = tinted_pixels(window.screenshot(shots / "goto-0-typed.png"), SELECTED_OVER_VISIBLE)
        unringed = tinted_pixels(shots / "goto-0-typed.png", RING, k=2)
        mark = len(window.log_text)
        window.key("Return")
        assert window.wait_log(f"Go to: position {GOTO} selected.", 10, after=mark), window.log_text[mark:]
        time.sleep(0.5)
        selected = tinted_pixels(window.screenshot(shots / "goto-1-selected.png"), SELECTED_OVER_VISIBLE)
        ringed = tinted_pixels(shots / "goto-1-selected.png", RING, k=2)
        window.key("ctrl+g")
        time.sleep(OPEN_S)
        window.type(str(LENGTH))
        mark = len(window.log_text)
        window.key("Return")
        assert window.wait_log(f"Position {LENGTH} is outside the sequence shown: positions are 0..{LENGTH - 1}.",
                               10, after=mark), window.log_text[mark:]
        window.key("Escape")
        time.sleep(0.3)
        assert window.close() == 0
    assert "Traceback" not in (tmp_path / "app.log").read_text(errors="replace")
    if before >= 0:  # screenshots need xwd and ImageMagick
        assert before == 0 and found > 20 and closed == 0, (before, found, closed)
        # Scrolled to it: its cell is tinted and ringed on screen (the ring shows on any cell colour).
        assert unselected == unringed == 0 and selected > 0 and ringed > 10, (unselected, unringed, selected, ringed)
