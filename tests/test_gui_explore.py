"""The model explorer in a real window (Xvfb): a single sample on two models, hover, a small
batch with its table, plot and CSV, and Generate from here.

Dear PyGui hosts one App per process (see test_gui_files.py), so the scenario runs in a
child pytest started by `test_explorer_in_its_own_process`; the child sees
DPGVIZ_EXPLORE_SCENARIO=1 and runs the `test_scenario_*` steps in order, one App for all.
Frames are saved under DPGVIZ_SHOTS (default: the child's tmp folder) for a person to look at.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from gui_frames import grab

HAS_DISPLAY = bool(os.environ.get("DISPLAY"))
IN_SCENARIO = os.environ.get("DPGVIZ_EXPLORE_SCENARIO") == "1"
TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
        "First Citizen:\nYou are all resolved rather to die than to famish?\n\n") * 30


@pytest.mark.gui
@pytest.mark.skipif(not HAS_DISPLAY or IN_SCENARIO, reason="needs an X display (run under xvfb-run -a)")
def test_explorer_in_its_own_process(tmp_path: Path) -> None:
    env = {**os.environ, "DPGVIZ_EXPLORE_SCENARIO": "1"}
    env.setdefault("DPGVIZ_SHOTS", str(tmp_path / "shots"))
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--basetemp", str(tmp_path / "t"),
           "-k", "scenario_", str(Path(__file__))]
    proc = subprocess.run(cmd, cwd=Path(__file__).parent.parent, capture_output=True, text=True, timeout=400, env=env)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert " passed" in proc.stdout and "skipped" not in proc.stdout, proc.stdout[-2000:]


scenario = pytest.mark.skipif(not (HAS_DISPLAY and IN_SCENARIO), reason="runs in the child process only")


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory):
    from model_data import tiny_checkpoint

    from dpgviz.core.discovery import ModelEntry
    from dpgviz.gui.app import App

    ckpt = tiny_checkpoint(tmp_path_factory.mktemp("models") / "tiny")
    (ckpt.parent / "input.txt").write_text(TEXT, encoding="utf-8")  # the nanoGPT layout: beside meta.pkl
    app = App(models_dir=str(ckpt.parent.parent), autoload=False, width=1500, height=940).build()
    app.frame()
    app.workspace.runs.load_model(ModelEntry("tiny", ckpt, ckpt.with_name("meta.pkl")))
    run_until(app, lambda: app.workspace.model_info is not None)
    yield app
    app.close()


def run_until(app, condition: Callable[[], bool], timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out; status: {app.status.text!r}"
        assert app.frame(), "the window closed"
    app.frame()


def region(app, frame: np.ndarray, item: int | str) -> np.ndarray:
    import dearpygui.dearpygui as dpg

    (x, y), (w, h) = dpg.get_item_rect_min(item), dpg.get_item_rect_size(item)
    return frame[int(y) : int(y + h), int(x) : int(x + w)]


def has_ink(pixels: np.ndarray, rgb: tuple[int, ...], tol: int = 40) -> bool:
    """Anti-aliased glyphs: some pixels near the ink's colour."""
    return bool((np.abs(pixels.astype(int) - np.array(rgb[:3])).max(axis=-1) <= tol).sum() > 20)


@scenario
def test_scenario_1_single_sample_on_two_models(app, shots: Path, tmp_path: Path) -> None:
    import dearpygui.dearpygui as dpg

    from dpgviz.gui.explorer_views import INKS

    ex = app.explorer
    ex.show()
    run_until(app, lambda: ex.is_shown)
    assert app.workspace.explore.source_name.endswith("input.txt")  # the model's corpus, found by itself
    picked = tmp_path / "picked.txt"
    picked.write_text("To be, or not to be: that is the question.\n" * 20, encoding="utf-8")
    ex._on_source_picked(ex.w["source_dialog"], {"file_path_name": str(picked)})  # the Browse dialog's pick
    run_until(app, lambda: app.workspace.explore.source_name.endswith("picked.txt"))
    ex.use_model_corpus()
    run_until(app, lambda: app.workspace.explore.source_name.endswith("input.txt"))
    boxes = dict(zip([e.name for e in ex.entries], ex.model_boxes, strict=True))
    assert dpg.get_value(boxes["tiny/ckpt.pt"] if "tiny/ckpt.pt" in boxes else ex.model_boxes[-1])
    dpg.set_value(ex.model_boxes[0], True)  # the embedded default model beside it
    dpg.set_value(ex.w["length"], 120)
    dpg.set_value(ex.w["strategy"], "mix")
    dpg.set_value(ex.w["ratio"], 0.4)
    dpg.set_value(ex.w["random_offset"], False)
    dpg.set_value(ex.w["offset"], 7)
    dpg.get_item_callback(ex.w["run_sample"])()
    run_until(app, lambda: app.workspace.explore.sample is not None and app.workspace.explore.sample.is_done)
    sample = app.workspace.explore.sample
    assert len(sample.names) == 2 and sample.offset == 7 and int(sample.corruption.is_corrupted.sum()) == 48
    text = dpg.get_value(ex.w["metrics"])
    assert text.count("accuracy") == 2 and "mix 40%" in text
    frame = grab(app, shots / "explore-sample.png")
    views = region(app, frame, ex.w["views"])
    for ink in ("correct", "wrong", "marked", "replaced", "text", "label"):
        assert has_ink(views, INKS[ink]), ink

    # Hover: the first model's line of chunk 0, position 5
    x0, y0 = dpg.get_item_rect_min(ex.w["views"])
    adv = ex._char_advance()
    from dpgviz.gui.explorer_views import LABEL_W
    from dpgviz.gui.theme import MONO_FONT_PX

    cell = ex.cell_at(x0 + 4 + (LABEL_W + 5.5) * adv, y0 + 4 + 2.5 * MONO_FONT_PX)
    assert cell == (5, 0)
    ex.show_tip(cell)
    assert "p(true)" in dpg.get_value(ex.w["tip_values"]) and "position 5" in dpg.get_value(ex.w["tip_title"])


@scenario
def test_scenario_2_small_batch_table_plot_csv(app, shots: Path, tmp_path: Path) -> None:
    import dearpygui.dearpygui as dpg

    ex = app.explorer
    dpg.set_value(ex.w["samples"], 4)
    dpg.set_value(ex.w["ratios"], "0.2,0.5,0.8")
    dpg.set_value(ex.w["length"], 64)
    dpg.get_item_callback(ex.w["run_batch"])()
    run_until(app, lambda: ex.workspace.explore.batch is not None and not ex.workspace.explore.batch.is_running)
    batch = app.workspace.explore.batch
    assert not batch.is_stopped and len(batch.rows) == 2 * 3
    app.frame()
    assert len(dpg.get_item_children(ex.w["table"], 1)) == 6
    assert len(dpg.get_item_children(ex.w["y"], 1)) == 2  # one line per model
    assert dpg.get_value(ex.w["progress"]) == 1.0
    grab(app, shots / "explore-batch.png")
    dpg.set_value(ex.w["csv_path"], str(tmp_path / "batch.csv"))
    assert app.workspace.explore.export_batch_csv(dpg.get_value(ex.w["csv_path"]))
    assert len((tmp_path / "batch.csv").read_text().splitlines()) == 7
    # The save dialog's pick writes the table there and shows the path.
    ex._on_csv_picked(ex.w["csv_dialog"], {"file_path_name": str(tmp_path / "picked.csv")})
    assert len((tmp_path / "picked.csv").read_text().splitlines()) == 7
    assert dpg.get_value(ex.w["csv_path"]) == str(tmp_path / "picked.csv")


@scenario
def test_scenario_3_generate_from_here(app, shots: Path) -> None:
    import dearpygui.dearpygui as dpg

    ex = app.explorer
    dpg.set_value(app.settings.steps if hasattr(app.settings, "steps") else ex.w["seed"], 4)
    dpg.get_item_callback(ex.w["generate"])()
    assert not ex.is_shown  # the explorer steps aside for the canvas
    run_until(app, lambda: not app.workspace.is_running)
    ws = app.workspace
    first = ws.store.get("tokens", int(ws.rows()[0]))
    assert (first == ws.explore.sample.corruption.ids).all()
    assert ws.store.kind(ws.current_row()) == "final"
    grab(app, shots / "explore-generate.png")


def test_view_lines_give_every_token_its_slot() -> None:
    """Subword tokens take `slot` cells a position, so the four views stay aligned (no window needed)."""
    pytest.importorskip("dearpygui.dearpygui")
    from dpgviz.gui.explorer_views import INK, LABEL_W, view_lines
    from dpgviz.gui.layout import char_table

    chars = char_table(np.array([" the", " cat", "s", "\u2588"], dtype=object), 4)  # id 3 is the mask
    target = np.array([0, 1, 2, 0, 1])
    seen = np.array([0, 3, 2, 1, 1])  # position 1 masked, position 3 replaced
    corrupted = np.array([False, True, False, True, False])
    pred = np.array([0, 1, 2, 2, 1])  # right at 1, wrong at 3
    text, ink = view_lines(chars, target, seen, corrupted, seen == 3, [pred], ["M1"], cols=3)
    lines = ["".join(row) for row in text]
    assert len(lines) == 2 * 4 and len(lines[0]) == LABEL_W + 3 * 4
    assert lines[0][LABEL_W:] == " the cats   "
    assert lines[1][LABEL_W:] == " the\u2588   s   "
    assert lines[4][LABEL_W:] == " the cat    "  # the second chunk: positions 3 and 4, then padding
    body = ink[:, LABEL_W:]
    assert (body[1, 4:8] == INK["masked"]).all() and (body[2, 4:8] == INK["correct"]).all()
    assert (body[6, 0:4] == INK["wrong"]).all() and (body[5, 0:4] == INK["replaced"]).all()
