"""The dpgviz window: Dear PyGui context, viewport, panels and the frame loop.

    worker -> Workspace (client.poll -> StepStore, ViewState) -> panels draw what changed

`App` owns the Dear PyGui context, the viewport, the frame loop and the panels
(settings, canvas, timeline, status, legend, File menu). The app's state lives in a
window-free `app.workspace.Workspace`: panels and the File menu get the workspace,
never the App, and the workspace reports back through notices that `update` shows.
Callbacks run on the loop thread (`manual_callback_management`) and only change the
view state or call a workspace operation; the loop (`frame`) is the only mover. Tests
drive it frame by frame:

    app = App(models_dir=..., autoload=False).build()
    app.frame()                      # callbacks + poll + refresh + render
    app.workspace.runs.load_model(entry); app.settings.start(); ...
    app.close()

Never imports torch or dpgviz.engine: the worker process owns the model.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import dearpygui.dearpygui as dpg

from dpgviz.app.notices import (
    CompareShown,
    LoadProgress,
    ModelOffered,
    ModelReady,
    ModelsListed,
    Notice,
    Said,
    SettingsRestored,
    StoreShown,
)
from dpgviz.app.workspace import Workspace
from dpgviz.core.discovery import default_model_entry, given_model_entry
from dpgviz.core.paths import log_path, recovery_path
from dpgviz.gui import palette
from dpgviz.gui.branches import BranchPanel
from dpgviz.gui.canvas import ZOOM_RANGE, TokenCanvas
from dpgviz.gui.compare_view import CompareView
from dpgviz.gui.connect import ConnectDialog
from dpgviz.gui.edit_bar import EditBar
from dpgviz.gui.explorer import ExplorerWindow
from dpgviz.gui.files import SessionFiles
from dpgviz.gui.find_bar import FindBar
from dpgviz.gui.guard import Guard
from dpgviz.gui.input import Input
from dpgviz.gui.inspector import HoverTip, InspectorPanel
from dpgviz.gui.keys import help_text
from dpgviz.gui.listen_dialog import ListenDialog
from dpgviz.gui.model_dialogs import CompareModelsDialog, DisagreementWindow, ScoreDialog
from dpgviz.gui.pacing import FramePacer
from dpgviz.gui.plots import OVERVIEW_PX, OverviewPanel, RunPlots
from dpgviz.gui.recovery_prompt import RecoveryPrompt
from dpgviz.gui.settings_panel import PANEL_WIDTH, SettingsPanel
from dpgviz.gui.status import Legend, StatusBar
from dpgviz.gui.theme import dark_theme, load_fonts
from dpgviz.gui.timeline import TimelinePanel

if TYPE_CHECKING:
    from dpgviz.app.source import RunSource

log = logging.getLogger(__name__)

TITLE = "dpgviz - masked diffusion visualizer"
TIMELINE_PX = 68  # two rows: the slider, then speed, follow live and the run's caption
STATUS_PX = 34
BRANCHES_PX = 330  # the side panel on the right: branches, inspector, plots, overview

class App:
    """The whole window. One instance per process (Dear PyGui has one context)."""

    def __init__(
        self,
        models_dir: str | None = None,
        device: str = "auto",
        session: str | None = None,
        *,
        dtype: str = "auto",
        model: str | None = None,
        autoload: bool = True,
        source_factory: Callable[[], RunSource] | None = None,
        journal: Path | None = None,
        width: int = 1440,
        height: int = 900,
        connect: tuple[str, str | None] | None = None,
        listen_runs: str | None = None,
    ) -> None:
        self.models_dir = models_dir
        self.session_path = session
        self.autoload = autoload
        self.model_entry = given_model_entry(model) if model else None  # --model: loaded instead of the default
        self.connect_to = connect  # --connect FILE|HOST:PORT [--key K]: a worker on another machine
        self.listen_runs = listen_runs  # --listen-runs [HOST:]PORT: show runs a dpgviz.Recorder streams (app.live)
        self.size = (width, height)
        # journal: where unsaved work is journaled (run_app: core.paths.recovery_path()); None: not at all
        self.workspace = Workspace(device=device, dtype=dtype, source_factory=source_factory, journal=journal)
        self.guard = Guard(self.workspace.say, log_path())  # the frame loop's boundaries (gui.guard)
        self.view = self.workspace.view
        self.frame_count = 0
        self.fonts = None
        self.settings = SettingsPanel(self.workspace, models_dir, given=self.model_entry)
        self.canvas: TokenCanvas | None = None  # needs the fonts: made in build()
        self.timeline = TimelinePanel(self.workspace)
        self.status = StatusBar(restart_worker=lambda: self.workspace.runs.restart_source(), notices=self.workspace.notices)
        self.legend = Legend()
        self.files = SessionFiles(self.workspace, columns=lambda: self.canvas.cols if self.canvas else 0)
        self.connect = ConnectDialog(self.workspace)  # File > Connect to worker... (gui.connect)
        self.listen = ListenDialog(self.workspace)  # File > Listen for recorded runs... (gui.listen_dialog)
        self.edit_bar = EditBar(self.workspace, restart=self.settings.restart)
        self.find_bar = FindBar(self.workspace, reveal=lambda pos: self.canvas.reveal(self.view, pos))  # Ctrl+F / G
        self.branches = BranchPanel(
            self.workspace, on_compare=lambda: self.compare_view.show(), on_score=lambda: self.score_dialog.show()
        )
        # Other models (gui.model_dialogs): Explore > Compare models..., Branches > Score with model...
        self.workspace.models.models_dir = models_dir  # where Verify looks for a model by its hash, beside ./out
        self.compare_models = CompareModelsDialog(self.workspace, lambda: self.settings.entries, self.settings.read)
        self.score_dialog = ScoreDialog(self.workspace, lambda: self.settings.entries)
        self.disagreement = DisagreementWindow(
            self.workspace, set_mode=self.set_color_mode, set_scale=lambda top: self.legend.set_disagreement_top(top)
        )
        self.compare_view: CompareView | None = None  # needs the fonts: made in build()
        self.explorer: ExplorerWindow | None = None  # the model explorer (gui.explorer); made in build()
        self.hover_tip = HoverTip(self.workspace)
        self.recovery_prompt = RecoveryPrompt(self.workspace)
        self.inspector = InspectorPanel(self.workspace, restart_with=self._restart_with)
        self.run_plots = RunPlots(self.workspace)
        self.overview = OverviewPanel(self.workspace, reveal=lambda pos: self.canvas.reveal(self.view, pos))
        self.side_tabs: int | str = 0
        self.tabs: dict[str, int | str] = {}
        self.help_window: int | str = 0
        self.about_window: int | str = 0
        self.reopen_item: int | str = 0
        self.input: Input | None = None  # keys and the canvas's mouse (gui.input); made in build()
        self.pacer: FramePacer | None = None  # set by run(): frames are paced (gui.pacing)
        self.window: int | str = 0
        self.file_menu: int | str = 0
        self.mode_combo = self.text_mode_box = self.zoom_slider = 0
        self._last_frame_t = time.perf_counter()
        self._is_built = False

    # -- lifetime ------------------------------------------------------------------
    def build(self) -> App:
        dpg.create_context()
        dpg.configure_app(manual_callback_management=True)
        self.fonts = load_fonts()
        dpg.bind_theme(dark_theme())
        dpg.create_viewport(title=TITLE, width=self.size[0], height=self.size[1], clear_color=(24, 26, 31, 255))
        self.canvas = TokenCanvas(self.fonts)
        self.compare_view = CompareView(self.workspace, self.fonts)
        self.explorer = ExplorerWindow(self.workspace, self.fonts, (self.models_dir,), self.settings.read)

        with dpg.window(tag="dpgviz-main", no_scrollbar=True) as self.window:
            with dpg.menu_bar():
                with dpg.menu(label="File") as self.file_menu:
                    dpg.add_menu_item(label="Quit", callback=lambda: dpg.stop_dearpygui())
                with dpg.menu(label="View"):
                    dpg.add_menu_item(label="Text mode (wrap at newlines)", check=True, callback=self._on_text_mode_menu)
                    self.hide_eos_item = dpg.add_menu_item(  # issue 31: what follows the first EOS/EOT, left blank
                        label="Hide tokens after the first EOS", check=True,
                        callback=lambda _s, value: setattr(self.workspace.view, "hide_after_eos", bool(value)))
                    dpg.add_menu_item(label="Messages...", callback=lambda: self.status.messages.show())
                with dpg.menu(label="Explore"):
                    dpg.add_menu_item(label="Model explorer...", callback=lambda: self.explorer.show())
                    dpg.add_menu_item(label="Compare models...", callback=lambda: self.compare_models.show())
                    dpg.add_menu_item(label="Score branch with model...", callback=lambda: self.score_dialog.show())
                    dpg.add_menu_item(label="Model disagreement plot", callback=lambda: self.disagreement.show())
                with dpg.menu(label="Help"):
                    dpg.add_menu_item(label="Keyboard and mouse...", callback=lambda: dpg.show_item(self.help_window))
                    dpg.add_menu_item(label="About dpgviz...", callback=lambda: dpg.show_item(self.about_window))
            with dpg.group(horizontal=True):
                with dpg.child_window(width=PANEL_WIDTH, height=-STATUS_PX) as left:
                    self.settings.build(left)
                with dpg.group():
                    with dpg.child_window(
                        width=-BRANCHES_PX, height=-(TIMELINE_PX + STATUS_PX), border=True, no_scrollbar=True
                    ) as centre:
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
                        self.edit_bar.build(centre)
                        self.find_bar.build(centre)
                        self.legend.build(centre)
                        self.canvas.build(centre)
                    with dpg.child_window(width=-BRANCHES_PX, height=TIMELINE_PX, border=True, no_scrollbar=True) as bottom:
                        self.timeline.build(bottom)
                with dpg.child_window(width=BRANCHES_PX - 8, height=-STATUS_PX):
                    with dpg.tab_bar() as self.side_tabs:
                        for name, panel in (("Branches", self.branches), ("Inspect", self.inspector),
                                            ("Plots", self.run_plots), ("Overview", self.overview)):
                            with dpg.tab(label=name) as tab:
                                self.tabs[name] = tab
                                panel.build(tab)
            self.status.build(self.window)
        with dpg.window(label="Keyboard and mouse", show=False, autosize=True, pos=(200, 60)) as self.help_window:
            text = dpg.add_text(help_text())
            if self.fonts.mono:
                dpg.bind_item_font(text, self.fonts.mono)
        with dpg.window(label="About dpgviz", show=False, width=620, height=200, pos=(220, 160)) as self.about_window:
            dpg.add_text(about_text(), wrap=590)
        self.files.build(self.file_menu)
        self.reopen_item = dpg.add_menu_item(  # under Open...: the work a window closed without saving
            label="Reopen unsaved work of the last window", parent=self.file_menu, before=self.files.items["save"],
            callback=self._reopen_last_closed,
        )
        self.connect.build(self.file_menu)
        self.listen.build(self.file_menu)
        self.compare_view.build()
        self.explorer.build()
        for dialog in (self.compare_models, self.score_dialog, self.disagreement):
            dialog.build()
        self.hover_tip.build(self.canvas.plot_group)
        self.find_bar.build_marks(before=self.overview.image, width=OVERVIEW_PX[0])  # match ticks on the overview
        self.recovery_prompt.build(self.size)

        self.input = Input(
            self.workspace, self.canvas, self.settings, self.edit_bar, self.hover_tip, self.compare_view,
            show_inspector=lambda: dpg.set_value(self.side_tabs, self.tabs["Inspect"]),
            show_zoom=lambda px: dpg.set_value(self.zoom_slider, px),
        )
        self.input.actions.update(self.find_bar.actions())  # Ctrl+F, Ctrl+G, F3, Shift+F3
        self.input.closers.append(self.find_bar.close)  # Escape closes the find bar
        self.input.box_keys.append(self.find_bar.box_key)  # Enter / F3 / Escape in its own box
        self.input.keyboard_claims.append(self.find_bar.is_claiming)  # keys wait for its box to take the keyboard
        self.input.register()
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
        """After the first frame: open a session (no model), or start the worker on the default model."""
        if self.listen_runs is not None:  # a viewer for a recorder (spawn=True starts one): no model to load
            self.workspace.live.listen(self.listen_runs)
            if self.session_path:
                self.workspace.files.open(self.session_path)
        elif self.session_path:
            self.workspace.files.open(self.session_path)  # and offer its recorded model, if unchanged
        elif self.connect_to is not None:  # the worker's Welcome lists its models and loads its own choice
            self.workspace.runs.connect(*self.connect_to)
        elif self.autoload:
            self.workspace.runs.load_model(self.model_entry or default_model_entry())

    def run(self) -> None:
        """The frame loop, until the window is closed: paced, so an idle window sleeps (gui.pacing)."""
        self.frame()  # the first frame goes up before anything slow starts
        self.start()
        self.pace()
        while self.frame():
            pass

    def pace(self) -> FramePacer:
        """From now on frames are paced: busy frames capped, idle ones wait for input or the worker.

        Only the real loop paces: a test or benchmark calling frame() without pacing never
        blocks waiting for input that will not come.
        """
        if self.pacer is None:
            ws = self.workspace
            self.pacer = FramePacer(
                wait_fds=lambda: (ws.runs.source.wait_fds() if ws.runs.source is not None else ()) + ws.live.wait_fds()
            )
            self.pacer.start()
        return self.pacer

    def is_busy(self) -> bool:
        """Something moves with nothing to wake the loop: playback, a background job's progress.

        A run or a model load is not busy: their events wake the loop (gui.pacing).
        """
        ws = self.workspace
        return self.view.playing or ws.jobs.job is not None or ws.files.is_checking

    def close(self) -> None:
        """Stop the worker (a save in progress finishes first) and destroy the context."""
        if self.pacer is not None:
            self.pacer.stop()
            self.pacer = None
        self.workspace.close()
        if self._is_built:
            dpg.destroy_context()
            self._is_built = False

    def __enter__(self) -> App:
        return self.build()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the frame loop ------------------------------------------------------------
    def frame(self) -> bool:
        """One frame: run callbacks, update the workspace, refresh panels, render."""
        if not dpg.is_dearpygui_running():
            return False
        self.update()
        if self.pacer is not None:
            self.pacer.before_render(self.is_busy())
        dpg.render_dearpygui_frame()
        if self.pacer is not None:
            self.pacer.after_render()
        self.frame_count += 1
        return True

    def update(self) -> None:
        """The Python half of a frame (everything but rendering): callbacks, workspace, panels."""
        now = time.perf_counter()
        dt, self._last_frame_t = now - self._last_frame_t, now
        queue = dpg.get_callback_queue()
        if queue and self.pacer is not None:  # input: draw its effect now, not at the next event
            self.pacer.touch()
        self.guard.run_callbacks(queue)  # each callback inside its own boundary (gui.guard)
        self.guard.call("Workspace", self.workspace.update, dt, can_disable=False)
        notices = self.workspace.take_notices()
        for notice in notices:
            self.guard.call(f"Showing {type(notice).__name__}", self.show, notice, can_disable=False)
        view = self.view  # a panel switched off comes back when any of these changes (gui.guard)
        self.guard.revive_on_change(run=self.workspace.runs.live_branch, record=(view.branch, view.record),
                                    layout=(view.text_mode, view.font_px, self.canvas.cols, self.canvas.view_rows))
        if (self.refresh() or notices) and self.pacer is not None:  # a change drawn may need a frame or two to settle
            self.pacer.owe(2)

    def show(self, notice: Notice) -> None:
        """Show one thing the workspace reported."""
        if isinstance(notice, Said):
            self.status.say(notice.text, notice.is_error)
            self.settings.say(notice.text, notice.is_error)
        elif isinstance(notice, LoadProgress):
            self.settings.show_loading(notice.fraction, notice.message)
        elif isinstance(notice, ModelReady):
            self.settings.show_model(notice.info)  # None: no model now (the worker died, a link dropped)
            if notice.info is not None:
                self.legend.set_entropy_max(notice.info.vocab_size)
                if self.workspace.vocab is not None:
                    self.canvas.set_vocabulary(list(self.workspace.vocab.itos), self.workspace.vocab.n_ids)
        elif isinstance(notice, StoreShown):
            self.canvas.set_vocabulary(list(notice.vocab.itos), notice.vocab.n_ids)
            self.canvas.fit(self.view, notice.seq_len)
            dpg.set_value(self.zoom_slider, self.view.font_px)
        elif isinstance(notice, SettingsRestored):
            self.settings.write(notice.settings)
        elif isinstance(notice, ModelOffered):
            self.settings.offer(notice.path)
        elif isinstance(notice, CompareShown):
            self.compare_view.show()
        elif isinstance(notice, ModelsListed):
            self.settings.use_models(list(notice.models), notice.where)

    def refresh(self) -> bool:
        """Push the current state into every panel (each skips what did not change); True if the canvas drew.

        Each panel refreshes inside its own boundary (gui.guard): one that raises is reset to
        its empty state (its view state cleared) and the others draw on.
        """
        ws, view, call = self.workspace, self.view, self.guard.call
        drew = call("Canvas", lambda: self.canvas.refresh(
            ws.inspect.shown(), view, highlight=ws.inspect.preview_changes(),
            extras=ws.inspect.cell_extras(view.color_mode), found=ws.find.marks(),
        ), reset=self._reset_canvas)
        call("Timeline", lambda: self.timeline.refresh(ws.store, view, ws.runs.expected_records()))
        call("Edit bar", self.edit_bar.refresh)
        call("Settings", self.settings.refresh)  # the steps hint beside its slider while hovered
        call("Find", self.find_bar.refresh, reset=self.find_bar.close)
        call("Branches", self.branches.refresh)
        call("Compare view", self.compare_view.refresh, view.color_mode, reset=ws.compare.stop)
        call("Explorer", self.explorer.refresh)
        call("Connect", self.connect.refresh)  # a pending File > Connect: closes on the Welcome, says a refusal
        call("Model disagreement", self.disagreement.refresh)
        call("Tooltip", self.hover_tip.refresh, reset=self._reset_hover)
        call("Inspector", self.inspector.refresh, reset=view.pinned.clear)
        call("Plots", self.run_plots.refresh)
        call("Overview", self.overview.refresh, view.color_mode)
        call("Legend", self.legend.show, view.color_mode)
        call("Status", self._refresh_status)
        return bool(drew)

    def _refresh_status(self) -> None:
        ws = self.workspace
        self.settings.set_running(ws.is_running, ws.model_info is not None and not ws.runs.is_loading)
        info = ws.model_info
        progress, text = ws.progress()
        self.status.show(
            info.name if info else ("loading..." if ws.runs.is_loading else "none"),
            (f"{info.device} {info.dtype}" if info else "-") + (f" @ {ws.runs.remote}" if ws.runs.remote else ""),
            ws.runs.steps_per_s(),
            progress,
            text,
        )
        label = ws.runs.restart_label()  # Restart worker, or Reconnect to a remote worker
        self.status.show_restart(label is not None, label or "Restart worker")

    def _reset_canvas(self) -> None:
        self.view.top_row = 0
        self.view.clear_selection()
        self.view.hover_pos = None

    def _reset_hover(self) -> None:
        self.view.hover_pos = None

    # -- view callbacks (small: change the view state, then return) ------------------
    def _restart_with(self, temperature: float) -> None:
        """The preview's Run from here: the settings panel takes the temperature, then Restart."""
        self.workspace.inspect.clear_preview()
        dpg.set_value(self.settings.temperature, temperature)
        self.settings.restart()

    def _on_zoom(self, sender: int, value: int) -> None:
        self.canvas.zoom(self.view, value)

    def _on_mode(self, sender: int, label: str) -> None:
        self.view.color_mode = palette.MODE_BY_LABEL[label].key

    def _on_text_mode(self, sender: int, value: bool) -> None:
        self.view.text_mode = bool(value)
        self.view.top_row = 0

    def _reopen_last_closed(self) -> None:
        if self.workspace.recovery is not None:
            self.workspace.recovery.reopen_last_closed()

    def _on_text_mode_menu(self, sender: int, value: bool) -> None:
        self._on_text_mode(sender, value)
        dpg.set_value(self.text_mode_box, bool(value))

    def set_color_mode(self, key: str) -> None:
        """Switch the canvas colour mode as the combo does (tests use it)."""
        self.view.color_mode = key
        dpg.set_value(self.mode_combo, palette.MODE_BY_KEY[key].label)


def about_text() -> str:
    """Help > About: the version and where dpgviz keeps its log and unsaved work."""
    from dpgviz import __version__  # importlib.metadata would cost the first frame ~15 ms

    return (
        f"dpgviz {__version__}: a visualizer for masked-diffusion language models.\n\n"
        f"Log file: {log_path()}\n"
        f"Recovery journal (unsaved work, kept until saved): {recovery_path()}\n"
        "A window closed with unsaved work keeps it for File > Reopen unsaved work of the last window.\n\n"
        "A panel that fails is reset and said in the status bar; the traceback goes to the log file."
    )


def log_to_file() -> logging.Handler:
    """The window's log goes to the log file too (rotated at 1 MB, 3 kept): tracebacks caught at
    the frame loop's boundaries land there, where Help > About says."""
    from logging.handlers import RotatingFileHandler

    handler = RotatingFileHandler(log_path(), maxBytes=1 << 20, backupCount=3, encoding="utf-8")
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger("dpgviz").addHandler(handler)
    return handler


def run_app(
    models_dir: str | None = None,
    device: str = "auto",
    session: str | None = None,
    dtype: str = "auto",
    model: str | None = None,
    connect: tuple[str, str | None] | None = None,
    listen_runs: str | None = None,
    allow_remote: bool = False,
) -> None:
    """Open the window and run until it is closed (the CLI's default command)."""
    from dpgviz.ipc.listen import remove_key_files_on_sigterm

    handler = log_to_file()
    app = App(
        models_dir=models_dir, device=device, session=session, dtype=dtype, model=model, journal=recovery_path(),
        connect=connect, listen_runs=listen_runs,
    )
    app.workspace.live.allow_remote = allow_remote  # --allow-remote: --listen-runs may bind another machine's address
    remove_key_files_on_sigterm()  # SIGTERM: the listener's key file goes; the recovery journal stays for Recover
    app.build()
    try:
        app.run()
    finally:
        app.close()
        logging.getLogger("dpgviz").removeHandler(handler)
        handler.close()
