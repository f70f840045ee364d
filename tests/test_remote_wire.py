"""The network wire (ipc.wire): signed frames, JSON headers, raw buffers, and everything decode refuses.

Pure numpy, no sockets: milliseconds.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from dpgviz.core.discovery import ModelEntry
from dpgviz.core.model_info import ModelInfo
from dpgviz.core.records import RecordLayout
from dpgviz.ipc import wire
from dpgviz.ipc.messages import (
    ExploreSampleDone,
    LoadModel,
    ModelLoaded,
    RunStarted,
    StartRun,
    StepReady,
    StopRun,
)
from dpgviz.ipc.ring import SlotRecord, slot_dtype

KEY = "ab" * 32
SIGNER = wire.Signer(KEY)


def slot_block(seq_len: int = 64, seed: int = 0) -> np.ndarray:
    """A ring slot's one-element structured copy, filled with random values."""
    layout = RecordLayout(seq_len=seq_len, top_k=8, n_ids=66)
    private = np.zeros(1, slot_dtype(layout))
    rng = np.random.default_rng(seed)
    for name in private.dtype.names:
        field = private[name]
        field[...] = rng.integers(0, 60, field.shape).astype(field.dtype)
    return private


def slot_record(seq_len: int = 64, seed: int = 0) -> dict[str, np.ndarray]:
    """A record's arrays as views of one copied ring slot, in a plain dict (each field's place is checked)."""
    private = slot_block(seq_len, seed)
    return {name: private[name][0] for name in private.dtype.names}


def step(seq_len: int = 64, seed: int = 0, is_slot: bool = False) -> StepReady:
    """A StepReady as the server relays it: `is_slot`, its arrays as ipc.ring.Ring.take returns them."""
    scalars = {"iteration": 3, "kind": 1, "target_masks": 9, "n_masked": 9, "forward_passes": 4, "offset": 0, "block": 0}
    arrays = SlotRecord(slot_block(seq_len, seed)) if is_slot else slot_record(seq_len, seed)
    return StepReady(7, 2, 5, scalars, 12.5, None, arrays)


def roundtrip(message, accepted=wire.EVENT_TYPES):
    got = wire.decode(wire.encode(message, SIGNER, "s1", 3), SIGNER, accepted)
    assert (got.session, got.n, len(got.messages)) == ("s1", 3, 1)
    return got.messages[0]


def resign(frames: list, header: dict) -> list:
    """The same buffers under a changed header, signed with the right key (a key holder's bad message)."""
    body = [json.dumps(header).encode(), *frames[3:]]
    return [wire.MAGIC, SIGNER.sign(body), *body]


@pytest.mark.parametrize("is_slot", [False, True], ids=["dict", "slot"])
def test_a_step_record_round_trips_exactly(is_slot: bool) -> None:
    sent = step(is_slot=is_slot)
    got = roundtrip(sent)
    assert isinstance(got, StepReady) and (got.run_id, got.slot, got.seq, got.t_written) == (7, 2, 5, 12.5)
    assert got.scalars == sent.scalars
    for name, arr in sent.arrays.items():
        assert got.arrays[name].dtype == arr.dtype and np.array_equal(got.arrays[name], arr), name


@pytest.mark.parametrize("is_slot", [False, True], ids=["dict", "slot"])
def test_a_records_arrays_travel_as_one_uncopied_buffer(is_slot: bool) -> None:
    sent = step(is_slot=is_slot)
    frames = wire.encode(sent, SIGNER, "s", 1)
    assert len(frames) == 4  # magic, signature, header, and the one slot
    base = next(iter(sent.arrays.values())).base
    assert np.shares_memory(frames[3], base)  # sent as it lies: no copy
    header = json.loads(frames[2])
    assert "__record__" in header["items"][0]["fields"]["arrays"]


def test_a_slot_record_is_read_only() -> None:
    arrays = SlotRecord(slot_block())
    for change in (lambda: arrays.update(tokens=arrays["score"]), lambda: arrays.pop("tokens"),
                   lambda: arrays.__setitem__("tokens", arrays["flags"]), lambda: arrays.clear()):
        with pytest.raises(TypeError):
            change()
    assert set(arrays) == set(arrays.block.dtype.names)


def test_views_of_a_slot_under_each_others_names_arrive_as_named() -> None:
    sent = step()
    sent.arrays["confidence"], sent.arrays["score"] = sent.arrays["score"], sent.arrays["confidence"]
    got = roundtrip(sent)
    for name in ("confidence", "score"):
        assert np.array_equal(got.arrays[name], sent.arrays[name]), name


def test_the_header_is_json_and_nothing_is_pickled() -> None:
    frames = wire.encode([step(), ModelLoaded(info())], SIGNER, "s", 1)
    header = json.loads(bytes(frames[2]).decode("utf-8"))
    assert [i["type"] for i in header["items"]] == ["StepReady", "ModelLoaded"]
    assert not any(bytes(f).startswith(b"\x80") for f in frames[:3])  # no pickle protocol marker


def info() -> ModelInfo:
    return ModelInfo("tiny", "/srv/ckpt.pt", 64, 1000, tuple("abc\n"), 6, device="cuda:0", dtype="bfloat16",
                     never_sample=(1,))


def test_model_info_entries_and_command_arrays_round_trip() -> None:
    assert roundtrip(ModelLoaded(info())).info == info()
    entries = [ModelEntry("out/ckpt.pt", Path("/srv/out/ckpt.pt"), Path("/srv/out/meta.pkl"), iter_num=5000,
                          best_val_loss=1.25)]
    assert roundtrip(wire.Welcome("gpu-host", entries, "boot")).models == entries
    tokens, protected = np.arange(10, dtype=np.int64), np.arange(10) % 2 == 0
    got = roundtrip(StartRun(3, {"steps": 4}, tokens, 2, protected, None, False), wire.COMMAND_TYPES)
    assert np.array_equal(got.tokens, tokens) and np.array_equal(got.protected, protected) and got.edited is None
    assert got.settings == {"steps": 4} and got.emit_initial is False


def test_nested_arrays_of_an_explorer_result_round_trip() -> None:
    preds = [{"probs": np.random.default_rng(1).random((5, 3)).astype(np.float32), "ids": np.arange(5)}]
    got = roundtrip(ExploreSampleDone(2, ["a"], preds))
    assert np.array_equal(got.predictions[0]["probs"], preds[0]["probs"])
    assert np.array_equal(got.predictions[0]["ids"], preds[0]["ids"])


def test_a_batch_keeps_its_order() -> None:
    batch = [step(seed=i) for i in range(5)]
    got = wire.decode(wire.encode(batch, SIGNER, "s", 9), SIGNER, wire.EVENT_TYPES).messages
    assert [np.array_equal(g.arrays["tokens"], b.arrays["tokens"]) for g, b in zip(got, batch, strict=True)] == [True] * 5


@pytest.mark.parametrize("where", ["header", "buffer"])
def test_a_changed_byte_breaks_the_signature(where: str) -> None:
    frames = [bytearray(bytes(f)) for f in wire.encode(step(), SIGNER, "s", 1)]
    frames[2 if where == "header" else 3][-5] ^= 1
    with pytest.raises(wire.BadSignature):
        wire.decode(frames, SIGNER, wire.EVENT_TYPES)


def test_another_key_is_refused() -> None:
    frames = wire.encode(step(), wire.Signer("cd" * 32), "s", 1)
    with pytest.raises(wire.BadSignature):
        wire.decode(frames, SIGNER, wire.EVENT_TYPES)
    assert wire.unverified_type(wire.encode(wire.Hello("x"), wire.Signer("cd" * 32), "s", 1)) == "Hello"


@pytest.mark.parametrize(
    "frames",
    [
        [],
        [b"garbage"],
        [b"dpgviz/0", b"0" * 64, b"{}"],
        [wire.MAGIC, b"short", b"{}"],
        [wire.MAGIC, b"0" * 64, b"{}"],  # unsigned
        [b"\x00" * 3] * 400,
    ],
    ids=["empty", "one-frame", "other-magic", "short-signature", "unsigned", "too-many-frames"],
)
def test_garbage_is_refused(frames: list) -> None:
    with pytest.raises(wire.WireError):
        wire.decode(frames, SIGNER, wire.EVENT_TYPES)


def test_a_truncated_message_is_refused() -> None:
    frames = wire.encode(step(), SIGNER, "s", 1)
    for cut in (frames[:3], [*frames[:3], bytes(frames[3])[:100]]):
        with pytest.raises(wire.WireError):
            wire.decode(cut, SIGNER, wire.EVENT_TYPES)


def _mutated(change) -> list:
    frames = wire.encode(step(), SIGNER, "s", 1)
    header = json.loads(frames[2])
    change(header)
    return resign(frames, header)


@pytest.mark.parametrize(
    "change",
    [
        lambda h: h.update(buffers=[5]),  # wrong buffer size
        lambda h: h.update(records=[[999999, h["records"][0][1]]]),  # a record bigger than its buffer
        lambda h: h["records"][0][1][0].__setitem__(1, "|O"),  # an object dtype
        lambda h: h["records"][0][1][0].__setitem__(1, ">f8"),  # big-endian
        lambda h: h["records"][0][1][0].__setitem__(3, 10**9),  # a field outside the record
        lambda h: h["items"][0]["fields"]["arrays"]["__record__"].__setitem__(2, 7),  # no such layout
        lambda h: h["items"][0].update(type="LoadModel"),  # a command where events are taken
        lambda h: h["items"][0].update(type="os.system"),
        lambda h: h["items"][0]["fields"].update(run_id="7"),  # a string where an int belongs
        lambda h: h["items"][0]["fields"].update(run_id=True),  # a bool is no int
        lambda h: h["items"][0]["fields"].update(evil=1),  # no such field
        lambda h: h["items"][0]["fields"].pop("seq"),  # a required field missing
        lambda h: h.update(items=[]),
        lambda h: h.pop("session"),
    ],
)
def test_a_signed_but_malformed_message_is_refused(change) -> None:
    with pytest.raises(wire.WireError):
        wire.decode(_mutated(change), SIGNER, wire.EVENT_TYPES)


def test_an_array_placeholder_cannot_point_outside_its_buffer() -> None:
    frames = wire.encode(StopRun(1), SIGNER, "s", 1)
    header = json.loads(frames[2])
    header["items"][0]["fields"]["run_id"] = {"__array__": [0, 8, "<i8", [4]]}
    header["buffers"] = [16]
    bad = resign([*frames[:3], b"\x00" * 16], header)
    with pytest.raises(wire.WireError):
        wire.decode(bad, SIGNER, wire.COMMAND_TYPES)


def test_commands_and_events_are_taken_on_their_own_side_only() -> None:
    assert "LoadModel" in wire.COMMAND_TYPES and "LoadModel" not in wire.EVENT_TYPES
    assert "StepReady" in wire.EVENT_TYPES and "StepReady" not in wire.COMMAND_TYPES
    assert "WorkerDied" not in wire.EVENT_TYPES and "Disconnected" not in wire.EVENT_TYPES  # made locally only
    with pytest.raises(wire.WireError):
        wire.decode(wire.encode(LoadModel(None), SIGNER, "s", 1), SIGNER, wire.EVENT_TYPES)
    assert roundtrip(RunStarted(1, {"seq_len": 4}, "", 8)).shm_name == ""


def test_connection_file_is_private_and_reads_back(tmp_path: Path) -> None:
    os.umask(0o022)
    path = wire.write_connection_file(tmp_path / "w" / "worker.json", "127.0.0.1", 5999, KEY)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    data = json.loads(path.read_text())
    assert data["signature_scheme"] == "hmac-sha256" and data["key"] == KEY and data["port"] == 5999
    target = wire.read_target(str(path))
    assert (target.host, target.port, target.key, target.address) == ("127.0.0.1", 5999, KEY, "127.0.0.1:5999")


def test_host_port_needs_a_key_and_bad_files_say_why(tmp_path: Path) -> None:
    assert wire.read_target("127.0.0.1:7000", "k").port == 7000
    with pytest.raises(ValueError, match="key"):
        wire.read_target("127.0.0.1:7000")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="not a dpgviz connection file"):
        wire.read_target(str(tmp_path / "bad.json"))
    with pytest.raises(ValueError, match="cannot read"):
        wire.read_target(str(tmp_path / "missing.json"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [("127.0.0.1:5", ("127.0.0.1", 5)), (":6", ("127.0.0.1", 6)), ("[::1]:7", ("::1", 7)),
     ("localhost", ("localhost", wire.DEFAULT_PORT)), ("5601", ("127.0.0.1", 5601)), (" 0 ", ("127.0.0.1", 0))],
)
def test_addresses_parse(text: str, expected: tuple) -> None:
    assert wire.parse_address(text) == expected


def test_worker_listen_and_listen_runs_read_a_port_alike() -> None:
    from dpgviz.ipc.listen import parse_listen

    for text in ("5601", "127.0.0.1:5601", "0.0.0.0:5601", ":5601"):
        assert parse_listen(text) == wire.parse_address(text)  # `--listen-runs` and `worker --listen`
    assert parse_listen(5601) == ("127.0.0.1", 5601)


def test_a_message_signed_over_one_connections_nonce_fails_on_another() -> None:
    signer = wire.Signer("ab" * 32)
    one, other = signer.bound(b"\x01" * 32), signer.bound(b"\x02" * 32)
    frames = wire.encode(wire.Hello("s", "me"), one, "s", 2)
    assert wire.decode(frames, one, wire.HELLO_TYPES).messages[0].client == "me"
    for wrong in (other, signer):  # another connection's nonce, or none (as before the challenge)
        with pytest.raises(wire.BadSignature):
            wire.decode(frames, wrong, wire.HELLO_TYPES)
    unbound = wire.encode(wire.Knock(), signer, "s", 1)
    with pytest.raises(wire.BadSignature):
        wire.decode(unbound, one, wire.KNOCK_TYPES)


@pytest.mark.parametrize("header", [b"[" * 4000, b'{"items":' * 1500 + b"}" * 1500, b'{"n":' + b"9" * 5000 + b"}"])
def test_headers_that_nest_too_deep_or_overflow_are_dropped_not_raised(header: bytes) -> None:
    frames = [wire.MAGIC, b"0" * 64, header]
    assert wire.unverified_type(frames) is None  # a RecursionError before
    signer = wire.Signer("ab" * 32)
    signed = [wire.MAGIC, signer.sign([header]), header]
    with pytest.raises(wire.WireError):
        wire.decode(signed, signer, wire.COMMAND_TYPES)


def test_loopback_is_told_apart() -> None:
    assert wire.is_loopback("127.0.0.1") and wire.is_loopback("::1") and wire.is_loopback("localhost")
    assert not wire.is_loopback("0.0.0.0") and not wire.is_loopback("10.0.0.1")
