"""A worker on another machine, here over 127.0.0.1: `python main.py worker` and its clients.

Real processes: the server is the CLI command (it starts the real worker), clients are the
CLI or `ipc.remote.RemoteClient` in this process. Every socket binds or connects to
127.0.0.1 only; every wait is bounded; every server started is stopped.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import zmq

from dpgviz.core.records import RecordLayout, record_count
from dpgviz.core.settings import GenerationSettings
from dpgviz.ipc import wire
from dpgviz.ipc.messages import (
    Connected,
    Disconnected,
    ModelLoaded,
    RunFinished,
    RunStopped,
    StepReady,
    WorkerError,
)
from dpgviz.ipc.remote import RemoteClient
from dpgviz.store.step_store import StepStore

sys.path.insert(0, str(Path(__file__).parent))
from remote_data import EVENT_TIMEOUT_S, Server, wait_event

ROOT = Path(__file__).resolve().parents[1]


def run_once(client: RemoteClient, settings: GenerationSettings) -> StepStore:
    info = client.model_info
    store = StepStore(RecordLayout(seq_len=settings.length, top_k=settings.top_k, n_ids=info.n_ids),
                      capacity=record_count(settings.steps))
    branch = store.new_branch(settings.to_dict()).id
    client.start_run(settings, branch)
    wait_event(client, (RunFinished,), store)
    assert len(store) == record_count(settings.steps)
    return store


def connected(server: Server) -> RemoteClient:
    """A client the server welcomed, with the server's own model loaded."""
    client = server.client()
    wait_event(client, (Connected,))
    client.load_model(None)
    wait_event(client, (ModelLoaded,))
    return client


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    sys.path.insert(0, str(Path(__file__).parent))
    from model_data import tiny_checkpoint

    return tiny_checkpoint(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny: Path):
    """A server that offers the tiny model (its default) and the embedded one; tests that kill it make their own."""
    s = Server(tmp_path_factory.mktemp("server"), "--model", str(tiny), "--models-dir", str(tiny.parent.parent))
    yield s
    s.stop()


@pytest.fixture
def own_server(tmp_path: Path, tiny: Path):
    servers: list[Server] = []

    def start(*args: str, name: str = "worker.json") -> Server:
        servers.append(Server(tmp_path, "--model", str(tiny), *args, name=name))
        return servers[-1]

    yield start
    for s in servers:
        s.stop()


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "main.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


# -- done-when checks ----------------------------------------------------------------------------
@pytest.mark.slow
def test_generate_over_the_network_prints_exactly_what_a_local_generate_prints(tmp_path: Path) -> None:
    server = Server(tmp_path)  # the embedded default model, as a local generate uses
    try:
        assert server.command == f"python main.py --connect {server.path}"
        args = ["--length", "256", "--steps", "8", "--seed", "1", "--json"]
        remote = cli("generate", "--connect", str(server.path), *args)
        local = cli("generate", *args)
        assert remote.returncode == 0, remote.stderr
        assert local.returncode == 0, local.stderr
        assert remote.stdout == local.stdout
        assert '"final_text"' in remote.stdout
    finally:
        server.stop()


def test_a_wrong_key_exits_nonzero_in_one_line_and_the_server_still_serves(server: Server) -> None:
    bad = cli("generate", "--connect", server.target.address, "--key", "0" * 64, "--length", "64", "--steps", "2",
              timeout=120)
    assert bad.returncode != 0
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and "wrong key" in lines[0], bad.stderr
    good = cli("models", "--connect", str(server.path), "--json", timeout=120)
    assert good.returncode == 0, good.stderr
    client = connected(server)
    try:
        run_once(client, GenerationSettings(length=32, steps=2))
    finally:
        client.close()


def _garbage(rng: np.random.Generator, valid: list, i: int) -> list:
    """The i-th bad message: random bytes, a cut-off valid one, a mis-signed one, or a re-signed lie."""
    kind = i % 5
    if kind == 0:
        return [rng.bytes(int(rng.integers(0, 300))) for _ in range(int(rng.integers(1, 6)))]
    if kind == 1:
        cut = int(rng.integers(1, len(valid)))
        return [bytes(f) for f in valid[:cut]] + ([bytes(valid[cut])[: int(rng.integers(0, 20))]] if cut < len(valid) else [])
    if kind == 2:
        return wire.encode(wire.Hello(f"spoof{i}"), wire.Signer(rng.bytes(32).hex()), f"s{i}", 1)  # another key
    if kind == 3:
        frames = [bytes(f) for f in valid]
        frames[2] = frames[2].replace(b'"n":1', b'"n":2')  # changed after signing
        return frames
    return [wire.MAGIC, rng.bytes(64).hex()[:64].encode(), rng.bytes(int(rng.integers(0, 2000)))]


def test_two_hundred_bad_messages_leave_the_server_up_and_serving(server: Server) -> None:
    rng = np.random.default_rng(0)
    valid = wire.encode(wire.Hello("valid-looking"), wire.Signer(server.target.key), "abc", 1)
    ctx = zmq.Context()
    try:
        socks = []
        for i in range(200):  # bounded: 200 messages over a few sockets, then done
            if i % 40 == 0:
                sock = ctx.socket(zmq.DEALER)
                sock.setsockopt(zmq.LINGER, 1000)
                sock.connect(wire.tcp_url("127.0.0.1", server.target.port))
                socks.append(sock)
            sock.send_multipart(_garbage(rng, valid, i))
        with socket.create_connection(("127.0.0.1", server.target.port), timeout=5) as raw:  # not even zmq
            raw.sendall(rng.bytes(4096))
        time.sleep(1.0)
        for sock in socks:
            sock.close()
    finally:
        ctx.term()
    assert server.proc.poll() is None
    client = connected(server)
    try:
        store = run_once(client, GenerationSettings(length=48, steps=3, seed=2))
        assert store.kind(int(store.rows(store.branch_order[0])[-1])) == "final"
    finally:
        client.close()
    log = server.log.read_text()
    assert "sent no challenge" in log  # each dropped with one line: no Knock, so no nonce to sign over
    assert "Traceback" not in log


def test_a_second_client_is_refused_in_one_line(server: Server) -> None:
    first = connected(server)
    try:
        second = server.client()
        event = wait_event(second, (Disconnected,))
        assert not second.is_alive
        assert "refused" in event.reason and "one client at a time" in event.reason and "\n" not in event.reason
    finally:
        first.close()
    third = connected(server)  # the first said Bye: the worker is free again
    third.close()


def test_a_model_the_worker_does_not_offer_is_refused(server: Server, tmp_path: Path) -> None:
    client = connected(server)
    try:
        client.load_model(str(tmp_path / "evil.py"))  # an adapter file would run code on the host
        deadline, error = time.monotonic() + EVENT_TIMEOUT_S, None
        while error is None and time.monotonic() < deadline:
            error = next((e for e in client.poll() if isinstance(e, WorkerError)), None)
            time.sleep(0.01)
        assert error is not None and "not one of the models this worker offers" in error.message
    finally:
        client.close()


def test_models_connect_lists_the_hosts_models(server: Server, tiny: Path) -> None:
    out = cli("models", "--connect", str(server.path), "--json", timeout=120)
    assert out.returncode == 0, out.stderr
    import json

    models = json.loads(out.stdout)["models"]
    assert models[0]["path"] == str(tiny)  # its --model first: the worker's own choice
    assert not any(m["default"] for m in models)  # with --model, the embedded default is not offered


# -- faults ---------------------------------------------------------------------------------------
CLIENT_SCRIPT = """
import sys, time
from dpgviz.core.records import RecordLayout, record_count
from dpgviz.core.settings import GenerationSettings
from dpgviz.ipc.messages import ModelLoaded, StepReady
from dpgviz.ipc.remote import RemoteClient
from dpgviz.ipc.wire import read_target
from dpgviz.store.step_store import StepStore
c = RemoteClient(read_target(sys.argv[1])).start()
c.load_model(None)
deadline = time.monotonic() + 60
while c.model_info is None and time.monotonic() < deadline:
    c.poll(); time.sleep(0.01)
s = GenerationSettings(length=128, steps=2000)
store = StepStore(RecordLayout(seq_len=128, top_k=8, n_ids=c.model_info.n_ids), capacity=record_count(2000))
c.start_run(s, store.new_branch({}).id)
while time.monotonic() < deadline:
    if any(isinstance(e, StepReady) for e in c.poll(store)) and len(store) > 5:
        print("running", flush=True)
        time.sleep(60)
    time.sleep(0.01)
"""


def test_a_client_killed_mid_run_frees_the_worker_for_the_next(own_server) -> None:
    server = own_server()
    proc = subprocess.Popen([sys.executable, "-c", CLIENT_SCRIPT, str(server.path)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "running", proc.stderr.read() if proc.poll() is not None else ""
        os.kill(proc.pid, signal.SIGKILL)  # no Bye: its connection just closes
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)
    deadline = time.monotonic() + 20
    while "its run is stopped" not in server.log.read_text():
        assert time.monotonic() < deadline, server.log.read_text()
        time.sleep(0.05)
    client = connected(server)
    try:
        run_once(client, GenerationSettings(length=40, steps=2))
    finally:
        client.close()
    assert server.proc.poll() is None


def test_a_worker_killed_on_the_host_looks_like_a_dropped_connection(own_server) -> None:
    server = own_server()
    client = connected(server)
    store = StepStore(RecordLayout(seq_len=128, top_k=8, n_ids=client.model_info.n_ids), capacity=64)
    client.start_run(GenerationSettings(length=128, steps=2000), store.new_branch({}).id)
    wait_event(client, (StepReady,), store)
    workers = server.children()  # the run's worker (and any the server has not reaped yet)
    assert workers
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    event = wait_event(client, (Disconnected,), store)
    assert "worker process" in event.reason and "stopped" in event.reason
    assert event.address == server.target.address and not client.is_alive
    assert len(store) > 0  # what came before stays
    again = connected(server)  # the server started a new worker for the next client
    try:
        run_once(again, GenerationSettings(length=32, steps=2))
    finally:
        again.close()


def test_a_killed_server_is_a_disconnect_within_seconds(own_server) -> None:
    server = own_server()
    client = connected(server)
    os.kill(server.proc.pid, signal.SIGKILL)
    t0 = time.monotonic()
    event = wait_event(client, (Disconnected,), timeout_s=15)
    assert time.monotonic() - t0 < 15 and "dropped" in event.reason
    for pid in server.children():  # its worker notices its parent is gone (ipc.worker); do not wait on it here
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_stopping_a_remote_run_ends_it(server: Server) -> None:
    client = connected(server)
    try:
        store = StepStore(RecordLayout(seq_len=128, top_k=8, n_ids=client.model_info.n_ids), capacity=64)
        run_id = client.start_run(GenerationSettings(length=128, steps=2000), store.new_branch({}).id)
        wait_event(client, (StepReady,), store)
        client.stop(run_id)
        stopped = wait_event(client, (RunStopped,), store)
        assert stopped.run_id == run_id and stopped.n_records == len(store)
    finally:
        client.close()


def test_binding_another_address_needs_allow_remote() -> None:
    out = cli("worker", "--listen", "0.0.0.0:0", timeout=60)  # refused before anything is bound
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "--allow-remote" in lines[0] and "SSH" in lines[0]


def test_the_server_side_imports_neither_dearpygui_nor_torch() -> None:
    code = (
        "import sys\n"
        "import dpgviz.cli, dpgviz.cli.worker, dpgviz.ipc.server, dpgviz.ipc.remote\n"
        "bad = [m for m in ('dearpygui', 'torch') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


def test_the_remote_client_is_a_run_source() -> None:
    from dpgviz.app.source import RunSource

    assert isinstance(RemoteClient(wire.Target("127.0.0.1", 1, "k")), RunSource)


# -- the workspace on a remote worker (the window's logic, without a window) ----------------------
def _until(ws, condition: Callable[[], bool], timeout_s: float = EVENT_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, [n for n in ws.take_notices()]
        ws.update(0.01)
        time.sleep(0.005)


def test_the_workspace_keeps_its_records_when_the_server_dies_and_reconnects_to_a_new_one(own_server) -> None:
    from dpgviz.app.notices import ModelsListed, Said
    from dpgviz.app.workspace import Workspace

    first = own_server()
    with Workspace() as ws:
        assert ws.runs.connect(str(first.path))
        _until(ws, lambda: ws.model_info is not None)
        notices = ws.take_notices()
        listed = [n for n in notices if isinstance(n, ModelsListed)]
        assert listed and listed[0].where == first.target.address
        assert ws.runs.start(GenerationSettings(length=128, steps=2000))
        _until(ws, lambda: ws.n_records() >= 5)
        os.kill(first.proc.pid, signal.SIGKILL)
        _until(ws, lambda: ws.runs.disconnected is not None, 20)
        kept = ws.n_records()
        said = [n.text for n in ws.take_notices() if isinstance(n, Said)]
        assert any(f"Disconnected from {first.target.address}" in t for t in said), said
        assert ws.runs.restart_label() == "Reconnect" and not ws.is_running and kept >= 5
        second = own_server()  # a new server writes the same connection file: a new port and key
        assert second.target.port != first.target.port
        assert ws.runs.restart_source()
        _until(ws, lambda: ws.model_info is not None)
        assert ws.runs.remote == second.target.address and ws.runs.restart_label() is None
        assert ws.n_records() == kept
        assert ws.runs.start(GenerationSettings(length=64, steps=3))
        _until(ws, lambda: not ws.is_running)
        assert ws.n_records() == record_count(3)  # a new layout: the new run shows on its own


def test_bench_transport_measures_both_ways_small() -> None:
    from dpgviz.bench.transport import measure
    from dpgviz.cli import build_parser

    args = build_parser().parse_args(["bench", "transport", "--tokens", "64", "--records", "41", "--json"])
    assert (args.bench, args.tokens, args.records, args.json) == ("transport", 64, 41, True)
    result = measure(tokens=64, records=41, repeats=1, big=False)
    for way in ("shm", "tcp", "tcp_window_side"):
        assert result[way]["records_per_s"] > 0 and result[way]["mb_per_s"] > 0, result
    assert result["tcp_vs_shm"] == result["tcp"]["records_per_s"] / result["shm"]["records_per_s"]


def test_deleting_the_running_branch_stops_the_remote_run_and_drops_its_late_records(server: Server) -> None:
    from dpgviz.app.workspace import Workspace

    with Workspace() as ws:
        assert ws.runs.connect(str(server.path))
        _until(ws, lambda: ws.model_info is not None)
        settings = GenerationSettings(length=64, steps=3)
        assert ws.runs.start(settings)
        _until(ws, lambda: not ws.is_running)
        kept = list(ws.store.branches)
        ws.view.record = 2
        assert ws.runs.continue_from(GenerationSettings(length=64, steps=3000, seed=4))
        branch = ws.runs.live_branch
        _until(ws, lambda: len(ws.store.history(branch)) > 10)
        assert ws.edits.delete_branch(branch)  # records already relayed are still on the way
        _until(ws, lambda: not ws.is_running)  # update() drops them without a KeyError
        for _ in range(20):
            ws.update(0.01)
        assert branch not in ws.store.branches and list(ws.store.branches) == kept
        assert ws.runs.start(settings)  # the server still serves this client
        _until(ws, lambda: not ws.is_running)
        assert len(ws.store.history(ws.store.branch_order[-1])) == record_count(settings.steps)


# -- addresses, the startup line, a refused connection's reason --------------------------------------
def test_worker_listen_takes_a_bare_port_as_127_0_0_1_and_names_its_own_pid(tmp_path: Path) -> None:
    from dpgviz.record.stream import free_port

    port, path, log = free_port(), tmp_path / "w.json", tmp_path / "w.log"
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "main.py", "worker", "--listen", str(port), "--connection-file", str(path),
                                 "--no-preload"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
        try:
            deadline = time.monotonic() + 60
            while not path.is_file() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert path.is_file(), log.read_text()  # before: "5601 is reachable from other machines", exit 2
            target = wire.read_target(str(path))
            assert (target.host, target.port) == ("127.0.0.1", port)
            while "dpgviz worker on" not in log.read_text() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)  # the line comes just after the file
            first = log.read_text().splitlines()[0]
            assert f"dpgviz worker on 127.0.0.1:{port} (pid {proc.pid}," in first, first  # its own pid, not its child's
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    assert not path.exists()  # the key goes with the worker


def test_listen_runs_on_another_machines_address_needs_allow_remote(tmp_path: Path) -> None:
    from dpgviz.app.workspace import Workspace
    from dpgviz.ipc.listen import RunListener

    out = cli("--listen-runs", "0.0.0.0:5560", timeout=60)  # refused before the window opens or anything binds
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "--allow-remote" in lines[0] and "SSH" in lines[0], out.stderr
    with pytest.raises(ValueError, match="--allow-remote"):
        RunListener("0.0.0.0", 5560)
    with Workspace() as ws:  # File > Listen for recorded runs... the same
        assert not ws.live.listen("0.0.0.0:5560") and ws.live.listener is None
        assert "--allow-remote" in ws.notices.messages[-1].text
    assert "not encrypted" in wire.remote_warning("0.0.0.0", 5560) and wire.remote_warning("127.0.0.1", 5560) is None


def test_a_refused_connection_says_why_in_a_clause_the_window_can_end(tmp_path: Path) -> None:
    from dpgviz.record.stream import free_port

    client = RemoteClient(wire.Target("127.0.0.1", free_port(), "ab" * 32), connect_timeout_s=1.0).start()
    try:
        event = wait_event(client, (Disconnected,), timeout_s=20)
    finally:
        client.close()
    assert "nothing answers" in event.reason and "python main.py worker" in event.reason
    assert not event.reason.endswith(("?", ".", "!")), event.reason  # the window says "...: REASON." ("?." before)


# -- a listening window stopped with SIGTERM --------------------------------------------------------
@pytest.mark.gui
@pytest.mark.skipif(not os.environ.get("DISPLAY"), reason="needs an X display (run under xvfb-run -a)")
def test_a_listening_window_stopped_with_sigterm_removes_its_key_and_keeps_its_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dpgviz.core.paths import recovery_path
    from dpgviz.ipc.listen import connection_path
    from dpgviz.record import Recorder
    from dpgviz.record.stream import free_port
    from dpgviz.store.session_open import open_session

    monkeypatch.setenv("DPGVIZ_CACHE_DIR", str(tmp_path / "cache"))  # the window's key file and journal go here
    port = free_port()
    key_file, journal = connection_path(port), recovery_path()

    def journaled() -> int:
        try:
            with open_session(journal) as session:
                return len(session.store)
        except (OSError, ValueError):
            return 0

    with open(tmp_path / "window.log", "w") as err:
        window = subprocess.Popen([sys.executable, "main.py", "--listen-runs", str(port)], cwd=ROOT,
                                  stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 60
        while not key_file.is_file() and window.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert key_file.is_file(), (tmp_path / "window.log").read_text()
        vocab = [*"abcdefgh"]
        with Recorder(vocab, len(vocab), 8, path=tmp_path / "run.dpgviz", connect=f"127.0.0.1:{port}") as rec:
            assert rec.is_streaming
            x = np.full(8, len(vocab))
            rec.log(x)
            for i in range(4):
                x[i] = i
                rec.log(x)
        deadline = time.monotonic() + 30
        while journaled() < 5 and time.monotonic() < deadline:  # the window's unsaved records, journaled
            time.sleep(0.1)
        assert journaled() == 5
        window.send_signal(signal.SIGTERM)
        assert window.wait(30) == -signal.SIGTERM  # it ends as SIGTERM ends a process, nothing else run
    finally:
        if window.poll() is None:
            window.kill()
            window.wait(10)
    assert not key_file.exists()  # before: left behind, a key pointing at nothing
    assert journaled() == 5  # kept for Recover at the next start, as after a SIGKILL
