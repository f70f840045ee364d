"""The challenge of the remote link's handshake, on both sides (the protocol: ipc.wire's docstring).

    server (ipc.server.WorkerServer, ipc.listen.RunListener), per connection (ROUTER identity):
        Knock      -> `Handshake.answer_knock`: a Challenge with a fresh nonce (or Refused: wrong key)
        Hello      -> verified under `Handshake.hello_signer(identity)`, the signer over that nonce
        the rest   -> verified under the session's own bound signer, kept by the server
    client (ipc.remote.RemoteClient, record.stream.RecordStream):
        Challenge  -> `bound_signer(signer, challenge)`: signs its Hello and everything after

Why: a Hello and the commands after it, recorded off the wire, were accepted again on a new
connection once the client that sent them had left (the server issued nothing of its own, so
every signature stayed valid). Now each connection signs over a nonce the server drew for it,
so what was signed for one connection fails the signature check on any other.

The server keeps at most MAX_PENDING nonces of connections that knocked and have not said
Hello, each for PENDING_S: whoever reaches the port can knock (a Knock is signed with the key
alone, so a recorded one still gets a Challenge; that is all it gets), and must not fill memory.

Standard library and ipc.wire only.
"""

from __future__ import annotations

import collections
import logging
import secrets
import time
from collections.abc import Sequence
from typing import Any

from dpgviz.ipc import wire
from dpgviz.ipc.wire import Challenge, Refused, Signer

log = logging.getLogger(__name__)

MAX_PENDING = 256  # connections that knocked and have not said Hello yet
PENDING_S = 60.0  # ... each kept this long (a client says Hello within milliseconds of its Challenge)


class Handshake:
    """A server's nonces, one per connection that knocked, until that connection's Hello."""

    def __init__(self, signer: Signer, wrong_key: str) -> None:
        self.signer = signer  # the key alone: Knock and Challenge
        self.wrong_key = wrong_key  # a Refused's reason for a Knock signed with another key
        self._pending: collections.OrderedDict[bytes, tuple[bytes, float]] = collections.OrderedDict()

    def answer_knock(self, identity: bytes, body: Sequence[Any]) -> list | None:
        """The frames that answer a Knock: the connection's Challenge, or Refused when it is signed with
        another key (so a client can say "wrong key"); None, logged, when it is malformed."""
        try:
            got = wire.decode(body, self.signer, wire.KNOCK_TYPES)
        except wire.BadSignature:
            log.warning("a client tried to connect with a wrong key: refused")
            return wire.encode(Refused(self.wrong_key), self.signer, "", 1)
        except wire.WireError as exc:
            log.warning("dropped a malformed Knock: %s", exc)
            return None
        now = time.monotonic()
        while self._pending and (
            len(self._pending) >= MAX_PENDING or next(iter(self._pending.values()))[1] < now - PENDING_S
        ):
            self._pending.popitem(last=False)  # the oldest first
        nonce = secrets.token_bytes(wire.NONCE_BYTES)
        self._pending.pop(identity, None)
        self._pending[identity] = (nonce, now)
        return wire.encode(Challenge(nonce.hex()), self.signer, got.session, got.n)

    def hello_signer(self, identity: bytes) -> Signer | None:
        """The signer over the nonce this connection was sent (None: it was sent none, or long ago)."""
        found = self._pending.get(identity)
        if found is None or found[1] < time.monotonic() - PENDING_S:
            return None
        return self.signer.bound(found[0])

    def forget(self, identity: bytes) -> None:
        """The connection said Hello (or went away): its nonce now lives with its session, if any."""
        self._pending.pop(identity, None)


def bound_signer(signer: Signer, challenge: Challenge) -> Signer:
    """The client's signer for its Hello and everything after; WireError for a nonce that is not one."""
    try:
        nonce = bytes.fromhex(challenge.nonce)
    except ValueError:
        nonce = b""
    if len(nonce) != wire.NONCE_BYTES:
        raise wire.WireError(f"a Challenge whose nonce is not {wire.NONCE_BYTES} bytes in hex")
    return signer.bound(nonce)
