"""One blocking run through the worker, for the CLI's `generate` (and the benchmark).

Starts a WorkerClient, loads the model, runs `settings` into a fresh StepStore and shuts
the worker down, polling the way the GUI's frame loop does (short sleeps between empty
polls). The CLI thus drives the same worker, transport and store as the GUI.

numpy only in this process: no torch, no dpgviz.engine.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from dpgviz.core.model_info import ModelInfo
from dpgviz.core.prompt import PromptError, fit_to_model
from dpgviz.core.records import run_record_count
from dpgviz.core.settings import GenerationSettings
from dpgviz.ipc.client import WorkerClient, run_layout
from dpgviz.ipc.messages import Disconnected, Event, ModelLoaded, RunFinished, RunStopped, WorkerDied, WorkerError
from dpgviz.store.step_store import StepStore

log = logging.getLogger(__name__)

IDLE_SLEEP_S = 0.002  # between empty polls: small next to a step, and leaves the CPU to the worker


class WorkerFailed(RuntimeError):  # noqa: N818 (the CLI imports this name)
    """The worker reported an error (or died); the message is one line for the user."""

    def __init__(self, message: str, traceback: str = "") -> None:
        super().__init__(message)
        self.traceback = traceback


def raise_failures(events: list[Event]) -> None:
    """Raise WorkerFailed for the first WorkerError or WorkerDied among `events`."""
    for event in events:
        if isinstance(event, WorkerError):
            raise WorkerFailed(event.message, event.traceback)
        if isinstance(event, Disconnected):  # a remote worker (ipc.remote): the reason is one line
            raise WorkerFailed(f"disconnected from {event.address}: {event.reason}")
        if isinstance(event, WorkerDied):
            raise WorkerFailed(f"the worker process died (exit code {event.exitcode})")


def wait_for(
    client: WorkerClient,
    kinds: tuple[type, ...],
    store: StepStore | None = None,
    on_event: Callable[[Event], None] | None = None,
    timeout_s: float | None = None,
) -> Event:
    """Poll until an event of one of `kinds` arrives; WorkerError/WorkerDied raise WorkerFailed."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        events = client.poll(store)
        for event in events:
            if on_event is not None:
                on_event(event)
            if isinstance(event, kinds):
                return event
            raise_failures([event])
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"no {', '.join(k.__name__ for k in kinds)} within {timeout_s} s")
        if not events:
            time.sleep(IDLE_SLEEP_S)


def latency_stats(latencies_ms: Iterable[float]) -> dict:
    arr = np.fromiter(latencies_ms, dtype=np.float64)
    if arr.size == 0:
        return {"latency_ms_median": None, "latency_ms_p99": None, "latency_ms_max": None}
    return {
        "latency_ms_median": float(np.median(arr)),
        "latency_ms_p99": float(np.percentile(arr, 99)),
        "latency_ms_max": float(arr.max()),
    }


def run_via_worker(
    settings: GenerationSettings,
    model_path: str | Path | None,
    meta_path: str | Path | None,
    device: str = "auto",
    on_event: Callable[[Event], None] | None = None,
    cap_length: bool = False,
    *,
    store: StepStore | None = None,
    branch: str | None = None,
    tokens: np.ndarray | None = None,
    iteration: int = 0,
    protected: np.ndarray | None = None,
    edited: np.ndarray | None = None,
    emit_initial: bool = True,
    on_loaded: Callable[[ModelInfo], None] | None = None,
    auto_blocks: bool = False,
    dtype: str = "auto",
    source_factory: Callable[[], WorkerClient] | None = None,
) -> tuple[ModelInfo, StepStore, str, dict]:
    """Load and run in a worker; returns (model info, store, branch id, summary).

    By default the run goes into a fresh store's new root branch. With `store` and
    `branch` it is appended to that existing branch instead (`main.py branch` appends a
    fork's run after its 'edit' record); `tokens`, `iteration`, `protected`, `edited`
    and `emit_initial` are the start state (see engine.sampler.StartState).
    `on_loaded(info)` runs once the model is loaded, before the run starts, and may
    raise to stop there (e.g. the model's vocabulary does not match the store).

    Raises WorkerFailed with the worker's one-line message when loading or the run fails
    (a length over the model's block size included, unless `cap_length` caps it, as the
    CLI does for its default length). `auto_blocks` runs a length over the block size
    without a block length in blocks instead (GenerationSettings.with_default_blocks), as
    the CLI does for an explicit --length; summary["settings"] holds what ran.
    Nothing but this loop waits on the worker here, so the worker gets every core for
    torch (the GUI leaves one to its frame loop). `source_factory` makes a started source
    instead of a local worker (`generate --connect`: ipc.remote.remote_factory); a model path
    is then one on the worker's host, None its own model.
    """
    if (store is None) != (branch is None):
        raise ValueError("pass both store and branch, or neither")
    client = source_factory() if source_factory is not None else WorkerClient(threads=os.cpu_count() or 1).start()
    with client:
        t0 = time.monotonic()
        client.load_model(model_path, meta_path, device, dtype)
        info = wait_for(client, (ModelLoaded,), on_event=on_event).info
        load_s = time.monotonic() - t0
        if on_loaded is not None:
            on_loaded(info)
        try:  # the length capped or blocks chosen around the prompt, if any (core.prompt)
            settings, _ = fit_to_model(
                settings, info.vocab(), info.chat_wrap, info.block_size, cap_length=cap_length,
                auto_blocks=auto_blocks, model_name=info.name,
            )
        except PromptError as exc:
            raise WorkerFailed(str(exc)) from None
        if store is None:
            store = StepStore(run_layout(settings, info), capacity=run_record_count(settings), mask_id=info.mask_id)
            branch = store.new_branch(settings.to_dict(), label="generate").id
        else:  # rows for the records this run appends, in one allocation (a fresh store has them)
            store.reserve(run_record_count(settings, iteration) - (not emit_initial))
        n_before = len(store.branches[branch].rows)
        t1 = time.monotonic()
        client.start_run(settings, branch, tokens, iteration, protected, edited, emit_initial)
        end = wait_for(client, (RunFinished, RunStopped), store, on_event)
        wall_s = time.monotonic() - t1
        n_records = len(store.branches[branch].rows) - n_before
        summary = {
            "settings": settings.to_dict(),
            "n_records": n_records,
            "forward_passes": getattr(end, "forward_passes", None),
            "is_stopped": isinstance(end, RunStopped),
            "load_s": load_s,
            "run_s": wall_s,
            "worker_run_s": getattr(end, "elapsed_s", None),
            "records_per_s": n_records / wall_s if wall_s > 0 else None,
            **latency_stats(client.latencies_ms),
        }
    return info, store, branch, summary
