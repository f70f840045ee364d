"""Messages across the process boundary: commands (GUI -> worker) and events (worker -> GUI).

Small picklable dataclasses, sent whole over `multiprocessing` pipes. A step's arrays
never travel here: they sit in the run's shared-memory ring (`ipc.ring`) and StepReady
only says which slot holds them. `WorkerDied` is never sent; the client makes it when
it finds the worker process gone. To a worker on another machine (ipc.server) the same
dataclasses travel as a signed JSON header plus raw array buffers (ipc.wire), never pickled.

Times (`t_written`) are `time.monotonic()`: CLOCK_MONOTONIC on Linux, one clock for
every process on the machine, so a GUI-side reading minus a worker-side one is a latency.

numpy only; no torch, no dearpygui.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dpgviz.core.model_info import ModelInfo


class Command:
    """Base of what the GUI sends to the worker."""


class Event:
    """Base of what the worker sends to the GUI."""


# -- commands --------------------------------------------------------------------------
@dataclass
class LoadModel(Command):
    path: str | None  # None = the embedded default model
    meta: str | None = None  # vocabulary file; None = look beside the checkpoint
    device: str = "auto"  # auto | cpu | cuda
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16 (engine.checkpoint.resolve_dtype)
    # Hugging Face models only: "auto" spreads the layers over the GPUs, then CPU, then disk
    # (accelerate), within max_memory ({"0": "20GiB", "cpu": "64GiB"}); `worker --device-map` sets them.
    device_map: str | None = None
    max_memory: dict | None = None


@dataclass
class StartRun(Command):
    run_id: int
    settings: dict  # GenerationSettings.to_dict()
    # (N,) start ids, mask_id where masked; None = all masked. N is the whole sequence, also in a
    # run made in blocks (a record's block is shorter): the edited or continued text composed
    # (store.blocks), so the sampler starts at its first block with a mask, the blocks before as context.
    tokens: np.ndarray | None = None
    iteration: int = 0  # iteration the run starts at (a fork continues mid-run)
    protected: np.ndarray | None = None  # (N,) bool: positions the sampler must not change
    edited: np.ndarray | None = None  # (N,) bool: positions changed by hand (flags only)
    emit_initial: bool = True  # False: the start is a fork's 'edit' record; send no 'initial'


@dataclass
class StopRun(Command):
    run_id: int


@dataclass
class Shutdown(Command):
    pass


# -- events ----------------------------------------------------------------------------
@dataclass
class ModelLoading(Event):
    fraction: float  # 0..1, coarse: import, read, build
    message: str


@dataclass
class ModelLoaded(Event):
    info: ModelInfo  # name, path, block size, vocabulary, device, threads


@dataclass
class RunStarted(Event):
    run_id: int
    layout: dict  # RecordLayout.to_dict()
    shm_name: str  # the run's ring; see ipc.ring
    n_slots: int


@dataclass
class StepReady(Event):
    run_id: int
    slot: int  # ring slot holding the arrays
    seq: int  # record index within the run: 0, 1, 2, ... with no gaps
    scalars: dict  # StepRecord.scalars()
    t_written: float  # time.monotonic() in the worker, just after the slot was written
    # Filled GUI-side by WorkerClient.poll:
    row: int | None = None  # store row the record was appended to
    arrays: dict | None = None  # the copied arrays, only when poll had no store


@dataclass
class RunFinished(Event):
    run_id: int
    n_records: int
    forward_passes: int
    elapsed_s: float  # worker-side, StartRun received -> last record sent


@dataclass
class RunStopped(Event):
    run_id: int
    n_records: int  # records sent before the stop; all of them are in the ring


@dataclass
class WorkerError(Event):
    message: str  # one line, fit to show a user as is
    traceback: str  # traceback.format_exc() in the worker, for logs and bug reports
    run_id: int | None = None  # the run it ended, if any


@dataclass
class WorkerDied(Event):
    """Made by the client, never sent: the worker process is gone (crash, kill -9, OOM)."""

    exitcode: int | None


# -- a remote worker (ipc.remote.RemoteClient makes these; they never travel) ------------------
@dataclass
class Connected(Event):
    """A remote worker accepted this client: where it is, and the models it offers (Load's list)."""

    address: str  # HOST:PORT
    host: str  # the worker host's own name
    models: list  # [core.discovery.ModelEntry], paths on that host, the worker's own choice first


@dataclass
class Disconnected(WorkerDied):
    """The link to a remote worker is gone (network drop, the server stopped or refused this client,
    its worker process died there): the same to the app as a worker that died here."""

    address: str = ""
    reason: str = ""  # one line: why, as far as the client knows


# -- model explorer (app.explore <-> engine.explore) ---------------------------------
# A model to explore is (path, meta): path None = the embedded default. The worker keeps
# every model asked for loaded, keyed by that pair, beside the one it generates with.
@dataclass
class ExploreSample(Command):
    job_id: int
    models: list  # [(path | None, meta | None)], shown side by side in this order
    ids: np.ndarray  # (N,) corrupted ids the models see (mask_id where masked)
    targets: np.ndarray  # (N,) the true ids
    top_k: int = 8
    device: str = "auto"


@dataclass
class ExploreBatch(Command):
    job_id: int
    models: list  # [(path | None, meta | None)]
    text: str  # windows are drawn from it (its held-out last 10% when held_out)
    ratios: list  # corruption ratios
    corruption: dict  # core.corruption.CorruptionSettings.to_dict()
    samples: int
    length: int
    seed: int = 0
    held_out: bool = True
    device: str = "auto"


@dataclass
class StopExplore(Command):
    job_id: int


@dataclass
class ExploreProgress(Event):
    job_id: int
    done: int  # forward passes so far
    total: int
    message: str = ""


@dataclass
class ExploreSampleDone(Event):
    job_id: int
    names: list  # model names, in the order asked
    predictions: list  # per model: dict of engine.explore.Prediction's arrays for the one window


@dataclass
class ExploreBatchDone(Event):
    job_id: int
    rows: list  # engine.explore.BatchRow.to_dict() per (model, ratio), models outermost
    is_stopped: bool  # a StopExplore (or a newer command) ended it early: rows so far
    elapsed_s: float


@dataclass
class ExploreFailed(Event):
    job_id: int
    message: str  # one line
    traceback: str
