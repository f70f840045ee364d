"""The "Compare strategies" window: tick strategies, run each with the settings shown.

The runs go one after another from the same all-masked start (`Workspace.compare_strategies`)
and are kept as sibling branches; the compare view opens on the first two when the last
finishes, and its pickers put any two side by side. The window's own job is the choice.

dearpygui only; no torch.
"""

from __future__ import annotations

from collections.abc import Callable

import dearpygui.dearpygui as dpg

from dpgviz.app.workspace import Workspace
from dpgviz.core.settings import OPEN_ENDED, STRATEGIES, STRATEGY_INFO, GenerationSettings
from dpgviz.gui.status import INFO_COLOR

DEFAULT_OFF = OPEN_ENDED  # ticked by hand: such a run may take many more passes than `steps`


class StrategyPicker:
    def __init__(self, workspace: Workspace, read: Callable[[], GenerationSettings | None]) -> None:
        self.workspace = workspace
        self.read = read  # the settings panel's settings, or None (it said why)
        self.window: int | str = 0
        self.boxes: dict[str, int | str] = {}

    def build(self) -> None:
        with dpg.window(label="Compare strategies", show=False, width=460, height=400, modal=True) as self.window:
            dpg.add_text(
                "Each ticked strategy runs with the settings of the panel (same model, seed and length), "
                "one after another, as sibling branches of one all-masked start. The compare view opens "
                "when the last one finishes. Hover a name for what it does; threshold runs until nothing "
                "is masked, however many steps that takes.",
                color=INFO_COLOR, wrap=430,
            )
            dpg.add_separator()
            for name in STRATEGIES:
                self.boxes[name] = dpg.add_checkbox(label=name, default_value=name not in DEFAULT_OFF)
                with dpg.tooltip(self.boxes[name]):
                    dpg.add_text(STRATEGY_INFO[name], wrap=420)
            dpg.add_separator()
            with dpg.group(horizontal=True):
                dpg.add_button(label="Run all", width=110, callback=lambda: self.run())
                dpg.add_button(label="Cancel", width=110, callback=lambda: dpg.hide_item(self.window))

    def show(self) -> None:
        dpg.show_item(self.window)

    def chosen(self) -> list[str]:
        return [name for name, box in self.boxes.items() if dpg.get_value(box)]

    def run(self) -> bool:
        settings = self.read()
        if settings is None:
            return False
        if self.workspace.compare.strategies(settings, self.chosen()):
            dpg.hide_item(self.window)
            return True
        return False
