"""Other models in the window: "Compare models...", "Score with model..." and the disagreement plot.

- `CompareModelsDialog` lists the models found (the settings panel's list: the embedded
  default, ./out, the chosen folders); tick two or more, Run: the panel's settings run on each
  (`Workspace.models.compare_models`) and the session opens with the first two side by side.
- `ScoreDialog` picks a second model for the branch shown (`Workspace.models.score`).
- `DisagreementWindow`: the mean Jensen-Shannon divergence per step between the branch's model
  and the one that scored it, the step shown marked, a click goes there. When a score
  finishes it opens and the canvas switches to the "disagreement" colour mode.

dearpygui only; the numbers come from the workspace. No torch.
"""

from __future__ import annotations

from collections.abc import Callable

import dearpygui.dearpygui as dpg
import numpy as np

from dpgviz.app.workspace import Workspace
from dpgviz.core.discovery import ModelEntry
from dpgviz.core.settings import GenerationSettings, SettingsError
from dpgviz.gui.status import INFO_COLOR, Cached
from dpgviz.gui.theme import series_theme

TITLE_COLOR = (140, 180, 255)
JS_RGB = (213, 94, 0)  # Okabe-Ito vermillion: the divergence line


class CompareModelsDialog:
    """Tick models, run the panel's settings on each as sibling branches."""

    def __init__(self, workspace: Workspace, entries: Callable[[], list[ModelEntry]],
                 read: Callable[[], GenerationSettings]) -> None:
        self.workspace, self.entries, self.read = workspace, entries, read
        self.window = self.list_group = 0
        self.boxes: list[tuple[ModelEntry, int | str]] = []
        self._order: list[ModelEntry] = []  # ticked by `tick`, in its order

    def build(self) -> None:
        with dpg.window(label="Compare models", show=False, width=520, height=420, modal=True) as self.window:
            dpg.add_text(
                "Each ticked model runs the settings of the panel (same length, steps, strategy, schedule and "
                "seed) as sibling branches of one all-masked start; the compare view opens on the first two "
                "ticked. The models must share a vocabulary. The runs go in a separate process: the loaded "
                "model stays loaded.", color=INFO_COLOR, wrap=490,
            )
            dpg.add_separator()
            with dpg.child_window(height=240) as self.list_group:
                pass
            with dpg.group(horizontal=True):
                dpg.add_button(label="Run", width=110, callback=lambda: self.run())
                dpg.add_button(label="Cancel", width=110, callback=lambda: dpg.hide_item(self.window))

    def show(self) -> None:
        """List the models found now, and open."""
        dpg.delete_item(self.list_group, children_only=True)
        self.boxes = [
            (e, dpg.add_checkbox(label=e.label(), parent=self.list_group, default_value=False)) for e in self.entries()
        ]
        dpg.show_item(self.window)

    def tick(self, *paths: str) -> None:
        """Tick the models at these paths ('default' = the embedded one) in this order (tests)."""
        for _entry, box in self.boxes:
            dpg.set_value(box, False)
        self._order = []
        for path in paths:
            for entry, box in self.boxes:
                if (path == "default" and entry.is_default) or (not entry.is_default and str(entry.path) == path):
                    dpg.set_value(box, True)
                    self._order.append(entry)

    def chosen(self) -> list[ModelEntry]:
        ticked = [e for e, box in self.boxes if dpg.get_value(box)]
        order = [e for e in self._order if e in ticked]
        return order + [e for e in ticked if e not in order]

    def run(self) -> bool:
        try:
            settings = self.read()
        except SettingsError as exc:
            self.workspace.say(str(exc), is_error=True)
            return False
        if self.workspace.models.compare_models(self.chosen(), settings):
            dpg.hide_item(self.window)
            return True
        return False


class ScoreDialog:
    """Pick the second model for the branch shown."""

    def __init__(self, workspace: Workspace, entries: Callable[[], list[ModelEntry]]) -> None:
        self.workspace, self.entries = workspace, entries
        self.window = self.combo = self.about = 0
        self._listed: list[ModelEntry] = []

    def build(self) -> None:
        with dpg.window(label="Score with model", show=False, width=520, height=230, modal=True) as self.window:
            self.about = dpg.add_text("", color=INFO_COLOR, wrap=490)
            self.combo = dpg.add_combo([], width=-1)
            with dpg.group(horizontal=True):
                dpg.add_button(label="Score", width=110, callback=lambda: self.run())
                dpg.add_button(label="Cancel", width=110, callback=lambda: dpg.hide_item(self.window))

    def show(self) -> None:
        ws = self.workspace
        self._listed = list(self.entries())
        labels = [e.label() for e in self._listed]
        dpg.configure_item(self.combo, items=labels)
        if labels and dpg.get_value(self.combo) not in labels:
            dpg.set_value(self.combo, labels[0])
        dpg.set_value(self.about, (
            f"Branch {ws.view.branch}: the chosen model runs on exactly the inputs this branch's model saw at "
            "each step (teacher-forced, nothing sampled). Its p(token), entropy and top-8 are kept beside the "
            "branch's own; the canvas then shows where the two disagree (JS divergence per position)."
        ))
        dpg.show_item(self.window)

    def pick(self, path: str) -> bool:
        """Pick the model at `path` ('default' = the embedded one) (tests)."""
        for e in self._listed:
            if (path == "default" and e.is_default) or (not e.is_default and str(e.path) == path):
                dpg.set_value(self.combo, e.label())
                return True
        return False

    def run(self) -> bool:
        labels = [e.label() for e in self._listed]
        value = dpg.get_value(self.combo)
        if value not in labels:
            self.workspace.say("Pick a model to score with.", is_error=True)
            return False
        if self.workspace.models.score(self._listed[labels.index(value)]):
            dpg.hide_item(self.window)
            return True
        return False


class DisagreementWindow:
    """Mean JS divergence per step of the shown branch's score layer; a click goes to that step."""

    def __init__(self, workspace: Workspace, set_mode: Callable[[str], None],
                 set_scale: Callable[[float], None] = lambda top: None) -> None:
        self.workspace, self.set_mode, self.set_scale = workspace, set_mode, set_scale  # set_scale: the legend's top
        self.window = self.caption = self.plot = self.x_axis = self.y_axis = self.series = self.now = 0
        self.data: tuple[np.ndarray, np.ndarray] | None = None  # (records, mean JS) shown (tests read it)
        self._key: tuple | None = None
        self._scored = 0
        self._cache = Cached()

    def build(self) -> None:
        with dpg.window(label="Model disagreement", show=False, width=460, height=360, pos=(330, 400)) as self.window:
            self.caption = dpg.add_text("", color=INFO_COLOR, wrap=430)
            with dpg.plot(height=210, width=-1, no_menus=True, no_box_select=True) as self.plot:
                self.x_axis = dpg.add_plot_axis(dpg.mvXAxis, label="record")
                self.y_axis = dpg.add_plot_axis(dpg.mvYAxis, label="mean JS (bits)")
                self.series = dpg.add_line_series([0.0], [0.0], label="mean JS per step", parent=self.y_axis)
                dpg.bind_item_theme(self.series, series_theme(JS_RGB))
                self.now = dpg.add_inf_line_series([0.0], parent=self.y_axis)
            with dpg.item_handler_registry() as handlers:
                dpg.add_item_clicked_handler(callback=lambda: self.jump_to(dpg.get_plot_mouse_pos()[0]))
            dpg.bind_item_handler_registry(self.plot, handlers)
            dpg.add_button(label="Colour the canvas by disagreement", callback=lambda: self.set_mode("disagreement"))

    def show(self) -> None:
        dpg.show_item(self.window)

    def jump_to(self, x: float) -> None:
        ws = self.workspace
        if ws.n_records():
            ws.view.playing = False
            ws.view.select(round(x), ws.n_records())

    def refresh(self) -> None:
        """A finished score opens the window and the mode; the plot follows the branch shown."""
        ws = self.workspace
        if ws.models.scored != self._scored:
            self._scored = ws.models.scored
            self.set_mode("disagreement")
            self.show()
        self._cache.set(self.now, [[float(ws.view.record)]])
        layer = ws.models.layer()
        key = (id(layer), id(ws.store), ws.view.branch)
        if key == self._key:
            return
        self._key = key
        series = ws.models.js_series()
        self.data = series
        self.set_scale(ws.models.js_top())
        if series is None:
            dpg.set_value(self.caption, f"Branch {ws.view.branch} has not been scored by another model "
                                        "(Branches > Score with model...).")
            dpg.set_value(self.series, [[0.0], [0.0]])
            return
        x, y = series
        finite = y[np.isfinite(y)]
        dpg.set_value(self.caption, (
            f"Branch {ws.view.branch}: its own model against {layer.name}. Mean JS divergence of the two "
            f"models' top-8 per step (0 = same, 1 bit = disjoint); mean over every position scored "
            f"{ws.models.js_mean() or 0:.4f}, largest step mean {finite.max() if len(finite) else 0:.4f} at record "
            f"{int(x[np.nanargmax(y)]) if len(finite) else 0}."
        ))
        dpg.set_value(self.series, [x.tolist(), np.nan_to_num(y, nan=0.0).tolist()])
        dpg.set_axis_limits(self.x_axis, -0.5, max(1.0, float(ws.n_records()) - 0.5))
        dpg.set_axis_limits(self.y_axis, 0.0, max(0.01, float(finite.max()) * 1.15 if len(finite) else 0.01))
