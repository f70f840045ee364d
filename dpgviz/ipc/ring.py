"""The shared-memory ring: a run's records travel from worker to GUI through fixed slots.

One POSIX shared-memory block per run, laid out once from the run's `RecordLayout`
(after vLLM's `shm_broadcast.py`, one writer and one reader here). Byte layout:

    offset              size              field
    0                   8                 magic b"dpgvizR1"
    8                   4   uint32        n_slots
    12                  4   uint32        header_bytes (offset of slot 0)
    16                  8   uint64        slot_bytes (stride between slots)
    24                  1   uint8         is_attached: 0 until the GUI has mapped the block
    25                  3                 zero
    28                  12  uint32 x3     layout: seq_len, top_k, n_ids (checked on attach)
    40                  8   uint64        full_waits: times the writer found its next slot
                                          still WRITTEN (`is_writable` said no), i.e. the
                                          ring was full and the worker had to wait
    48                  16                zero
    64                  n_slots uint8     state[i]: FREE 0, WRITTEN 1, READ 2
    64 + ceil8(n)       n_slots int64     seq[i]: record index (within the run) in slot i
    header_bytes        n_slots * slot_bytes
                                          slot i: every token field of the layout, in
                                          `token_fields()` order, each at an 8-byte-aligned
                                          offset (a numpy structured dtype, `slot_dtype`);
                                          slot_bytes rounds up to 64 so slots never share a
                                          cache line. Scalars travel in the StepReady message.

Slot states and who moves them (one mover per transition, so no atomics are needed):

    FREE    -> WRITTEN   worker, after copying a record in (and setting seq[i])
    WRITTEN -> READ      GUI, after copying the record out (`take`)
    READ    -> FREE      worker, when it comes round to the slot again (`write` reclaims it)

The worker fills slots round-robin (slot = seq % n_slots) and the GUI takes them in
message order, so the worker only ever waits on the one slot it needs next. A slot in
WRITTEN is never overwritten: when the GUI falls behind, the worker waits (no record is
dropped) while still reading its command pipe, so a StopRun interrupts the wait.

Why a state byte per slot in the header rather than a multiprocessing Semaphore or Queue
of free slots: those are named POSIX semaphores that a spawn-context process keeps in
/dev/shm (sem.mp-*) until it exits cleanly, i.e. more objects to leak on kill -9, and a
Queue adds a feeder thread that competes for the worker's GIL on every record. The byte
costs one load on the writer's hot path. Ordering: the writer's record stores precede its
WRITTEN store, and the GUI reads a slot only after the StepReady message (a pipe
syscall, a full barrier); the GUI's copy precedes its READ store. `_fence()` (a lock
round trip, a full barrier, as vLLM's shm_broadcast does) sits before each state store.

Lifetime: the worker creates the block (`Ring.create`) and is the only one to unlink it:
as soon as it sees `is_attached` (checked after every record, and every 10 ms after the
run), or, if the GUI never attached, on shutdown or parent death. After the unlink only
mappings remain, which the kernel frees when the last process unmaps or dies, so nothing
outlives both processes. The one exception: when the worker itself died (kill -9), the
GUI removes its runs' names with `Ring.remove_orphan`, since the creator no longer can.
Names are `dpgviz_<gui pid>_<random>_r<run id>` (`ring_name`), known to the GUI before
the worker creates them, so this works even when RunStarted never arrived.

Both processes share one multiprocessing resource tracker under spawn. Up to Python 3.12
attaching registers the name a second time, which the tracker's set absorbs; from 3.13
the GUI attaches with track=False. Either way each name is unregistered exactly once, by
the unlink that succeeds, and the tracker never warns.

Only this module holds numpy views into shared memory; `take` hands out copies.
numpy and the standard library only; no torch.
"""

from __future__ import annotations

import logging
import struct
import sys
import threading
from multiprocessing import resource_tracker
from multiprocessing.shared_memory import SharedMemory

import numpy as np

from dpgviz.core.records import RecordLayout

log = logging.getLogger(__name__)

SHM_PREFIX = "dpgviz_"  # every segment's name starts with this; tests look for it in /dev/shm
FREE, WRITTEN, READ = 0, 1, 2
STATE_NAMES = {FREE: "free", WRITTEN: "written", READ: "read"}

_MAGIC = b"dpgvizR1"
_FIXED = struct.Struct("<8sIIQB3xIII")  # magic, n_slots, header_bytes, slot_bytes, is_attached, layout
_ATTACHED_OFFSET = 24
_FULL_WAITS_OFFSET = 40
_STATE_OFFSET = 64
_TRACK_PARAM = sys.version_info >= (3, 13)  # SharedMemory(track=...) exists from 3.13
_fence_lock = threading.Lock()


class RingError(RuntimeError):
    """The ring was used against its protocol (a bug, not a user error)."""


def _round_up(n: int, to: int) -> int:
    return (n + to - 1) // to * to


def _fence() -> None:
    # A mutex acquire/release is a full memory barrier; CPython has no other portable one.
    with _fence_lock:
        pass


def ring_name(session: str, run_id: int) -> str:
    """The block's name for one run of one client session: known to both sides in advance."""
    return f"{SHM_PREFIX}{session}_r{run_id}"


def slot_dtype(layout: RecordLayout) -> np.dtype:
    """A structured dtype of one slot: every token field at an 8-byte-aligned offset."""
    names, formats, offsets, end = [], [], [], 0
    for name, (shape, dtype) in layout.token_fields().items():
        offset = _round_up(end, 8)
        names.append(name)
        formats.append((dtype, shape))
        offsets.append(offset)
        end = offset + int(np.prod(shape)) * dtype.itemsize
    return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": _round_up(end, 64)})


def header_bytes(n_slots: int) -> int:
    return _round_up(_STATE_OFFSET + _round_up(n_slots, 8) + 8 * n_slots, 64)


def default_n_slots(layout: RecordLayout, budget_bytes: int = 32 << 20, max_slots: int = 256) -> int:
    """Slots for a run: as many as fit `budget_bytes`, between 4 and `max_slots`.

    At N=1024, K=8 a slot is 41 KiB, so 256 slots (10 MiB) let the worker run a few
    hundred records ahead of a GUI stuck in a slow frame; at N=65536 the budget caps it.
    """
    per_slot = slot_dtype(layout).itemsize
    return int(max(4, min(max_slots, budget_bytes // per_slot)))


class SlotRecord(dict):
    """A record taken from a slot: {field: view} into `block`, the slot's one-element structured copy.
    Read-only, so the views and the block stay one: ipc.wire sends the block as one buffer without
    checking each field's place again (a dict built any other way is checked field by field)."""

    def __init__(self, block: np.ndarray) -> None:
        super().__init__((name, block[name][0]) for name in block.dtype.names)
        self.block = block

    def _read_only(self, *args: object, **kwargs: object) -> None:
        raise TypeError("a SlotRecord is read-only; copy it into a dict to change it")

    __setitem__ = __delitem__ = update = setdefault = pop = popitem = clear = _read_only  # type: ignore[assignment]
    __ior__ = _read_only  # type: ignore[assignment]


class Ring:
    """A run's slots in one shared-memory block. Worker: `create`, `write`; GUI: `attach`, `take`."""

    def __init__(self, shm: SharedMemory, layout: RecordLayout, n_slots: int, is_creator: bool) -> None:
        self._shm = shm
        self.name = shm.name
        self.layout = layout
        self.n_slots = n_slots
        self.is_creator = is_creator
        self._is_unlinked = False
        self._is_closed = False
        dtype = slot_dtype(layout)
        self.slot_bytes = dtype.itemsize
        self.header_bytes = header_bytes(n_slots)
        buf = shm.buf
        self._attached = np.ndarray((1,), np.uint8, buffer=buf, offset=_ATTACHED_OFFSET)
        self._full_waits = np.ndarray((1,), np.uint64, buffer=buf, offset=_FULL_WAITS_OFFSET)
        self._state = np.ndarray((n_slots,), np.uint8, buffer=buf, offset=_STATE_OFFSET)
        self._seq = np.ndarray((n_slots,), np.int64, buffer=buf, offset=_STATE_OFFSET + _round_up(n_slots, 8))
        self._slots = np.ndarray((n_slots,), dtype, buffer=buf, offset=self.header_bytes)
        self._fields = {name: self._slots[name] for name in dtype.names}  # (n_slots, *shape) each

    # -- opening ---------------------------------------------------------------------
    @classmethod
    def create(cls, name: str, layout: RecordLayout, n_slots: int) -> Ring:
        """Create the block (worker side). All slots start FREE."""
        if not name.startswith(SHM_PREFIX):
            raise ValueError(f"ring names start with {SHM_PREFIX!r}, got {name!r}")
        if n_slots < 1:
            raise ValueError(f"n_slots must be >= 1, got {n_slots}")
        slot_bytes = slot_dtype(layout).itemsize
        size = header_bytes(n_slots) + n_slots * slot_bytes
        shm = SharedMemory(name=name, create=True, size=size)
        try:
            _FIXED.pack_into(
                shm.buf,
                0,
                _MAGIC,
                n_slots,
                header_bytes(n_slots),
                slot_bytes,
                0,
                layout.seq_len,
                layout.top_k,
                layout.n_ids,
            )
            return cls(shm, layout, n_slots, is_creator=True)
        except BaseException:
            shm.close()
            shm.unlink()
            raise

    @classmethod
    def attach(cls, name: str, layout: RecordLayout) -> Ring:
        """Map an existing block (GUI side) and check it was laid out for `layout`."""
        shm = SharedMemory(name=name, track=False) if _TRACK_PARAM else SharedMemory(name=name)
        try:
            magic, n_slots, head, slot_bytes, _, *dims = _FIXED.unpack_from(shm.buf, 0)
            expected = (layout.seq_len, layout.top_k, layout.n_ids)
            is_ok = magic == _MAGIC and head == header_bytes(n_slots) and slot_bytes == slot_dtype(layout).itemsize
            if not is_ok or tuple(dims) != expected:
                raise RingError(
                    f"{name} is not a ring for {layout}: magic {magic!r}, (seq_len, top_k, n_ids) {tuple(dims)}"
                )
            return cls(shm, layout, int(n_slots), is_creator=False)
        except BaseException:
            shm.close()
            raise

    # -- worker side -----------------------------------------------------------------
    def is_writable(self, slot: int) -> bool:
        """True when the GUI no longer needs `slot` (FREE or READ).

        A False answer counts in `full_waits` (the worker asks again while it waits, so
        one wait may count several times). Only the writer calls this, so the counter has
        one mover, like the state bytes; it lets a test or a profile see back-pressure.
        """
        if int(self._state[slot]) != WRITTEN:
            return True
        self._full_waits[0] += 1
        return False

    @property
    def full_waits(self) -> int:
        """How often the writer found its next slot still unread (0: the reader always kept up)."""
        return int(self._full_waits[0])

    def write(self, slot: int, seq: int, arrays: dict[str, np.ndarray]) -> None:
        """Copy one record's arrays into `slot`, then mark it WRITTEN. The slot must be writable."""
        self._check_open()
        state = int(self._state[slot])
        if state == WRITTEN:
            raise RingError(f"slot {slot} still holds record {int(self._seq[slot])}, not yet taken by the GUI")
        if state == READ:
            self._state[slot] = FREE  # READ -> FREE: the worker reclaims it
        for name, view in self._fields.items():
            view[slot] = arrays[name]
        self._seq[slot] = seq
        _fence()
        self._state[slot] = WRITTEN

    @property
    def is_attached(self) -> bool:
        return bool(self._attached[0])

    def is_drained(self) -> bool:
        """True when the GUI has taken every record written so far."""
        return not bool((self._state == WRITTEN).any())

    def states(self) -> list[str]:
        return [STATE_NAMES[int(s)] for s in self._state]

    # -- GUI side --------------------------------------------------------------------
    def mark_attached(self) -> None:
        """Tell the worker the GUI has mapped the block, so it may unlink the name."""
        _fence()
        self._attached[0] = 1

    def take(self, slot: int, seq: int) -> SlotRecord:
        """Copy record `seq` out of `slot` and release the slot (WRITTEN -> READ)."""
        self._check_open()
        state, held = int(self._state[slot]), int(self._seq[slot])
        if state != WRITTEN or held != seq:
            raise RingError(f"slot {slot} is {STATE_NAMES.get(state, state)} with record {held}, expected record {seq}")
        private = self._slots[slot : slot + 1].copy()  # one memcpy of the slot; nothing below views shm
        _fence()
        self._state[slot] = READ
        return SlotRecord(private)

    # -- lifetime --------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._is_closed:
            raise RingError(f"ring {self.name} is closed")

    @property
    def is_closed(self) -> bool:
        return self._is_closed

    def close(self) -> None:
        """Drop every view, then unmap. Idempotent. Reading a view after unmap would crash."""
        if self._is_closed:
            return
        self._is_closed = True
        self._attached = self._full_waits = self._state = self._seq = self._slots = None
        self._fields = {}
        self._shm.close()

    def unlink(self) -> None:
        """Remove the name (creator only; also after close). Mappings stay valid until unmapped."""
        if not self.is_creator:
            raise RingError(f"only the creator unlinks {self.name}")
        if self._is_unlinked:
            return
        self._is_unlinked = True
        try:
            self._shm.unlink()  # shm_unlink + one UNREGISTER to the shared resource tracker
        except FileNotFoundError:
            log.warning("ring %s was already removed", self.name)

    @property
    def is_unlinked(self) -> bool:
        return self._is_unlinked

    @staticmethod
    def remove_orphan(name: str) -> bool:
        """Unlink a ring whose creator died (GUI side). False if it was already gone."""
        try:
            shm = SharedMemory(name=name, track=False) if _TRACK_PARAM else SharedMemory(name=name)
        except FileNotFoundError:
            return False
        shm.close()
        try:
            shm.unlink()  # <= 3.12: also unregisters the creator's registration (a set)
        except FileNotFoundError:
            return False
        if _TRACK_PARAM:  # track=False skipped it; balance the dead creator's registration
            resource_tracker.unregister(shm._name, "shared_memory")
        log.info("removed orphaned ring %s", name)
        return True

    def __enter__(self) -> Ring:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
        if self.is_creator:
            self.unlink()

    def __repr__(self) -> str:
        return f"Ring({self.name!r}, n_slots={self.n_slots}, slot_bytes={self.slot_bytes})"
