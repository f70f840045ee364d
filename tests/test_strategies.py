"""The unmasking strategies: each one's defining property, through the sampler's one loop.

A table adapter (a real `ModelAdapter`: vocabulary + logits + block size) gives every
position a fixed, known distribution, so each property is checked against probabilities
the test computes itself, independently of what the records say.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from dpgviz.core.records import FLAG_MASKED, record_count
from dpgviz.core.schedule import target_masks
from dpgviz.core.settings import STRATEGIES, STRATEGY_INFO, GenerationSettings, SettingsError
from dpgviz.core.vocab import Vocabulary
from dpgviz.engine import strategies
from dpgviz.engine.sampler import Sampler, StartState
from dpgviz.engine.strategies import margin_of, propose

VOCAB = Vocabulary(itos=tuple("abcdefghijklmnop"))  # 16 tokens, mask id 16
N = 96


class TableAdapter:
    """Logits that depend on the position only: position i's sharpness grows with a seeded draw."""

    def __init__(self, n: int = N, seed: int = 0, sharp: float = 4.0, depends_on_ids: bool = False) -> None:
        g = torch.Generator().manual_seed(seed)
        scale = torch.rand(n, 1, generator=g) * sharp  # (n, 1): some positions sure, some not
        self.table = torch.randn(n, VOCAB.size + 1, generator=g) * scale  # (n, V + 1); the mask column is dropped
        self.vocab, self.block_size, self.depends_on_ids = VOCAB, n, depends_on_ids

    def logits(self, ids: torch.Tensor) -> torch.Tensor:
        out = self.table[None, : ids.shape[1]].clone()
        if self.depends_on_ids:  # a token's own logit falls where a neighbour is masked: beliefs move
            masked_next = torch.roll(ids == VOCAB.mask_id, 1, dims=1).float()  # (1, T)
            out = out - 3.0 * masked_next[..., None] * torch.nn.functional.one_hot(ids.clamp_max(VOCAB.size), VOCAB.size + 1)
        return out

    def probs(self, temperature: float = 1.0) -> torch.Tensor:
        return torch.softmax(self.table[:, : VOCAB.size] / temperature, dim=-1)


def run(strategy: str, adapter: TableAdapter | None = None, start: StartState | None = None, **kw) -> list:
    adapter = adapter or TableAdapter()
    settings = GenerationSettings(length=N, steps=kw.pop("steps", 8), strategy=strategy, **kw)
    return list(Sampler(adapter, VOCAB).run(settings, start))


def iterations(records: list) -> list[tuple]:
    """(tokens before, prediction record, remask record) for every iteration that remasked."""
    out, before = [], None
    for rec in records:
        if rec.kind == "initial":
            before = rec.tokens.copy()
        elif rec.kind == "prediction":
            pred = rec
        elif rec.kind == "remask":
            out.append((before, pred, rec))
            before = rec.tokens.copy()
    return out


# -- the registry ---------------------------------------------------------------------------
def test_every_strategy_is_registered_and_described():
    assert set(strategies.STRATEGIES) == set(STRATEGIES) == set(STRATEGY_INFO)
    for name, strategy in strategies.STRATEGIES.items():
        assert strategy.description == STRATEGY_INFO[name] and len(strategy.description) > 20
    with pytest.raises(SettingsError, match="strategy"):
        GenerationSettings(strategy="nope").validate()


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_ends_fully_unmasked_and_never_touches_protected(strategy):
    adapter = TableAdapter(depends_on_ids=True)
    start = np.full(N, VOCAB.mask_id)
    fixed = np.arange(0, N, 7)
    start[fixed] = 3
    protected = np.zeros(N, bool)
    protected[fixed] = True
    records = run(strategy, adapter, StartState(tokens=start, protected=protected), seed=1)
    assert records[0].kind == "initial" and records[-1].kind == "final"
    assert not (records[-1].tokens == VOCAB.mask_id).any()
    for rec in records:
        assert (rec.tokens[fixed] == 3).all(), f"{strategy} changed a protected token in a {rec.kind} record"


# -- commit order ---------------------------------------------------------------------------
def test_margin_commits_the_largest_margins():
    margins = margin_of(TableAdapter().probs()).numpy()
    steps = iterations(run("margin"))
    assert len(steps) == 7
    for before, _pred, rem in steps:
        new = before == VOCAB.mask_id
        back = rem.tokens == VOCAB.mask_id
        committed = new & ~back
        assert back.any() and committed.any()
        assert margins[committed].min() >= margins[back].max()


def test_entropy_commits_the_lowest_entropies():
    p = TableAdapter().probs()
    entropy = (-(p * p.log()).sum(-1)).numpy()
    for before, pred, rem in iterations(run("entropy")):
        new = before == VOCAB.mask_id
        back = rem.tokens == VOCAB.mask_id
        committed = new & ~back
        assert entropy[committed].max() <= entropy[back].min() + 1e-6
        np.testing.assert_allclose(pred.entropy[new], entropy[new], rtol=2e-3)  # records keep float16


def test_llada_never_changes_a_committed_token():
    for before, _pred, rem in iterations(run("llada")):
        kept = before != VOCAB.mask_id
        assert (rem.tokens[kept] == before[kept]).all()


def test_threshold_commits_every_prediction_above_tau_and_at_least_one():
    tau = 0.6
    adapter = TableAdapter(sharp=6.0)
    p = adapter.probs()
    records = run("threshold", adapter, threshold=tau, steps=64)
    its = iterations(records)
    for before, pred, rem in its:
        new = before == VOCAB.mask_id
        back = rem.tokens == VOCAB.mask_id
        conf = p[np.arange(N), torch.as_tensor(pred.tokens.astype(np.int64))].numpy()
        assert not (back & new & (conf >= tau)).any(), "a prediction above tau went back to mask"
        assert (back == (new & (conf < tau))).all() or (new & ~back).sum() == 1
        assert (new & ~back).sum() >= 1, "every step commits at least one position"
    # The run ends as soon as nothing is masked: far fewer records than 64 steps allow.
    assert records[-1].kind == "final" and records[-1].iteration < 63
    assert len(records) < record_count(64)
    assert not (records[-1].tokens == VOCAB.mask_id).any()


def test_threshold_runs_past_steps_until_nothing_is_masked():
    """`steps` does not cap it: an unsure model takes as many iterations as it needs."""
    records = run("threshold", TableAdapter(sharp=1.0), threshold=0.99, steps=4)
    predictions = [r for r in records if r.kind == "prediction"]
    assert len(predictions) > 4
    for before, _pred, rem in iterations(records):
        new = before == VOCAB.mask_id
        assert (new & (rem.tokens != VOCAB.mask_id)).sum() >= 1
    assert records[-1].kind == "final" and not (records[-1].tokens == VOCAB.mask_id).any()


def test_remdm_remasks_committed_tokens_and_follows_the_schedule():
    adapter = TableAdapter(depends_on_ids=True, sharp=1.0)
    revised = 0
    for before, _pred, rem in iterations(run("remdm", adapter, steps=12, eta=1.0, start_ratio=1.0, end_ratio=0.0)):
        committed_before = before != VOCAB.mask_id
        revised += int((committed_before & (rem.tokens == VOCAB.mask_id)).sum())
        assert (rem.tokens == VOCAB.mask_id).sum() == rem.target_masks
        assert rem.target_masks == target_masks(N, rem.iteration, 12, 1.0, 0.0)
    assert revised > 0, "remdm never revised a committed token"
    # With eta = 0 it is llada: nothing committed ever goes back.
    for before, _pred, rem in iterations(run("remdm", adapter, steps=12, eta=0.0)):
        assert not ((before != VOCAB.mask_id) & (rem.tokens == VOCAB.mask_id)).any()


def test_origin_reveals_each_position_independently_with_probability_one_minus_s_over_t():
    kept_share, expected = [], []
    counts = set()
    for seed in range(6):
        for before, _pred, rem in iterations(run("origin", seed=seed, steps=6)):
            new = before == VOCAB.mask_id
            back = rem.tokens == VOCAB.mask_id
            assert not (back & ~new).any(), "origin only keeps this step's positions masked"
            target = target_masks(N, rem.iteration, 6, 0.99, 0.15)
            kept_share.append(back.sum() / new.sum())
            expected.append(min(1.0, target / new.sum()))
            counts.add((rem.iteration, int(back.sum())))
    # Binomial: the kept share scatters around s/t; across 30 steps the mean error is small.
    assert abs(np.mean(kept_share) - np.mean(expected)) < 0.05
    assert len(counts) > 6, "the number revealed should vary with the seed"


# -- schedules and proposals ----------------------------------------------------------------
def test_cosine_schedule_falls_from_start_to_end_more_slowly_at_first():
    lin = [target_masks(1000, i, 10, 0.99, 0.15, "linear") for i in range(10)]
    cos = [target_masks(1000, i, 10, 0.99, 0.15, "cosine") for i in range(10)]
    assert lin[-2] == cos[-2] == 150 and lin[-1] == cos[-1] == 0
    assert all(a >= b for a, b in itertools.pairwise(cos))
    assert cos[0] > lin[0] and cos[3] > lin[3]
    # linear is the seed app's formula exactly
    assert lin[2] == int(1000 * (0.99 - 3 / 9 * (0.99 - 0.15)))
    assert cos[2] == int(1000 * (0.15 + 0.84 * math.cos(math.pi / 2 * 3 / 9)))


def test_greedy_top_k_1_and_tiny_top_p_all_take_the_argmax():
    p = TableAdapter().probs()
    gen = torch.Generator().manual_seed(0)
    want = p.argmax(-1)
    for kw in ({"proposal": "greedy"}, {"sample_top_k": 1}, {"top_p": 1e-6}):
        got = propose(p, GenerationSettings(**kw), gen)
        assert torch.equal(got, want), kw


def test_top_k_and_top_p_sample_only_inside_their_sets():
    p = TableAdapter(sharp=1.0).probs()
    gen = torch.Generator().manual_seed(0)
    top3 = p.topk(3, dim=-1).indices
    sorted_p, order = p.sort(-1, descending=True)
    nucleus_size = ((sorted_p.cumsum(-1) - sorted_p) < 0.5).sum(-1)  # smallest set reaching 0.5
    seen_k, seen_p = set(), set()
    for _ in range(50):
        draw = propose(p, GenerationSettings(sample_top_k=3), gen)
        assert (draw[:, None] == top3).any(-1).all()
        seen_k.update(draw.tolist())
        draw = propose(p, GenerationSettings(top_p=0.5), gen)
        rank = (order == draw[:, None]).float().argmax(-1)
        assert (rank < nucleus_size).all()
        seen_p.update(draw.tolist())
    assert len(seen_k) > 3 and len(seen_p) > 1  # they do sample


def test_greedy_runs_repeat_and_settings_are_checked():
    a = run("llada", proposal="greedy", seed=1)
    b = run("llada", proposal="greedy", seed=2)
    assert (a[-1].tokens == b[-1].tokens).all()  # no randomness left in llada + greedy
    for bad in ({"top_p": 0.0}, {"sample_top_k": -1}, {"threshold": 0.0}, {"eta": 1.5}, {"schedule": "x"}):
        with pytest.raises(SettingsError):
            GenerationSettings(**bad).validate()


def test_the_mask_flag_follows_the_tokens_for_every_strategy():
    for strategy in STRATEGIES:
        for rec in run(strategy, steps=4):
            assert ((rec.flags & FLAG_MASKED) > 0).tolist() == (rec.tokens == VOCAB.mask_id).tolist()
