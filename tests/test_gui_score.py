"""Other models in a real window (Xvfb): Compare models..., Score with model... (the disagreement
colour mode, its legend, the plot and both top-8 lists in the tooltip) and Verify.

Dear PyGui hosts one App per process, so the scenario runs in a child pytest started by
`test_models_in_their_own_process` (as tests/test_gui_explore.py does); the child sees
DPGVIZ_SCORE_SCENARIO=1 and runs the `test_scenario_*` steps in order, one App for all.
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
IN_SCENARIO = os.environ.get("DPGVIZ_SCORE_SCENARIO") == "1"


@pytest.mark.gui
@pytest.mark.skipif(not HAS_DISPLAY or IN_SCENARIO, reason="needs an X display (run under xvfb-run -a)")
def test_models_in_their_own_process(tmp_path: Path) -> None:
    env = {**os.environ, "DPGVIZ_SCORE_SCENARIO": "1"}
    env.setdefault("DPGVIZ_SHOTS", str(tmp_path / "shots"))
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--basetemp", str(tmp_path / "t"),
           "-k", "scenario_", str(Path(__file__))]
    proc = subprocess.run(cmd, cwd=Path(__file__).parent.parent, capture_output=True, text=True, timeout=400, env=env)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert " passed" in proc.stdout and "skipped" not in proc.stdout, proc.stdout[-2000:]


scenario = pytest.mark.skipif(not (HAS_DISPLAY and IN_SCENARIO), reason="runs in the child process only")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from score_data import tiny_pair

    return tiny_pair(tmp_path_factory.mktemp("models") / "pair")


@pytest.fixture(scope="module")
def app(models: tuple[Path, Path]):
    from dpgviz.core.settings import GenerationSettings
    from dpgviz.gui.app import App

    app = App(models_dir=str(models[0].parent.parent), autoload=False, width=1500, height=940).build()
    app.frame()
    app.settings.write(GenerationSettings(length=56, steps=5, seed=3, strategy="llada"))
    yield app
    app.close()


def run_until(app, condition: Callable[[], bool], timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out; status: {app.status.text!r}"
        assert app.frame(), "the window closed"
        time.sleep(0.01)
    app.frame()


def region(frame: np.ndarray, item: int | str) -> np.ndarray:
    import dearpygui.dearpygui as dpg

    (x, y), (w, h) = dpg.get_item_rect_min(item), dpg.get_item_rect_size(item)
    return frame[int(y) : int(y + h), int(x) : int(x + w)]


@scenario
def test_scenario_1_compare_models_lists_them_and_shows_two_side_by_side(app, models) -> None:
    ws, dialog = app.workspace, app.compare_models
    dialog.show()
    listed = [str(e.path) for e, _ in dialog.boxes]
    assert str(models[0]) in listed and str(models[1]) in listed  # the models found under --models-dir
    dialog.tick(str(models[0]), str(models[1]))
    assert dialog.run()
    run_until(app, lambda: ws.jobs.job is None and ws.compare.pair is not None)
    store = ws.store
    root = store.branch_order[0]
    children = store.children(root)
    assert len(children) == 2 and ws.compare.pair == (children[0], children[1])
    assert app.compare_view.is_shown
    for child, ckpt in zip(children, models, strict=True):
        assert store.branches[child].provenance["model"]["path"] == str(ckpt)
        assert store.branches[child].settings["strategy"] == "llada" and store.branches[child].settings["length"] == 56


@scenario
def test_scenario_2_score_with_the_other_model_colours_by_disagreement(app, models, shots: Path) -> None:
    import dearpygui.dearpygui as dpg

    from dpgviz.gui import palette

    ws = app.workspace
    ws.compare.stop()
    first = ws.store.children(ws.store.branch_order[0])[0]  # made by the tiny model
    ws.select_branch(first)
    app.score_dialog.show()
    assert app.score_dialog.pick(str(models[1]))
    assert app.score_dialog.run()
    run_until(app, lambda: ws.jobs.job is None and ws.models.scored == 1)
    run_until(app, lambda: app.view.color_mode == "disagreement")
    layer = ws.models.layer()
    assert layer is not None and layer.branch == first and len(layer.rows) == 5
    x, y = app.disagreement.data
    assert len(x) == 5 and np.all(np.isfinite(y)) and y.max() > 0  # the plot: mean JS per step
    assert dpg.is_item_shown(app.legend._groups["disagreement"])  # its legend, the others hidden
    assert not dpg.is_item_shown(app.legend._groups["state"])
    ws.view.select(1, ws.n_records())  # the first prediction: every position scored
    frame = grab(app, shots / "disagreement.png")
    cells = region(frame, app.canvas.plot_group).reshape(-1, 3).astype(int)
    levels = palette.COLORS[palette.LEVEL0 :]  # the viridis levels the mode draws with
    near = np.abs(cells[:, None, :] - levels[None, ::8, :]).max(axis=-1).min(axis=1) <= 6
    assert near.sum() > 500, near.sum()  # cells coloured by their divergence


@scenario
def test_scenario_3_tooltip_shows_both_top8_lists_side_by_side(app) -> None:
    ws = app.workspace
    ws.view.select(1, ws.n_records())
    ws.view.hover_pos = 5
    app.frame()
    tip = app.hover_tip
    assert tip.info is not None and len(tip.info.candidates) == 8
    assert tip.second is not None and len(tip.second.candidates) == 8 and tip.second.js is not None
    assert tip.second.name == ws.models.layer().name
    ws.view.hover_pos = None


@scenario
def test_scenario_4_verify_says_identical(app) -> None:
    import dearpygui.dearpygui as dpg

    ws = app.workspace
    branch = ws.view.branch
    dpg.get_item_callback(app.branches.verify_button)()  # the branch panel's Verify button
    run_until(app, lambda: ws.jobs.job is None and branch in ws.models.verified)
    outcome = ws.models.verified[branch]
    assert outcome["identical"], outcome
    assert outcome["line"] == f"identical: {outcome['records']} records"
    app.frame()
    assert "verify: identical" in dpg.get_value(app.branches.details)


@scenario
def test_scenario_5_a_run_made_in_the_window_verifies_identical(app, models) -> None:
    from dpgviz.core.discovery import ModelEntry

    ws = app.workspace
    ws.runs.load_model(ModelEntry("tiny", models[0], models[0].with_name("meta.pkl")))
    run_until(app, lambda: ws.model_info is not None)
    app.settings.start()
    run_until(app, lambda: not ws.is_running and ws.store.kind(int(ws.rows()[-1])) == "final")
    branch = ws.view.branch
    assert ws.store.branches[branch].provenance["model"]["path"] == str(models[0])  # which model made it
    assert ws.models.verify()
    run_until(app, lambda: ws.jobs.job is None and branch in ws.models.verified)
    assert ws.models.verified[branch]["identical"], ws.models.verified[branch]
