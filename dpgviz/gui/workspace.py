"""The app's state without a window: worker, records, session file, model, runs, jobs.

    WorkerClient.poll -> StepStore  (the records of every branch)
    Workspace.update(dt): poll the worker, finish background jobs, advance the ViewState
    Workspace.take_notices() -> what happened, for the window to show

`Workspace` owns the worker client, the step store, the opened session file, the
loaded model's `ModelInfo`, the run in progress and the view state (which branch and
record are shown), and offers the operations a user has: load a model, start, continue,
stop, open, save and export. It never calls the UI: everything a user should hear of
(messages, load progress, a model that is ready, a store to show, settings read from a
file, a model to pick) is queued as a `Notice` that the window drains once a frame.
Tests drive it without a window.

Saves and exports run on one background thread so the frame loop never waits for a
disk, a checkpoint hash or a long GIF. The job reads a snapshot taken on the frame
thread: views of the rows present and a copy of the branch tree. Rows are never
rewritten and growing the store copies into new arrays, so a live run may keep
appending meanwhile.

Editing a step and managing branches live in `gui.editing` (the `Editing` mixin), what
the canvas draws and what the model believed in `gui.inspecting` (`Inspecting`), and the
notices in `gui.notices`; `Workspace` brings them together with the runs and the files.

Imports numpy, dpgviz.core/ipc/store; never dearpygui, torch or dpgviz.engine (the
worker process owns the model). Pillow comes in only when exporting.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dpgviz.core.discovery import ModelEntry, model_file
from dpgviz.core.model_info import ModelInfo
from dpgviz.core.records import FLAG_EDITED, FLAG_PROTECTED, KINDS, continue_point, run_record_count
from dpgviz.core.settings import OPEN_ENDED, GenerationSettings, describe_plan
from dpgviz.core.vocab import Vocabulary
from dpgviz.gui.editing import Editing, matching_record, sibling_runs
from dpgviz.gui.exploring import Exploring
from dpgviz.gui.inspecting import NO_EXTRAS, CellExtras, Inspecting, Preview, ShownRecord, TokenInfo
from dpgviz.gui.notices import (
    CompareShown,
    LoadProgress,
    ModelOffered,
    ModelReady,
    Notice,
    Said,
    SettingsRestored,
    StoreShown,
)
from dpgviz.gui.view_state import ViewState
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
from dpgviz.store.session import Progress, Session, SessionError, checkpoint_sha256, open_session, save_session
from dpgviz.store.step_store import StepStore

__all__ = [  # the names the window and the tests take from here
    "NO_EXTRAS", "CellExtras", "CompareShown", "LoadProgress", "ModelOffered", "ModelReady", "Notice", "Preview", "Said",
    "SettingsRestored", "ShownRecord", "StoreShown", "TokenInfo", "Workspace", "matching_record", "sibling_runs",
]

if TYPE_CHECKING:
    from dpgviz.ipc.client import WorkerClient

log = logging.getLogger(__name__)

RATE_MIN_SPAN_S = 0.25  # shortest span of arrivals a steps/s reading is taken over
# Export formats that take one record (the one shown); the rest take the whole branch.
PER_RECORD_FORMATS = ("text", "png")


# -- background jobs ---------------------------------------------------------------------
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


@dataclass
class ActiveRun:
    """The run the worker is doing for us."""

    run_id: int
    branch: str
    expected: int  # records it will yield
    base: int = 0  # records the branch's timeline held before the run (its parent's, up to the fork)
    open_ended: bool = False  # its strategy decides how many records (core.settings.OPEN_ENDED)


def _new_client() -> WorkerClient:
    """A worker client; multiprocessing and the worker's module load here, after the first frame."""
    from dpgviz.ipc.client import WorkerClient

    return WorkerClient()


class Workspace(Editing, Inspecting, Exploring):
    """Everything the window shows and does, minus the window."""

    def __init__(
        self, *, device: str = "auto", dtype: str = "auto", client_factory: Callable[[], WorkerClient] | None = None
    ) -> None:
        self.device, self.dtype = device, dtype  # for the next model load (--device, --dtype)
        self.client_factory = client_factory or _new_client
        self.view = ViewState()
        self.client: WorkerClient | None = None
        self.store: StepStore | None = None
        self.vocab: Vocabulary | None = None  # of the shown store
        self.session: Session | None = None  # an opened session file backing the store, if any
        self.path: Path | None = None  # where Save writes: the last file saved or opened
        self.model_info: ModelInfo | None = None
        self.is_loading = False
        self.run: ActiveRun | None = None
        self.preview: Preview | None = None  # a re-sample preview of one record, if shown
        self._preview_changes: tuple[Preview, np.ndarray] | None = None
        self.compare: tuple[str, str] | None = None  # two branches side by side (the first is the shown one)
        # A strategy comparison in progress: (root branch, settings, strategies still to run).
        self._strategy_queue: tuple[str, GenerationSettings, list[str]] | None = None
        self.job: _Job | None = None  # the save or export in progress
        self.finished: JobProgress | None = None  # the last job's final progress
        self._notices: list[Notice] = []
        self._model_check: tuple[Session, Future] | None = None
        self._arrivals: collections.deque[float] = collections.deque(maxlen=64)  # prediction records
        self._last_rate = 0.0
        self._run_predictions = 0  # 'prediction' records of the run in progress (its iterations)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dpgviz-jobs")
        self._order_cache: tuple | None = None  # (key, version, time, decoding order)
        self._composer: tuple | None = None  # (key, store.blocks.Composer) of the shown branch
        self._block_extras_cache: tuple | None = None
        self._history_key: tuple | None = None
        self._history = np.zeros(0, dtype=np.int64)

    # -- telling the window --------------------------------------------------------------
    def say(self, text: str, is_error: bool = False) -> None:
        (log.warning if is_error else log.info)("%s", text)
        self._notices.append(Said(text, is_error))

    def take_notices(self) -> list[Notice]:
        """What happened since the last call, oldest first."""
        notices, self._notices = self._notices, []
        return notices

    # -- queries -------------------------------------------------------------------------
    @property
    def is_running(self) -> bool:
        return self.run is not None

    @property
    def is_checking(self) -> bool:
        """An opened session's recorded model is being hashed in the background."""
        return self._model_check is not None

    @property
    def can_run(self) -> bool:
        """A model is loaded and idle enough to start a run."""
        return self.model_info is not None and not self.is_loading and self.client is not None

    def rows(self, branch: str | None = None) -> np.ndarray:
        """Store rows of a branch's timeline (default: the shown branch): its history.

        A child's timeline is its parent's records up to the fork, then its own
        (`StepStore.history`); cached until the store changes.
        """
        branch = self.view.branch if branch is None else branch
        if self.store is None or branch not in self.store.branches:
            return np.zeros(0, dtype=np.int64)
        key = (id(self.store), self.store.version, branch)
        if self._history_key != key:
            self._history_key, self._history = key, self.store.history(branch)
        return self._history

    def n_records(self) -> int:
        return len(self.rows())

    def current_row(self) -> int | None:
        """Store row of the record shown, or None when there is nothing to show."""
        rows = self.rows()
        if not len(rows):
            return None
        return int(rows[min(max(0, self.view.record), len(rows) - 1)])

    def steps_per_s(self) -> float:
        """Denoising iterations per second: over the last records of the run in progress, or
        the last run's whole (a span shorter than RATE_MIN_SPAN_S is noise: records that came
        in one poll would read as thousands per second)."""
        if self.run is None or len(self._arrivals) < 2:
            return self._last_rate
        span = self._arrivals[-1] - self._arrivals[0]
        if span >= RATE_MIN_SPAN_S:
            self._last_rate = (len(self._arrivals) - 1) / span
        return self._last_rate

    def expected_records(self) -> int | None:
        """Records the run in progress will yield, when the shown branch is that run's."""
        if self.run is not None and self.view.branch == self.run.branch:
            return self.run.base + self.run.expected
        return None

    def progress(self) -> tuple[float, str]:
        """(fraction, label) for the status bar: a job, the run, loading, or idle."""
        if self.job is not None:
            return self.job.progress.fraction(), self.job.progress.label
        if self.run is not None and self.store is not None:
            rows = self.store.branches[self.run.branch].rows
            got = len(rows)
            if self.run.open_ended:  # no planned count: how much is unmasked says how far it got
                n_masked = int(self.store.columns["n_masked"][rows[-1]]) if rows else self.store.layout.seq_len
                return 1 - n_masked / max(1, self.store.layout.seq_len), f"{got} records, {n_masked} masked"
            return got / max(1, self.run.expected), f"{got} / {self.run.expected} records"
        if self.is_loading:
            return 0.0, "loading model"
        return (1.0 if self.n_records() else 0.0), "idle"

    # -- the frame loop's side -------------------------------------------------------------
    def update(self, dt_s: float) -> None:
        """Once a frame: poll the worker into the store, finish jobs, advance playback."""
        if self.client is not None:
            for event in self.client.poll(self.store):
                self.handle_event(event)
        self._poll_jobs()
        self.view.advance(self.n_records(), dt_s)

    def handle_event(self, event: object) -> None:
        if self.handle_explore_event(event):  # the model explorer's (gui.exploring)
            return
        if isinstance(event, StepReady):
            if KINDS[int(event.scalars["kind"])] == "prediction":
                self._arrivals.append(time.perf_counter())
                self._run_predictions += 1
        elif isinstance(event, ModelLoading):
            self._notices.append(LoadProgress(event.fraction, event.message))
        elif isinstance(event, ModelLoaded):
            self.model_info, self.is_loading = event.info, False
            if self.session is None or self.store is None:  # a session's own vocabulary stays
                self.vocab = event.info.vocab()
            self._notices.append(ModelReady(event.info))
            self.say(f"Loaded {event.info.name} on {event.info.device}.")
        elif isinstance(event, RunStarted):
            log.info("run %d started: %s", event.run_id, event.layout)
        elif isinstance(event, RunFinished):
            if self.run is not None and event.run_id == self.run.run_id:
                self.run = None
                if event.elapsed_s > 0:  # the worker's own clock: iterations = forward passes of 'prediction's
                    self._last_rate = self._run_predictions / event.elapsed_s
                self.say(
                    f"Done: {event.n_records} records, {event.forward_passes} forward passes in {event.elapsed_s:.2f} s."
                )
                if self._strategy_queue is not None:
                    self._next_strategy()
        elif isinstance(event, RunStopped):
            if self.run is not None and event.run_id == self.run.run_id:
                self.run, self._strategy_queue = None, None
                self.say(f"Stopped after {event.n_records} records.")
        elif isinstance(event, WorkerError):
            log.warning("worker error: %s\n%s", event.message, event.traceback)
            if self.run is not None and event.run_id == self.run.run_id:
                self.run, self._strategy_queue = None, None
            if self.is_loading and event.run_id is None:
                self.is_loading = False
                self._notices.append(LoadProgress(0.0, "load failed"))
            self.say(event.message, is_error=True)
        elif isinstance(event, WorkerDied):
            self.client = None  # the client cleaned up after its process; a new one is made on Load
            self.model_info, self.is_loading, self.run, self._strategy_queue = None, False, None, None
            self._notices.append(ModelReady(None))
            self._notices.append(LoadProgress(0.0, "worker stopped"))
            self.say(
                f"The worker process stopped unexpectedly (exit code {event.exitcode}). "
                "Load a model to start a new one.",
                is_error=True,
            )

    # -- model and runs ----------------------------------------------------------------------
    def _ensure_client(self) -> WorkerClient:
        if self.client is None or not self.client.is_alive:
            if self.client is not None:
                self.client.close()
            self.client = self.client_factory().start()
        return self.client

    def load_model(self, entry: ModelEntry, dtype: str | None = None, device: str | None = None) -> None:
        """Load a checkpoint in the worker (a run in progress is stopped first). `dtype` (as --dtype)
        and `device` (auto | cpu | cuda) hold for this and later loads; None keeps the current one."""
        self.device, self.dtype = device or self.device, dtype or self.dtype
        if self.run is not None:
            self.stop()
        client = self._ensure_client()
        path = None if entry.is_default else str(entry.path)
        meta = None if entry.is_default or entry.meta is None else str(entry.meta)
        client.load_model(path, meta, self.device, self.dtype)
        self.is_loading = True
        self._notices.append(LoadProgress(0.02, f"loading {entry.name}"))
        self.say(f"Loading {entry.name}...")

    def start(self, settings: GenerationSettings, label: str | None = None) -> bool:
        """Start a fresh run as a new root branch; False (and a message) when it cannot."""
        if not self._has_model():
            return False
        info = self.model_info
        from dpgviz.ipc.client import run_layout

        layout = run_layout(settings, info)
        if self.store is None or self.store.layout != layout:  # same layout: the run joins what is shown
            if self.store is not None and len(self.store):
                log.info("new layout %s: previous runs are dropped from view", layout)
            self._close_session()
            self.store, self.vocab, self.path = StepStore(layout), info.vocab(), None
        branch = self.store.new_branch(settings.to_dict(), label=label or f"run {len(self.store.branch_order) + 1}")
        return self._launch(settings, branch.id)

    def continue_from(
        self,
        settings: GenerationSettings,
        branch: str | None = None,
        record: int | None = None,
        label: str | None = None,
        repeat_start: bool = True,
    ) -> bool:
        """Run again from a record (default: the one shown) with `settings`, as a child branch.
        `repeat_start=False`: the child opens with its first prediction (no 'initial' repeating the record)."""
        if not self._has_model():
            return False
        branch = self.view.branch if branch is None else branch
        record = self.view.record if record is None else record
        rows = self.rows(branch)
        if self.store is None or not len(rows):
            self.say("Nothing to continue from: Start a run first.", is_error=True)
            return False
        if self.store.layout.is_blocks:
            self.say("Continuing a run generated in blocks is not supported yet: Start a new run.", is_error=True)
            return False
        if settings.length != self.store.layout.seq_len:
            self.say(f"To continue this run, length must stay {self.store.layout.seq_len}.", is_error=True)
            return False
        record = min(max(0, record), len(rows) - 1)
        row = int(rows[record])
        start_it = continue_point(self.store.kind(row), int(self.store.columns["iteration"][row]))
        if start_it >= settings.steps and settings.strategy not in OPEN_ENDED:
            self.say(f"This record is after iteration {start_it}; raise steps above {start_it} to continue.", is_error=True)
            return False
        flags = self.store.get("flags", row)
        tokens = self.store.get("tokens", row).astype(np.int64)
        protected = (flags & FLAG_PROTECTED).astype(bool)
        edited = (flags & FLAG_EDITED).astype(bool)
        child = self.store.new_branch(
            settings.to_dict(), parent=branch, fork_record=record,
            label=label or f"run {len(self.store.branch_order) + 1} (from {branch} @ {record + 1})",
        )
        return self._launch(
            settings, child.id, tokens=tokens, iteration=start_it,
            protected=protected if protected.any() else None, edited=edited if edited.any() else None,
            emit_initial=repeat_start,
        )

    def _has_model(self) -> bool:
        if self.model_info is None or self.client is None or self.is_loading:
            self.say("Load a model first.", is_error=True)
            return False
        return True

    def _launch(self, settings: GenerationSettings, branch: str, **start: object) -> bool:
        from dpgviz.ipc.client import WorkerGoneError

        try:
            run_id = self.client.start_run(settings, branch, **start)
        except WorkerGoneError as exc:
            self.say(f"{exc}; load a model again.", is_error=True)
            return False
        expected = run_record_count(settings, int(start.get("iteration", 0))) - (not start.get("emit_initial", True))
        self.store.reserve(expected)  # the run's rows in one allocation: no copying as records arrive
        self.run = ActiveRun(
            run_id, branch, expected, base=self.store.history_length(branch), open_ended=settings.strategy in OPEN_ENDED
        )
        self._arrivals.clear()
        self._last_rate, self._run_predictions = 0.0, 0
        self.view.branch, self.view.record = branch, max(0, self.store.history_length(branch) - 1)
        if self.store.branches[branch].parent is None:
            self.view.top_row = 0
        self.view.follow_live, self.view.playing = True, False
        self._notices.append(StoreShown(self.vocab, settings.length))
        self.say(f"Generating {settings.length} tokens {describe_plan(settings)}...")
        return True

    def stop(self) -> None:
        if self.client is not None and self.run is not None:
            self.client.stop(self.run.run_id)
            self.say("Stopping...")

    def select_branch(self, branch: str) -> None:
        """Show `branch` at its last record."""
        if self.store is not None and branch in self.store.branches:
            self.view.branch = branch
            self.view.record = max(0, len(self.rows(branch)) - 1)
            self.view.playing = False
            self.view.follow_live = self.run is not None and self.run.branch == branch

    def show_store(self, store: StepStore, vocab: Vocabulary, branch: str | None = None) -> None:
        """Show records that did not come from the worker (a session file, a test fixture)."""
        self.store, self.vocab = store, vocab
        self.view.branch = branch or (store.branch_order[0] if store.branch_order else None)
        self.view.record = max(0, self.n_records() - 1)
        self.view.follow_live = False
        self._notices.append(StoreShown(vocab, store.layout.seq_len))

    # -- session files -----------------------------------------------------------------------
    def open(self, path: str | Path) -> bool:
        """Open a session file, without a model; what was shown stays if it fails."""
        if self.run is not None:
            self.say("Stop the run before opening a session.", is_error=True)
            return False
        if self.job is not None:
            self.say(f"Wait for {self.job.progress.label} to finish before opening a session.", is_error=True)
            return False
        try:
            session = open_session(path)
        except (SessionError, OSError) as exc:
            self.say(f"Cannot open {path}: {exc}", is_error=True)
            return False
        previous, self.session = self.session, session  # the session's mapping backs the store's arrays
        self.show_store(session.store, session.vocab)
        if previous is not None:
            previous.close()
        self.path = Path(path)
        if session.settings:  # restart or continue with what the file was made with
            try:
                self._notices.append(SettingsRestored(GenerationSettings.from_dict(session.settings)))
            except (TypeError, ValueError) as exc:
                log.warning("session settings not shown: %s", exc)
        store = session.store
        self.say(
            f"Opened {self.path.name}: {len(store)} records in {len(store.branch_order)} branches. "
            "Checking the recorded model..."
        )
        siblings = sibling_runs(store)
        if siblings is not None and self.start_compare(*siblings):  # `compare --out`: runs side by side
            self._notices.append(CompareShown())
        self._model_check = (session, self._pool.submit(session.model_status))
        return True

    def _offer_model(self, session: Session, future: Future) -> None:
        """Offer the session's recorded checkpoint when it is there unchanged, or say why not."""
        exc = future.exception()
        status = "unreadable" if exc is not None else str(future.result())
        name = Path(session.model_path).name if session.model_path else ""
        records = f"{len(session.store)} records in {len(session.store.branch_order)} branches"
        if status == "ok":
            self._notices.append(ModelOffered(str(session.model_path)))
            self.say(f"Opened {records}. Its model {name} is picked: press Load to continue or restart.")
        elif status == "unrecorded":
            self.say(f"Opened {records}. No model was recorded: load one to continue or restart.")
        else:
            why = {"missing": "is not there", "changed": "has changed since (sha256 differs)"}.get(
                status, f"cannot be read ({exc})"
            )
            self.say(
                f"Opened {records}. Its model {session.model_path} {why}: load a model to continue or restart.",
                is_error=status != "missing",
            )

    def _close_session(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None

    def snapshot(self) -> Session | None:
        """The shown store as a Session a job thread may read while a run goes on (None: said why)."""
        store = self.store
        if store is None or len(store) == 0:
            self.say("Nothing to save or export yet: generate a run or open a session.", is_error=True)
            return None
        opened, info = self.session, self.model_info
        from_file = opened is not None and opened.store is store
        if self.vocab is None:
            self.say("These records have no vocabulary to save with: load a model first.", is_error=True)
            return None
        count = len(store)
        frozen = store.view(count)  # shares the arrays: rows and pool entries are never rewritten
        branch = store.branches.get(self.view.branch)
        settings = dict(branch.settings) if branch is not None else {}
        if from_file and opened.model_path:  # the records' provenance: the model the file recorded
            model_path, sha, model_info = opened.model_path, opened.model_sha256, dict(opened.model_info)
        elif info is not None:
            model_path, sha, model_info = info.path, None, info.to_dict(with_itos=False)
        else:
            model_path, sha, model_info = None, None, {}
        return Session(
            store=frozen, vocab=self.vocab, settings=settings, model_path=model_path, model_sha256=sha,
            model_info=model_info,
        )

    def save(self, path: str | Path | None = None) -> bool:
        """Save every branch to `path` (default: the last path) on the job thread; False if it cannot start."""
        path = Path(path) if path is not None else self.path
        if path is None:
            self.say("Choose where to save first.", is_error=True)
            return False
        if not self._is_free():
            return False
        snapshot = self.snapshot()
        if snapshot is None:
            return False
        model_path, sha = snapshot.model_path, snapshot.model_sha256

        def work(progress: Progress) -> Path:
            digest = sha
            weights = model_file(model_path)
            if weights is not None and digest is None:
                digest = checkpoint_sha256(weights)  # cached: once per model file
            return save_session(
                path, snapshot.store, snapshot.vocab, settings=snapshot.settings, model_path=model_path,
                model_sha256=digest, model_info=snapshot.model_info, progress=progress,
            )

        def done(written: object) -> str:
            self.path = Path(str(written))
            return f"Saved {len(snapshot.store)} records in {len(snapshot.store.branch_order)} branches to {written}."

        self._start_job(f"saving {path.name}", work, done)
        return True

    def export(self, fmt: str, path: str | Path, *, mode: str = "mask-state", columns: int = 64, frame_ms: int = 120) -> bool:
        """Export the shown branch (text and PNG: the record shown) on the job thread."""
        path = Path(path)
        if not self._is_free():
            return False
        snapshot = self.snapshot()
        if snapshot is None:
            return False
        branch, record = self.view.branch, self.view.record if fmt in PER_RECORD_FORMATS else None

        def work(progress: Progress) -> Path:
            from dpgviz.export import export_session  # Pillow: only when exporting

            return export_session(
                snapshot, fmt, path, branch=branch, record=record, frame_ms=frame_ms, mode=mode,
                columns=columns, progress=progress,
            )

        self._start_job(f"exporting {path.name}", work, lambda written: f"Exported {fmt.upper()} to {written}.")
        return True

    # -- jobs --------------------------------------------------------------------------------
    def _is_free(self) -> bool:
        if self.job is not None:
            self.say(f"Wait for {self.job.progress.label} to finish.", is_error=True)
            return False
        return True

    def _start_job(self, label: str, work: Callable[[Progress], object], on_done: Callable[[object], str]) -> None:
        progress = JobProgress(label)
        self.job = _Job(progress, self._pool.submit(work, progress.report), on_done)
        self.say(f"{label.capitalize()}...")

    def _poll_jobs(self) -> None:
        job = self.job
        if job is not None and job.future.done():
            self.job, self.finished = None, job.progress
            exc = job.future.exception()
            if exc is None:
                self.say(job.on_done(job.future.result()))
            elif isinstance(exc, (SessionError, OSError, ValueError)):
                self.say(f"{job.progress.label.capitalize()} failed: {exc}", is_error=True)
            else:  # a bug, not a user error: keep the traceback in the log
                log.error("%s failed", job.progress.label, exc_info=exc)
                self.say(f"{job.progress.label.capitalize()} failed: {type(exc).__name__}: {exc}", is_error=True)
        if self._model_check is not None and self._model_check[1].done():
            session, future = self._model_check
            self._model_check = None
            if session is self.session:
                self._offer_model(session, future)

    def wait_for_job(self, timeout_s: float = 60.0) -> None:
        """Block until the job in progress ends and its message is queued (tests, closing)."""
        if self.job is not None:
            self.job.future.exception(timeout=timeout_s)
        if self._model_check is not None:
            self._model_check[1].exception(timeout=timeout_s)
        self._poll_jobs()

    # -- lifetime ----------------------------------------------------------------------------
    def close(self) -> None:
        """Let a running save or export finish (its file is written atomically), stop the worker."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        if self.client is not None:
            self.client.close()
            self.client = None
        self.store = None
        self._close_session()

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
