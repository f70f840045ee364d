"""The status bar (model, device, steps/s, progress, messages), View > Messages and the colour legend.

Small panels: they build their items under a parent, keep their ids and push a value only
when it changed. A message longer than the bar ends in '...' there, whole in its tooltip,
and View > Messages lists every message since start with its time (app.notices keeps
them). `FittedText` and `fit_text` serve any one-line text that must not be cut at a
panel's edge. dearpygui only.
"""

from __future__ import annotations

from collections.abc import Callable

import dearpygui.dearpygui as dpg

from dpgviz.app.notices import Notices
from dpgviz.core import color_modes
from dpgviz.gui import palette

ERROR_COLOR = (255, 120, 100)
RESTART_TIPS = {
    "Restart worker": "The worker process died: start a new one with the same model, device and dtype.\n"
                      "The records shown stay.",
    "Reconnect": "The connection to the remote worker dropped: connect again (its connection file is read\n"
                 "again, so a restarted worker is found) and load the same model there. The records shown stay.",
}
INFO_COLOR = (170, 176, 188)


class Cached:
    """set_value / configure_item that skip the call when nothing changed."""

    def __init__(self) -> None:
        self._values: dict = {}

    def set(self, item: int | str, value: object) -> None:
        if self._values.get(item, _MISSING) != value:
            dpg.set_value(item, value)
            self._values[item] = value

    def configure(self, item: int | str, **kwargs: object) -> None:
        key = (item, tuple(sorted(kwargs)))
        values = tuple(kwargs[k] for k in sorted(kwargs))
        if self._values.get(key, _MISSING) != values:
            dpg.configure_item(item, **kwargs)
            self._values[key] = values


_MISSING = object()
ELLIPSIS = "..."


def fit_text(text: str, width_px: float, font: int | str = 0) -> str:
    """`text` if it fits `width_px` on one line, else its longest start that fits with '...' after.

    Measured with dpg.get_text_size (after the first frame: before it the font is not built
    and the text comes back whole)."""
    size = dpg.get_text_size(text, font=font)
    if not size or size[0] <= width_px or size[0] <= 0:
        return text
    lo, hi = 0, len(text)  # the longest prefix that fits, by bisection (a dozen measurements)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if dpg.get_text_size(text[:mid].rstrip() + ELLIPSIS, font=font)[0] <= width_px:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo].rstrip() + ELLIPSIS


class FittedText:
    """A one-line text that ends in '...' where it would pass `right_px()` (a viewport x), the whole
    text in its tooltip. `fit()` once a frame: it measures only when the text or the room changed."""

    def __init__(self, right_px: Callable[[], float], tip_wrap: int = 720) -> None:
        self.right_px = right_px
        self.tip_wrap = tip_wrap
        self.item = self.tip = 0
        self.text = ""  # the whole text
        self._fitted: tuple[str, int] | None = None

    def build(self, note: str = "", **kwargs: object) -> int | str:
        """The text item (kwargs: add_text's); `note` goes under the whole text in the tooltip."""
        self.item = dpg.add_text("", **kwargs)
        with dpg.tooltip(self.item):
            self.tip = dpg.add_text("", wrap=self.tip_wrap)
            if note:
                dpg.add_text(note, color=INFO_COLOR)
        return self.item

    def set(self, text: str) -> None:
        if text != self.text:
            self.text = text
            dpg.set_value(self.tip, text)
            self.fit()

    def fit(self) -> None:
        room = int(self.right_px() - dpg.get_item_rect_min(self.item)[0])
        if (self.text, room) != self._fitted:
            self._fitted = (self.text, room)
            dpg.set_value(self.item, fit_text(self.text, room) if room > 0 else self.text)

    @property
    def is_cut(self) -> bool:
        return dpg.get_value(self.item) != self.text


class StatusBar:
    """One line at the bottom: model, device, speed, progress of the run, last message (whole on hover;
    every message in View > Messages, `messages`)."""

    def __init__(self, restart_worker: Callable[[], object] | None = None, notices: Notices | None = None) -> None:
        self._cache = Cached()
        self.restart_worker = restart_worker
        self.model = self.device = self.speed = self.progress = self.message = self.restart_button = 0
        self.restart_tip = 0
        self._message = FittedText(lambda: dpg.get_viewport_client_width() - 12)
        self.messages = MessagesWindow(notices or Notices())

    def build(self, parent: int | str) -> None:
        with dpg.group(horizontal=True, parent=parent):
            self.model = dpg.add_text("model: none")
            dpg.add_text("|", color=(90, 94, 104))
            self.device = dpg.add_text("device: -")
            dpg.add_text("|", color=(90, 94, 104))
            self.speed = dpg.add_text("0.0 steps/s")
            self.progress = dpg.add_progress_bar(default_value=0.0, width=220, overlay="idle")
            self.restart_button = dpg.add_button(
                label="Restart worker", show=False, small=True,
                callback=lambda: self.restart_worker() if self.restart_worker else None,
            )
            with dpg.tooltip(self.restart_button):
                self.restart_tip = dpg.add_text(RESTART_TIPS["Restart worker"])
            self.message = self._message.build(note="View > Messages lists every message.", color=INFO_COLOR)
        self.messages.build()

    def show(self, model: str, device: str, steps_per_s: float, progress: float, progress_text: str) -> None:
        self._cache.set(self.model, f"model: {model}")
        self._cache.set(self.device, f"device: {device}")
        self._cache.set(self.speed, f"{steps_per_s:5.1f} steps/s")
        self._cache.set(self.progress, min(1.0, max(0.0, progress)))
        self._cache.configure(self.progress, overlay=progress_text)
        self._message.fit()
        self.messages.refresh()

    def show_restart(self, is_shown: bool, label: str = "Restart worker") -> None:
        """The Restart worker button, shown while the worker is dead (Reconnect: a remote worker's link dropped)."""
        self._cache.configure(self.restart_button, show=is_shown)
        if is_shown:
            self._cache.configure(self.restart_button, label=label)
            self._cache.set(self.restart_tip, RESTART_TIPS.get(label, ""))

    def say(self, text: str, is_error: bool = False) -> None:
        """Show a one-line message (errors in red): cut with '...' at the window's edge, whole on hover."""
        self._message.set(text)
        self._cache.configure(self.message, color=ERROR_COLOR if is_error else INFO_COLOR)

    @property
    def text(self) -> str:
        """The whole message (the bar may show it cut)."""
        return self._message.text


class MessagesWindow:
    """View > Messages: every message since start, newest last, 'HH:MM:SS  text', wrapped, in a
    scrolling list; Copy all puts them on the clipboard as text."""

    def __init__(self, notices: Notices) -> None:
        self.notices = notices
        self.window = self.list = 0
        self.lines: list[int | str] = []  # one text item per message, oldest first
        self._seen = 0  # notices.n_said when the list was last brought up to date

    def build(self) -> None:
        with dpg.window(label="Messages", show=False, width=760, height=420, pos=(160, 120)) as self.window:
            with dpg.group(horizontal=True):
                dpg.add_button(label="Copy all", callback=lambda: dpg.set_clipboard_text(self.as_text()))
                dpg.add_text("every message since start, newest last", color=INFO_COLOR)
            self.list = dpg.add_child_window(width=-1, height=-1, border=True)

    def show(self) -> None:
        dpg.show_item(self.window)
        dpg.focus_item(self.window)
        self.refresh()
        dpg.set_y_scroll(self.list, -1.0)  # the newest (-1: to the end, once laid out)

    def refresh(self) -> None:
        """Add the messages said since the last call (nothing to do in the common frame)."""
        if self.notices.n_said == self._seen:
            return
        new = self.notices.since(self._seen)
        self._seen = self.notices.n_said
        for message in new:
            self.lines.append(dpg.add_text(
                f"{message.clock()}  {message.text}", parent=self.list, wrap=0,
                color=ERROR_COLOR if message.is_error else (220, 222, 228),
            ))
        while len(self.lines) > len(self.notices.messages):  # the log dropped its oldest
            dpg.delete_item(self.lines.pop(0))
        if dpg.is_item_shown(self.window):
            dpg.set_y_scroll(self.list, -1.0)

    def as_text(self) -> str:
        return "\n".join(f"{m.clock()}  {'error: ' if m.is_error else ''}{m.text}" for m in self.notices.messages)


class Legend:
    """Explains the canvas colours of the current mode: the items of its `legend` (core.color_modes),
    the same list the PNG/GIF/overview legends draw (export.images.legend_image)."""

    def __init__(self) -> None:
        self._groups: dict[str, int | str] = {}
        self._scale_texts: dict[str, tuple[int | str, int | str]] = {}  # mode -> (lo text, hi text)
        self._shown: str | None = None
        self.description = 0

    def build(self, parent: int | str) -> None:
        with dpg.group(parent=parent, horizontal=True) as row:
            for mode in color_modes.modes():  # read when the window is built: runtime modes too
                with dpg.group(horizontal=True, show=False) as group:
                    for item in mode.legend(palette.DEFAULT_VOCAB_SIZE):
                        if item.scale is not None:
                            lo = dpg.add_text(item.scale[0])
                            _scale_bar()
                            self._scale_texts[mode.name] = (lo, dpg.add_text(item.scale[1]))
                        else:
                            _swatch(item.rgb or (0, 0, 0))
                            dpg.add_text(item.label)
                self._groups[mode.name] = group
        with dpg.tooltip(row):  # what the mode shows, without taking the row's width
            self.description = dpg.add_text("", color=INFO_COLOR)
        self.set_disagreement_top(1.0)  # until a scored branch is shown

    def show(self, mode_key: str) -> None:
        mode = color_modes.get(mode_key)
        if mode.name == self._shown:
            return
        for key, group in self._groups.items():
            dpg.configure_item(group, show=key == mode.name)
        dpg.set_value(self.description, mode.description)
        self._shown = mode.name

    def set_disagreement_top(self, top_bits: float) -> None:
        """The top of the disagreement scale (store.layers.scale_top of the layer shown)."""
        if "disagreement" in self._scale_texts:
            dpg.set_value(self._scale_texts["disagreement"][1],
                          f"{top_bits:g} bits or more (JS of the two models' top-8; 1 = disjoint)")

    def set_entropy_max(self, vocab_size: int) -> None:
        """Every value scale at a vocabulary of `vocab_size` tokens (entropy's top is ln V)."""
        for name, (lo, hi) in self._scale_texts.items():
            if name == "disagreement":
                continue
            items = [i for i in color_modes.get(name).legend(vocab_size) if i.scale is not None]
            if items:
                dpg.set_value(lo, items[0].scale[0])
                dpg.set_value(hi, items[0].scale[1])


def _swatch(rgb: tuple[int, int, int]) -> None:
    """A small filled square (a tiny drawlist: cheap, no texture)."""
    with dpg.drawlist(width=14, height=14):
        dpg.draw_rectangle((1, 1), (13, 13), fill=(*rgb, 255), color=(90, 94, 104, 255))


def _scale_bar(width: int = 160, height: int = 14) -> None:
    """A horizontal colour bar of the sequential levels, drawn as adjacent rectangles."""
    colors = palette.level_colors()
    step = width / len(colors)
    with dpg.drawlist(width=width, height=height):
        for i, rgba in enumerate(colors):  # built once, at start
            dpg.draw_rectangle((i * step, 1), ((i + 1) * step + 0.5, height - 1), fill=rgba, color=rgba)
