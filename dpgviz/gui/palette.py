"""Colour modes of the token canvas: one colour table, and per-position indices into it.

The modes themselves are core.color_modes' registry; `MODES`, `MODE_BY_KEY` and
`MODE_BY_LABEL` read it when asked (`canvas_mode`: a mode with its scale as colormap levels).

The canvas draws cells through ImPlot's heat series with one qualitative colormap (the
table below), so a cell's value is simply an index into `COLORS`; switching modes only
changes the indices. The table, in order:

    BLANK      no token in the cell (the canvas background)
    states     masked / visible / new / remasked / protected / edited  (the state mode)
    NO_VALUE   visible cell the current mode has no number for (e.g. score in a prediction)
    levels     LEVELS steps of viridis, for confidence, remask score and entropy

The colours themselves come from `dpgviz.core.palette`, shared with the PNG/GIF/HTML
exports so a picture looks like the app: Okabe & Ito's colour-blind-safe set for the
states, viridis for values. Masked cells are a solid grey block in every mode.
`TEXT_ON_LIGHT[i]` says whether text over colour i must be dark. numpy only.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from dpgviz.core import color_modes
from dpgviz.core import palette as shared
from dpgviz.core.discovery import default_model_entry
from dpgviz.core.records import FLAG_EDITED, FLAG_MASKED, FLAG_PROMPT, FLAG_PROTECTED
from dpgviz.core.vocab import VocabError, Vocabulary

log = logging.getLogger(__name__)


def _rgb(row: np.ndarray) -> tuple[int, int, int]:
    return (int(row[0]), int(row[1]), int(row[2]))


BACKGROUND = _rgb(shared.PAGE_RGB)  # canvas background, also the BLANK cell colour
MASKED_COLOR = _rgb(shared.STATE_RGB[shared.STATE_MASKED])  # a masked position is a filled block
NO_VALUE_COLOR = _rgb(shared.NO_VALUE_RGB)

# (key, label, rgb) of core.palette's state categories: masked and visible first (their indices are
# fixed), then the rest in STATE_NAMES order, so a state added there is in this table too.
_STATE_ORDER = ("masked", "visible", *(n for n in shared.STATE_NAMES if n not in ("masked", "visible")))
STATES: tuple[tuple[str, str, tuple[int, int, int]], ...] = tuple(
    (key, key, _rgb(shared.STATE_RGB[shared.STATE_NAMES.index(key)])) for key in _STATE_ORDER
)
LEVELS = len(shared.VIRIDIS_RGB)  # 256: the exports' scale, level for level

BLANK = 0
STATE_INDEX = {key: 1 + i for i, (key, _, _) in enumerate(STATES)}
MASKED = STATE_INDEX["masked"]
NO_VALUE = 1 + len(STATES)
LEVEL0 = NO_VALUE + 1

COLORS = np.array([BACKGROUND, *(c for _, _, c in STATES), NO_VALUE_COLOR, *shared.VIRIDIS_RGB], dtype=np.int64)

# Overlay entries after the opaque cell colours: a second heat series over the cells uses
# them to tint the selection and the cells two compared branches disagree on, translucent
# so the colour underneath (any mode) still shows. CLEAR draws nothing.
OVERLAY_RGBA = {
    "clear": (0, 0, 0, 0),
    "selected": (255, 255, 255, 96),
    "differs": (*_rgb(shared.STATE_RGB[shared.STATE_NAMES.index("edited")]), 150),
    # Find (app.find): Okabe-Ito orange, a hue no cell state uses; the current match stronger.
    "match": (230, 159, 0, 110),
    "match_current": (230, 159, 0, 215),
}
OVERLAY_INDEX = {key: len(COLORS) + i for i, key in enumerate(OVERLAY_RGBA)}
OVERLAY_CLEAR, OVERLAY_SELECTED, OVERLAY_DIFFERS = (OVERLAY_INDEX[k] for k in ("clear", "selected", "differs"))
OVERLAY_MATCH, OVERLAY_MATCH_CURRENT = OVERLAY_INDEX["match"], OVERLAY_INDEX["match_current"]
N_COLORS = len(COLORS) + len(OVERLAY_RGBA)  # the heat series' scale covers cells and overlays
# A selection within one row (a single cell after Go to, a word) is also ringed: a bright
# ring between two dark ones shows on every cell colour, light or dark, where the white tint
# alone all but vanishes on a light cell. (outer dark, inner bright) RGBA.
SELECTION_OUTLINE = ((0, 0, 0, 255), (255, 214, 0, 255))


CHANGED = STATE_INDEX["new"]  # a binary mode's "yes": core.color_modes.HIGHLIGHT_RGB, the sky blue of "new"
LIGHT_TEXT = (*_rgb(shared.INK_LIGHT), 255)
# The glyph a remasked cell held before, drawn faintly in the remask colour over the cell:
# "put back" reads as a dimmed letter, "stayed" as plain text (see core.palette STATE_RGB).
GHOST_TEXT = (*_rgb(shared.GHOST_RGB), 255)
DARK_TEXT = (*_rgb(shared.INK_DARK), 255)
# Text after a model's end of text (LLaDA, Dream pad to the end with it): drawn faint, so the
# answer reads apart from the padding (core.prompt.padding_after_eos).
DIM_TEXT = (*_rgb(shared.INK_LIGHT), 70)
TEXT_ON_LIGHT = (shared.ink_rgb(COLORS.astype(np.uint8)) == shared.INK_DARK).all(axis=-1)  # True: draw dark text


@dataclass(frozen=True)
class ColorMode:
    """A registered mode (core.color_modes) as the canvas draws it: its colormap scale lo..hi."""

    key: str
    label: str
    field: str | None  # the array the levels come from (a record field or a derived one); None: states
    lo: float = 0.0
    hi: float = 1.0
    description: str = ""
    kind: str = "states"


def _default_vocab_size() -> int:
    """Real tokens of the embedded default model (its packaged meta.pkl), for the scale shown before a load."""
    meta = default_model_entry().meta
    try:
        return Vocabulary.load(meta).size if meta is not None else 0
    except VocabError as exc:
        # Only the legend's placeholder depends on it; `for_vocab` sets the real scale on load.
        log.warning("default vocabulary unreadable (%s); entropy scale starts at ln 2", exc)
        return 0


DEFAULT_VOCAB_SIZE = _default_vocab_size()


def canvas_mode(spec: color_modes.ColorMode, vocab_size: int = DEFAULT_VOCAB_SIZE) -> ColorMode:
    """The canvas's view of a registered mode at a vocabulary of `vocab_size` tokens."""
    lo, hi = spec.scale(vocab_size) if spec.kind == "value" else (0.0, 1.0)
    field = None if spec.kind == "states" else (spec.name if spec.derived else spec.field)
    return ColorMode(spec.name, spec.label, field, lo, hi, spec.description, spec.kind)


class _Modes(Sequence):
    """The registry's modes, read each time (a mode registered at runtime is in the next window)."""

    def __getitem__(self, i: int) -> ColorMode:  # type: ignore[override]
        return [canvas_mode(m) for m in color_modes.modes()][i]

    def __len__(self) -> int:
        return len(color_modes.names())


class _ByKey(Mapping):
    """name (or alias) -> ColorMode, from the registry."""

    def __init__(self, by_label: bool = False) -> None:
        self.by_label = by_label

    def __getitem__(self, key: str) -> ColorMode:
        if self.by_label:
            for m in color_modes.modes():
                if m.label == key:
                    return canvas_mode(m)
            raise KeyError(key)
        try:
            return canvas_mode(color_modes.get(key))
        except ValueError:
            raise KeyError(key) from None

    def __iter__(self) -> Iterator[str]:
        return iter(m.label if self.by_label else m.name for m in color_modes.modes())

    def __len__(self) -> int:
        return len(color_modes.names())


MODES = _Modes()
MODE_BY_KEY = _ByKey()
MODE_BY_LABEL = _ByKey(by_label=True)


def for_vocab(mode: ColorMode, vocab_size: int) -> ColorMode:
    """`mode` with the exports' fixed scale for a vocabulary of `vocab_size` tokens."""
    return canvas_mode(color_modes.get(mode.key), vocab_size)


_FLAG_BITS = max(flag for flag, _ in shared.STATE_PRIORITY).bit_length()  # the FLAG_* bits a state reads


def _state_table() -> np.ndarray:
    """Colour index for every combination of the FLAG_* bits (a 64-entry lookup).

    The priority among bits is core.palette's (`mask_states`); this only renumbers its
    STATE_* codes into this table's indices.
    """
    to_index = np.array([STATE_INDEX[name] for name in shared.STATE_NAMES], dtype=np.uint16)
    return to_index[shared.mask_states(np.arange(1 << _FLAG_BITS))]


_STATE_TABLE = _state_table()


def state_indices(flags: np.ndarray) -> np.ndarray:
    """Colour index per position from FLAG_* bits, with core.palette's STATE_PRIORITY."""
    return _STATE_TABLE[np.asarray(flags) & ((1 << _FLAG_BITS) - 1)]


@functools.lru_cache(maxsize=16)
def _float16_levels(lo: float, hi: float) -> np.ndarray:
    """Colour index of every float16 bit pattern on the scale lo..hi (NaN and inf: NO_VALUE).

    A record's values are float16, so a step switch colours them with one table lookup
    instead of converting, scaling, clipping and rounding each: 65,536 entries (128 KB),
    built once per scale with the exports' own quantisation (core.palette.value_levels).
    """
    every = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    finite = np.isfinite(every)
    levels = LEVEL0 + shared.value_levels(np.where(finite, every, 0), lo, hi)
    return np.where(finite, levels, NO_VALUE).astype(np.uint16)


def level_indices(values: np.ndarray, flags: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Colour index per position for a number: a level where finite, else masked or no-value.

    A masked position with a finite value (the score that got it remasked) shows the value.
    """
    values = np.asarray(values)
    if values.dtype == np.float16:
        out = _float16_levels(float(lo), float(hi))[values.view(np.uint16)]
    else:
        finite = np.isfinite(values.astype(np.float32))
        out = np.where(finite, LEVEL0 + shared.value_levels(values, lo, hi), NO_VALUE).astype(np.uint16)
    is_masked = (np.asarray(flags) & FLAG_MASKED) != 0
    out[is_masked & (out == NO_VALUE)] = MASKED
    return out


def changed_indices(changed: np.ndarray, flags: np.ndarray) -> np.ndarray:
    """'changed' mode: changed cells in the 'new' colour, masked ones grey, the rest plain."""
    is_masked = (np.asarray(flags) & FLAG_MASKED) != 0
    out = np.where(np.asarray(changed, dtype=bool), CHANGED, STATE_INDEX["visible"])
    return np.where(is_masked & ~np.asarray(changed, dtype=bool), MASKED, out).astype(np.uint16)


def mode_indices(mode: ColorMode, arrays: dict[str, np.ndarray]) -> np.ndarray:
    """Colour index per position of one record (`arrays`: field -> per-position array), by the
    mode's kind (core.color_modes: the same rules as its `cell_rgb`)."""
    if mode.field is None:
        return state_indices(arrays["flags"])
    if mode.kind == "binary":
        return changed_indices(arrays[mode.field], arrays["flags"])
    return level_indices(arrays[mode.field], arrays["flags"], mode.lo, mode.hi)


def heat_values(indices: np.ndarray) -> np.ndarray:
    """Heat-series values (float64) that pick exactly colour `indices` from the colormap.

    ImPlot samples a qualitative colormap at int(N * t), t = (v - min) / (max - min);
    with min = 0, max = N and v = i + 0.5 that is i, away from any rounding edge.
    """
    return np.asarray(indices, dtype=np.float64) + 0.5


def colormap_colors() -> list[list[int]]:
    """The table as dearpygui colormap colours (RGBA 0..255): opaque cells, then the overlays."""
    return [[int(r), int(g), int(b), 255] for r, g, b in COLORS] + [list(rgba) for rgba in OVERLAY_RGBA.values()]


def with_hand_marks(indices: np.ndarray, flags: np.ndarray) -> np.ndarray:
    """Visible edited, protected and prompt cells keep their own colours in every mode.

    Prompt wins over protected, protected over edited, and a masked cell stays masked, as in
    the state mode (core.palette.STATE_PRIORITY).
    """
    flags = np.asarray(flags)
    visible = (flags & FLAG_MASKED) == 0
    out = np.where(visible & ((flags & FLAG_EDITED) != 0), STATE_INDEX["edited"], indices)
    out = np.where(visible & ((flags & FLAG_PROTECTED) != 0), STATE_INDEX["protected"], out)
    return np.where(visible & ((flags & FLAG_PROMPT) != 0), STATE_INDEX["prompt"], out).astype(np.uint16)


def level_colors(n: int = 64) -> list[list[int]]:
    """`n` colours evenly along the sequential levels, for a legend's colour scale."""
    picks = COLORS[LEVEL0 + np.linspace(0, LEVELS - 1, n).round().astype(int)]
    return [[int(r), int(g), int(b), 255] for r, g, b in picks]
