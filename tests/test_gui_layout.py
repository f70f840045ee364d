"""Canvas layout, palette and view state: pure numpy, no window."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from dpgviz.app.view_state import ViewState
from dpgviz.core import color_modes
from dpgviz.core.records import FLAG_EDITED, FLAG_MASKED, FLAG_NEW, FLAG_PROTECTED, FLAG_REMASKED
from dpgviz.gui import palette
from dpgviz.gui.layout import (
    _wrap_mixed,
    char_table,
    grid_layout,
    pos_at,
    row_strings,
    scatter_cells,
    text_layout,
    visible_rows,
    wrap,
)


# -- layout ---------------------------------------------------------------------------
def test_grid_layout_fills_rows_in_order() -> None:
    layout = grid_layout(10, cols=4)
    assert layout.row.tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]
    assert layout.col.tolist() == [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]
    assert layout.n_rows == 3
    assert layout.row_first.tolist() == [0, 4, 8, 10]


def test_same_as_compares_cell_placement() -> None:
    """Equal placements compare equal (separately built); another row width does not."""
    assert grid_layout(100, 7).same_as(grid_layout(100, 7))
    assert not grid_layout(100, 7).same_as(grid_layout(100, 8))
    assert not grid_layout(100, 7).same_as(None)


def test_grid_slots_wider_than_one_cell() -> None:
    layout = grid_layout(5, cols=7, slot_width=3)  # two 3-cell slots fit a 7-cell row
    assert layout.row.tolist() == [0, 0, 1, 1, 2]
    assert layout.col.tolist() == [0, 3, 0, 3, 0]


def test_text_layout_breaks_after_newlines() -> None:
    ids = {"a": 0, "b": 1, "\n": 2}
    tokens = np.array([ids[c] for c in "ab\nba\n\na"])
    layout = text_layout(tokens, np.ones(3, np.int64), newline_id=2, cols=10)
    assert layout.row.tolist() == [0, 0, 0, 1, 1, 1, 2, 3]
    assert layout.col.tolist() == [0, 1, 2, 0, 1, 2, 0, 0]


def test_text_layout_wraps_long_lines() -> None:
    layout = text_layout(np.zeros(7, np.int64), np.ones(1, np.int64), newline_id=None, cols=3)
    assert layout.row.tolist() == [0, 0, 0, 1, 1, 1, 2]


def test_mixed_widths_never_straddle_rows() -> None:
    layout = wrap(np.array([2, 3, 1, 4, 2]), cols=5)
    assert layout.row.tolist() == [0, 0, 1, 1, 2]
    assert layout.col.tolist() == [0, 2, 0, 1, 0]
    assert (layout.col + layout.width <= 5).all()


def test_token_wider_than_a_row_is_clipped_to_the_row() -> None:
    layout = wrap(np.array([1, 9, 1]), cols=4)
    assert layout.row.tolist() == [0, 1, 2]
    assert layout.width.tolist() == [1, 4, 1]


@pytest.mark.parametrize("seed", range(5))
def test_uniform_and_mixed_wrapping_agree(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, cols = 500, int(rng.integers(3, 40))
    breaks = rng.random(n) < 0.05
    for width in (1, 2):  # the uniform path (row_first only, rows built per slice) vs the general one
        uniform = wrap(width, cols, breaks, n=n)
        assert uniform.slot == width
        row_m, col_m = _wrap_mixed(np.full(n, width, np.int64), cols, breaks)
        assert uniform.row.tolist() == row_m.tolist()
        assert uniform.col.tolist() == col_m.tolist()
        sl = uniform.positions(3, 9)  # a slice computes the same rows and columns as the whole
        rows, cols_, widths = uniform.span(sl)
        assert rows.tolist() == row_m[sl].tolist() and cols_.tolist() == col_m[sl].tolist()
        assert (widths == width).all()


def test_text_rows_starting_evenly_with_a_longer_last_line_are_no_grid() -> None:
    """gui-monkey seed 31: nine 6-token lines (5 letters and a newline) and a 10-letter last line
    in 13 columns start every row 6 positions apart, so the layout took them for a grid of 6 per
    row and put position 60 in row 10 of 10: `IndexError: index 130 is out of bounds for axis 0
    with size 130` in scatter_cells, every frame, until the canvas was disabled."""
    ids = {"a": 0, "\n": 1}
    text = "aaaaa\n" * 9 + "a" * 10
    tokens = np.array([ids[c] for c in text])
    layout = text_layout(tokens, np.ones(2, np.int64), newline_id=1, cols=13)
    assert layout.n_rows == 10 and layout.row_first[-2:].tolist() == [54, 64]
    grids = scatter_cells(layout, 0, 10, {"v": (np.arange(64), -1)})  # raised IndexError here
    assert grids["v"][9].tolist() == list(range(54, 64)) + [-1] * 3
    rows, cols, _ = layout.span(slice(54, 64))
    assert rows.tolist() == [9] * 10 and cols.tolist() == list(range(10))
    _assert_pos_at_inverts_cell_of(layout)


@pytest.mark.parametrize("seed", range(6))
def test_uniform_span_agrees_with_the_general_wrap_on_regular_lines(seed: int) -> None:
    """Lines of one length (the rows start evenly) and a last line of any length up to cols."""
    rng = np.random.default_rng(seed)
    cols = int(rng.integers(4, 30))
    line = int(rng.integers(1, cols))
    last = int(rng.integers(1, cols + 1))
    breaks = np.zeros(line * int(rng.integers(1, 12)) + last, bool)
    breaks[line - 1 : len(breaks) - last : line] = True
    uniform = wrap(1, cols, breaks, n=len(breaks))
    row_m, col_m = _wrap_mixed(np.ones(len(breaks), np.int64), cols, breaks)
    rows, cols_, _ = uniform.span(slice(0, len(breaks)))
    assert rows.tolist() == row_m.tolist() and cols_.tolist() == col_m.tolist()
    assert scatter_cells(uniform, 0, uniform.n_rows, {"v": (np.arange(len(breaks)), -1)})["v"].max() == len(breaks) - 1

def _assert_pos_at_inverts_cell_of(layout) -> None:
    """Every cell of every token maps back to it; every other cell of the rows (and beyond) is None."""
    covered = set()
    for pos in range(layout.seq_len):
        r, c = layout.cell_of(pos)
        for dc in range(int(layout.width[pos])):
            assert pos_at(layout, r, c + dc) == pos, (pos, r, c + dc)
            covered.add((r, c + dc))
    for r in range(-1, layout.n_rows + 2):
        for c in range(-1, layout.cols + 2):
            if (r, c) not in covered:
                assert pos_at(layout, r, c) is None, (r, c)


def test_pos_at_inverts_cell_of_in_a_grid() -> None:
    _assert_pos_at_inverts_cell_of(grid_layout(10, cols=4))  # last row half full
    _assert_pos_at_inverts_cell_of(grid_layout(5, cols=7, slot_width=3))  # wide slots, a spare cell per row


def test_pos_at_inverts_cell_of_in_text_layouts() -> None:
    ids = {"a": 0, "b": 1, "\n": 2}
    tokens = np.array([ids[c] for c in "ab\nba\n\naaaaaaa"])
    _assert_pos_at_inverts_cell_of(text_layout(tokens, np.ones(3, np.int64), newline_id=2, cols=4))


@pytest.mark.parametrize("seed", range(4))
def test_pos_at_inverts_cell_of_with_mixed_widths(seed: int) -> None:
    rng = np.random.default_rng(seed)
    widths = rng.integers(1, 5, 60)
    breaks = rng.random(60) < 0.1
    _assert_pos_at_inverts_cell_of(wrap(widths, cols=int(rng.integers(3, 12)), breaks=breaks))


def test_pos_at_of_an_empty_layout_is_none() -> None:
    assert pos_at(wrap(np.empty(0, np.int64), cols=4), 0, 0) is None


def test_positions_of_rows_is_a_slice() -> None:
    layout = grid_layout(10, cols=4)
    assert layout.positions(1, 3) == slice(4, 10)
    assert layout.positions(2, 99) == slice(8, 10)
    assert layout.positions(5, 9) == slice(10, 10)


def test_visible_rows_clamps_scroll() -> None:
    assert visible_rows(0, 10, 4) == (0, 4)
    assert visible_rows(50, 10, 40) == (30, 40)
    assert visible_rows(-3, 10, 40) == (0, 10)
    assert visible_rows(5, 10, 40) == (5, 15)


def test_scatter_cells_fills_only_covered_cells() -> None:
    layout = grid_layout(10, cols=4)
    sl = layout.positions(1, 3)
    values = np.arange(10)[sl]
    grids = scatter_cells(layout, 1, 3, {"v": (values, -1)})
    assert grids["v"].tolist() == [[4, 5, 6, 7], [8, 9, -1, -1]]


def test_scatter_cells_spells_wide_tokens() -> None:
    chars = char_table(np.array(["ab", "c", "xyz"], dtype=object), 3)
    tokens = np.array([0, 1, 2])
    layout = wrap(chars_width := np.array([2, 1, 3]), cols=4)
    assert chars_width.sum() == 6
    grids = scatter_cells(layout, 0, layout.n_rows, {"v": (tokens, -1)}, tokens=tokens, chars_by_id=chars)
    assert row_strings(grids["chars"]) == ["abc ", "xyz "]
    assert grids["v"].tolist() == [[0, 0, 1, -1], [2, 2, 2, -1]]


def test_row_strings_joins_each_row() -> None:
    grid = np.array([list("ab c"), list("↵d  ")], dtype="<U1")
    assert row_strings(grid) == ["ab c", "↵d  "]


# -- palette --------------------------------------------------------------------------
def test_state_priority() -> None:
    flags = np.array([0, FLAG_NEW, FLAG_MASKED, FLAG_MASKED | FLAG_REMASKED, FLAG_PROTECTED | FLAG_NEW, FLAG_EDITED])
    got = palette.state_indices(flags)
    want = [palette.STATE_INDEX[k] for k in ("visible", "new", "masked", "remasked", "protected", "edited")]
    assert got.tolist() == want


def test_levels_use_masked_and_no_value_colours() -> None:
    values = np.array([0.0, 0.999, np.nan, np.nan, 0.5], dtype=np.float16)
    flags = np.array([0, 0, FLAG_MASKED, 0, FLAG_MASKED])
    got = palette.level_indices(values, flags, 0.0, 1.0)
    assert got.tolist() == [palette.LEVEL0, palette.LEVEL0 + palette.LEVELS - 1, palette.MASKED, palette.NO_VALUE,
                            palette.LEVEL0 + palette.LEVELS // 2]


def test_heat_values_select_exact_colours() -> None:
    """ImPlot's qualitative lookup: index = int(N * (v - min) / (max - min)), min 0, max N."""
    idx = np.arange(palette.N_COLORS)
    t = palette.heat_values(idx) / palette.N_COLORS
    assert (np.clip((palette.N_COLORS * t).astype(int), 0, palette.N_COLORS - 1) == idx).all()


def test_text_ink_contrasts_with_cells() -> None:
    assert palette.TEXT_ON_LIGHT[palette.STATE_INDEX["protected"]]  # yellow: dark ink
    assert not palette.TEXT_ON_LIGHT[palette.STATE_INDEX["visible"]]  # dark cell: light ink
    assert not palette.TEXT_ON_LIGHT[palette.LEVEL0]  # dark end of viridis
    assert palette.TEXT_ON_LIGHT[palette.LEVEL0 + palette.LEVELS - 1]  # yellow end of viridis


@pytest.mark.parametrize("mode_key", color_modes.names())
def test_canvas_colours_match_the_exports(mode_key: str) -> None:
    """Every registered mode, of each kind: the canvas's colormap indices pick the colours the
    exports' core.color_modes.cell_rgb gives the same cells."""
    rng = np.random.default_rng(1)
    flags = rng.integers(0, 32, 500).astype(np.uint8)
    spec = color_modes.get(mode_key)
    if spec.kind == "binary":
        values = rng.random(500) < 0.3
    else:
        values = np.where(rng.random(500) < 0.2, np.nan, rng.random(500) * 4.0).astype(np.float16)
    mode = palette.for_vocab(palette.MODE_BY_KEY[mode_key], 65)
    got = palette.COLORS[palette.mode_indices(mode, {"flags": flags, mode.field or "flags": values if mode.field else flags})]
    want = color_modes.cell_rgb(spec, flags, values if mode.field else None, 65)
    assert (got == want).all()


def test_palette_colours_are_distinct() -> None:
    states = {tuple(c) for c in palette.COLORS[1 : 1 + len(palette.STATES)]}
    assert len(states) == len(palette.STATES)


# -- view state -------------------------------------------------------------------------
def test_follow_live_tracks_newest_record() -> None:
    view = ViewState()
    view.advance(5, 0.016)
    assert view.record == 4
    view.advance(9, 0.016)
    assert view.record == 8


def test_stepping_back_stops_following() -> None:
    view = ViewState()
    view.advance(9, 0.016)
    view.step(-1, 9)
    assert (view.record, view.follow_live) == (7, False)
    view.advance(12, 0.016)
    assert view.record == 7
    view.end(12)
    assert (view.record, view.follow_live) == (11, True)


def test_play_advances_at_speed_and_stops_at_end() -> None:
    view = ViewState(play_speed=10.0)
    view.home(20)
    view.toggle_play(20)
    view.advance(20, 0.25)  # 2.5 records
    assert view.record == 2
    view.advance(20, 10.0)
    assert view.record == 19 and not view.playing


def test_play_at_end_restarts_from_first_record() -> None:
    view = ViewState()
    view.advance(5, 0.0)
    view.toggle_play(5)
    assert view.record == 0 and view.playing


def test_select_clamps() -> None:
    view = ViewState()
    view.select(99, 10)
    assert view.record == 9
    view.select(-4, 10)
    assert view.record == 0


# -- app helpers and the process boundary ----------------------------------------------
def test_record_count_and_continue_point() -> None:
    from dpgviz.core.records import continue_point, record_count

    assert record_count(20) == 41
    assert record_count(20, start_iteration=5) == 31
    assert continue_point("initial", 3) == 3
    assert continue_point("edit", 3) == 3  # an edit record stores where its restart begins
    assert continue_point("remask", 3) == 4
    assert continue_point("prediction", 3) == 4


def test_gui_process_never_imports_torch() -> None:
    code = (
        "import sys\n"
        "import dpgviz.gui.app, dpgviz.bench, dpgviz.bench.gui\n"
        "bad = [m for m in sys.modules if m == 'torch' or m.startswith(('torch.', 'dpgviz.engine'))]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


LOAD_AND_RUN = """
import sys, time
from pathlib import Path
import dpgviz.gui.app
from dpgviz.app.workspace import Workspace
from dpgviz.core.discovery import ModelEntry
from dpgviz.core.settings import GenerationSettings

ckpt = Path(sys.argv[1])
with Workspace(device="cpu") as ws:  # the window's state: the real client, the spawned worker
    ws.runs.load_model(ModelEntry("tiny", ckpt, ckpt.with_name("meta.pkl")))
    deadline = time.monotonic() + 60
    while ws.model_info is None:
        assert time.monotonic() < deadline, "no model within 60 s"
        ws.update(0.01)
        time.sleep(0.005)
    assert ws.runs.start(GenerationSettings(length=40, steps=3, seed=1))
    while ws.is_running:
        assert time.monotonic() < deadline, "the run never ended"
        ws.update(0.01)
        time.sleep(0.005)
    assert ws.n_records() > 0
    print("version", type(ws.model_info.torch_version).__module__, ws.model_info.torch_version)
bad = [m for m in sys.modules if m == "torch" or m.startswith(("torch.", "dpgviz.engine"))]
print("torch modules:", ",".join(bad))
"""


def test_window_process_has_no_torch_after_a_model_load_and_a_run(tmp_path) -> None:
    """A fresh process with the window's modules loads a model in the spawned worker and runs it:
    the ModelLoaded message (ModelInfo) and the records must not import torch on unpickling
    (torch.__version__, a torch.torch_version.TorchVersion, used to)."""
    from model_data import tiny_checkpoint

    ckpt = tiny_checkpoint(tmp_path / "tiny")
    done = subprocess.run([sys.executable, "-c", LOAD_AND_RUN, str(ckpt)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "version builtins " in done.stdout, done.stdout[:300]
    assert done.stdout.strip().endswith("torch modules:"), done.stdout[:300]


def test_model_info_holds_only_builtins() -> None:
    """Whatever the worker hands in (a str subclass, numpy scalars), ModelInfo keeps builtins, so
    its pickle names no module but its own."""
    import dataclasses
    import io
    import pickle

    from dpgviz.core.model_info import ModelInfo

    class Version(str):  # as torch.torch_version.TorchVersion
        def __str__(self) -> str:
            return self

    info = ModelInfo(
        name=Version("tiny"), path=Version("/x/ckpt.pt"), block_size=np.int64(128), params=np.int32(9), itos=("a", Version("b")),
        n_ids=np.uint16(3), threads=np.int64(2), iter_num=np.int64(5), best_val_loss=np.float32(1.5),
        stand_ins=(Version("Q"),), never_sample=np.array([2]), dtype=Version("float32"), tokenizer=Version("char"),
        chat_wrap=(np.array([1]), [np.int64(2)]), eos_id=np.int64(1), torch_version=Version("2.13.0"),
    )
    for field in dataclasses.fields(ModelInfo):
        value = getattr(info, field.name)
        for item in (value if isinstance(value, tuple) else (value,)):
            for leaf in (item if isinstance(item, tuple) else (item,)):
                assert type(leaf).__module__ == "builtins", (field.name, type(leaf))
    classes = []

    class Recording(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> type:
            classes.append((module, name))
            return super().find_class(module, name)

    assert Recording(io.BytesIO(pickle.dumps(info))).load() == info
    assert classes == [("dpgviz.core.model_info", "ModelInfo")]


def test_edited_and_protected_cells_keep_their_colours_in_value_modes() -> None:
    flags = np.array([0, FLAG_EDITED, FLAG_PROTECTED, FLAG_EDITED | FLAG_PROTECTED, FLAG_MASKED | FLAG_EDITED], np.uint8)
    levels = np.full(5, palette.LEVEL0 + 7, dtype=np.uint16)
    marked = palette.with_hand_marks(levels, flags)
    assert marked.tolist() == [
        palette.LEVEL0 + 7,  # untouched
        palette.STATE_INDEX["edited"],
        palette.STATE_INDEX["protected"],
        palette.STATE_INDEX["protected"],  # protected wins, as in mask-state mode
        palette.LEVEL0 + 7,  # a masked cell keeps what the mode shows for it
    ]
    assert (palette.state_indices(flags[1:4]) == marked[1:4]).all()  # the same colours as mask-state mode


def test_overlay_tints_are_translucent_entries_after_the_cells() -> None:
    colors = palette.colormap_colors()
    assert len(colors) == palette.N_COLORS
    assert colors[palette.OVERLAY_CLEAR][3] == 0  # draws nothing
    assert 0 < colors[palette.OVERLAY_SELECTED][3] < 255 and 0 < colors[palette.OVERLAY_DIFFERS][3] < 255
    assert all(c[3] == 255 for c in colors[: len(palette.COLORS)])  # cells are opaque


def test_float16_level_table_matches_the_exports_quantisation() -> None:
    from dpgviz.core import palette as shared

    rng = np.random.default_rng(3)
    values = np.concatenate([rng.normal(0.5, 0.6, 5000), [np.nan, np.inf, -np.inf, 0.0, 1.0, -0.0]]).astype(np.float16)
    flags = np.where(rng.random(len(values)) < 0.3, FLAG_MASKED, 0).astype(np.uint8)
    for lo, hi in ((0.0, 1.0), (0.0, 4.17)):
        got = palette.level_indices(values, flags, lo, hi)
        finite = np.isfinite(values.astype(np.float32))
        want = np.where(finite, palette.LEVEL0 + shared.value_levels(values, lo, hi),
                        np.where(flags & FLAG_MASKED, palette.MASKED, palette.NO_VALUE))
        assert np.array_equal(got, want)
