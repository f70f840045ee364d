"""The File menu's session and export items: Open, Save, Save As and Export, with their dialogs.

    menu item -> file dialog -> frame thread: snapshot of the store -> job thread: write
                                                                        | progress(done, total)
    frame loop: poll() shows the job's end; progress() feeds the status bar

`SessionFiles` builds its items under the app's File menu, owns one file dialog per
kind of file (created once, shown again each time) and runs every save and export on
one background thread, so the frame loop never waits for a disk, a checkpoint hash
or a long GIF. What a job reads is a snapshot taken on the frame thread: views of the
rows present and a copy of the branch tree. Rows are never rewritten and growing the
store copies into new arrays, so a live run may keep appending meanwhile. The job
reports `progress(done, total)` into a lock-guarded `JobProgress`; only the frame
loop touches dearpygui.

Opening a session is quick (a memory map) and happens on the frame thread through
`App.open_session`; checking the recorded checkpoint (a sha256 of a file that may
be hundreds of MB) runs on the job thread, and when it matches, the model is picked
in the settings panel's dropdown for the user to Load. No model is ever loaded here.

dearpygui, numpy and dpgviz.store/export only; no torch, no dpgviz.engine.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import dearpygui.dearpygui as dpg

from dpgviz.core.settings import GenerationSettings
from dpgviz.store.session import SUFFIX, Progress, Session, SessionError, checkpoint_sha256, save_session
from dpgviz.store.step_store import StepStore

if TYPE_CHECKING:
    from dpgviz.gui.app import App

log = logging.getLogger(__name__)

# (menu label, export format, file suffix); text and PNG take the record shown, the rest the branch.
EXPORTS: tuple[tuple[str, str, str], ...] = (
    ("Text of this step", "text", ".txt"),
    ("PNG of this step", "png", ".png"),
    ("GIF of this branch", "gif", ".gif"),
    ("HTML player", "html", ".html"),
    ("CSV statistics", "csv", ".csv"),
    ("JSON statistics", "json", ".json"),
)
PER_RECORD_FORMATS = ("text", "png")
EXPORT_MODES = {"state": "mask-state", "confidence": "confidence", "score": "score", "entropy": "entropy"}
DEFAULT_COLUMNS = 64  # export grid width when the canvas has not been laid out yet
DIALOG_SIZE = (720, 440)
EXT_COLOR = (140, 180, 255, 255)


@dataclass
class JobProgress:
    """How far a background job got: written by its thread, read by the frame loop."""

    label: str
    done: int = 0
    total: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def report(self, done: int, total: int) -> None:
        """The job's `progress(done, total)` callback."""
        with self._lock:
            self.done, self.total = int(done), int(total)

    def read(self) -> tuple[int, int]:
        with self._lock:
            return self.done, self.total

    def fraction(self) -> float:
        done, total = self.read()
        return done / total if total > 0 else 0.0


@dataclass
class _Job:
    progress: JobProgress
    future: Future
    on_done: Callable[[object], str]  # runs on the frame thread with the job's result; returns the message


class SessionFiles:
    """Open / Save / Save As / Export for one App: menu items, dialogs, background jobs."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.path: Path | None = None  # where Save writes (the last file saved or opened)
        self.dialogs: dict[str, int | str] = {}  # "open", "save", then one per export format
        self.items: dict[str, int | str] = {}  # menu items, by the same keys
        self.job: _Job | None = None  # the save or export in progress
        self.finished: JobProgress | None = None  # the last job's final progress (tests read it)
        self._model_check: tuple[Session, Future] | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dpgviz-files")

    # -- building ------------------------------------------------------------------
    def build(self, menu: int | str) -> None:
        """Menu items at the top of `menu` (above whatever it holds), the dialogs, Ctrl+O / Ctrl+S."""
        children = dpg.get_item_children(menu, 1) or []
        before = children[0] if children else 0
        self.items["open"] = dpg.add_menu_item(
            label="Open...", shortcut="Ctrl+O", parent=menu, before=before, callback=lambda: self.show("open")
        )
        self.items["save"] = dpg.add_menu_item(
            label="Save", shortcut="Ctrl+S", parent=menu, before=before, callback=lambda: self.save()
        )
        self.items["save_as"] = dpg.add_menu_item(
            label="Save As...", parent=menu, before=before, callback=lambda: self.show("save")
        )
        with dpg.menu(label="Export", parent=menu, before=before):
            for label, fmt, _suffix in EXPORTS:
                self.items[fmt] = dpg.add_menu_item(label=label + "...", callback=self._shower(fmt))
        if before:
            dpg.add_separator(parent=menu, before=before)

        self.dialogs["open"] = self._dialog("Open session", self._on_open_chosen, [SUFFIX, ".*"])
        self.dialogs["save"] = self._dialog("Save session as", self._on_save_chosen, [SUFFIX], "session")
        for label, fmt, suffix in EXPORTS:
            self.dialogs[fmt] = self._dialog(f"Export: {label}", self._export_chooser(fmt, suffix), [suffix], "dpgviz")

        with dpg.handler_registry():
            self.items["ctrl_o"] = dpg.add_key_press_handler(
                dpg.mvKey_O, callback=self._ctrl(lambda: self.show("open"))
            )
            self.items["ctrl_s"] = dpg.add_key_press_handler(dpg.mvKey_S, callback=self._ctrl(self.save))

    def _dialog(self, label: str, callback: Callable, suffixes: list[str], filename: str = "") -> int | str:
        with dpg.file_dialog(
            label=label,
            show=False,
            modal=True,
            callback=callback,
            width=DIALOG_SIZE[0],
            height=DIALOG_SIZE[1],
            default_path=str(Path.cwd()),
            default_filename=filename or ".",
        ) as dialog:
            for suffix in suffixes:
                dpg.add_file_extension(suffix, color=EXT_COLOR if suffix != ".*" else (255, 255, 255, 255))
        return dialog

    def _shower(self, key: str) -> Callable[[], None]:
        return lambda: self.show(key)

    def _ctrl(self, action: Callable[[], None]) -> Callable[[], None]:
        def on_key() -> None:
            if dpg.is_key_down(dpg.mvKey_LControl) or dpg.is_key_down(dpg.mvKey_RControl):
                action()

        return on_key

    def show(self, key: str) -> None:
        """Open the file dialog `key` ("open", "save" or an export format)."""
        if key != "open" and not self._has_records():
            return
        if key == "save" and self.path is not None:
            dpg.configure_item(self.dialogs[key], default_path=str(self.path.parent), default_filename=self.path.stem)
        dpg.show_item(self.dialogs[key])

    def close(self) -> None:
        """Let a running save or export finish (its file is written atomically), then stop the thread."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    # -- the frame loop's side -------------------------------------------------------
    @property
    def busy(self) -> bool:
        return self.job is not None

    def progress(self) -> tuple[float, str] | None:
        """(fraction, label) of the job in progress for the status bar, or None."""
        if self.job is None:
            return None
        return self.job.progress.fraction(), self.job.progress.label

    def poll(self) -> None:
        """Once a frame: show how a finished job ended, and act on the model check of an opened session."""
        job = self.job
        if job is not None and job.future.done():
            self.job, self.finished = None, job.progress
            exc = job.future.exception()
            if exc is None:
                self.app.say(job.on_done(job.future.result()))
            elif isinstance(exc, (SessionError, OSError)):
                self.app.say(f"{job.progress.label.capitalize()} failed: {exc}", is_error=True)
            else:  # a bug, not a user error: keep the traceback in the log
                log.error("%s failed", job.progress.label, exc_info=exc)
                self.app.say(f"{job.progress.label.capitalize()} failed: {type(exc).__name__}: {exc}", is_error=True)
        if self._model_check is not None and self._model_check[1].done():
            session, future = self._model_check
            self._model_check = None
            if session is self.app.session:
                self._offer_model(session, future)

    def _start(self, label: str, work: Callable[[Progress], object], on_done: Callable[[object], str]) -> None:
        progress = JobProgress(label)
        self.job = _Job(progress, self._pool.submit(work, progress.report), on_done)
        self.app.say(f"{label.capitalize()}...")

    # -- open ------------------------------------------------------------------------
    def _on_open_chosen(self, sender: int | str, app_data: dict) -> None:
        path = chosen_path(app_data)
        if path is not None:
            self.open(path)

    def open(self, path: str | Path) -> None:
        """Open a session file in the window, without a model; the current one stays if it fails."""
        app = self.app
        if app.run_id is not None:
            app.say("Stop the run before opening a session.", is_error=True)
            return
        if self.job is not None:
            app.say(f"Wait for {self.job.progress.label} to finish before opening a session.", is_error=True)
            return
        previous = app.session
        app.open_session(path)  # says why on failure, and keeps what was shown
        session = app.session
        if session is None or session is previous:
            return
        self.path = Path(path)
        store = session.store
        if session.settings:  # restart or continue with what the file was made with
            try:
                app.settings.write(GenerationSettings.from_dict(session.settings))
            except (TypeError, ValueError) as exc:
                log.warning("session settings not shown: %s", exc)
        app.say(
            f"Opened {self.path.name}: {len(store)} records in {len(store.branch_order)} branches. "
            "Checking the recorded model..."
        )
        self._model_check = (session, self._pool.submit(session.model_status))

    def _offer_model(self, session: Session, future: Future) -> None:
        """Pick the session's recorded checkpoint in the model list when it is there unchanged."""
        exc = future.exception()
        status = "unreadable" if exc is not None else str(future.result())
        name = Path(session.model_path).name if session.model_path else ""
        records = f"{len(session.store)} records in {len(session.store.branch_order)} branches"
        if status == "ok":
            settings = self.app.settings
            if not settings.select_path(session.model_path):
                settings.models_dirs.append(str(Path(session.model_path).parent))
                settings.rescan()
                settings.select_path(session.model_path)
            self.app.say(f"Opened {records}. Its model {name} is picked: press Load to continue or restart.")
        elif status == "unrecorded":
            self.app.say(f"Opened {records}. No model was recorded: load one to continue or restart.")
        else:
            why = {"missing": "is not there", "changed": "has changed since (sha256 differs)"}.get(
                status, f"cannot be read ({exc})"
            )
            self.app.say(
                f"Opened {records}. Its model {session.model_path} {why}: load a model to continue or restart.",
                is_error=status != "missing",
            )

    # -- save ------------------------------------------------------------------------
    def save(self) -> None:
        """Save to the last path; the first save asks for one, as Save As does."""
        if self.path is None:
            self.show("save")
        else:
            self.save_to(self.path)

    def _on_save_chosen(self, sender: int | str, app_data: dict) -> None:
        path = chosen_path(app_data, SUFFIX)
        if path is not None:
            self.save_to(path)

    def save_to(self, path: str | Path) -> None:
        """Save every branch of the store to `path` on the job thread (hashing the checkpoint first)."""
        path = Path(path)
        snapshot = self._snapshot()
        if snapshot is None or not self._is_free():
            return
        model_path, sha = snapshot.model_path, snapshot.model_sha256

        def work(progress: Progress) -> Path:
            digest = sha
            if model_path and digest is None and Path(model_path).is_file():
                digest = checkpoint_sha256(model_path)  # cached per (path, size, mtime): once per model
            return save_session(
                path,
                snapshot.store,
                snapshot.vocab,
                settings=snapshot.settings,
                model_path=model_path,
                model_sha256=digest,
                model_info=snapshot.model_info,
                progress=progress,
            )

        def done(written: object) -> str:
            self.path = Path(str(written))
            return f"Saved {len(snapshot.store)} records in {len(snapshot.store.branch_order)} branches to {written}."

        self._start(f"saving {path.name}", work, done)

    # -- export ----------------------------------------------------------------------
    def _export_chooser(self, fmt: str, suffix: str) -> Callable[[int | str, dict], None]:
        def on_chosen(sender: int | str, app_data: dict) -> None:
            path = chosen_path(app_data, suffix)
            if path is not None:
                self.export(fmt, path)

        return on_chosen

    def export(self, fmt: str, path: str | Path) -> None:
        """Export the shown branch (and, for text and PNG, the record shown) on the job thread."""
        from dpgviz.export import export_session  # Pillow: only when exporting

        path = Path(path)
        snapshot = self._snapshot()
        if snapshot is None or not self._is_free():
            return
        view = self.app.view
        branch, record = view.branch, view.record if fmt in PER_RECORD_FORMATS else None
        mode = EXPORT_MODES.get(view.color_mode, "mask-state")
        columns = self.app.canvas.cols if self.app.canvas.cols > 1 else DEFAULT_COLUMNS
        frame_ms = max(1, round(1000 / max(view.play_speed, 1e-3)))  # the timeline's playback speed

        def work(progress: Progress) -> Path:
            return export_session(
                snapshot,
                fmt,
                path,
                branch=branch,
                record=record,
                frame_ms=frame_ms,
                mode=mode,
                columns=columns,
                progress=progress,
            )

        self._start(f"exporting {path.name}", work, lambda written: f"Exported {fmt.upper()} to {written}.")

    # -- shared --------------------------------------------------------------------------
    def _has_records(self) -> bool:
        if self.app.store is None or len(self.app.store) == 0:
            self.app.say("Nothing to save or export yet: generate a run or open a session.", is_error=True)
            return False
        return True

    def _is_free(self) -> bool:
        if self.job is not None:
            self.app.say(f"Wait for {self.job.progress.label} to finish.", is_error=True)
            return False
        return True

    def _snapshot(self) -> Session | None:
        """The shown store as a Session the job thread may read while the run goes on (None: said why)."""
        app = self.app
        if not self._has_records():
            return None
        store, opened, info = app.store, app.session, app.model_info
        from_file = opened is not None and opened.store is store
        if from_file:
            vocab = opened.vocab
        elif info is not None:
            vocab = info.vocab()
        else:
            app.say("These records have no vocabulary to save with: load a model first.", is_error=True)
            return None
        count = len(store)
        frozen = StepStore.from_columns(
            store.layout, {name: col[:count] for name, col in store.columns.items()}, count, store.tree()
        )
        branch = store.branches.get(app.view.branch)
        settings = dict(branch.settings) if branch is not None else {}
        if from_file and opened.model_path:  # the records' provenance: the model the file recorded
            model_path, sha, model_info = opened.model_path, opened.model_sha256, dict(opened.model_info)
        elif info is not None:
            model_path, sha = info.path, None
            model_info = info.to_dict(with_itos=False)
        else:
            model_path, sha, model_info = None, None, {}
        return Session(
            store=frozen, vocab=vocab, settings=settings, model_path=model_path, model_sha256=sha, model_info=model_info
        )


def chosen_path(app_data: object, suffix: str | None = None) -> Path | None:
    """The path a file dialog returned, with `suffix` added when the name lacks it.

    Dear PyGui appends the active filter to a typed name, and ".*" literally when that
    filter is active; a selected file comes in `selections` as well.
    """
    if not isinstance(app_data, dict):
        return None
    selections = app_data.get("selections") or {}
    name = next(iter(selections.values()), None) if suffix is None and selections else app_data.get("file_path_name")
    if not name:
        return None
    path = Path(str(name))
    if path.name.endswith(".*"):
        path = path.with_name(path.name[:-2])
    if suffix and not path.name.lower().endswith(suffix):
        path = path.with_name(path.name + suffix)
    return path
