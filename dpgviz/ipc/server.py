"""The worker for a window on another machine: the local worker here, relayed over signed ZeroMQ.

    python main.py worker --listen 127.0.0.1:5557 [--connection-file F] [--model PATH] ...

    window (ipc.remote.RemoteClient)  --tcp, signed frames (ipc.wire)-->  WorkerServer
                                      <--                                 | WorkerClient: pipe + ring
                                                                          v
                                                                 worker process (torch, the model)

`WorkerServer` binds one ROUTER socket and runs, on this host, the machinery the window runs
on one machine: a `WorkerClient` that spawns the real worker, records through shared memory.
It relays. A client's commands go to `WorkerClient.send / start_run` (run ids mapped both
ways: each side numbers its own runs). The events of `WorkerClient.poll(None)`, each
StepReady with its arrays copied out of the ring, go back as signed multipart messages whose
array buffers are sent as they lie, without another copy. When the client reads slower than
the model writes, the relay stops polling the worker once WINDOW_BYTES of records are sent
and not yet taken (the client's Credit messages say what it took), the ring fills, and
the worker waits: no record is dropped. Records that are ready together go in one message
(up to BATCH_ITEMS / BATCH_BYTES).

What the server trusts: a message signed with the key over the nonce it drew for that
connection (ipc.wire's handshake: Knock, Challenge, Hello; ipc.handshake), checked before
anything else is read, from the one client whose Hello it accepted, in that client's
session, with a growing message number. A session recorded off the wire and sent again on
another connection is signed over another nonce: dropped, unanswered. It still checks every
command: a LoadModel or an explorer job names only models this worker lists (`models`,
sent in Welcome: its --model, the embedded default, checkpoints and Hugging Face folders
under ./out and --models-dir), so a key does not let a client run an adapter file or read
a path the host did not offer. The client's "auto" device and dtype become the server's
--device / --dtype; --device-map and --max-memory apply to every load. A model loaded before
(by an earlier client) is answered from memory when asked for again, so a reconnecting
window does not wait for a reload.

Note [Remote faults]
~~~~~~~~~~~~~~~~~~~~
(As ipc.worker's Note [Worker shutdown] for the local pair.) Each fault ends in a known state:

  * Garbage, a bad signature, a malformed header, wrong buffer sizes, a message of a type
    this side does not take, a message signed for another connection (replayed), an
    out-of-session or repeated one: dropped with one log line (a Knock with a wrong key is
    answered Refused, signed with our key, so the client can say "wrong key" rather than
    time out). Any exception handling one message is logged and the loop goes on: the
    server stays up.
  * A second client while one is connected: answered Refused in one line, never served. The
    current client is probed first (a Ping with ROUTER_MANDATORY fails at once for a peer
    whose connection closed), so a window that vanished does not lock the worker.
  * The client goes away: a Bye (the window closed), its TCP connection closing (the monitor
    socket's DISCONNECTED, then a probe), zmq heartbeats failing on a silent network
    (HEARTBEAT_TIMEOUT_MS), or no message for CLIENT_SILENCE_S (the client pings every
    PING_S; the server probes an idle client every IDLE_PROBE_S). The server stops its run
    and explorer job, drops what is queued for it, frees the run's ring when the worker
    reports the stop, and takes the next client. The model stays loaded.
  * The worker process dies here (killed, crash, OOM): the client is sent Bye with the exit
    code and dropped, which the window shows as a dropped connection with Reconnect; a new
    worker is started for the next client.
  * SIGINT / SIGTERM: Bye to the client, the worker shut down (WorkerClient.close), the
    connection file removed, the sockets closed.

zmq, numpy and dpgviz.core/ipc; never dearpygui; torch only in the worker process.
"""

from __future__ import annotations

import collections
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from dpgviz.core.discovery import ModelEntry, find_checkpoints, given_model_entry
from dpgviz.core.settings import GenerationSettings
from dpgviz.ipc import wire
from dpgviz.ipc.client import WorkerClient
from dpgviz.ipc.handshake import Handshake
from dpgviz.ipc.messages import (
    Command,
    Event,
    ExploreBatch,
    ExploreFailed,
    ExploreSample,
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
    WorkerDied,
    WorkerError,
)
from dpgviz.ipc.wire import Bye, Credit, Hello, Ping, Refused, Welcome, WireError

log = logging.getLogger(__name__)

POLL_MS = 100  # the loop's longest sleep: a stop request, a probe or a silent client is seen within it
WINDOW_BYTES = 32 << 20  # records sent and not yet taken by the client (its Credit), as a ring's budget:
# past it the relay stops reading the worker, the ring fills and the worker waits (back-pressure in bytes)
SNDHWM = 1000  # messages; the window above is what bounds memory (zmq's queues count messages, not bytes)
RETRY_MS = 1  # a full queue is tried again this soon (a ROUTER cannot say when it has room)
MAX_FRAME_BYTES = wire.MAX_HEADER_BYTES + (1 << 20)  # zmq drops a peer that sends a bigger frame
HEARTBEAT_IVL_MS = 1000  # zmq's own heartbeats (ZMTP 3.1): a dead peer on a silent network ...
HEARTBEAT_TIMEOUT_MS = 5000  # ... is disconnected after this long without an answer
CLIENT_SILENCE_S = 15.0  # no message from the client for this long: it is gone (it pings every PING_S)
PING_S = 1.0  # the client sends a Ping after this long without sending anything ...
IDLE_PROBE_S = 5.0  # ... the server probes an idle client this often (a Ping: it wakes an idle window)
PROBE_S = 1.0  # after a DISCONNECTED, probe the client for this long (the socket learns of it a little later)
OUTBOX_MAX = 2  # messages encoded and waiting for the socket before the relay stops reading the worker
BATCH_ITEMS = 64  # events per message at most: records that were ready together travel together ...
BATCH_BYTES = 256 << 10  # ... up to about this many bytes of records (a 65,536-token record is 2 MiB)


def boot_id() -> str:
    """This boot's id (Linux): two processes with the same one share CLOCK_MONOTONIC."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def server_socket(ctx: zmq.Context, host: str, port: int) -> tuple[zmq.Socket, int]:
    """A ROUTER bound to host:port (0: any free port), set up as the module docstring says; (socket, port)."""
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.ROUTER_MANDATORY, 1)  # a send to a gone peer raises EHOSTUNREACH instead of vanishing
    sock.setsockopt(zmq.SNDHWM, SNDHWM)
    sock.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_BYTES)
    sock.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_IVL_MS)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_MS)
    sock.setsockopt(zmq.HEARTBEAT_TTL, HEARTBEAT_TIMEOUT_MS)
    sock.setsockopt(zmq.LINGER, 500)  # a last Bye goes out on close
    if ":" in host:
        sock.setsockopt(zmq.IPV6, 1)
    if port == 0:
        port = sock.bind_to_random_port(wire.tcp_url(host, 0).rsplit(":", 1)[0])
    else:
        sock.bind(wire.tcp_url(host, port))
    return sock, port


@dataclass
class ServerOptions:
    """What the host decides (the `worker` command's flags); clients cannot change these."""

    model: str | None = None  # LoadModel(path=None) loads this (None: the embedded default)
    meta: str | None = None
    models_dir: str | None = None
    device: str = "auto"  # a client's "auto" device means this
    dtype: str = "auto"
    device_map: str | None = None  # "auto": Hugging Face models spread over GPUs, CPU, disk
    max_memory: dict | None = None
    preload: bool = True  # load `model` at start, so the first client finds it ready


@dataclass
class _Client:
    identity: bytes
    session: str
    who: str
    signer: wire.Signer  # over the nonce of its connection's Challenge
    since: float = field(default_factory=time.time)
    n_in: int = 0  # the last message number received
    n_out: int = 0
    sent_bytes: int = 0  # of records, queued to it
    taken_bytes: int = 0  # ... and taken, by its last Credit
    last_heard: float = field(default_factory=time.monotonic)
    last_sent: float = field(default_factory=time.monotonic)


class WorkerServer:
    """One ROUTER socket, one local worker, at most one client (see the module docstring)."""

    def __init__(
        self,
        host: str,
        port: int,
        key: str,
        options: ServerOptions | None = None,
        source_factory: Callable[[], WorkerClient] | None = None,
    ) -> None:
        self.signer = wire.Signer(key)
        self.handshake = Handshake(self.signer, "wrong key: the key does not match this worker's")
        self.options = options or ServerOptions()
        self.source_factory = source_factory or (lambda: WorkerClient(threads=os.cpu_count() or 1).start())
        self.ctx = zmq.Context()
        self.sock, self.port = server_socket(self.ctx, host, port)
        self.host = host
        self.monitor = self.sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        self.hostname = socket.gethostname()
        self.boot_id = boot_id()
        self.client: _Client | None = None
        self.outbox: collections.deque[list] = collections.deque()
        self.run_ids: dict[int, int] = {}  # local run id -> the client's
        self.local_ids: dict[int, int] = {}  # the client's run id -> local
        self.explore_job: int | None = None  # the client's explorer job in progress
        self.load_key: tuple | None = None  # (path, meta, device, dtype) being loaded
        self.loaded_key: tuple | None = None  # ... and loaded, with its ModelLoaded
        self.loaded_info: Any = None
        self.probe_until = 0.0
        self._poller: zmq.Poller | None = None
        self._polled_fds: tuple[int, ...] = ()
        self.blocked_until = 0.0  # the client's queue was full until about then
        self.n_dropped = 0  # messages dropped as invalid (tests, the log)
        self.n_served = 0  # clients accepted so far
        self._stop = False
        self.models: list[ModelEntry] = []
        self.source = self.source_factory()
        self.rescan()
        if self.options.preload:
            self._load(LoadModel(None), reply=False)

    # -- the models offered -----------------------------------------------------------------
    def rescan(self) -> list[ModelEntry]:
        """The models this worker offers, its own choice first (--model, else the embedded default)."""
        found = find_checkpoints(Path("out"), self.options.models_dir)
        if self.options.model:
            given = given_model_entry(self.options.model)
            rest = [e for e in found if not e.is_default and e.path.resolve() != given.path.resolve()]
            found = [ModelEntry(given.name, given.path, Path(self.options.meta) if self.options.meta else None), *rest]
        self.models = found
        return found

    def _resolve(self, path: str | None, meta: str | None) -> tuple[str | None, str | None]:
        """A client's (path, meta) as this worker loads it; ValueError when it is not offered."""
        if path is None:
            return self.options.model, self.options.meta if self.options.model else meta
        wanted = Path(path).resolve()
        for entry in self.models:
            if not entry.is_default and entry.path.resolve() == wanted:
                if meta is not None and (entry.meta is None or Path(meta).resolve() != entry.meta.resolve()):
                    meta = str(entry.meta) if entry.meta else None  # the list's vocabulary, not another file
                return str(entry.path), meta
            if entry.is_default and entry.path.resolve() == wanted:
                return None, None
        raise ValueError(
            f"{path} is not one of the models this worker offers (start it with --model or --models-dir)"
        )

    # -- the loop -----------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask serve() to return (signal handlers call this)."""
        self._stop = True

    def serve(self, max_s: float | None = None) -> None:
        """Serve until stop() (or `max_s` seconds); then say Bye and close everything."""
        deadline = None if max_s is None else time.monotonic() + max_s
        try:
            while not self._stop and (deadline is None or time.monotonic() < deadline):
                self.step(POLL_MS)
        finally:
            self.close()

    def step(self, timeout_ms: int = POLL_MS) -> None:
        """One turn: wait for something (up to timeout_ms), read clients, relay the worker, flush."""
        client = self.client
        can_relay = len(self.outbox) < OUTBOX_MAX and (
            client is None or client.sent_bytes - client.taken_bytes < WINDOW_BYTES
        )
        fds = self.source.wait_fds() if can_relay else ()
        if self._poller is None or fds != self._polled_fds:
            self._poller = zmq.Poller()  # no POLLOUT: a ROUTER always reports it, full queue or not
            self._poller.register(self.sock, zmq.POLLIN)
            self._poller.register(self.monitor, zmq.POLLIN)
            for fd in fds:
                self._poller.register(fd, zmq.POLLIN)
            self._polled_fds = fds
        now = time.monotonic()
        if self.outbox and self.client is not None:  # the client's queue was full: try again soon
            timeout_ms = 0 if now >= self.blocked_until else RETRY_MS
        elif self.probe_until > now:
            timeout_ms = min(timeout_ms, 20)
        ready = dict(self._poller.poll(timeout_ms))
        if self.sock in ready:
            self._read_clients()
        if self.monitor in ready:
            self._read_monitor()
        if any(fd in ready for fd in fds):
            self._relay()
        self._flush()
        self._check_client()

    def close(self) -> None:
        if self.client is not None:
            self._send_now(self.client, Bye(f"the worker at {self.hostname} is shutting down"))
        self.client = None
        try:
            self.source.close()
        finally:
            self.monitor.close(linger=0)
            self.sock.close()
            self.ctx.term()

    # -- clients -> worker -------------------------------------------------------------------
    def _read_clients(self, limit: int = 256) -> None:
        for _ in range(limit):
            try:
                frames = self.sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            try:
                self._on_frames(frames)
            except Exception:  # a message we failed to handle must not take the server down
                self.n_dropped += 1
                log.exception("dropped a message that failed in handling")

    def _on_frames(self, frames: list) -> None:
        identity, body = bytes(frames[0].buffer), frames[1:]
        client = self.client
        is_client = client is not None and identity == client.identity
        if not is_client and wire.unverified_type(body) == "Knock":
            reply = self.handshake.answer_knock(identity, body)  # a Challenge, or Refused: a wrong key
            if reply is None:
                self.n_dropped += 1
            else:
                self._send_frames(identity, reply)
            return
        signer = client.signer if is_client else self.handshake.hello_signer(identity)
        if signer is None:
            self.n_dropped += 1
            log.warning("dropped a message from a connection that was sent no challenge (%d frames)", len(body))
            return
        try:
            got = wire.decode(body, signer, _AFTER_HELLO if is_client else wire.HELLO_TYPES)
        except wire.BadSignature:
            self.n_dropped += 1
            log.warning("dropped a message not signed for this connection's challenge (replayed, or another key)")
            return
        except WireError as exc:
            self.n_dropped += 1
            log.warning("dropped a malformed message: %s", exc)
            return
        first = got.messages[0]
        if not is_client:  # a Hello, signed over this connection's nonce
            self.handshake.forget(identity)
            self._on_hello(identity, first, got, signer)
            return
        if got.session != client.session:
            self.n_dropped += 1
            log.warning("dropped %s of another session", type(first).__name__)
            return
        if got.n <= client.n_in:
            self.n_dropped += 1
            log.warning("dropped a replayed message (n %d after %d)", got.n, client.n_in)
            return
        client.n_in, client.last_heard = got.n, time.monotonic()
        for msg in got.messages:
            if self.client is client:  # a Bye in the batch ends it
                self._on_command(msg)

    def _on_hello(self, identity: bytes, hello: Hello, got: wire.Received, signer: wire.Signer) -> None:
        current = self.client
        if current is not None and self._is_reachable(current):
            since = time.strftime("%H:%M:%S", time.localtime(current.since))
            log.info("refused %s: %s is connected", hello.client or "a client", current.who)
            self._send_frames(identity, wire.encode(Refused(
                f"the worker at {self.hostname} already serves {current.who or 'a client'} (since {since}); "
                "one client at a time"
            ), signer, got.session, 1))
            return
        if current is not None:
            self._drop_client("it went away")
        self.client = _Client(identity, got.session, hello.client, signer, n_in=got.n)
        self.n_served += 1
        log.info("client %s connected", hello.client or identity.hex())
        self._queue(Welcome(self.hostname, self.rescan(), self.boot_id))

    def _on_command(self, cmd: Command) -> None:
        if isinstance(cmd, Ping):
            return
        if isinstance(cmd, Credit):
            self.client.taken_bytes = max(self.client.taken_bytes, cmd.taken)
            return
        if isinstance(cmd, (Bye, Shutdown)):  # a client never shuts the server down; it leaves
            self._drop_client(_SAID_BYE)
        elif isinstance(cmd, LoadModel):
            self._load(cmd)
        elif isinstance(cmd, StartRun):
            self._start_run(cmd)
        elif isinstance(cmd, StopRun):
            local = self.local_ids.get(cmd.run_id)
            if local is not None:
                self.source.send(StopRun(local))
        elif isinstance(cmd, (ExploreSample, ExploreBatch)):
            self._explore(cmd)
        elif isinstance(cmd, StopExplore):
            self.source.send(cmd)
        else:
            log.warning("ignored a %s", type(cmd).__name__)

    def _load(self, cmd: LoadModel, reply: bool = True) -> None:
        try:
            path, meta = self._resolve(cmd.path, cmd.meta)
        except ValueError as exc:
            self._queue(WorkerError(str(exc), ""))
            return
        opts = self.options
        device = opts.device if cmd.device == "auto" else cmd.device
        dtype = opts.dtype if cmd.dtype == "auto" else cmd.dtype
        key = (path, meta, device, dtype)
        if key == self.load_key:
            return  # already loading (for an earlier client, or at start): its ModelLoaded comes to this one
        if reply and key == self.loaded_key and self.loaded_info is not None and self.load_key is None:
            self._queue(ModelLoading(1.0, f"{self.loaded_info.name} is loaded"))  # from an earlier client
            self._queue(ModelLoaded(self.loaded_info))
            return
        self.load_key, self.loaded_key, self.loaded_info = key, None, None
        self.source.send(LoadModel(path, meta, device, dtype, opts.device_map, opts.max_memory))

    def _start_run(self, cmd: StartRun) -> None:
        try:
            settings = GenerationSettings.from_dict(cmd.settings)
        except (TypeError, ValueError) as exc:
            self._queue(WorkerError(f"bad settings: {exc}", "", cmd.run_id))
            return
        local = self.source.start_run(
            settings, "", cmd.tokens, cmd.iteration, cmd.protected, cmd.edited, cmd.emit_initial
        )
        self.run_ids[local], self.local_ids[cmd.run_id] = cmd.run_id, local

    def _explore(self, cmd: ExploreSample | ExploreBatch) -> None:
        try:
            cmd.models = [self._resolve(*pair) for pair in cmd.models]
        except (ValueError, TypeError) as exc:
            self._queue(ExploreFailed(cmd.job_id, str(exc), ""))
            return
        if cmd.device == "auto":
            cmd.device = self.options.device
        self.explore_job = cmd.job_id
        self.source.send(cmd)

    # -- worker -> client ----------------------------------------------------------------------
    def _relay(self) -> None:
        """Up to BATCH_ITEMS of the worker's events, to the client in messages of at most BATCH_BYTES of
        records. One batch a turn: it is sent (_flush) before the next is read, so the client takes
        records while the worker writes more, and what waits here stays within OUTBOX_MAX and the window."""
        batch: list[Event] = []
        size = 0
        for event in self.source.poll(None, max_events=BATCH_ITEMS):
            if isinstance(event, WorkerDied):
                self._queue(*batch)
                self._on_worker_died(event)
                return
            out = self._translate(event)
            if out is not None and self.client is not None:
                batch.append(out)
                size += _nbytes(out)
                if len(batch) == BATCH_ITEMS or size >= BATCH_BYTES:
                    self._queue(*batch)
                    batch, size = [], 0
        self._queue(*batch)

    def _translate(self, event: Event) -> Event | None:
        """The event as the client knows it (its run ids), or None when it is no client's."""
        if isinstance(event, ModelLoaded):
            self.loaded_key, self.loaded_info, self.load_key = self.load_key, event.info, None
        elif isinstance(event, WorkerError) and event.run_id is None and self.load_key is not None:
            self.load_key = None  # the load failed; the worker keeps what it had
        run_id = getattr(event, "run_id", None)
        if isinstance(event, (RunStarted, StepReady, RunFinished, RunStopped, WorkerError)) and run_id is not None:
            remote = self.run_ids.get(run_id)
            if isinstance(event, (RunFinished, RunStopped, WorkerError)):
                self.run_ids.pop(run_id, None)
                if remote is not None:
                    self.local_ids.pop(remote, None)
            if remote is None:
                return None  # a run of a client that left
            event.run_id = remote
            if isinstance(event, RunStarted):
                event.shm_name = ""  # this host's shared memory means nothing there
            elif isinstance(event, StepReady):
                event.row = None
        return event

    def _on_worker_died(self, event: WorkerDied) -> None:
        reason = f"the worker process on {self.hostname} stopped (exit code {event.exitcode})"
        log.error("%s; starting a new one", reason)
        if self.client is not None:
            self._send_now(self.client, Bye(reason))
            self._drop_client(reason, is_worker_gone=True)
        self.run_ids.clear()
        self.local_ids.clear()
        self.load_key = self.loaded_key = self.loaded_info = None
        self.source = self.source_factory()

    # -- sending ------------------------------------------------------------------------------
    def _queue(self, *messages: Event) -> None:
        """One message to the client carrying `messages` (none: nothing is sent)."""
        client = self.client
        if client is None or not messages:
            return
        client.n_out += 1
        client.sent_bytes += sum(_nbytes(m) for m in messages)
        self.outbox.append([client.identity, *wire.encode(messages, client.signer, client.session, client.n_out)])

    def _flush(self) -> None:
        while self.outbox and self.client is not None:
            try:
                self.sock.send_multipart(self.outbox[0], zmq.NOBLOCK, copy=False)
            except zmq.Again:  # the client's queue is full (SNDHWM): the relay waits, and so does the worker
                self.blocked_until = time.monotonic() + RETRY_MS / 1e3
                return
            except zmq.ZMQError as exc:
                if exc.errno == zmq.EHOSTUNREACH:
                    self._drop_client("its connection closed")
                    return
                raise
            self.outbox.popleft()
            self.client.last_sent = time.monotonic()

    def _send_frames(self, identity: bytes, frames: list) -> bool:
        """One encoded message now, outside the outbox (the handshake's answers); False when the peer is gone."""
        try:
            self.sock.send_multipart([identity, *frames], zmq.NOBLOCK, copy=False)
        except zmq.ZMQError as exc:
            log.debug("could not answer a connection: %s", exc)
            return False
        return True

    def _send_now(self, client: _Client, message: Event) -> bool:
        client.n_out += 1
        frames = [client.identity, *wire.encode(message, client.signer, client.session, client.n_out)]
        try:
            self.sock.send_multipart(frames, zmq.NOBLOCK, copy=False)
        except zmq.ZMQError as exc:
            return exc.errno == zmq.EAGAIN  # queue full: still there; EHOSTUNREACH: gone
        client.last_sent = time.monotonic()
        return True

    def _is_reachable(self, client: _Client) -> bool:
        return self._send_now(client, Ping())

    # -- client liveness -----------------------------------------------------------------------
    def _read_monitor(self) -> None:
        while True:
            try:
                event = recv_monitor_message(self.monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            if event["event"] == zmq.EVENT_DISCONNECTED and self.client is not None:
                self.probe_until = time.monotonic() + PROBE_S  # which peer? probe ours until the socket knows

    def _check_client(self) -> None:
        client, now = self.client, time.monotonic()
        if client is None:
            self.probe_until = 0.0
            return
        if now - client.last_heard > CLIENT_SILENCE_S:
            self._drop_client(f"silent for {CLIENT_SILENCE_S:.0f} s")
        elif self.probe_until > now:
            if not self._is_reachable(client):
                self._drop_client("its connection closed")
        elif not self.outbox and now - client.last_sent > IDLE_PROBE_S and not self._is_reachable(client):
            self._drop_client("its connection closed")

    def _drop_client(self, why: str, is_worker_gone: bool = False) -> None:
        """End what the client started (its run, its explorer job), forget what was queued for it."""
        client = self.client
        if client is None:
            return
        log.info("client %s gone (%s): its run is stopped, the next client may connect", client.who, why)
        if not is_worker_gone and why != _SAID_BYE:
            self._send_now(client, Bye(f"this worker ended your session ({why}); reconnect"))  # if it still listens
        self.client = None
        self.outbox.clear()
        self.probe_until = 0.0
        if not is_worker_gone and self.source.is_alive:
            for local in list(self.run_ids):
                self.source.send(StopRun(local))  # its ring is freed when the worker reports the stop
            if self.explore_job is not None:
                self.source.send(StopExplore(self.explore_job))
        self.run_ids.clear()  # what the worker still sends for those runs is dropped (_translate)
        self.local_ids.clear()
        self.explore_job = None


_AFTER_HELLO = wire.after_hello(wire.COMMAND_TYPES)  # what a welcomed client may send
_SAID_BYE = "it said goodbye"


def _nbytes(event: Event) -> int:
    arrays = getattr(event, "arrays", None)
    return sum(a.nbytes for a in arrays.values()) if isinstance(arrays, dict) else 0
