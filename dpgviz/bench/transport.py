"""`python main.py bench transport`: records per second through shared memory and through TCP.

Both ways carry the same synthetic records (bench.synthetic, cycled) from a worker process
that does no model work, so what is timed is the transport alone, with the real code at
both ends:

    shm   synthetic worker -> ring + pipe -> WorkerClient.poll(store)          (one machine)
    tcp   synthetic worker -> ring + pipe -> WorkerServer (its own process) -> signed zmq
          frames over 127.0.0.1 -> RemoteClient.poll(store)                     (the remote path)

The synthetic worker (`synthetic_worker_main`) speaks the worker's protocol: LoadModel ->
ModelLoaded, StartRun -> RunStarted, a StepReady per record written into the run's ring
(waiting for a free slot as ipc.worker does), RunFinished. The timed span is start_run ->
RunFinished appended, best of `repeats` (timeit's convention), the two ways interleaved.

`tcp_window_side` times the client alone: a run queued on it (within the server's credit
window) while it sleeps, then drained. On one machine the `tcp` rate also pays the server's
relay on the same cores; across two machines the window's side is what is left.

A 65,536-token record's latency (written in the worker -> appended to the store) is timed
apart, with records spaced GAP_S apart so each one crosses an empty pipeline: the tcp
number is what one step of a long run costs on the way to a window over loopback.

The server runs in a spawned process (not a daemon: it starts its own worker) and binds
127.0.0.1 only; everything stops by itself. numpy, zmq and dpgviz.ipc; no torch.
"""

from __future__ import annotations

import functools
import json
import logging
import multiprocessing as mp
import os
import select
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from dpgviz.core.model_info import ModelInfo
from dpgviz.core.records import RecordLayout, StepRecord, record_count
from dpgviz.core.settings import GenerationSettings
from dpgviz.ipc.messages import LoadModel, ModelLoaded, RunFinished, RunStarted, Shutdown, StartRun, StepReady
from dpgviz.ipc.ring import Ring, default_n_slots, ring_name

log = logging.getLogger(__name__)

BIG_TOKENS = 65536
BIG_RECORDS = 11  # record_count(5)
GAP_S = 0.05  # between big records: each one timed alone
QUEUE_WAIT_S = 2.0  # the server relays > 20,000 records/s here when nothing else runs: a run is queued by then
SETUP_TIMEOUT_S = 60.0
RUN_TIMEOUT_S = 300.0


def synthetic_info() -> ModelInfo:
    from dpgviz.bench.synthetic import synthetic_vocab

    vocab = synthetic_vocab()
    return ModelInfo(name="synthetic", path=None, block_size=BIG_TOKENS, params=0, itos=vocab.itos, n_ids=vocab.n_ids)


def _cycle(layout: RecordLayout) -> list[StepRecord]:
    """A few records of a synthetic run in this layout, to send round and round."""
    from dpgviz.bench.synthetic import synthetic_store

    store = synthetic_store(layout.seq_len, steps=4)
    return [store.record(int(r)) for r in store.rows(store.branch_order[0])]


def synthetic_worker_main(
    commands, events, parent_pid: int, session: str, max_slots: int = 256, log_level: int = logging.WARNING,
    threads: int | None = None, gap_s: float = 0.0,
) -> None:
    """A worker without a model: ipc.worker's protocol, records from bench.synthetic (module docstring)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    info = synthetic_info()
    ready = select.poll()
    ready.register(commands.fileno(), select.POLLIN)
    while True:
        if not ready.poll(500):
            if os.getppid() != parent_pid:
                return
            continue
        try:
            cmd = commands.recv()
        except (EOFError, OSError):
            return
        if isinstance(cmd, Shutdown):
            return
        if isinstance(cmd, LoadModel):
            events.send(ModelLoaded(info))
        elif isinstance(cmd, StartRun):
            _stream(cmd, events, ready, session, max_slots, info, gap_s)


def _stream(cmd: StartRun, events, ready: select.poll, session: str, max_slots: int, info: ModelInfo, gap_s: float) -> None:
    t0 = time.monotonic()
    settings = GenerationSettings.from_dict(cmd.settings)
    layout = RecordLayout(seq_len=settings.length, top_k=settings.top_k, n_ids=info.n_ids)
    records = _cycle(layout)
    n = record_count(settings.steps)
    ring = Ring.create(ring_name(session, cmd.run_id), layout, default_n_slots(layout, max_slots=max_slots))
    try:
        events.send(RunStarted(cmd.run_id, layout.to_dict(), ring.name, ring.n_slots))
        for seq in range(n):
            slot = seq % ring.n_slots
            delay = 0.001
            while not ring.is_writable(slot):  # as ipc.worker waits: 1 ms, doubling to 5 ms
                ready.poll(delay * 1000)
                delay = min(delay * 2, 0.005)
            record = records[seq % len(records)]
            ring.write(slot, seq, record.arrays())
            events.send(StepReady(cmd.run_id, slot, seq, record.scalars(), time.monotonic()))
            if not ring.is_unlinked and ring.is_attached:
                ring.unlink()
            if gap_s:
                time.sleep(gap_s)
        events.send(RunFinished(cmd.run_id, n, 0, time.monotonic() - t0))
        deadline = time.monotonic() + 5.0
        while not ring.is_attached and time.monotonic() < deadline:  # the name goes once the reader has it
            time.sleep(0.01)
    finally:
        ring.close()
        ring.unlink()


def _synthetic_client(gap_s: float = 0.0):
    from dpgviz.ipc.client import WorkerClient

    return WorkerClient(target=functools.partial(synthetic_worker_main, gap_s=gap_s)).start()


def serve_synthetic(connection_file: str, gap_s: float = 0.0, max_s: float = RUN_TIMEOUT_S * 4) -> None:
    """A WorkerServer on 127.0.0.1 (any free port) relaying a synthetic worker (its own process)."""
    from dpgviz.ipc import wire
    from dpgviz.ipc.server import ServerOptions, WorkerServer

    logging.basicConfig(level=logging.WARNING)
    key = wire.new_key()
    server = WorkerServer("127.0.0.1", 0, key, ServerOptions(preload=False), lambda: _synthetic_client(gap_s))
    signal.signal(signal.SIGTERM, lambda *a: server.stop())
    wire.write_connection_file(connection_file, "127.0.0.1", server.port, key)
    server.serve(max_s=max_s)


def _wait(client, kinds: tuple[type, ...], store=None, timeout_s: float = SETUP_TIMEOUT_S):
    from dpgviz.ipc.runner import raise_failures

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        events = client.poll(store)
        raise_failures(events)
        for event in events:
            if isinstance(event, kinds):
                return event
        if not events:
            time.sleep(0.0005)
    raise TimeoutError(f"no {kinds[0].__name__} within {timeout_s} s")


def _time_run(client, tokens: int, records: int) -> tuple[float, int, list[float]]:
    """(seconds, records appended, latencies) of one run: start_run -> RunFinished, every record in a store."""
    from dpgviz.store.step_store import StepStore

    settings = GenerationSettings(length=tokens, steps=max(1, (records - 1) // 2))
    layout = RecordLayout(seq_len=tokens, top_k=settings.top_k, n_ids=client.model_info.n_ids)
    store = StepStore(layout, capacity=record_count(settings.steps))
    branch = store.new_branch(settings.to_dict()).id
    client.latencies_ms.clear()
    t0 = time.perf_counter()
    client.start_run(settings, branch)
    _wait(client, (RunFinished,), store, RUN_TIMEOUT_S)
    return time.perf_counter() - t0, len(store), list(client.latencies_ms)


class _Remote:
    """A synthetic server in its own process and a RemoteClient connected to it."""

    def __init__(self, gap_s: float = 0.0) -> None:
        from dpgviz.ipc.remote import RemoteClient
        from dpgviz.ipc.wire import read_target

        self.folder = tempfile.TemporaryDirectory(prefix="dpgviz-bench-")
        path = Path(self.folder.name) / "worker.json"
        self.process = mp.get_context("spawn").Process(target=serve_synthetic, args=(str(path), gap_s), daemon=False)
        self.process.start()
        deadline = time.monotonic() + SETUP_TIMEOUT_S
        while not path.is_file():
            if time.monotonic() > deadline or not self.process.is_alive():
                self.close()
                raise RuntimeError("the synthetic server did not start")
            time.sleep(0.02)
        self.client = RemoteClient(read_target(str(path))).start()
        self.client.load_model(None)
        _wait(self.client, (ModelLoaded,))

    def close(self) -> None:
        if getattr(self, "client", None) is not None:
            self.client.close()
        if self.process.is_alive():
            self.process.terminate()
        self.process.join(10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)
        self.folder.cleanup()


def _time_drain(client, tokens: int, records: int) -> float:
    """Records/s the window's side alone takes in (verify, decode, append) when the records are already
    queued on it: the run is sent while the client sleeps (within the server's credit window), then drained.
    On one machine the `tcp` rate also pays the server's relay, which shares the cores; across two it does not."""
    from dpgviz.ipc.server import WINDOW_BYTES
    from dpgviz.store.step_store import StepStore

    bytes_per_record = RecordLayout(seq_len=tokens, top_k=8, n_ids=client.model_info.n_ids).bytes_per_record
    steps = max(1, (min(records, WINDOW_BYTES // bytes_per_record - 2) - 1) // 2)
    settings = GenerationSettings(length=tokens, steps=steps)
    store = StepStore(RecordLayout(seq_len=tokens, top_k=settings.top_k, n_ids=client.model_info.n_ids),
                      capacity=record_count(steps))
    client.start_run(settings, store.new_branch(settings.to_dict()).id)
    time.sleep(QUEUE_WAIT_S)
    t0 = time.perf_counter()
    _wait(client, (RunFinished,), store, RUN_TIMEOUT_S)
    return len(store) / (time.perf_counter() - t0)


def _latency(client, tokens: int, records: int) -> dict:
    _, _, lat = _time_run(client, tokens, records)
    arr = np.asarray(lat)
    return {"latency_ms_median": float(np.median(arr)), "latency_ms_max": float(arr.max())} if arr.size else {}


def measure(tokens: int = 1024, records: int = 1001, repeats: int = 3, big: bool = True) -> dict:
    """Time both ways (module docstring); the result dict `main` prints."""
    layout = RecordLayout(seq_len=tokens, top_k=8, n_ids=synthetic_info().n_ids)
    mb = layout.bytes_per_record / 1e6
    shm = _synthetic_client()
    remote = None
    try:
        shm.load_model(None)
        _wait(shm, (ModelLoaded,))
        remote = _Remote()
        _time_run(shm, tokens, 21)  # warm-up: imports, first allocations, the server's first ring
        _time_run(remote.client, tokens, 21)
        timed: dict[str, list] = {"shm": [], "tcp": []}
        for _ in range(repeats):
            timed["shm"].append(_time_run(shm, tokens, records))
            timed["tcp"].append(_time_run(remote.client, tokens, records))
        result: dict = {"tokens": tokens, "records": records, "bytes_per_record": layout.bytes_per_record,
                        "repeats": repeats}
        for way, runs in timed.items():
            seconds, n, lat = min(runs)
            if n != record_count(max(1, (records - 1) // 2)):
                raise RuntimeError(f"{way}: {n} records arrived")
            result[way] = {
                "records_per_s": n / seconds, "mb_per_s": n * mb / seconds, "seconds": seconds,
                "latency_ms_median": float(np.median(lat)) if lat else None,
            }
        result["tcp_vs_shm"] = result["tcp"]["records_per_s"] / result["shm"]["records_per_s"]
        drained = max(_time_drain(remote.client, tokens, records) for _ in range(repeats))
        result["tcp_window_side"] = {"records_per_s": drained, "mb_per_s": drained * mb}
    finally:
        if remote is not None:
            remote.close()
        shm.close()
    if big:
        result["record_65536"] = _big_latencies()
    return result


def _big_latencies() -> dict:
    """Each way, one 65,536-token record at a time: written in the worker -> appended in the store."""
    out = {}
    shm = _synthetic_client(GAP_S)
    try:
        shm.load_model(None)
        _wait(shm, (ModelLoaded,))
        out["shm"] = _latency(shm, BIG_TOKENS, BIG_RECORDS)
    finally:
        shm.close()
    remote = _Remote(GAP_S)
    try:
        out["tcp"] = _latency(remote.client, BIG_TOKENS, BIG_RECORDS)
    finally:
        remote.close()
    return out


def main(tokens: int = 1024, records: int = 1001, as_json: bool = False, repeats: int = 3) -> dict:
    result = measure(tokens, records, repeats)
    if as_json:
        sys.stdout.write(json.dumps(result) + "\n")
        return result
    sys.stdout.write(
        f"{records} records of {tokens} tokens ({result['bytes_per_record'] / 1024:.1f} KiB each), best of {repeats}\n"
    )
    for way in ("shm", "tcp"):
        r = result[way]
        sys.stdout.write(f"  {way}  {r['records_per_s']:9.1f} records/s  {r['mb_per_s']:8.1f} MB/s\n")
    sys.stdout.write(f"  tcp / shm: {result['tcp_vs_shm']:.2f}x records/s (goal >= 0.5x)\n")
    side = result["tcp_window_side"]
    sys.stdout.write(f"  tcp, the window's side alone (records queued): {side['records_per_s']:9.1f} records/s\n")
    big = result.get("record_65536", {})
    for way in ("shm", "tcp"):
        if way in big:
            sys.stdout.write(
                f"  one {BIG_TOKENS}-token record, {way}: median {big[way]['latency_ms_median']:.1f} ms, "
                f"max {big[way]['latency_ms_max']:.1f} ms (goal tcp <= 20 ms)\n"
            )
    return result
