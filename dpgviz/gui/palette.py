"""Colour modes of the token canvas: one colour table, and per-position indices into it.

The canvas draws cells through ImPlot's heat series with one qualitative colormap (the
table below), so a cell's value is simply an index into `COLORS`; switching modes only
changes the indices. The table, in order:

    BLANK      no token in the cell (plot background)
    states     masked / visible / new / remasked / protected / edited  (mask-state mode)
    NO_VALUE   visible cell the current mode has no number for (e.g. score in a prediction)
    levels     LEVELS steps of viridis, for confidence, remask score and entropy

Categorical colours are Okabe & Ito's colour-blind-safe set; the sequential scale is
viridis (perceptually uniform, readable with the common colour-vision deficiencies).
Masked cells are a solid grey block in every mode. `TEXT_ON_LIGHT[i]` says whether text
over colour i must be dark. numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dpgviz.core.records import FLAG_EDITED, FLAG_MASKED, FLAG_NEW, FLAG_PROTECTED, FLAG_REMASKED

BACKGROUND = (30, 32, 38)  # canvas background, also the BLANK cell colour
MASKED_COLOR = (118, 124, 136)  # grey: a masked position is a filled block

# (key, label, rgb) of the mask-state categories; the first is the masked block.
STATES: tuple[tuple[str, str, tuple[int, int, int]], ...] = (
    ("masked", "masked", MASKED_COLOR),
    ("visible", "visible", (48, 52, 61)),
    ("new", "new this step", (86, 180, 233)),  # Okabe-Ito sky blue
    ("remasked", "remasked this step", (213, 94, 0)),  # Okabe-Ito vermillion
    ("protected", "protected", (240, 228, 66)),  # Okabe-Ito yellow
    ("edited", "edited by hand", (204, 121, 167)),  # Okabe-Ito reddish purple
)
NO_VALUE_COLOR = (48, 52, 61)

# viridis anchor colours (matplotlib's table at 0, 1/8, ..., 1), interpolated to LEVELS.
_VIRIDIS = np.array(
    [
        (68, 1, 84),
        (71, 44, 122),
        (59, 81, 139),
        (44, 113, 142),
        (33, 144, 141),
        (39, 173, 129),
        (92, 200, 99),
        (170, 220, 50),
        (253, 231, 37),
    ],
    dtype=np.float64,
)
LEVELS = 32


def _viridis(n: int) -> np.ndarray:
    x = np.linspace(0.0, 1.0, n)
    anchors = np.linspace(0.0, 1.0, len(_VIRIDIS))
    return np.stack([np.interp(x, anchors, _VIRIDIS[:, c]) for c in range(3)], axis=1).round().astype(np.int64)


BLANK = 0
STATE_INDEX = {key: 1 + i for i, (key, _, _) in enumerate(STATES)}
MASKED = STATE_INDEX["masked"]
NO_VALUE = 1 + len(STATES)
LEVEL0 = NO_VALUE + 1

COLORS = np.array([BACKGROUND, *(c for _, _, c in STATES), NO_VALUE_COLOR, *_viridis(LEVELS)], dtype=np.int64)
N_COLORS = len(COLORS)


def _luminance(rgb: np.ndarray) -> np.ndarray:
    """Relative luminance (WCAG) of sRGB colours in 0..255."""
    c = rgb / 255.0
    lin = np.where(c <= 0.03928, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    return lin @ np.array([0.2126, 0.7152, 0.0722])


LIGHT_TEXT = (230, 232, 236, 255)
DARK_TEXT = (16, 16, 20, 255)
# Dark text wherever it contrasts better than light text (WCAG contrast ratios).
_LUM = _luminance(COLORS.astype(np.float64))
_LIGHT_LUM = float(_luminance(np.array(LIGHT_TEXT[:3], dtype=np.float64)))
_DARK_LUM = float(_luminance(np.array(DARK_TEXT[:3], dtype=np.float64)))
TEXT_ON_LIGHT = (_LUM + 0.05) / (_DARK_LUM + 0.05) > (_LIGHT_LUM + 0.05) / (_LUM + 0.05)  # True: draw dark text


@dataclass(frozen=True)
class ColorMode:
    key: str
    label: str
    field: str | None  # record field the levels come from; None for the categorical mode
    lo: float = 0.0
    hi: float = 1.0
    description: str = ""


MODES: tuple[ColorMode, ...] = (
    ColorMode("state", "Mask state", None, description="What happened to each position in this step"),
    ColorMode("confidence", "Confidence p(token)", "confidence", 0.0, 1.0, "Model probability of the token shown"),
    ColorMode("score", "Remask score", "score", 0.0, 1.0, "Higher = more likely to be masked again"),
    ColorMode("entropy", "Entropy (nats)", "entropy", 0.0, 4.2, "Uncertainty of the prediction at this position"),
)
MODE_BY_KEY = {m.key: m for m in MODES}
MODE_BY_LABEL = {m.label: m for m in MODES}


def _state_table() -> np.ndarray:
    """Colour index for every combination of the five FLAG_* bits (a 32-entry lookup)."""
    flags = np.arange(32)
    out = np.full(32, STATE_INDEX["visible"], dtype=np.uint8)
    out[(flags & FLAG_NEW) != 0] = STATE_INDEX["new"]
    out[(flags & FLAG_EDITED) != 0] = STATE_INDEX["edited"]
    out[(flags & FLAG_PROTECTED) != 0] = STATE_INDEX["protected"]
    out[(flags & FLAG_MASKED) != 0] = MASKED
    out[(flags & FLAG_REMASKED) != 0] = STATE_INDEX["remasked"]
    return out


_STATE_TABLE = _state_table()


def state_indices(flags: np.ndarray) -> np.ndarray:
    """Colour index per position from FLAG_* bits; remasked > masked > protected > edited > new."""
    return _STATE_TABLE[np.asarray(flags) & 31]


def level_indices(values: np.ndarray, flags: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Colour index per position for a number: a level where finite, else masked or no-value.

    A masked position with a finite value (the score that got it remasked) shows the value.
    """
    v = np.asarray(values, dtype=np.float32)
    finite = np.isfinite(v)
    span = hi - lo if hi > lo else 1.0
    level = np.clip(((np.nan_to_num(v, nan=lo) - lo) / span * LEVELS).astype(np.int64), 0, LEVELS - 1)
    is_masked = (np.asarray(flags) & FLAG_MASKED) != 0
    out = np.where(finite, LEVEL0 + level, np.where(is_masked, MASKED, NO_VALUE))
    return out.astype(np.uint8)


def mode_indices(mode: ColorMode, arrays: dict[str, np.ndarray]) -> np.ndarray:
    """Colour index per position of one record (`arrays`: field -> per-position array)."""
    if mode.field is None:
        return state_indices(arrays["flags"])
    return level_indices(arrays[mode.field], arrays["flags"], mode.lo, mode.hi)


def heat_values(indices: np.ndarray) -> np.ndarray:
    """Heat-series values (float64) that pick exactly colour `indices` from the colormap.

    ImPlot samples a qualitative colormap at int(N * t), t = (v - min) / (max - min);
    with min = 0, max = N and v = i + 0.5 that is i, away from any rounding edge.
    """
    return np.asarray(indices, dtype=np.float64) + 0.5


def colormap_colors() -> list[list[int]]:
    """The table as dearpygui colormap colours (RGBA 0..255)."""
    return [[int(r), int(g), int(b), 255] for r, g, b in COLORS]


def level_colors() -> list[list[int]]:
    """Only the sequential levels, for a legend's colour scale."""
    return [[int(r), int(g), int(b), 255] for r, g, b in COLORS[LEVEL0:]]
