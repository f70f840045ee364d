"""Messages and layout in a real window (Xvfb): nothing is cut off at a panel's edge, View >
Messages shows every message whole, and the model panel keeps its place and says when the
model is gone.

Every check measures the real window: a text's size (dpg.get_text_size, or the item's own
rect) against the rect of what holds it, after frames were rendered. The scenario runs at the
default size and at a smaller viewport, each in a child pytest (Dear PyGui hosts one App per
process; see tests/test_gui_files.py): `test_messages_and_layout_in_its_own_process` starts
it with DPGVIZ_MESSAGES_SCENARIO=WxH, and the child runs the `test_scenario_*` steps in order.
Frames go under DPGVIZ_SHOTS (default: the child's tmp folder) for a person to look at.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from gui_frames import grab

HAS_DISPLAY = bool(os.environ.get("DISPLAY"))
SCENARIO_SIZE = os.environ.get("DPGVIZ_MESSAGES_SCENARIO", "")
LONG = ("Replacing 'abc' at 12:15 would shift every token after it and change the block layout, "
        "so mask it at a record of block 4, or replace it with text of the same length")
SLACK_PX = 1  # rounding of rects


@pytest.mark.gui
@pytest.mark.skipif(not HAS_DISPLAY or bool(SCENARIO_SIZE), reason="needs an X display (run under xvfb-run -a)")
@pytest.mark.parametrize("size", ["1600x1000", "1280x800"])
def test_messages_and_layout_in_its_own_process(size: str, tmp_path: Path) -> None:
    env = {**os.environ, "DPGVIZ_MESSAGES_SCENARIO": size}
    env.setdefault("DPGVIZ_SHOTS", str(tmp_path / "shots"))
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--basetemp", str(tmp_path / "t"),
           "-k", "scenario_", str(Path(__file__))]
    proc = subprocess.run(cmd, cwd=Path(__file__).parent.parent, capture_output=True, text=True, timeout=400, env=env)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert " passed" in proc.stdout and "skipped" not in proc.stdout, proc.stdout[-2000:]


scenario = pytest.mark.skipif(not (HAS_DISPLAY and SCENARIO_SIZE), reason="runs in the child process only")


@pytest.fixture(scope="module")
def state() -> dict:
    return {}


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory):
    from model_data import tiny_checkpoint

    from dpgviz.gui.app import App

    ckpt = tiny_checkpoint(tmp_path_factory.mktemp("models") / "tiny", block_size=256)
    width, height = (int(v) for v in SCENARIO_SIZE.split("x"))
    app = App(models_dir=str(ckpt.parent.parent), autoload=False, width=width, height=height).build()
    app.ckpt = ckpt
    for _ in range(3):
        app.frame()
    yield app
    app.close()


def run_until(app, condition: Callable[[], bool], timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out; status: {app.status.text!r}"
        assert app.frame(), "the window closed"
    for _ in range(3):  # laid out and drawn
        app.frame()


def ensure_model(app) -> None:
    import dearpygui.dearpygui as dpg

    ws = app.workspace
    if ws.model_info is None:
        assert app.settings.select_path(app.ckpt)
        dpg.get_item_callback(app.settings.load_button)()
        run_until(app, lambda: ws.model_info is not None and not ws.runs.is_loading)


def rect(item) -> tuple[float, float, float, float]:
    """(left, top, right, bottom) of an item in viewport pixels, as last drawn."""
    import dearpygui.dearpygui as dpg

    (x, y), (w, h) = dpg.get_item_rect_min(item), dpg.get_item_rect_size(item)
    return x, y, x + w, y + h


def window_rect(window) -> tuple[float, float, float, float]:
    import dearpygui.dearpygui as dpg

    (x, y), (w, h) = dpg.get_item_pos(window), dpg.get_item_rect_size(window)
    return x, y, x + w, y + h


def assert_inside(inner: tuple, outer: tuple, what: str) -> None:
    assert inner[0] >= outer[0] - SLACK_PX and inner[1] >= outer[1] - SLACK_PX, (what, inner, outer)
    assert inner[2] <= outer[2] + SLACK_PX and inner[3] <= outer[3] + SLACK_PX, (what, inner, outer)


def shot(app, name: str) -> None:
    folder = Path(os.environ["DPGVIZ_SHOTS"])
    folder.mkdir(parents=True, exist_ok=True)
    grab(app, folder / f"messages-{SCENARIO_SIZE}-{name}.png")


@scenario
def test_scenario_1_the_model_panel_keeps_its_place_and_says_when_the_model_is_gone(app, state) -> None:
    import signal

    import dearpygui.dearpygui as dpg

    ws, panel = app.workspace, app.settings
    top_before = rect(panel.temperature)[1]
    assert "no model loaded" in dpg.get_value(panel.model_info)
    assert panel.select_path(app.ckpt)
    dpg.get_item_callback(panel.load_button)()
    run_until(app, lambda: ws.model_info is not None and not ws.runs.is_loading)
    assert "on cpu (float32)" in dpg.get_value(panel.model_info)
    assert rect(panel.temperature)[1] == top_before  # the model's info took the room kept for it
    from dpgviz.core.settings import GenerationSettings

    panel.write(GenerationSettings(length=100, steps=4, seed=3))
    panel.start()
    run_until(app, lambda: ws.n_records() > 0 and not ws.is_running)
    assert dpg.get_item_configuration(app.edit_bar.restart_button)["enabled"]
    os.kill(ws.runs.source.pid, signal.SIGKILL)  # the worker dies: as a dropped link, no model now
    run_until(app, lambda: ws.model_info is None and ws.runs.restart_label() is not None)
    shot(app, "worker-died")
    info = dpg.get_value(panel.model_info)
    assert "no model loaded" in info and "cpu" not in info, info
    assert dpg.get_value(app.status.model) == "model: none"
    assert rect(panel.temperature)[1] == top_before
    assert not dpg.get_item_configuration(app.edit_bar.restart_button)["enabled"]  # nothing to restart with
    assert not dpg.get_item_configuration(panel.continue_button)["enabled"]
    dpg.get_item_callback(app.status.restart_button)()  # Restart worker: the model again, Restart again
    run_until(app, lambda: ws.model_info is not None and not ws.runs.is_loading)
    assert dpg.get_item_configuration(app.edit_bar.restart_button)["enabled"]
    assert "on cpu (float32)" in dpg.get_value(panel.model_info)


@scenario
def test_scenario_2_the_timeline_label_and_caption_are_not_cut(app, state) -> None:
    import dearpygui.dearpygui as dpg

    from dpgviz.core.settings import GenerationSettings

    ws, timeline = app.workspace, app.timeline
    ensure_model(app)
    app.settings.write(GenerationSettings(length=256, steps=3000, seed=3))
    app.settings.start()
    run_until(app, lambda: ws.n_records() >= 18)
    fmt = dpg.get_item_configuration(timeline.slider)["format"]
    assert "(run:" in fmt, fmt  # a live run: the label names the run's length too
    label = fmt % dpg.get_value(timeline.slider)
    left, _, right, _ = rect(timeline.slider)
    assert dpg.get_text_size(label)[0] <= right - left - 8, (label, right - left)  # inside the slider's frame
    shot(app, "timeline-running")
    ws.runs.stop()
    run_until(app, lambda: not ws.is_running)

    caption = timeline.caption
    assert caption.text.startswith("run ") and not caption.is_cut  # a short caption is shown whole
    assert rect(caption.item)[2] <= right + SLACK_PX
    ws.edits.rename_branch(ws.view.branch, "a branch renamed with a name far too long for the row " * 3)
    run_until(app, lambda: caption.text.startswith("a branch renamed"))
    shown = dpg.get_value(caption.item)
    assert caption.is_cut and shown.endswith("...") and caption.text.startswith(shown[:-3].rstrip()), shown
    assert rect(caption.item)[2] <= right + SLACK_PX  # it ends where the slider above ends
    assert dpg.get_value(caption.tip) == caption.text  # whole on hover
    shot(app, "timeline-long-caption")


@scenario
def test_scenario_3_help_rows_connect_text_and_the_hole_button_fit(app, state) -> None:
    import dearpygui.dearpygui as dpg

    dpg.get_item_callback(help_menu_item(app))()  # Help > Keyboard and mouse...
    run_until(app, lambda: dpg.is_item_shown(app.help_window))
    text = dpg.get_item_children(app.help_window, 1)[0]
    assert_inside(rect(text), window_rect(app.help_window), "Help > Keyboard and mouse rows")
    width = dpg.get_text_size(dpg.get_value(text), font=app.fonts.mono)[0]
    assert rect(text)[2] - rect(text)[0] >= width - SLACK_PX  # the rect measured is the whole text's
    shot(app, "help")
    dpg.hide_item(app.help_window)

    app.connect.show()
    dpg.set_value(app.connect.message, "Cannot connect: see the status bar. Fix it, or use the local model.")
    run_until(app, lambda: app.connect.is_shown)
    window = window_rect(app.connect.window)
    for item in (app.connect.help, app.connect.message):
        assert_inside(rect(item), window, dpg.get_value(item))
    shot(app, "connect")
    dpg.hide_item(app.connect.window)

    ws, bar = app.workspace, app.edit_bar  # the edit bar: Restart inside the canvas panel, the readout gives way
    if ws.n_records() == 0:  # this step alone (pytest -k): a short run to edit
        from dpgviz.core.settings import GenerationSettings

        ensure_model(app)
        app.settings.write(GenerationSettings(length=256, steps=4, seed=3))
        app.settings.start()
        run_until(app, lambda: ws.n_records() > 0 and not ws.is_running)
    ws.view.select_tokens(12)
    ws.view.select_tokens(131, extend=True)
    ws.edits.edit("mask")  # a draft: the readout's longest ('12:132 (120) | edit not run yet')
    run_until(app, lambda: "not run yet" in bar.readout.text)
    panel = bar.parent
    right = dpg.get_item_pos(panel)[0] + dpg.get_item_rect_size(panel)[0]
    assert rect(bar.restart_button)[2] <= right, (rect(bar.restart_button), right)
    assert rect(bar.readout.item)[2] <= rect(bar.buttons["mask"])[0]
    shown = dpg.get_value(bar.readout.item)
    assert shown == bar.readout.text or (shown.endswith("...") and bar.readout.text.startswith(shown[:-3].rstrip()))
    shot(app, "edit-bar")

    hole = hole_button(app)
    label_w = dpg.get_text_size(dpg.get_item_label(hole))[0]
    left, _, right, _ = rect(hole)
    assert right - left >= label_w + 2 * 6, (right - left, label_w)  # the label and the theme's FramePadding (6) each side


@scenario
def test_scenario_4_messages_whole_on_hover_and_in_view_messages(app, state) -> None:
    import dearpygui.dearpygui as dpg

    for i in range(60):  # more than the list shows at once: it must scroll to the newest
        app.workspace.say(f"message {i}")
    app.workspace.say(LONG, is_error=True)
    run_until(app, lambda: app.status.text == LONG)
    shown = dpg.get_value(app.status.message)
    assert rect(app.status.message)[2] <= dpg.get_viewport_client_width()  # not past the window's edge
    if shown != LONG:  # cut at the edge: '...', and the whole text on hover
        assert shown.endswith("...") and LONG.startswith(shown[:-3].rstrip()), shown
    assert dpg.get_value(app.status._message.tip) == LONG

    dpg.get_item_callback(view_menu_item(app, "Messages..."))()
    messages = app.status.messages
    run_until(app, lambda: dpg.is_item_shown(messages.window))
    shot(app, "view-messages")
    last = messages.lines[-1]
    value = dpg.get_value(last)
    assert value.endswith("  " + LONG) and value[:8].count(":") == 2, value  # HH:MM:SS, then the whole text
    assert len(messages.lines) == len(app.workspace.notices.messages)  # every message since start
    (wx, wy), (cx, cy) = dpg.get_item_pos(messages.window), dpg.get_item_pos(messages.list)  # a child window's pos
    cw, ch = dpg.get_item_rect_size(messages.list)  # is its window's; it has no rect_min
    assert_inside(rect(last), (wx + cx, wy + cy, wx + cx + cw, wy + cy + ch), "the newest message")  # wrapped, scrolled to
    one_line = dpg.get_text_size("Hg")[1]
    assert rect(last)[3] - rect(last)[1] > 1.5 * one_line  # the long one wraps onto more lines
    assert LONG in messages.as_text()
    dpg.hide_item(messages.window)


def help_menu_item(app):
    return menu_item(app, "Help", "Keyboard and mouse...")


def view_menu_item(app, label: str):
    return menu_item(app, "View", label)


def menu_item(app, menu_label: str, label: str):
    import dearpygui.dearpygui as dpg

    bar = dpg.get_item_children(app.window, 1)[0]
    menu = next(m for m in dpg.get_item_children(bar, 1) if dpg.get_item_label(m) == menu_label)
    return next(i for i in dpg.get_item_children(menu, 1) if dpg.get_item_label(i) == label)


def hole_button(app):
    import dearpygui.dearpygui as dpg

    from dpgviz.core.vocab import MASK_GLYPH

    def walk(item):
        for slot in (1,):
            for child in dpg.get_item_children(item, slot) or []:
                yield child
                yield from walk(child)

    return next(i for i in walk(app.window) if dpg.get_item_type(i).endswith("mvButton")
                and dpg.get_item_label(i) == f"+{MASK_GLYPH}")


@scenario
def test_scenario_5_the_steps_hint_shows_beside_the_slider_not_over_the_length_row(app, state) -> None:
    """The real pointer over the steps slider (xdotool moves it; Dear PyGui reads the X server's)."""
    import shutil

    import dearpygui.dearpygui as dpg

    if shutil.which("xdotool") is None:
        pytest.skip("needs xdotool to move the pointer")
    panel = app.settings
    window = subprocess.run(["xdotool", "search", "--name", "^dpgviz"], capture_output=True, text=True).stdout.split()
    assert window, "no dpgviz window found"

    def point_at(x: float, y: float) -> None:
        subprocess.run(["xdotool", "mousemove", "--window", window[0], str(int(x)), str(int(y))], check=True)

    left, top, right, bottom = rect(panel.steps)
    point_at((left + right) / 2, (top + bottom) / 2)
    run_until(app, lambda: dpg.is_item_shown(panel.steps_hint), timeout_s=10)
    hint = window_rect(panel.steps_hint)
    for item in (panel.steps, panel.length, panel.length_slider, panel.temperature):  # nothing of the panel covered
        a = rect(item)
        overlap = min(a[2], hint[2]) - max(a[0], hint[0]) > 0 and min(a[3], hint[3]) - max(a[1], hint[1]) > 0
        assert not overlap, (dpg.get_item_label(item), a, hint)
    assert hint[0] >= right and top - 10 <= hint[1] <= bottom  # beside the slider, on its row
    shot(app, "steps-hint")
    point_at(5, dpg.get_viewport_client_height() - 5)
    run_until(app, lambda: not dpg.is_item_shown(panel.steps_hint), timeout_s=10)
