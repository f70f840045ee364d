"""A recorder's live link to a window: `connect="HOST:PORT"` or `spawn=True` (the protocol: ipc.listen).

    stream = RecordStream.connect("127.0.0.1:5560")   # or RecordStream.spawn()
    stream.send(RunOpened(...)); stream.send(RecordsLogged(...)); stream.close()

One DEALER socket, signed frames (ipc.wire). `connect` knocks, signs its Hello and every
later message over the nonce of the window's Challenge (ipc.wire's handshake), and waits up
to CONNECT_WAIT_S for the window's Welcome; `spawn` first starts `python -m dpgviz
--listen-runs 127.0.0.1:PORT` (this interpreter, a free port, the key in $DPGVIZ_KEY) and
waits up to SPAWN_WAIT_S, the time a window takes to come up, or until that process exits.

The key for connect="HOST:PORT": $DPGVIZ_KEY, else the connection file a window listening on
this machine wrote (ipc.listen.connection_path). `connect` may also name a connection file.

Never in the caller's way: when no window answers, a send times out (SEND_TIMEOUT_S: the
window stopped reading) or the window says Bye, the stream logs one warning, closes, and
`is_open` turns False; the recorder goes on writing its file. Sends block only while zmq's
queue is full (SNDHWM messages the window has not read yet).

zmq (imported when a stream opens), numpy and dpgviz.ipc only: no torch.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from dpgviz.ipc import wire
from dpgviz.ipc.handshake import bound_signer
from dpgviz.ipc.listen import KEY_ENV, TO_RECORDER, connection_path, new_session, who_am_i
from dpgviz.ipc.wire import Bye, Challenge, Hello, Knock, Refused, Target, Welcome

log = logging.getLogger(__name__)

CONNECT_WAIT_S = 5.0  # a listening window answers a Hello in milliseconds
SPAWN_WAIT_S = 60.0  # Python, dearpygui and the first frame: a few seconds, more on a loaded machine
SEND_TIMEOUT_S = 10.0  # the window took nothing for this long: it is stuck or gone
SNDHWM = 10_000  # messages queued for a window that reads slower than the sampler logs


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now (the spawned window binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def resolve_target(where: str, key: str | None = None) -> Target:
    """`connect=` -> where to connect and the key (module docstring); ValueError in one line."""
    key = key or os.environ.get(KEY_ENV)
    path = Path(where).expanduser()
    if path.is_file() or where.endswith(".json"):
        return wire.read_target(where, key)
    from dpgviz.ipc.listen import parse_listen

    host, port = parse_listen(where)
    if not key and wire.is_loopback(host) and connection_path(port).is_file():
        return wire.read_target(str(connection_path(port)))
    if not key:
        raise ValueError(
            f"connecting to {where} needs the window's key: set ${KEY_ENV}, or pass its connection file "
            f"(the window prints it; on this machine {connection_path(port)})"
        )
    return Target(host, port, key)


class RecordStream:
    """The recorder's DEALER socket to a listening window (see the module docstring)."""

    def __init__(self, target: Target, proc: subprocess.Popen | None = None) -> None:
        import zmq

        self.target, self.proc = target, proc
        self.signer = wire.Signer(target.key)  # the key alone until the Challenge, then over its nonce
        self.is_bound = False
        self.session = new_session()
        self.n_out = 0
        self.n_in = 0
        self.is_open = False
        self.reason = ""  # why it closed, for the recorder's one warning
        self._zmq = zmq
        self._ctx = zmq.Context()
        sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 2000)  # the last records and RunClosed go out on close
        sock.setsockopt(zmq.SNDHWM, SNDHWM)
        sock.setsockopt(zmq.SNDTIMEO, int(SEND_TIMEOUT_S * 1000))
        if ":" in target.host:
            sock.setsockopt(zmq.IPV6, 1)
        sock.connect(wire.tcp_url(target.host, target.port))
        self._sock: Any = sock

    # -- opening ----------------------------------------------------------------------------------
    @classmethod
    def connect(cls, where: str, key: str | None = None, wait_s: float | None = None) -> RecordStream:
        """Connect to a listening window and wait for its Welcome (default CONNECT_WAIT_S); `is_open` says whether it came."""
        stream = cls(resolve_target(where, key))
        stream._hello(CONNECT_WAIT_S if wait_s is None else wait_s)
        return stream

    @classmethod
    def spawn(cls, wait_s: float | None = None) -> RecordStream:
        """Start a window listening on a free 127.0.0.1 port, as rr.spawn starts rerun's viewer, and connect."""
        port = free_port()
        key = wire.new_key()
        root = str(Path(__file__).resolve().parents[2])  # where dpgviz imports from, for an uninstalled checkout
        env = {**os.environ, KEY_ENV: key, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
        cmd = [sys.executable, "-m", "dpgviz", "--listen-runs", f"127.0.0.1:{port}"]
        proc = subprocess.Popen(  # outlives us; it logs to its log file (Help > About), not our pipes
            cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.info("started a dpgviz window (pid %d) listening on 127.0.0.1:%d", proc.pid, port)
        stream = cls(Target("127.0.0.1", port, key), proc)
        stream._hello(SPAWN_WAIT_S if wait_s is None else wait_s)
        return stream

    def _hello(self, wait_s: float) -> None:
        self._send(Knock())
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if self._sock.poll(100):
                reply = self._receive()
                if isinstance(reply, Challenge):
                    try:
                        self.signer, self.is_bound, self.n_in = bound_signer(self.signer, reply), True, 0
                    except wire.WireError as exc:
                        self.reason = f"the answer from {self.target.address} is not a dpgviz window's ({exc})"
                        break
                    self._send(Hello(self.session, who_am_i()))
                elif isinstance(reply, Welcome) and self.is_bound:
                    self.is_open = True
                    log.info("streaming to the dpgviz window at %s", self.target.address)
                    return
                elif reply is not None:  # Refused, wrong key, Bye
                    break
            if self.proc is not None and self.proc.poll() is not None:
                self.reason = f"the window it started exited (status {self.proc.returncode})"
                break
        self.reason = self.reason or f"no dpgviz window answered at {self.target.address} within {wait_s:.0f} s"
        self._release(linger=0)  # the Hello nobody took must not hold the close

    def _receive(self) -> object | None:
        """One message from the window (None: nothing usable); sets `reason` for a refusal or a Bye."""
        frames = self._sock.recv_multipart(self._zmq.NOBLOCK, copy=False)
        try:
            got = wire.decode(frames, self.signer, TO_RECORDER if self.is_bound else wire.CHALLENGE_TYPES)
        except wire.BadSignature:
            self.reason = f"wrong key: the window at {self.target.address} signs with another key"
            return Refused(self.reason)
        except wire.WireError as exc:
            log.debug("dropped a malformed message from the window: %s", exc)
            return None
        if got.session != self.session or got.n <= self.n_in:
            return None
        self.n_in = got.n
        msg = got.messages[0]
        if isinstance(msg, Refused):
            self.reason = self.reason or f"refused: {msg.reason}"
        elif isinstance(msg, Bye):
            self.reason = f"the window at {self.target.address} closed ({msg.reason or 'bye'})"
        return msg

    # -- streaming --------------------------------------------------------------------------------
    def send(self, message: object) -> bool:
        """Send one message (its arrays without a copy); False once the link is over (see `reason`)."""
        if not self.is_open:
            return False
        while self._sock.poll(0):  # a Bye from a window that closed
            if isinstance(self._receive(), (Bye, Refused)):
                self._release()
                return False
        try:
            self._send(message)
        except self._zmq.Again:
            self.reason = f"the window at {self.target.address} took nothing for {SEND_TIMEOUT_S:.0f} s"
            self._release(linger=0)
            return False
        return True

    def _send(self, message: object) -> None:
        self.n_out += 1
        self._sock.send_multipart(wire.encode(message, self.signer, self.session, self.n_out), copy=False)

    def close(self, last: object | None = None) -> None:
        """Send `last` (RunClosed) if the link is up, then close; the spawned window stays open."""
        if self.is_open and last is not None:
            self.send(last)
        self._release()

    def _release(self, linger: int | None = None) -> None:
        self.is_open = False
        if self._sock is not None:
            self._sock.close(linger=linger)
            self._ctx.term()
            self._sock = None
