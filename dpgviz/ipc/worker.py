"""The inference worker: a spawned process that owns torch, the model and the sampler.

`worker_main` is the process's entry point (started by `ipc.client.WorkerClient` through
a 'spawn' context, never fork: torch and CUDA do not survive a fork). It reads commands
from one pipe and writes events to another (`ipc.messages`); a run's arrays go through
the run's shared-memory ring (`ipc.ring`), created here.

    idle:  wait on the command pipe (with a timeout, to notice a dead parent)
    LoadModel  -> ModelLoading ..., ModelLoaded (the old model stays if loading fails)
    StartRun   -> RunStarted, StepReady per record, RunFinished | RunStopped
    ExploreSample -> (ExploreProgress while loading a model) ExploreSampleDone | ExploreFailed
    ExploreBatch  -> ExploreProgress per forward pass, ExploreBatchDone | ExploreFailed
    any failure -> WorkerError(message, traceback, run_id); the worker stays alive

During a run the worker checks the command pipe after every record and while it waits
for the GUI to free a slot: StopRun ends the run; LoadModel, StartRun or Shutdown end it
too and are handled next (one run at a time; a newer command supersedes it). Torch gets
every core but one (`default_threads`): the GUI process needs the last.

Note [Worker shutdown]
~~~~~~~~~~~~~~~~~~~~~~
(After PyTorch DataLoader's note in torch/utils/data/_utils/worker.py.) The worker exits,
unlinking every ring it created that is still named, in each of these ways:

  * Shutdown command (WorkerClient.close()): the run in progress ends, the loop returns.
  * The GUI died (SIGKILL, SIGTERM, crash) or exited without close(): the GUI's end of the
    command pipe closes, so the pipe reads EOF at once; as a second signal, os.getppid()
    no longer equals the parent pid (checked between records and before every wait, so
    at least every 0.5 s). Either raises _ParentGone. Rings the GUI had attached to were
    unlinked as soon as the worker saw that, so only unattached ones are left to remove.
  * SIGTERM (Process.terminate(), the close() fallback, or multiprocessing's exit handler
    terminating this daemonic process): the handler raises _Terminated, a BaseException
    that run-error handling does not swallow, so the same `finally` cleanup runs. It runs
    between bytecodes: a forward pass in progress finishes first.
  * SIGINT is ignored: Ctrl-C in a terminal reaches the whole process group, and the GUI
    decides how to shut down (as DataLoader workers leave KeyboardInterrupt to the main
    process).
  * Once the cleanup is done (every way above), the process ends with os._exit(0) after
    flushing the log: what is left is only freeing the model object by object and the
    interpreter's teardown, which the OS does at once by unmapping the process. For a big
    model that took seconds (an 8B model: 16 GB of tensors freed one by one, then the CUDA
    context), longer than WorkerClient.close waits (JOIN_TIMEOUT_S), so a clean `generate`
    ended with "worker N did not exit; terminate" on stderr.
  * SIGKILL: nothing runs here. The GUI sees the process gone within a frame (WorkerDied)
    and removes the names of this worker's rings (Ring.remove_orphan); the resource tracker
    shared by both processes is the last resort if the GUI dies too.

Imports torch and dpgviz.engine only inside the worker process, on the first LoadModel
or StartRun: importing this module (as the GUI does to name the target) stays torch-free.
"""

from __future__ import annotations

import itertools
import logging
import os
import select
import signal
import sys
import time
import traceback
from collections import deque
from multiprocessing.connection import Connection
from typing import Any

from dpgviz.core.settings import GenerationSettings, SettingsError
from dpgviz.core.vocab import VocabError
from dpgviz.ipc.messages import (
    Command,
    Event,
    ExploreBatch,
    ExploreBatchDone,
    ExploreFailed,
    ExploreProgress,
    ExploreSample,
    ExploreSampleDone,
    LoadModel,
    ModelLoaded,
    ModelLoading,
    RunFinished,
    RunStarted,
    RunStopped,
    Shutdown,
    StartRun,
    StepReady,
    StopExplore,
    StopRun,
    WorkerError,
)
from dpgviz.ipc.ring import Ring, default_n_slots, ring_name

log = logging.getLogger(__name__)

IDLE_POLL_S = 0.5  # how often an idle worker checks that its parent lives (EOF is instant)
RETIRE_POLL_S = 0.01  # while a finished run's ring waits for the GUI to attach
SLOT_WAIT_MIN_S = 0.001  # first wait for a slot the GUI has not taken (poll's unit is 1 ms); doubles up to...
SLOT_WAIT_MAX_S = 0.005  # ...this, so a freed slot is noticed within 5 ms


def default_threads() -> int:
    """Torch threads for the worker: every core this process may use but one.

    The GUI process is busy every frame (and under Xvfb, Mesa renders on the CPU). An
    OpenMP team as wide as the machine then waits at each barrier for whichever thread
    the GUI displaced: on this 2-core machine, beside a GUI polling every 2 ms, a tiny
    model's run took 1.7x as long with 2 threads as with 1, and up to 60x as long while
    other jobs also ran. So one core is left to the GUI.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 2)
    return max(1, cores - 1)


class _ParentGone(BaseException):
    """The GUI process is gone; exit without reporting to anyone."""


class _Terminated(BaseException):
    """SIGTERM arrived; exit through the normal cleanup."""


class _NoModelError(RuntimeError):
    pass


def _on_sigterm(signum: int, frame: Any) -> None:
    raise _Terminated()


def one_line(exc: BaseException) -> str:
    """A user-facing line: the message of the errors users cause, else 'Type: message'."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    user_errors: tuple[type[BaseException], ...] = (SettingsError, VocabError, _NoModelError)
    checkpoint = sys.modules.get("dpgviz.engine.checkpoint")  # imported only once a model was asked for
    if checkpoint is not None:
        user_errors += (checkpoint.CheckpointError,)
    if isinstance(exc, user_errors) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _Worker:
    def __init__(
        self, commands: Connection, events: Connection, parent_pid: int, session: str, max_slots: int, threads: int
    ) -> None:
        self.commands = commands
        self.command_ready = select.poll()  # a persistent poller: one syscall per check between records
        self.command_ready.register(commands.fileno(), select.POLLIN)
        self.events = events
        self.parent_pid = parent_pid
        self.session = session
        self.max_slots = max_slots
        self.threads = threads
        self.sampler: Any = None  # engine.sampler.Sampler once a model is loaded
        self.rings: list[Ring] = []  # created here and not yet unlinked + closed
        self.current: Ring | None = None  # ring of the run in progress
        self.pending: deque[Command] = deque()  # commands that ended a run, handled next
        self.is_shutting_down = False
        self.loaded: Any = None  # engine.checkpoint.LoadedModel the sampler drives
        self.loaded_key: tuple | None = None  # its (path, meta), as LoadModel named it
        self.explore_models: dict[tuple, Any] = {}  # more models for the explorer, by (path, meta)

    # -- pipes -----------------------------------------------------------------------
    def send(self, event: Event) -> None:
        try:
            self.events.send(event)
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise _ParentGone() from exc

    def has_command(self, timeout_s: float) -> bool:
        """True when a command (or EOF: the GUI is gone) is waiting, after up to `timeout_s`."""
        return bool(self.command_ready.poll(timeout_s * 1000))

    def check_parent(self) -> None:
        if os.getppid() != self.parent_pid:
            raise _ParentGone()

    def receive(self, timeout: float) -> Command | None:
        """The next command, or None after `timeout` seconds without one."""
        if self.pending:
            return self.pending.popleft()
        self.check_parent()
        if not self.has_command(timeout):
            return None
        try:
            return self.commands.recv()
        except (EOFError, OSError) as exc:
            raise _ParentGone() from exc

    # -- main loop -------------------------------------------------------------------
    def serve(self) -> None:
        while not self.is_shutting_down:
            cmd = self.receive(RETIRE_POLL_S if self.rings else IDLE_POLL_S)
            self.retire_rings()
            if cmd is not None:
                self.handle(cmd)

    def handle(self, cmd: Command) -> None:
        run_id = getattr(cmd, "run_id", None)
        try:
            if isinstance(cmd, Shutdown):
                self.is_shutting_down = True
            elif isinstance(cmd, LoadModel):
                self.load(cmd)
            elif isinstance(cmd, StartRun):
                self.run(cmd)
            elif isinstance(cmd, StopRun):
                log.debug("stop for run %s, which is not running", cmd.run_id)
            elif isinstance(cmd, (ExploreSample, ExploreBatch)):
                self.explore(cmd)
            elif isinstance(cmd, StopExplore):
                log.debug("stop for explore job %s, which is not running", cmd.job_id)
            else:
                raise TypeError(f"unknown command {type(cmd).__name__}")
        except Exception as exc:
            log.debug("command %s failed", type(cmd).__name__, exc_info=True)
            self.send(WorkerError(one_line(exc), traceback.format_exc(), run_id if isinstance(cmd, StartRun) else None))

    # -- commands --------------------------------------------------------------------
    def load(self, cmd: LoadModel) -> None:
        self.send(ModelLoading(0.0, "starting torch"))
        import torch

        from dpgviz.engine.checkpoint import load_model
        from dpgviz.engine.sampler import Sampler

        torch.set_num_threads(self.threads)

        self.send(ModelLoading(0.3, f"reading {cmd.path or 'the embedded default model'}"))
        loaded = load_model(
            cmd.path, cmd.meta, cmd.device, cmd.dtype, device_map=cmd.device_map, max_memory=cmd.max_memory
        )
        self.sampler = Sampler(loaded.adapter, loaded.vocab, loaded.device)  # replaces the old one only now
        self.loaded, self.loaded_key = loaded, (cmd.path, cmd.meta)
        info = loaded.info(threads=torch.get_num_threads())
        self.send(ModelLoading(1.0, f"loaded {info.name} on {info.device}"))
        self.send(ModelLoaded(info))

    def run(self, cmd: StartRun) -> None:
        t0 = time.monotonic()
        if self.sampler is None:
            raise _NoModelError("no model is loaded; load one before starting a run")
        from dpgviz.engine.sampler import StartState

        settings = GenerationSettings.from_dict(cmd.settings)
        start = StartState(cmd.tokens, cmd.iteration, cmd.protected, cmd.edited, cmd.emit_initial)
        records = self.sampler.run(settings, start)
        try:
            first = next(records)  # validates settings and start state before any shared memory exists
            layout = self.sampler.layout(settings)
            ring = Ring.create(
                ring_name(self.session, cmd.run_id), layout, default_n_slots(layout, max_slots=self.max_slots)
            )
            self.rings.append(ring)
            self.current = ring
            self.send(RunStarted(cmd.run_id, layout.to_dict(), ring.name, ring.n_slots))
            seq, passes, is_stopped = 0, 0, False
            for record in itertools.chain([first], records):
                slot = seq % ring.n_slots
                if not ring.is_writable(slot) and not self.wait_writable(ring, slot, cmd.run_id):
                    is_stopped = True
                    break
                ring.write(slot, seq, record.arrays())
                self.send(StepReady(cmd.run_id, slot, seq, record.scalars(), time.monotonic()))
                seq, passes = seq + 1, record.forward_passes
                if not ring.is_unlinked and ring.is_attached:
                    ring.unlink()  # the GUI has mapped it: from now on nothing can leak
                if self.should_end_run(cmd.run_id, 0.0):
                    is_stopped = True
                    break
            if is_stopped:
                log.debug("run %d stopped after %d records", cmd.run_id, seq)
                self.send(RunStopped(cmd.run_id, seq))
            else:
                self.send(RunFinished(cmd.run_id, seq, passes, time.monotonic() - t0))
        finally:
            records.close()
            self.current = None

    def wait_writable(self, ring: Ring, slot: int, run_id: int) -> bool:
        """Wait for the GUI to take `slot`; False if a command ended the run meanwhile."""
        delay = SLOT_WAIT_MIN_S
        while not ring.is_writable(slot):
            if self.should_end_run(run_id, delay):
                return False
            if not ring.is_unlinked and ring.is_attached:
                ring.unlink()
            delay = min(delay * 2, SLOT_WAIT_MAX_S)
        return True

    def should_end_run(self, run_id: int, timeout: float) -> bool:
        """Read commands that arrived (waiting up to `timeout`); True if one ends run `run_id`."""
        self.check_parent()
        if not self.has_command(timeout):
            return False
        while True:
            try:
                cmd = self.commands.recv()
            except (EOFError, OSError) as exc:
                raise _ParentGone() from exc
            if isinstance(cmd, StopRun):
                if cmd.run_id == run_id:
                    return True
                log.debug("stop for run %s ignored during run %s", cmd.run_id, run_id)
            else:
                self.pending.append(cmd)  # LoadModel / StartRun / Shutdown supersede this run
                return True
            if not self.has_command(0):
                return False

    # -- model explorer ----------------------------------------------------------------
    def explore(self, cmd: ExploreSample | ExploreBatch) -> None:
        """Score models on a corrupted sample or a batch; any failure is ExploreFailed for that job."""
        t0 = time.monotonic()
        try:
            models = self.explore_models_for(cmd)
            from dpgviz.engine.explore import explore_batch, predict, prediction_arrays, source_ids

            if isinstance(cmd, ExploreSample):
                preds = [predict(m, cmd.ids[None], cmd.targets[None], top_k=cmd.top_k) for _, m in models]
                self.send(ExploreSampleDone(cmd.job_id, [n for n, _ in models], [prediction_arrays(p) for p in preds]))
                return
            from dpgviz.core.corruption import CorruptionSettings

            rows = explore_batch(
                models, source_ids(cmd.text, models[0][1].vocab, cmd.held_out), cmd.ratios,
                CorruptionSettings.from_dict(cmd.corruption), cmd.samples, cmd.length, cmd.seed,
                progress=lambda done, total: self.send(ExploreProgress(cmd.job_id, done, total)),
                should_stop=lambda: self.should_end_explore(cmd.job_id),
            )
            is_stopped = len(rows) < len(models) * len(cmd.ratios)
            self.send(ExploreBatchDone(cmd.job_id, [r.to_dict() for r in rows], is_stopped, time.monotonic() - t0))
        except Exception as exc:
            log.debug("explore job %d failed", cmd.job_id, exc_info=True)
            self.send(ExploreFailed(cmd.job_id, one_line(exc), traceback.format_exc()))

    def explore_models_for(self, cmd: ExploreSample | ExploreBatch) -> list[tuple[str, Any]]:
        """(name, LoadedModel) per model asked for: the generation model, or one loaded (and kept) now."""
        import torch

        from dpgviz.engine.checkpoint import load_model

        torch.set_num_threads(self.threads)
        out: list[tuple[str, Any]] = []
        for path, meta in cmd.models:
            key = (path, meta)
            if key == self.loaded_key and self.loaded is not None:
                loaded = self.loaded
            elif key in self.explore_models:
                loaded = self.explore_models[key]
            else:
                self.send(ExploreProgress(cmd.job_id, 0, 0, f"loading {path or 'the embedded default model'}"))
                loaded = self.explore_models[key] = load_model(path, meta, cmd.device)
            names = {n for n, _ in out}
            out.append((loaded.name if loaded.name not in names else str(path), loaded))
        if not out:
            raise _NoModelError("pick at least one model to explore")
        return out

    def should_end_explore(self, job_id: int) -> bool:
        """Read commands that arrived; True if one ends explore job `job_id` (a stop, or any newer command)."""
        self.check_parent()
        while self.has_command(0):
            try:
                cmd = self.commands.recv()
            except (EOFError, OSError) as exc:
                raise _ParentGone() from exc
            if isinstance(cmd, StopExplore) and cmd.job_id == job_id:
                return True
            if isinstance(cmd, (StopExplore, StopRun)):
                continue  # for a job or run that is not going on
            self.pending.append(cmd)  # LoadModel / StartRun / Explore* / Shutdown supersede this job
            return True
        return False

    # -- rings -----------------------------------------------------------------------
    def retire_rings(self, is_final: bool = False) -> None:
        """Unlink and unmap rings of finished runs once the GUI has attached (or at exit)."""
        for ring in list(self.rings):
            if ring is self.current and not is_final:
                continue
            if is_final or ring.is_unlinked or ring.is_attached:
                ring.close()
                ring.unlink()
                self.rings.remove(ring)

    def cleanup(self) -> None:
        try:
            self.retire_rings(is_final=True)
        finally:
            self.commands.close()
            self.events.close()


def worker_main(
    commands: Connection,
    events: Connection,
    parent_pid: int,
    session: str,
    max_slots: int = 256,
    log_level: int = logging.WARNING,
    threads: int | None = None,
) -> None:
    """Entry point of the worker process (`threads` None: default_threads()). See Note [Worker shutdown]."""
    # OpenMP threads that spin while waiting stall for whole time slices when another
    # process wants the same cores (the GUI, a second job): a 256-token, 64-step run took
    # 24.9 s instead of 12.6 s beside one busy process on 2 cores. Passive waiting costs
    # ~10% when the machine is idle. Must be set before torch (libgomp) is imported.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from dpgviz.core.determinism import set_reproducible_env

    set_reproducible_env()  # MKL's reproducible mode: re-runs are bit-exact (`verify`)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _on_sigterm)
    logging.basicConfig(level=log_level, format="%(asctime)s dpgviz-worker %(levelname)s %(name)s: %(message)s")
    worker = _Worker(commands, events, parent_pid, session, max_slots, threads or default_threads())
    try:
        worker.serve()
    except _ParentGone:
        log.info("parent %d is gone; exiting", parent_pid)
    except _Terminated:
        log.info("terminated; exiting")
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # cleanup must not be cut short by a second SIGTERM
        worker.cleanup()
    _exit_now()  # Note [Worker shutdown]: the model is not freed piece by piece; the OS takes it back


def _exit_now() -> None:
    """End the process now, past the interpreter's teardown (Note [Worker shutdown])."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass
    os._exit(0)
