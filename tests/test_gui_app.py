"""The app in a real window (Xvfb in CI): load, generate, scrub, stop, errors, worker death.

One App (one Dear PyGui context, one worker) serves every test in this module: Dear
PyGui cannot host a second context in a process (see test_gui_files.py). Each test sets
up the state it needs (`ensure_model`, `ensure_short_run`), so any one of them runs
alone (`pytest -k`) or in any order. The checks drive the app through the widgets'
callbacks and the frame loop, and read pixels of frames saved with output_frame_buffer.
"""

from __future__ import annotations

import os
import signal
import time
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

from dpgviz.core.discovery import default_model_entry  # noqa: E402
from dpgviz.core.records import record_count  # noqa: E402
from dpgviz.core.settings import GenerationSettings  # noqa: E402
from dpgviz.gui import palette  # noqa: E402
from dpgviz.gui.app import App  # noqa: E402
from dpgviz.gui.plots import OVERVIEW_PX  # noqa: E402

SHORT = GenerationSettings(length=100, steps=5, seed=3)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random checkpoint (block 256) and a broken one, as a user's models folder."""
    root = tmp_path_factory.mktemp("models")
    tiny_checkpoint(root / "tiny", block_size=256)
    (root / "broken").mkdir()
    (root / "broken" / "ckpt.pt").write_bytes(b"not a checkpoint")
    (root / "broken" / "meta.pkl").write_bytes((root / "tiny" / "meta.pkl").read_bytes())
    return root


@pytest.fixture(scope="module")
def app(models_dir: Path):
    app = App(models_dir=str(models_dir), autoload=False, width=1400, height=860).build()
    app.frame()
    yield app
    client = app.workspace.runs.source
    app.close()
    assert client is None or not client.is_alive  # closing the window ends the worker


def run_until(app: App, condition: Callable[[], bool], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out; status: {app.status.text!r}"
        assert app.frame(), "the window closed"


def click(item: int | str) -> None:
    """What a click does: the item's callback, then the loop runs on."""
    dpg.get_item_callback(item)()


def set_slider(app: App, record: int) -> None:
    dpg.set_value(app.timeline.slider, record + 1)
    dpg.get_item_callback(app.timeline.slider)(app.timeline.slider, record + 1)
    app.frame()


def grab(app: App, path: Path) -> np.ndarray:
    """The canvas plot's pixels (H, W, 3) of the next rendered frame, once the PNG is fully written."""
    from PIL import Image

    path.unlink(missing_ok=True)
    for _ in range(2):  # the saved frame is the one on screen when the request is served
        app.frame()
    dpg.output_frame_buffer(file=str(path))
    size = (dpg.get_viewport_client_width(), dpg.get_viewport_client_height())
    frame = None
    for _ in range(50):  # written by the render thread: wait for a whole image of the viewport's size
        app.frame()
        try:
            with Image.open(path) as im:
                im.load()  # raises on a file cut short
                if im.size == size:
                    frame = np.asarray(im.convert("RGB"))
                    break
        except (OSError, SyntaxError):
            time.sleep(0.02)
    assert frame is not None, f"no complete {size} frame in {path}"
    (x, y), (w, h) = dpg.get_item_rect_min(app.canvas.plot), dpg.get_item_rect_size(app.canvas.plot)
    return frame[int(y) : int(y + h), int(x) : int(x + w)]


def is_color(pixels: np.ndarray, rgb: tuple[int, int, int], tol: int = 3) -> np.ndarray:
    return np.abs(pixels.astype(int) - np.array(rgb)).max(axis=-1) <= tol


def fraction_of(pixels: np.ndarray, rgb: tuple[int, int, int]) -> float:
    """Share of the drawn cells' pixels (background excluded) that have colour `rgb`."""
    cells = ~is_color(pixels, palette.BACKGROUND)
    return float((is_color(pixels, rgb) & cells).sum() / max(1, cells.sum()))


def load_through_dropdown(app: App, path: Path) -> None:
    assert app.settings.select_path(path), app.settings._labels()
    click(app.settings.load_button)


# -- state a test needs: each test asks for it, whatever ran before -----------------------
def ensure_model(app: App, models_dir: Path) -> None:
    """A model is loaded (the tiny one, unless one already is) and no run is going."""
    ws = app.workspace
    if ws.is_running:
        ws.runs.stop()
        run_until(app, lambda: not ws.is_running, timeout_s=30)
    if ws.model_info is None or ws.runs.source is None:
        load_through_dropdown(app, models_dir / "tiny" / "ckpt.pt")
        run_until(app, lambda: ws.model_info is not None and not ws.runs.is_loading)


def ensure_short_run(app: App, models_dir: Path) -> str:
    """A finished run of SHORT is shown (generated now if the shown branch is not one); its branch id."""
    ensure_model(app, models_dir)
    ws = app.workspace
    shown = ws.store.branches.get(ws.view.branch) if ws.store is not None else None
    is_short = shown is not None and shown.parent is None and shown.settings == SHORT.to_dict()
    if not (is_short and ws.n_records() == record_count(SHORT.steps) and ws.doc.session is None):
        app.settings.write(SHORT)
        click(app.settings.start_button)
        run_until(app, lambda: not ws.is_running)
    assert ws.n_records() == record_count(SHORT.steps)
    return ws.view.branch


# -- tests ---------------------------------------------------------------------------------
def test_window_opens_with_title_and_panels(app: App) -> None:
    assert dpg.get_viewport_title().startswith("dpgviz")
    assert app.frame()
    w, h = dpg.get_item_rect_size(app.canvas.plot)
    assert w > 400 and h > 200
    assert app.file_menu  # where session and export items hook in


def test_model_dropdown_lists_default_then_found(app: App, models_dir: Path) -> None:
    entries = app.settings.entries
    assert entries[0].is_default
    assert {e.path for e in entries[1:]} >= {models_dir / "tiny" / "ckpt.pt", models_dir / "broken" / "ckpt.pt"}


def test_bad_checkpoint_shows_error_and_app_stays_up(app: App, models_dir: Path) -> None:
    ws = app.workspace
    before = ws.model_info
    load_through_dropdown(app, models_dir / "broken" / "ckpt.pt")
    run_until(app, lambda: not ws.runs.is_loading)
    assert ws.model_info == before  # a failed load keeps the model there was (none, at first)
    assert "checkpoint" in app.status.text
    assert dpg.get_item_configuration(app.status.message)["color"][0] > 0.9  # shown in red
    for _ in range(3):
        assert app.frame()


def test_loads_a_model(app: App, models_dir: Path) -> None:
    ws = app.workspace
    default = default_model_entry()
    load_through_dropdown(app, default.path if default.path.is_file() else models_dir / "tiny" / "ckpt.pt")
    run_until(app, lambda: ws.model_info is not None and not ws.runs.is_loading)
    assert ws.model_info.device in dpg.get_value(app.status.device)
    assert ws.model_info.name in dpg.get_value(app.settings.model_info)
    assert dpg.get_item_configuration(app.settings.start_button)["enabled"]


def test_bad_settings_show_a_message(app: App, models_dir: Path) -> None:
    ensure_model(app, models_dir)
    app.settings.write(GenerationSettings(length=20, steps=6))
    click(app.settings.start_button)
    assert not app.workspace.is_running
    app.frame()
    assert "length must be at least 50" in app.status.text


def test_generates_a_short_run_and_slider_covers_every_record(app: App, models_dir: Path) -> None:
    ensure_model(app, models_dir)
    ws = app.workspace
    app.settings.write(SHORT)
    click(app.settings.start_button)
    assert ws.is_running
    run_until(app, lambda: not ws.is_running)
    n = record_count(SHORT.steps)
    assert ws.n_records() == n
    assert dpg.get_item_configuration(app.timeline.slider)["max_value"] == n
    rows = ws.rows()
    for record in range(n):
        set_slider(app, record)
        assert app.canvas.shown_row == rows[record]
    assert ws.store.kind(rows[0]) == "initial" and ws.store.kind(rows[-1]) == "final"


def test_moving_the_slider_changes_the_canvas(app: App, models_dir: Path, tmp_path: Path) -> None:
    ensure_short_run(app, models_dir)
    set_slider(app, 0)  # every position masked: grey blocks
    first = grab(app, tmp_path / "first.png")
    set_slider(app, app.workspace.n_records() - 1)  # the finished text: nothing masked
    last = grab(app, tmp_path / "last.png")
    assert fraction_of(first, palette.MASKED_COLOR) > 0.95
    assert fraction_of(last, palette.MASKED_COLOR) < 0.001
    assert fraction_of(last, palette.STATES[1][2]) > 0.3  # visible cells (text covers the rest)
    assert (np.abs(first.astype(int) - last.astype(int)).max(axis=-1) > 30).mean() > 0.01


def test_colour_modes_change_the_canvas(app: App, models_dir: Path, tmp_path: Path) -> None:
    ensure_short_run(app, models_dir)
    set_slider(app, app.workspace.n_records() - 1)
    app.set_color_mode("state")
    state = grab(app, tmp_path / "state.png")
    app.set_color_mode("confidence")
    confidence = grab(app, tmp_path / "confidence.png")
    app.set_color_mode("state")
    app.frame()
    as_int = lambda rgb: (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]  # noqa: E731
    cells = ~is_color(confidence, palette.BACKGROUND)
    in_levels = np.isin(as_int(confidence), as_int(palette.COLORS[palette.LEVEL0 :])) & cells
    assert in_levels.sum() > 0.3 * cells.sum()  # viridis cells (glyphs cover the rest)
    assert not np.array_equal(state, confidence)


def test_text_mode_wraps_at_newlines(app: App) -> None:
    from dpgviz.bench.synthetic import synthetic_store, synthetic_vocab

    ws, vocab = app.workspace, synthetic_vocab()
    ws.doc.show_store(synthetic_store(600, 2, vocab=vocab), vocab)
    for _ in range(3):  # the fit takes effect once the plot has been laid out at its new zoom
        app.frame()
    tokens = ws.store.get("tokens", ws.current_row())
    ends = np.flatnonzero(tokens == vocab.itos.index("\n"))
    assert 0 < len(ends) and ends[0] < len(tokens) - 1, "the synthetic text has newlines inside"
    grid = app.canvas.layout
    assert np.array_equal(grid.row, np.arange(len(tokens)) // grid.cols)  # the grid ignores the tokens
    dpg.set_value(app.text_mode_box, True)
    dpg.get_item_callback(app.text_mode_box)(app.text_mode_box, True)
    app.frame()
    try:
        text = app.canvas.layout
        for pos in ends[ends < len(tokens) - 1]:  # a newline ends its row; the next token starts one
            assert text.row[pos + 1] == text.row[pos] + 1 and text.col[pos + 1] == 0, pos
        assert text.n_rows > grid.n_rows
    finally:
        dpg.set_value(app.text_mode_box, False)
        dpg.get_item_callback(app.text_mode_box)(app.text_mode_box, False)
        app.frame()


def test_keyboard_steps_through_records(app: App, models_dir: Path) -> None:
    ensure_short_run(app, models_dir)
    view, n = app.view, app.workspace.n_records()
    set_slider(app, 3)
    click(app.input.key_handlers[dpg.mvKey_Right])
    app.frame()
    assert view.record == 4
    click(app.input.key_handlers[dpg.mvKey_Left])
    click(app.input.key_handlers[dpg.mvKey_Left])
    app.frame()
    assert view.record == 2
    click(app.input.key_handlers[dpg.mvKey_End])
    app.frame()
    assert view.record == n - 1
    click(app.input.key_handlers[dpg.mvKey_Home])
    app.frame()
    assert view.record == 0
    click(app.input.key_handlers[dpg.mvKey_Spacebar])
    assert view.playing
    run_until(app, lambda: not view.playing, timeout_s=10)
    assert view.record == n - 1


def test_nothing_is_redrawn_when_nothing_changed(app: App, models_dir: Path) -> None:
    ensure_short_run(app, models_dir)
    app.frame()
    before = app.canvas.redraws
    for _ in range(5):
        app.frame()
    assert app.canvas.redraws == before
    set_slider(app, 1)
    assert app.canvas.redraws == before + 1  # and a change does redraw


def test_continue_runs_a_new_branch_from_the_shown_record(app: App, models_dir: Path) -> None:
    parent = ensure_short_run(app, models_dir)
    ws = app.workspace
    set_slider(app, 4)  # initial, prediction 0, remask 0, prediction 1, remask 1
    click(app.settings.continue_button)
    assert ws.is_running
    run_until(app, lambda: not ws.is_running)
    branch = ws.store.branches[app.view.branch]
    assert branch.parent == parent and branch.fork_record == 4
    assert len(branch.rows) == record_count(SHORT.steps, start_iteration=2)
    assert ws.store.kind(branch.rows[0]) == "initial"


def test_stop_works_mid_run(app: App, models_dir: Path) -> None:
    ensure_model(app, models_dir)
    ws = app.workspace
    long = GenerationSettings(length=256, steps=200, seed=5)
    app.settings.write(long)
    click(app.settings.start_button)
    run_until(app, lambda: ws.n_records() >= 5)
    click(app.settings.stop_button)
    run_until(app, lambda: not ws.is_running, timeout_s=30)
    assert 5 <= ws.n_records() < record_count(long.steps)
    assert "Stopped" in app.status.text
    assert app.view.follow_live and app.view.record == ws.n_records() - 1


def test_worker_death_is_shown_and_loading_again_works(app: App, models_dir: Path) -> None:
    ensure_short_run(app, models_dir)
    ws = app.workspace
    os.kill(ws.runs.source.pid, signal.SIGKILL)
    run_until(app, lambda: ws.runs.source is None, timeout_s=10)
    assert "stopped unexpectedly" in app.status.text
    assert ws.model_info is None
    assert ws.n_records() > 0  # what was received stays viewable
    assert not dpg.get_item_configuration(app.settings.start_button)["enabled"]
    load_through_dropdown(app, models_dir / "tiny" / "ckpt.pt")
    run_until(app, lambda: ws.model_info is not None)


def test_tall_sequences_scroll(app: App) -> None:
    from dpgviz.bench.synthetic import synthetic_store, synthetic_vocab

    vocab = synthetic_vocab()
    app.workspace.doc.show_store(synthetic_store(16384, 2, vocab=vocab), vocab)
    for _ in range(3):  # the fit takes effect once the plot has been laid out at its new zoom
        app.frame()
    layout = app.canvas.layout
    assert layout.n_rows > app.canvas.view_rows
    assert dpg.is_item_shown(app.canvas.scrollbar)
    app.canvas.scroll_by(app.view, 10)
    app.frame()
    assert app.canvas.visible[0] == 10
    app.canvas.scroll_by(app.view, 10_000)
    app.frame()
    assert app.canvas.visible == (layout.n_rows - app.canvas.view_rows, layout.n_rows)


def test_opens_a_saved_session(app: App, tmp_path: Path) -> None:
    from dpgviz.bench.synthetic import synthetic_store, synthetic_vocab
    from dpgviz.store.session_save import save_session

    ws = app.workspace
    if ws.is_running:
        ws.runs.stop()
        run_until(app, lambda: not ws.is_running, timeout_s=30)
    vocab = synthetic_vocab()
    path = save_session(tmp_path / "run.dpgviz", synthetic_store(300, 4, vocab=vocab), vocab)
    assert ws.files.open(path)
    app.frame()
    assert ws.n_records() == 9
    assert app.canvas.shown_row == ws.rows()[-1]
    assert not ws.files.open(tmp_path / "missing.dpgviz")
    app.frame()
    assert "Cannot open" in app.status.text
    assert ws.n_records() == 9  # what was shown stays
    assert app.frame()


def test_resizing_the_window_relays_the_canvas(app: App) -> None:
    app.canvas.zoom(app.view, 16)
    app.frame()
    app.frame()
    cols = app.canvas.cols
    width = dpg.get_viewport_width()
    dpg.set_viewport_width(width - 300)
    try:
        run_until(app, lambda: app.canvas.cols < cols, timeout_s=10)
        assert app.canvas.layout.cols == app.canvas.cols
    finally:
        dpg.set_viewport_width(width)
        app.frame()


def test_folder_picker_adds_its_checkpoints(app: App, models_dir: Path) -> None:
    app.settings.models_dirs = []
    app.settings.rescan()
    assert len(app.settings.entries) == 1  # the default only
    click(app.settings.folder_button)
    app.frame()
    assert dpg.is_item_shown(app.settings.folder_dialog)
    dpg.get_item_callback(app.settings.folder_dialog)(app.settings.folder_dialog, {"file_path_name": str(models_dir)})
    dpg.hide_item(app.settings.folder_dialog)
    app.frame()
    assert len(app.settings.entries) == 3
    assert app.settings.selected_entry().path.is_relative_to(models_dir)


# -- editing, branches and compare, driven through the app's own mouse and key handlers -------
def shot(app: App, name: str) -> None:
    """Save the whole window as DPGVIZ_SHOTS/name.png when that variable names a folder (to look at)."""
    folder = os.environ.get("DPGVIZ_SHOTS")
    if folder:
        grab(app, Path(folder) / f"{name}.png")


def drag(app: App, start: int, stop: int) -> None:
    """Press on token `start`, move to token `stop`, release (viewport pixels of their cells)."""
    (x0, y0), (x1, y1) = app.canvas.pixel_of(start), app.canvas.pixel_of(stop)
    app.input.pointer_down(x0, y0)
    app.input.pointer_move((x0 + x1) / 2, (y0 + y1) / 2)
    app.input.pointer_move(x1, y1)
    app.input.pointer_up()
    app.frame()


def test_a_click_picks_the_token_drawn_under_it(app: App, models_dir: Path) -> None:
    ensure_short_run(app, models_dir)
    app.frame()
    for pos in (0, 7, 63, 99):
        x, y = app.canvas.pixel_of(pos)
        assert app.canvas.pos_at_pixel(x, y) == pos
        row, col = app.canvas.layout.cell_of(pos)
        cell_px = app.canvas.pixel_of(1)[0] - app.canvas.pixel_of(0)[0]
        assert app.canvas.pos_at_pixel(x + 0.45 * cell_px, y) == pos  # anywhere inside its cell
    x, y = app.canvas.pixel_of(99)
    assert app.canvas.pos_at_pixel(x + 20 * cell_px, y) is None  # past the last token
    assert app.canvas.pos_at_pixel(x + 20 * cell_px, y, clamp=True) == 99  # a drag there ends at it


def test_selection_is_drawn_over_the_cells(app: App, models_dir: Path, tmp_path: Path) -> None:
    ensure_short_run(app, models_dir)
    set_slider(app, app.workspace.n_records() - 1)
    app.view.clear_selection()
    before = grab(app, tmp_path / "before.png")
    drag(app, 12, 18)
    assert app.view.selection() == (12, 19)
    after = grab(app, tmp_path / "after.png")
    changed = np.abs(before.astype(int) - after.astype(int)).max(axis=-1) > 8
    (px, py), (x0, y0) = app.canvas.pixel_of(15), dpg.get_item_rect_min(app.canvas.plot)
    assert changed[int(py - y0), int(px - x0)]  # a selected cell is tinted
    ox, oy = app.canvas.pixel_of(40)
    assert not changed[int(oy - y0), int(ox - x0)]  # an unselected one is not
    app.input.press("escape")
    app.frame()
    assert app.view.selection() is None


def test_edit_protect_restart_then_switch_and_compare(app: App, models_dir: Path, tmp_path: Path) -> None:
    parent = ensure_short_run(app, models_dir)
    ws = app.workspace
    parent_rows = ws.rows().copy()
    before = {name: ws.store.column(name)[parent_rows].copy() for name in ws.store.columns}
    set_slider(app, 4)  # a middle step: the remask of iteration 1
    shot(app, "1-middle-step")

    # 1. select by dragging, then M
    drag(app, 10, 19)
    assert app.view.selection() == (10, 20)
    shot(app, "2-selection")
    click(app.input.key_handlers[dpg.mvKey_M])
    app.frame()
    child = ws.view.branch
    assert child != parent and ws.store.kind(ws.current_row()) == "edit"
    assert (ws.store.get("tokens", ws.current_row())[10:20] == ws.vocab.mask_id).all()

    # 2. write a word and protect it: click its first cell, shift-click its last, Enter, type, Enter, P
    (x0, y0), (x1, y1) = app.canvas.pixel_of(30), app.canvas.pixel_of(34)
    app.input.pointer_down(x0, y0)
    app.input.pointer_up()
    app.input.pointer_down(x1, y1, shift=True)
    app.input.pointer_up()
    assert app.view.selection() == (30, 35)
    click(app.input.key_handlers[dpg.mvKey_Return])  # focuses the replacement box
    dpg.set_value(app.edit_bar.replace_input, "crown")
    dpg.get_item_callback(app.edit_bar.replace_input)(app.edit_bar.replace_input, "crown")  # Enter in the box
    app.frame()
    assert ws.vocab.decode(ws.store.get("tokens", ws.current_row())[30:35]) == "crown"
    assert ws.view.branch == child and len(ws.store.branches[child].edits) == 2  # the same unrun edit
    click(app.input.key_handlers[dpg.mvKey_P])
    app.view.clear_selection()
    pixels = grab(app, tmp_path / "edit.png")
    shot(app, "3-edit-before-restart")
    assert not ws.is_running and ws.view.branch == child
    x, y = app.canvas.pixel_of(32)
    x_top, y_top = dpg.get_item_rect_min(app.canvas.plot)
    half_w, half_h = app.canvas._advance_ratio * app.view.font_px / 2 - 1, app.view.font_px / 2 - 1  # inside the cell
    cell = pixels[int(y - y_top - half_h) : int(y - y_top + half_h), int(x - x_top - half_w) : int(x - x_top + half_w)]
    assert is_color(cell, palette.STATES[4][2]).mean() > 0.3  # protected: its colour around the glyph, at any zoom
    protected_text = ws.store.get("tokens", ws.current_row())[30:35].copy()
    assert "not run yet" in app.edit_bar.readout.text  # the whole readout (a narrow window shows it cut, whole on hover)

    # 3. restart (Ctrl+R): the child keeps the protected text in every record, the parent is unchanged
    app.input.press("ctrl+r")
    assert ws.is_running
    run_until(app, lambda: not ws.is_running)
    own = ws.store.branches[child].rows
    assert len(own) > 2 and ws.store.kind(own[-1]) == "final"
    for r in own:
        assert np.array_equal(ws.store.get("tokens", r)[30:35], protected_text)
    for name, col in before.items():
        assert np.array_equal(ws.store.column(name)[parent_rows], col, equal_nan=col.dtype.kind == "f"), name
    shot(app, "4-child-after-restart")

    # 4. switch branches in the branch panel, then compare the two side by side
    app.frame()
    assert {parent, child} <= set(app.branches.items)
    click(app.branches.items[parent])
    app.frame()
    assert ws.view.branch == parent and ws.rows().tolist() == parent_rows.tolist()
    assert "a root run" in dpg.get_value(app.branches.details)
    shot(app, "5-branch-panel")
    app.branches.compare(child)
    for _ in range(3):
        app.frame()
    assert ws.compare.pair == (parent, child) and app.compare_view.is_shown
    set_slider(app, ws.n_records() - 1)
    left, right = ws.compare.rows()
    assert ws.store.kind(left) == ws.store.kind(right) == "final"
    assert app.compare_view.highlight.sum() == (ws.store.get("tokens", left) != ws.store.get("tokens", right)).sum()
    assert app.compare_view.panes[1].shown_row == right
    assert dpg.get_value(app.compare_view.left_text) and "alike" in dpg.get_value(app.compare_view.summary)
    shot(app, "6-compare")
    app.compare_view.close()
    app.frame()
    assert ws.compare.pair is None and not app.compare_view.is_shown


def test_refused_replacement_keeps_the_typed_text(app: App, models_dir: Path) -> None:
    ensure_short_run(app, models_dir)
    drag(app, 5, 9)
    dpg.set_value(app.edit_bar.replace_input, "naïve€")
    n_branches = len(app.workspace.store.branch_order)
    click(app.edit_bar.buttons["replace"])
    app.frame()
    assert "'ï', '€'" in app.status.text
    assert dpg.get_value(app.edit_bar.replace_input) == "naïve€"
    assert len(app.workspace.store.branch_order) == n_branches
    dpg.set_value(app.edit_bar.replace_input, "")


def test_help_lists_every_shortcut(app: App) -> None:
    from dpgviz.gui.keys import SHORTCUTS

    assert set(app.input.actions) <= {c for c, _ in SHORTCUTS}
    assert {"ctrl+enter", "escape", "ctrl+r", "m", "u", "p"} <= set(app.input.actions)


# -- probability inspection ---------------------------------------------------------------------
def test_hovering_a_token_shows_its_numbers_and_candidates(app: App, models_dir: Path) -> None:
    ensure_short_run(app, models_dir)
    ws = app.workspace
    set_slider(app, 1)  # iteration 1's prediction: every position was masked before it, so all have candidates
    x, y = app.canvas.pixel_of(42)
    app.input.pointer_hover(x, y)
    app.frame()
    tip = app.hover_tip
    assert tip.info is not None and tip.info.pos == 42
    row = ws.current_row()
    token = int(ws.store.columns["tokens"][row, 42])
    assert tip.info.token == ws.vocab.itos[token]
    assert tip.info.p == pytest.approx(float(ws.store.columns["confidence"][row, 42]))
    ids, probs = ws.store.candidates_at(row, 42)
    probs = probs.astype(np.float32)
    order = np.argsort(-probs, kind="stable")
    assert [c[0] for c in tip.info.candidates] == ids[order].tolist()
    assert [c[2] for c in tip.info.candidates] == pytest.approx(probs[order].tolist())
    assert tip.info.sampled_label == "this step"
    assert "position 42" in dpg.get_value(tip.title)
    assert f"{tip.info.p:.3f}" in dpg.get_value(tip.values)
    # A settled token later in the run shows the candidates of the step that last sampled it.
    from dpgviz.store.inspect import sampled_at

    seen_earlier = False
    for record in range(2, ws.n_records()):
        set_slider(app, record)
        sampled = sampled_at(ws.store, ws.rows(), 42, record)
        assert tip.info.record == record and tip.info.sampled_record == sampled
        if sampled is not None and sampled < record:
            seen_earlier = True
            assert tip.info.sampled_label.startswith(f"record {sampled + 1} (iteration")
            assert f"from record {sampled + 1}" in dpg.get_value(tip.source)
    assert seen_earlier  # some record showed candidates from an earlier step
    before = tip.rebuilds
    for _ in range(5):  # idle frames: nothing is rebuilt
        app.frame()
    assert tip.rebuilds == before


def test_a_candidate_key_places_it_as_an_edit(app: App, models_dir: Path) -> None:
    ensure_short_run(app, models_dir)
    ws = app.workspace
    set_slider(app, 1)
    x, y = app.canvas.pixel_of(7)
    app.input.pointer_hover(x, y)
    app.frame()
    second = app.hover_tip.info.candidates[1][0]
    click(app.input.key_handlers[dpg.mvKey_2])
    app.frame()
    assert ws.store.kind(ws.current_row()) == "edit"
    assert int(ws.store.columns["tokens"][ws.current_row(), 7]) == second


def test_pinning_shows_the_tokens_history(app: App, models_dir: Path) -> None:
    from dpgviz.store.inspect import history_arrays

    ensure_short_run(app, models_dir)
    ws = app.workspace
    app.view.pinned.clear()
    x, y = app.canvas.pixel_of(11)
    app.input.pointer_hover(x, y)
    click(app.input.key_handlers[dpg.mvKey_I])
    app.frame()
    app.frame()
    assert app.view.pinned == [11] and dpg.get_value(app.side_tabs) == app.tabs["Inspect"]
    data = app.inspector.data[11]
    want = history_arrays(ws.store, ws.rows(), 11)
    assert np.array_equal(data["tokens"], want["tokens"]) and np.array_equal(data["events"], want["events"])
    xs, ys = dpg.get_value(app.inspector.cards[11]["confidence"])[:2]
    assert len(xs) == ws.n_records()
    conf = want["confidence"].astype(np.float64)
    assert np.allclose(np.array(ys)[np.isfinite(conf)], conf[np.isfinite(conf)], atol=1e-6)
    assert "held:" in dpg.get_value(app.inspector.cards[11]["held"])
    app.view.unpin(11)
    app.frame()
    assert not app.inspector.cards


def test_run_plots_follow_the_branch_and_a_click_scrubs(app: App, models_dir: Path) -> None:
    from dpgviz.store.inspect import run_series

    ensure_short_run(app, models_dir)
    ws = app.workspace
    app.frame()
    want = run_series(ws.store, ws.rows())
    assert np.allclose(app.run_plots.data["masked"], want["masked_fraction"])
    app.run_plots.jump_to(3.2)
    app.frame()
    assert app.view.record == 3
    assert dpg.get_value(app.run_plots.now)[0][0] == 3.0


def test_clicking_the_overview_goes_to_that_step_and_position(app: App, models_dir: Path) -> None:
    ensure_short_run(app, models_dir)
    ws = app.workspace
    dpg.set_value(app.side_tabs, app.tabs["Overview"])
    for _ in range(3):
        app.frame()
    picture = app.overview.shown
    assert picture.shape[:2] == (ws.n_records(), min(ws.store.layout.seq_len, OVERVIEW_PX[0]))
    (x0, y0), (w, h) = dpg.get_item_rect_min(app.overview.image), dpg.get_item_rect_size(app.overview.image)
    record, pos = app.overview.click(x0 + 0.5 * w, y0 + 0.25 * h)
    app.frame()
    assert app.view.record == record == int(0.25 * ws.n_records())
    assert app.view.selection() == (pos, pos + 1) and 0 < pos < ws.store.layout.seq_len
    dpg.set_value(app.side_tabs, app.tabs["Branches"])


def test_resample_preview_is_labelled_and_changes_nothing_stored(app: App, models_dir: Path) -> None:
    ensure_short_run(app, models_dir)
    ws = app.workspace
    set_slider(app, 1)
    row = ws.current_row()
    stored = ws.store.get("tokens", row).copy()
    dpg.set_value(app.inspector.temperature, 2.5)
    dpg.set_value(app.inspector.top_p, 1.0)
    click(app.inspector.preview_button)
    app.frame()
    assert ws.inspect.preview is not None and "PREVIEW" in dpg.get_value(app.canvas._info)
    assert np.array_equal(ws.store.get("tokens", row), stored)
    ws.inspect.clear_preview()
    app.frame()
    assert "PREVIEW" not in dpg.get_value(app.canvas._info)


def test_a_run_longer_than_the_block_size_goes_in_blocks_and_shows_whole(app: App, models_dir: Path) -> None:
    from dpgviz.core.records import run_record_count

    ensure_model(app, models_dir)  # the tiny model: block size 256
    ws = app.workspace
    long = GenerationSettings(length=600, steps=3, seed=2)
    app.settings.write(long)
    click(app.settings.start_button)
    assert ws.is_running
    run_until(app, lambda: not ws.is_running, timeout_s=120)
    blocks = long.with_default_blocks(256)
    assert ws.store.layout.seq_len == 256 and ws.store.layout.total_len == 600
    assert ws.n_records() == run_record_count(blocks) == 3 * 7
    app.frame()
    shown = ws.inspect.shown()
    assert shown.seq_len == 600 and shown.n_masked == 0 and "block 3 of 3" in dpg.get_value(app.canvas._info)
    assert app.canvas.layout.seq_len == 600
    set_slider(app, 8)  # block 2's first prediction: block 1 finished, block 3 not started
    shown = ws.inspect.shown()
    tokens = shown.get("tokens")
    assert (tokens[:256] != ws.vocab.mask_id).all() and (tokens[512:] == ws.vocab.mask_id).all()
    info = ws.inspect.token_info(300)  # a position of block 2, from its own records
    assert info is not None and info.pos == 300 and info.candidates
    assert ws.inspect.token_info(550).sampled_label.startswith("block 3 has not started")
    app.view.pin(300)  # a position past the block size: its history is its block's (random input crashed here)
    app.frame()
    app.frame()
    block_rows = ws.rows()[ws.store.column("block")[ws.rows()] == 1]
    assert np.array_equal(app.inspector.data[300]["tokens"], ws.store.column("tokens")[block_rows, 300 - 256])
    assert not app.guard.caught
    app.view.unpin(300)


def test_a_step_switch_makes_the_same_calls_whatever_the_rows_shown(app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    """No per-row (or per-token) Python loop in the frame path: count the calls, not the time."""
    from dpgviz.bench.synthetic import synthetic_store, synthetic_vocab

    ws, vocab = app.workspace, synthetic_vocab()
    ws.compare.pair, ws.inspect.preview = None, None  # what earlier tests may have left open
    app.view.pinned.clear()
    app.view.clear_selection()
    app.view.hover_pos = None  # no tooltip: it redraws its 8 candidate bars per record (8, not per row)
    ws.doc.show_store(synthetic_store(65536, 4, vocab=vocab), vocab)
    for _ in range(3):  # showing a store fits the zoom once; let that pass before zooming by hand
        app.frame()
    counts = {}
    calls = {"n": 0}
    real_configure, real_set = dpg.configure_item, dpg.set_value

    def configure(*a, **k):
        calls["n"] += 1
        return real_configure(*a, **k)

    def set_value(*a, **k):
        calls["n"] += 1
        return real_set(*a, **k)

    for font_px in (12, 24):  # about twice the rows at the smaller zoom
        app.canvas.zoom(app.view, font_px)
        for _ in range(3):
            app.frame()
        monkeypatch.setattr(dpg, "configure_item", configure)
        monkeypatch.setattr(dpg, "set_value", set_value)
        per_switch = []
        for record in (1, 2, 3, 4, 5):
            calls["n"] = 0
            app.view.select(record, ws.n_records())
            app.update()
            per_switch.append(calls["n"])
        monkeypatch.undo()
        counts[font_px] = (max(per_switch), app.canvas.visible[1] - app.canvas.visible[0])
        app.frame()
    (calls_small, rows_small), (calls_big, rows_big) = counts[12], counts[24]
    assert rows_small > 1.5 * rows_big  # the zooms really show different numbers of rows
    # The same calls at either zoom, and fewer than the rows shown: nothing is done row by row.
    assert calls_small == calls_big < rows_big, counts


def test_strategy_settings_round_trip_and_show_only_their_knobs(app: App) -> None:
    from dpgviz.core.settings import STRATEGY_INFO

    chosen = GenerationSettings(
        length=100, steps=7, strategy="threshold", schedule="cosine", proposal="greedy", sample_top_k=5, top_p=0.9,
        threshold=0.7, eta=0.3, seed=4,
    )
    app.settings.write(chosen)
    assert app.settings.read() == chosen
    app.frame()
    shown = {k: dpg.is_item_shown(getattr(app.settings, k)) for k in ("randomness", "threshold", "eta")}
    assert shown == {"randomness": False, "threshold": True, "eta": False}
    assert dpg.get_value(app.settings.strategy_about) == STRATEGY_INFO["threshold"]
    app.settings.write(SHORT)  # seed: its randomness is back, the others go
    assert dpg.is_item_shown(app.settings.randomness) and not dpg.is_item_shown(app.settings.threshold)
    assert app.settings.read() == SHORT


def test_a_threshold_run_goes_past_its_steps_and_the_timeline_covers_it(app: App, models_dir: Path) -> None:
    ensure_model(app, models_dir)
    ws = app.workspace
    open_ended = GenerationSettings(length=60, steps=4, strategy="threshold", threshold=0.99, seed=2)
    app.settings.write(open_ended)
    click(app.settings.start_button)
    app.frame()  # notices reach the status bar in the frame
    assert ws.is_running and "until nothing is masked" in app.status.text
    assert "masked" in dpg.get_item_configuration(app.status.progress)["overlay"]
    run_until(app, lambda: not ws.is_running)
    n = ws.n_records()
    assert n > record_count(open_ended.steps)  # the random tiny model is unsure: one commit a step, or few
    assert dpg.get_item_configuration(app.timeline.slider)["max_value"] == n
    rows = ws.rows()
    assert ws.store.kind(rows[-1]) == "final" and int(ws.store.columns["n_masked"][rows[-1]]) == 0
    set_slider(app, n - 2)
    app.frame()
    info = dpg.get_value(app.canvas._info)
    assert info.startswith("iteration ") and " of " not in info.split("|")[0]


def test_a_strategy_comparison_opens_side_by_side(app: App, models_dir: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    ws = app.workspace
    if ws.is_running:
        ws.runs.stop()
        run_until(app, lambda: not ws.is_running, timeout_s=30)
    path = tmp_path / "cmp.dpgviz"
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, str(root / "main.py"), "compare", "--model", str(models_dir / "tiny" / "ckpt.pt"),
         "--strategies", "llada,margin,entropy", "--length", "60", "--steps", "4", "--device", "cpu", "--out", str(path)],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert ws.files.open(path)
    app.frame()
    labels = [ws.store.branches[b].label for b in ws.compare.pair]
    assert labels == ["llada", "margin"] and app.compare_view.is_shown
    assert ws.view.branch == ws.compare.pair[0]
    app.frame()
    view = app.compare_view
    titles = dpg.get_item_configuration(view.pickers[1])["items"]
    assert len(titles) == 4 and dpg.get_value(view.pickers[1]).endswith("margin")  # root + three runs
    entropy = next(t for t in titles if t.endswith("entropy"))
    view._picker_callback(1)(view.pickers[1], entropy)  # the right pane's combo: any other run
    app.frame()
    assert [ws.store.branches[b].label for b in ws.compare.pair] == ["llada", "entropy"]
    assert view.panes[1].shown_row in ws.rows(ws.compare.pair[1])
    view.pick(0, ws.compare.pair[1])  # the other pane's branch: the two swap
    app.frame()
    assert [ws.store.branches[b].label for b in ws.compare.pair] == ["entropy", "llada"]
    app.compare_view.close()
    app.frame()


def test_compare_strategies_window_runs_the_ticked_ones_side_by_side(app: App, models_dir: Path) -> None:
    ensure_model(app, models_dir)
    ws = app.workspace
    app.settings.write(SHORT)
    app.frame()
    click(app.settings.compare_button)
    app.frame()
    picker = app.settings.picker
    assert dpg.is_item_shown(picker.window)
    assert "threshold" not in picker.chosen() and "llada" in picker.chosen()  # open-ended: off by default
    for name, box in picker.boxes.items():
        dpg.set_value(box, name in ("seed", "origin"))
    assert picker.run() and not dpg.is_item_shown(picker.window)
    run_until(app, lambda: not ws.is_running and ws.compare.queue is None, timeout_s=120)
    assert app.compare_view.is_shown
    assert [ws.store.branches[b].label for b in ws.compare.pair] == ["seed", "origin"]
    shot(app, "7-compare-strategies")
    app.compare_view.close()
    app.frame()


def test_a_pin_past_a_shorter_run_is_dropped_not_a_crash(app: App, models_dir: Path) -> None:
    ensure_short_run(app, models_dir)  # 100 tokens
    ws = app.workspace
    app.view.pinned.clear()
    app.view.pin(90)
    app.view.select_tokens(80)
    app.view.drag_to(95)
    app.frame()
    assert 90 in app.inspector.data
    short = GenerationSettings(length=50, steps=3, seed=1)
    app.settings.write(short)
    click(app.settings.start_button)
    run_until(app, lambda: not ws.is_running)
    app.frame()
    assert app.view.pinned == [] and app.view.selection() is None
    assert not app.guard.caught  # nothing reached a boundary: the view was settled first


def test_a_failing_panel_is_reset_said_and_switched_off_while_the_rest_draws(
    app: App, models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dpgviz.gui.guard import MAX_FAILURES

    ensure_short_run(app, models_dir)
    ws = app.workspace
    n, caught = ws.n_records(), app.guard.caught
    calls = []

    def broken() -> None:
        calls.append(1)
        raise IndexError("position 874 outside 0..182")

    monkeypatch.setattr(app.inspector, "refresh", broken)
    app.view.pin(7)
    try:
        app.frame()
        assert app.view.pinned == []  # reset to its empty state
        app.frame()  # the message shows with the next frame's notices
        assert "Inspector failed: IndexError: position 874" in app.status.text and "details in" in app.status.text
        for _ in range(10):
            assert app.frame()  # the window keeps drawing
        assert len(calls) == MAX_FAILURES and "Inspector" in app.guard.disabled
        assert "off until the run, record or layout changes" in app.status.text
        assert ws.n_records() == n  # the records stay
        assert app.guard.caught == caught + MAX_FAILURES
        monkeypatch.undo()  # the inspector works again; it comes back with the next record
        set_slider(app, 1)  # the other panels still follow the view
        assert dpg.get_value(app.timeline.slider) == 2 and ws.inspect.shown().row == ws.rows()[1]
        app.frame()
        assert "Inspector" not in app.guard.disabled and "Inspector back on (the record changed)" in app.status.text
        assert app.guard.caught == caught + MAX_FAILURES
    finally:
        app.guard.disabled.discard("Inspector")
        app.guard.failures.pop("Inspector", None)


def test_a_failing_callback_is_caught_and_the_next_one_runs(app: App, models_dir: Path) -> None:
    ensure_short_run(app, models_dir)
    ws, n = app.workspace, app.workspace.n_records()
    with dpg.window(show=False):
        bad = dpg.add_button(callback=lambda: 1 / 0)
    record = app.view.record
    app.guard.run_callbacks([(dpg.get_item_callback(bad), bad, None, None),  # as the queue hands them over
                             (app.timeline._on_slider, app.timeline.slider, record, None)])
    app.frame()
    assert "ZeroDivisionError" in app.status.text
    assert app.view.record == max(0, record - 1)  # the callback after the failing one ran (slider counts from 1)
    assert ws.n_records() == n and app.frame()


def test_restart_worker_reloads_the_same_model_after_the_worker_died(app: App, models_dir: Path) -> None:
    ensure_short_run(app, models_dir)
    ws = app.workspace
    entry, n = ws.runs.model_entry, ws.n_records()
    os.kill(ws.runs.source.pid, signal.SIGKILL)
    run_until(app, lambda: ws.runs.source is None, timeout_s=10)
    app.frame()
    assert dpg.is_item_shown(app.status.restart_button) and "Restart worker" in app.status.text
    click(app.status.restart_button)
    run_until(app, lambda: ws.model_info is not None and not ws.runs.is_loading, timeout_s=60)
    assert ws.runs.model_entry == entry and ws.model_info.path == str(entry.path)
    assert ws.n_records() == n  # the records shown stay
    app.frame()
    assert not dpg.is_item_shown(app.status.restart_button)


def test_escape_closes_an_open_modal_dialog_first(app: App, models_dir: Path) -> None:
    ensure_short_run(app, models_dir)
    app.view.select_tokens(3)
    dpg.show_item(app.files.dialogs["open"])
    app.frame()
    app.input.press("escape")
    app.frame()
    assert not dpg.is_item_shown(app.files.dialogs["open"])
    assert app.view.selection() == (3, 4)  # the first Escape only closed the dialog
    app.input.press("escape")
    assert app.view.selection() is None


def test_every_colour_mode_with_compare_open_keeps_the_view(app: App, models_dir: Path) -> None:
    """Switching the colour mode while Compare is open: each derived mode (changed, order, ...)
    gets its arrays in both panes; none reaches a boundary, and the view stays open."""
    ws = app.workspace
    parent = ensure_short_run(app, models_dir)
    ws.view.record = 3
    assert ws.runs.continue_from(SHORT)
    run_until(app, lambda: not ws.is_running)
    child = ws.view.branch
    assert ws.compare.start(parent, child)
    set_slider(app, 2)
    caught = app.guard.caught
    for mode in palette.MODES:
        app.set_color_mode(mode.key)
        for _ in range(3):
            app.frame()
        assert app.guard.caught == caught, f"{mode.key}: {app.status.text}"
        assert ws.compare.pair == (parent, child) and app.compare_view.is_shown, mode.key
    app.set_color_mode("order")
    shot(app, "compare-order")
    app.set_color_mode("state")
    app.compare_view.close()
    app.frame()


def test_the_zoom_changes_only_by_hand_or_to_fit_a_new_length(app: App, models_dir: Path) -> None:
    """Start used to zoom a short run from 16 to 22 px (canvas.fit grew the cells at every Start)."""
    from dpgviz.bench.synthetic import synthetic_store, synthetic_vocab

    ensure_model(app, models_dir)
    ws, view, canvas = app.workspace, app.view, app.canvas
    saved = view.font_px, canvas.is_zoom_by_hand
    view.font_px, canvas.is_zoom_by_hand, canvas._fitted_len = 16, False, None  # as a fresh window
    try:
        for _ in range(2):  # a run, then another of the same length
            app.settings.write(SHORT)
            click(app.settings.start_button)
            run_until(app, lambda: not ws.is_running)
            assert view.font_px == 16 and dpg.get_value(app.zoom_slider) == 16
        w, h, _ = canvas._metrics
        at = lambda px: (int(w / (canvas._advance_ratio * px)) // canvas.vocab.slot_width) * int(h / px)  # noqa: E731
        n = at(16) + 1  # one token too many at 16 px, and few enough for a smaller size
        assert n <= at(12)
        vocab = synthetic_vocab()
        ws.doc.show_store(synthetic_store(n, 2, vocab=vocab), vocab)
        app.frame()
        assert 12 <= view.font_px < 16 and at(view.font_px) >= n  # shrunk just enough to fit
        canvas.zoom(view, 20)  # by hand: from now on the fit leaves it alone
        ws.doc.show_store(synthetic_store(n + 7, 2, vocab=vocab), vocab)
        app.frame()
        assert view.font_px == 20
    finally:
        view.font_px, canvas.is_zoom_by_hand = saved
        app.frame()


def test_a_single_selected_cell_is_ringed(app: App, tmp_path: Path) -> None:
    """After Go to, one selected cell under a translucent white tint all but vanished on light cells."""
    from dpgviz.bench.synthetic import synthetic_store, synthetic_vocab

    ws, vocab = app.workspace, synthetic_vocab()
    ws.doc.show_store(synthetic_store(400, 3, vocab=vocab), vocab)
    ws.compare.pair, ws.inspect.preview = None, None
    app.view.clear_selection()
    app.view.top_row = 0
    app.frame()
    before = grab(app, tmp_path / "none.png")
    dark, bright = (rgba[:3] for rgba in palette.SELECTION_OUTLINE)
    pos = 2 * app.canvas.cols + 5  # row 2: room for the ring all around
    app.view.select_tokens(pos)
    app.frame()
    pixels = grab(app, tmp_path / "one.png")
    x, y = app.canvas.pixel_of(pos)
    x0, y0 = dpg.get_item_rect_min(app.canvas.plot)
    cell_w, row_h = app.canvas._advance_ratio * app.view.font_px, float(app.view.font_px)
    near = np.zeros(pixels.shape[:2], bool)
    near[int(y - y0 - row_h) : int(y - y0 + row_h) + 1, int(x - x0 - cell_w) : int(x - x0 + cell_w) + 1] = True
    assert is_color(pixels[near], bright, tol=8).sum() >= 2 * (cell_w + row_h)  # a ring around the cell
    assert is_color(pixels[near], dark, tol=8).sum() >= 2 * (cell_w + row_h)
    assert not is_color(before, bright, tol=8).any()  # nothing else on the canvas has its colour
    assert not is_color(pixels[~near], bright, tol=8).any()  # only around the selected cell
    app.view.clear_selection()
    app.frame()
    assert not is_color(grab(app, tmp_path / "cleared.png"), bright, tol=8).any()
