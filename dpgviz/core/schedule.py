"""Mask-count schedules as pure functions (no torch): the sampler and the tests share them."""

from __future__ import annotations

import math


def mask_ratio_after(iteration: int, steps: int, start_ratio: float, end_ratio: float, schedule: str = "linear") -> float:
    """Mask ratio the schedule wants after iteration `iteration` (0-based) of `steps`.

    With f = (i+1)/(S-1), the fraction of the way from start to end:
      linear  start - f * (start - end)                  (the seed app's schedule)
      cosine  end + (start - end) * cos(pi/2 * f)        (slow first, fast last, as in MaskGIT)
    and 0 after the last iteration (every position is filled then).
    """
    if iteration >= steps - 1:
        return 0.0
    f = (iteration + 1) / (steps - 1)
    if schedule == "cosine":
        return end_ratio + (start_ratio - end_ratio) * math.cos(math.pi / 2 * f)
    return start_ratio - f * (start_ratio - end_ratio)


def target_masks(
    seq_len: int, iteration: int, steps: int, start_ratio: float, end_ratio: float, schedule: str = "linear"
) -> int:
    """Masks left after iteration `iteration` (0-based) of `steps`.

    target = int(N * mask_ratio_after(i)); for the linear schedule that is the seed app's
    int(N * (start - (i+1)/(S-1) * (start - end))) for i < S-1, and 0 after the last iteration.
    """
    if iteration >= steps - 1:
        return 0
    return max(0, int(seq_len * mask_ratio_after(iteration, steps, start_ratio, end_ratio, schedule)))
