"""The compact step store: sparse top-K candidates, small id dtypes, preallocation, session format 2.

Every check compares the store with the dense arrays given to `append`, kept aside in a
plain list (the reference), or with the values a format-1 file was written with.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from session_data import _sampler

from dpgviz.bench.synthetic import synthetic_store, synthetic_vocab
from dpgviz.core.records import RecordLayout, StepRecord, id_dtype_for
from dpgviz.core.settings import GenerationSettings
from dpgviz.store.session_format import FORMAT_VERSION
from dpgviz.store.session_open import open_session, read_header
from dpgviz.store.session_save import save_session
from dpgviz.store.step_store import StepStore

DATA = Path(__file__).parent / "data"
DENSE = ("tokens", "confidence", "score", "entropy", "flags")


def _random_records(layout: RecordLayout, n: int, seed: int) -> list[StepRecord]:
    """Records with candidates at random positions; every third repeats the previous one's (as 'remask' does)."""
    rng = np.random.default_rng(seed)
    n_pos, k = layout.seq_len, layout.top_k
    out: list[StepRecord] = []
    for i in range(n):
        rec = layout.empty()
        rec.tokens[:] = rng.integers(0, layout.n_ids, n_pos)
        rec.confidence[:] = rng.random(n_pos)
        rec.flags[:] = rng.integers(0, 32, n_pos)
        rec.iteration, rec.kind = i, ("prediction", "remask", "final")[i % 3]
        if i % 3 == 1 and out:
            rec.top_ids[:], rec.top_probs[:] = out[-1].top_ids, out[-1].top_probs
        else:
            has = rng.random(n_pos) < rng.random()  # from none to nearly all positions
            rec.top_ids[has] = rng.integers(0, layout.n_ids, (int(has.sum()), k))
            probs = rng.random((int(has.sum()), k)).astype(np.float16)
            probs[:, -2:] = 0  # fewer candidates than K: zero padding within a row is kept
            rec.top_probs[has] = probs
        out.append(rec)
    return out


def _filled(records: list[StepRecord], layout: RecordLayout, capacity: int = 4) -> StepStore:
    store = StepStore(layout, capacity=capacity)
    branch = store.new_branch().id
    for rec in records:
        store.append_record(rec, branch)
    return store


@pytest.mark.parametrize("seq_len", [1, 13, 64, 257])
def test_accessors_agree_with_the_dense_arrays_appended(seq_len):
    layout = RecordLayout(seq_len=seq_len, top_k=8, n_ids=66)
    records = _random_records(layout, 12, seed=seq_len)
    store = _filled(records, layout)
    rows = np.arange(len(records))
    for row, rec in enumerate(records):
        ids, probs = store.top_k(row)
        assert np.array_equal(ids, rec.top_ids) and np.array_equal(probs, rec.top_probs)
        assert np.array_equal(store.candidate_mask(row), rec.top_probs.astype(np.float32).any(axis=1))
        back = store.record(row)
        for name in DENSE:
            assert np.array_equal(getattr(back, name), getattr(rec, name), equal_nan=True), name
    for pos in range(seq_len):
        expected_has = np.array([rec.top_probs[pos].astype(np.float32).any() for rec in records])
        assert np.array_equal(store.has_candidates(rows, pos), expected_has)
        ids, probs = store.candidates_across(rows, pos)
        assert np.array_equal(ids, np.stack([rec.top_ids[pos] for rec in records]))
        assert np.array_equal(probs, np.stack([rec.top_probs[pos] for rec in records]))
        for row in (0, 5, 11):
            got = store.candidates_at(row, pos)
            if expected_has[row]:
                assert np.array_equal(got[0], records[row].top_ids[pos])
                assert np.array_equal(got[1], records[row].top_probs[pos])
            else:
                assert got is None


def test_repeated_candidates_are_stored_once():
    layout = RecordLayout(seq_len=50, top_k=8, n_ids=66)
    records = _random_records(layout, 9, seed=1)
    store = _filled(records, layout)
    fresh = sum(int(r.top_probs.astype(np.float32).any(axis=1).sum()) for i, r in enumerate(records) if i % 3 != 1)
    assert store.pool_count == fresh  # the repeats (rows 1, 4, 7) added no entries
    assert store.get("cand_start", 1) == store.get("cand_start", 0)


def test_dense_candidate_columns_are_gone():
    store = _filled(_random_records(RecordLayout(seq_len=8), 2, 0), RecordLayout(seq_len=8))
    for name in ("top_ids", "top_probs"):
        assert name not in store.columns
        with pytest.raises(KeyError, match="sparsely"):
            store.column(name)


def test_id_dtypes():
    assert synthetic_vocab().n_ids == 66 and RecordLayout(seq_len=4, n_ids=66).id_dtype == np.uint8
    assert id_dtype_for(256) == np.uint8 and id_dtype_for(257) == np.uint16
    assert id_dtype_for(65536) == np.uint16 and id_dtype_for(65537) == np.int32
    store = synthetic_store(16, 4)
    assert store.column("tokens").dtype == np.uint8 and store.pool["cand_ids"].dtype == np.uint8


def test_session_round_trip_is_exact(tmp_path):
    sampler = _sampler()
    settings = GenerationSettings(length=64, steps=8)
    store = StepStore(sampler.layout(settings), capacity=2)
    root = store.new_branch(settings.to_dict()).id
    reference: list[StepRecord] = []  # every record as the sampler made it, dense
    for rec in sampler.run(settings):
        reference.append(rec)
        store.append_record(rec, root)
    vocab = sampler.vocab
    path = save_session(tmp_path / "run.dpgviz", store, vocab, settings=settings.to_dict())
    assert read_header(path)["format_version"] == FORMAT_VERSION == 2
    with open_session(path) as s:
        opened = s.store
        assert isinstance(opened.pool["cand_ids"], np.ndarray) and not opened.pool["cand_ids"].flags.writeable
        assert len(opened) == len(reference) and opened.pool_count == store.pool_count
        assert opened.tree() == store.tree()
        for row, rec in enumerate(reference):
            ids, probs = opened.top_k(row)
            assert np.array_equal(ids, rec.top_ids) and np.array_equal(probs, rec.top_probs), row
            for name in DENSE:
                assert np.array_equal(opened.get(name, row), getattr(rec, name), equal_nan=True), (name, row)
        rows = np.arange(len(reference))
        for pos in range(store.layout.seq_len):
            assert np.array_equal(opened.has_candidates(rows, pos), store.has_candidates(rows, pos))


def test_format_1_file_opens_with_the_same_values():
    """tests/data/session-v1.dpgviz was saved by the format-1 code (uint16 ids, dense top-K);
    session-v1-expected.npz holds its columns as that code's store had them."""
    expected = np.load(DATA / "session-v1-expected.npz")
    assert read_header(DATA / "session-v1.dpgviz")["format_version"] == 1
    with open_session(DATA / "session-v1.dpgviz") as s:
        store = s.store
        assert len(store) == len(expected["tokens"]) == 30
        assert store.column("tokens").dtype == np.uint8  # cast from the file's uint16
        for name in (*DENSE, "iteration", "kind", "n_masked", "forward_passes", "branch_index"):
            assert np.array_equal(store.column(name), expected[name], equal_nan=True), name
        for row in range(len(store)):
            ids, probs = store.top_k(row)
            assert np.array_equal(ids, expected["top_ids"][row]) and np.array_equal(probs, expected["top_probs"][row])
        # The sampler of format 1 repeated each prediction's candidates in remask/final: stored once.
        n_fresh = expected["top_probs"].astype(np.float32).any(axis=2)[expected["kind"] == 1].sum()
        assert store.pool_count == n_fresh


def test_format_1_file_resaves_as_format_2(tmp_path):
    expected = np.load(DATA / "session-v1-expected.npz")
    with open_session(DATA / "session-v1.dpgviz") as s:
        path = save_session(tmp_path / "v2.dpgviz", s.store, s.vocab, settings=s.settings)
    assert path.stat().st_size < (DATA / "session-v1.dpgviz").stat().st_size / 2
    with open_session(path) as s:
        for row in range(len(s.store)):
            assert np.array_equal(s.store.top_k(row)[1], expected["top_probs"][row])


def test_bytes_per_token_step_of_a_realistic_run():
    store = synthetic_store(4096, 100)
    parts = store.byte_breakdown()
    assert store.bytes_per_token_step == pytest.approx(sum(parts.values()) / (len(store) * 4096))
    assert parts["dense"] == len(store) * 4096 * 8  # tokens 1 + three float16 + flags 1
    assert store.bytes_per_token_step <= 20


def test_reserved_rows_never_reallocate():
    layout = RecordLayout(seq_len=32)
    records = _random_records(layout, 10, seed=3)
    store = StepStore(layout, capacity=1)
    branch = store.new_branch().id
    store.reserve(10, candidates=10 * 32)
    columns, pool = dict(store.columns), dict(store.pool)
    assert store.capacity == 10 and store.pool_capacity == 320
    for rec in records:
        store.append_record(rec, branch)
    assert all(store.columns[name] is col for name, col in columns.items())
    assert all(store.pool[name] is arr for name, arr in pool.items())
    store.append_record(records[0], branch)  # past the reservation: grows by 1.5x, keeps every row
    assert store.capacity == 15 and np.array_equal(store.top_k(10)[0], records[0].top_ids)
    assert np.array_equal(store.top_k(9)[1], records[9].top_probs)


def test_view_is_frozen_while_appends_go_on():
    layout = RecordLayout(seq_len=16)
    records = _random_records(layout, 6, seed=4)
    store = _filled(records[:3], layout, capacity=3)
    frozen = store.view()
    for rec in records[3:]:
        store.append_record(rec, store.branch_order[0])  # grows: new arrays; the view keeps the old
    assert len(frozen) == 3 and frozen.pool_count <= store.pool_count
    for row in range(3):
        assert np.array_equal(frozen.top_k(row)[0], records[row].top_ids)
