"""Run-wide views: the run plots and the token-by-step overview, both click-to-jump.

- `RunPlots`: masked fraction, mean confidence and mean entropy (as a share of ln V) per
  record of the shown branch, with the record shown marked; a click moves the timeline
  there. The series grow incrementally while a run appends (only new records are read:
  `record_sums` of the new ones, then `series_from_sums` over all, O(records)).
- `OverviewPanel`: one row per record, one column per position, drawn as a texture the
  size of the panel: `store.overview.overview_image` samples the run down to those pixels,
  so a 1,000-step x 65,536-token run costs about as much as a small one. Coloured by the
  canvas's mode, or by decoding order. A click jumps to that record and selects that
  position on the canvas. Redrawn when the branch, mode or records change, at most
  OVERVIEW_REFRESH_S apart while a run appends.

A run made in blocks: both show the whole sequence at each record (positions across the
overview are all total_len positions, the plots' fractions and means are over them all),
composed by store.inspect; neither costs anything in a frame where nothing changed.

dearpygui and numpy; the numbers come from `store.inspect`. No torch.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import dearpygui.dearpygui as dpg
import numpy as np

from dpgviz.app.workspace import Workspace
from dpgviz.core import color_modes
from dpgviz.core.palette import entropy_max
from dpgviz.gui.status import INFO_COLOR, Cached
from dpgviz.gui.theme import series_theme
from dpgviz.store.inspect import eos_mass, record_sums, series_from_sums
from dpgviz.store.overview import overview_image, overview_pick

TITLE_COLOR = (140, 180, 255)
OVERVIEW_PX = (300, 440)  # the texture: the panel's width, most of its height
OVERVIEW_REFRESH_S = 0.25
# Line colours (Okabe-Ito, as the canvas): masked in the masked grey lightened, confidence in
# sky blue, entropy in orange.
SERIES_RGB = {"masked": (170, 176, 188), "confidence": (86, 180, 233), "entropy": (230, 159, 0),
              "eos": (204, 121, 167)}  # EOS mass: Okabe-Ito reddish purple


class RunPlots:
    """Masked fraction, mean confidence, mean entropy per record; a click scrubs there."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self.plot = self.x_axis = self.now = 0
        self.series: dict[str, int | str] = {}
        self.data: dict[str, np.ndarray] = {}  # the series shown (tests read them)
        self._sums: dict[str, np.ndarray] = {}  # store.inspect.record_sums of self._rows
        self._key: tuple | None = None
        self._rows = np.zeros(0, dtype=np.int64)
        self._eos = np.zeros(0)  # eos_mass of self._rows
        self._version: tuple | None = None
        self._cache = Cached()

    def build(self, parent: int | str) -> None:
        with dpg.group(parent=parent):
            dpg.add_text("Run plots (click to go to a step)", color=TITLE_COLOR)
            with dpg.plot(height=320, width=-1, no_menus=True, no_box_select=True) as self.plot:
                # Below the plot area, not over the curves (inside, every corner hid some of them)
                dpg.add_plot_legend(location=dpg.mvPlot_Location_South, outside=True)
                self.x_axis = dpg.add_plot_axis(dpg.mvXAxis, label="record")
                y = dpg.add_plot_axis(dpg.mvYAxis)
                dpg.set_axis_limits(y, -0.02, 1.02)
                for key, label in (("masked", "masked fraction"), ("confidence", "mean p(token)"),
                                   ("entropy", "mean entropy / ln V"),
                                   ("eos", "EOS mass (stored top-k)")):
                    self.series[key] = dpg.add_line_series([0.0], [0.0], label=label, parent=y)
                    dpg.bind_item_theme(self.series[key], series_theme(SERIES_RGB[key]))
                self.now = dpg.add_inf_line_series([0.0], parent=y)
            with dpg.item_handler_registry() as handlers:
                dpg.add_item_clicked_handler(callback=lambda: self.jump_to(dpg.get_plot_mouse_pos()[0]))
            dpg.bind_item_handler_registry(self.plot, handlers)

    def jump_to(self, x: float) -> None:
        """Show the record nearest to plot coordinate `x` (a click on the plot)."""
        ws = self.workspace
        n = ws.n_records()
        if n:
            ws.view.playing = False
            ws.view.select(round(x), n)

    def refresh(self) -> None:
        ws = self.workspace
        rows = ws.rows()
        self._cache.set(self.now, [[float(ws.view.record)]])
        key = (id(ws.store), ws.view.branch)
        if ws.store is None or not len(rows):
            return
        if key == self._key and len(rows) == len(self._rows) and (ws.store.version, id(rows)) == self._version:
            return  # the frame path's case: nothing new (checked without touching the arrays)
        self._version = (ws.store.version, id(rows))
        same_prefix = key == self._key and len(self._rows) <= len(rows) and np.array_equal(rows[: len(self._rows)], self._rows)
        if same_prefix and len(self._rows) == len(rows):
            return
        new = rows[len(self._rows):] if same_prefix and self._sums else rows
        part = record_sums(ws.store, new)  # only the new records' tokens are read
        if same_prefix and self._sums:
            part = {k: np.concatenate((self._sums[k], v)) for k, v in part.items()}
        self._sums = part
        ends = ws.vocab.eos_ids if ws.vocab is not None else ()
        eos = eos_mass(ws.store, new, ends)  # issue 31: EOS/EOT probability per step, stored top-k only
        self._eos = np.concatenate((self._eos, eos)) if same_prefix and len(self._eos) else eos
        series = series_from_sums(ws.store, rows, part)  # a block run: composed over the whole sequence
        ln_v = entropy_max(ws.vocab.size if ws.vocab is not None else 2)
        self.data = {"masked": series["masked_fraction"], "confidence": series["mean_confidence"],
                     "entropy": series["mean_entropy"] / ln_v, "eos": self._eos}
        self._key, self._rows = key, rows.copy()
        x = np.arange(len(rows), dtype=np.float64).tolist()
        for k, series in self.series.items():
            y = np.nan_to_num(self.data[k].astype(np.float64), nan=-1.0)  # off the plot where undefined
            dpg.set_value(series, [x, y.tolist()])
        dpg.set_axis_limits(self.x_axis, -0.5, max(1.0, len(rows) - 0.5))


class OverviewPanel:
    """The token-by-step picture of the shown branch, click to jump."""

    def __init__(self, workspace: Workspace, reveal: Callable[[int], None] = lambda pos: None) -> None:
        self.workspace = workspace
        self.reveal = reveal  # scrolls the canvas to a position
        self.texture = self.image = self.by_order = self.caption = 0
        self.shown: np.ndarray | None = None  # the (h, w, 3) picture last drawn, before scaling (tests)
        self.mode = ""
        self._cache = Cached()
        self._key: tuple | None = None
        self._drawn_at = 0.0

    def build(self, parent: int | str) -> None:
        w, h = OVERVIEW_PX
        with dpg.texture_registry():
            self.texture = dpg.add_dynamic_texture(w, h, np.zeros(w * h * 4, dtype=np.float32))
        with dpg.group(parent=parent):
            dpg.add_text("Overview: steps down, positions across", color=TITLE_COLOR)
            self.by_order = dpg.add_checkbox(label="colour by decoding order")
            self.image = dpg.add_image(self.texture, width=w, height=h)
            self.caption = dpg.add_text("", color=INFO_COLOR, wrap=w)
        with dpg.item_handler_registry() as handlers:
            dpg.add_item_clicked_handler(callback=lambda: self.click(*dpg.get_mouse_pos(local=False)))
        dpg.bind_item_handler_registry(self.image, handlers)

    def click(self, x: float, y: float) -> tuple[int, int] | None:
        """A click at viewport pixel (x, y) on the image: go to that record, select that position."""
        ws, picture = self.workspace, self.shown
        if picture is None or ws.store is None:
            return None
        (x0, y0), (w, h) = dpg.get_item_rect_min(self.image), OVERVIEW_PX
        if not (0 <= x - x0 < w and 0 <= y - y0 < h):
            return None
        ph, pw = picture.shape[:2]  # the picture is stretched over the image: back to its pixels
        record, pos = overview_pick(ws.n_records(), ws.store.layout.total_len, pw, ph,
                                    (x - x0) * pw / w, (y - y0) * ph / h)
        ws.view.playing = False
        ws.view.select(record, ws.n_records())
        ws.view.select_tokens(pos)
        self.reveal(pos)
        return record, pos

    def refresh(self, color_mode: str) -> None:
        ws = self.workspace
        spec = color_modes.get(color_mode)  # the canvas's mode, when the overview can draw it
        mode = "order" if dpg.get_value(self.by_order) else spec.name if spec.overview else "state"
        rows = ws.rows()
        if ws.store is None or not len(rows) or ws.vocab is None:
            return
        key = (id(ws.store), ws.view.branch, ws.store.version, mode)
        now = time.perf_counter()
        if key == self._key or (ws.is_running and now - self._drawn_at < OVERVIEW_REFRESH_S):
            return
        self._key, self._drawn_at, self.mode = key, now, mode
        w, h = OVERVIEW_PX
        picture = overview_image(ws.store, rows, mode, ws.vocab.size, w, h)
        self.shown = picture
        ph, pw = picture.shape[:2]
        # Stretch to the texture by nearest neighbour (index arrays, no per-pixel loop).
        ys, xs = (np.arange(h) * ph) // h, (np.arange(w) * pw) // w
        rgba = np.ones((h, w, 4), dtype=np.float32)
        rgba[..., :3] = picture[ys[:, None], xs[None, :]] / 255.0
        dpg.set_value(self.texture, rgba.ravel())
        self._cache.set(
            self.caption,
            f"{len(rows)} records x {ws.store.layout.total_len} positions, "
            f"{'exact' if (ph, pw) == (len(rows), ws.store.layout.total_len) else f'sampled to {pw} x {ph}'}"
            f"; {mode}. Click to go there.",
        )
