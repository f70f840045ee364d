"""The status bar (model, device, steps/s, progress, messages) and the colour legend.

Both are small panels: they build their items under a parent, keep their ids and push a
value only when it changed. dearpygui only.
"""

from __future__ import annotations

from collections.abc import Callable

import dearpygui.dearpygui as dpg

from dpgviz.core.palette import entropy_max
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


class StatusBar:
    """One line at the bottom: model, device, speed, progress of the run, last message."""

    def __init__(self, restart_worker: Callable[[], object] | None = None) -> None:
        self._cache = Cached()
        self.restart_worker = restart_worker
        self.model = self.device = self.speed = self.progress = self.message = self.restart_button = 0
        self.restart_tip = 0

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
            self.message = dpg.add_text("", color=INFO_COLOR)

    def show(self, model: str, device: str, steps_per_s: float, progress: float, progress_text: str) -> None:
        self._cache.set(self.model, f"model: {model}")
        self._cache.set(self.device, f"device: {device}")
        self._cache.set(self.speed, f"{steps_per_s:5.1f} steps/s")
        self._cache.set(self.progress, min(1.0, max(0.0, progress)))
        self._cache.configure(self.progress, overlay=progress_text)

    def show_restart(self, is_shown: bool, label: str = "Restart worker") -> None:
        """The Restart worker button, shown while the worker is dead (Reconnect: a remote worker's link dropped)."""
        self._cache.configure(self.restart_button, show=is_shown)
        if is_shown:
            self._cache.configure(self.restart_button, label=label)
            self._cache.set(self.restart_tip, RESTART_TIPS.get(label, ""))

    def say(self, text: str, is_error: bool = False) -> None:
        """Show a one-line message (errors in red)."""
        self._cache.set(self.message, text)
        self._cache.configure(self.message, color=ERROR_COLOR if is_error else INFO_COLOR)

    @property
    def text(self) -> str:
        return str(dpg.get_value(self.message))


class Legend:
    """Explains the canvas colours of the current mode: swatches, or a colour scale."""

    def __init__(self) -> None:
        self._groups: dict[str, int | str] = {}
        self._scale_hi: dict[str, int | str] = {}
        self._shown: str | None = None
        self.description = 0

    def build(self, parent: int | str) -> None:
        with dpg.group(parent=parent, horizontal=True) as row:
            for mode in palette.MODES:
                with dpg.group(horizontal=True, show=False) as group:
                    if mode.field is None:
                        for _key, label, rgb in palette.STATES:
                            _swatch(rgb)
                            dpg.add_text(label)
                    elif mode.key == "changed":
                        for index, label in (
                            (palette.MASKED, "masked"),
                            (palette.STATE_INDEX["visible"], "unchanged"),
                            (palette.CHANGED, "changed since the step before"),
                        ):
                            _swatch(tuple(int(c) for c in palette.COLORS[index]))
                            dpg.add_text(label)
                    elif mode.key == "disagreement":
                        _swatch(palette.MASKED_COLOR)
                        dpg.add_text("masked")
                        _swatch(palette.NO_VALUE_COLOR)
                        dpg.add_text("not scored")
                        dpg.add_text("0 agree")
                        _scale_bar()
                        self._scale_hi[mode.key] = dpg.add_text("")
                    elif mode.key == "order":
                        _swatch(palette.MASKED_COLOR)
                        dpg.add_text("masked / never settled")
                        dpg.add_text("first step")
                        _scale_bar()
                        dpg.add_text("last step")
                    else:
                        _swatch(palette.MASKED_COLOR)
                        dpg.add_text("masked")
                        _swatch(palette.NO_VALUE_COLOR)
                        dpg.add_text("no value")
                        dpg.add_text(f"{mode.lo:g}")
                        _scale_bar()
                        self._scale_hi[mode.key] = dpg.add_text(f"{mode.hi:g}")
                self._groups[mode.key] = group
        with dpg.tooltip(row):  # what the mode shows, without taking the row's width
            self.description = dpg.add_text("", color=INFO_COLOR)
        self.set_entropy_max(palette.DEFAULT_VOCAB_SIZE)  # until a model's vocabulary replaces it
        self.set_disagreement_top(1.0)  # until a scored branch is shown

    def show(self, mode_key: str) -> None:
        if mode_key == self._shown:
            return
        for key, group in self._groups.items():
            dpg.configure_item(group, show=key == mode_key)
        mode = palette.MODE_BY_KEY[mode_key]
        dpg.set_value(self.description, mode.description)
        self._shown = mode_key

    def set_disagreement_top(self, top_bits: float) -> None:
        """The top of the disagreement scale (store.layers.scale_top of the layer shown)."""
        dpg.set_value(self._scale_hi["disagreement"], f"{top_bits:g} bits or more (JS of the two models' top-8; 1 = disjoint)")

    def set_entropy_max(self, vocab_size: int) -> None:
        dpg.set_value(self._scale_hi["entropy"], f"{entropy_max(vocab_size):.2f} (ln V)")


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
