"""The token canvas: one record's tokens as a grid of coloured cells with their text.

Drawn by the GPU renderer through ImPlot: one heat series holds the colour index of
every visible cell (see `palette`), and two `draw_text` items per visible row carry the
row's characters, one in light ink over dark cells and one in dark ink over light cells.
Only visible rows are sent, only when the record, mode, layout or scroll changed; the
frame path has no per-token Python loop (rows are built with numpy, see `layout`).
A second heat series over the cells tints the token selection and, in the compare
view, the cells two branches disagree on (translucent colormap entries, so the colour
of any mode shows through). Mouse positions map back to token positions with
`pos_at_pixel` (the inverse of the layout, `layout.pos_at`).

Geometry: x is in cells, y in rows (row r spans y in [-(r - top) - 1, -(r - top)]), and
the axis limits are chosen so a cell is exactly one glyph advance of the monospace font
wide. draw_text inside a plot scales its size by pixels-per-x-unit, so a text size of
1 / advance_ratio renders at the font's own pixel size, aligned with the cells.

dearpygui and numpy only; never imports torch or the engine.
"""

from __future__ import annotations

import dataclasses
import logging
import math

import dearpygui.dearpygui as dpg
import numpy as np

from dpgviz.app.find import CURRENT, MATCH, Marks
from dpgviz.app.inspect import NO_EXTRAS, CellExtras, ShownRecord
from dpgviz.app.view_state import ViewState
from dpgviz.core.records import FLAG_REMASKED
from dpgviz.core.vocab import MAX_SLOT_WIDTH, Vocabulary, end_ids
from dpgviz.gui import canvas_marks, palette
from dpgviz.gui.layout import (
    CellLayout,
    char_table,
    grid_layout,
    pos_at,
    row_strings,
    scatter_cells,
    text_layout,
    visible_rows,
)
from dpgviz.gui.theme import MONO_FONT_PX, Fonts, canvas_plot_theme

log = logging.getLogger(__name__)

# Row pitch in font pixels. 1.0: a row is one line of text, so each ink's text is ONE
# multi-line draw_text item (ImGui advances a line by the font size): a step switch sets
# three strings, not three per row. The font's own ascent and descent space the lines.
ROW_HEIGHT = 1.0
SCROLLBAR_PX = 18
ZOOM_RANGE = (6, 40)  # font pixels of the canvas text; cells scale with it
FIT_MIN_PX = 12  # the fit never shrinks text below this: smaller is hard to read, scrolling is better
OUTLINE_PX = (7.0, 3.0)  # stroke widths of the selection's dark and bright rings (palette.SELECTION_OUTLINE)
OUTLINE_GAP_PX = 3.0  # the rings are centred this far outside the cells, so the glyphs stay clear




@dataclasses.dataclass(frozen=True)
class CanvasVocab:
    """What the canvas needs of a vocabulary: characters and widths per id."""

    chars: np.ndarray  # (n_ids, slot) <U1
    widths: np.ndarray  # (n_ids,) display cells
    slot_width: int  # grid slot of every position
    newline_id: int | None
    mask_id: int
    size: int  # real tokens (entropy scale: ln size)

    @classmethod
    def from_itos(cls, itos: list[str] | tuple[str, ...], n_ids: int, newline_glyph: str) -> CanvasVocab:
        vocab = Vocabulary(itos=tuple(itos), model_vocab_size=n_ids, eos_ids=end_ids(itos, range(len(itos))))
        strings = vocab.strings(mask=" ", newline=newline_glyph)
        widths = np.minimum(vocab.display_widths(), MAX_SLOT_WIDTH)
        slot = int(widths.max()) if len(widths) else 1
        newline_id = itos.index("\n") if "\n" in itos else None
        return cls(char_table(strings, slot), widths.astype(np.int64), slot, newline_id, vocab.mask_id, vocab.size)


class TokenCanvas:
    """Builds the canvas under a parent and redraws it when what it shows changed."""

    def __init__(self, fonts: Fonts) -> None:
        self.fonts = fonts
        self.vocab: CanvasVocab | None = None
        self.plot: int | str = 0
        self.plot_group: int | str = 0
        self._x_axis: int | str = 0
        self._y_axis: int | str = 0
        self._heat: int | str = 0
        self._overlay: int | str = 0  # selection / difference tint over the cells
        self._overlay_key: tuple | None = None
        self._outline: tuple[int | str, ...] = ()  # the selection's rings: dark, then bright over it
        self._outline_box: tuple[int, int, int, int] | None = None  # (row in view, first, end cell, font px) ringed
        self._scroll: int | str = 0
        self._info: int | str = 0
        # One multi-line text item per ink: light over dark cells, dark over light ones, and the
        # glyphs remasked cells held, in the remask colour (see ROW_HEIGHT).
        self._text_items: dict[str, int | str] = {}
        self._texts: dict[str, str] = {}
        self._advance_ratio: float | None = None  # glyph advance / font pixel size
        self._metrics: tuple[int, int, int] = (0, 0, 0)  # plot width, height (px), font size (px)
        self._grid: CellLayout | None = None
        self._drawn_key: tuple | None = None
        self._heat_shape: tuple[int, int] = (0, 0)
        self.layout: CellLayout | None = None  # the layout last drawn (for tests, hover later)
        self.cols = 1  # cells per row that fit the plot
        self.view_rows = 1  # whole rows that fit the plot
        self.visible = (0, 0)  # rows [r0, r1) last drawn
        self.shown_row: int | None = None  # store row last drawn
        self.redraws = 0  # times the cells were pushed to the renderer (tests check this)
        self.is_zoom_by_hand = False  # the user zoomed: `fit` changes nothing from then on
        self._fitted_len: int | None = None  # the length `fit` last looked at
        self._colormap: int | str = 0

    # -- building ------------------------------------------------------------------
    def build(self, parent: int | str) -> None:
        with dpg.colormap_registry():
            self._colormap = dpg.add_colormap(palette.colormap_colors(), True, label="dpgviz cells")
        with dpg.group(parent=parent):
            self._info = dpg.add_text("No run yet: load a model, then Start.", color=(170, 176, 188))
            with dpg.group(horizontal=True) as self.plot_group:  # a tooltip's parent (a plot takes none)
                with dpg.plot(
                    width=-SCROLLBAR_PX - 8,
                    height=-1,
                    no_title=True,
                    no_menus=True,
                    no_box_select=True,
                    no_mouse_pos=True,
                    no_inputs=True,
                    no_frame=True,
                ) as self.plot:
                    self._x_axis = dpg.add_plot_axis(
                        dpg.mvXAxis, no_gridlines=True, no_tick_marks=True, no_tick_labels=True, no_menus=True
                    )
                    self._y_axis = dpg.add_plot_axis(
                        dpg.mvYAxis, no_gridlines=True, no_tick_marks=True, no_tick_labels=True, no_menus=True
                    )
                    # The cells, then the translucent tint over them (selection, differences).
                    self._heat = self._add_heat(palette.BLANK)
                    self._overlay = self._add_heat(palette.OVERLAY_CLEAR)
                self._outline = tuple(
                    dpg.draw_rectangle((0, 0), (1, -1), color=color, parent=self.plot, show=False)
                    for color in palette.SELECTION_OUTLINE
                )
                dpg.bind_colormap(self.plot, self._colormap)
                dpg.bind_item_theme(self.plot, canvas_plot_theme())
                self._scroll = dpg.add_slider_int(
                    vertical=True, width=SCROLLBAR_PX, height=-1, min_value=0, max_value=0, format="", show=False
                )
        dpg.set_axis_limits(self._x_axis, 0.0, 1.0)
        dpg.set_axis_limits(self._y_axis, -1.0, 0.0)

    def _add_heat(self, fill: int) -> int | str:
        """A heat series on the colour table (one cell of `fill` until the first draw sizes it)."""
        return dpg.add_heat_series(
            [palette.heat_values(np.full(1, fill))[0]], 1, 1, parent=self._y_axis, scale_min=0.0,
            scale_max=float(palette.N_COLORS), bounds_min=(0.0, -1.0), bounds_max=(1.0, 0.0), format="",
            contribute_to_bounds=False,
        )

    def set_vocabulary(self, itos: list[str], n_ids: int) -> None:
        self.vocab = CanvasVocab.from_itos(itos, n_ids, self.fonts.newline_glyph)
        self._grid = None
        self._drawn_key = None

    # -- geometry ------------------------------------------------------------------
    def _measure(self, font_px: int) -> bool:
        """Plot size and glyph metrics; False until the first frame has laid them out."""
        if self._advance_ratio is None:
            probe = "M" * 100
            size = dpg.get_text_size(probe, font=self.fonts.mono) if self.fonts.mono else dpg.get_text_size(probe)
            if not size or size[0] <= 0:
                return False
            # Advance per pixel of font size: the same at every size for a monospace font.
            self._advance_ratio = size[0] / len(probe) / (MONO_FONT_PX if self.fonts.mono else 13)
        # Read every frame: the plot's size settles over the first frames after the window
        # is laid out, and a paced loop draws few frames, so a cached size could stay wrong.
        w, h = dpg.get_item_rect_size(self.plot)
        if w <= 0 or h <= 0:
            return False
        if (w, h, font_px) != self._metrics:
            self._metrics = (int(w), int(h), font_px)
            self._x_range = w / (self._advance_ratio * font_px)  # cells across the plot
            self._y_range = h / (font_px * ROW_HEIGHT)  # rows down the plot
            self.cols = max(1, int(self._x_range))
            self.view_rows = max(1, int(self._y_range))
            dpg.set_axis_limits(self._x_axis, 0.0, self._x_range)
            dpg.set_axis_limits(self._y_axis, -self._y_range, 0.0)
            self._ensure_text_items()
            self._grid = None
        return True

    def _ensure_text_items(self) -> None:
        """The three text items (one per ink), made once the glyph metrics are known."""
        if self._text_items:
            return
        size = 1.0 / self._advance_ratio  # x units -> font pixels: one cell = one advance (module doc)
        inks = (
            ("light", palette.LIGHT_TEXT), ("dark", palette.DARK_TEXT), ("ghost", palette.GHOST_TEXT),
            ("dim", palette.DIM_TEXT), ("block", canvas_marks.BLOCK_INK),
        )
        for ink, color in inks:
            item = dpg.draw_text((0.0, 0.0), "", size=size, color=color, parent=self.plot)
            if self.fonts.mono:
                dpg.bind_item_font(item, self.fonts.mono)
            self._text_items[ink], self._texts[ink] = item, ""

    # -- scrolling -----------------------------------------------------------------
    def scroll_by(self, view: ViewState, rows: int) -> None:
        view.top_row = max(0, view.top_row + rows)

    def fit(self, view: ViewState, seq_len: int) -> None:
        """Shrink the zoom so a newly shown length fits the view, where it can at FIT_MIN_PX or more.

        Otherwise the zoom changes only by the user's hand: the fit never grows the cells (it
        zoomed every Start of a short run from 16 to 22 px), runs once per length (a restart,
        a continue or another run of the same length keep the zoom), and never once the user
        has zoomed. A length that fits at no readable size keeps the zoom and scrolls.
        """
        if self._advance_ratio is None or self._metrics[0] <= 0 or self.vocab is None:
            return
        if self.is_zoom_by_hand or seq_len == self._fitted_len:
            return
        self._fitted_len = seq_len
        w, h, _ = self._metrics
        for font_px in range(view.font_px, FIT_MIN_PX - 1, -1):  # a few sizes, not tokens
            slots = int(w / (self._advance_ratio * font_px)) // self.vocab.slot_width
            if slots * int(h / (font_px * ROW_HEIGHT)) >= seq_len:
                view.font_px = font_px
                return

    def zoom(self, view: ViewState, font_px: int) -> None:
        """The user sets the canvas text size (and with it the cell size); the fit leaves it alone from then on."""
        view.font_px = min(max(ZOOM_RANGE[0], int(font_px)), ZOOM_RANGE[1])
        self.is_zoom_by_hand = True

    def is_hovered(self) -> bool:
        return bool(self.plot) and dpg.is_item_hovered(self.plot)

    def on_scrollbar(self, view: ViewState) -> None:
        """The vertical slider's value counts from the bottom (ImGui's vertical sliders)."""
        top_max = dpg.get_item_configuration(self._scroll)["max_value"]
        view.top_row = top_max - int(dpg.get_value(self._scroll))

    @property
    def scrollbar(self) -> int | str:
        return self._scroll

    # -- drawing -------------------------------------------------------------------
    def _layout_for(self, shown: ShownRecord, text_mode: bool) -> CellLayout:
        vocab = self.vocab
        if text_mode:
            return text_layout(shown.get("tokens"), vocab.widths, vocab.newline_id, self.cols)
        if self._grid is None or self._grid.seq_len != shown.seq_len or self._grid.cols != self.cols:
            self._grid = grid_layout(shown.seq_len, self.cols, vocab.slot_width)
        return self._grid

    def refresh(
        self,
        shown: ShownRecord | None,
        view: ViewState,
        highlight: np.ndarray | None = None,
        extras: CellExtras = NO_EXTRAS,
        found: Marks | None = None,
    ) -> bool:
        """Draw the record `shown` if it, the mode, layout or scroll changed. True when it drew.

        The selection (view.selection()) and `highlight` (bool per position: cells to tint,
        the same array object while it means the same) are tinted over the cells. `extras`
        carries what the derived modes and the remask glyphs need (see CellExtras). `found`:
        Find's matches (app.find), tinted under the selection.
        """
        if not self._measure(view.font_px):
            return False
        if shown is None or self.vocab is None:
            if self._drawn_key != ("empty",):
                self._clear()
                self._drawn_key = ("empty",)
            return False
        drew = self._refresh_cells(shown, view, extras)
        self._refresh_overlay(view.selection(), highlight, found)
        return drew

    def _refresh_cells(self, shown: ShownRecord, view: ViewState, extras: CellExtras) -> bool:
        layout = self._layout_for(shown, view.text_mode)
        top, r1 = visible_rows(view.top_row, self.view_rows, layout.n_rows)
        view.top_row = top
        r1 = min(layout.n_rows, top + math.ceil(self._y_range))  # the partly visible last row too
        key = (shown.key, view.color_mode, view.text_mode, self._metrics, top, r1, id(self.vocab), extras.key)
        if key == self._drawn_key:
            return False
        self._draw(shown, view, layout, top, r1, extras)
        self._update_scrollbar(top, layout.n_rows)
        self._update_info(shown, extras.label)
        self._drawn_key = key
        self.shown_row = shown.row
        self.layout = layout
        self.visible = (top, r1)
        self.redraws += 1
        return True

    def _draw(self, shown: ShownRecord, view: ViewState, layout: CellLayout, r0: int, r1: int, extras: CellExtras) -> None:
        mode = palette.for_vocab(palette.MODE_BY_KEY[view.color_mode], self.vocab.size)
        sl = layout.positions(r0, r1)
        flags = shown.get("flags")[sl]
        arrays = {"flags": flags}
        if mode.field is not None:
            source = extras.arrays.get(mode.field)  # derived modes: the workspace computed it
            arrays[mode.field] = source[sl] if source is not None else shown.get(mode.field)[sl]
        colors = palette.mode_indices(mode, arrays)
        if mode.field is not None:  # edited and protected cells show as such in every mode
            colors = palette.with_hand_marks(colors, flags)
        tokens = shown.get("tokens")[sl]
        preview = extras.arrays.get("preview")  # a re-sample preview's tokens (-1: none drawn there)
        if preview is not None:
            tokens = np.where(preview[sl] >= 0, preview[sl], tokens)
        ghost = extras.arrays.get("ghost")  # tokens the remasked cells held before this record
        is_ghost = (flags & FLAG_REMASKED) != 0 if ghost is not None else None
        values = {"color": (colors, palette.BLANK)}
        if is_ghost is not None and is_ghost.any():
            values["ghost"] = (is_ghost, False)
            tokens = np.where(is_ghost, ghost[sl], tokens)
        padding = extras.arrays.get("padding")  # after the end of text: the model's padding, dimmed
        if padding is not None and padding[sl].any():
            values["dim"] = (padding[sl], False)
        canvas_marks.add_values(values, extras.arrays, sl)
        grids = scatter_cells(layout, r0, r1, values, tokens=tokens, chars_by_id=self.vocab.chars)
        color, chars, bars = canvas_marks.apply(grids, grids["color"], grids["chars"], palette.BLANK)
        self._set_text("block", bars)
        ghost_cells = grids.get("ghost")
        n_rows, cols = color.shape
        if (n_rows, cols) != self._heat_shape:
            dpg.configure_item(
                self._heat, rows=max(1, n_rows), cols=cols, bounds_min=(0.0, -float(max(1, n_rows))), bounds_max=(float(cols), 0.0)
            )
            self._heat_shape = (n_rows, cols)
        dpg.set_value(self._heat, [palette.heat_values(color).ravel()])
        on_light = palette.TEXT_ON_LIGHT[color]
        if ghost_cells is not None:
            self._set_text("ghost", row_strings(np.where(ghost_cells, chars, " ")))
            chars = np.where(ghost_cells, " ", chars)
        else:
            self._set_text("ghost", [])
        dim_cells = grids.get("dim")
        if dim_cells is not None:
            self._set_text("dim", row_strings(np.where(dim_cells, chars, " ")))
            chars = np.where(dim_cells, " ", chars)
        else:
            self._set_text("dim", [])
        self._set_text("dark", row_strings(np.where(on_light, chars, " ")))
        self._set_text("light", row_strings(np.where(on_light, " ", chars)))

    def _refresh_overlay(
        self, selection: tuple[int, int] | None, highlight: np.ndarray | None, found: Marks | None = None
    ) -> None:
        """Tint the selected, the highlighted and the found cells of the rows drawn (only when one changed)."""
        layout, (r0, r1) = self.layout, self.visible
        key = (selection, id(highlight), self._drawn_key, found.key if found is not None else None)
        if key == self._overlay_key:
            return
        self._overlay_key = key
        self._refresh_outline(selection)
        n_rows, cols = self._heat_shape
        if layout is None or (selection is None and highlight is None and found is None) or n_rows * cols == 0:
            dpg.configure_item(self._overlay, show=False)
            return
        sl = layout.positions(r0, r1)
        positions = np.arange(sl.start, sl.stop)
        tint = np.full(len(positions), palette.OVERLAY_CLEAR, dtype=np.uint16)
        if found is not None:
            marks = found.between(sl.start, sl.stop)
            tint[marks == MATCH] = palette.OVERLAY_MATCH
            tint[marks == CURRENT] = palette.OVERLAY_MATCH_CURRENT
        if highlight is not None:
            tint[np.asarray(highlight, dtype=bool)[sl]] = palette.OVERLAY_DIFFERS
        if selection is not None:
            tint[(positions >= selection[0]) & (positions < selection[1])] = palette.OVERLAY_SELECTED
        grid = scatter_cells(layout, r0, r1, {"tint": (tint, palette.OVERLAY_CLEAR)})["tint"]
        if grid.shape != (n_rows, cols):  # same rows and columns as the cells under it
            grid = np.pad(grid, ((0, n_rows - grid.shape[0]), (0, cols - grid.shape[1])), constant_values=palette.OVERLAY_CLEAR)
        dpg.configure_item(
            self._overlay, rows=max(1, n_rows), cols=cols, bounds_min=(0.0, -float(max(1, n_rows))),
            bounds_max=(float(cols), 0.0), show=True,
        )
        dpg.set_value(self._overlay, [palette.heat_values(grid).ravel()])

    def _refresh_outline(self, selection: tuple[int, int] | None) -> None:
        """Ring a selection that lies within one drawn row (see palette.SELECTION_OUTLINE)."""
        layout, (r0, r1) = self.layout, self.visible
        box = None
        if selection is not None and layout is not None and self._advance_ratio is not None:
            s0, s1 = max(0, selection[0]), min(layout.seq_len, selection[1])
            if s0 < s1:  # its first and last positions only: a select-all costs no more than one cell
                (row0,), (col0,), _ = layout.span(slice(s0, s0 + 1))
                (row1,), (col1,), (width1,) = layout.span(slice(s1 - 1, s1))
                if row0 == row1 and r0 <= row0 < r1:
                    box = int(row0) - r0, int(col0), int(col1 + width1), self._metrics[2]  # the zoom sizes it
        if box == self._outline_box:  # a step switch moves no ring: nothing to send
            return
        self._outline_box = box
        if box is None:
            for item in self._outline:
                dpg.configure_item(item, show=False)
            return
        row, c0, c1, font_px = box
        cell_px, row_px = self._advance_ratio * font_px, font_px * ROW_HEIGHT
        # Plot units: x in cells, y in rows (module doc); a stroke's width is in x units, as text size.
        dx, dy = OUTLINE_GAP_PX / cell_px, OUTLINE_GAP_PX / row_px
        for item, stroke_px in zip(self._outline, OUTLINE_PX, strict=True):
            dpg.configure_item(
                item, pmin=(c0 - dx, -row + dy), pmax=(c1 + dx, -row - 1 - dy), thickness=stroke_px / cell_px, show=True
            )

    # -- picking ---------------------------------------------------------------------
    def cell_at_pixel(self, x: float, y: float) -> tuple[int, int] | None:
        """(layout row, column) under viewport pixel (x, y), or None outside the plot."""
        if self._advance_ratio is None or self._metrics[0] <= 0:
            return None
        (x0, y0), (w, h) = dpg.get_item_rect_min(self.plot), dpg.get_item_rect_size(self.plot)
        dx, dy = x - x0, y - y0
        if not (0 <= dx < w and 0 <= dy < h):
            return None
        font_px = self._metrics[2]
        cell_px, row_px = self._advance_ratio * font_px, font_px * ROW_HEIGHT  # as _measure sets the axes
        return self.visible[0] + int(dy // row_px), int(dx // cell_px)

    def pos_at_pixel(self, x: float, y: float, clamp: bool = False) -> int | None:
        """Token position under viewport pixel (x, y) as drawn now; None where there is none.

        With `clamp` (dragging), a pixel past a row's end or below the last row gives the
        nearest position instead, so a drag selects up to the row's end.
        """
        cell, layout = self.cell_at_pixel(x, y), self.layout
        if cell is None or layout is None or layout.seq_len == 0:
            return None
        row, col = cell
        pos = pos_at(layout, row, col)
        if pos is None and clamp:
            if row >= layout.n_rows:
                return layout.seq_len - 1
            first, stop = int(layout.row_first[row]), int(layout.row_first[row + 1])
            return stop - 1 if stop > first else None
        return pos

    def reveal(self, view: ViewState, pos: int) -> None:
        """Scroll so position `pos` is in view (its row about a third down), if it is not already."""
        layout = self.layout
        if layout is None or not 0 <= pos < layout.seq_len:
            return
        row = int(layout.row[pos])
        if not self.visible[0] <= row < self.visible[0] + self.view_rows:
            view.top_row = max(0, row - self.view_rows // 3)

    def pixel_of(self, pos: int) -> tuple[float, float] | None:
        """Viewport pixel at the centre of position `pos`'s first cell, if its row is drawn (tests)."""
        layout = self.layout
        if layout is None or self._advance_ratio is None or not 0 <= pos < layout.seq_len:
            return None
        row, col = layout.cell_of(pos)
        if not self.visible[0] <= row < self.visible[1]:
            return None
        (x0, y0) = dpg.get_item_rect_min(self.plot)
        font_px = self._metrics[2]
        return x0 + (col + 0.5) * self._advance_ratio * font_px, y0 + (row - self.visible[0] + 0.5) * font_px * ROW_HEIGHT

    def _set_text(self, ink: str, rows: list[str]) -> None:
        """One ink's rows as one multi-line string, pushed only when it changed."""
        text = "\n".join(rows)
        if text != self._texts.get(ink):
            dpg.configure_item(self._text_items[ink], text=text)
            self._texts[ink] = text

    def _clear(self) -> None:
        dpg.set_value(self._heat, [palette.heat_values(np.zeros(self._heat_shape[0] * self._heat_shape[1] or 1)).ravel()])
        for ink in self._text_items:
            self._set_text(ink, [])
        self._refresh_outline(None)
        self.layout = None
        self.shown_row = None

    def _update_scrollbar(self, top: int, n_rows: int) -> None:
        top_max = max(0, n_rows - self.view_rows)
        dpg.configure_item(self._scroll, max_value=top_max, show=top_max > 0)
        dpg.set_value(self._scroll, top_max - top)

    def _update_info(self, shown: ShownRecord, label: str = "") -> None:
        n, n_masked = shown.seq_len, shown.n_masked
        dpg.set_value(
            self._info,
            f"iteration {shown.iteration + 1}" + (f" of {shown.steps}" if shown.steps else "")
            + f"   |   {shown.kind}   |   "
            + (f"{shown.block}   |   " if shown.block else "")
            + f"{n_masked} of {n} masked   |   {n - n_masked} visible"
            + (f"   |   {label}" if label else ""),
        )
