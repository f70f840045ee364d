"""The network wire: dpgviz's messages as signed multipart frames, and the connection file.

A remote worker (`ipc.server`) and the window's `ipc.remote.RemoteClient` exchange the
dataclasses of `ipc.messages` (and the few session messages below) over ZeroMQ. A
message is a list of frames (ROUTER sockets add and strip a routing-id frame before it):

    frame 0   b"dpgviz/2"        what this is and its version: anything else is dropped unread
    frame 1   signature          hex HMAC-SHA256 under the key over the connection's nonce
                                 (below), then frames 2.., each one preceded by its length
                                 (Jupyter's wire protocol signs its header, parent header,
                                 metadata and content the same way; here the buffers are
                                 signed too: they are the records shown)
    frame 2   header             UTF-8 JSON, at most MAX_HEADER_BYTES:
                                   {"session": "9f...", "n": 17, "buffers": [41024],
                                    "items": [{"type": "StepReady", "fields": {"run_id": 1, ...,
                                      "arrays": {"tokens": {"__array__": [0, 0, "|u1", [1024]]}, ...}}}]}
    frame 3+i buffer i           raw bytes; each array is [buffer, byte offset, dtype, shape] of one

One message carries one or more dataclasses (`items`): the server sends the records that
are ready together, so a window that fell behind catches up in fewer, larger messages.
Nothing is pickled: `fields` is JSON, an array is a placeholder naming where its bytes
lie (sent as they lie in memory, without a copy; the fields of one ring slot go as the
one slot, `_pack`), and the two dataclasses that travel inside messages are tagged
(`ModelInfo`, `ModelEntry`). `decode` checks, in this order, before anything is built:
the frame count, the magic, the signature (constant-time compare), the header's JSON
shape, the buffers' sizes against the header's, each message type (only the kinds this
side accepts), every array's dtype (plain numbers and bools, little-endian), offset and
size against its buffer, and every field's type against the dataclass's annotations.
Whatever fails raises `WireError` and the caller drops the whole message.

The handshake: a challenge per connection. A message signed for one connection is worth
nothing on another, so a captured session cannot be replayed after its client left:

    client -> server   Knock                 signed with the key alone (no nonce yet)
    server -> client   Challenge(nonce)      32 fresh random bytes for this connection (hex);
                                             signed with the key alone. A Knock with a wrong
                                             signature is answered Refused, so a client can say
                                             "wrong key" at once; the Challenge tells it too.
    client -> server   Hello                 signed over the nonce: `Signer.bound(nonce)`
    server -> client   Welcome | Refused     ... and every later message, both ways, the same

The server keeps each connection's nonce (`Handshake`, by ROUTER identity) and verifies
whatever that connection sends against it; a Hello or a command signed over another
connection's nonce fails the signature check and is dropped with one log line and no answer.
Within a connection, `n` grows by one per message from each side (a message repeated on its
own connection is dropped), and `session`, the client's random name for its session, is
in every message.

Bytes from a sender without the key reach only the checks before the signature (frame
count, magic, sizes) and `unverified_type`; no error they can cause escapes as a traceback.

A connection file (as Jupyter writes `kernel-*.json`, mode 0600) tells a client where a
worker listens and the key: {"transport": "tcp", "ip", "port", "key",
"signature_scheme": "hmac-sha256", "pid", "host"}.

numpy and the standard library only: no zmq (the sockets live in ipc.server and
ipc.remote; `require_zmq` only checks it is there), no torch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import math
import os
import secrets
import socket
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dpgviz.core.discovery import ModelEntry
from dpgviz.core.model_info import ModelInfo
from dpgviz.ipc import messages
from dpgviz.ipc.messages import Command, Event
from dpgviz.ipc.ring import SlotRecord

MAGIC = b"dpgviz/2"  # 2: the handshake's challenge (a /1 peer signs without a nonce; it is dropped unread)
SIGNATURE_BYTES = 64  # hex of a SHA-256 digest
MAX_HEADER_BYTES = 64 << 20  # an explorer batch carries its corpus text in the header
MAX_BUFFERS = 256
MAX_ITEMS = 4096  # messages in one batch
# Plain numbers only: kinds b (bool), i, u, f; little-endian or byte-order-free; never objects.
_DTYPE_KINDS = frozenset("biuf")
DEFAULT_PORT = 5557
SIGNATURE_SCHEME = "hmac-sha256"


class WireError(ValueError):
    """A message that is not a valid, signed dpgviz message: drop it (and log why)."""


class BadSignature(WireError):  # noqa: N818 (a kind of WireError, read as a fact)
    """The frames look like ours but the signature does not match the key."""


# -- session messages (the remote link only; the local worker never sees them) -------------
@dataclass
class Knock(Command):
    """Client -> server, first, signed without a nonce: send me this connection's Challenge."""


@dataclass
class Challenge(Event):
    """Server -> client, answering a Knock: the nonce (hex) that this connection's messages are signed over."""

    nonce: str


@dataclass
class Hello(Command):
    """Client -> server, after the Challenge, signed over its nonce: who asks, and the session every
    later message names."""

    session: str
    client: str = ""  # "user@host pid" for the server's log and a refusal's reason


@dataclass
class Welcome(Event):
    """Server -> client: accepted. The models it offers (the window's Load list), first its own choice."""

    host: str  # the worker host's name
    models: list  # [ModelEntry]: what this worker may load (LoadModel of another path is refused)
    boot_id: str = ""  # the host's boot id: equal to the client's, the two share CLOCK_MONOTONIC


@dataclass
class Refused(Event):
    """Server -> client: not accepted (another client is connected, a wrong key); one line."""

    reason: str


@dataclass
class Bye(Command, Event):
    """Either way: the other side ends the session (window closed, server stopping, worker died)."""

    reason: str = ""


@dataclass
class Credit(Command):
    """Client -> server: bytes of records taken so far in this session. The server keeps at most
    ipc.server.WINDOW_BYTES sent and not yet taken (flow control in bytes: zmq's queues count messages)."""

    taken: int


@dataclass
class Ping(Command, Event):
    """Either way, when nothing else was sent for a while: I am here (the server drops a silent client)."""


SESSION_TYPES: tuple[type, ...] = (Knock, Challenge, Hello, Welcome, Refused, Bye, Credit, Ping)


def _message_types(base: type) -> dict[str, type]:
    found = {
        name: cls
        for name, cls in vars(messages).items()
        if isinstance(cls, type) and issubclass(cls, base) and cls is not base and dataclasses.is_dataclass(cls)
    }
    found.update({cls.__name__: cls for cls in SESSION_TYPES if issubclass(cls, base)})
    # Made by the client itself, never sent.
    for name in ("WorkerDied", "Connected", "Disconnected"):
        found.pop(name, None)
    return found


COMMAND_TYPES = _message_types(Command)  # what a server accepts
EVENT_TYPES = _message_types(Event)  # what a client accepts
KNOCK_TYPES = {"Knock": Knock}  # what a server takes from a connection it has not challenged
CHALLENGE_TYPES = {"Challenge": Challenge, "Refused": Refused}  # ... and a client before it has the nonce
HELLO_TYPES = {"Hello": Hello}  # ... from a challenged connection, first


def after_hello(accepted: dict[str, type]) -> dict[str, type]:
    """`accepted` without the handshake's own messages: what one side takes once the session is on."""
    return {k: v for k, v in accepted.items() if k not in ("Knock", "Challenge", "Hello")}


# -- signing --------------------------------------------------------------------------------
def new_key() -> str:
    """A random key, as Jupyter makes one: 32 bytes of os.urandom, in hex."""
    return secrets.token_hex(32)


NONCE_BYTES = 32  # a Challenge's nonce: as many random bytes as the key has


class Signer:
    """HMAC-SHA256 of a message's frames under one key, over one connection's nonce (none before
    the Challenge). The nonce goes first, preceded by its length as every frame is, so a message
    signed over one nonce (or none) never verifies over another."""

    def __init__(self, key: str | bytes, nonce: bytes = b"") -> None:
        if not key:
            raise ValueError("an empty key signs nothing; use wire.new_key()")
        self._key = key.encode("ascii") if isinstance(key, str) else bytes(key)
        self.nonce = bytes(nonce)
        self._start = hmac.new(self._key, digestmod=hashlib.sha256)  # copied per message: the key is set up once
        self._start.update(len(self.nonce).to_bytes(8, "little"))
        self._start.update(self.nonce)

    def bound(self, nonce: bytes) -> Signer:
        """The signer of one connection's messages after its Challenge."""
        return Signer(self._key, nonce)

    def sign(self, frames: Sequence[Any]) -> bytes:
        mac = self._start.copy()
        for frame in frames:
            view = memoryview(frame).cast("B")  # bytes, ndarrays and zmq frames alike, without a copy
            mac.update(len(view).to_bytes(8, "little"))
            mac.update(view)
        return mac.hexdigest().encode("ascii")

    def verify(self, signature: Any, frames: Sequence[Any]) -> bool:
        return hmac.compare_digest(bytes(signature), self.sign(frames))


# -- encoding -------------------------------------------------------------------------------
class _Packer:
    """The buffers of one message and where each array lies in them, without copying anything.

    An array goes as [buffer, byte offset, dtype, shape]. It shares a buffer with the block
    its memory belongs to when that block is not much bigger than it (SLACK), so views of one
    block go once. A dict of arrays that are all views of one block, such as a record whose
    arrays are the fields of a ring slot's copy (ipc.ring.Ring.take), goes as one "record":
    [buffer, byte offset, layout] with the layout (field names, dtypes, shapes, offsets) in the
    header's `records` table: one frame and one numpy view on the other side instead of seven.
    """

    SLACK = 4096

    def __init__(self) -> None:
        self.buffers: list[np.ndarray] = []
        self.records: list[list] = []
        self._buffer_of: dict[int, int] = {}
        self._record_of: dict[tuple, int] = {}
        self._slot_layout_of: dict[np.dtype, int] = {}

    def _buffer(self, block: np.ndarray) -> int:
        index = self._buffer_of.get(id(block))
        if index is None:
            index = self._buffer_of[id(block)] = len(self.buffers)
            self.buffers.append(block.reshape(-1).view(np.uint8))
        return index

    def array(self, a: np.ndarray) -> list:
        if not a.flags.c_contiguous:
            a = np.ascontiguousarray(a)
        base = a.base
        if isinstance(base, np.ndarray) and base.base is None and base.flags.c_contiguous and (
            base.nbytes <= 2 * a.nbytes + self.SLACK
        ):
            offset = a.ctypes.data - base.ctypes.data
            if 0 <= offset and offset + a.nbytes <= base.nbytes:
                return [self._buffer(base), offset, a.dtype.str, list(a.shape)]
        index = len(self.buffers)
        self.buffers.append(a.reshape(-1).view(np.uint8))
        return [index, 0, a.dtype.str, list(a.shape)]

    def record(self, arrays: dict) -> list | None:
        """[buffer, offset, layout] for a dict of arrays lying in one block, else None."""
        if type(arrays) is SlotRecord:  # a ring slot's copy: its block's dtype says where each field lies
            return self._slot_record(arrays.block)
        base = next(iter(arrays.values())).base
        if not isinstance(base, np.ndarray) or base.base is not None or not base.flags.c_contiguous:
            return None
        start, used, fields = base.ctypes.data, 0, []
        for name, a in arrays.items():
            if not isinstance(a, np.ndarray) or a.base is not base or not a.flags.c_contiguous or a.ndim == 0:
                return None
            offset = a.ctypes.data - start
            if offset < 0 or offset + a.nbytes > base.nbytes:
                return None
            fields.append((str(name), a.dtype.str, a.shape, offset))
            used += a.nbytes
        if base.nbytes > 2 * used + self.SLACK:
            return None
        key = (base.nbytes, tuple(fields))
        layout = self._record_of.get(key)
        if layout is None:
            layout = self._record_of[key] = len(self.records)
            self.records.append([base.nbytes, [[n, d, list(sh), o] for n, d, sh, o in fields]])
        return [self._buffer(base), 0, layout]


    def _slot_record(self, block: np.ndarray) -> list:
        layout = self._slot_layout_of.get(block.dtype)
        if layout is None:
            fields = block.dtype.fields
            layout = self._slot_layout_of[block.dtype] = len(self.records)
            self.records.append([block.dtype.itemsize, [
                [name, fields[name][0].base.str, list(fields[name][0].shape), fields[name][1]] for name in block.dtype.names
            ]])
        return [self._buffer(block), 0, layout]


def _to_json(value: Any, packer: _Packer) -> Any:
    """A field's value as JSON data, its arrays placed in the packer's buffers."""
    if isinstance(value, np.ndarray):
        return {"__array__": packer.array(value)}
    if isinstance(value, dict):
        if len(value) > 1 and all(isinstance(v, np.ndarray) for v in value.values()):
            record = packer.record(value)
            if record is not None:
                return {"__record__": record}
        return {str(k): _to_json(v, packer) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_json(v, packer) for v in value]
    if isinstance(value, ModelInfo):
        return {"__model_info__": value.to_dict()}
    if isinstance(value, ModelEntry):
        return {"__model_entry__": _entry_dict(value)}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"{type(value).__name__} does not go on the wire")


def _entry_dict(entry: ModelEntry) -> dict:
    return {
        "name": entry.name, "path": str(entry.path), "meta": None if entry.meta is None else str(entry.meta),
        "is_default": entry.is_default, "iter_num": entry.iter_num, "best_val_loss": entry.best_val_loss,
    }


def encode(messages: Command | Event | Sequence[Command | Event], signer: Signer, session: str, n: int) -> list[Any]:
    """The frames of one message carrying `messages` (one, or a batch): magic, signature, header,
    then the arrays' buffers, uncopied."""
    batch = [messages] if dataclasses.is_dataclass(messages) else list(messages)
    packer = _Packer()
    items = [
        {"type": type(m).__name__, "fields": {f.name: _to_json(getattr(m, f.name), packer) for f in dataclasses.fields(m)}}
        for m in batch
    ]
    header = {"session": session, "n": int(n), "items": items, "buffers": [b.nbytes for b in packer.buffers]}
    if packer.records:
        header["records"] = packer.records
    body = [json.dumps(header, separators=(",", ":")).encode("utf-8"), *packer.buffers]
    return [MAGIC, signer.sign(body), *body]


# -- decoding -------------------------------------------------------------------------------
@dataclass
class Received:
    """A decoded message: its dataclasses, in order, and the header's session fields."""

    messages: list
    session: str
    n: int
    frames: list = field(default_factory=list)  # kept alive: the messages' arrays view their memory


def _buffer(frame: Any) -> memoryview:
    raw = getattr(frame, "buffer", frame)  # a zmq.Frame (recv with copy=False), or bytes
    return memoryview(raw).cast("B")


# Errors that bytes can make json and numpy raise, besides ValueError and its kin: a header of
# 4,000 '[' nests past Python's recursion limit; a huge number or size overflows or asks for memory.
_HOSTILE_ERRORS = (RecursionError, MemoryError, OverflowError)


def unverified_type(frames: Sequence[Any]) -> str | None:
    """The type a message claims, read without trusting it (a server answers a Knock with a
    wrong key so the client can say so; nothing else is read from such a message). Never raises."""
    try:
        if len(frames) < 3 or bytes(_buffer(frames[0])) != MAGIC or len(_buffer(frames[2])) > 4096:
            return None
        kind = json.loads(bytes(_buffer(frames[2])).decode("utf-8"))["items"][0]["type"]
        return kind if isinstance(kind, str) else None
    except (ValueError, UnicodeDecodeError, LookupError, TypeError, *_HOSTILE_ERRORS):
        return None


def decode(frames: Sequence[Any], signer: Signer, accepted: dict[str, type]) -> Received:
    """Check and build one message (the module docstring lists the checks); WireError if any fails."""
    try:
        return _decode(frames, signer, accepted)
    except _HOSTILE_ERRORS as exc:  # a signed message can nest too deep as well: dropped like any bad one
        raise WireError(f"{type(exc).__name__} reading the message") from None


def _decode(frames: Sequence[Any], signer: Signer, accepted: dict[str, type]) -> Received:
    if len(frames) < 3:
        raise WireError(f"{len(frames)} frames; a message has at least 3")
    if len(frames) > 3 + MAX_BUFFERS:
        raise WireError(f"{len(frames)} frames; at most {3 + MAX_BUFFERS}")
    views = [_buffer(f) for f in frames]
    if bytes(views[0]) != MAGIC:
        raise WireError("not a dpgviz message (no magic frame)")
    if len(views[1]) != SIGNATURE_BYTES:
        raise WireError(f"a signature of {len(views[1])} bytes")
    if len(views[2]) > MAX_HEADER_BYTES:
        raise WireError(f"a header of {len(views[2])} bytes")
    if not signer.verify(views[1], views[2:]):
        raise BadSignature("bad signature")
    try:
        header = json.loads(bytes(views[2]).decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise WireError(f"header is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise WireError("header is not an object")
    session, n, items, sizes = header.get("session"), header.get("n"), header.get("items"), header.get("buffers")
    if not isinstance(session, str) or not isinstance(n, int) or isinstance(n, bool):
        raise WireError("header lacks session or n")
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_ITEMS or not isinstance(sizes, list):
        raise WireError("header lacks items or buffers")
    if sizes != [len(v) for v in views[3:]]:
        raise WireError(f"header names buffers of {sizes} bytes, {[len(v) for v in views[3:]]} came")
    layouts = [_record_layout(r) for r in header.get("records", ())] if "records" in header else []
    places = _Places(views, layouts)
    messages = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("fields"), dict):
            raise WireError("an item without fields")
        kind = item.get("type")
        if not isinstance(kind, str) or kind not in accepted:
            raise WireError(f"message type {kind!r} is not accepted here")
        values = {k: _from_json(v, places) for k, v in item["fields"].items()}
        messages.append(_build(accepted[kind], values))
    return Received(messages, session, n, list(frames))


_DTYPES: dict[str, np.dtype] = {}


def _dtype(text: Any) -> np.dtype:
    dtype = _DTYPES.get(text) if isinstance(text, str) else None
    if dtype is None:
        try:
            dtype = np.dtype(text) if isinstance(text, str) and len(text) <= 8 else None
        except TypeError:
            dtype = None
        if dtype is None or dtype.kind not in _DTYPE_KINDS or dtype.byteorder == ">" or dtype.itemsize > 8:
            raise WireError(f"dtype {text!r} is not a plain little-endian number")
        _DTYPES[text] = dtype
    return dtype


_LAYOUTS: dict[str, tuple[np.dtype, tuple[str, ...]]] = {}


def _record_layout(spec: Any) -> tuple[np.dtype, tuple[str, ...]]:
    """A `records` entry [itemsize, [[name, dtype, shape, offset], ...]] as a structured dtype (checked, cached)."""
    key = json.dumps(spec)
    found = _LAYOUTS.get(key)
    if found is not None:
        return found
    if not (isinstance(spec, list) and len(spec) == 2 and type(spec[0]) is int and isinstance(spec[1], list)):
        raise WireError(f"record layout {key[:200]} is not [itemsize, fields]")
    itemsize, fields = spec
    if not 0 < itemsize < 1 << 31 or not 0 < len(fields) <= 64:
        raise WireError(f"record layout of {itemsize} bytes, {len(fields)} fields")
    names, formats, offsets = [], [], []
    for f in fields:
        if not (isinstance(f, list) and len(f) == 4 and isinstance(f[0], str) and isinstance(f[2], list)):
            raise WireError(f"record field {f!r} is not [name, dtype, shape, offset]")
        name, dtype, shape, offset = f[0], _dtype(f[1]), f[2], f[3]
        if name in names or not 1 <= len(shape) <= 4 or any(type(d) is not int or not 0 <= d < 1 << 31 for d in shape):
            raise WireError(f"record field {name!r}: repeated, or a bad shape {shape!r}")
        size = math.prod(shape) * dtype.itemsize
        if type(offset) is not int or offset < 0 or offset % dtype.itemsize or offset + size > itemsize:
            raise WireError(f"record field {name!r} at byte {offset!r} does not fit {itemsize} bytes")
        names.append(name)
        formats.append((dtype, tuple(shape)))
        offsets.append(offset)
    found = np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": itemsize}), tuple(names)
    if len(_LAYOUTS) < 256:
        _LAYOUTS[key] = found
    return found


class _Places:
    """Where a message's arrays lie: its buffers and record layouts; hands out read-only views."""

    def __init__(self, views: list[memoryview], layouts: list) -> None:
        self.buffers = views[3:]
        self.layouts = layouts

    def _buffer(self, index: Any, offset: Any) -> memoryview:
        if type(index) is not int or not 0 <= index < len(self.buffers) or type(offset) is not int or offset < 0:
            raise WireError(f"buffer {index!r} at {offset!r}: no such place")
        return self.buffers[index]

    def array(self, spec: Any) -> np.ndarray:
        """[buffer, byte offset, dtype, shape] -> a view of the buffer (no copy)."""
        if not (isinstance(spec, list) and len(spec) == 4 and isinstance(spec[3], list)):
            raise WireError(f"array {spec!r} is not [buffer, offset, dtype, shape]")
        view, offset, dtype, shape = self._buffer(spec[0], spec[1]), spec[1], _dtype(spec[2]), spec[3]
        if len(shape) > 4 or any(type(d) is not int or not 0 <= d < 1 << 31 for d in shape):
            raise WireError(f"array with a bad shape {shape!r}")
        count = math.prod(shape)
        if offset % dtype.itemsize or offset + count * dtype.itemsize > len(view):
            raise WireError(f"array of {shape} {dtype} at byte {offset} does not fit its buffer ({len(view)} bytes)")
        if count == 0:
            return np.empty(shape, dtype)
        return np.frombuffer(view, dtype=dtype, count=count, offset=offset).reshape(shape)

    def record(self, spec: Any) -> dict[str, np.ndarray]:
        """[buffer, byte offset, layout] -> {field: a view of the buffer} (no copy)."""
        if not (isinstance(spec, list) and len(spec) == 3):
            raise WireError(f"record {spec!r} is not [buffer, offset, layout]")
        view, offset, layout = self._buffer(spec[0], spec[1]), spec[1], spec[2]
        if type(layout) is not int or not 0 <= layout < len(self.layouts):
            raise WireError(f"record layout {layout!r}: no such layout")
        dtype, names = self.layouts[layout]
        if offset % 8 or offset + dtype.itemsize > len(view):
            raise WireError(f"record of {dtype.itemsize} bytes at byte {offset} does not fit its buffer ({len(view)} bytes)")
        rec = np.frombuffer(view, dtype=dtype, count=1, offset=offset)
        return {name: rec[name][0] for name in names}


_LEAVES = (int, float, str, bool, type(None))


def _from_json(value: Any, places: _Places) -> Any:
    if type(value) is dict:
        if len(value) == 1:
            (tag, inner), = value.items()
            if tag == "__array__":
                return places.array(inner)
            if tag == "__record__":
                return places.record(inner)
            if tag == "__model_info__":
                return _model_info(inner)
            if tag == "__model_entry__":
                return _model_entry(inner)
        return {k: v if type(v) in _LEAVES else _from_json(v, places) for k, v in value.items()}
    if type(value) is list:
        return [v if type(v) in _LEAVES else _from_json(v, places) for v in value]
    return value


def _model_info(data: Any) -> ModelInfo:
    if not isinstance(data, dict):
        raise WireError("model info is not an object")
    try:
        return ModelInfo.from_dict(data)
    except Exception as exc:  # whatever from_dict raises on data that is not a ModelInfo's
        raise WireError(f"model info: {type(exc).__name__}: {exc}") from None


def _model_entry(data: Any) -> ModelEntry:
    if not isinstance(data, dict) or not isinstance(data.get("name"), str) or not isinstance(data.get("path"), str):
        raise WireError("a model entry without name or path")
    meta, iter_num, best = data.get("meta"), data.get("iter_num"), data.get("best_val_loss")
    if not (meta is None or isinstance(meta, str)) or not (iter_num is None or isinstance(iter_num, int)):
        raise WireError("a model entry with a bad meta or iter_num")
    if not (best is None or isinstance(best, (int, float))):
        raise WireError("a model entry with a bad best_val_loss")
    return ModelEntry(
        data["name"], Path(data["path"]), None if meta is None else Path(meta), bool(data.get("is_default")),
        iter_num, best,
    )


@dataclass(frozen=True)
class _Schema:
    """What a message type's fields may hold, worked out once from its annotations."""

    allowed: dict[str, frozenset | None]  # field -> the exact types it takes (None: anything)
    required: frozenset


_SCHEMAS: dict[type, _Schema] = {}


def _types_of(hint: Any) -> frozenset | None:
    """The exact types a value of annotation `hint` may have (the forms messages use: unions,
    builtins, arrays, dataclasses). A float takes an int; an int never takes a bool."""
    if hint is Any:
        return None
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        found: set = set()
        for arg in typing.get_args(hint):
            more = _types_of(arg)
            if more is None:
                return None
            found |= more
        return frozenset(found)
    hint = typing.get_origin(hint) or hint
    if hint is float:
        return frozenset({float, int})
    return frozenset({hint})


def _schema(cls: type) -> _Schema:
    schema = _SCHEMAS.get(cls)
    if schema is None:
        hints = typing.get_type_hints(cls, vars(messages) | {"np": np, "ModelInfo": ModelInfo})
        fields = dataclasses.fields(cls)
        schema = _SCHEMAS[cls] = _Schema(
            {f.name: _types_of(hints[f.name]) for f in fields},
            frozenset(f.name for f in fields
                      if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING),
        )
    return schema


def _build(cls: type, values: dict[str, Any]) -> Any:
    schema = _schema(cls)
    for name, value in values.items():
        allowed = schema.allowed.get(name, _NO_FIELD)
        if allowed is _NO_FIELD:
            raise WireError(f"{cls.__name__} has no field {name!r}")
        if allowed is not None and type(value) not in allowed:
            raise WireError(f"{cls.__name__}.{name}: {type(value).__name__} where {sorted(t.__name__ for t in allowed)} belong")
    if not schema.required <= values.keys():
        raise WireError(f"{cls.__name__}: missing {sorted(schema.required - values.keys())}")
    return cls(**values)


_NO_FIELD = frozenset({"no such field"})


# -- addresses and connection files ----------------------------------------------------------
def parse_address(text: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """'HOST:PORT' (or 'PORT', ':PORT', 'HOST', '[::1]:PORT') -> (host, port); the host is 127.0.0.1
    unless named. ValueError says what is wrong. `worker --listen`, `--listen-runs` and `--connect` all
    read an address here, so a bare port means the same to each."""
    text = text.strip()
    if text.isdigit():  # a port alone: a host name never is all digits
        host, port_text = "", text
    elif text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest.removeprefix(":")
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        host, port_text = text, ""
    host = host or "127.0.0.1"
    try:
        port = int(port_text) if port_text else default_port
    except ValueError:
        raise ValueError(f"{text!r}: the port must be a number (HOST:PORT)") from None
    if not 0 <= port < 65536:
        raise ValueError(f"{text!r}: port {port} is out of range")
    return host, port


def is_loopback(host: str) -> bool:
    """An address only this machine reaches (127.0.0.0/8, ::1, localhost)."""
    return host == "localhost" or host == "::1" or host.startswith("127.")


def check_listen_host(host: str, allow_remote: bool) -> None:
    """ValueError in one line when `host` is an address other machines reach and --allow-remote was not
    given (`worker --listen`, `--listen-runs`: the same rule and words for both)."""
    if not is_loopback(host) and not allow_remote:
        raise ValueError(
            f"{host} is reachable from other machines; add --allow-remote to bind it, or keep 127.0.0.1 "
            "and connect through an SSH tunnel (README: Remote GPU host)"
        )


def remote_warning(host: str, port: int) -> str | None:
    """What to warn when listening on an address other machines reach (None: a loopback one)."""
    if is_loopback(host):
        return None
    return (
        f"listening on {host}:{port}, which other machines can reach. Messages are signed with the key but not "
        "encrypted: prefer an SSH tunnel (bind 127.0.0.1, then ssh -L) or a private network."
    )


def tcp_url(host: str, port: int) -> str:
    return f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"


def write_connection_file(path: str | Path, host: str, port: int, key: str) -> Path:
    """Write the connection file readable by its owner only (0600, made so before the key is in it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    info = {
        "transport": "tcp", "ip": host, "port": int(port), "key": key, "signature_scheme": SIGNATURE_SCHEME,
        "pid": os.getpid(), "host": socket.gethostname(),
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        os.fchmod(f.fileno(), 0o600)  # whatever the umask: the key is a password
        json.dump(info, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)
    return path


@dataclass(frozen=True)
class Target:
    """Where a client connects and the key it signs with."""

    host: str
    port: int
    key: str

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def require_zmq() -> None:
    """ValueError in one line when pyzmq (the `remote` extra) is not installed."""
    try:
        import zmq  # noqa: F401
    except ImportError:
        raise ValueError("a worker on another machine needs pyzmq: pip install -e '.[remote]'") from None


def read_target(where: str, key: str | None = None) -> Target:
    """`--connect FILE|HOST:PORT [--key K]` -> Target; ValueError with one line when it cannot be."""
    require_zmq()
    path = Path(where).expanduser()
    if path.is_file() or where.endswith(".json"):
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ValueError(f"cannot read the connection file {path}: {exc.strerror or exc}") from None
        except ValueError:
            raise ValueError(f"{path} is not a connection file (not JSON)") from None
        if not isinstance(info, dict) or not all(k in info for k in ("ip", "port", "key")):
            raise ValueError(f"{path} is not a dpgviz connection file (needs ip, port and key)")
        scheme = info.get("signature_scheme", SIGNATURE_SCHEME)
        if scheme != SIGNATURE_SCHEME:
            raise ValueError(f"{path}: signature scheme {scheme!r}; dpgviz signs with {SIGNATURE_SCHEME}")
        return Target(str(info["ip"]), int(info["port"]), str(key or info["key"]))
    host, port = parse_address(where)
    if not key:
        raise ValueError(f"connecting to {where} needs the worker's key: --key KEY, or --connect its connection file")
    return Target(host, port, key)
