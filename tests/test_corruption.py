"""Corruption strategies (exact ratio, contiguous spans, seeded repeats, replacement never
keeps the original) and the repair metrics against hand-computed numbers. numpy only."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dpgviz.core.corruption import (
    CORRUPTIONS,
    CorruptionError,
    CorruptionSettings,
    corrupt,
    corrupt_count,
    per_window_metrics,
    repair_metrics,
    span_runs,
)

V = 65  # Shakespeare's characters
MASK = V
CHOICES = np.arange(V)


def text_ids(n: int = 512, seed: int = 7) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, V, n)


@pytest.mark.parametrize("strategy", CORRUPTIONS)
@pytest.mark.parametrize("ratio", [0.1, 0.3, 0.5, 0.7, 0.9])
def test_every_strategy_corrupts_exactly_the_ratio(strategy: str, ratio: float) -> None:
    ids = text_ids()
    c = corrupt(ids, CorruptionSettings(strategy, ratio, seed=3), MASK, CHOICES, source=text_ids(4096, 1))
    assert int(c.is_corrupted.sum()) == corrupt_count(ratio, len(ids)) == round(ratio * len(ids))
    assert not (c.is_masked & ~c.is_corrupted).any()
    assert (c.ids[~c.is_corrupted] == ids[~c.is_corrupted]).all()  # nothing else changes
    assert (c.ids[c.is_masked] == MASK).all()
    assert (c.ids[c.is_replaced] != MASK).all() and (c.ids[c.is_replaced] < V).all()


@pytest.mark.parametrize("strategy", CORRUPTIONS)
def test_same_seed_repeats_and_another_seed_differs(strategy: str) -> None:
    ids = text_ids()
    a, b, other = (corrupt(ids, CorruptionSettings(strategy, 0.4, seed=s), MASK, CHOICES) for s in (5, 5, 6))
    assert (a.ids == b.ids).all() and (a.is_corrupted == b.is_corrupted).all() and (a.is_masked == b.is_masked).all()
    assert (a.is_corrupted != other.is_corrupted).any()


def test_random_masks_only() -> None:
    c = corrupt(text_ids(), CorruptionSettings("random", 0.5), MASK, CHOICES)
    assert (c.is_masked == c.is_corrupted).all()


def test_span_masking_makes_contiguous_spans() -> None:
    ids = text_ids(1024)
    span = corrupt(ids, CorruptionSettings("span", 0.3, seed=1, span_start=0.01, span_grow=0.6), MASK, CHOICES)
    rand = corrupt(ids, CorruptionSettings("random", 0.3, seed=1), MASK, CHOICES)
    assert (span.is_masked == span.is_corrupted).all()
    span_starts, span_stops = span_runs(span.is_corrupted)
    rand_starts, _ = span_runs(rand.is_corrupted)
    # 307 masked positions: random masking leaves ~215 separate runs; sticky spans far fewer, far longer
    assert len(span_starts) * 4 < len(rand_starts)
    assert (span_stops - span_starts).mean() > 4


def test_span_with_no_growth_still_reaches_the_count() -> None:
    c = corrupt(text_ids(200), CorruptionSettings("span", 0.9, span_start=0.05, span_grow=0.0), MASK, CHOICES)
    assert int(c.is_corrupted.sum()) == 180


def test_replacement_never_keeps_the_original_and_writes_only_choices() -> None:
    ids = np.zeros(400, dtype=np.int64)  # one character everywhere: any kept original would show
    ids[::2] = 3
    choices = np.array([0, 3, 7])  # e.g. the vocabulary minus special ids
    for seed in range(20):
        c = corrupt(ids, CorruptionSettings("replace", 0.9, seed=seed), MASK, choices)
        assert (c.ids[c.is_corrupted] != ids[c.is_corrupted]).all()
        assert np.isin(c.ids[c.is_corrupted], choices).all()
        assert not c.is_masked.any()


def test_replacement_covers_every_other_choice() -> None:
    ids = np.full(3000, 2, dtype=np.int64)
    c = corrupt(ids, CorruptionSettings("replace", 1.0), MASK, np.arange(5))
    assert set(np.unique(c.ids).tolist()) == {0, 1, 3, 4}


def test_fragments_copy_contiguous_text_from_the_source() -> None:
    ids = np.zeros(300, dtype=np.int64)
    source = np.arange(1000) % V + 0  # a ramp: a copied piece is a run of consecutive values (mod V)
    c = corrupt(ids, CorruptionSettings("fragment", 0.4, seed=2), MASK, CHOICES, source=source)
    assert not c.is_masked.any()
    starts, stops = span_runs(c.is_corrupted)
    for a, b in zip(starts, stops, strict=True):
        piece = c.ids[a:b]
        assert ((np.diff(piece) % V) == 1).all()  # one contiguous piece of the ramp per span


def test_mix_combines_masks_and_replacements() -> None:
    c = corrupt(text_ids(), CorruptionSettings("mix", 0.5, seed=4), MASK, CHOICES)
    assert 0 < int(c.is_masked.sum()) < int(c.is_corrupted.sum()) == 256
    assert int(c.is_masked.sum()) == 128  # span + random shares, a quarter of 256 each


def test_bad_settings_are_refused() -> None:
    with pytest.raises(CorruptionError):
        CorruptionSettings("blur").validate()
    with pytest.raises(CorruptionError):
        CorruptionSettings(ratio=1.5).validate()
    with pytest.raises(CorruptionError):
        CorruptionSettings(mix_shares=(0, 0, 0, 0)).validate()


def test_settings_round_trip_through_a_dict() -> None:
    s = CorruptionSettings("mix", 0.3, seed=9, mix_shares=(1, 0, 1, 0))
    assert CorruptionSettings.from_dict(s.to_dict()) == s


def test_metrics_against_a_hand_computed_case() -> None:
    # Five positions, three corrupted (1, 2, 4). p(true) there: 0.5, 0.25, 0.8; argmax right at 1 and 4.
    target = np.array([3, 1, 2, 0, 4])
    predicted = np.array([3, 1, 0, 0, 4])
    p_true = np.array([0.9, 0.5, 0.25, 0.7, 0.8])
    is_corrupted = np.array([False, True, True, False, True])
    m = repair_metrics(np.log(p_true), predicted, target, is_corrupted)
    assert m.n == 3
    assert m.accuracy == pytest.approx(2 / 3)
    assert m.true_prob == pytest.approx((0.5 + 0.25 + 0.8) / 3)
    assert m.ce == pytest.approx((math.log(2) + math.log(4) + -math.log(0.8)) / 3)  # 0.7675 nats


def test_per_window_metrics_match_the_pooled_ones() -> None:
    rng = np.random.default_rng(0)
    target = rng.integers(0, 5, (3, 8))
    predicted = np.where(rng.random((3, 8)) < 0.5, target, (target + 1) % 5)
    logp = np.log(rng.uniform(0.05, 1, (3, 8)))
    sel = rng.random((3, 8)) < 0.5
    sel[2] = False  # a window with nothing corrupted: NaN, not 0
    per = per_window_metrics(logp, predicted, target, sel)
    for b in range(2):
        m = repair_metrics(logp[b], predicted[b], target[b], sel[b])
        assert per["accuracy"][b] == pytest.approx(m.accuracy)
        assert per["true_prob"][b] == pytest.approx(m.true_prob)
        assert per["ce"][b] == pytest.approx(m.ce)
    assert np.isnan(per["ce"][2]) and repair_metrics(logp[2], predicted[2], target[2], sel[2]).n == 0
