"""Probability inspection (store.inspect): hand-computed values on a 4-token store, real runs, and size.

The hand-made store is five records of a 4-token run over the vocabulary a..e (mask id 5),
with a fork at record 2 whose edit record changes position 2 by hand. Every value used
is exact in float16, so the expected numbers below are worked out by hand.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pytest
from session_data import FORK_RECORD, sampled_store

from dpgviz.bench.synthetic import synthetic_store, synthetic_vocab
from dpgviz.core import color_modes
from dpgviz.core.palette import NO_VALUE_RGB, STATE_MASKED, STATE_NAMES, STATE_REMASKED, STATE_RGB, VIRIDIS_RGB
from dpgviz.core.records import FLAG_EDITED, FLAG_MASKED, FLAG_NEW, FLAG_REMASKED, RecordLayout
from dpgviz.core.vocab import Vocabulary
from dpgviz.store import inspect as ins
from dpgviz.store import overview as ov
from dpgviz.store import resample
from dpgviz.store.step_store import StepStore

log = logging.getLogger(__name__)
OVERVIEW_MODES = [m.name for m in color_modes.modes() if m.overview]  # every mode the overview draws

M, N_, R_ = FLAG_MASKED, FLAG_NEW, FLAG_REMASKED
NAN = np.nan
VOCAB = Vocabulary(itos=("a", "b", "c", "d", "e"))  # mask id 5, n_ids 6


def _record(kind, it, tokens, flags, conf, score, entropy, top_ids, top_probs) -> tuple[dict, dict]:
    tokens = np.array(tokens)
    scalars = {"iteration": it, "kind": kind, "target_masks": 0, "n_masked": int((tokens == 5).sum()), "forward_passes": 0}
    arrays = {
        "tokens": tokens,
        "flags": np.array(flags, np.uint8),
        "confidence": np.array(conf, np.float16),
        "score": np.array(score, np.float16),
        "entropy": np.array(entropy, np.float16),
        "top_ids": np.array(top_ids),
        "top_probs": np.array(top_probs, np.float16),
    }
    return scalars, arrays


NO_TOP_IDS, NO_TOP = [[0, 0]] * 4, [[0, 0]] * 4
TOP1_IDS = [[0, 1], [2, 1], [2, 0], [3, 4]]
TOP1 = [[0.5, 0.25], [0.5, 0.25], [0.75, 0.125], [0.5, 0.5]]
# Record 3 re-predicts positions 1 and 3; position 3's candidates are stored out of order.
TOP3_IDS = [[0, 0], [4, 1], [0, 0], [1, 3]]
TOP3 = [[0, 0], [0.375, 0.25], [0, 0], [0.125, 0.625]]
RECORDS = [
    _record("initial", 0, [5, 5, 5, 5], [M] * 4, [NAN] * 4, [NAN] * 4, [NAN] * 4, NO_TOP_IDS, NO_TOP),
    _record("prediction", 0, [0, 1, 2, 3], [N_] * 4, [0.5, 0.25, 0.75, 0.5], [NAN] * 4, [1, 2, 0.5, 0.25], TOP1_IDS, TOP1),
    _record(
        "remask", 0, [0, 5, 2, 5], [0, M | R_, 0, M | R_], [0.5, NAN, 0.75, NAN], [0.5, 0.75, 0.25, 0.625],
        [1, 2, 0.5, 0.25], TOP1_IDS, TOP1,
    ),
    _record("prediction", 1, [0, 4, 2, 3], [0, N_, 0, N_], [0.5, 0.375, 0.75, 0.625], [NAN] * 4, [NAN, 1.5, NAN, 0.5], TOP3_IDS, TOP3),
    _record("final", 1, [0, 4, 2, 3], [0] * 4, [0.5, 0.375, 0.75, 0.625], [NAN] * 4, [NAN, 1.5, NAN, 0.5], TOP3_IDS, TOP3),
]  # fmt: skip


@pytest.fixture
def tiny() -> StepStore:
    store = StepStore(RecordLayout(seq_len=4, top_k=2, n_ids=6), capacity=2, mask_id=5)
    root = store.new_branch({}, label="root").id
    for scalars, arrays in RECORDS:
        store.append(scalars, arrays, root)
    # Fork at the remask record: position 2 changed by hand from "c" to "b".
    edited = np.array([False, False, True, False])
    store.fork(root, 2, np.array([0, 5, 1, 5]), np.zeros(4, bool), edited, {}, label="edit")
    return store


# -- one position ---------------------------------------------------------------------------
def test_history_arrays_events_and_values(tiny):
    rows = tiny.history("0")
    a = ins.history_arrays(tiny, rows, 1)
    assert a["tokens"].tolist() == [5, 1, 5, 4, 4]
    assert a["is_masked"].tolist() == [True, False, True, False, False]
    E = ins
    assert a["events"].tolist() == [E.EVENT_MASKED, E.EVENT_UNMASKED, E.EVENT_REMASKED, E.EVENT_UNMASKED, E.EVENT_VISIBLE]
    assert a["computed"].tolist() == [False, True, True, True, True]
    np.testing.assert_array_equal(a["confidence"], np.array([NAN, 0.25, NAN, 0.375, 0.375], np.float32))
    np.testing.assert_array_equal(a["score"], np.array([NAN, NAN, 0.75, NAN, NAN], np.float32))
    assert a["confidence"].dtype == np.float32 and a["iteration"].tolist() == [0, 0, 0, 1, 1]
    # Position 2 in the child: the edit record changes a visible "c" into "b".
    child = ins.history_arrays(tiny, tiny.history("1"), 2)
    assert child["events"].tolist() == [E.EVENT_MASKED, E.EVENT_UNMASKED, E.EVENT_VISIBLE, E.EVENT_CHANGED]
    assert child["computed"].tolist() == [False, True, True, False]  # the edit cleared its stale candidates


def test_position_history_entries(tiny):
    hist = ins.position_history(tiny, tiny.history("0"), 3, VOCAB)
    assert [h["record"] for h in hist] == [0, 1, 2, 3, 4]
    assert hist[0] == {
        "record": 0, "iteration": 0, "kind": "initial", "token": None, "state": "masked",
        "p": None, "entropy": None, "score": None, "top": [],
    }  # fmt: skip
    assert hist[1]["token"] == "d" and hist[1]["state"] == "new" and hist[1]["p"] == 0.5
    assert hist[1]["top"] == [["d", 0.5], ["e", 0.5]]  # a tie keeps the stored order
    assert hist[2]["state"] == "remasked" and hist[2]["token"] is None and hist[2]["score"] == 0.625
    assert hist[3] == {
        "record": 3, "iteration": 1, "kind": "prediction", "token": "d", "state": "new",
        "p": 0.625, "entropy": 0.5, "score": None, "top": [["d", 0.625], ["b", 0.125]],
    }  # fmt: skip
    assert hist[4]["state"] == "visible" and hist[4]["kind"] == "final"
    edited = ins.position_history(tiny, tiny.history("1"), 2, VOCAB)[-1]
    assert edited["kind"] == "edit" and edited["state"] == "edited" and edited["token"] == "b"
    assert edited["p"] is None and edited["top"] == []
    with pytest.raises(IndexError):
        ins.position_history(tiny, tiny.history("0"), 4, VOCAB)


def test_sampled_at_finds_the_last_record_with_candidates(tiny):
    rows = tiny.history("0")
    assert ins.sampled_at(tiny, rows, 0, 4) == 2  # settled at record 1, candidates kept through the remask
    assert ins.sampled_at(tiny, rows, 1, 4) == 4
    assert ins.sampled_at(tiny, rows, 0, 0) is None
    assert ins.last_sampled_records(tiny, rows, 4).tolist() == [2, 4, 2, 4]
    assert ins.last_sampled_records(tiny, rows, 1).tolist() == [1, 1, 1, 1]
    assert ins.last_sampled_records(tiny, rows, 0).tolist() == [-1, -1, -1, -1]
    assert ins.last_sampled_records(tiny, tiny.history("1"), 3).tolist() == [3, 2, 2, 2]
    for record in range(len(rows)):  # the vectorised variant agrees with the per-position one
        expect = [ins.sampled_at(tiny, rows, p, record) for p in range(4)]
        got = ins.last_sampled_records(tiny, rows, record).tolist()
        assert got == [-1 if e is None else e for e in expect]


# -- whole run ----------------------------------------------------------------------------------
def test_run_series_hand_computed(tiny):
    s = ins.run_series(tiny, tiny.history("0"))
    np.testing.assert_allclose(s["masked_fraction"], [1.0, 0.0, 0.5, 0.0, 0.0])
    # record 1: (.5 + .25 + .75 + .5) / 4; record 2: visible .5 and .75; record 3: (.5 + .375 + .75 + .625) / 4
    np.testing.assert_allclose(s["mean_confidence"], [NAN, 0.5, 0.625, 0.5625, 0.5625])
    np.testing.assert_allclose(s["mean_entropy"], [NAN, 0.9375, 0.9375, 1.0, 1.0])
    assert s["iteration"].tolist() == [0, 0, 0, 1, 1] and s["record"].tolist() == [0, 1, 2, 3, 4]


def test_changed_since_previous_and_commit_records(tiny):
    rows = tiny.history("0")
    assert ins.changed_since_previous(tiny, rows, 0).tolist() == [False] * 4
    assert ins.changed_since_previous(tiny, rows, 2).tolist() == [False, True, False, True]  # remasked
    assert ins.changed_since_previous(tiny, rows, 3).tolist() == [False, True, False, True]
    assert ins.changed_since_previous(tiny, tiny.history("1"), 3).tolist() == [False, False, True, False]
    # pos 0 and 2 hold their token from record 1; pos 1 gets "e" only at 3; pos 3 is "d" at 1
    # but masked at 2, so it commits at 3.
    assert ins.commit_records(tiny, rows).tolist() == [1, 3, 1, 3]
    assert ins.commit_records(tiny, tiny.history("1")).tolist() == [1, -1, 3, -1]


# -- overview ---------------------------------------------------------------------------------------
def test_overview_state_and_value_modes_full_size(tiny):
    rows = tiny.history("0")
    img = ov.overview_image(tiny, rows, "state", VOCAB.size, 100, 100)
    assert img.shape == (5, 4, 3) and img.dtype == np.uint8
    assert img[2, 1].tolist() == STATE_RGB[STATE_REMASKED].tolist()
    assert img[0, 0].tolist() == STATE_RGB[STATE_MASKED].tolist()
    conf = ov.overview_image(tiny, rows, "confidence", VOCAB.size, 100, 100)
    assert conf[1, 0].tolist() == VIRIDIS_RGB[128].tolist()  # 0.5 on 0..1: rint(127.5) = 128
    assert conf[1, 2].tolist() == VIRIDIS_RGB[191].tolist()  # 0.75: rint(191.25)
    assert conf[2, 1].tolist() == STATE_RGB[STATE_MASKED].tolist()
    score = ov.overview_image(tiny, rows, "score", VOCAB.size, 100, 100)
    assert score[1, 0].tolist() == NO_VALUE_RGB.tolist()  # visible, no score
    assert score[2, 2].tolist() == VIRIDIS_RGB[64].tolist()  # 0.25: rint(63.75)


def test_overview_order_and_changed(tiny):
    rows = tiny.history("0")
    order = ov.overview_image(tiny, rows, "order", VOCAB.size, 100, 100)
    # commit records [1, 3, 1, 3] on the scale 0..4
    assert order[1, 0].tolist() == VIRIDIS_RGB[64].tolist()  # settled at record 1: rint(255 / 4)
    assert order[1, 1].tolist() == NO_VALUE_RGB.tolist()  # visible, not yet its final token
    assert order[2, 1].tolist() == STATE_RGB[STATE_MASKED].tolist()
    assert order[3, 1].tolist() == VIRIDIS_RGB[191].tolist() == order[4, 3].tolist()
    changed = ov.overview_image(tiny, rows, "changed", VOCAB.size, 100, 100)
    assert changed[3, 1].tolist() == ov.CHANGED_RGB.tolist() == changed[1, 0].tolist()
    assert changed[3, 0].tolist() == STATE_RGB[0].tolist()  # unchanged visible
    assert changed[2, 1].tolist() == STATE_RGB[STATE_MASKED].tolist()  # differs, but masked now
    assert changed[0, 0].tolist() == STATE_RGB[STATE_MASKED].tolist()
    view = ov.overview_values(tiny, rows, "changed", VOCAB.size, 100, 100)
    assert view.codes[3].tolist() == [0, 1, 0, 1]


def test_overview_downsampling_and_pick(tiny):
    rows = tiny.history("0")
    records, positions = ov.overview_samples(5, 4, 2, 2)
    assert records.tolist() == [1, 4] and positions.tolist() == [0, 2]  # last record / first position of each bin
    img = ov.overview_image(tiny, rows, "state", VOCAB.size, 2, 2)
    assert img.shape == (2, 2, 3)
    assert img[0, 0].tolist() == STATE_RGB[1].tolist()  # record 1 position 0: new
    assert ov.overview_pick(5, 4, 2, 2, 1.5, 0.2) == (1, 2)
    assert ov.overview_pick(5, 4, 2, 2, 99, 99) == (4, 2)  # clamped to the image
    assert ov.overview_pick(5, 4, 100, 100, 3, 2) == (2, 3)  # no downsampling: identity
    # 'changed' max-pools positions: record 3 changed positions 1 and 3, which sampling at 0, 2 misses.
    pooled = ov.overview_values(tiny, rows, "changed", VOCAB.size, 2, 5)
    assert pooled.codes[3].tolist() == [1, 1]
    with pytest.raises(ValueError):
        ov.overview_image(tiny, rows, "bogus", VOCAB.size, 2, 2)


def test_overview_pick_matches_the_sampled_cells():
    rng = np.random.default_rng(3)
    for n_records, seq_len, w, h in [(1001, 65536, 1200, 700), (7, 3, 10, 10), (50, 5000, 33, 17)]:
        records, positions = ov.overview_samples(n_records, seq_len, w, h)
        assert len(records) == min(n_records, h) and len(positions) == min(seq_len, w)
        assert records[-1] == n_records - 1 and positions[0] == 0
        assert np.all(np.diff(records) > 0) and np.all(np.diff(positions) > 0)
        for _ in range(20):
            y, x = rng.integers(len(records)), rng.integers(len(positions))
            assert ov.overview_pick(n_records, seq_len, w, h, x + 0.5, y + 0.9) == (records[y], positions[x])


# -- re-sampling previews -------------------------------------------------------------------------
def test_preview_distribution_hand_computed():
    p = np.array([0.5, 0.3, 0.2])
    np.testing.assert_allclose(resample.preview_distribution(p, 1.0, 1.0), [0.5, 0.3, 0.2])
    # nucleus 0.7: mass before each is 0, .5, .8 -> keep the first two, renormalise
    np.testing.assert_allclose(resample.preview_distribution(p, 1.0, 0.7), [0.625, 0.375, 0.0])
    # T = 0.5: p^2 = .25, .09, .04 over .38
    np.testing.assert_allclose(resample.preview_distribution(p, 0.5, 1.0), [0.25 / 0.38, 0.09 / 0.38, 0.04 / 0.38])
    np.testing.assert_allclose(resample.preview_distribution(p, 0.0, 1.0), [1.0, 0.0, 0.0])  # greedy
    np.testing.assert_allclose(resample.preview_distribution(p, 1.0, 0.0), [1.0, 0.0, 0.0])  # the top one always stays
    # T = 2: sqrt(p) renormalised; unsorted input keeps its order
    q = np.sqrt([0.2, 0.5, 0.3])
    np.testing.assert_allclose(resample.preview_distribution(np.array([0.2, 0.5, 0.3]), 2.0, 1.0), q / q.sum())
    np.testing.assert_array_equal(resample.preview_distribution(np.zeros(3), 1.0, 0.9), [0.0, 0.0, 0.0])


def test_resample_preview_draws_from_the_nucleus():
    n = 20000
    ids = np.tile([7, 8, 9], (n, 1))
    probs = np.tile(np.array([0.5, 0.3, 0.2], np.float16), (n, 1))
    drawn = resample.resample_preview(ids, probs, 1.0, 1.0, 0)
    freq = np.array([(drawn == i).mean() for i in (7, 8, 9)])
    np.testing.assert_allclose(freq, [0.5, 0.3, 0.2], atol=0.015)
    nucleus = resample.resample_preview(ids, probs, 1.0, 0.7, 1)
    assert set(np.unique(nucleus).tolist()) == {7, 8}
    assert abs((nucleus == 7).mean() - 0.625) < 0.015
    assert np.array_equal(resample.resample_preview(ids, probs, 1.0, 0.7, 1), nucleus)  # same seed, same draw
    mixed_probs = np.array([[0, 0], [0.25, 0.75]], np.float16)
    out = resample.resample_preview(np.array([[1, 2], [3, 4]]), mixed_probs, 0.0, 1.0, np.random.default_rng(0))
    assert out.tolist() == [-1, 4]  # no candidates -> -1; greedy takes the larger


# -- real and large runs ------------------------------------------------------------------------------
def test_on_a_sampled_run_with_a_child_branch():
    store, vocab, _settings = sampled_store()
    rows = store.history("1")
    n, r = store.layout.seq_len, len(rows)
    commit = ins.commit_records(store, rows)
    assert commit.min() >= 0 and commit.max() <= r - 1  # the final record has no masks
    tokens = store.column("tokens")[rows]
    for p in range(n):  # from its commit record on, every record holds the final token
        assert (tokens[commit[p] :, p] == tokens[-1, p]).all()
        if commit[p] > 0:
            assert tokens[commit[p] - 1, p] != tokens[-1, p]
    series = ins.run_series(store, rows)
    masked = (store.column("flags")[rows] & FLAG_MASKED) != 0
    np.testing.assert_allclose(series["masked_fraction"], masked.mean(axis=1))
    conf = store.column("confidence")[rows].astype(np.float64)
    has = ~masked & np.isfinite(conf)
    with np.errstate(invalid="ignore"):
        expect = np.where(has, conf, 0).sum(axis=1) / has.sum(axis=1)
    np.testing.assert_allclose(series["mean_confidence"], expect, rtol=1e-5)
    hist = ins.position_history(store, rows, 5, vocab)
    # the child's first record is its run's 'initial', holding the edited tokens
    assert len(hist) == r and hist[FORK_RECORD + 1]["kind"] == "initial"
    edited = np.flatnonzero(store.column("flags")[rows[FORK_RECORD + 1]] & FLAG_EDITED)
    assert ins.position_history(store, rows, int(edited[0]), vocab)[FORK_RECORD + 1]["state"] == "edited"
    for h in hist:
        assert h["state"] in STATE_NAMES
        assert [p for _, p in h["top"]] == sorted((p for _, p in h["top"]), reverse=True)
    last = ins.last_sampled_records(store, rows, r - 1)
    for p in range(0, n, 7):
        s = ins.sampled_at(store, rows, p, r - 1)
        assert last[p] == (-1 if s is None else s)
    for mode in ("mask-state", *OVERVIEW_MODES):
        assert ov.overview_image(store, rows, mode, vocab.size, 32, 8).shape == (8, 32, 3)


def test_overview_of_a_synthetic_run():
    store = synthetic_store(seq_len=4096, steps=40, seed=2)
    rows = store.history("0")
    for mode in OVERVIEW_MODES:
        img = ov.overview_image(store, rows, mode, synthetic_vocab().size, 1200, 60)
        assert img.shape == (60, 1200, 3) and img.dtype == np.uint8
    assert ov.overview_image(store, rows, "order", 65, 5000, 5000).shape == (81, 4096, 3)


@pytest.mark.slow
def test_overview_at_1000_records_by_65536_tokens():
    """Full size: 1,001 records x 65,536 tokens (2.7 GB of records); timing is logged, not asserted."""
    n, k = 65536, 8
    layout = RecordLayout(seq_len=n, top_k=k, n_ids=66)
    store = StepStore(layout, capacity=1001, mask_id=65)
    rng = np.random.default_rng(0)
    root = store.new_branch({}).id
    order = rng.permutation(n)
    for i in range(1001):  # unmask a growing prefix of a random order: cheap to build, realistic to read
        rec = layout.empty()
        rec.tokens[:] = 65
        shown = order[: n * i // 1000]
        rec.tokens[shown] = shown % 65
        rec.flags[:] = np.where(rec.tokens == 65, FLAG_MASKED, 0)
        rec.confidence[shown] = 0.5
        store.append_record(rec, root)
    rows = store.history(root)
    for mode in OVERVIEW_MODES:
        times = []
        for _ in range(3):
            t = time.perf_counter()
            img = ov.overview_image(store, rows, mode, 65, 1200, 1000)
            times.append(time.perf_counter() - t)
        assert img.shape == (1000, 1200, 3)
        log.info("overview %s: median %.0f ms", mode, 1000 * sorted(times)[1])
