"""Corrupting real text for the model explorer, and scoring the model's repair of it.

A corruption takes a window of ids and returns the corrupted ids plus which positions
were corrupted, and how (masked, or overwritten with other text). Every strategy draws
from one numpy Generator seeded by `CorruptionSettings.seed`, so the same settings on
the same ids give the same corruption. Every strategy corrupts exactly
`round(ratio * n)` positions (`corrupt_count`): that set is `Corruption.is_corrupted`,
the positions the metrics score. `fragment` may copy a character equal to the one it
overwrites; such a position still counts as corrupted (it was overwritten, and the model
is asked to say what belongs there), which keeps the ratio exact.

    random    mask round(ratio*n) positions drawn uniformly at random
    span      "sticky" masking: in rounds, a position next to a masked one is masked with
              probability span_grow, any other with span_start, until round(ratio*n) are masked
    replace   round(ratio*n) random positions get another real character (never the original)
    fragment  sticky spans overwritten by text copied from a random place in the source
    mix       the count split between span masking, random masking, replacement and fragments

Metrics (`repair_metrics`) over the corrupted positions: accuracy of the argmax, the mean
probability of the true token, and the cross-entropy of the true token in nats.

numpy only; no torch, no dearpygui.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

# Each strategy in one line (the explorer's tooltip, `explore --help` and the README show these).
CORRUPTION_INFO = {
    "random": "mask round(ratio*n) positions drawn uniformly at random",
    "span": "sticky span masking: in rounds, a position beside a masked one is masked with p(grow), "
    "any other with p(start), until exactly round(ratio*n) are masked",
    "replace": "replace round(ratio*n) random positions with another real character (never the original)",
    "fragment": "overwrite contiguous spans with text copied from a random place elsewhere in the source",
    "mix": "the count split between span masking, random masking, replacement and fragments (mix shares)",
}
CORRUPTIONS = tuple(CORRUPTION_INFO)
MIX_PARTS = ("span", "random", "replace", "fragment")  # the order mix applies its parts in
FRAGMENT_GROW = 0.9  # fragments are long sticky spans: a copied piece reads as text, not noise


class CorruptionError(ValueError):
    """A corruption setting is out of range; the message says which."""


@dataclass(frozen=True)
class CorruptionSettings:
    strategy: str = "random"  # one of CORRUPTIONS
    ratio: float = 0.5  # share of the window corrupted; the range is 0.1..0.9
    seed: int = 0  # numpy Generator seed: same seed + settings + ids = same corruption
    # Sticky masking (the seed trainer's StickyStageConfig p1/p2): a new span starts at a
    # position with span_start per round; a neighbour of a masked position joins with span_grow.
    span_start: float = 0.02
    span_grow: float = 0.5
    mix_shares: tuple[float, float, float, float] = (0.25, 0.25, 0.25, 0.25)  # MIX_PARTS' shares of the count

    def validate(self) -> CorruptionSettings:
        if self.strategy not in CORRUPTIONS:
            raise CorruptionError(f"strategy must be one of {', '.join(CORRUPTIONS)}, got {self.strategy!r}")
        if not 0.0 <= self.ratio <= 1.0:
            raise CorruptionError(f"ratio must be in [0, 1], got {self.ratio}")
        if not 0.0 < self.span_start <= 1.0 or not 0.0 <= self.span_grow <= 1.0:
            raise CorruptionError(f"span probabilities must be in (0, 1], got {self.span_start}, {self.span_grow}")
        shares = np.asarray(self.mix_shares, dtype=float)
        if shares.shape != (len(MIX_PARTS),) or (shares < 0).any() or shares.sum() <= 0:
            raise CorruptionError(f"mix shares must be {len(MIX_PARTS)} non-negative numbers, not all 0")
        return self

    def with_ratio(self, ratio: float) -> CorruptionSettings:
        return dataclasses.replace(self, ratio=float(ratio))

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["mix_shares"] = list(self.mix_shares)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> CorruptionSettings:
        names = {f.name for f in dataclasses.fields(cls)}
        kept = {k: v for k, v in data.items() if k in names}
        if "mix_shares" in kept:
            kept["mix_shares"] = tuple(float(s) for s in kept["mix_shares"])
        return cls(**kept).validate()


@dataclass
class Corruption:
    """A corrupted window: ids the model sees and which positions were corrupted, and how."""

    ids: np.ndarray  # (N,) int64: mask_id where masked, other text where replaced
    is_corrupted: np.ndarray  # (N,) bool: exactly corrupt_count(ratio, N) positions; the ones scored
    is_masked: np.ndarray  # (N,) bool, a subset of is_corrupted; the rest of it was overwritten

    @property
    def is_replaced(self) -> np.ndarray:
        return self.is_corrupted & ~self.is_masked


def corrupt_count(ratio: float, n: int) -> int:
    """Positions a corruption of `ratio` changes in `n`: round(ratio * n) (half to even)."""
    return int(np.clip(round(ratio * n), 0, n))


# -- choosing positions --------------------------------------------------------------------
def random_positions(rng: np.random.Generator, free: np.ndarray, count: int) -> np.ndarray:
    """`count` positions drawn uniformly from the True ones of `free`, as a bool mask."""
    chosen = np.zeros(len(free), dtype=bool)
    candidates = np.flatnonzero(free)
    count = min(count, len(candidates))
    chosen[rng.choice(candidates, size=count, replace=False)] = True
    return chosen


def sticky_positions(rng: np.random.Generator, free: np.ndarray, count: int, p_start: float, p_grow: float) -> np.ndarray:
    """`count` positions of `free` grown as contiguous spans in rounds (sticky masking).

    Each round every free, unchosen position draws once: with `p_grow` when a neighbour is
    already chosen (at least `p_start`, so any count is reachable), with `p_start` otherwise. The last round is trimmed to the exact count,
    keeping span growth before new starts so spans stay whole. O(n) numpy per round.
    """
    n = len(free)
    count = min(count, int(free.sum()))
    chosen = np.zeros(n, dtype=bool)
    while int(chosen.sum()) < count:
        beside = np.zeros(n, dtype=bool)
        beside[1:] |= chosen[:-1]
        beside[:-1] |= chosen[1:]
        open_ = free & ~chosen
        p = np.where(beside, max(p_grow, p_start), p_start)
        hits = open_ & (rng.random(n) < p)
        need = count - int(chosen.sum())
        if int(hits.sum()) > need:
            grow, start = np.flatnonzero(hits & beside), np.flatnonzero(hits & ~beside)
            keep = np.concatenate([rng.permutation(grow), rng.permutation(start)])[:need]
            hits = np.zeros(n, dtype=bool)
            hits[keep] = True
        chosen |= hits
    return chosen


def span_runs(is_set: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(starts, stops) of the contiguous runs of True in a bool array."""
    edges = np.diff(np.concatenate([[0], is_set.astype(np.int8), [0]]))
    return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)


# -- what goes at the positions ---------------------------------------------------------------
def other_tokens(rng: np.random.Generator, original: np.ndarray, choices: np.ndarray) -> np.ndarray:
    """For each original id, a uniformly drawn id of `choices` (sorted, unique) that differs from it."""
    m = len(choices)
    if m < 2:
        raise CorruptionError("replacement needs at least two characters to choose from")
    where = np.searchsorted(choices, original)
    is_known = (where < m) & (choices[np.minimum(where, m - 1)] == original)
    draw = rng.integers(0, np.where(is_known, m - 1, m))
    draw = draw + (is_known & (draw >= where))  # skip the original's own slot
    return choices[draw]


def fragment_text(rng: np.random.Generator, positions: np.ndarray, source: np.ndarray) -> np.ndarray:
    """Ids for the True positions: each contiguous run copies a piece of `source` at a random offset."""
    starts, stops = span_runs(positions)
    lengths = stops - starts
    if not len(starts):
        return np.zeros(0, dtype=np.int64)
    if len(source) < int(lengths.max()):
        raise CorruptionError(f"the source ({len(source)} tokens) is shorter than a fragment ({lengths.max()})")
    offsets = rng.integers(0, len(source) - lengths + 1)  # one offset per run
    run_of = np.repeat(np.arange(len(starts)), lengths)  # (k,) run index of each position, in order
    within = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.asarray(source, dtype=np.int64)[offsets[run_of] + within]


# -- the strategies --------------------------------------------------------------------------
def corrupt(
    ids: np.ndarray,
    settings: CorruptionSettings,
    mask_id: int,
    choices: np.ndarray,
    source: np.ndarray | None = None,
) -> Corruption:
    """Corrupt `ids` (N,) by `settings` (see the module docstring).

    `choices`: the real token ids replacement may write (never the mask or special ids).
    `source`: where fragments are copied from (default: `ids` itself).
    """
    settings.validate()
    ids = np.asarray(ids, dtype=np.int64)
    assert ids.ndim == 1, ids.shape
    choices = np.unique(np.asarray(choices, dtype=np.int64))
    source = ids if source is None else np.asarray(source, dtype=np.int64)
    rng = np.random.default_rng(settings.seed)
    n = len(ids)
    count = corrupt_count(settings.ratio, n)
    if settings.strategy == "mix":
        shares = np.asarray(settings.mix_shares, dtype=float)
        counts = np.floor(shares / shares.sum() * count).astype(int)
        counts[np.argmax(shares)] += count - int(counts.sum())  # the remainder to the largest share
        parts = dict(zip(MIX_PARTS, counts.tolist(), strict=True))
    else:
        parts = {settings.strategy: count}
    out = ids.copy()
    is_corrupted = np.zeros(n, dtype=bool)
    is_masked = np.zeros(n, dtype=bool)
    for part in MIX_PARTS:
        k = parts.get(part, 0)
        if not k:
            continue
        free = ~is_corrupted
        if part == "random":
            chosen = random_positions(rng, free, k)
            out[chosen] = mask_id
            is_masked |= chosen
        elif part == "span":
            chosen = sticky_positions(rng, free, k, settings.span_start, settings.span_grow)
            out[chosen] = mask_id
            is_masked |= chosen
        elif part == "replace":
            chosen = random_positions(rng, free, k)
            out[chosen] = other_tokens(rng, ids[chosen], choices)
        else:  # fragment
            chosen = sticky_positions(rng, free, k, settings.span_start, FRAGMENT_GROW)
            out[chosen] = fragment_text(rng, chosen, source)
        is_corrupted |= chosen
    return Corruption(out, is_corrupted, is_masked)


# -- metrics ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class RepairMetrics:
    accuracy: float  # share of corrupted positions whose argmax is the true token
    true_prob: float  # mean probability of the true token there
    ce: float  # mean -log p(true token) there, nats
    n: int  # corrupted positions scored

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def repair_metrics(
    log_p_true: np.ndarray, predicted: np.ndarray, target: np.ndarray, is_corrupted: np.ndarray
) -> RepairMetrics:
    """Metrics over the corrupted positions of one or more windows (any matching shapes).

    `log_p_true`: log-probability (natural log) the model gave the true token; `predicted`:
    its argmax id; `target`: the true ids. NaN metrics when nothing was corrupted.
    """
    sel = np.asarray(is_corrupted, dtype=bool)
    n = int(sel.sum())
    if n == 0:
        return RepairMetrics(float("nan"), float("nan"), float("nan"), 0)
    logp = np.asarray(log_p_true, dtype=np.float64)[sel]
    hits = np.asarray(predicted)[sel] == np.asarray(target)[sel]
    return RepairMetrics(float(hits.mean()), float(np.exp(logp).mean()), float(-logp.mean()), n)


def per_window_metrics(
    log_p_true: np.ndarray, predicted: np.ndarray, target: np.ndarray, is_corrupted: np.ndarray
) -> dict[str, np.ndarray]:
    """accuracy, true_prob, ce per window of (B, N) arrays, each (B,) (NaN where none corrupted)."""
    sel = np.asarray(is_corrupted, dtype=bool)
    n = sel.sum(axis=1)
    safe = np.maximum(n, 1)
    logp = np.where(sel, np.asarray(log_p_true, dtype=np.float64), 0.0)
    hits = (np.asarray(predicted) == np.asarray(target)) & sel
    empty = np.where(n > 0, 1.0, np.nan)
    return {
        "accuracy": hits.sum(axis=1) / safe * empty,
        "true_prob": np.where(sel, np.exp(logp), 0.0).sum(axis=1) / safe * empty,
        "ce": -logp.sum(axis=1) / safe * empty,
    }
