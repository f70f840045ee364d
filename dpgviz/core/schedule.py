"""Mask-count schedules as pure functions (no torch): the sampler and the tests share them."""

from __future__ import annotations


def target_masks(seq_len: int, iteration: int, steps: int, start_ratio: float, end_ratio: float) -> int:
    """Masks left after iteration `iteration` (0-based) of `steps`, as in the seed app.

    target = int(N * (start - (i+1)/(S-1) * (start - end))) for i < S-1, and 0 after the
    last iteration (every position is filled then).
    """
    if iteration >= steps - 1:
        return 0
    ratio = start_ratio - (iteration + 1) / (steps - 1) * (start_ratio - end_ratio)
    return max(0, int(seq_len * ratio))
