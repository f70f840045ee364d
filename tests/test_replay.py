"""A session recorded off the wire and sent again on a new connection gets nothing, from both servers
that take signed frames: `python main.py worker` (ipc.server) and a window listening for recorded
runs (ipc.listen, through the workspace's LiveRuns); and hostile frames from a sender without the
key leave each server up with no traceback in its log.

The recording: every multipart message this process sends while a real client talks to the
server (zmq.Socket.send_multipart, wrapped), byte for byte. The replay: those messages, in order,
on a new DEALER connection after the real client left. Real processes and sockets; 127.0.0.1
only; every wait is bounded; everything started is stopped.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import pytest

zmq = pytest.importorskip("zmq")

from dpgviz.core.records import RecordLayout, record_count  # noqa: E402
from dpgviz.core.settings import GenerationSettings  # noqa: E402
from dpgviz.ipc import wire  # noqa: E402
from dpgviz.ipc.handshake import bound_signer  # noqa: E402
from dpgviz.ipc.messages import Connected, ModelLoaded, RunFinished  # noqa: E402
from dpgviz.store.step_store import StepStore  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from remote_data import Server, wait_event  # noqa: E402

REPLY_WAIT_S = 3.0  # the servers answer in milliseconds; what has not come by then is not coming
VOCAB = [*"abcdefghijklmnopqrstuvwxyz", " ", "."]
MASK = len(VOCAB)


class Tap:
    """Every message sockets of this process send while it is on, as the bytes of each frame."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.messages: list[list[bytes]] = []
        self.is_on = True
        send = zmq.Socket.send_multipart

        def recording(sock, frames, *args, **kwargs):
            if self.is_on and sock.type == zmq.DEALER:  # the client's side only
                self.messages.append([memoryview(f).cast("B").tobytes() for f in frames])
            return send(sock, frames, *args, **kwargs)

        monkeypatch.setattr(zmq.Socket, "send_multipart", recording)

    def types(self) -> list[str]:
        return [t for m in self.messages for t in claimed_types(m)]


def claimed_types(frames: list) -> list[str]:
    """The message types a message's header names (read without its signature: the test's eyes only)."""
    try:
        return [item["type"] for item in json.loads(bytes(frames[2]))["items"]]
    except (IndexError, ValueError, KeyError, TypeError):
        return ["?"]


class Replayer:
    """A new DEALER connection to 127.0.0.1:port that sends what it is given and collects the answers."""

    def __init__(self, port: int) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(f"tcp://127.0.0.1:{port}")

    def send(self, messages: list[list[bytes]], pause_s: float = 0.01) -> list[str]:
        """Send each message in order; the types of everything that came back within REPLY_WAIT_S."""
        for frames in messages:
            self.sock.send_multipart(frames)
            time.sleep(pause_s)  # as a client sends: one after another, not all in one burst
        replies: list[str] = []
        deadline = time.monotonic() + REPLY_WAIT_S
        while time.monotonic() < deadline:
            if self.sock.poll(50):
                replies.extend(claimed_types(self.sock.recv_multipart()))
        return replies

    def send_nested_after_challenge(self, key: str) -> None:
        """Knock with the key, then a 'Hello' signed over this connection's nonce whose header nests
        100,000 deep: the one path where such bytes pass the signature (a key holder's)."""
        signer = wire.Signer(key)
        self.sock.send_multipart(wire.encode(wire.Knock(), signer, "s", 1))
        assert self.sock.poll(int(REPLY_WAIT_S * 1000))
        challenge = wire.decode(self.sock.recv_multipart(), signer, wire.CHALLENGE_TYPES).messages[0]
        body = [b"[" * 100_000]
        self.sock.send_multipart([wire.MAGIC, bound_signer(signer, challenge).sign(body), *body])
        time.sleep(0.2)

    def close(self) -> None:
        self.sock.close()
        self.ctx.term()


def hostile_messages(key: str) -> list[list[bytes]]:
    """Frames a sender without the key can make (`key` signs one more, re-signed after a change)."""
    nested = b"[" * 4000  # under 4 KB: read by unverified_type, which answers a wrong key's Knock
    deep_object = b'{"items":' * 1300 + b"1" + b"}" * 1300
    knock = wire.encode(wire.Knock(), wire.Signer(key), "s", 1)
    knock[2] = b'{"session":"s","n":1,"items":[{"type":"Knock","fields":{"x":' + b"[" * 500 + b"]" * 500 + b"}}]}"
    knock[1] = wire.Signer(key).sign(knock[2:])  # signed: it reaches decode, which refuses the field
    return [
        [wire.MAGIC, b"0" * 64, nested],
        [wire.MAGIC, b"0" * 64, deep_object],
        [wire.MAGIC, b"0" * 64, b'{"session":"","n":1,"items":[{"type":"Knock","fields":' + b"[" * 3000 + b"}]}"],
        [wire.MAGIC, b"0" * 64, b'{"n":' + b"9" * 5000 + b"}"],  # an int too long for Python to read
        [wire.MAGIC, b"0" * 64, b"\xff\xfe" * 100],  # not UTF-8
        [wire.MAGIC, b"0" * 64, b"{}", *[b"x"] * 300],  # more frames than a message has
        [wire.MAGIC],
        [b"", b"", b""],
        knock,
    ]


def assert_no_traceback(text: str) -> None:
    assert "Traceback" not in text, text[-3000:]


# -- the remote worker ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    from model_data import tiny_checkpoint

    folder = tmp_path_factory.mktemp("replay")
    tiny = tiny_checkpoint(folder / "models" / "tiny")
    s = Server(folder, "--model", str(tiny), "--no-preload")  # a model loads only when a client asks
    yield s
    s.stop()


def one_run(server: Server) -> int:
    """A real client: connect, load the worker's model, one run, Bye. Returns the records it got."""
    client = server.client()
    try:
        wait_event(client, (Connected,))
        client.load_model(None)
        wait_event(client, (ModelLoaded,))
        settings = GenerationSettings(length=32, steps=3, seed=4)
        store = StepStore(RecordLayout(seq_len=32, top_k=settings.top_k, n_ids=client.model_info.n_ids),
                          capacity=record_count(settings.steps))
        client.start_run(settings, store.new_branch(settings.to_dict()).id)
        wait_event(client, (RunFinished,), store)
        return len(store)
    finally:
        client.close()


def test_a_worker_session_replayed_on_a_new_connection_gets_no_welcome_and_starts_nothing(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    tap = Tap(monkeypatch)
    assert one_run(server) == record_count(3)
    tap.is_on = False
    sent = tap.types()
    assert sent[:2] == ["Knock", "Hello"] and "LoadModel" in sent and "StartRun" in sent and sent[-1] == "Bye", sent
    time.sleep(0.5)  # the real client is gone: the worker waits for the next
    replayer = Replayer(server.target.port)
    try:
        without_bye = [m for m in tap.messages if claimed_types(m) != ["Bye"]]  # stay, as an attacker would
        replies = replayer.send(without_bye)
        # At most the Challenge its Knock asks for; no Welcome, no ModelLoading/Loaded, no RunStarted, no StepReady.
        assert set(replies) <= {"Challenge"}, replies
        log = server.log.read_text()
        assert log.count(" connected") == 1, log  # only the real client was ever welcomed
        assert "not signed for this connection's challenge" in log
        # The replay's connection did not become the worker's client: the next client is served.
        assert one_run(server) == record_count(3)
    finally:
        replayer.close()


def test_hostile_frames_leave_the_worker_up_with_no_traceback(server: Server) -> None:
    sender = Replayer(server.target.port)
    try:
        replies = sender.send(hostile_messages(server.target.key), pause_s=0.0)
    finally:
        sender.close()
    assert set(replies) <= {"Refused", "Challenge"}, replies  # only a Knock is answered
    keyed = Replayer(server.target.port)
    try:
        keyed.send_nested_after_challenge(server.target.key)
    finally:
        keyed.close()
    assert server.proc.poll() is None
    assert one_run(server) == record_count(3)
    assert_no_traceback(server.log.read_text())


# -- a window listening for recorded runs ---------------------------------------------------------------
def pump(ws, until, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not until() and time.monotonic() < deadline:
        ws.update(0.01)
        time.sleep(0.01)
    ws.update(0.01)


def test_a_recorded_stream_replayed_on_a_new_connection_injects_no_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dpgviz.app.workspace import Workspace
    from dpgviz.record import Recorder

    monkeypatch.setenv("DPGVIZ_CACHE_DIR", str(tmp_path / "cache"))  # the listener's key file goes here
    with Workspace() as ws:
        assert ws.live.listen("127.0.0.1:0")
        port = ws.live.listener.port
        tap = Tap(monkeypatch)
        with Recorder(VOCAB, MASK, 8, path=tmp_path / "real.dpgviz", model="toy", connect=ws.live.address) as rec:
            assert rec.is_streaming
            x = np.full((1, 8), MASK)
            rec.log(x)
            for i in range(4):
                x[:, i] = i
                rec.log(x)
        tap.is_on = False
        sent = tap.types()
        assert sent[:2] == ["Knock", "Hello"] and "RunOpened" in sent and "RecordsLogged" in sent, sent
        pump(ws, lambda: ws.store is not None and len(ws.store) == 5 and not ws.live.is_live)
        store, branches = ws.store, list(ws.store.branch_order)
        assert len(store) == 5 and len(branches) == 1

        replayer = Replayer(port)
        try:
            without_close = [m for m in tap.messages if claimed_types(m) != ["RunClosed"]]
            replies = replayer.send(without_close)
            pump(ws, lambda: False, timeout_s=1.0)  # whatever the listener took is in the store by now
        finally:
            replayer.close()
        assert ws.store is store and list(store.branch_order) == branches and len(store) == 5  # no run injected
        assert set(replies) <= {"Challenge"}, replies
        assert not ws.live.is_live and ws.live.listener.n_dropped >= len(without_close) - 1  # all but the Knock


def test_hostile_frames_leave_the_listener_up_with_no_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from dpgviz.ipc.listen import RunListener
    from dpgviz.record.stream import RecordStream

    monkeypatch.setenv("DPGVIZ_CACHE_DIR", str(tmp_path / "cache"))
    listener = RunListener("127.0.0.1", 0).start()
    try:
        with caplog.at_level(logging.DEBUG, logger="dpgviz"):
            sender = Replayer(listener.port)
            try:
                sender.send(hostile_messages(listener.key), pause_s=0.0)
            finally:
                sender.close()
            keyed = Replayer(listener.port)
            try:
                keyed.send_nested_after_challenge(listener.key)
            finally:
                keyed.close()
            assert listener.is_alive
            stream = RecordStream.connect(f"127.0.0.1:{listener.port}")  # the key from its connection file
            assert stream.is_open, stream.reason
            stream.close()
    finally:
        listener.close()
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records if r.exc_info]
    assert_no_traceback(caplog.text)
