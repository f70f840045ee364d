"""Session files: round trip, memory mapping, atomic saving, and refusing bad files."""

from __future__ import annotations

import hashlib
import json
import os
import struct
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
from session_data import FORK_RECORD, sampled_store

import dpgviz
from dpgviz.core.records import FLAG_EDITED
from dpgviz.store import session as session_mod
from dpgviz.store.session import Session, SessionError, checkpoint_sha256
from dpgviz.store.session_format import ALIGN, MAGIC
from dpgviz.store.session_open import open_session, read_header, verify_session
from dpgviz.store.session_save import save_session
from dpgviz.store.step_store import StepStore


@pytest.fixture(scope="module")
def run():
    return sampled_store()


@pytest.fixture
def saved(run, tmp_path):
    store, vocab, settings = run
    ckpt = tmp_path / "ckpt.pt"
    ckpt.write_bytes(b"weights")
    path = save_session(
        tmp_path / "run.dpgviz",
        store,
        vocab,
        settings=settings.to_dict(),
        model_path=ckpt,
        model_sha256=checkpoint_sha256(ckpt),
        model_info={"name": "tiny"},
    )
    return path


def _assert_same_columns(a: StepStore, b: StepStore) -> None:
    assert len(a) == len(b)
    for name in a.columns:
        x, y = a.column(name), b.column(name)
        assert x.dtype == y.dtype and x.shape == y.shape, name
        assert np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), name


def test_round_trip_gives_identical_arrays_and_tree(run, saved):
    store, vocab, settings = run
    with open_session(saved) as s:
        _assert_same_columns(store, s.store)
        assert s.store.tree() == store.tree()
        assert s.vocab == vocab and s.vocab.mask_id == vocab.mask_id
        assert s.settings == settings.to_dict()
        assert s.model_info == {"name": "tiny"}
        assert s.app_version == dpgviz.__version__


def test_child_branch_starts_with_its_edited_record(saved):
    with open_session(saved) as s:
        child = s.branch("1")
        assert (child.parent, child.fork_record) == ("0", FORK_RECORD)
        first = s.store.record(child.rows[0])
        assert first.kind == "initial"
        assert np.count_nonzero(first.flags & FLAG_EDITED) == 3


def test_open_maps_columns_read_only(saved):
    with open_session(saved) as s:
        tokens = s.store.column("tokens")
        assert not tokens.flags.writeable
        # A view of the file's one mapping, not a copy: the base chain ends at the session's mmap.
        base = tokens
        while isinstance(base, (np.ndarray, memoryview)):
            base = base.base if isinstance(base, np.ndarray) else base.obj
        assert base is s._mmap
        # ...so bytes written to the file show through it (MAP_SHARED), proving nothing was read in.
        offset = np.frombuffer(s._mmap, np.uint8).__array_interface__["data"][0]
        at = tokens.__array_interface__["data"][0] - offset
        first = tokens[0, 0]
        with open(saved, "r+b") as f:
            f.seek(at)
            f.write((first + 1).tobytes())
        assert tokens[0, 0] == first + 1
        with pytest.raises(ValueError):
            tokens[0, 0] = 1


def test_opened_store_accepts_new_records_in_memory(run, saved):
    store, _, _ = run
    with open_session(saved) as s:
        row = s.store.append_record(store.record(0), "0")
        assert row == len(store)
        assert s.store.column("tokens").flags.writeable
        assert np.array_equal(s.store.get("tokens", row), store.get("tokens", 0))


def test_resaving_an_opened_session_over_itself(run, saved):
    store, vocab, _ = run
    with open_session(saved) as s:
        save_session(saved, s.store, s.vocab, settings=s.settings)
        _assert_same_columns(store, s.store)  # the old mapping is still readable
    with open_session(saved) as again:
        _assert_same_columns(store, again.store)


def test_empty_store_round_trips(run, tmp_path):
    _, vocab, _ = run
    empty = StepStore(run[0].layout)
    path = save_session(tmp_path / "empty.dpgviz", empty, vocab)
    with open_session(path) as s:
        assert len(s.store) == 0 and s.store.tree() == []


def test_save_leaves_no_temporary_files(saved):
    assert sorted(p.name for p in saved.parent.iterdir()) == ["ckpt.pt", "run.dpgviz"]


def test_failed_save_keeps_the_previous_file(run, saved):
    store, vocab, _ = run
    before = saved.read_bytes()
    with pytest.raises(SessionError, match="not plain JSON"):
        save_session(saved, store, vocab, model_info={"bad": float("nan")})
    assert saved.read_bytes() == before
    assert len(list(saved.parent.iterdir())) == 2


def test_save_into_missing_folder_is_refused(run, tmp_path):
    store, vocab, _ = run
    with pytest.raises(SessionError, match="cannot write"):
        save_session(tmp_path / "nope" / "x.dpgviz", store, vocab)


def test_columns_are_aligned_and_inside_the_file(saved):
    header = read_header(saved)
    size = saved.stat().st_size
    assert header["data_end"] == size
    for entry in header["columns"]:
        assert entry["offset"] % ALIGN == 0
        assert entry["offset"] + entry["nbytes"] <= size


@pytest.mark.parametrize("keep", [0, 5, 20, 100, -1])
def test_truncated_file_is_refused(saved, keep):
    data = saved.read_bytes()
    cut = len(data) - 1 if keep == -1 else keep
    saved.write_bytes(data[:cut])
    with pytest.raises(SessionError, match=r"cut short|not a dpgviz session"):
        open_session(saved)


def test_truncated_file_names_the_missing_bytes(saved):
    data = saved.read_bytes()
    saved.write_bytes(data[: len(data) // 2])
    with pytest.raises(SessionError, match=rf"cut short \({len(data) // 2} of {len(data)} bytes\)"):
        open_session(saved)


def test_corrupt_header_is_refused(saved):
    data = bytearray(saved.read_bytes())
    at = data.index(b'"count":') + len(b'"count":')
    data[at] = ord("9") if data[at] != ord("9") else ord("8")
    saved.write_bytes(bytes(data))
    with pytest.raises(SessionError, match="header checksum"):
        open_session(saved)


def test_corrupt_data_is_refused_when_verified(saved):
    header = read_header(saved)
    tokens = next(e for e in header["columns"] if e["name"] == "tokens")
    data = bytearray(saved.read_bytes())
    data[tokens["offset"]] ^= 0xFF
    saved.write_bytes(bytes(data))
    with pytest.raises(SessionError, match="column tokens does not match its checksum"):
        open_session(saved)  # small files are verified on open
    with pytest.raises(SessionError, match="checksum"):
        verify_session(saved)
    open_session(saved, verify=False).close()  # large-file path: mapped without reading


def test_trailing_bytes_are_refused(saved):
    with saved.open("ab") as f:
        f.write(b"junk")
    with pytest.raises(SessionError, match="4 unexpected bytes"):
        open_session(saved)


def test_other_format_version_is_refused(saved):
    data = bytearray(saved.read_bytes())
    data[8:12] = struct.pack("<I", 99)
    saved.write_bytes(bytes(data))
    with pytest.raises(SessionError, match="format version 99, newer than"):
        open_session(saved)


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"", "too small"),
        (b"hello world, this is not a session at all", "not a dpgviz session$"),
        (b"PK\x03\x04" + b"\0" * 60, "zip archive"),
        (b'{"steps": []}' + b" " * 40, "looks like JSON"),
    ],
)
def test_non_session_is_refused(tmp_path, content, why):
    path = tmp_path / "x.dpgviz"
    path.write_bytes(content)
    with pytest.raises(SessionError, match=why):
        open_session(path)


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(SessionError, match="cannot read"):
        open_session(tmp_path / "missing.dpgviz")


def _rewrite_header(path, edit) -> None:
    """Change the header JSON and re-checksum it, keeping the data where it is."""
    data = bytearray(path.read_bytes())
    magic, version, _, length = struct.unpack_from("<8sIIQ", data)
    header = json.loads(data[24 : 24 + length])
    edit(header)
    blob = json.dumps(header, separators=(",", ":")).encode()
    assert len(blob) <= length
    blob = blob + b" " * (length - len(blob))  # JSON allows trailing whitespace
    struct.pack_into("<8sIIQ", data, 0, magic, version, zlib.crc32(blob), length)
    data[24 : 24 + length] = blob
    path.write_bytes(bytes(data))


def test_tree_naming_missing_rows_is_refused(saved):
    _rewrite_header(saved, lambda h: h["tree"][1]["rows"].__setitem__(0, 99))
    with pytest.raises(SessionError, match="rows outside"):
        open_session(saved)


def test_row_in_two_branches_is_refused(saved):
    _rewrite_header(saved, lambda h: h["tree"][1]["rows"].__setitem__(0, 0))
    with pytest.raises(SessionError, match="two branches"):
        open_session(saved)


def test_column_past_the_end_is_refused(saved):
    _rewrite_header(saved, lambda h: h["columns"][-1].__setitem__("offset", h["columns"][-1]["offset"] + 64))
    with pytest.raises(SessionError, match="outside the data"):
        open_session(saved)


def test_header_starts_with_magic(saved):
    assert saved.read_bytes()[:8] == MAGIC


def test_model_status_follows_the_checkpoint(saved):
    with open_session(saved) as s:
        assert s.model_status() == "ok"
        ckpt = s.model_path
        with open(ckpt, "ab") as f:
            f.write(b"more")
        assert s.model_status() == "changed"
        os.remove(ckpt)
        assert s.model_status() == "missing"
    assert Session(store=StepStore(s.store.layout), vocab=s.vocab).model_status() == "unrecorded"


def test_checkpoint_hash_is_sha256(tmp_path):
    path = tmp_path / "ckpt.pt"
    path.write_bytes(b"abc")
    assert checkpoint_sha256(path) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_checkpoint_hash_cache_follows_changes_and_stays_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(session_mod, "_hash_cache", session_mod.OrderedDict())
    monkeypatch.setattr(session_mod, "_HASH_CACHE_SIZE", 3)
    path = tmp_path / "ckpt.pt"
    path.write_bytes(b"abc")
    first = checkpoint_sha256(path)
    path.write_bytes(b"abd")  # a new size or mtime is a new key: the old digest is not reused
    os.utime(path, ns=(1, 1))
    assert checkpoint_sha256(path) == hashlib.sha256(b"abd").hexdigest() != first
    for i in range(5):
        other = tmp_path / f"{i}.pt"
        other.write_bytes(bytes([i]))
        assert checkpoint_sha256(other) == hashlib.sha256(bytes([i])).hexdigest()
    assert len(session_mod._hash_cache) == 3  # the least recently used entries went
    assert [Path(k[0]).name for k in session_mod._hash_cache] == ["2.pt", "3.pt", "4.pt"]


def test_checkpoint_hash_is_safe_from_two_threads(tmp_path, monkeypatch):
    monkeypatch.setattr(session_mod, "_hash_cache", session_mod.OrderedDict())
    monkeypatch.setattr(session_mod, "_HASH_CACHE_SIZE", 4)
    files = []
    for i in range(12):
        files.append(tmp_path / f"{i}.pt")
        files[-1].write_bytes(bytes([i]) * 1000)
    want = {f: hashlib.sha256(f.read_bytes()).hexdigest() for f in files}
    errors: list[BaseException] = []

    def hammer(order: list[Path]) -> None:
        try:
            for _ in range(30):
                for f in order:
                    assert checkpoint_sha256(f) == want[f]
        except BaseException as exc:  # reported to the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(o,)) for o in (files, files[::-1])]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors and not any(t.is_alive() for t in threads)
    assert len(session_mod._hash_cache) <= 4


def test_unknown_branch_and_record_are_refused(saved):
    with open_session(saved) as s:
        with pytest.raises(SessionError, match=r"no branch '7'.*branches: 0, 1"):
            s.branch("7")
        n = len(s.branch().rows)
        assert s.record_index(None, -1) == n - 1
        with pytest.raises(SessionError, match=f"records 0..{n - 1}, not {n}"):
            s.record_row(None, n)


def test_numpy_scalars_and_non_ascii_vocabulary_round_trip(run, tmp_path):
    store, vocab, _ = run
    wide = type(vocab)(itos=(*vocab.itos[:-2], "é", "日本"), model_vocab_size=vocab.model_vocab_size)
    path = save_session(tmp_path / "x.dpgviz", store, wide, settings={"steps": np.int64(8), "t": np.float32(0.5)})
    with open_session(path) as s:
        assert s.vocab == wide
        assert s.settings == {"steps": 8, "t": 0.5}
