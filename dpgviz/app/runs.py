"""Runs: the source of records, the model it holds, and the run in progress.

    load_model(entry)           the source loads a checkpoint (ModelLoading..., ModelLoaded)
    start(settings)             a fresh run as a new root branch
    continue_from(settings)     a child branch run on from the record shown
    launch(settings, branch)    the one path every run takes to the source
    handle(event)               a source event -> what it means for the run (RunOutcome)
    restart_source()            a dead worker back with the same model, device and dtype

`Runs` is handed the `Document` (where records land and what is shown), the `Notices`
and a factory of `RunSource`s (app.source: the local worker client by default). It makes
the source on first use and a new one after the old one died.

numpy and dpgviz.core/ipc/store only; no dearpygui, no torch.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import numpy as np

from dpgviz.app.document import Document
from dpgviz.app.notices import LoadProgress, ModelReady, ModelsListed, Notices, StoreShown
from dpgviz.app.source import RunSource
from dpgviz.core.discovery import ModelEntry
from dpgviz.core.model_info import ModelInfo
from dpgviz.core.prompt import PromptError, context_note, continued, fit_to_model, layout_for
from dpgviz.core.records import FLAG_EDITED, FLAG_PROTECTED, KINDS, continue_point, run_record_count
from dpgviz.core.settings import OPEN_ENDED, GenerationSettings, describe_plan
from dpgviz.ipc.messages import (
    Command,
    Connected,
    Disconnected,
    LoadModel,
    ModelLoaded,
    ModelLoading,
    RunFinished,
    RunStarted,
    RunStopped,
    StepReady,
    StopRun,
    WorkerDied,
    WorkerError,
)
from dpgviz.store.provenance import provenance_of_info

log = logging.getLogger(__name__)

RATE_MIN_SPAN_S = 0.25  # shortest span of arrivals a steps/s reading is taken over


class RunOutcome(Enum):
    """What an event meant for the run in progress (`Runs.handle`)."""

    FINISHED = "finished"
    ENDED = "ended"  # stopped, failed, or its worker died: anything queued after it is off


@dataclass
class ActiveRun:
    """The run the source is doing for us."""

    run_id: int
    branch: str
    expected: int  # records it will yield
    base: int = 0  # records the branch's timeline held before the run (its parent's, up to the fork)
    open_ended: bool = False  # its strategy decides how many records (core.settings.OPEN_ENDED)


def in_recorded_blocks(settings: GenerationSettings, recorded: dict) -> GenerationSettings:
    """`settings` for a run that goes on from a branch made in blocks (recorded with the settings
    dict `recorded`): its length and block length stay, since its records and the whole
    sequence handed to the worker have that shape (the window's length may read otherwise)."""
    return dataclasses.replace(
        settings, length=int(recorded.get("length", settings.length)),
        block_length=int(recorded.get("block_length", settings.block_length)),
    )


def local_worker() -> RunSource:
    """A started local worker; multiprocessing and the worker's module load here, after the first frame."""
    from dpgviz.ipc.client import WorkerClient

    return WorkerClient().start()


class Runs:
    """The source, the model and the run in progress (see the module docstring)."""

    def __init__(
        self, doc: Document, notices: Notices, source_factory: Callable[[], RunSource] | None = None, *,
        device: str = "auto", dtype: str = "auto",
    ) -> None:
        self.doc, self.notices = doc, notices
        self.source_factory = source_factory or local_worker
        self.device, self.dtype = device, dtype  # for the next model load (--device, --dtype)
        self.source: RunSource | None = None
        self.model_info: ModelInfo | None = None
        self.model_entry: ModelEntry | None = None  # the last model asked for (Restart worker reloads it)
        self.is_loading = False
        self.run: ActiveRun | None = None
        self.worker_died: int | None = None  # exit code of a worker that died, until one is started again
        self.remote: str | None = None  # HOST:PORT of the remote worker in use (ipc.remote), once it welcomed us
        self.disconnected: str | None = None  # HOST:PORT of a remote worker whose link dropped, until reconnected
        self._arrivals: collections.deque[float] = collections.deque(maxlen=64)  # prediction records
        self._last_rate = 0.0
        self._run_predictions = 0  # 'prediction' records of the run in progress (its iterations)

    # -- queries ---------------------------------------------------------------------------
    @property
    def is_running(self) -> bool:
        return self.run is not None

    @property
    def live_branch(self) -> str | None:
        """The branch the run in progress appends to."""
        return self.run.branch if self.run is not None else None

    @property
    def can_run(self) -> bool:
        """A model is loaded and idle enough to start a run."""
        return self.model_info is not None and not self.is_loading and self.source is not None

    def wait_fds(self) -> tuple[int, ...]:
        return self.source.wait_fds() if self.source is not None else ()

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
        if self.run is not None and self.doc.view.branch == self.run.branch:
            return self.run.base + self.run.expected
        return None

    def progress(self) -> tuple[float, str] | None:
        """(fraction, label) of the run in progress or the load; None when neither."""
        store = self.doc.store
        if self.run is not None and store is not None:
            branch = store.branches.get(self.run.branch)
            if branch is None:  # deleted while it runs: the stop is on its way (app.edits.delete_branch)
                return 0.0, f"stopping: branch {self.run.branch} was deleted"
            rows = branch.rows
            got = len(rows)
            if self.run.open_ended:  # no planned count: how much is unmasked says how far it got
                n_masked = int(store.columns["n_masked"][rows[-1]]) if rows else store.layout.seq_len
                return 1 - n_masked / max(1, store.layout.seq_len), f"{got} records, {n_masked} masked"
            return got / max(1, self.run.expected), f"{got} / {self.run.expected} records"
        if self.is_loading:
            return 0.0, "loading model"
        return None

    # -- the frame loop's side ---------------------------------------------------------------
    def poll(self) -> list:
        """The source's events since the last frame (records already in the store)."""
        return self.source.poll(self.doc.store) if self.source is not None else []

    def handle(self, event: object) -> RunOutcome | None:
        """Take a run or model event; what it meant for the run in progress (None: nothing ended)."""
        if isinstance(event, StepReady):
            if KINDS[int(event.scalars["kind"])] == "prediction":
                self._arrivals.append(time.perf_counter())
                self._run_predictions += 1
        elif isinstance(event, ModelLoading):
            self.notices.post(LoadProgress(event.fraction, event.message))
        elif isinstance(event, ModelLoaded):
            self.model_info, self.is_loading = event.info, False
            if self.doc.session is None or self.doc.store is None:  # a session's own vocabulary stays
                self.doc.vocab = event.info.vocab()
            self.notices.post(ModelReady(event.info))
            self.notices.say(f"Loaded {event.info.name} on {event.info.device}.")
        elif isinstance(event, RunStarted):
            log.info("run %d started: %s", event.run_id, event.layout)
        elif isinstance(event, RunFinished):
            if self.run is not None and event.run_id == self.run.run_id:
                self.run = None
                if event.elapsed_s > 0:  # the worker's own clock: iterations = forward passes of 'prediction's
                    self._last_rate = self._run_predictions / event.elapsed_s
                self.notices.say(
                    f"Done: {event.n_records} records, {event.forward_passes} forward passes in {event.elapsed_s:.2f} s."
                )
                return RunOutcome.FINISHED
        elif isinstance(event, RunStopped):
            if self.run is not None and event.run_id == self.run.run_id:
                self.run = None
                self.notices.say(f"Stopped after {event.n_records} records.")
                return RunOutcome.ENDED
        elif isinstance(event, WorkerError):
            log.warning("worker error: %s\n%s", event.message, event.traceback)
            ended = self.run is not None and event.run_id == self.run.run_id
            if ended:
                self.run = None
            if self.is_loading and event.run_id is None:
                self.is_loading = False
                self.notices.post(LoadProgress(0.0, "load failed"))
            self.notices.say(event.message, is_error=True)
            return RunOutcome.ENDED if ended else None
        elif isinstance(event, Connected):
            self.remote, self.disconnected = event.address, None
            self.notices.post(ModelsListed(tuple(event.models), event.address))
            self.notices.say(f"Connected to the worker at {event.address} ({event.host}).")
            if self.model_info is None and not self.is_loading and (self.model_entry or event.models):
                self.load_model(self.model_entry or event.models[0])  # the worker's own choice comes first
        elif isinstance(event, WorkerDied):
            self.source = None  # the source cleaned up after itself; a new one is made on Load
            was_running = self.run is not None
            self.model_info, self.is_loading, self.run = None, False, None
            self.worker_died = event.exitcode
            self.notices.post(ModelReady(None))
            if isinstance(event, Disconnected):  # a remote worker: the link is what failed
                self.disconnected, self.remote = event.address, None
                self.notices.post(LoadProgress(0.0, "disconnected"))
                self.notices.say(
                    f"Disconnected from {event.address}: {event.reason}. The records shown stay; Reconnect to go on.",
                    is_error=True,
                )
                return RunOutcome.ENDED if was_running else None
            self.notices.post(LoadProgress(0.0, "worker stopped"))
            again = "Restart worker reloads it" if self.model_entry is not None else "Load a model to start a new one"
            self.notices.say(
                f"The worker process stopped unexpectedly (exit code {event.exitcode}). {again}; "
                "the records shown stay.",
                is_error=True,
            )
            return RunOutcome.ENDED if was_running else None
        return None

    # -- the model -----------------------------------------------------------------------------
    def _ensure_source(self) -> RunSource:
        if self.source is None or not self.source.is_alive:
            if self.source is not None:
                self.source.close()
            self.source = self.source_factory()
            self.worker_died = self.disconnected = None
        return self.source

    def load_model(self, entry: ModelEntry, dtype: str | None = None, device: str | None = None) -> None:
        """Load a checkpoint in the worker (a run in progress is stopped first). `dtype` (as --dtype)
        and `device` (auto | cpu | cuda) hold for this and later loads; None keeps the current one."""
        self.device, self.dtype = device or self.device, dtype or self.dtype
        if self.run is not None:
            self.stop()
        path = None if entry.is_default else str(entry.path)
        meta = None if entry.is_default or entry.meta is None else str(entry.meta)
        try:  # a remote worker's connection file may be gone, its queue full (ipc.remote)
            self._ensure_source().send(LoadModel(path, meta, self.device, self.dtype))
        except (RuntimeError, OSError, ValueError) as exc:
            self.notices.say(f"Cannot reach the worker: {exc}", is_error=True)
            return
        self.model_entry = entry
        self.is_loading = True
        self.notices.post(LoadProgress(0.02, f"loading {entry.name}"))
        self.notices.say(f"Loading {entry.name}...")

    def restart_source(self) -> bool:
        """After the worker died: a new one, loading the model it had with the same device and dtype.
        A remote worker whose link dropped: reconnect (the connection file is read again), then load it there."""
        if self.model_entry is None:
            if self.disconnected is not None:
                return self._connect(self.disconnected)
            self.notices.say("No model was loaded: pick one and press Load.", is_error=True)
            return False
        self.load_model(self.model_entry)
        return True

    def restart_label(self) -> str | None:
        """What the status bar offers once the source stopped: Reconnect, Restart worker, or nothing."""
        if self.disconnected is not None:
            return "Reconnect"
        return "Restart worker" if self.worker_died is not None and self.model_entry is not None else None

    def connect(self, where: str, key: str | None = None) -> bool:
        """Use the worker on another machine at `where` (its connection file, or HOST:PORT with
        `key`) from now on (--connect, File > Connect to worker...); False and a message when
        `where` cannot be read. Reconnect reads the file again."""
        from dpgviz.ipc.remote import remote_factory
        from dpgviz.ipc.wire import read_target

        try:
            target = read_target(where, key)
        except ValueError as exc:
            self.notices.say(str(exc), is_error=True)
            return False
        return self.use_source(remote_factory(where, key), target.address)

    def use_source(self, factory: Callable[[], RunSource], label: str) -> bool:
        """From now on records come from `factory`'s sources (File > Connect to worker...): the source
        in use is closed (a run in progress ends there; its records stay) and a new one connects.
        Its Welcome lists its models and loads its own choice (handle: Connected)."""
        self.close()
        self.source_factory = factory
        self.model_info, self.model_entry, self.is_loading, self.run = None, None, False, None
        self.remote = self.disconnected = self.worker_died = None
        self.notices.post(ModelReady(None))
        return self._connect(label)

    def _connect(self, label: str) -> bool:
        try:
            self._ensure_source()
        except (RuntimeError, OSError, ValueError) as exc:
            self.notices.say(f"Cannot connect to {label}: {exc}", is_error=True)
            return False
        self.notices.post(LoadProgress(0.0, "connecting"))
        self.notices.say(f"Connecting to {label}...")
        return True

    def has_model(self) -> bool:
        if self.model_info is None or self.source is None or self.is_loading:
            self.notices.say("Load a model first.", is_error=True)
            return False
        return True

    def send(self, command: Command) -> bool:
        """Send a command to the source; False (and a message) when it is gone."""
        if self.source is None:
            self.notices.say("No worker is running; load a model first.", is_error=True)
            return False
        try:
            self.source.send(command)
        except RuntimeError as exc:  # ipc.client.WorkerGoneError and its kin
            self.notices.say(f"{exc}; load a model again.", is_error=True)
            return False
        return True

    # -- runs --------------------------------------------------------------------------------
    def start(self, settings: GenerationSettings, label: str | None = None) -> bool:
        """Start a fresh run as a new root branch; False (and a message) when it cannot.
        A prompt or template in `settings` (core.prompt) is checked against the model first."""
        if not self.has_model():
            return False
        info = self.model_info
        try:  # a prompt and length past the window go in blocks, as the window's length alone does
            settings, encoded = fit_to_model(
                settings, info.vocab(), info.chat_wrap, info.block_size, auto_blocks=True, model_name=info.name
            )
        except PromptError as exc:
            self.notices.say(str(exc), is_error=True)
            return False
        layout = layout_for(settings, info.n_ids, encoded)
        doc = self.doc
        if doc.store is None or doc.store.layout != layout:  # same layout: the run joins what is shown
            if doc.store is not None and len(doc.store):
                log.info("new layout %s: previous runs are dropped from view", layout)
            doc.new_store(layout, info.vocab())
        branch = doc.store.new_branch(settings.to_dict(), label=label or f"run {len(doc.store.branch_order) + 1}")
        if not self.launch(settings, branch.id):
            return False
        note = context_note(settings, encoded, info.block_size)
        if note is not None:
            self.notices.say(f"Generating {settings.length} tokens after the prompt: {note}.")
        return True

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
        if not self.has_model():
            return False
        doc, store = self.doc, self.doc.store
        branch = doc.view.branch if branch is None else branch
        record = doc.view.record if record is None else record
        rows = doc.rows(branch)
        if store is None or not len(rows):
            self.notices.say("Nothing to continue from: Start a run first.", is_error=True)
            return False
        settings = continued(settings, store.branches[branch].settings)  # its prompt's positions stay fixed
        if store.layout.is_blocks:
            return self._continue_blocks(settings, branch, rows, record, label, repeat_start)
        if not settings.has_prompt and settings.length != store.layout.seq_len:
            self.notices.say(f"To continue this run, length must stay {store.layout.seq_len}.", is_error=True)
            return False
        record = min(max(0, record), len(rows) - 1)
        row = int(rows[record])
        start_it = continue_point(store.kind(row), int(store.columns["iteration"][row]))
        if start_it >= settings.steps and settings.strategy not in OPEN_ENDED:
            self.notices.say(
                f"This record is after iteration {start_it}; raise steps above {start_it} to continue.", is_error=True
            )
            return False
        flags = store.get("flags", row)
        tokens = store.get("tokens", row).astype(np.int64)
        protected = (flags & FLAG_PROTECTED).astype(bool)
        edited = (flags & FLAG_EDITED).astype(bool)
        child = store.new_branch(
            settings.to_dict(), parent=branch, fork_record=record,
            label=label or f"run {len(store.branch_order) + 1} (from {branch} @ {record + 1})",
        )
        return self.launch(
            settings, child.id, tokens=tokens, iteration=start_it,
            protected=protected if protected.any() else None, edited=edited if edited.any() else None,
            emit_initial=repeat_start,
        )

    def _continue_blocks(
        self, settings: GenerationSettings, branch: str, rows: np.ndarray, record: int, label: str | None,
        repeat_start: bool,
    ) -> bool:
        """continue_from for a run made in blocks: the whole sequence composed at the record
        goes to the worker, which runs on from the record's block (store.edits.start_point)."""
        from dpgviz.store.edits import edit_state, start_point

        store, mask_id = self.doc.store, self.doc.vocab.mask_id
        settings = in_recorded_blocks(settings, store.branches[branch].settings)
        record = min(max(0, record), len(rows) - 1)
        row = int(rows[record])
        state = edit_state(store, rows, record, mask_id)
        kind = store.kind(row)
        own_block = state.tokens[store.layout.block_offset(state.block) : state.limit]
        if kind == "prediction" and record > 0 and not (own_block == mask_id).any():
            # A prediction filled every mask of its block, and the sampler goes on from the first
            # block with a mask: draw that prediction again (new settings) from the record before it.
            record -= 1
            row = int(rows[record])
            state, kind = edit_state(store, rows, record, mask_id), store.kind(row)
        where = start_point(
            store.layout, state.tokens, mask_id, state.block,
            continue_point(kind, int(store.columns["iteration"][row])), kind == "final", settings.steps,
        )
        if where is None:
            self.notices.say("This record is the finished run: nothing is left to generate from it.", is_error=True)
            return False
        if where.iteration >= settings.steps and settings.strategy not in OPEN_ENDED:
            self.notices.say(
                f"This record is after iteration {where.iteration}; raise steps above {where.iteration} to continue.",
                is_error=True,
            )
            return False
        child = store.new_branch(
            settings.to_dict(), parent=branch, fork_record=record,
            label=label or f"run {len(store.branch_order) + 1} (from {branch} @ {record + 1})",
        )
        return self.launch(
            settings, child.id, start_block=where.block, tokens=state.tokens, iteration=where.iteration,
            protected=state.protected if state.protected.any() else None,
            edited=state.edited if state.edited.any() else None,
            emit_initial=repeat_start or not where.has_record,
        )

    def launch(self, settings: GenerationSettings, branch: str, start_block: int = 0, **start: object) -> bool:
        """Send the run to the source, reserve its rows and show its branch, following it live.
        `start_block`: the block a run made in blocks starts at (for the count of records it yields)."""
        doc, store = self.doc, self.doc.store
        try:
            run_id = self.source.start_run(settings, branch, **start)
        except RuntimeError as exc:  # ipc.client.WorkerGoneError
            self.notices.say(f"{exc}; load a model again.", is_error=True)
            return False
        if self.model_info is not None:  # which model made it (store.provenance: score and verify find it)
            store.branches[branch].provenance = provenance_of_info(self.model_info)
        expected = (
            run_record_count(settings, int(start.get("iteration", 0)), start_block)
            - (not start.get("emit_initial", True))
        )
        store.reserve(expected)  # the run's rows in one allocation: no copying as records arrive
        self.run = ActiveRun(
            run_id, branch, expected, base=store.history_length(branch), open_ended=settings.strategy in OPEN_ENDED
        )
        self._arrivals.clear()
        self._last_rate, self._run_predictions = 0.0, 0
        view = doc.view
        view.branch, view.record = branch, max(0, store.history_length(branch) - 1)
        if store.branches[branch].parent is None:
            view.top_row = 0
        view.follow_live, view.playing = True, False
        self.notices.post(StoreShown(doc.vocab, store.layout.total_len))
        self.notices.say(f"Generating {settings.length} tokens {describe_plan(settings)}...")
        return True

    def stop(self) -> None:
        if self.source is not None and self.run is not None and self.source.is_alive:
            self.send(StopRun(self.run.run_id))
            self.notices.say("Stopping...")

    def close(self) -> None:
        if self.source is not None:
            self.source.close()
            self.source = None
