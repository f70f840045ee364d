"""Recovery journal: what is journaled comes back whole, a torn tail is left out, a SIGKILL loses at most a second.

Stores are built from seeded random records (no model): the journal only moves arrays.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from dpgviz.core.paths import cache_dir, log_path, recovery_path
from dpgviz.core.records import KINDS, RecordLayout, StepRecord
from dpgviz.core.vocab import Vocabulary
from dpgviz.store.journal import Journal
from dpgviz.store.journal_reader import (
    RecoveryInfo,
    discard_recovery,
    find_recovery,
    recover,
)
from dpgviz.store.session import SessionError
from dpgviz.store.session_save import save_session
from dpgviz.store.step_store import StepStore

VOCAB = Vocabulary(itos=tuple("abcdefghij"))  # mask id 10
LAYOUT = RecordLayout(seq_len=24, top_k=4, n_ids=VOCAB.n_ids)
META = {
    "settings": {"length": 24, "steps": 4},
    "model_path": "/models/tiny",
    "model_sha256": "ab" * 32,
    "model_info": {"name": "tiny", "n_layer": 2},
}


def make_record(i: int, layout: RecordLayout = LAYOUT) -> StepRecord:
    """Record `i` of a deterministic sequence: masks, float16 fields and candidates at some positions."""
    rng = np.random.default_rng(i)
    n, k = layout.seq_len, layout.top_k
    rec = layout.empty()
    is_masked = rng.random(n) < 0.4
    rec.tokens[:] = np.where(is_masked, VOCAB.mask_id, rng.integers(0, VOCAB.size, n))
    rec.flags[:] = is_masked.astype(np.uint8)
    for name in ("confidence", "score", "entropy"):
        getattr(rec, name)[:] = rng.random(n).astype(np.float16)
    has_cands = rng.random(n) < 0.5
    rec.top_ids[has_cands] = rng.integers(0, VOCAB.size, (int(has_cands.sum()), k))
    rec.top_probs[has_cands] = rng.random((int(has_cands.sum()), k)).astype(np.float16) + np.float16(0.01)
    rec.kind = KINDS[i % 4]
    rec.iteration, rec.n_masked, rec.target_masks, rec.forward_passes = i // 2, int(is_masked.sum()), 3, i
    return rec


def new_store(layout: RecordLayout = LAYOUT) -> StepStore:
    return StepStore(layout, capacity=4, mask_id=VOCAB.mask_id)  # small: rows outgrow their arrays between syncs


def edit_args(store: StepStore, branch: str, record: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """tokens / protected / edited for a fork of `branch` at `record`: a few visible tokens changed."""
    tokens = store.get("tokens", int(store.history(branch)[record])).astype(np.int64)
    visible = np.flatnonzero(tokens != VOCAB.mask_id)[:3]
    edited = np.zeros(LAYOUT.seq_len, dtype=bool)
    edited[visible] = True
    tokens[visible] = seed % VOCAB.size
    protected = edited.copy()
    return tokens, protected, edited


def assert_same_store(got: StepStore, want: StepStore) -> None:
    """Every row (referenced or not), the pool, each branch's history and the whole tree agree."""
    assert len(got) == len(want)
    assert got.layout == want.layout
    for name, col in want.columns.items():
        assert got.column(name).tobytes() == col[: len(want)].tobytes(), name
    for name, arr in want.pool.items():
        assert got.pool[name][: got.pool_count].tobytes() == arr[: want.pool_count].tobytes(), name
    assert got.tree() == want.tree()
    assert got.next_branch_id == want.next_branch_id
    for branch in want.branch_order:
        assert got.history(branch).tolist() == want.history(branch).tolist()
        for row in want.history(branch).tolist():
            for a, b in zip(got.top_k(row), want.top_k(row), strict=True):
                assert a.tobytes() == b.tobytes()


def entry_ends(path: Path) -> list[int]:
    """Byte offsets where each entry ends, read by the documented framing (12-byte prefix, 13-byte frames)."""
    data = path.read_bytes()
    ends, at = [], 12
    while at < len(data):
        _crc, length, _kind = struct.unpack_from("<IQc", data, at)
        at += 13 + length
        ends.append(at)
    return ends


@pytest.fixture
def journal_path(tmp_path: Path) -> Path:
    return tmp_path / "recovery.dpgjournal"


# -- round trips ------------------------------------------------------------------------------
def test_recover_gives_back_every_row_branch_edit_and_label(journal_path: Path) -> None:
    store = new_store()
    journal = Journal(journal_path, flush_s=0.05)

    def sync_and_check(meta: dict = META) -> None:
        """Sync, then the file alone must give back the store as it is now (the process may die next)."""
        journal.sync(store, VOCAB, meta)
        assert journal.wait()
        assert_same_store(recover(journal_path).store, store)

    try:
        root = store.new_branch(META["settings"], label="root")
        journal.sync(store, VOCAB, META)  # no records yet: no file
        assert journal.wait() and not journal_path.exists()
        for i in range(9):
            store.append_record(make_record(i), root.id)
            if i % 3 == 2:
                sync_and_check()
        child = store.fork(root.id, 3, *edit_args(store, root.id, 3, 1), {"steps": 4, "seed": 1}, label="edit",
                           edits=[{"op": "replace", "start": 0, "stop": 2, "text": "ab"}])
        sync_and_check()
        store.amend_edit(child.id, *edit_args(store, root.id, 3, 2), edits=[{"op": "mask", "start": 4, "stop": 6}])
        sync_and_check()
        child.settings = {"steps": 6, "seed": 1}  # a restart's settings are assigned without a version bump
        for i in range(9, 13):
            store.append_record(make_record(i), child.id)
            journal.sync(store, VOCAB, META)
        time.sleep(journal.flush_s)  # what changes without a version bump is looked for once per flush_s ...
        store.append_record(make_record(13), child.id)
        sync_and_check()  # ... when something else changes
        doomed = store.fork(child.id, 2, *edit_args(store, child.id, 2, 3), {}, label="doomed")
        store.append_record(make_record(14), doomed.id)
        sync_and_check()
        store.rename(root.id, "renamed root")
        sync_and_check()
        store.delete(doomed.id)
        sync_and_check()
        store.new_branch({"steps": 2}, label="second root")
        for i in range(15, 18):
            store.append_record(make_record(i), store.branch_order[-1])
        sync_and_check({**META, "model_path": "/models/other"})  # a later meta wins
        journal.flush()
        assert journal.wait()
        session = recover(journal_path)
    finally:
        journal.close()
    assert_same_store(session.store, store)
    assert [store.branches[b].label for b in session.store.branch_order] == ["renamed root", "edit", "second root"]
    assert session.vocab == VOCAB
    assert session.store.mask_id == VOCAB.mask_id
    assert (session.settings, session.model_sha256, session.model_info) == (
        META["settings"], META["model_sha256"], META["model_info"]
    )
    assert session.model_path == "/models/other"
    assert session.path is None
    session.close()


def test_recovered_store_takes_new_records_and_branches(journal_path: Path) -> None:
    store = new_store()
    root = store.new_branch({}, label="root")
    for i in range(5):
        store.append_record(make_record(i), root.id)
    with Journal(journal_path) as journal:
        journal.sync(store, VOCAB, META)
        journal.close()  # not deleted: closed explicitly, keeps what was synced
    recovered = recover(journal_path).store
    recovered.append_record(make_record(5), root.id)
    assert recovered.new_branch({}).id == str(store.next_branch_id)
    assert recovered.record(5).tokens.tobytes() == make_record(5).tokens.tobytes()


def test_a_replaced_store_starts_a_new_generation(journal_path: Path) -> None:
    first, second = new_store(), new_store(RecordLayout(seq_len=40, top_k=4, n_ids=VOCAB.n_ids))
    with Journal(journal_path, flush_s=0.01) as journal:
        root = first.new_branch({}, label="first")
        for i in range(6):
            first.append_record(make_record(i), root.id)
        journal.sync(first, VOCAB, META)
        other = second.new_branch({}, label="second")
        for i in range(3):
            second.append_record(make_record(i, second.layout), other.id)
        journal.sync(second, VOCAB, META)
        assert journal.wait()
        session = recover(journal_path)
        assert_same_store(session.store, second)
        journal.clear()


def test_rows_outgrowing_a_chunk_are_written_in_several_entries(journal_path: Path, monkeypatch) -> None:
    from dpgviz.store import journal as journal_mod

    monkeypatch.setattr(journal_mod, "CHUNK_BYTES", 1000)  # a few rows per entry
    store = new_store()
    root = store.new_branch({}, label="root")
    for i in range(30):
        store.append_record(make_record(i % 3), root.id)  # repeats share pool entries across rows
    with Journal(journal_path) as journal:
        journal.sync(store, VOCAB, META)
        assert journal.wait()
        assert len(entry_ends(journal_path)) > 5
        assert_same_store(recover(journal_path).store, store)


# -- damage -----------------------------------------------------------------------------------
@pytest.fixture
def two_batches(journal_path: Path) -> tuple[StepStore, list[dict], int, int]:
    """A journal of 5 records, then 5 more and a rename in a second batch: (store, tree after the first, sizes)."""
    store = new_store()
    root = store.new_branch({}, label="root")
    journal = Journal(journal_path)
    for i in range(5):
        store.append_record(make_record(i), root.id)
    journal.sync(store, VOCAB, META)
    assert journal.wait()
    first_tree, first_size = copy.deepcopy(store.tree()), journal_path.stat().st_size
    for i in range(5, 10):
        store.append_record(make_record(i), root.id)
    store.rename(root.id, "later")
    journal.sync(store, VOCAB, META)
    journal.close()
    return store, first_tree, first_size, journal_path.stat().st_size


@pytest.mark.parametrize("cut", ["in the frame", "in the payload", "last byte"])
def test_a_torn_last_entry_is_left_out(two_batches, journal_path: Path, cut: str) -> None:
    store, first_tree, first_size, full_size = two_batches
    keep = {"in the frame": first_size + 5, "in the payload": first_size + 200, "last byte": full_size - 1}[cut]
    with journal_path.open("r+b") as f:
        f.truncate(keep)
    session = recover(journal_path)
    assert len(session.store) == 5
    assert session.store.tree() == first_tree
    for row in range(5):
        assert session.store.record(row).tokens.tobytes() == make_record(row).tokens.tobytes()
    assert find_recovery(journal_path).n_records == 5


def test_a_corrupt_last_entry_is_left_out(two_batches, journal_path: Path) -> None:
    _store, first_tree, _first_size, full_size = two_batches
    data = bytearray(journal_path.read_bytes())
    data[full_size - 10] ^= 0xFF  # a bit flip the CRC catches
    journal_path.write_bytes(bytes(data))
    assert recover(journal_path).store.tree() == first_tree


def test_a_whole_journal_reads_with_no_damage_and_a_cut_one_says_what_it_read(two_batches, journal_path: Path) -> None:
    _store, _tree, first_size, _full_size = two_batches
    assert recover(journal_path).damage is None
    with journal_path.open("r+b") as f:
        f.truncate(first_size + 200)
    damage = recover(journal_path).damage
    assert damage is not None and damage.records_recovered == 5 and damage.records_written is None  # nothing left says
    assert damage.describe() == f"partial: 5 records recovered (the entry at byte {first_size} is cut short)"


def test_a_journal_damaged_before_its_first_record_is_refused_saying_where(two_batches, journal_path: Path) -> None:
    data = bytearray(journal_path.read_bytes())
    first_batch = entry_ends(journal_path)[0]  # the header's end: the first batch starts here
    data[first_batch + 40] ^= 0x01
    journal_path.write_bytes(bytes(data))
    with pytest.raises(SessionError, match=r"holds no records to recover \(it is damaged before its first: "
                       rf"the entry at byte {first_batch} fails its checksum\)"):
        recover(journal_path)


def test_sigkill_loses_nothing_synced_a_second_before(journal_path: Path) -> None:
    child = (
        "import sys, time\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from test_journal import META, VOCAB, make_record, new_store\n"
        "from dpgviz.store.journal import Journal\n"
        "store = new_store()\n"
        "root = store.new_branch({}, label='root')\n"
        f"journal = Journal({str(journal_path)!r}, flush_s=0.2)\n"
        "for i in range(100000):\n"
        "    store.append_record(make_record(i), root.id)\n"
        "    journal.sync(store, VOCAB, META)\n"
        "    print(i + 1, flush=True)\n"
        "    time.sleep(0.005)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        synced, deadline = 0, time.monotonic() + 30
        while synced < 40:
            line = proc.stdout.readline()
            assert line and time.monotonic() < deadline, proc.stderr.read().decode() if not line else "child too slow"
            synced = int(line)
        time.sleep(1.2)  # the child keeps appending: these 40 are more than a second old at the kill
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    store = recover(journal_path).store
    assert len(store) >= synced
    assert store.history("0").tolist() == list(range(len(store)))
    for row in range(len(store)):
        want, got = make_record(row), store.record(row)
        for name in ("tokens", "confidence", "flags", "top_ids", "top_probs"):
            assert getattr(got, name).tobytes() == getattr(want, name).tobytes(), (row, name)


# -- finding, offering, refusing --------------------------------------------------------------------
def test_find_recovery_counts_records_and_branches(two_batches, journal_path: Path) -> None:
    before = dt.datetime.now() - dt.timedelta(minutes=1)
    info = find_recovery(journal_path)
    assert (info.path, info.n_records, info.n_branches) == (journal_path, 10, 1)
    assert before < info.mtime <= dt.datetime.now()
    assert info.describe().startswith(f"Recover the unsaved work of {info.mtime:%Y-%m-%d %H:%M} (10 records")


def test_describe_reads_as_an_offer() -> None:
    info = RecoveryInfo(Path("x"), dt.datetime(2026, 12, 5, 9, 14), 312, 3)
    assert info.describe() == "Recover the unsaved work of 2026-12-05 09:14 (312 records, 3 branches)"
    assert RecoveryInfo(Path("x"), dt.datetime(2026, 1, 2, 3, 4), 1, 1).describe().endswith("(1 record, 1 branch)")


def test_nothing_to_recover_from_a_missing_or_empty_file(journal_path: Path) -> None:
    assert find_recovery(journal_path) is None
    journal_path.write_bytes(b"")
    assert find_recovery(journal_path) is None
    assert not journal_path.exists()


def test_a_journal_of_no_records_is_nothing_and_is_deleted(two_batches, journal_path: Path) -> None:
    header_end = entry_ends(journal_path)[0]
    with journal_path.open("r+b") as f:
        f.truncate(header_end)
    with pytest.raises(SessionError, match="no records"):
        recover(journal_path)
    assert find_recovery(journal_path) is None
    assert not journal_path.exists()


@pytest.mark.parametrize(
    "content", [b"", b"hello, not a journal at all", b"\x89JOURNAL\x07\x00\x00\x00", json.dumps({"a": 1}).encode()]
)
def test_recover_refuses_what_is_no_journal(journal_path: Path, content: bytes) -> None:
    journal_path.write_bytes(content)
    with pytest.raises(SessionError) as err:
        recover(journal_path)
    assert "\n" not in str(err.value)


def test_find_recovery_refuses_a_foreign_file_and_leaves_it(tmp_path: Path) -> None:
    store = new_store()
    store.append_record(make_record(0), store.new_branch({}).id)
    session_file = save_session(tmp_path / "s.dpgviz", store, VOCAB)
    with pytest.raises(SessionError, match="not a dpgviz recovery journal"):
        find_recovery(session_file)
    assert session_file.exists()


# -- clearing and closing ----------------------------------------------------------------------------
def test_clear_deletes_and_the_next_change_journals_the_whole_store(journal_path: Path) -> None:
    store = new_store()
    root = store.new_branch({}, label="root")
    with Journal(journal_path) as journal:
        for i in range(4):
            store.append_record(make_record(i), root.id)
        journal.sync(store, VOCAB, META)
        assert journal.wait() and journal_path.exists()
        journal.clear()  # saved
        journal.sync(store, VOCAB, META)
        assert journal.wait() and not journal_path.exists()
        store.append_record(make_record(4), root.id)
        journal.sync(store, VOCAB, META)
        assert journal.wait()
        assert_same_store(recover(journal_path).store, store)
        journal.clear(version=store.version - 1)  # a save of a snapshot taken one change ago
        journal.sync(store, VOCAB, META)
        assert journal.wait()
        assert_same_store(recover(journal_path).store, store)
    assert not journal_path.exists()  # a normal end of the block: the window closed normally


def test_close_deletes_only_when_asked(journal_path: Path) -> None:
    store = new_store()
    store.append_record(make_record(0), store.new_branch({}).id)
    journal = Journal(journal_path)
    journal.sync(store, VOCAB, META)
    journal.close(delete=False)
    assert find_recovery(journal_path).n_records == 1
    journal = Journal(journal_path)
    journal.sync(store, VOCAB, META)
    journal.close(delete=True)
    assert not journal_path.exists()
    journal.sync(store, VOCAB, META)  # after close: ignored, no file
    assert not journal_path.exists()
    discard_recovery(journal_path)  # a missing file is fine


def test_sync_hands_over_nothing_when_nothing_changed(journal_path: Path) -> None:
    store = new_store()
    store.append_record(make_record(0), store.new_branch({}).id)
    with Journal(journal_path) as journal:
        journal.sync(store, VOCAB, META)
        assert journal.wait()
        size = journal_path.stat().st_size
        for _ in range(5):
            journal.sync(store, VOCAB, META)
        journal.flush()
        assert journal.wait()
        assert journal_path.stat().st_size == size
        assert journal.error is None


def test_a_new_vocabulary_and_meta_reach_the_file_with_the_next_change(journal_path: Path) -> None:
    store = new_store()
    root = store.new_branch({})
    store.append_record(make_record(0), root.id)
    vocab = Vocabulary(itos=VOCAB.itos, model_vocab_size=VOCAB.n_ids, never_sample=(0,))  # a model's own, loaded later
    with Journal(journal_path) as journal:
        journal.sync(store, VOCAB, META)
        store.append_record(make_record(1), root.id)
        journal.sync(store, vocab, {**META, "model_sha256": "cd" * 32})
        assert journal.wait()
        session = recover(journal_path)
    assert session.vocab == vocab
    assert session.model_sha256 == "cd" * 32


def test_flush_catches_a_branch_change_that_bumped_no_version(journal_path: Path) -> None:
    store = new_store()
    root = store.new_branch({"steps": 4})
    store.append_record(make_record(0), root.id)
    with Journal(journal_path, flush_s=60.0) as journal:
        journal.sync(store, VOCAB, META)
        root.settings = {"steps": 8}  # a restart's settings, then the run ends before the next look
        journal.sync(store, VOCAB, META)
        journal.flush()
        assert journal.wait()
        assert recover(journal_path).store.branches[root.id].settings == {"steps": 8}


def test_a_write_failure_is_reported_and_retried_with_a_whole_generation(tmp_path: Path, monkeypatch) -> None:
    from dpgviz.store import journal as journal_mod

    monkeypatch.setattr(journal_mod, "RETRY_S", 0.0)
    blocker = tmp_path / "not-a-folder"
    blocker.write_bytes(b"")
    journal = Journal(blocker / "recovery.dpgjournal")  # its folder cannot be made: every write fails
    store = new_store()
    root = store.new_branch({})
    store.append_record(make_record(0), root.id)
    journal.sync(store, VOCAB, META)
    assert journal.wait()
    assert journal.error is not None and "recovery journal" in journal.error
    blocker.unlink()
    blocker.mkdir()
    journal.sync(store, VOCAB, META)  # unchanged store, but the failure makes it start over
    assert journal.wait()
    journal.close()
    assert_same_store(recover(blocker / "recovery.dpgjournal").store, store)


def test_cache_paths_follow_the_environment(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("DPGVIZ_CACHE_DIR", str(tmp_path / "cache"))
    assert cache_dir() == tmp_path / "cache" and cache_dir().is_dir()
    assert log_path().parent == recovery_path().parent == tmp_path / "cache"
    if sys.platform.startswith("linux"):
        monkeypatch.delenv("DPGVIZ_CACHE_DIR")
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
        assert cache_dir() == tmp_path / "xdg" / "dpgviz"
        monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
        monkeypatch.setenv("HOME", str(tmp_path / "home"))
        assert cache_dir() == tmp_path / "home" / ".cache" / "dpgviz"
        monkeypatch.setattr(sys, "platform", "darwin")
        assert cache_dir() == tmp_path / "home" / "Library" / "Caches" / "dpgviz"
        monkeypatch.setattr(sys, "platform", "win32")
        monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "local"))
        assert cache_dir() == tmp_path / "local" / "dpgviz"
