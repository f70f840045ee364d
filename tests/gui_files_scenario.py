"""The File menu in a real window (Xvfb in CI): save, reopen, refuse a broken file, export.

Run by test_gui_files.py in a process of its own (see there why); run it directly with
`xvfb-run -a pytest tests/gui_files_scenario.py`.

One scenario, in order, as one user session: one App (one worker, a tiny random model)
generates a short run, saves it through the Save As dialog's callback, reopens it
through Open, refuses a truncated copy without losing what is shown, and exports PNG
and GIF on the job thread while the frame loop keeps running. Each step builds on the
one before by design (the file saved is the file reopened); the steps are separate
tests only so a failure names its step.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

pytestmark = [
    pytest.mark.gui,
    pytest.mark.skipif(not os.environ.get("DISPLAY"), reason="needs an X display (run under xvfb-run -a)"),
]

dpg = pytest.importorskip("dearpygui.dearpygui")

from model_data import tiny_checkpoint  # noqa: E402

from dpgviz.core.records import record_count  # noqa: E402
from dpgviz.core.settings import GenerationSettings  # noqa: E402
from dpgviz.gui.app import App  # noqa: E402

SHORT = GenerationSettings(length=80, steps=4, seed=7)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random checkpoint with its vocabulary, in a folder of its own."""
    return tiny_checkpoint(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="module")
def app(checkpoint: Path):
    app = App(models_dir=str(checkpoint.parent.parent), autoload=False, width=1400, height=860).build()
    app.frame()
    yield app
    app.close()


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Where the generated run was saved, and copies of its columns and tree from before."""
    return {"path": tmp_path_factory.mktemp("sessions") / "run.dpgviz"}


def run_until(app: App, condition: Callable[[], bool], timeout_s: float = 60.0) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out; status: {app.status.text!r}"
        assert app.frame(), "the window closed"


def click(item: int | str) -> None:
    dpg.get_item_callback(item)()


def choose(app: App, key: str, path: Path) -> None:
    """What picking `path` in the file dialog `key` does: the dialog's callback with its app_data."""
    dialog = app.files.dialogs[key]
    app_data = {"file_path_name": str(path), "file_name": path.name, "current_path": str(path.parent)}
    if key == "open":
        app_data["selections"] = {path.name: str(path)}
    dpg.get_item_callback(dialog)(dialog, app_data)
    dpg.hide_item(dialog)


# -- tests, in the order a session would go ----------------------------------------------
def test_file_menu_has_open_save_export_and_quit(app: App) -> None:
    labels = [dpg.get_item_label(i) for i in dpg.get_item_children(app.file_menu, 1)]
    assert labels[:4] == ["Open...", "Reopen unsaved work of the last window", "Save", "Save As..."]
    assert "Export" in labels and labels[-1] == "Quit"
    assert set(app.files.dialogs) == {"open", "save", "text", "png", "gif", "html", "csv", "json", "overview", "plots"}


def test_saving_with_nothing_shown_says_so(app: App) -> None:
    click(app.files.items["save"])
    app.frame()
    assert "Nothing to save" in app.status.text
    assert app.workspace.jobs.job is None


def test_save_as_writes_the_generated_run(app: App, checkpoint: Path, saved: dict) -> None:
    assert app.settings.select_path(checkpoint)
    click(app.settings.load_button)
    ws = app.workspace
    run_until(app, lambda: ws.model_info is not None)
    app.settings.write(SHORT)
    click(app.settings.start_button)
    run_until(app, lambda: not ws.is_running)
    assert ws.n_records() == record_count(SHORT.steps)
    saved["columns"] = {name: col.copy() for name, col in ws.store.columns.items()}
    saved["count"], saved["tree"] = len(ws.store), ws.store.tree()

    click(app.files.items["save"])  # the first Save asks where, as Save As does
    assert dpg.is_item_shown(app.files.dialogs["save"])
    choose(app, "save", saved["path"].with_suffix(""))  # the suffix is added
    assert ws.jobs.job is not None
    run_until(app, lambda: ws.jobs.job is None)
    assert "Saved" in app.status.text, app.status.text
    assert saved["path"].is_file() and ws.doc.path == saved["path"]
    done, total = ws.jobs.finished.read()
    assert total > 0 and done == total


def test_open_shows_the_saved_records_and_picks_the_recorded_model(app: App, checkpoint: Path, saved: dict) -> None:
    app.settings.models_dirs = []  # the recorded model is no longer in the list: opening adds it
    app.settings.rescan()
    assert not app.settings.select_path(checkpoint)
    click(app.files.items["open"])
    assert dpg.is_item_shown(app.files.dialogs["open"])
    choose(app, "open", saved["path"])
    ws = app.workspace
    assert ws.doc.session is not None and ws.store is ws.doc.session.store
    run_until(app, lambda: "Its model" in app.status.text)
    store, count = ws.store, saved["count"]
    assert len(store) == count and store.tree() == saved["tree"]
    for name, col in saved["columns"].items():
        assert np.array_equal(store.column(name), col[:count], equal_nan=col.dtype.kind == "f"), name
    assert ws.doc.session.model_path == str(checkpoint) and ws.doc.session.model_status() == "ok"
    assert app.settings.selected_entry().path.resolve() == checkpoint.resolve()
    # the model that saved it is still loaded: nothing to press (a window without it says press Load)
    assert "is loaded" in app.status.text and "Load to" not in app.status.text, app.status.text
    assert app.settings.read() == SHORT  # the panel shows what the file was made with
    app.frame()
    assert app.canvas.shown_row == ws.rows()[-1]


def test_truncated_file_shows_a_message_and_keeps_the_session(app: App, saved: dict, tmp_path: Path) -> None:
    cut = tmp_path / "cut.dpgviz"
    data = saved["path"].read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    ws = app.workspace
    before, shown = ws.store, ws.n_records()
    choose(app, "open", cut)
    app.frame()
    assert "cut short" in app.status.text, app.status.text
    assert dpg.get_item_configuration(app.status.message)["color"][0] > 0.9  # shown in red
    assert ws.store is before and ws.n_records() == shown
    assert ws.doc.path == saved["path"]  # Save still writes where it did
    assert app.frame()


def test_export_png_of_the_shown_record(app: App, tmp_path: Path) -> None:
    from PIL import Image

    from dpgviz.export.images import FramePainter

    app.set_color_mode("confidence")
    app.view.record = 2
    app.frame()
    click(app.files.items["png"])
    choose(app, "png", tmp_path / "step")
    run_until(app, lambda: app.workspace.jobs.job is None)
    assert "Exported PNG" in app.status.text, app.status.text
    painter = FramePainter(app.workspace.doc.session, app.view.branch, "confidence", app.canvas.cols)
    with Image.open(tmp_path / "step.png") as im:
        assert im.format == "PNG" and im.size == painter.size
        assert np.array_equal(np.asarray(im.convert("RGB")), np.asarray(painter.frame(2)))
    app.set_color_mode("state")


def test_export_gif_of_the_branch_reports_progress(app: App, tmp_path: Path) -> None:
    from PIL import Image

    click(app.files.items["gif"])
    choose(app, "gif", tmp_path / "run.gif")
    app.refresh()  # the status bar shows the job, not the idle run
    assert dpg.get_item_configuration(app.status.progress)["overlay"] == "exporting run.gif"
    run_until(app, lambda: app.workspace.jobs.job is None)
    assert "Exported GIF" in app.status.text, app.status.text
    done, total = app.workspace.jobs.finished.read()
    n = app.workspace.n_records()
    assert total == n and done == total
    with Image.open(tmp_path / "run.gif") as im:
        assert im.format == "GIF" and im.n_frames == n


def test_export_overview_and_plots_of_the_branch(app: App, tmp_path: Path) -> None:
    from PIL import Image

    for fmt in ("overview", "plots"):
        click(app.files.items[fmt])
        choose(app, fmt, tmp_path / fmt)
        run_until(app, lambda: app.workspace.jobs.job is None)
        assert "Exported" in app.status.text, app.status.text
        with Image.open(tmp_path / f"{fmt}.png") as im:
            assert im.format == "PNG" and im.size[0] > 100 and im.size[1] > 50


def test_start_without_a_model_asks_for_one(app: App) -> None:
    import signal

    ws = app.workspace
    os.kill(ws.runs.source.pid, signal.SIGKILL)
    run_until(app, lambda: ws.runs.source is None, timeout_s=10)
    app.settings.start()  # what the Start button does (it is greyed out without a model)
    app.frame()
    assert "Load a model" in app.status.text
    assert ws.n_records() > 0  # the opened session stays on screen
