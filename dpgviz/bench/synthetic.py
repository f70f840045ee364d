"""Synthetic runs: stores shaped like the sampler's output, filled with numpy random draws.

The one generator of fake runs, shared by the GUI benchmark, the session benchmark and
the tests: `synthetic_store(seq_len, steps)` yields the records a real run of `steps`
iterations would (same kinds, iterations, mask counts from core.schedule, flags, top-K
at the positions filled that iteration, repeated in the iteration's 'remask' and the
'final' record as the sampler repeats them, forward-pass counts), so the canvas, the timeline
and session files do the same work as with a model; the tokens are noise. `forks` adds
child branches continued from the middle of the root run, as the app's "continue" does.

numpy and the standard library only: no torch, no dearpygui (the GUI process and the
tests import it).
"""

from __future__ import annotations

import numpy as np

from dpgviz.core.records import RecordLayout, record_count, step_flags
from dpgviz.core.schedule import target_masks
from dpgviz.core.vocab import Vocabulary
from dpgviz.store.step_store import StepStore

SHAKESPEARE_CHARS = "\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"  # the default model's 65

__all__ = ["SHAKESPEARE_CHARS", "fork_point", "synthetic_store", "synthetic_vocab"]


def synthetic_vocab() -> Vocabulary:
    """The default model's 65-character vocabulary (plus the mask)."""
    return Vocabulary(itos=tuple(SHAKESPEARE_CHARS))


def fork_point(steps: int) -> tuple[int, int]:
    """(record index in the root, iteration the child starts at) of a synthetic fork.

    The root's 'remask' record of iteration steps//2 - 1 (its 'initial' when steps < 2);
    a run continued from there starts at iteration steps//2.
    """
    start = steps // 2
    return 2 * start, start


def _emit_run(
    store: StepStore,
    branch: str,
    vocab: Vocabulary,
    rng: np.random.Generator,
    tokens: np.ndarray,
    start_iteration: int,
    steps: int,
) -> None:
    """Append one run's records ('initial' at `start_iteration` .. 'final') to `branch`."""
    layout = store.layout
    seq_len, k, mask_id = layout.seq_len, min(layout.top_k, vocab.size), vocab.mask_id
    log_v = np.float32(np.log(vocab.size))
    prev: np.ndarray | None = None
    passes = 0

    top: tuple[np.ndarray, np.ndarray] | None = None  # the last prediction's (top_ids, top_probs) rows

    def emit(kind: str, iteration: int, target: int, filled: np.ndarray | None, conf: np.ndarray | None, score: np.ndarray | None) -> None:
        nonlocal prev, top
        rec = layout.empty()
        rec.tokens[:] = tokens
        rec.flags[:] = step_flags(prev, tokens, mask_id, None)
        prev = tokens.copy()
        if conf is not None:
            rec.confidence[:] = np.where(tokens == mask_id, np.nan, conf)
        if filled is not None:  # the model's belief where this iteration filled a mask
            n_filled = int(filled.sum())
            if kind == "prediction":  # drawn once per iteration; remask / final repeat it
                probs = np.sort(rng.random((n_filled, k), dtype=np.float32), axis=1)[:, ::-1]
                top = (rng.integers(0, vocab.size, (n_filled, k)), probs / (probs.sum(axis=1, keepdims=True) + 1e-3))
            rec.entropy[filled] = rng.random(n_filled, dtype=np.float32) * log_v
            rec.top_ids[filled, :k], rec.top_probs[filled, :k] = top
        if score is not None:
            rec.score[:] = score
        rec.iteration, rec.kind, rec.target_masks = iteration, kind, target
        rec.n_masked = int((tokens == mask_id).sum())
        rec.forward_passes = passes
        store.append_record(rec, branch)

    emit("initial", start_iteration, int((tokens == mask_id).sum()), None, None, None)
    conf = None
    filled = None
    for it in range(start_iteration, steps):
        filled = tokens == mask_id
        tokens = np.where(filled, rng.integers(0, vocab.size, seq_len), tokens)
        passes += 1
        conf = rng.random(seq_len, dtype=np.float32)
        target = target_masks(seq_len, it, steps, 0.99, 0.15)
        emit("prediction", it, target, filled, conf, None)
        if it == steps - 1:
            break
        score = rng.random(seq_len, dtype=np.float32)
        n_remask = max(0, target - int((tokens == mask_id).sum()))
        chosen = np.argsort(-score)[:n_remask]
        tokens = tokens.copy()
        tokens[chosen] = mask_id
        emit("remask", it, target, filled, conf, score)
    emit("final", steps - 1, 0, filled, conf, None)


def _predicted(seq_len: int, steps: int, start: int) -> int:
    """Positions masked before each prediction of a run from `start` (an upper bound off the schedule)."""
    first = seq_len if start == 0 else target_masks(seq_len, start - 1, steps, 0.99, 0.15)
    return first + sum(target_masks(seq_len, it, steps, 0.99, 0.15) for it in range(start, steps - 1))


def synthetic_store(
    seq_len: int = 1024,
    steps: int = 200,
    seed: int = 0,
    vocab: Vocabulary | None = None,
    forks: int = 0,
) -> StepStore:
    """A store holding one synthetic run of `steps` iterations over `seq_len` tokens.

    The root branch has record_count(steps) = 2*steps + 1 records. Each of `forks` child
    branches continues the root from `fork_point(steps)` with its own random draws and
    adds record_count(steps, start) records. Same seed, same store.
    """
    if seq_len < 1 or steps < 1 or forks < 0:
        raise ValueError(f"need seq_len >= 1, steps >= 1, forks >= 0 (got {seq_len}, {steps}, {forks})")
    vocab = vocab or synthetic_vocab()
    rng = np.random.default_rng(seed)
    layout = RecordLayout(seq_len=seq_len, top_k=8, n_ids=vocab.n_ids)
    fork_record, start = fork_point(steps)
    capacity = record_count(steps) + forks * record_count(steps, start)
    # Pool entries: one per position masked before each prediction (the schedule's counts),
    # so the store allocates once. The app cannot know this (strategy, protected and edited
    # positions change it) and lets the pool grow.
    candidates = _predicted(seq_len, steps, 0) + forks * _predicted(seq_len, steps, start)
    store = StepStore(layout, capacity=capacity, candidates=candidates)
    settings = {"steps": steps, "length": seq_len, "seed": seed}
    root = store.new_branch(settings, label="synthetic").id
    _emit_run(store, root, vocab, rng, np.full(seq_len, vocab.mask_id, np.int64), 0, steps)
    fork_tokens = store.get("tokens", store.branches[root].rows[fork_record]).astype(np.int64)
    for i in range(forks):
        child = store.new_branch(
            {**settings, "seed": seed + 1 + i}, parent=root, fork_record=fork_record, label=f"synthetic fork {i + 1}"
        ).id
        _emit_run(store, child, vocab, rng, fork_tokens.copy(), start, steps)
    return store
