"""`python main.py bench worker`: what the process boundary costs, measured against what it wraps.

The same generation (same model, strategy 'seed', same seed) three ways:

    bare        the model's forward passes alone, as many as the sampler made
    in-process  Sampler.run in this process, each record appended to a StepStore
    worker      WorkerClient + worker + shared-memory ring, StartRun -> RunFinished,
                records appended GUI-side as the frame loop would (2 ms sleeps between
                empty polls); the model load is not timed

Rates are records per second (a record = one substep the GUI can show). `bare` divides
the sampler's record count by the bare forward time: the rate a sampler with zero
overhead would reach. Each way runs once untimed (warm-up: allocator, thread pools,
the first-call costs of every op) and then `repeats` times, interleaved; the fastest counts
(timeit's convention: slower repeats measure the machine's other load, not the code).
Transport latency is per record, worker wrote the slot -> appended to the store.

This process imports torch (the bare and in-process rows need it), inside `bench_worker`;
only `dpgviz.bench.main` imports this module, and the GUI never runs it.
"""

from __future__ import annotations

import json
import logging
import sys
import time

from dpgviz.core.records import record_count
from dpgviz.core.settings import GenerationSettings
from dpgviz.ipc.client import WorkerClient, run_layout
from dpgviz.ipc.messages import ModelLoaded, RunFinished
from dpgviz.ipc.runner import IDLE_SLEEP_S, latency_stats, raise_failures, wait_for
from dpgviz.ipc.worker import default_threads
from dpgviz.store.step_store import StepStore

log = logging.getLogger(__name__)


def _sync(device: object) -> None:
    import torch

    if getattr(device, "type", "cpu") == "cuda":
        torch.cuda.synchronize()


def _time_bare(loaded: object, length: int, passes: int) -> float:
    import torch

    logits, dev = loaded.adapter.logits, loaded.device
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, loaded.vocab.size, (1, length), generator=gen).to(dev)  # (1, N)
    with torch.inference_mode():
        _sync(dev)
        t0 = time.perf_counter()
        for _ in range(passes):
            logits(tokens)  # (1, N, V)
        _sync(dev)
        return time.perf_counter() - t0


def _time_inprocess(sampler: object, settings: GenerationSettings, info: dict) -> tuple[float, int, int]:
    store = StepStore(run_layout(settings, info), capacity=record_count(settings.steps))
    branch = store.new_branch(settings.to_dict()).id
    t0 = time.perf_counter()
    passes = 0
    for record in sampler.run(settings):
        store.append_record(record, branch)
        passes = record.forward_passes
    return time.perf_counter() - t0, len(store), passes


def _time_worker(client: WorkerClient, settings: GenerationSettings) -> tuple[float, int, list[float]]:
    store = StepStore(run_layout(settings, client.model_info), capacity=record_count(settings.steps))
    branch = store.new_branch(settings.to_dict()).id
    client.latencies_ms.clear()
    t0 = time.perf_counter()
    client.start_run(settings, branch)
    while True:
        events = client.poll(store)
        raise_failures(events)
        if any(isinstance(e, RunFinished) for e in events):
            break
        if not events:
            time.sleep(IDLE_SLEEP_S)
    return time.perf_counter() - t0, len(store), list(client.latencies_ms)


def bench_worker(
    length: int = 256,
    steps: int = 20,
    model: str | None = None,
    meta: str | None = None,
    device: str = "auto",
    as_json: bool = False,
    repeats: int = 3,
    threads: int | None = None,
) -> dict:
    """Time bare forward passes, the in-process sampler and the worker path; print and return the numbers.

    All three use the same torch thread count, `threads` (None: what the worker takes by
    default, every core but one), so the ratios measure the process boundary alone.
    """
    import torch

    from dpgviz.engine.checkpoint import load_model
    from dpgviz.engine.sampler import Sampler

    threads = threads or default_threads()
    torch.set_num_threads(threads)

    loaded = load_model(model, meta, device)  # CheckpointError (a ValueError) names what is wrong
    info = loaded.info()
    settings = GenerationSettings(length=length, steps=steps, strategy="seed", seed=0).capped(info.block_size)
    warmup = GenerationSettings(length=settings.length, steps=2, strategy="seed", seed=1)
    sampler = Sampler(loaded.adapter, loaded.vocab, loaded.device)

    with WorkerClient(threads=threads) as client:
        client.load_model(model, meta, device)
        wait_for(client, (ModelLoaded,))
        _time_inprocess(sampler, warmup, info)
        _time_bare(loaded, settings.length, 2)
        _time_worker(client, warmup)
        # Interleaved, so a change in the machine's other load hits all three alike.
        inprocess, bare, worker = [], [], []
        for _ in range(repeats):
            inprocess.append(_time_inprocess(sampler, settings, info))
            bare.append(_time_bare(loaded, settings.length, inprocess[-1][2]))
            worker.append(_time_worker(client, settings))
    (inprocess_s, n_records, passes), bare_s = min(inprocess), min(bare)
    worker_s, worker_records, latencies = min(worker)
    if worker_records != n_records:
        raise RuntimeError(f"the worker sent {worker_records} records, the in-process sampler made {n_records}")

    result = {
        "model": info.name,
        "params": info.params,
        "device": info.device,
        "length": settings.length,
        "steps": settings.steps,
        "records": n_records,
        "forward_passes": passes,
        "repeats": repeats,
        "threads": torch.get_num_threads(),
        "bare_s": bare_s,
        "inprocess_s": inprocess_s,
        "worker_s": worker_s,
        "bare_steps_per_s": n_records / bare_s,
        "inprocess_steps_per_s": n_records / inprocess_s,
        "worker_steps_per_s": n_records / worker_s,
        "worker_vs_inprocess": inprocess_s / worker_s,
        "inprocess_vs_bare": bare_s / inprocess_s,
        "worker_vs_bare": bare_s / worker_s,
        **latency_stats(latencies),
    }
    if as_json:
        sys.stdout.write(json.dumps(result) + "\n")
    else:
        sys.stdout.write(format_result(result))
    return result


def format_result(r: dict) -> str:
    lines = [
        f"model {r['model']} ({r['params']:,} params) on {r['device']}: N={r['length']}, S={r['steps']}, "
        f"{r['records']} records, {r['forward_passes']} forward passes, best of {r['repeats']}",
        f"  bare forward   {r['bare_steps_per_s']:9.1f} records/s  ({r['bare_s']:.3f} s)",
        f"  in-process     {r['inprocess_steps_per_s']:9.1f} records/s  ({r['inprocess_s']:.3f} s)  "
        f"{r['inprocess_vs_bare']:.3f}x bare",
        f"  worker         {r['worker_steps_per_s']:9.1f} records/s  ({r['worker_s']:.3f} s)  "
        f"{r['worker_vs_inprocess']:.3f}x in-process, {r['worker_vs_bare']:.3f}x bare",
        f"  transport latency: median {r['latency_ms_median']:.2f} ms, p99 {r['latency_ms_p99']:.2f} ms, "
        f"max {r['latency_ms_max']:.2f} ms",
    ]
    return "\n".join(lines) + "\n"
