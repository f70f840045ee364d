"""Several unmasking strategies, or several models, on the same seed and settings, side by side.

`compare_strategies` runs each strategy through the one sampler and reports what it
produced and what it cost: the final text, forward passes, denoising steps per second and
the mean confidence of the final text (each final token's probability under the last
prediction). With a store it also keeps every run as a sibling branch: a root branch holds
the shared all-masked 'initial' record and each strategy is a child forked at it, so the
app opens the session with the runs side by side (compare view) and one timeline.
`compare_models` does the same with one strategy on several models (sharing a vocabulary),
each branch recording which model made it (Branch.provenance).
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from dpgviz.core.records import run_record_count
from dpgviz.core.settings import GenerationSettings
from dpgviz.engine.sampler import Sampler, StartState
from dpgviz.store.step_store import StepStore

log = logging.getLogger(__name__)

_WORD = re.compile(r"[A-Za-z]+")  # the words `evaluate` counts


@dataclass(frozen=True)
class StrategyResult:
    strategy: str
    final_text: str
    forward_passes: int
    steps: int  # denoising iterations run (fewer than settings.steps when a strategy ends early)
    seconds: float
    mean_confidence: float
    branch: str | None = None  # its branch in the store, when one was given

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.seconds if self.seconds > 0 else float("nan")

    def to_dict(self) -> dict:
        return {
            "strategy": self.strategy,
            "final_text": self.final_text,
            "forward_passes": self.forward_passes,
            "steps_per_s": self.steps_per_s,
            "mean_confidence": self.mean_confidence,
        }


def word_validity(text: str, known: set[str]) -> float:
    """Share of alphabetic words of `text` found in `known` (as `evaluate` counts them)."""
    words = _WORD.findall(text)
    return sum(w in known for w in words) / max(1, len(words))


def known_words(corpus: str) -> set[str]:
    return set(_WORD.findall(corpus))


def comparison_store(sampler: Sampler, settings: GenerationSettings, n_strategies: int) -> StepStore:
    """An empty store with room for `n_strategies` runs of `settings` (blocks off)."""
    if settings.block_length and settings.n_blocks > 1:
        raise ValueError("a comparison is kept as branches only without blocks; lower --length to the block size")
    capacity = n_strategies * run_record_count(settings)
    return StepStore(sampler.layout(settings), capacity=capacity, mask_id=sampler.vocab.mask_id)


def compare_strategies(
    sampler: Sampler,
    settings: GenerationSettings,
    strategies: Iterable[str],
    store: StepStore | None = None,
    on_done: Callable[[StrategyResult], None] | None = None,
) -> list[StrategyResult]:
    """Run `settings` once per strategy (same model, seed and length); results in order.

    With `store` (see `comparison_store`), the runs become sibling branches labelled by
    strategy, all forked from a root branch that holds the shared 'initial' record.
    """
    results: list[StrategyResult] = []
    root: str | None = None
    for name in strategies:
        run_settings = dataclasses.replace(settings, strategy=name).validate(sampler.block_size)
        branch = None
        if store is not None:
            if root is None:  # the shared start: every strategy begins from the same all-masked record
                root = _shared_start(sampler, settings, run_settings, store)
            branch = store.new_branch(run_settings.to_dict(), parent=root, fork_record=0, label=name).id
        result = run_one(sampler, run_settings, name, store, branch)
        results.append(result)
        if on_done is not None:
            on_done(result)
    return results


def _shared_start(sampler: Sampler, settings: GenerationSettings, run_settings: GenerationSettings, store: StepStore) -> str:
    """The root branch every compared run forks from: the run's 'initial' record (all masked)."""
    root = store.new_branch(settings.to_dict(), label="all masked").id
    initial = next(iter(sampler.run(run_settings)))
    store.append_record(initial, root)
    return root


def run_one(
    sampler: Sampler, run_settings: GenerationSettings, name: str, store: StepStore | None, branch: str | None
) -> StrategyResult:
    """One run of a comparison; into `branch` of `store` (forked at the shared start) when given."""
    settings, mask_id = run_settings, sampler.vocab.mask_id
    start = StartState(emit_initial=store is None)
    if store is not None:
        start = StartState(tokens=np.full(settings.length, mask_id), emit_initial=False)
    t0 = time.perf_counter()
    tokens = np.full(settings.length, mask_id)  # the whole text, block by block
    confidence = np.full(settings.length, np.nan, dtype=np.float32)
    steps, passes = 0, 0
    for record in sampler.run(run_settings, start):
        if store is not None:
            store.append_record(record, branch)
        steps += record.kind == "prediction"
        passes = record.forward_passes
        if record.kind == "final":  # one per block; a shorter last block is padded
            span = slice(record.offset, min(settings.length, record.offset + settings.block_tokens))
            width = span.stop - span.start
            tokens[span], confidence[span] = record.tokens[:width], record.confidence[:width]
    seconds = time.perf_counter() - t0
    conf = confidence[np.isfinite(confidence)]
    result = StrategyResult(
        name, sampler.vocab.decode(tokens), int(passes), steps, seconds,
        float(conf.mean()) if len(conf) else float("nan"), branch,
    )  # fmt: skip
    log.debug("%s: %d passes, %.2f steps/s", name, result.forward_passes, result.steps_per_s)
    return result


def compare_models(
    models: list[tuple[str, Sampler, dict]],
    settings: GenerationSettings,
    store: StepStore | None = None,
    on_done: Callable[[StrategyResult], None] | None = None,
) -> list[StrategyResult]:
    """Run `settings` (one strategy, seed, schedule) once per model; results in order, each
    named by its model (`StrategyResult.strategy` holds the model's name here).

    `models` are (name, sampler, provenance) with the same vocabulary (the caller checks);
    with `store` each run becomes a sibling branch labelled by the model, forked from one
    all-masked start, with `provenance` (store.provenance) saying which model made it.
    """
    results: list[StrategyResult] = []
    root: str | None = None
    for name, sampler, provenance in models:
        run_settings = settings.validate(sampler.block_size)
        branch = None
        if store is not None:
            if root is None:
                root = _shared_start(sampler, settings, run_settings, store)
                store.branches[root].provenance = dict(provenance)
            b = store.new_branch(run_settings.to_dict(), parent=root, fork_record=0, label=name)
            b.provenance, branch = dict(provenance), b.id
        result = run_one(sampler, run_settings, name, store, branch)
        results.append(result)
        if on_done is not None:
            on_done(result)
    return results

