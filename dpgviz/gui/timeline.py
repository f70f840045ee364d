"""The timeline: a slider over every record of the shown run, stepping, play and follow-live.

Every received record ('prediction' and 'remask' substeps alike) is one stop on the
slider, so any step can be revisited at once. Callbacks only change the `ViewState`;
`refresh` pushes the state back into the widgets when it changed. dearpygui only.
"""

from __future__ import annotations

import dearpygui.dearpygui as dpg

from dpgviz.app.view_state import ViewState
from dpgviz.app.workspace import Workspace
from dpgviz.core.settings import planned_steps
from dpgviz.gui.status import Cached, FittedText
from dpgviz.store.step_store import StepStore

SPEEDS = (2.0, 5.0, 12.0, 30.0, 60.0)  # records per second


class TimelinePanel:
    """Slider, Previous/Next, Play, speed, follow live, and which branch the slider runs over."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self.view = workspace.view
        self._n_records = workspace.n_records
        self._cache = Cached()
        self.slider = self.play_button = self.follow = self.speed = self.branch_text = 0
        # the shown run's caption: cut with '...' at the panel's edge (where the slider above ends), whole on hover
        self.caption = FittedText(lambda: dpg.get_item_rect_max(self.slider)[0])

    def build(self, parent: int | str) -> None:
        # Two rows, so the slider's label ("record 18 of 18 (run: 40)") and the run's caption each
        # have the panel's width: in one row they were cut off below about 1600 pixels.
        with dpg.group(parent=parent):
            with dpg.group(horizontal=True):
                dpg.add_button(label="|<", width=30, callback=lambda: self.view.home(self._n_records()))
                dpg.add_button(label="<", width=30, callback=lambda: self.view.step(-1, self._n_records()))
                self.play_button = dpg.add_button(
                    label="Play", width=60, callback=lambda: self.view.toggle_play(self._n_records())
                )
                dpg.add_button(label=">", width=30, callback=lambda: self.view.step(1, self._n_records()))
                dpg.add_button(label=">|", width=30, callback=lambda: self.view.end(self._n_records()))
                self.slider = dpg.add_slider_int(
                    width=-1, min_value=1, max_value=1, format="no records", callback=self._on_slider
                )
            with dpg.group(horizontal=True):
                self.speed = dpg.add_combo(
                    [f"{s:g} rec/s" for s in SPEEDS],
                    default_value=f"{self.view.play_speed:g} rec/s",
                    width=90,
                    callback=self._on_speed,
                )
                self.follow = dpg.add_checkbox(label="follow live", default_value=True, callback=self._on_follow)
                self.branch_text = self.caption.build()
        with dpg.tooltip(self.slider):
            dpg.add_text("Left/Right: previous/next   Home/End: first/last   Space: play")

    # -- callbacks: change view state only -----------------------------------------
    def _on_slider(self, sender: int, value: int) -> None:
        self.view.playing = False
        self.view.select(int(value) - 1, self._n_records())  # the slider counts from 1

    def _on_speed(self, sender: int, value: str) -> None:
        self.view.play_speed = float(value.split()[0])

    def _on_follow(self, sender: int, value: bool) -> None:
        self.view.follow_live = bool(value)
        if value:
            self.view.playing = False

    # -- refresh -------------------------------------------------------------------
    def refresh(self, store: StepStore | None, view: ViewState, expected: int | None = None) -> None:
        """Push the view into the widgets; `expected` is the live run's record count, if known."""
        n = self._n_records()
        if n == 0:
            fmt = "no records yet"
        elif expected and expected > n:
            fmt = f"record %d of {n} (run: {expected})"
        else:
            fmt = f"record %d of {n}"
        self._cache.configure(self.slider, max_value=max(1, n), enabled=n > 0, format=fmt)
        self._cache.set(self.slider, view.record + 1)
        self._cache.configure(self.play_button, label="Pause" if view.playing else "Play")
        self._cache.set(self.follow, view.follow_live)
        if store is not None and view.branch in store.branches:
            self.caption.set(self._label(store, view.branch))
        self.caption.fit()

    @staticmethod
    def _label(store: StepStore, branch: str) -> str:
        b = store.branches[branch]
        settings = b.settings or {}
        base = b.label or f"run {branch}"
        return base + settings_note(settings)


def settings_note(settings: dict) -> str:
    """' (seed 3, 20 steps)': what the settings say of the seed and the plan; '' when they say neither
    (a run a Recorder logged from someone's sampler carries only what they passed)."""
    parts = [f"seed {settings['seed']}"] if "seed" in settings else []
    steps = planned_steps(settings)
    if steps:
        parts.append(f"{steps} steps")
    elif "strategy" in settings:
        parts.append(str(settings["strategy"]))
    return f" ({', '.join(parts)})" if parts else ""
