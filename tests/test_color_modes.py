"""One colour-mode registry (core.color_modes): a mode registered at runtime, with a value function
and a legend and nothing else edited, is in the window's mode combo and legend, a PNG export, the
overview, `export --mode`'s choices and the HTML player's data.

The test mode, "idrank", colours each cell by its token's rank in the vocabulary (id / (V - 1)),
a number nothing stores, so every view must get it from the mode's own `values(cells)`. The window
part runs in a child pytest under Xvfb (Dear PyGui hosts one App per process; see
tests/test_gui_files.py): `test_window_in_its_own_process` starts it with DPGVIZ_COLOR_MODES_SCENARIO=1.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from session_data import sampled_store

from dpgviz.core import color_modes
from dpgviz.core.palette import STATE_MASKED, STATE_RGB, value_levels

HAS_DISPLAY = bool(os.environ.get("DISPLAY"))
SCENARIO = os.environ.get("DPGVIZ_COLOR_MODES_SCENARIO", "")
TOP_RGB = (255, 0, 255)  # a swatch colour no built-in legend uses


def _idrank(cells: color_modes.Cells) -> np.ndarray:
    tokens = np.asarray(cells.field("tokens"), dtype=np.float32)
    return tokens / np.float32(max(1, cells.vocab_size - 1))


def _idrank_legend(mode: color_modes.ColorMode, vocab_size: int) -> list[color_modes.LegendItem]:
    return [color_modes.LegendItem(scale=("id 0", f"id {vocab_size - 1}")),
            color_modes.LegendItem("top id", TOP_RGB),
            color_modes.LegendItem("masked", tuple(int(c) for c in STATE_RGB[STATE_MASKED]))]


def idrank_mode() -> color_modes.ColorMode:
    return color_modes.ColorMode(
        "idrank", "Token id rank", "value", "Rank of the token's id in the vocabulary (a test mode)",
        values=_idrank, swatches=_idrank_legend, player=True,
    )


@pytest.fixture
def idrank():
    mode = color_modes.register(idrank_mode())
    yield mode
    color_modes.unregister("idrank")


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    from dpgviz.store.session_save import save_session

    store, vocab, settings = sampled_store()
    return save_session(tmp_path_factory.mktemp("s") / "run.dpgviz", store, vocab, settings=settings.to_dict())


def expected_rgb(tokens: np.ndarray, flags: np.ndarray, vocab_size: int) -> np.ndarray:
    """The test mode's colours, computed here without the registry: viridis of id / (V - 1)."""
    values = tokens.astype(np.float32) / np.float32(vocab_size - 1)
    from dpgviz.core.palette import VIRIDIS_RGB

    rgb = VIRIDIS_RGB[value_levels(values, 0.0, 1.0)]
    del flags  # every token has a value: no masked / no-value grey in this mode
    return rgb


# -- registry ---------------------------------------------------------------------------------------
def test_registry_names_aliases_and_refusals(idrank) -> None:
    assert color_modes.names()[-1] == "idrank" and color_modes.get("idrank") is idrank
    assert color_modes.canonical("mask-state") == "state"  # the old export name is read, never listed
    assert "mask-state" not in color_modes.names()
    with pytest.raises(ValueError, match="unknown colour mode 'nope'; choose one of state, "):
        color_modes.get("nope")
    with pytest.raises(ValueError, match="taken"):
        color_modes.register(color_modes.ColorMode("other", "Other", "states", aliases=("idrank",)))
    with pytest.raises(ValueError, match="needs a record field or a values function"):
        color_modes.ColorMode("bad", "Bad", "value")


# -- exports and the CLI ----------------------------------------------------------------------------
def test_export_mode_choices_list_a_runtime_mode(idrank, saved, tmp_path) -> None:
    """`export --mode` is built from the registry when the parser is built (in-process: a
    subprocess would not see a runtime registration)."""
    from dpgviz.cli import build_parser, main

    parser = build_parser(("sessions",))
    export = parser._subparsers._group_actions[0].choices["export"]
    mode = next(a for a in export._actions if "--mode" in a.option_strings)
    assert "idrank" in mode.choices and "state" in mode.choices and "mask-state" not in mode.choices
    assert "idrank" in export.format_help()
    out = tmp_path / "cli.png"
    assert main(["export", str(saved), "--format", "png", "--mode", "idrank", "--out", str(out)]) == 0
    assert out.exists()


def test_png_export_cells_use_the_modes_colours(idrank, saved, tmp_path) -> None:
    from dpgviz.export import export_session
    from dpgviz.export.images import FramePainter
    from dpgviz.store.session_open import open_session

    with open_session(saved) as s:
        k = 3
        out = export_session(s, "png", tmp_path / "idrank.png", record=k, mode="idrank")
        painter = FramePainter(s, mode="idrank")
        row = s.rows()[k]
        tokens, flags = s.store.get("tokens", row).astype(np.intp), s.store.get("flags", row)
        want = expected_rgb(tokens, flags, s.vocab.size)
        frame = np.asarray(Image.open(out).convert("RGB"))
        assert np.array_equal(frame, np.asarray(painter.frame(k)))
    n, raster = len(tokens), painter.raster
    _, cols = raster.grid_shape(n)
    pos = np.arange(n)
    glyph = raster.atlas[painter._atlas_row[tokens]][:, :-1, :-1]  # a pixel its glyph leaves blank
    blank = np.argmax(glyph.reshape(n, -1) == 0, axis=1)
    by, bx = np.divmod(blank, glyph.shape[2])
    top = 8 + painter.line_h  # MARGIN_PX + the caption line
    background = frame[top + (pos // cols) * raster.cell_h + by, 8 + (pos % cols) * raster.cell_w + bx]
    assert np.array_equal(background, want)
    assert len(np.unique(want, axis=0)) > 5  # the ids spread over the scale
    # its legend: the swatch only this mode has is drawn under the grid
    assert (frame[top + raster.image_size(n)[1] :] == TOP_RGB).all(axis=-1).sum() >= 25


def test_overview_uses_the_modes_values_and_colours(idrank, saved, tmp_path) -> None:
    from dpgviz.export import export_session
    from dpgviz.store import overview as ov
    from dpgviz.store.session_open import open_session

    with open_session(saved) as s:
        rows = s.rows()
        view = ov.overview_values(s.store, rows, "idrank", s.vocab.size)
        tokens = s.store.column("tokens")[np.ix_(rows[view.records], view.positions)]
        flags = s.store.column("flags")[np.ix_(rows[view.records], view.positions)]
        grid = ov.overview_rgb(view)
        out = export_session(s, "overview", tmp_path / "ov.png", mode="idrank")
        n_records, size = len(rows), s.vocab.size
    assert np.array_equal(grid, expected_rgb(tokens, flags, size))
    im = np.asarray(Image.open(out).convert("RGB"))
    scale = 600 // grid.shape[1]
    h, w = grid.shape[0] * scale, grid.shape[1] * scale
    np.testing.assert_array_equal(im[26 : 26 + h : scale, 8 : 8 + w : scale], grid)
    assert (im[26 + h :] == TOP_RGB).all(axis=-1).sum() >= 25  # the mode's own legend
    assert grid.shape[0] == n_records


def test_html_player_lists_the_mode_its_legend_and_its_values(idrank, saved, tmp_path) -> None:
    import base64
    import zlib

    from dpgviz.export import export_session
    from dpgviz.store.session_open import open_session

    with open_session(saved) as s:
        page = export_session(s, "html", tmp_path / "p.html").read_text(encoding="utf-8")
        rows, n, size = s.rows(), s.store.layout.seq_len, s.vocab.size
        tokens = s.store.column("tokens")[rows]
    data = json.loads(re.search(r'<script id="session-data" type="application/json">(.*?)</script>', page, re.S).group(1))
    modes = {m["name"]: m for m in data["modes"]}
    assert list(modes)[:2] == ["state", "confidence"] and "idrank" in modes
    assert modes["idrank"]["kind"] == "value" and modes["idrank"]["label"] == "Token id rank"
    assert modes["idrank"]["legend"] == idrank.legend_json(size)
    assert {"label": "top id", "rgb": "#ff00ff"} in modes["idrank"]["legend"]
    raw = np.frombuffer(zlib.decompress(base64.b64decode(data["values"]["idrank"]["levels"])), np.uint8)
    levels = np.bitwise_xor.accumulate(raw.reshape(-1, n), axis=0)
    assert np.array_equal(levels, value_levels(tokens.astype(np.float32) / np.float32(size - 1), 0.0, 1.0))
    if shutil.which("node") is None:
        return
    from test_export import _NODE_DOM, _run_player

    check = """
(async () => {
  await ready;
  const bg = [], legendText = [];
  for (let r = 0; r < R; r++) for (let i = 0; i < N; i++) bg.push(colourOf("idrank", r, i)[0]);
  __els.mode.value = "idrank"; __els.legend.children = []; legend();  // the stub's textContent = "" keeps children
  for (const c of __els.legend.children) legendText.push(c.children.length ? c.children[c.children.length - 1] : c.textContent);
  console.log(JSON.stringify({ bg, options: __els.mode.children.map((o) => o.value), legend: legendText }));
})();
"""
    assert _NODE_DOM  # the stub DOM the player runs on (tests/test_export.py)
    shown = _run_player(page, tmp_path, check)
    want = expected_rgb(tokens, None, size).reshape(-1, 3)
    assert shown["bg"] == [f"#{r:02x}{g:02x}{b:02x}" for r, g, b in want.tolist()]  # the PNG's colours, every cell
    assert "idrank" in shown["options"] and shown["options"][0] == "state"
    assert shown["legend"] == [f" id {size - 1}", "top id", "masked"]  # the scale's top, then the swatches


def test_bench_overview_times_every_registered_mode(idrank, capsys) -> None:
    """`bench overview --json` (small here): one time per mode the overview draws, the runtime one too."""
    from dpgviz.cli import main

    assert main(["bench", "overview", "--tokens", "2048", "--steps", "5", "--repeats", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["modes"]) == {m.name for m in color_modes.modes() if m.overview} and "idrank" in result["modes"]
    assert result["records"] == 11 and result["positions"] == 2048 and result["not_drawn"] == ["disagreement"]
    assert result["ratio"] == pytest.approx(result["modes"][result["slowest"]] / result["modes"][result["fastest"]], rel=0.02)


def test_unregistered_mode_is_refused_by_the_exports(saved, tmp_path) -> None:
    from dpgviz.export import export_session
    from dpgviz.store.session import SessionError
    from dpgviz.store.session_open import open_session

    with open_session(saved) as s, pytest.raises(SessionError, match="unknown colour mode 'idrank'"):
        export_session(s, "png", tmp_path / "x.png", mode="idrank")
    assert not (tmp_path / "x.png").exists()


# -- the window (a child process) -----------------------------------------------------------------
@pytest.mark.gui
@pytest.mark.skipif(not HAS_DISPLAY or bool(SCENARIO), reason="needs an X display (run under xvfb-run -a)")
def test_window_in_its_own_process(tmp_path: Path) -> None:
    env = {**os.environ, "DPGVIZ_COLOR_MODES_SCENARIO": "1"}
    env.setdefault("DPGVIZ_SHOTS", str(tmp_path / "shots"))
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--basetemp", str(tmp_path / "t"),
           "-k", "scenario_", str(Path(__file__))]
    proc = subprocess.run(cmd, cwd=Path(__file__).parent.parent, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert " passed" in proc.stdout and "skipped" not in proc.stdout, proc.stdout[-2000:]


scenario = pytest.mark.skipif(not (HAS_DISPLAY and SCENARIO), reason="runs in the child process only")


@pytest.fixture(scope="module")
def app():
    from dpgviz.gui.app import App

    color_modes.register(idrank_mode())  # before the window is built: its combo and legend read the registry
    app = App(autoload=False, width=1600, height=1000).build()
    for _ in range(3):
        app.frame()
    yield app
    app.close()
    color_modes.unregister("idrank")


@scenario
def test_scenario_the_combo_legend_and_canvas_show_the_mode(app, shots: Path) -> None:
    import dearpygui.dearpygui as dpg
    from gui_frames import grab

    from dpgviz.bench.synthetic import synthetic_store, synthetic_vocab

    assert "Token id rank" in dpg.get_item_configuration(app.mode_combo)["items"]
    vocab = synthetic_vocab()
    ws = app.workspace
    ws.doc.show_store(synthetic_store(300, 6, vocab=vocab), vocab)
    ws.view.select(ws.n_records() - 1, ws.n_records())
    app.set_color_mode("idrank")
    for _ in range(3):
        app.frame()
    group = app.legend._groups["idrank"]
    assert dpg.is_item_shown(group) and not dpg.is_item_shown(app.legend._groups["state"])
    texts = [dpg.get_value(i) for i in dpg.get_item_children(group, 1) if dpg.get_item_type(i).endswith("mvText")]
    assert texts == ["id 0", f"id {vocab.size - 1}", "top id", "masked"], texts
    extras = ws.inspect.cell_extras("idrank")
    tokens = ws.store.column("tokens")[ws.rows()[-1]]
    np.testing.assert_array_equal(extras.arrays["idrank"], tokens.astype(np.float32) / np.float32(vocab.size - 1))
    frame = grab(app, shots / "registry-idrank-window.png")
    # the canvas draws the mode's colours: cells in the viridis levels of their ids
    want = np.unique(expected_rgb(tokens, None, vocab.size), axis=0).astype(int)
    pixels = frame.reshape(-1, 3).astype(int)
    near = np.zeros(len(pixels), dtype=bool)
    for rgb in want:
        near |= (np.abs(pixels - rgb).max(axis=1) <= 2)
    assert near.sum() > 2000, near.sum()
    assert (np.abs(pixels - TOP_RGB).max(axis=1) <= 2).sum() >= 25  # the legend's own swatch
    app.set_color_mode("state")
    app.frame()
    assert not dpg.is_item_shown(group)
