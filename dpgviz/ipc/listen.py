"""A window listening for recorded runs: `python main.py --listen-runs PORT`, File > Listen for recorded runs...

    recorder (dpgviz.record.Recorder, connect= or spawn=)  --tcp, signed frames (ipc.wire)-->  RunListener
                                                           <--  Welcome / Refused / Bye

The recorder is a DEALER that connects; the window binds one ROUTER (`RunListener`). The
messages are ipc.wire's signed multipart frames (the transport of a remote worker, issue
17/20), with its handshake (Knock, Challenge with a nonce per connection, Hello signed over
it: ipc.handshake; a run recorded off the wire and sent again on another connection is
dropped), the session types Welcome / Refused / Bye / Ping, and three of their own:

    RunOpened       recorder -> window, with its first record: the layout, vocabulary,
                    settings, model name, file path and the number of rows (branches)
    RecordsLogged   one `Recorder.log` call: `seq` (0, 1, 2, ... per run), per-row scalars
                    and the rows' dense record arrays stacked (B, ...) as RecordLayout lays
                    them out
    RunClosed       the recorder closed (rec.close(), the end of a `with` block)

Several recorders may stream at once: each Hello starts a session (the ROUTER identity and
the session string of ipc.wire), and each session's RunOpened is a run of its own.

The key. `--listen-runs` signs with $DPGVIZ_KEY when it is set (a `spawn=True` recorder
starts its window so), else a new random key, and writes a connection file (ipc.wire's
format, mode 0600) at `connection_path(port)` in dpgviz's cache folder; a recorder on the
same machine that connects to 127.0.0.1:PORT finds the key there. Elsewhere, give the
recorder the file (connect="listen-runs-5560.json") or $DPGVIZ_KEY.

Threads. The socket belongs to one background thread (`RunListener._loop`): it receives,
checks each message (ipc.wire.decode: signature, session, message numbers, types), answers
Knocks and Hellos, and appends what the window must act on to a deque, then writes one byte to a
pipe. The frame thread calls `take()` once a frame, which empties the deque and the pipe
without ever blocking or touching the socket; `wait_fds()` gives the pipe's read end, which
the frame pacer (gui.pacing) sleeps on, so a record wakes an idle window. `close()` tells
every connected recorder Bye, stops the thread and removes the connection file.

SIGTERM. A window stopped so runs no `close()`; `remove_key_files_on_sigterm` (run_app
installs it) removes the connection files of this process's listeners and then lets SIGTERM
end the process as it would have: nothing else is cleaned up, so the recovery journal stays
for Recover at the next start, as after SIGKILL.

zmq (imported when a listener starts), numpy and dpgviz.core/ipc only: no torch, no dearpygui.
"""

from __future__ import annotations

import collections
import contextlib
import getpass
import logging
import os
import secrets
import signal
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dpgviz.core.paths import cache_dir
from dpgviz.ipc import LISTEN_PORT, wire
from dpgviz.ipc.handshake import Handshake
from dpgviz.ipc.messages import Command, Event
from dpgviz.ipc.wire import Bye, Ping, Refused, Welcome

log = logging.getLogger(__name__)

DEFAULT_PORT = LISTEN_PORT  # next to the remote worker's 5557
POLL_MS = 100  # the thread looks at its stop flag this often when nothing comes
MAX_FRAME_BYTES = 1 << 30
RCVHWM = 100_000  # messages; the thread reads as fast as they come, so this only bounds a burst
KEY_ENV = "DPGVIZ_KEY"


# -- messages (recorder -> window) --------------------------------------------------------------
@dataclass
class RunOpened(Command):
    """A recorder's run: what its records look like (the recorder's first log sends it)."""

    layout: dict  # RecordLayout.to_dict()
    vocab: dict  # Vocabulary.to_dict()
    settings: dict
    model: str
    path: str  # the recorder's file ("" when it writes none)
    n_branches: int  # rows per log: B sibling branches


@dataclass
class RecordsLogged(Command):
    """One Recorder.log call: a record for each of the run's branches."""

    seq: int  # 0, 1, 2, ... per run
    scalars: list  # per row: StepRecord.scalars()
    arrays: dict  # name -> (B, *shape) of RecordLayout.token_fields()


@dataclass
class RunClosed(Command):
    """The recorder closed: its run is complete."""

    reason: str = ""


TO_WINDOW: dict[str, type] = {c.__name__: c for c in (RunOpened, RecordsLogged, RunClosed, Bye, Ping)}  # after the Hello
TO_RECORDER: dict[str, type] = {c.__name__: c for c in (Welcome, Refused, Bye, Ping)}  # after the Challenge


@dataclass
class Received(Event):
    """What the frame thread gets from `take()`: one message of one recorder session."""

    client: str  # the session's id (one per connected recorder)
    who: str  # "user@host pid", from its Hello
    message: Any  # RunOpened, RecordsLogged, RunClosed; or Bye (the recorder went away)


# -- addresses and keys --------------------------------------------------------------------------
def parse_listen(text: str | int) -> tuple[str, int]:
    """'5560' or 5560 -> ('127.0.0.1', 5560); 'HOST:PORT' as ipc.wire.parse_address (the parser of
    `worker --listen` too). ValueError in one line."""
    return wire.parse_address(str(text), DEFAULT_PORT)


def connection_path(port: int) -> Path:
    """Where a window listening on `port` writes its connection file (dpgviz's cache folder)."""
    return cache_dir() / f"listen-runs-{int(port)}.json"


_KEY_FILES: set[Path] = set()  # the connection files this process's listeners wrote and have not removed


def remove_key_files_on_sigterm() -> None:
    """On SIGTERM, remove the listeners' connection files (a key must not outlive its window), then
    end the process by SIGTERM as before (the module docstring). Call from the main thread."""

    def on_sigterm(signum: int, frame: object) -> None:
        for path in list(_KEY_FILES):
            with contextlib.suppress(OSError):
                path.unlink()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)  # delivered as this handler returns: the exit status says SIGTERM

    signal.signal(signal.SIGTERM, on_sigterm)


# -- the listener ---------------------------------------------------------------------------------
@dataclass
class _Session:
    identity: bytes
    session: str
    who: str
    n_in: int
    signer: wire.Signer  # over the nonce of its connection's Challenge
    n_out: int = 0


class RunListener:
    """The window's side: a ROUTER bound to host:port, read by a background thread (module docstring).

    A RunSource-like producer (app.source): records come in through `take()` each frame and
    `wait_fds()` wakes an idle loop; it takes no commands (a recorder's loop is the caller's).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = DEFAULT_PORT, key: str | None = None,
                 allow_remote: bool = False) -> None:
        wire.check_listen_host(host, allow_remote)  # ValueError in one line, as `worker --listen` refuses
        self.host, self.port = host, int(port)
        self.key = key or os.environ.get(KEY_ENV) or wire.new_key()
        self.address = wire.Target(host, self.port, "").address
        self.connection_file: Path | None = None
        self.n_dropped = 0  # messages dropped as invalid
        self._signer = wire.Signer(self.key)
        self._handshake = Handshake(self._signer, "wrong key: the key does not match this window's")
        self._items: collections.deque[Received] = collections.deque()  # thread -> frame loop, no lock
        self._sessions: dict[bytes, _Session] = {}  # the thread's own
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pipe: tuple[int, int] | None = None
        self._ctx: Any = None
        self._sock: Any = None

    def start(self, write_file: bool = True) -> RunListener:
        """Bind (port 0: any free port), write the connection file, start the thread. OSError or
        ValueError in one line when it cannot (pyzmq missing, the port taken)."""
        wire.require_zmq()
        import zmq

        from dpgviz.ipc.server import server_socket

        self._ctx = zmq.Context()
        try:
            self._sock, self.port = server_socket(self._ctx, self.host, self.port)
        except zmq.ZMQError as exc:
            self._ctx.term()
            self._ctx = None
            raise OSError(f"cannot listen on {self.host}:{self.port}: {exc}") from None
        self._sock.setsockopt(zmq.RCVHWM, RCVHWM)
        self.address = wire.Target(self.host, self.port, "").address
        warning = wire.remote_warning(self.host, self.port)
        if warning:
            log.warning(warning)
        if write_file:
            self.connection_file = wire.write_connection_file(connection_path(self.port), self.host, self.port, self.key)
            _KEY_FILES.add(self.connection_file)
        self._pipe = os.pipe()
        os.set_blocking(self._pipe[0], False)
        os.set_blocking(self._pipe[1], False)
        self._thread = threading.Thread(target=self._loop, name="dpgviz-listen-runs", daemon=True)
        self._thread.start()
        log.info("listening for recorded runs on %s (connection file %s)", self.address, self.connection_file)
        return self

    @property
    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def send(self, command: object) -> None:
        """A recorder's stream takes no commands: its sampler runs in the recorder's process."""
        raise RuntimeError("a recorded run takes no commands; its sampler runs in the recorder's own process")

    def wait_fds(self) -> tuple[int, ...]:
        return (self._pipe[0],) if self._pipe is not None else ()

    def take(self) -> list[Received]:
        """Everything received since the last call, oldest first; never blocks (the frame thread)."""
        if self._pipe is not None:
            with contextlib.suppress(BlockingIOError, OSError):
                while os.read(self._pipe[0], 4096):
                    pass
        out = []
        with contextlib.suppress(IndexError):
            while True:
                out.append(self._items.popleft())
        return out

    def close(self) -> None:
        """Bye to every recorder, stop the thread (it closes the socket), remove the connection file."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(5.0)
        self._thread = None
        if self._pipe is not None:
            for fd in self._pipe:
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._pipe = None
        if self.connection_file is not None:
            _KEY_FILES.discard(self.connection_file)
            with contextlib.suppress(OSError):
                self.connection_file.unlink()
        log.info("stopped listening for recorded runs on %s", self.address)

    # -- the thread -----------------------------------------------------------------------------
    def _loop(self) -> None:
        import zmq

        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                if not poller.poll(POLL_MS):
                    continue
                while True:
                    try:
                        frames = self._sock.recv_multipart(zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    try:
                        self._on_frames(frames)
                    except Exception:  # one bad message must not end the listener
                        log.exception("recorded-run listener")
        finally:
            for s in list(self._sessions.values()):
                self._send(s, Bye("the window stopped listening"))
            self._sock.close(linger=300)
            self._ctx.term()

    def _on_frames(self, frames: list) -> None:
        identity, body = bytes(frames[0].buffer), frames[1:]
        s = self._sessions.get(identity)
        if s is None and wire.unverified_type(body) == "Knock":
            reply = self._handshake.answer_knock(identity, body)  # a Challenge, or Refused: a wrong key
            if reply is None:
                self.n_dropped += 1
            else:
                self._send_frames(identity, reply)
            return
        signer = s.signer if s is not None else self._handshake.hello_signer(identity)
        if signer is None:
            self.n_dropped += 1
            log.warning("dropped a message from a connection that was sent no challenge (%d frames)", len(body))
            return
        try:
            got = wire.decode(body, signer, TO_WINDOW if s is not None else wire.HELLO_TYPES)
        except wire.BadSignature:
            self.n_dropped += 1
            log.warning("dropped a message not signed for this connection's challenge (replayed, or another key)")
            return
        except wire.WireError as exc:
            self.n_dropped += 1
            log.warning("dropped a malformed message from a recorder: %s", exc)
            return
        first = got.messages[0]
        if s is None:  # a Hello, signed over this connection's nonce
            self._handshake.forget(identity)
            who = first.client or identity.hex()
            s = self._sessions[identity] = _Session(identity, got.session, who, got.n, signer)
            self._send(s, Welcome(socket.gethostname(), [], ""))
            log.info("recorder %s connected", s.who)
            return
        if got.session != s.session or got.n <= s.n_in:
            self.n_dropped += 1
            log.warning("dropped %s: not of a connected recorder's session, or replayed", type(first).__name__)
            return
        s.n_in = got.n
        for msg in got.messages:
            if isinstance(msg, Ping):
                continue
            self._items.append(Received(s.session, s.who, msg))
            if isinstance(msg, (Bye, RunClosed)):
                self._sessions.pop(identity, None)
        if self._pipe is not None:
            with contextlib.suppress(BlockingIOError, OSError):
                os.write(self._pipe[1], b"\0")  # wake the frame loop (a full pipe is awake already)

    def _send(self, s: _Session, message: object) -> None:
        s.n_out += 1
        self._send_frames(s.identity, wire.encode(message, s.signer, s.session, s.n_out))

    def _send_frames(self, identity: bytes, frames: list) -> None:
        import zmq

        try:
            self._sock.send_multipart([identity, *frames], zmq.NOBLOCK, copy=False)
        except zmq.ZMQError as exc:  # the recorder is gone (ROUTER_MANDATORY) or not reading
            log.debug("cannot answer a recorder: %s", exc)


def new_session() -> str:
    """A session id for a recorder's Hello (as ipc.remote names its own)."""
    return secrets.token_hex(16)


def who_am_i() -> str:
    """'user@host pid' for a Hello (the window's log names the recorder so)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "someone"
    return f"{user}@{socket.gethostname()} pid {os.getpid()}"
