"""What the model believed about a token: the hover tooltip, the inspector of pinned tokens,
and the re-sample preview.

- `HoverTip`: a tooltip over the canvas for the token under the mouse: position, token,
  state, p(token), entropy, remask score, rank and the top-k candidates as bars. A masked
  position shows what the model proposed; a settled token shows the candidates of the step
  that last sampled it, labelled with that step. It is rebuilt only when the token or the
  record under the mouse changes, never on idle frames. Keys 1-8 place that candidate.
- `InspectorPanel`: pinned tokens (a right-click or I pins the hovered one). Each shows a
  plot of its confidence and entropy per step with markers where it was masked, unmasked,
  remasked or changed, the values it held, and the candidates of the record shown as
  buttons: a click places that token there as an edit, ready for Restart from here.
- The re-sample preview: another temperature / top-p drawn from the record's stored
  top-k (no forward pass), shown on the canvas labelled as a preview; "Run from here
  with T" makes it a real branch.

dearpygui and numpy; the numbers come from the workspace and `store.inspect`. No torch.
"""

from __future__ import annotations

from collections.abc import Callable

import dearpygui.dearpygui as dpg
import numpy as np

from dpgviz.app.inspect import TokenInfo
from dpgviz.app.workspace import Workspace
from dpgviz.core.palette import entropy_max
from dpgviz.gui.plots import SERIES_RGB
from dpgviz.gui.status import INFO_COLOR, Cached
from dpgviz.gui.theme import series_theme
from dpgviz.store.inspect import EVENT_CHANGED, EVENT_MASKED, EVENT_REMASKED, EVENT_UNMASKED, history_arrays

TOP_K_SHOWN = 8
BAR_PX = (150, 15)  # the longest candidate bar, and one bar row's height
BAR_COLOR = (86, 180, 233, 255)  # sky blue: the palette's "new"
TITLE_COLOR = (140, 180, 255)
EVENT_RGB = ((86, 180, 233), (213, 94, 0), (204, 121, 167))  # unmasked, remasked, changed (Okabe-Ito)
EVENT_MARKS = (  # (event code, label, marker) on a pinned token's history plot
    (EVENT_UNMASKED, "unmasked", dpg.mvPlotMarker_Up),
    (EVENT_REMASKED, "remasked", dpg.mvPlotMarker_Down),
    (EVENT_CHANGED, "changed", dpg.mvPlotMarker_Diamond),
)


def shown(text: str | None) -> str:
    """A token as the tooltip prints it: quoted, newline visible, masks as a block."""
    if text is None:
        return "\u2588 (masked)"
    return repr(text.replace("\n", "\u21b5"))


def describe(info: TokenInfo) -> str:
    """The tooltip's numbers, one per line."""

    def num(x: float | None, fmt: str = ".3f") -> str:
        return "-" if x is None else format(x, fmt)

    rank = "-" if info.rank is None else f"{info.rank} of {len(info.candidates)}"
    return (
        f"state {info.state}   p(token) {num(info.p)}   rank {rank}\n"
        f"entropy {num(info.entropy)} nats   remask score {num(info.score)}"
    )


def value_runs(tokens: np.ndarray, is_masked: np.ndarray, strings: np.ndarray) -> str:
    """'e' 3-10, █ 11-12, 'a' 13-40: the values a position held, as runs over records (1-based)."""
    if not len(tokens):
        return ""
    key = np.where(is_masked, -1, tokens)
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    ends = np.r_[starts[1:], len(key)] - 1
    parts = []
    for a, b in zip(starts, ends, strict=True):  # runs, not records: a handful per position
        text = "\u2588" if key[a] < 0 else repr(str(strings[key[a]]).replace("\n", "\u21b5"))
        parts.append(f"{text} {a + 1}" + (f"-{b + 1}" if b > a else ""))
    return ", ".join(parts)


class CandidateBars:
    """Up to TOP_K_SHOWN candidates as horizontal bars with their text and probability."""

    def __init__(self) -> None:
        self.rects: list[int | str] = []
        self.labels: list[int | str] = []
        self.drawlist: int | str = 0

    def build(self, parent: int | str) -> None:
        w, h = BAR_PX
        self.drawlist = dpg.add_drawlist(width=w + 150, height=h * TOP_K_SHOWN, parent=parent)
        for k in range(TOP_K_SHOWN):
            y = k * h
            self.rects.append(dpg.draw_rectangle((0, y + 2), (0, y + h - 2), fill=BAR_COLOR, color=BAR_COLOR,
                                                 parent=self.drawlist))
            self.labels.append(dpg.draw_text((w + 6, y), "", size=13, color=(230, 230, 235), parent=self.drawlist))

    def show(self, candidates: tuple[tuple[int, str, float], ...]) -> None:
        w, h = BAR_PX
        for k in range(TOP_K_SHOWN):
            if k < len(candidates):
                _, text, p = candidates[k]
                dpg.configure_item(self.rects[k], pmax=(max(1.0, w * p), k * h + h - 2), show=True)
                dpg.configure_item(self.labels[k], text=f"{k + 1}  {shown(text)}  {p:.3f}", show=True)
            else:
                dpg.configure_item(self.rects[k], show=False)
                dpg.configure_item(self.labels[k], show=False)


class HoverTip:
    """The tooltip of the token under the mouse on the main canvas."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self.tip = self.title = self.values = self.source = 0
        self.bars = CandidateBars()
        # A second model's top-8 at the same record, beside the first (a branch's score layer)
        self.second_bars = CandidateBars()
        self.second_group = self.second_title = 0
        self.second = None  # app.models.SecondOpinion shown now (tests read it)
        self.info: TokenInfo | None = None  # what the tooltip shows now (tests read it)
        self._key: tuple | None = None
        self.rebuilds = 0

    def build(self, parent: int | str) -> None:
        """Attach to `parent`, the canvas's plot group (Dear PyGui takes no tooltip on a plot itself)."""
        with dpg.tooltip(parent) as self.tip:
            self.title = dpg.add_text("", color=TITLE_COLOR)
            self.values = dpg.add_text("")
            self.source = dpg.add_text("", color=INFO_COLOR)
            with dpg.group(horizontal=True):
                with dpg.group() as own:
                    self.bars.build(own)
                with dpg.group(show=False) as self.second_group:
                    self.second_title = dpg.add_text("", color=INFO_COLOR)
                    self.second_bars.build(self.second_group)
            dpg.add_text("1-8: place that candidate here (an edit)   I / right-click: pin", color=INFO_COLOR)

    def refresh(self) -> None:
        """Follow the mouse: rebuild only when the position, the record or the store changed."""
        ws = self.workspace
        pos, row = ws.view.hover_pos, ws.current_row()
        key = (pos, row, id(ws.store), ws.store.version if ws.store is not None else 0)
        if key == self._key:
            return
        self._key = key
        self.info = None if pos is None or row is None else ws.inspect.token_info(pos)
        self.rebuilds += 1
        info = self.info
        dpg.configure_item(self.tip, show=info is not None)  # nothing to say off the tokens
        if info is None:
            return
        dpg.set_value(self.title, f"position {info.pos}   {shown(info.token)}")
        dpg.set_value(self.values, describe(info))
        what = "proposed" if info.token is None else "candidates"
        dpg.set_value(self.source, f"{what}: from {info.sampled_label}" if info.candidates else info.sampled_label)
        self.bars.show(info.candidates)
        self.second = ws.models.second_opinion(info.pos, info.sampled_record)
        dpg.configure_item(self.second_group, show=self.second is not None)
        if self.second is not None:
            s = self.second
            p = "-" if s.p is None else f"{s.p:.3f}"
            js = "-" if s.js is None else f"{s.js:.3f}"
            dpg.set_value(self.second_title, f"{s.name}: p(token) {p}, JS {js} bits")
            self.second_bars.show(s.candidates)


class InspectorPanel:
    """Pinned tokens: history plot, values held, candidates to pick; and the re-sample preview."""

    def __init__(self, workspace: Workspace, restart_with: Callable[[float], None]) -> None:
        self.workspace = workspace
        self.restart_with = restart_with  # sets the panel's temperature, then Restart from here
        self._cache = Cached()
        self.group = self.hint = 0
        self.temperature = self.top_p = self.preview_button = 0
        self.cards: dict[int, dict[str, int | str]] = {}  # pinned position -> its items
        self.data: dict[int, dict[str, np.ndarray]] = {}  # pinned position -> history arrays (tests read them)
        self._pins_key: tuple | None = None
        self._data_key: tuple | None = None
        self._candidates_key: dict[int, tuple | None] = {}
        self._themes: dict[object, int | str] = {}  # made once in build, shared by every card

    def build(self, parent: int | str) -> None:
        self._themes = {
            "confidence": series_theme(SERIES_RGB["confidence"]),
            "entropy": series_theme(SERIES_RGB["entropy"]),
            **{code: series_theme(rgb, scatter=True, marker=marker) for (code, _, marker), rgb in
               zip(EVENT_MARKS, EVENT_RGB, strict=True)},
        }
        with dpg.group(parent=parent):
            dpg.add_text("Re-sample this step (no forward pass)", color=TITLE_COLOR)
            self.temperature = dpg.add_slider_float(label="T", default_value=0.7, min_value=0.05, max_value=3.0,
                                                    width=-40, format="%.2f")
            self.top_p = dpg.add_slider_float(label="top-p", default_value=0.9, min_value=0.05, max_value=1.0,
                                              width=-40, format="%.2f")
            with dpg.group(horizontal=True):
                self.preview_button = dpg.add_button(label="Preview", callback=lambda: self.preview())
                dpg.add_button(label="Clear", callback=lambda: self.workspace.inspect.clear_preview())
                dpg.add_button(label="Run from here", callback=lambda: self.restart_with(self.preview_temperature()))
            with dpg.tooltip(self.preview_button):
                dpg.add_text("Draws each masked position again from the step's stored top-k\n"
                             "at this temperature and top-p, and shows it on the canvas, labelled.\n"
                             "Run from here restarts the model at this temperature as a branch.")
            dpg.add_separator()
            dpg.add_text("Pinned tokens", color=TITLE_COLOR)
            self.hint = dpg.add_text("Right-click a token (or hover it and press I) to pin it here.",
                                     wrap=260, color=INFO_COLOR)
            self.group = dpg.add_group()

    def preview_temperature(self) -> float:
        return round(float(dpg.get_value(self.temperature)), 3)

    def preview(self) -> None:
        self.workspace.inspect.preview_resample(self.preview_temperature(), round(float(dpg.get_value(self.top_p)), 3))

    # -- refresh -------------------------------------------------------------------
    def refresh(self) -> None:
        ws = self.workspace
        pins = tuple(ws.view.pinned)
        if pins != self._pins_key:
            self._pins_key = pins
            self._rebuild(pins)
            self._data_key = None
        if not pins or ws.store is None:
            return
        rows = ws.rows()
        data_key = (id(ws.store), ws.store.version, ws.view.branch)
        if data_key != self._data_key and len(rows):
            self._data_key = data_key
            for pos in pins:
                self._update_history(pos, *self._position_rows(pos, rows)[:2])
        for pos, card in self.cards.items():
            dpg.set_value(card["now"], [[float(self._position_rows(pos, rows)[2])]])
            info = ws.inspect.token_info(pos)
            self._cache.set(card["title"], f"position {pos}   {shown(info.token) if info else ''}")
            self._cache.set(card["values"], describe(info) if info else "")
            self._show_candidates(pos, card, info)

    def _rebuild(self, pins: tuple[int, ...]) -> None:
        dpg.delete_item(self.group, children_only=True)
        self.cards.clear()
        self.data.clear()
        self._candidates_key.clear()
        self._cache = Cached()
        dpg.configure_item(self.hint, show=not pins)
        for pos in pins:
            with dpg.group(parent=self.group):
                card: dict[int | str, int | str] = {}
                with dpg.group(horizontal=True):
                    card["title"] = dpg.add_text("", color=TITLE_COLOR)
                    dpg.add_button(label="x", small=True, callback=self._unpinner(pos))
                card["values"] = dpg.add_text("", wrap=260)
                with dpg.plot(height=150, width=-1, no_menus=True, no_box_select=True, no_mouse_pos=True) as plot:
                    dpg.add_plot_legend(location=dpg.mvPlot_Location_NorthEast)
                    x = dpg.add_plot_axis(dpg.mvXAxis, no_tick_labels=False)
                    y = dpg.add_plot_axis(dpg.mvYAxis)
                    dpg.set_axis_limits(y, -0.05, 1.05)
                    card["x_axis"] = x
                    card["confidence"] = dpg.add_line_series([0.0], [0.0], label="p(token)", parent=y)
                    dpg.bind_item_theme(card["confidence"], self._themes["confidence"])
                    card["entropy"] = dpg.add_line_series([0.0], [0.0], label="entropy / ln V", parent=y)
                    dpg.bind_item_theme(card["entropy"], self._themes["entropy"])
                    for code, label, _marker in EVENT_MARKS:
                        card[f"event{code}"] = dpg.add_scatter_series([0.0], [0.0], label=label, parent=y)
                        dpg.bind_item_theme(card[f"event{code}"], self._themes[code])
                    card["now"] = dpg.add_inf_line_series([0.0], parent=y)
                card["plot"] = plot
                card["held"] = dpg.add_text("", wrap=260, color=INFO_COLOR)
                card["candidates"] = dpg.add_group()
                dpg.add_separator()
            self.cards[pos] = card

    def _unpinner(self, pos: int) -> Callable[[], None]:
        return lambda: self.workspace.view.unpin(pos)

    def _position_rows(self, pos: int, rows: np.ndarray) -> tuple[np.ndarray, int, int]:
        """(rows, position in a record, index of the record shown among those rows) of a pinned
        position: in a run made in blocks, the records of the block holding it, at its place there."""
        store, record = self.workspace.store, self.workspace.view.record
        if not store.layout.is_blocks:
            return rows, pos, record
        block, local = divmod(pos, store.layout.seq_len)
        in_block = np.flatnonzero(store.column("block")[rows] == block)
        return rows[in_block], local, int(np.searchsorted(in_block, record, side="right")) - 1

    def _update_history(self, pos: int, rows: np.ndarray, local: int | None = None) -> None:
        ws, card = self.workspace, self.cards[pos]
        arrays = history_arrays(ws.store, rows, pos if local is None else local)
        self.data[pos] = arrays
        x = np.arange(len(rows), dtype=np.float64)
        ln_v = entropy_max(ws.vocab.size if ws.vocab is not None else 2)
        conf = np.nan_to_num(arrays["confidence"].astype(np.float64), nan=-1.0)  # off the plot where none
        ent = np.nan_to_num(arrays["entropy"].astype(np.float64) / ln_v, nan=-1.0)
        dpg.set_value(card["confidence"], [x.tolist(), conf.tolist()])
        dpg.set_value(card["entropy"], [x.tolist(), ent.tolist()])
        for code, _, _ in EVENT_MARKS:
            at = np.flatnonzero(arrays["events"] == code)
            dpg.set_value(card[f"event{code}"], [at.astype(np.float64).tolist(), [0.0] * len(at)])
        dpg.set_axis_limits(card["x_axis"], -0.5, max(1.0, len(rows) - 0.5))
        strings = ws.vocab.strings() if ws.vocab is not None else np.array([])
        masked_runs = int((arrays["events"] == EVENT_MASKED).sum())
        self._cache.set(card["held"], f"held: {value_runs(arrays['tokens'], arrays['is_masked'], strings)}"
                                      f"  ({masked_runs} records masked)")

    def _show_candidates(self, pos: int, card: dict, info: TokenInfo | None) -> None:
        """The record's candidates as buttons, four to a line; rebuilt only when they change."""
        key = (info.record, info.sampled_record, info.candidates) if info else None
        if self._candidates_key.get(pos) == key:
            return
        self._candidates_key[pos] = key
        dpg.delete_item(card["candidates"], children_only=True)
        if info is None or not info.candidates:
            dpg.add_text("no candidates stored", parent=card["candidates"], color=INFO_COLOR)
            return
        dpg.add_text(f"candidates from {info.sampled_label}: click to place", parent=card["candidates"],
                     color=INFO_COLOR, wrap=260)
        shown_candidates = info.candidates[:TOP_K_SHOWN]
        for start in range(0, len(shown_candidates), 4):  # four to a line in the panel's width
            with dpg.group(horizontal=True, parent=card["candidates"]):
                for cid, text, p in shown_candidates[start : start + 4]:
                    dpg.add_button(label=f"{shown(text)} {p:.2f}", callback=self._picker(pos, cid), small=True)

    def _picker(self, pos: int, token_id: int) -> Callable[[], None]:
        return lambda: self.workspace.edits.pick_candidate(pos, token_id)
