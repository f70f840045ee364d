"""The window's side of a worker on another machine: a `RunSource` over signed ZeroMQ messages.

    client = RemoteClient(read_target("worker.json")).start()   # returns at once; Hello sent
    every frame: for event in client.poll(store): ...           # Connected, ModelLoaded, StepReady, ...
    client.close()                                              # Bye, then the sockets close

The second `app.source.RunSource` after the local `ipc.client.WorkerClient`, and used the
same way: `start_run` returns a run id whose records `poll` appends to the store, events
come back as the same `ipc.messages` dataclasses. It owns one DEALER socket connected to
`ipc.server.WorkerServer`. `start()` knocks; the server's Challenge brings the nonce that
the Hello and every later message are signed over (ipc.wire's handshake). Commands sent
before the Challenge wait here and go right after the Hello, so a caller may `load_model`
right after `start()`.

What `poll` can end with (once, then the client is closed and `is_alive` is False):
`Disconnected(address, reason)`, a `WorkerDied` that the app shows as "disconnected from
HOST:PORT" with Reconnect, when

  * the server refused this client (a wrong key, another client connected): its reason;
  * no Welcome came within connect_timeout_s (nothing listens there, or not a dpgviz worker);
  * the connection closed after the Welcome (the server stopped or was killed, the network
    dropped: zmq's heartbeats close a silent connection after HEARTBEAT_TIMEOUT_MS), seen
    on the monitor socket within a frame;
  * the server said Bye (it is shutting down, or its worker process died there).

A StepReady's buffers are checked against its run's layout (names, shapes, dtypes) before
anything is appended: a record that does not fit ends its run with a WorkerError.

Waking an idle window: `wait_fds` gives the sockets' zmq.FD. Those are edge-triggered: one
turns readable when the socket's state changed and stays quiet after that until it is read.
So `poll` reads each socket until it is empty (zmq.Again) and then asks zmq.EVENTS, which
re-arms the edge; a message that comes after that makes the FD readable again, and the
frame pacer's waker thread (gui.pacing), asleep on it, wakes the loop.

zmq, numpy and dpgviz.core/ipc/store only: no torch, no dearpygui.
"""

from __future__ import annotations

import collections
import getpass
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable

import numpy as np
import zmq
from zmq.utils.monitor import recv_monitor_message

from dpgviz.core.model_info import ModelInfo
from dpgviz.core.records import RecordLayout
from dpgviz.core.settings import GenerationSettings
from dpgviz.ipc import wire
from dpgviz.ipc.client import WorkerGoneError
from dpgviz.ipc.handshake import bound_signer
from dpgviz.ipc.messages import (
    Command,
    Connected,
    Disconnected,
    Event,
    LoadModel,
    ModelLoaded,
    RunFinished,
    RunStarted,
    RunStopped,
    StartRun,
    StepReady,
    StopRun,
    WorkerError,
)
from dpgviz.ipc.server import HEARTBEAT_IVL_MS, HEARTBEAT_TIMEOUT_MS, PING_S, boot_id
from dpgviz.ipc.wire import Bye, Challenge, Credit, Hello, Knock, Ping, Refused, Target, Welcome, read_target
from dpgviz.store.step_store import StepStore

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0  # Hello -> Welcome; a wrong key or a busy worker answers at once
REFUSED_S = 0.5  # a refused connect (zmq retries it every 100 ms) is given up after this, not CONNECT_TIMEOUT_S
MAX_FRAME_BYTES = 1 << 30  # a 65,536-token record is 2 MiB; an explorer batch's rows are small
RCVHWM = 1000  # messages; the server's credit window (ipc.server.WINDOW_BYTES) bounds the bytes


class RemoteClient:
    """A RunSource whose worker runs on another machine (see the module docstring)."""

    def __init__(self, target: Target, connect_timeout_s: float = CONNECT_TIMEOUT_S) -> None:
        self.target = target
        self.address = target.address
        self.connect_timeout_s = connect_timeout_s
        self.signer = wire.Signer(target.key)  # the key alone: the Knock, the Challenge
        self._bound: wire.Signer | None = None  # ... over the Challenge's nonce: everything after
        self._unsent: list = []  # commands given before the Challenge came
        self._who = ""
        self.model_info: ModelInfo | None = None  # from the last ModelLoaded
        self.active_run: int | None = None
        self.host: str | None = None  # the worker host's name, from its Welcome
        self.models: list = []  # what the worker offers (core.discovery.ModelEntry, paths there)
        # Per record, worker wrote it -> appended here; only when both share a clock (same boot).
        self.latencies_ms: collections.deque[float] = collections.deque(maxlen=1 << 16)
        self._ctx: zmq.Context | None = None
        self._sock: zmq.Socket | None = None
        self._monitor: zmq.Socket | None = None
        self._fds: tuple[int, ...] = ()
        self._session = secrets.token_hex(16)
        self._n_out = 0
        self._n_in = 0
        self._is_welcomed = False
        self._same_clock = False
        self._t_started = 0.0
        self._last_sent = 0.0
        self._retries = 0
        self._next_run_id = 1
        self._runs: dict[int, _RemoteRun] = {}
        self._taken_bytes = 0  # of records, appended here (the server's flow control: Credit)
        self._credited = 0  # ... as last told the server
        self.n_dropped = 0  # messages dropped as invalid

    # -- lifetime ----------------------------------------------------------------------------
    def start(self) -> RemoteClient:
        """Connect and say Hello (returns at once: the Welcome, or the refusal, comes through poll)."""
        if self._sock is not None:
            raise RuntimeError("already started")
        self._ctx = zmq.Context()
        sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 300)  # a last Bye goes out on close
        sock.setsockopt(zmq.RCVHWM, RCVHWM)
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_BYTES)
        sock.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_IVL_MS)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_MS)
        sock.setsockopt(zmq.HEARTBEAT_TTL, HEARTBEAT_TIMEOUT_MS)
        if ":" in self.target.host:
            sock.setsockopt(zmq.IPV6, 1)
        self._monitor = sock.get_monitor_socket(
            zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_CONNECT_RETRIED
        )
        sock.connect(wire.tcp_url(self.target.host, self.target.port))
        self._sock = sock
        self._fds = (sock.getsockopt(zmq.FD), self._monitor.getsockopt(zmq.FD))  # read once: the waker thread
        self._t_started = time.monotonic()  # uses only these ints, never the sockets
        self._who = f"{_user()}@{socket.gethostname()} pid {os.getpid()}"
        self._send_signed(Knock(), self.signer)
        log.debug("connecting to the worker at %s", self.address)
        return self

    @property
    def is_alive(self) -> bool:
        return self._sock is not None

    @property
    def is_connected(self) -> bool:
        """The worker welcomed this client (and the link has not dropped since)."""
        return self._sock is not None and self._is_welcomed

    def wait_fds(self) -> tuple[int, ...]:
        return self._fds

    def close(self) -> None:
        """Say Bye (the server stops this client's run at once) and close the sockets."""
        if self._sock is None:
            return
        if self._is_welcomed:
            try:
                self._send(Bye("the window closed"))
            except WorkerGoneError:
                pass
        self._release()

    def _release(self) -> None:
        if self._monitor is not None:
            self._sock.disable_monitor()
            self._monitor.close(linger=0)
        self._sock.close()
        self._ctx.term()
        self._sock = self._monitor = self._ctx = None
        self._fds = ()
        self._unsent.clear()
        self._runs.clear()
        self.active_run = None
        self.model_info = None

    def __enter__(self) -> RemoteClient:
        return self.start() if self._sock is None else self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- commands ----------------------------------------------------------------------------
    def send(self, command: Command) -> None:
        self._send(command)

    def _send(self, message: object) -> None:
        if self._sock is None:
            raise WorkerGoneError(f"not connected to the worker at {self.address}; reconnect")
        if self._bound is None:
            self._unsent.append(message)  # signed and sent once the Challenge brings the nonce
            return
        self._send_signed(message, self._bound)

    def _send_signed(self, message: object, signer: wire.Signer) -> None:
        self._n_out += 1
        try:
            self._sock.send_multipart(wire.encode(message, signer, self._session, self._n_out), zmq.NOBLOCK, copy=False)
        except zmq.Again:
            raise WorkerGoneError(f"the worker at {self.address} takes no more messages; reconnect") from None
        self._last_sent = time.monotonic()

    def load_model(self, path=None, meta=None, device: str = "auto", dtype: str = "auto") -> None:
        """As WorkerClient.load_model; the path is on the worker's host (None: the worker's own model)."""
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
        run_id = self._next_run_id
        self._send(StartRun(run_id, settings.to_dict(), tokens, iteration, protected, edited, emit_initial))
        self._next_run_id += 1
        self._runs[run_id] = _RemoteRun(run_id, branch)
        self.active_run = run_id
        return run_id

    def stop(self, run_id: int | None = None) -> None:
        run_id = self.active_run if run_id is None else run_id
        if run_id is not None and self.is_alive:
            self._send(StopRun(run_id))

    def run_branch(self, run_id: int) -> str | None:
        run = self._runs.get(run_id)
        return run.branch if run is not None else None

    # -- events ------------------------------------------------------------------------------
    def poll(self, store: StepStore | None = None) -> list[Event]:
        """Every event that arrived, without blocking; StepReady records go into `store`."""
        if self._sock is None:
            return []
        events: list[Event] = []
        lost = self._read_monitor()
        while lost is None:
            try:
                frames = self._sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            lost = self._on_frames(frames, store, events)
        if lost is None and self._taken_bytes > self._credited:
            try:
                self._send(Credit(self._taken_bytes))  # room for more records (ipc.server.WINDOW_BYTES)
                self._credited = self._taken_bytes
            except WorkerGoneError:
                lost = "the connection is stuck (nothing can be sent)"
        if lost is None:
            lost = self._check_time()
        if lost is not None:
            log.debug("disconnected from %s: %s", self.address, lost)  # the caller says it (one line)
            self._release()
            events.append(Disconnected(None, self.address, lost))
            return events
        self._sock.getsockopt(zmq.EVENTS)  # re-arm the edge-triggered FD (module docstring)
        # ... and the monitor's: its next event (a refused connect's retry, every 100 ms) wakes an idle
        # window, so a refusal is said REFUSED_S after Connect, not at the pacer's next 2 s heartbeat.
        self._monitor.getsockopt(zmq.EVENTS)
        return events

    def _check_time(self) -> str | None:
        now = time.monotonic()
        waited_s = now - self._t_started
        # Refused (zmq retried the connect): said after REFUSED_S, not after the whole timeout.
        if not self._is_welcomed and (waited_s > self.connect_timeout_s or (self._retries and waited_s > REFUSED_S)):
            if self._retries:
                # A reason is a clause the caller ends ("Disconnected from A: REASON."): no closing punctuation.
                return f"nothing answers at {self.address} (connection refused): start `python main.py worker` there"
            wait_s = self.connect_timeout_s
            return f"no answer from {self.address} within {wait_s:.0f} s (not a dpgviz worker, or an older one)"
        if self._is_welcomed and now - self._last_sent > PING_S:
            try:
                self._send(Ping())  # the server drops a client it has not heard from in a while
            except WorkerGoneError:
                return "the connection is stuck (nothing can be sent)"
        return None

    def _read_monitor(self) -> str | None:
        while True:
            try:
                event = recv_monitor_message(self._monitor, zmq.NOBLOCK)
            except zmq.Again:
                return None
            kind = event["event"]
            if kind == zmq.EVENT_CONNECT_RETRIED:
                self._retries += 1
            elif kind == zmq.EVENT_DISCONNECTED and self._is_welcomed:
                return "the connection dropped"  # the server stopped or was killed, or the network is down

    def _on_frames(self, frames: list, store: StepStore | None, out: list[Event]) -> str | None:
        """Handle one message; a reason when the link is over, else None."""
        if self._bound is None:
            signer, accepted = self.signer, wire.CHALLENGE_TYPES
        else:
            signer, accepted = self._bound, _AFTER_HELLO
        try:
            got = wire.decode(frames, signer, accepted)
        except wire.BadSignature:
            if not self._is_welcomed:
                return f"wrong key: the worker at {self.address} signs with another key"
            self.n_dropped += 1
            log.warning("dropped a message with a bad signature from %s", self.address)
            return None
        except wire.WireError as exc:
            self.n_dropped += 1
            log.warning("dropped a malformed message from %s: %s", self.address, exc)
            return None
        if got.session != self._session or got.n <= self._n_in:
            self.n_dropped += 1
            log.warning("dropped a message of another session, or replayed (n %d after %d)", got.n, self._n_in)
            return None
        self._n_in = got.n
        for msg in got.messages:
            if isinstance(msg, Challenge):
                return self._on_challenge(msg)
            if isinstance(msg, Refused):
                return f"refused: {msg.reason}"
            if isinstance(msg, Bye):
                return msg.reason or "the worker ended the session"
            if isinstance(msg, Welcome):
                self._on_welcome(msg, out)
            elif not self._is_welcomed:
                log.warning("dropped a %s before the Welcome", type(msg).__name__)
            elif not isinstance(msg, Ping):
                out.extend(self._on_event(msg, store))
        return None

    def _on_challenge(self, msg: Challenge) -> str | None:
        """Sign over the connection's nonce from now on: the Hello, then what waited for it."""
        try:
            self._bound = bound_signer(self.signer, msg)
        except wire.WireError as exc:
            return f"the answer from {self.address} is not a dpgviz worker's ({exc})"
        self._n_in = 0  # the server numbers the session's messages from 1
        try:
            self._send(Hello(self._session, self._who))
            for message in self._unsent:
                self._send(message)
        except WorkerGoneError as exc:
            return str(exc)
        finally:
            self._unsent.clear()
        return None

    def _on_welcome(self, msg: Welcome, out: list[Event]) -> None:
        from dpgviz.core.discovery import ModelEntry

        self._is_welcomed = True
        self.host = msg.host
        self.models = [m for m in msg.models if isinstance(m, ModelEntry)]
        self._same_clock = bool(msg.boot_id) and msg.boot_id == boot_id()
        log.debug("connected to the worker at %s (%s), %d models offered", self.address, msg.host, len(self.models))
        out.append(Connected(self.address, msg.host, list(self.models)))

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
        run = self._runs.setdefault(event.run_id, _RemoteRun(event.run_id, StepStore.ROOT))
        try:
            run.layout = RecordLayout.from_dict(event.layout)
        except (KeyError, TypeError, ValueError) as exc:
            return self._fail_run(run, f"run {event.run_id} started with a bad layout {event.layout!r}: {exc}")
        run.fields = run.layout.token_fields()
        if store is not None and store.layout != run.layout:
            return [event, *self._fail_run(
                run, f"run {event.run_id} has layout {run.layout} but the store holds {store.layout}; stopping it"
            )]
        return [event]

    def _on_step(self, event: StepReady, store: StepStore | None) -> list[Event]:
        run = self._runs.get(event.run_id)
        if run is None or run.is_failed:
            return []  # a run this client stopped (or gave up on): its last records still come
        problem = run.check(event)
        if problem is not None:
            return self._fail_run(run, f"run {event.run_id}, record {event.seq}: {problem}")
        run.n_taken += 1
        self._taken_bytes += sum(a.nbytes for a in event.arrays.values())
        if store is not None and run.branch not in store.branches:  # deleted, or another store took its place
            log.info("run %d: its branch %r is gone; stopping it", event.run_id, run.branch)
            run.is_failed = True  # quietly: what still comes for it is dropped (as a stopped run's)
            self.stop(run.run_id)
            return []
        if store is None:
            event.arrays = {k: np.array(v) for k, v in event.arrays.items()}  # own memory, writable
        else:
            event.row = store.append(event.scalars, event.arrays, run.branch)
            event.arrays = None  # the frames go now
        if self._same_clock:
            self.latencies_ms.append((time.monotonic() - event.t_written) * 1e3)
        return [event]

    def _fail_run(self, run: _RemoteRun, message: str) -> list[Event]:
        log.error(message)
        run.is_failed = True
        try:
            self.stop(run.run_id)
        except WorkerGoneError:
            pass
        if self.active_run == run.run_id:
            self.active_run = None
        return [WorkerError(message, "", run.run_id)]

    def _end_run(self, run_id: int) -> None:
        self._runs.pop(run_id, None)
        if self.active_run == run_id:
            self.active_run = None


_AFTER_HELLO = wire.after_hello(wire.EVENT_TYPES)  # what a welcomed client takes


class _RemoteRun:
    """A run this client started: where its records go and what they must look like."""

    def __init__(self, run_id: int, branch: str) -> None:
        self.run_id, self.branch = run_id, branch
        self.layout: RecordLayout | None = None
        self.fields: dict = {}
        self.n_taken = 0
        self.is_failed = False

    def check(self, event: StepReady) -> str | None:
        """Why this record cannot be appended (None: it fits the run's layout, in order)."""
        if self.layout is None:
            return "arrived before its RunStarted"
        if event.seq != self.n_taken:
            return f"expected record {self.n_taken}"
        arrays = event.arrays
        if not isinstance(arrays, dict) or set(arrays) != set(self.fields):
            return f"arrays {sorted(arrays) if isinstance(arrays, dict) else arrays!r}, expected {sorted(self.fields)}"
        for name, (shape, dtype) in self.fields.items():
            arr = arrays[name]
            if not isinstance(arr, np.ndarray) or arr.shape != shape or arr.dtype != dtype:
                return f"{name} is {getattr(arr, 'shape', '?')} {getattr(arr, 'dtype', '?')}, expected {shape} {dtype}"
        if not isinstance(event.scalars, dict) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in event.scalars.values()
        ):
            return f"scalars {event.scalars!r} are not integers"
        return None


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "someone"


def remote_factory(where: str, key: str | None = None) -> Callable[[], RemoteClient]:
    """A source factory for `app.runs.Runs` (`--connect FILE|HOST:PORT [--key K]`): each call reads
    the connection file again, since a restarted worker writes its new port and key there, and
    starts a client (ValueError in one line when the file or the key is wrong)."""

    def connect() -> RemoteClient:
        return RemoteClient(read_target(where, key)).start()

    return connect
