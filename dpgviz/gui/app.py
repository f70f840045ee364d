"""The dpgviz window: context, viewport, panels and the frame loop that moves data.

    worker -> WorkerClient.poll -> StepStore -> ViewState -> panels draw what changed

`App` owns the Dear PyGui context, the worker client, the step store and the view
state; each panel (settings, canvas, timeline, status, legend) builds its own items and
refreshes them from that state. Callbacks run on the loop thread
(`manual_callback_management`) and only change the view state or send a command; the
loop (`frame`) is the only mover. Tests drive it frame by frame:

    app = App(models_dir=..., autoload=False).build()
    app.frame()                      # one poll + refresh + render
    app.load_model(entry); app.start_run(); ...
    app.close()

The File menu (`App.file_menu`) holds Open/Save/Export (`gui.files.SessionFiles`, jobs off the loop).

Never imports torch or dpgviz.engine: the worker process owns the model.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import dearpygui.dearpygui as dpg
import numpy as np

from dpgviz.core.discovery import ModelEntry, default_model_entry
from dpgviz.core.model_info import ModelInfo
from dpgviz.core.records import FLAG_PROTECTED, KINDS
from dpgviz.core.settings import GenerationSettings, SettingsError
from dpgviz.gui import palette
from dpgviz.gui.canvas import ZOOM_RANGE, TokenCanvas
from dpgviz.gui.files import SessionFiles
from dpgviz.gui.settings_panel import PANEL_WIDTH, Commands, SettingsPanel
from dpgviz.gui.status import Legend, StatusBar
from dpgviz.gui.theme import dark_theme, load_fonts
from dpgviz.gui.timeline import TimelinePanel
from dpgviz.gui.view_state import ViewState
from dpgviz.ipc.client import WorkerClient, WorkerGoneError, run_layout
from dpgviz.ipc.messages import (
    ModelLoaded,
    ModelLoading,
    RunFinished,
    RunStarted,
    RunStopped,
    StepReady,
    WorkerDied,
    WorkerError,
)
from dpgviz.store.step_store import StepStore

if TYPE_CHECKING:
    from dpgviz.store.session import Session

log = logging.getLogger(__name__)

TITLE = "dpgviz - masked diffusion visualizer"
TIMELINE_PX = 40
STATUS_PX = 34
SCROLL_ROWS_PER_NOTCH = 3


def expected_records(settings: GenerationSettings, start_iteration: int = 0) -> int:
    """Records a run yields: initial, prediction + remask per iteration but the last, final."""
    return 2 * (settings.steps - start_iteration) + 1


def continue_point(kind: str, iteration: int) -> int:
    """Iteration a continued run starts at from a record of `kind` at `iteration`.

    'initial' holds the state before its iteration; every other record holds the state
    after it (a 'prediction' record's tokens, all filled, are kept as they are).
    """
    return iteration if kind == "initial" else iteration + 1


class App:
    """The whole window. One instance per process (Dear PyGui has one context)."""

    def __init__(
        self,
        models_dir: str | None = None,
        device: str = "auto",
        session: str | None = None,
        *,
        autoload: bool = True,
        client_factory: Callable[[], WorkerClient] = WorkerClient,
        width: int = 1440,
        height: int = 900,
    ) -> None:
        self.models_dir = models_dir
        self.device = device
        self.session_path = session
        self.autoload = autoload
        self.client_factory = client_factory
        self.size = (width, height)
        self.client: WorkerClient | None = None
        self.store: StepStore | None = None
        self.view = ViewState()
        self.model_info: ModelInfo | None = None
        self.is_loading = False
        self.run_id: int | None = None  # the run in progress
        self.run_expected = 0  # records the run in progress will yield
        self.run_branch: str | None = None
        self.frame_count = 0
        self.file_menu: int | str = 0
        self.files: SessionFiles | None = None  # File menu: open, save, export
        self._arrivals: collections.deque[float] = collections.deque(maxlen=64)  # prediction records
        self._last_rate = 0.0
        self._session = None  # an opened session file (store.session.Session), if any
        self._last_frame_t = time.perf_counter()
        self._is_built = False

    # -- lifetime ------------------------------------------------------------------
    def build(self) -> App:
        dpg.create_context()
        dpg.configure_app(manual_callback_management=True)
        self.fonts = load_fonts()
        dpg.bind_theme(dark_theme())
        dpg.create_viewport(title=TITLE, width=self.size[0], height=self.size[1], clear_color=(24, 26, 31, 255))

        self.settings = SettingsPanel(
            Commands(load=self.load_model, start=self.start_run, stop=self.stop_run, continue_run=self.continue_run),
            self.models_dir,
        )
        self.canvas = TokenCanvas(self.fonts)
        self.timeline = TimelinePanel(self.view, self.n_records, self.select_branch)
        self.status = StatusBar()
        self.legend = Legend()

        with dpg.window(tag="dpgviz-main", no_scrollbar=True) as self.window:
            with dpg.menu_bar():
                with dpg.menu(label="File") as self.file_menu:
                    dpg.add_menu_item(label="Quit", callback=lambda: dpg.stop_dearpygui())
                with dpg.menu(label="View"):
                    dpg.add_menu_item(label="Text mode (wrap at newlines)", check=True, callback=self._on_text_mode_menu)
            with dpg.group(horizontal=True):
                with dpg.child_window(width=PANEL_WIDTH, height=-STATUS_PX) as left:
                    self.settings.build(left)
                with dpg.group():
                    with dpg.child_window(height=-(TIMELINE_PX + STATUS_PX), border=True) as centre:
                        with dpg.group(horizontal=True):
                            self.mode_combo = dpg.add_combo(
                                [m.label for m in palette.MODES],
                                default_value=palette.MODE_BY_KEY[self.view.color_mode].label,
                                width=200,
                                callback=self._on_mode,
                            )
                            self.text_mode_box = dpg.add_checkbox(label="text mode", callback=self._on_text_mode)
                            self.zoom_slider = dpg.add_slider_int(
                                label="zoom", width=140, default_value=self.view.font_px, min_value=ZOOM_RANGE[0],
                                max_value=ZOOM_RANGE[1], format="%d px", callback=self._on_zoom,
                            )
                            with dpg.tooltip(self.zoom_slider):
                                dpg.add_text("Text and cell size. Ctrl + mouse wheel over the canvas zooms too.")
                        self.legend.build(centre)
                        self.canvas.build(centre)
                    with dpg.child_window(height=TIMELINE_PX, border=True, no_scrollbar=True) as bottom:
                        self.timeline.build(bottom)
            self.status.build(self.window)
        self.files = SessionFiles(self)
        self.files.build(self.file_menu)

        self.key_handlers: dict[int, int | str] = {}
        with dpg.handler_registry():
            for key, action in (
                (dpg.mvKey_Left, lambda: self.view.step(-1, self.n_records())),
                (dpg.mvKey_Right, lambda: self.view.step(1, self.n_records())),
                (dpg.mvKey_Home, lambda: self.view.home(self.n_records())),
                (dpg.mvKey_End, lambda: self.view.end(self.n_records())),
                (dpg.mvKey_Spacebar, lambda: self.view.toggle_play(self.n_records())),
            ):
                self.key_handlers[key] = dpg.add_key_press_handler(key, callback=self._keyboard(action))
            dpg.add_mouse_wheel_handler(callback=self._on_wheel)
        dpg.set_item_callback(self.canvas.scrollbar, lambda: self.canvas.on_scrollbar(self.view))

        dpg.set_primary_window(self.window, True)
        dpg.configure_item(self.window, no_scrollbar=True)  # set_primary_window resets the flags
        dpg.setup_dearpygui()
        dpg.show_viewport()
        self._is_built = True
        self.legend.show(self.view.color_mode)
        self.settings.set_running(False, False)
        return self

    def start(self) -> None:
        """After the first frame: start the worker and load the default model, or open a session (no model)."""
        if self.session_path:
            self.files.open(self.session_path)  # and pick its recorded model, if unchanged
        if self.autoload and not self.session_path:  # a session opens without a model
            self.load_model(default_model_entry())

    def run(self) -> None:
        """The frame loop, until the window is closed."""
        self.frame()  # the first frame goes up before anything slow starts
        self.start()
        while self.frame():
            pass

    def close(self) -> None:
        """Stop the worker and destroy the context (closing the window calls this)."""
        if self.files is not None:
            self.files.close()  # a save in progress finishes first
            self.files = None
        if self.client is not None:
            self.client.close()
            self.client = None
        self.store = None
        if self._session is not None:
            self._session.close()
            self._session = None
        if self._is_built:
            dpg.destroy_context()
            self._is_built = False

    def __enter__(self) -> App:
        return self.build()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the frame loop ------------------------------------------------------------
    def frame(self) -> bool:
        """One frame: run callbacks, poll the worker into the store, refresh panels, render."""
        if not dpg.is_dearpygui_running():
            return False
        self.update()
        dpg.render_dearpygui_frame()
        self.frame_count += 1
        return True

    def update(self) -> None:
        """The Python half of a frame (everything but rendering): callbacks, poll, view, panels."""
        now = time.perf_counter()
        dt, self._last_frame_t = now - self._last_frame_t, now
        dpg.run_callbacks(dpg.get_callback_queue())
        self._poll()
        self.files.poll()
        self.view.advance(self.n_records(), dt)
        self.refresh()

    def refresh(self) -> None:
        """Push the current state into every panel (each skips what did not change)."""
        self.canvas.refresh(self.store, self.view)
        expected = self.run_expected if self.run_id is not None and self.view.branch == self.run_branch else None
        self.timeline.refresh(self.store, self.view, expected)
        self.legend.show(self.view.color_mode)
        self.settings.set_running(self.run_id is not None, self.model_info is not None and not self.is_loading)
        info = self.model_info
        job = self.files.progress()
        if job is not None:
            progress, text = job
        elif self.run_id is not None and self.run_branch is not None and self.store is not None:
            got = len(self.store.branches[self.run_branch].rows)
            progress, text = got / max(1, self.run_expected), f"{got} / {self.run_expected} records"
        elif self.is_loading:
            progress, text = 0.0, "loading model"
        else:
            progress, text = (1.0 if self.n_records() else 0.0), "idle"
        self.status.show(
            info.name if info else ("loading..." if self.is_loading else "none"),
            info.device if info else "-",
            self.steps_per_s(),
            progress,
            text,
        )

    def n_records(self) -> int:
        if self.store is None or self.view.branch not in self.store.branches:
            return 0
        return len(self.store.branches[self.view.branch].rows)

    def steps_per_s(self) -> float:
        """Denoising iterations per second over the last records of the run in progress."""
        if self.run_id is None or len(self._arrivals) < 2:
            return self._last_rate
        span = self._arrivals[-1] - self._arrivals[0]
        self._last_rate = (len(self._arrivals) - 1) / span if span > 0 else 0.0
        return self._last_rate

    # -- worker events -------------------------------------------------------------
    def _poll(self) -> None:
        if self.client is None:
            return
        for event in self.client.poll(self.store):
            self.handle_event(event)

    def handle_event(self, event: object) -> None:
        if isinstance(event, StepReady):
            if KINDS[int(event.scalars["kind"])] == "prediction":
                self._arrivals.append(time.perf_counter())
        elif isinstance(event, ModelLoading):
            self.settings.show_loading(event.fraction, event.message)
        elif isinstance(event, ModelLoaded):
            self._on_model(event.info)
        elif isinstance(event, RunStarted):
            log.info("run %d started: %s", event.run_id, event.layout)
        elif isinstance(event, RunFinished):
            if event.run_id == self.run_id:
                self._end_run(f"Done: {event.n_records} records, {event.forward_passes} forward passes in {event.elapsed_s:.2f} s.")
        elif isinstance(event, RunStopped):
            if event.run_id == self.run_id:
                self._end_run(f"Stopped after {event.n_records} records.")
        elif isinstance(event, WorkerError):
            self._on_error(event)
        elif isinstance(event, WorkerDied):
            self._on_died(event)

    def _on_model(self, info: ModelInfo) -> None:
        self.model_info = info
        self.is_loading = False
        self.canvas.set_vocabulary(list(info.itos), info.n_ids)
        self.legend.set_entropy_max(info.vocab_size)
        self.settings.show_model(info)
        self.say(f"Loaded {info.name} on {info.device}.")

    def _on_error(self, event: WorkerError) -> None:
        log.warning("worker error: %s\n%s", event.message, event.traceback)
        if event.run_id is not None and event.run_id == self.run_id:
            self.run_id = None
        if self.is_loading and event.run_id is None:
            self.is_loading = False
            self.settings.show_loading(0.0, "load failed")
        self.say(event.message, is_error=True)

    def _on_died(self, event: WorkerDied) -> None:
        self.client = None  # the client cleaned up after its process; a new one is made on Load
        self.model_info = None
        self.is_loading = False
        self.run_id = None
        self.settings.show_loading(0.0, "worker stopped")
        self.say(f"The worker process stopped unexpectedly (exit code {event.exitcode}). Load a model to start a new one.", is_error=True)

    def _end_run(self, message: str) -> None:
        self.run_id = None
        self.say(message)

    def say(self, text: str, is_error: bool = False) -> None:
        (log.warning if is_error else log.info)("%s", text)
        self.status.say(text, is_error)
        self.settings.say(text, is_error)

    # -- commands (buttons call these; tests call them directly) --------------------
    def _ensure_client(self) -> WorkerClient:
        if self.client is None or not self.client.is_alive:
            if self.client is not None:
                self.client.close()
            self.client = self.client_factory().start()
        return self.client

    def load_model(self, entry: ModelEntry | None = None) -> None:
        """Load a checkpoint in the worker (None = the one picked in the settings panel)."""
        entry = entry or self.settings.selected_entry()
        if entry is None:
            self.say("Pick a model first.", is_error=True)
            return
        if self.run_id is not None:
            self.stop_run()
        client = self._ensure_client()
        path = None if entry.is_default else str(entry.path)
        meta = None if entry.is_default or entry.meta is None else str(entry.meta)
        client.load_model(path, meta, self.device)
        self.is_loading = True
        self.settings.show_loading(0.02, f"loading {entry.name}")
        self.say(f"Loading {entry.name}...")

    def start_run(self) -> None:
        """Start a fresh run with the panel's settings, as a new run in the store."""
        settings = self._read_settings()
        if settings is None:
            return
        layout = run_layout(settings, self.model_info)
        if self.store is None or self.store.layout != layout:
            if self.store is not None and len(self.store):
                log.info("new layout %s: previous runs are dropped from view", layout)
            self.store = StepStore(layout)
        branch = self.store.new_branch(settings.to_dict(), label=f"run {len(self.store.branch_order) + 1}")
        self._launch(settings, branch.id)

    def continue_run(self) -> None:
        """Run again from the record shown, with the panel's settings, as a new branch."""
        settings = self._read_settings()
        if settings is None:
            return
        if self.store is None or self.n_records() == 0:
            self.say("Nothing to continue from: Start a run first.", is_error=True)
            return
        if settings.length != self.store.layout.seq_len:
            self.say(f"To continue this run, length must stay {self.store.layout.seq_len}.", is_error=True)
            return
        parent = self.view.branch
        row = self.store.branches[parent].rows[self.view.record]
        kind = self.store.kind(row)
        start_it = continue_point(kind, int(self.store.columns["iteration"][row]))
        if start_it >= settings.steps:
            self.say(f"This record is after iteration {start_it}; raise steps above {start_it} to continue.", is_error=True)
            return
        tokens = self.store.get("tokens", row).astype(np.int64)
        protected = (self.store.get("flags", row) & FLAG_PROTECTED).astype(bool)
        branch = self.store.new_branch(
            settings.to_dict(), parent=parent, fork_record=self.view.record,
            label=f"run {len(self.store.branch_order) + 1} (from {parent} @ {self.view.record + 1})",
        )
        self._launch(settings, branch.id, tokens=tokens, iteration=start_it, protected=protected if protected.any() else None)

    def _read_settings(self) -> GenerationSettings | None:
        if self.model_info is None or self.client is None:
            self.say("Load a model first.", is_error=True)
            return None
        try:
            return self.settings.read()
        except SettingsError as exc:
            self.say(str(exc), is_error=True)
            return None

    def _launch(self, settings: GenerationSettings, branch: str, **start: object) -> None:
        try:
            self.run_id = self.client.start_run(settings, branch, **start)
        except WorkerGoneError as exc:
            self.say(f"{exc}; load a model again.", is_error=True)
            return
        self.run_branch = branch
        self.run_expected = expected_records(settings, int(start.get("iteration", 0)))
        self._arrivals.clear()
        self._last_rate = 0.0
        self.view.branch, self.view.record, self.view.top_row = branch, 0, 0
        self.view.follow_live, self.view.playing = True, False
        self._fit_canvas(settings.length)
        self.say(f"Generating {settings.length} tokens in {settings.steps} steps...")

    def stop_run(self) -> None:
        if self.client is not None and self.run_id is not None:
            self.client.stop(self.run_id)
            self.say("Stopping...")

    def select_branch(self, branch: str) -> None:
        if self.store is not None and branch in self.store.branches:
            self.view.branch = branch
            self.view.record = max(0, len(self.store.branches[branch].rows) - 1)
            self.view.playing = False

    def show_store(self, store: StepStore, itos: list[str], n_ids: int, branch: str | None = None) -> None:
        """Show records that did not come from the worker (a session file, a test fixture)."""
        self.store = store
        self.canvas.set_vocabulary(itos, n_ids)
        self.view.branch = branch or (store.branch_order[0] if store.branch_order else None)
        self.view.record = max(0, self.n_records() - 1)
        self.view.follow_live = False
        self._fit_canvas(store.layout.seq_len)

    def _fit_canvas(self, seq_len: int) -> None:
        self.canvas.fit(self.view, seq_len)
        dpg.set_value(self.zoom_slider, self.view.font_px)

    @property
    def session(self) -> Session | None:
        """The session file shown (memory-mapped), if the store came from one."""
        return self._session

    def open_session(self, path: str | Path) -> None:
        """Open a saved session read-only (dpgviz.store.session)."""
        try:
            from dpgviz.store.session import SessionError, open_session
        except ImportError:
            self.say("Session files are not supported in this build.", is_error=True)
            return
        try:
            session = open_session(path)
        except (SessionError, OSError) as exc:
            self.say(f"Cannot open {path}: {exc}", is_error=True)
            return
        previous, self._session = self._session, session  # the session's mapping backs the store's arrays
        self.show_store(session.store, list(session.vocab.itos), session.vocab.n_ids)
        if previous is not None:
            previous.close()
        self.say(f"Opened {path}.")

    # -- callbacks (small: change the view state, then return) ----------------------
    def _keyboard(self, action: Callable[[], None]) -> Callable[[], None]:
        def on_key() -> None:
            if not any(dpg.is_item_active(item) for item in self.settings.input_items()):
                action()

        return on_key

    def _on_wheel(self, sender: int, delta: int) -> None:
        if not self.canvas.is_hovered():
            return
        if dpg.is_key_down(dpg.mvKey_LControl) or dpg.is_key_down(dpg.mvKey_RControl):
            self.canvas.zoom(self.view, self.view.font_px + int(delta))
            dpg.set_value(self.zoom_slider, self.view.font_px)
        else:
            self.canvas.scroll_by(self.view, -int(delta) * SCROLL_ROWS_PER_NOTCH)

    def _on_zoom(self, sender: int, value: int) -> None:
        self.canvas.zoom(self.view, value)

    def _on_mode(self, sender: int, label: str) -> None:
        self.view.color_mode = palette.MODE_BY_LABEL[label].key

    def _on_text_mode(self, sender: int, value: bool) -> None:
        self.view.text_mode = bool(value)
        self.view.top_row = 0

    def _on_text_mode_menu(self, sender: int, value: bool) -> None:
        self._on_text_mode(sender, value)
        dpg.set_value(self.text_mode_box, bool(value))

    def set_color_mode(self, key: str) -> None:
        """Switch the canvas colour mode as the combo does (tests use it)."""
        self.view.color_mode = key
        dpg.set_value(self.mode_combo, palette.MODE_BY_KEY[key].label)


def run_app(models_dir: str | None = None, device: str = "auto", session: str | None = None) -> None:
    """Open the window and run until it is closed (the CLI's default command)."""
    app = App(models_dir=models_dir, device=device, session=session)
    app.build()
    try:
        app.run()
    finally:
        app.close()
