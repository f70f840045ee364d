"""The shared-memory ring on its own: layout, slot states, copies, lifetime. One process, real shm."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys

import numpy as np
import pytest

from dpgviz.core.records import RecordLayout
from dpgviz.ipc.ring import FREE, READ, WRITTEN, Ring, RingError, default_n_slots, ring_name, slot_dtype

LAYOUT = RecordLayout(seq_len=37, top_k=3, n_ids=66)  # odd sizes, so alignment padding shows


def record_arrays(layout: RecordLayout, value: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(value)
    out = {}
    for name, (shape, dtype) in layout.token_fields().items():
        if dtype.kind == "f":
            out[name] = rng.random(shape).astype(dtype)
        else:
            out[name] = rng.integers(0, 60, shape).astype(dtype)
    return out


@pytest.fixture
def ring():
    created = Ring.create(ring_name(f"test{os.getpid()}_{secrets.token_hex(3)}", 1), LAYOUT, n_slots=3)
    yield created
    created.close()
    created.unlink()


def shm_exists(name: str) -> bool:
    return os.path.exists(f"/dev/shm/{name}")


def test_slot_fields_are_8_byte_aligned_and_slots_64():
    dtype = slot_dtype(LAYOUT)
    assert all(offset % 8 == 0 for _, offset in dtype.fields.values())
    assert dtype.itemsize % 64 == 0
    assert dtype.itemsize >= LAYOUT.bytes_per_record


def test_default_slots_stay_within_budget():
    assert default_n_slots(RecordLayout(seq_len=1024)) == 256
    assert default_n_slots(RecordLayout(seq_len=65536)) * slot_dtype(RecordLayout(seq_len=65536)).itemsize <= 32 << 20
    assert default_n_slots(RecordLayout(seq_len=1 << 20)) == 4


def test_record_round_trips_through_attached_ring(ring):
    reader = Ring.attach(ring.name, LAYOUT)
    sent = record_arrays(LAYOUT, 7)
    ring.write(1, seq=5, arrays=sent)
    got = reader.take(1, seq=5)
    reader.close()
    for name, value in sent.items():
        np.testing.assert_array_equal(got[name], value)
        assert got[name].dtype == value.dtype


def test_slot_moves_free_written_read_free(ring):
    reader = Ring.attach(ring.name, LAYOUT)
    assert ring.states()[0] == "free"
    ring.write(0, 0, record_arrays(LAYOUT, 0))
    assert ring.states()[0] == "written" and not ring.is_writable(0)
    reader.take(0, 0)
    assert ring.states()[0] == "read" and ring.is_writable(0)
    ring.write(0, 3, record_arrays(LAYOUT, 3))  # the writer reclaims READ on its way to WRITTEN
    assert ring.states()[0] == "written"
    reader.close()
    assert (FREE, WRITTEN, READ) == (0, 1, 2)


def test_writer_refuses_a_slot_the_reader_has_not_taken(ring):
    ring.write(2, 0, record_arrays(LAYOUT, 0))
    with pytest.raises(RingError, match="not yet taken"):
        ring.write(2, 3, record_arrays(LAYOUT, 3))


def test_take_checks_the_record_index(ring):
    reader = Ring.attach(ring.name, LAYOUT)
    ring.write(0, 0, record_arrays(LAYOUT, 0))
    with pytest.raises(RingError, match="expected record 1"):
        reader.take(0, 1)
    reader.close()


def test_take_hands_out_copies(ring):
    reader = Ring.attach(ring.name, LAYOUT)
    ring.write(0, 0, record_arrays(LAYOUT, 0))
    got = reader.take(0, 0)
    before = got["tokens"].copy()
    ring.write(0, 3, record_arrays(LAYOUT, 3))
    reader.close()  # reading a view after close would crash the process; a copy is fine
    np.testing.assert_array_equal(got["tokens"], before)


def test_closed_ring_raises_instead_of_touching_memory(ring):
    reader = Ring.attach(ring.name, LAYOUT)
    reader.close()
    with pytest.raises(RingError, match="closed"):
        reader.take(0, 0)


def test_attach_flag_reaches_the_writer(ring):
    reader = Ring.attach(ring.name, LAYOUT)
    assert not ring.is_attached
    reader.mark_attached()
    assert ring.is_attached
    reader.close()


def test_attach_refuses_another_layout(ring):
    with pytest.raises(RingError, match="not a ring for"):
        Ring.attach(ring.name, RecordLayout(seq_len=38, top_k=3))


def test_only_the_creator_unlinks(ring):
    reader = Ring.attach(ring.name, LAYOUT)
    with pytest.raises(RingError, match="only the creator"):
        reader.unlink()
    reader.close()
    ring.unlink()
    assert not shm_exists(ring.name)


def test_remove_orphan_unlinks_once():
    name = ring_name(f"test{os.getpid()}_{secrets.token_hex(3)}", 1)
    created = Ring.create(name, LAYOUT, 2)
    created.close()
    assert Ring.remove_orphan(name)
    assert not shm_exists(name)
    assert not Ring.remove_orphan(name)


def test_names_carry_the_dpgviz_prefix():
    with pytest.raises(ValueError, match="dpgviz_"):
        Ring.create("other_ring", LAYOUT, 2)


def test_resource_tracker_stays_quiet():
    # create + attach + unlink, and create + orphan removal: each name unregistered exactly once.
    script = """
from dpgviz.core.records import RecordLayout
from dpgviz.ipc.ring import Ring
layout = RecordLayout(seq_len=8)
a = Ring.create("dpgviz_quiet_{pid}_a", layout, 2)
b = Ring.attach(a.name, layout)
b.close(); a.close(); a.unlink()
c = Ring.create("dpgviz_quiet_{pid}_c", layout, 2)
c.close()
Ring.remove_orphan(c.name)
""".format(pid=os.getpid())
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
