"""Re-sampling previews: what another temperature / top-p would have drawn from a record's stored top-k.

    preview_distribution   one position's candidates, re-weighted (p^(1/T), then the nucleus)
    resample_preview       one draw per position of a record from those

Pure numpy over the (N, K) candidate arrays a record holds (StepStore.top_k); reads no
store. Never imports torch, dearpygui or anything outside numpy.
"""

from __future__ import annotations

import numpy as np


def _preview_probs(top_probs: np.ndarray, temperature: float, top_p: float) -> np.ndarray:
    """(N, K) float64 distribution over each row's stored candidates after temperature and top-p.

    p^(1/T) renormalised over the candidates with p > 0 (T <= 0: all mass on the most
    probable), then the nucleus: candidates are kept most probable first while the mass
    before them is below top_p (the first always stays), renormalised. Rows with no
    candidates are all zero.
    """
    p = np.asarray(top_probs, dtype=np.float64)
    p = p.reshape(-1, p.shape[-1]) if p.ndim else p.reshape(1, 1)
    valid = p > 0
    with np.errstate(divide="ignore"):
        logp = np.where(valid, np.log(np.where(valid, p, 1.0)), -np.inf)
    if temperature <= 0:
        best = np.argmax(np.where(valid, p, -1.0), axis=1)
        q = np.zeros_like(p)
        q[np.arange(len(p)), best] = 1.0
        q[~valid.any(axis=1)] = 0.0
    else:
        scaled = logp / float(temperature)
        top = np.max(scaled, axis=1, keepdims=True)
        q = np.where(valid, np.exp(scaled - np.where(np.isfinite(top), top, 0.0)), 0.0)
    total = q.sum(axis=1, keepdims=True)
    q = np.divide(q, total, out=np.zeros_like(q), where=total > 0)
    order = np.argsort(-q, axis=1, kind="stable")
    q_sorted = np.take_along_axis(q, order, axis=1)
    before = np.cumsum(q_sorted, axis=1) - q_sorted
    keep_sorted = (before < top_p) | (np.arange(q.shape[1]) == 0)
    keep = np.zeros_like(keep_sorted)
    np.put_along_axis(keep, order, keep_sorted, axis=1)
    q = np.where(keep, q, 0.0)
    total = q.sum(axis=1, keepdims=True)
    return np.divide(q, total, out=np.zeros_like(q), where=total > 0)


def preview_distribution(top_probs_row: np.ndarray, temperature: float, top_p: float) -> np.ndarray:
    """(K,) float64 probabilities of one position's stored candidates (same order) at another
    temperature / top-p; all zero where the position has none. See `resample_preview`."""
    row = np.asarray(top_probs_row)
    return _preview_probs(row.reshape(1, -1), temperature, top_p)[0]


def resample_preview(
    top_ids: np.ndarray,
    top_probs: np.ndarray,
    temperature: float,
    top_p: float,
    rng_or_seed: np.random.Generator | int | None = 0,
) -> np.ndarray:
    """(N,) int64 ids another temperature / top-p would have drawn from a record's stored top-k.

    Each position draws one candidate from `preview_distribution` of its row (p^(1/T)
    renormalised over the stored candidates, then the top-p nucleus); positions with no
    candidates give -1. Only the stored K candidates are known, so this is the draw
    restricted to them. One uniform number per position in order: the same seed gives
    the same ids.
    """
    ids = np.asarray(top_ids)
    q = _preview_probs(top_probs, temperature, top_p)
    ids = ids.reshape(q.shape)
    rng = rng_or_seed if isinstance(rng_or_seed, np.random.Generator) else np.random.default_rng(rng_or_seed)
    u = rng.random(len(q))
    cum = np.cumsum(q, axis=1)
    # First candidate whose cumulative mass exceeds u * total (< total, as u < 1): a
    # zero-mass candidate's cumulative equals the one before it, so it is never the first.
    choice = np.minimum((cum <= (u * cum[:, -1])[:, None]).sum(axis=1), q.shape[1] - 1)
    drawn = ids[np.arange(len(q)), choice].astype(np.int64)
    return np.where(cum[:, -1] > 0, drawn, -1)
