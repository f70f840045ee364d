"""Cell colours of the token canvas: one palette for the app, the PNG/GIF rasteriser and the HTML player.

Two kinds of colouring (the colour modes themselves are core.color_modes' registry):

    states       a category per cell from the record's FLAG_* bits, coloured from the
                 Okabe-Ito palette (Okabe & Ito 2008, "Color Universal Design"), whose
                 hues stay distinct under the common colour-vision deficiencies.
    values       a number per cell, coloured through viridis (van der Walt & Smith,
                 matplotlib 2015): perceptually uniform and readable with deuteranopia,
                 protanopia and in greyscale. Cells without a value (NaN) fall back to
                 their state background (a masked block or the plain visible grey).

Everything here is a table or a vectorised numpy function of whole arrays, so the GUI
can build its colormaps from the same tables (`STATE_RGB`, `VIRIDIS_RGB`, as 0..255
RGB) and the exporters colour thousands of cells per frame without Python loops.

numpy only: no Pillow, no dearpygui, no torch.
"""

from __future__ import annotations

import math

import numpy as np

from dpgviz.core.records import FLAG_EDITED, FLAG_MASKED, FLAG_NEW, FLAG_PROMPT, FLAG_PROTECTED, FLAG_REMASKED

# State categories, in code order.
# The values match the app's dark canvas (gui/palette.py), so an export looks like the app.
STATE_NAMES = ("visible", "new", "masked", "remasked", "protected", "edited", "prompt")
STATE_VISIBLE, STATE_NEW, STATE_MASKED, STATE_REMASKED, STATE_PROTECTED, STATE_EDITED, STATE_PROMPT = range(
    len(STATE_NAMES)
)

# Which state a cell shows when several FLAG_* bits are set: the first (flag, state) pair
# whose flag is set wins, else STATE_VISIBLE. The most telling one comes first:
# remasked > masked > prompt > protected > edited > new (a remasked cell is also masked;
# a prompt's cell is also protected).
# This is the only copy of the order: gui/palette.py builds its lookup from `mask_states`
# and the HTML player receives this table as JSON (export/html.py `player_palette`).
STATE_PRIORITY: tuple[tuple[int, int], ...] = (
    (FLAG_REMASKED, STATE_REMASKED),
    (FLAG_MASKED, STATE_MASKED),
    (FLAG_PROMPT, STATE_PROMPT),
    (FLAG_PROTECTED, STATE_PROTECTED),
    (FLAG_EDITED, STATE_EDITED),
    (FLAG_NEW, STATE_NEW),
)

STATE_RGB = np.array(
    [
        (48, 52, 61),  # visible: settled text on the canvas's cell grey
        (86, 180, 233),  # new: Okabe-Ito sky blue (unmasked in this record)
        (118, 124, 136),  # masked: a filled grey block
        # remasked: Okabe-Ito vermillion darkened towards the masked grey. Early in a seed run
        # nearly every cell is remasked; full vermillion flooded the grid. A dark cell still
        # reads as "masked now", its hue says "just put back", and the app draws the token
        # it held in GHOST_RGB over it, so "put back" and "stayed" differ at a glance.
        (128, 70, 44),
        (240, 228, 66),  # protected: Okabe-Ito yellow
        (204, 121, 167),  # edited: Okabe-Ito reddish purple
        # prompt: Okabe-Ito blue, the text the run was given; darker than "new"'s sky blue, so a
        # prompt reads as settled context and light ink stays legible on it
        (0, 114, 178),
    ],
    dtype=np.uint8,
)
GHOST_RGB = np.array((255, 160, 110), dtype=np.uint8)  # a remasked cell's former token: light vermillion
NO_VALUE_RGB = STATE_RGB[STATE_VISIBLE]  # a visible cell the value mode has no number for
PAGE_RGB = np.array((30, 32, 38), dtype=np.uint8)  # canvas background: gutters, padding, captions
INK_LIGHT = np.array((230, 232, 236), dtype=np.uint8)
INK_DARK = np.array((16, 16, 20), dtype=np.uint8)

# matplotlib's viridis sampled at 10 even stops (its published hex values); 256 entries
# are interpolated linearly between them, within a few levels of the full table.
_VIRIDIS_STOPS = (
    0x440154, 0x482878, 0x3E4989, 0x31688E, 0x26828E, 0x1F9E89, 0x35B779, 0x6ECE58, 0xB5DE2B, 0xFDE725,
)  # fmt: skip


def _interpolate_stops(stops: tuple[int, ...], n: int = 256) -> np.ndarray:
    rgb = np.array([((c >> 16) & 255, (c >> 8) & 255, c & 255) for c in stops], dtype=np.float64)
    at = np.linspace(0.0, 1.0, len(stops))
    x = np.linspace(0.0, 1.0, n)
    table = np.stack([np.interp(x, at, rgb[:, ch]) for ch in range(3)], axis=1)
    return np.rint(table).astype(np.uint8)


VIRIDIS_RGB = _interpolate_stops(_VIRIDIS_STOPS)  # (256, 3) uint8, low -> high


def mask_states(flags: np.ndarray) -> np.ndarray:
    """STATE_* code of every cell from FLAG_* bits (any shape), as uint8."""
    flags = np.asarray(flags)
    codes = np.full(flags.shape, STATE_VISIBLE, dtype=np.uint8)
    # Lowest priority first, so the later (higher-priority) assignments win.
    for flag, state in reversed(STATE_PRIORITY):
        codes[(flags & flag) != 0] = state
    return codes


def entropy_max(vocab_size: int) -> float:
    """Top of the entropy scale in nats: ln V, the entropy of the uniform distribution over V real tokens."""
    return math.log(max(2, vocab_size))


def value_levels(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Row of VIRIDIS_RGB (0..255, intp) of each value on the scale lo..hi (clipped); NaN maps to 0.

    The one quantisation of values to colours: the app's colormap levels, the PNG/GIF
    rasteriser and the HTML player's embedded levels all come from here.
    """
    v = np.asarray(values, dtype=np.float32)
    scaled = (v - lo) / max(hi - lo, 1e-12)
    top = len(VIRIDIS_RGB) - 1
    return np.rint(np.clip(np.nan_to_num(scaled, nan=0.0), 0.0, 1.0) * top).astype(np.intp)


def value_rgb(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """viridis colour of each value on the scale lo..hi (clipped); NaN maps to the low end."""
    return VIRIDIS_RGB[value_levels(values, lo, hi)]


def cell_rgb(
    mode: str, flags: np.ndarray, values: np.ndarray | None = None, scale: tuple[float, float] | None = None
) -> np.ndarray:
    """Background colour (..., 3) uint8 of each cell: its state colour, or with `values` and their
    `scale` (lo, hi) viridis where the value is finite and the masked / no-value grey elsewhere.

    `mode` only names the mode in an error; core.color_modes.cell_rgb colours by a registered mode.
    """
    state_rgb = STATE_RGB[mask_states(flags)]
    if values is None and scale is None:
        return state_rgb
    if values is None or scale is None:
        raise ValueError(f"colour mode {mode!r} needs the record's values and a scale")
    values = np.asarray(values, dtype=np.float32)
    has_value = np.isfinite(values)
    # A value mode shows values; the only states kept are "masked" and "no value".
    plain = np.where((np.asarray(flags) & FLAG_MASKED)[..., None] != 0, STATE_RGB[STATE_MASKED], NO_VALUE_RGB)
    return np.where(has_value[..., None], value_rgb(values, *scale), plain).astype(np.uint8)


def _luminance(rgb: np.ndarray) -> np.ndarray:
    """WCAG relative luminance of sRGB colours in 0..255."""
    c = np.asarray(rgb, dtype=np.float32) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    return linear @ np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)


def ink_rgb(background: np.ndarray) -> np.ndarray:
    """Glyph colour for each background: INK_DARK or INK_LIGHT, whichever has the higher WCAG contrast."""
    lum = _luminance(background)
    dark, light = float(_luminance(INK_DARK)), float(_luminance(INK_LIGHT))
    use_dark = (lum + 0.05) / (dark + 0.05) > (light + 0.05) / (lum + 0.05)
    return np.where(use_dark[..., None], INK_DARK, INK_LIGHT).astype(np.uint8)


def hex_colour(rgb: np.ndarray | tuple[int, int, int]) -> str:
    """'#rrggbb' of one colour (for HTML and dearpygui theme strings)."""
    r, g, b = (int(c) for c in rgb)
    return f"#{r:02x}{g:02x}{b:02x}"
