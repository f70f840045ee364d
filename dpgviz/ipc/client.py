"""The GUI side of the process boundary: start the worker, send commands, poll events.

`WorkerClient.poll(store)` is called once per GUI frame and never blocks: it drains the
event pipe, copies each StepReady's slot out of the run's ring into `store.append(...)`
on the run's branch (which releases the slot), and returns the events for the GUI to act
on. It also notices a dead worker (kill -9, crash, OOM) by its exit code, within one
frame, returns `WorkerDied`, and removes any ring the dead worker left named. After that
`start()` (or a new client) spawns a fresh worker.

    client = WorkerClient().start()          # or: with WorkerClient() as client:
    client.load_model(path, meta, "auto")    # -> ModelLoading..., ModelLoaded
    run_id = client.start_run(settings, branch)
    every frame: for event in client.poll(store): ...
    client.close()                           # Shutdown, join, terminate/kill fallback

The worker is started with the 'spawn' method, which imports the parent's main module
in the child: a script that starts a client needs the `if __name__ == "__main__":` guard
(the `dpgviz` entry points have it).

Must not import torch or dpgviz.engine, directly or indirectly (tests check): the GUI
process stays light and fork-safe; the worker owns the model.
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing as mp
import os
import secrets
import select
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np

from dpgviz.core.model_info import ModelInfo
from dpgviz.core.prompt import encode_prompt, layout_for
from dpgviz.core.records import RecordLayout
from dpgviz.core.settings import GenerationSettings
from dpgviz.ipc.messages import (
    Command,
    Event,
    LoadModel,
    ModelLoaded,
    RunFinished,
    RunStarted,
    RunStopped,
    Shutdown,
    StartRun,
    StepReady,
    StopRun,
    WorkerDied,
    WorkerError,
)
from dpgviz.ipc.ring import Ring, RingError, ring_name
from dpgviz.ipc.worker import worker_main
from dpgviz.store.step_store import StepStore

log = logging.getLogger(__name__)

JOIN_TIMEOUT_S = 5.0  # Shutdown -> exit; a forward pass in progress finishes first
KILL_TIMEOUT_S = 1.0  # after terminate() / kill()


class WorkerGoneError(RuntimeError):
    """A command was sent with no live worker; start() one (again)."""


def run_layout(settings: GenerationSettings, info: ModelInfo) -> RecordLayout:
    """The layout a run of `settings` has on the model of `info` (as Sampler.layout computes it):
    records of one block (settings.block_tokens) of a sequence of settings.length tokens, after
    the prompt when there is one (core.prompt; PromptError, a ValueError, for a bad one)."""
    encoded = encode_prompt(settings, info.vocab(), info.chat_wrap, info.name)
    return layout_for(settings, info.n_ids, encoded)


@dataclass
class _Run:
    run_id: int
    branch: str
    ring: Ring | None = None
    layout: RecordLayout | None = None
    n_taken: int = 0
    is_store_mismatch: bool = False


class WorkerClient:
    """Owns one worker process and the GUI-side ends of its pipes and rings."""

    def __init__(
        self, max_slots: int = 256, threads: int | None = None, log_level: int | None = None,
        target: Callable[..., None] = worker_main,
    ) -> None:
        self.max_slots = max_slots  # upper bound on ring slots per run (see ring.default_n_slots)
        self.target = target  # the worker's entry point (bench.transport puts a model-free one here)
        self.threads = threads  # torch threads in the worker; None = worker.default_threads()
        self.log_level = log_level if log_level is not None else logging.getLogger("dpgviz").getEffectiveLevel()
        self.model_info: ModelInfo | None = None  # from the last ModelLoaded
        self.active_run: int | None = None  # the run started last, until it ends
        # Per record, worker wrote the slot -> appended to the store; the last 64k records.
        self.latencies_ms: deque[float] = deque(maxlen=1 << 16)
        self._ctx = mp.get_context("spawn")  # never fork: the worker imports torch (and maybe CUDA)
        self._process: mp.process.BaseProcess | None = None
        self._commands: Connection | None = None
        self._events: Connection | None = None
        self._ready: select.poll | None = None
        self._session = ""
        self._next_run_id = 1
        self._runs: dict[int, _Run] = {}

    # -- lifetime --------------------------------------------------------------------
    def start(self) -> WorkerClient:
        """Spawn the worker (returns at once; it boots in the background)."""
        if self.is_alive:
            raise RuntimeError("the worker is already running")
        self._release()
        self._session = f"{os.getpid()}_{secrets.token_hex(3)}"
        self._next_run_id = 1
        cmd_read, cmd_write = self._ctx.Pipe(duplex=False)
        evt_read, evt_write = self._ctx.Pipe(duplex=False)
        self._process = self._ctx.Process(
            target=self.target,
            args=(cmd_read, evt_write, os.getpid(), self._session, self.max_slots, self.log_level, self.threads),
            name="dpgviz-worker",
            daemon=True,  # multiprocessing's exit handler terminates it if close() was never called
        )
        self._process.start()
        # Drop our copies of the worker's ends, so each side reads EOF when the other dies.
        cmd_read.close()
        evt_write.close()
        self._commands, self._events = cmd_write, evt_read
        # Readable when an event arrived or the worker exited (its sentinel): poll()'s idle check.
        self._ready = select.poll()
        self._ready.register(evt_read.fileno(), select.POLLIN)
        self._ready.register(self._process.sentinel, select.POLLIN)
        atexit.register(self.close)
        log.debug("worker %d started (session %s)", self._process.pid, self._session)
        return self

    @property
    def is_alive(self) -> bool:
        return self._process is not None and self._process.is_alive()

    @property
    def session(self) -> str:
        """This worker's tag in ring names (`dpgviz_<gui pid>_<random>_r<run>`)."""
        return self._session

    def ring_name(self, run_id: int) -> str:
        return ring_name(self._session, run_id)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def wait_fds(self) -> tuple[int, ...]:
        """File descriptors that become readable when poll() has something (an event, or the
        worker's exit): a frame loop asleep until input watches them to wake up. () if none."""
        if self._process is None or self._events is None:
            return ()
        return (self._events.fileno(), self._process.sentinel)

    def close(self, timeout_s: float = JOIN_TIMEOUT_S) -> None:
        """Shut the worker down (Shutdown, join, then terminate, then kill) and free every ring."""
        atexit.unregister(self.close)
        process = self._process
        if process is None:
            return
        if process.is_alive():
            try:
                self._commands.send(Shutdown())
            except (BrokenPipeError, ConnectionResetError, OSError):
                pass
            deadline = time.monotonic() + timeout_s
            while process.is_alive() and time.monotonic() < deadline:
                self._discard_events()  # a worker blocked on a full event pipe must still see Shutdown
                process.join(0.02)
            for stop in (process.terminate, process.kill):
                if not process.is_alive():
                    break
                log.warning("worker %d did not exit; %s", process.pid, stop.__name__)
                stop()
                process.join(KILL_TIMEOUT_S)
        else:
            process.join(0)
        self._release()

    def _discard_events(self) -> None:
        try:
            while self._events.poll(0):
                self._events.recv()
        except (EOFError, OSError):
            pass

    def _release(self) -> None:
        """GUI-side cleanup once the worker is gone: rings, orphaned names, pipes."""
        for run in self._runs.values():
            if run.ring is not None:
                run.ring.close()
        self._runs.clear()
        if self._process is not None and self._process.exitcode is None:
            log.error("worker %d outlived kill(); leaving its rings to it", self._process.pid)
        elif self._process is not None:
            # The worker unlinks its rings; if it died first, a name may remain: remove it.
            for run_id in range(1, self._next_run_id):
                Ring.remove_orphan(ring_name(self._session, run_id))
            self._process.close()
        for conn in (self._commands, self._events):
            if conn is not None:
                conn.close()
        self._process = self._commands = self._events = self._ready = None
        self.active_run = None
        self.model_info = None  # a new worker starts with no model

    def __enter__(self) -> WorkerClient:
        return self.start() if self._process is None else self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- commands --------------------------------------------------------------------
    def send(self, command: Command) -> None:
        """Send any command (the explorer's, or one without a method here); WorkerGoneError if it is gone."""
        self._send(command)

    def _send(self, command: object) -> None:
        if self._process is None or self._commands is None:
            raise WorkerGoneError("the worker is not running; start it first")
        try:
            self._commands.send(command)
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise WorkerGoneError("the worker has exited") from exc

    def load_model(
        self, path: str | Path | None = None, meta: str | Path | None = None, device: str = "auto", dtype: str = "auto"
    ) -> None:
        """Ask the worker to load a checkpoint or a Hugging Face folder (None = embedded default):
        ModelLoading..., ModelLoaded."""
        self._send(LoadModel(None if path is None else str(path), None if meta is None else str(meta), device, dtype))

    def start_run(
        self,
        settings: GenerationSettings,
        branch: str,
        tokens: np.ndarray | None = None,
        iteration: int = 0,
        protected: np.ndarray | None = None,
        edited: np.ndarray | None = None,
        emit_initial: bool = True,
    ) -> int:
        """Start a run whose records poll() appends to `branch`; a run in progress is stopped first.

        `emit_initial=False` for a restart from a fork's 'edit' record: the run's records
        then follow that record directly, with no 'initial' of their own.
        """
        run_id = self._next_run_id
        self._send(StartRun(run_id, settings.to_dict(), tokens, iteration, protected, edited, emit_initial))
        self._next_run_id += 1
        self._runs[run_id] = _Run(run_id, branch)
        self.active_run = run_id
        return run_id

    def stop(self, run_id: int | None = None) -> None:
        """Stop `run_id` (default: the active run); records already written still arrive."""
        run_id = self.active_run if run_id is None else run_id
        if run_id is not None and self.is_alive:
            self._send(StopRun(run_id))

    # -- events ----------------------------------------------------------------------
    def poll(self, store: StepStore | None = None, max_events: int | None = None) -> list[Event]:
        """Every event that has arrived (at most about `max_events`: the rest on the next call),
        without blocking; StepReady records go into `store`."""
        events: list[Event] = []
        if self._process is None or not self._ready.poll(0):  # one syscall when nothing happened
            return events
        was_dead = not self._process.is_alive()
        is_eof = False
        events_fd = self._events.fileno()
        try:
            while any(fd == events_fd for fd, _ in self._ready.poll(0)):  # data, or EOF once the worker is gone
                events.extend(self._on_event(self._events.recv(), store))
                if max_events is not None and len(events) >= max_events:
                    return events  # the rest, and the worker's exit if it came, on the next call
        except (EOFError, OSError):
            is_eof = True
        if was_dead or is_eof:
            self._process.join(KILL_TIMEOUT_S)
            exitcode = self._process.exitcode
            log.warning("worker %d died (exit code %s)", self._process.pid, exitcode)
            self._release()
            events.append(WorkerDied(exitcode))
        return events

    def _on_event(self, event: Event, store: StepStore | None) -> list[Event]:
        if isinstance(event, StepReady):
            return self._on_step(event, store)
        if isinstance(event, ModelLoaded):
            self.model_info = event.info
        elif isinstance(event, RunStarted):
            return self._on_run_started(event, store)
        elif isinstance(event, (RunFinished, RunStopped)):
            self._end_run(event.run_id)
        elif isinstance(event, WorkerError) and event.run_id is not None:
            self._end_run(event.run_id)
        return [event]

    def _on_run_started(self, event: RunStarted, store: StepStore | None) -> list[Event]:
        run = self._runs.setdefault(event.run_id, _Run(event.run_id, StepStore.ROOT))
        run.layout = RecordLayout(**event.layout)
        run.ring = Ring.attach(event.shm_name, run.layout)
        run.ring.mark_attached()  # lets the worker unlink the name now
        out: list[Event] = [event]
        if store is not None and store.layout != run.layout:
            run.is_store_mismatch = True
            message = f"run {event.run_id} has layout {run.layout} but the store holds {store.layout}; stopping it"
            log.error(message)
            self.stop(event.run_id)
            out.append(WorkerError(message, "", event.run_id))
        return out

    def _on_step(self, event: StepReady, store: StepStore | None) -> list[Event]:
        run = self._runs.get(event.run_id)
        if run is None or run.ring is None:
            raise RingError(f"record {event.seq} of run {event.run_id} arrived before its RunStarted")
        if event.seq != run.n_taken:
            raise RingError(f"run {event.run_id}: record {event.seq} arrived, expected {run.n_taken}")
        arrays = run.ring.take(event.slot, event.seq)  # copies, then frees the slot for the worker
        run.n_taken += 1
        if store is not None and not run.is_store_mismatch and run.branch not in store.branches:
            run.is_store_mismatch = True  # its branch went (deleted, or another store took its place)
            log.info("run %d: its branch %r is gone; stopping it", event.run_id, run.branch)
            self.stop(event.run_id)
        if store is None or run.is_store_mismatch:
            event.arrays = arrays
        else:
            event.row = store.append(event.scalars, arrays, run.branch)
        self.latencies_ms.append((time.monotonic() - event.t_written) * 1e3)
        return [event]

    def _end_run(self, run_id: int) -> None:
        run = self._runs.pop(run_id, None)
        if run is not None and run.ring is not None:
            run.ring.close()  # every record of the run has been taken: events arrive in order
        if self.active_run == run_id:
            self.active_run = None

    def run_branch(self, run_id: int) -> str | None:
        run = self._runs.get(run_id)
        return run.branch if run is not None else None
