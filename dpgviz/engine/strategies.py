"""Unmasking strategies: each is a remask score per position plus a count rule.

Every iteration the sampler proposes a token for each masked position (`propose`), then
asks the strategy which positions go back to mask: the `count(step)` highest `score(step)`
among `candidates(step)`. Committing the best predictions and remasking the rest are the
same decision seen from two sides, so "commit where the margin is largest" is "remask
where it is smallest". One loop (`engine.sampler`) runs them all; a new strategy is a
`Strategy(...)` entry in STRATEGIES. One-line descriptions: `core.settings.STRATEGY_INFO`.

    seed       r*U + (1-r)*(1 - p2); p2 from a second pass; any visible token may go back
    random     U; any visible token may go back
    llada      1 - p(sampled); only this step's predictions may go back (LLaDA low-confidence)
    margin     -(p1 - p2) of the prediction; only this step's predictions
    entropy    H(prediction); only this step's predictions
    threshold  1 - p(sampled); count = predictions below tau, but at least one commits
               (Fast-dLLM); the run ends as soon as nothing is masked
    remdm      llada's rule, plus committed tokens drawn back with probability
               min(eta, target / committed) * (1 - p) (ReMDM, capped); the schedule's count holds
    origin     Dream: a position stays masked with probability s/t (target / masked now),
               independently of the others; the count is random, its mean the schedule's

Scores are "higher goes back to mask first". Protected positions are never candidates.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from dpgviz.core.settings import OPEN_ENDED, STRATEGY_INFO, GenerationSettings


@dataclass
class Step:
    """What a strategy sees in one iteration, after every masked position got a proposal."""

    settings: GenerationSettings
    probs: torch.Tensor  # (n, V) softmax(logits / T) of this iteration's pass
    tokens: torch.Tensor  # (n,) the sequence with every masked position filled
    is_new: torch.Tensor  # (n,) bool: filled in this iteration (was masked)
    p_token: torch.Tensor  # (n,) probability of each position's current token under `probs`
    entropy: torch.Tensor  # (n,) entropy of `probs` at every position, nats
    protected: torch.Tensor  # (n,) bool: never remasked
    uniform: torch.Tensor  # (n,) U(0,1), seeded, one draw per position per iteration
    target: int  # masks the schedule wants left after this iteration
    second_pass: Callable[[], torch.Tensor]  # p(current token) from a fresh pass over `tokens`

    @property
    def visible(self) -> torch.Tensor:
        return ~self.protected


@dataclass(frozen=True)
class Decision:
    """A strategy's answer: remask the `count` highest `score`s among `candidates`."""

    score: torch.Tensor  # (n,) float; only read where candidates
    candidates: torch.Tensor  # (n,) bool
    count: int
    confidence: torch.Tensor | None = None  # (n,) replaces p_token in the record (seed's 2nd pass)


def schedule_count(step: Step, candidates: torch.Tensor) -> int:
    """The schedule's rule: remask until `target` masks remain (at most every candidate)."""
    return min(step.target, int(candidates.sum()))


def _seed(step: Step) -> Decision:
    p_second = step.second_pass()
    r = step.settings.randomness
    score = r * step.uniform + (1 - r) * (1 - p_second)
    return Decision(score, step.visible, schedule_count(step, step.visible), confidence=p_second)


def _random(step: Step) -> Decision:
    return Decision(step.uniform, step.visible, schedule_count(step, step.visible))


def _new_only(score: Callable[[Step], torch.Tensor]) -> Callable[[Step], Decision]:
    """A strategy that only ever sends back this iteration's predictions, ranked by `score`."""

    def decide(step: Step) -> Decision:
        candidates = step.is_new & step.visible
        return Decision(score(step), candidates, schedule_count(step, candidates))

    return decide


def margin_of(probs: torch.Tensor) -> torch.Tensor:
    """p(first) - p(second) of each row of `probs`: (n, V) -> (n,)."""
    top2 = probs.topk(min(2, probs.shape[-1]), dim=-1).values
    return top2[:, 0] - top2[:, 1] if top2.shape[-1] > 1 else top2[:, 0]


def _threshold(step: Step) -> Decision:
    candidates = step.is_new & step.visible
    n_new = int(candidates.sum())
    below = int((candidates & (step.p_token < step.settings.threshold)).sum())
    return Decision(1 - step.p_token, candidates, min(below, max(0, n_new - 1)))


def _remdm(step: Step) -> Decision:
    committed = ~step.is_new & step.visible
    # ReMDM's capped rate min(eta, (1 - alpha_s) / alpha_t): the masks still wanted over the
    # tokens already committed, so revision fades out as the schedule ends; each committed
    # token then goes back with that rate times (1 - p), higher the less the model believes it.
    rate = min(step.settings.eta, step.target / max(1, int(committed.sum())))
    sigma = rate * (1 - step.p_token)
    drawn = committed & (step.uniform < sigma)
    # drawn committed tokens go first (worst first), then this step's least confident predictions
    score = torch.where(drawn, 2 - step.p_token, 1 - step.p_token)
    candidates = (step.is_new & step.visible) | drawn
    return Decision(score, candidates, schedule_count(step, candidates))


def _origin(step: Step) -> Decision:
    candidates = step.is_new & step.visible
    n_new = int(candidates.sum())
    keep_masked = min(1.0, step.target / n_new) if n_new else 0.0  # s/t
    stays = candidates & (step.uniform < keep_masked)
    return Decision(1 - step.uniform, candidates, int(stays.sum()))


@dataclass(frozen=True)
class Strategy:
    name: str
    decide: Callable[[Step], Decision]
    finishes_early: bool = False  # the run ends when nothing is masked, before `steps`
    follows_schedule: bool = True  # False: the count is the strategy's own (records show it as the target)

    @property
    def description(self) -> str:
        return STRATEGY_INFO[self.name]


STRATEGIES: dict[str, Strategy] = {
    s.name: s
    for s in (
        Strategy("seed", _seed),
        Strategy("random", _random),
        Strategy("llada", _new_only(lambda s: 1 - s.p_token)),
        Strategy("margin", _new_only(lambda s: -margin_of(s.probs))),
        Strategy("entropy", _new_only(lambda s: s.entropy)),
        Strategy("threshold", _threshold, finishes_early="threshold" in OPEN_ENDED, follows_schedule=False),
        Strategy("remdm", _remdm),
        Strategy("origin", _origin, follows_schedule=False),
    )
}


def propose(probs: torch.Tensor, settings: GenerationSettings, gen: torch.Generator) -> torch.Tensor:
    """A token for every position: argmax (greedy), or a draw from `probs` restricted to the
    `sample_top_k` most likely tokens and to the top-p nucleus. (n, V) -> (n,)."""
    if settings.proposal == "greedy":
        return probs.argmax(dim=-1)
    filtered = probs
    k, top_p = settings.sample_top_k, settings.top_p
    if 0 < k < probs.shape[-1]:
        kth = probs.topk(k, dim=-1).values[:, -1:]  # (n, 1)
        filtered = torch.where(probs >= kth, filtered, 0.0)
    if top_p < 1.0:
        sorted_p, order = filtered.sort(dim=-1, descending=True)
        before = sorted_p.cumsum(-1) - sorted_p  # mass of the tokens ranked above each
        keep_sorted = before < top_p * sorted_p.sum(-1, keepdim=True)  # the first token always stays
        keep = torch.zeros_like(keep_sorted).scatter(1, order, keep_sorted)
        filtered = torch.where(keep, filtered, 0.0)
    return torch.multinomial(filtered, 1, generator=gen)[:, 0]
