"""The colour modes of the canvas, the overview and the exports: one registry, one entry per mode.

A colour mode says, for every cell (a record x a position), what colour it has. Its entry
(`ColorMode`) holds everything any view needs:

    name, label, description   its one name (window, CLI, exports, session), the window's
                               label and the tooltip's sentence
    kind                       "states": a category per cell from the FLAG_* bits (core.palette);
                               "value": a number per cell through viridis on `scale`;
                               "binary": a yes/no per cell in the HIGHLIGHT colour
    field / values             where the per-cell value comes from: a stored record field, or
                               `values(cells)`, vectorised over a whole `Cells` grid (records x
                               positions); the caller's `Cells` caches what is costly
    scale(vocab_size)          the fixed (lo, hi) of a value mode, so frames compare
    legend(vocab_size)         the swatches (and the value scale) that explain it: the window's
                               legend and the PNG/GIF/overview legends draw this list, the HTML
                               player receives it as JSON
    player                     the HTML player embeds its values (levels) and offers it

`register(mode)` adds one (at runtime too: a window built after it, the CLI's parser and the
exports see it); `get(name)` resolves a name or an alias ("mask-state" is "state"); `names()`
and `modes()` list them in registration order. Nothing else in dpgviz lists modes.

numpy and dpgviz.core only.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from dpgviz.core import palette as p

KINDS = ("states", "value", "binary")
HIGHLIGHT_RGB = p.STATE_RGB[p.STATE_NEW]  # a binary mode's "yes": the sky blue of "new" (the canvas's since ever)


def _rgb(c: np.ndarray) -> tuple[int, int, int]:
    return (int(c[0]), int(c[1]), int(c[2]))


@dataclass(frozen=True)
class LegendItem:
    """One entry of a legend: a swatch (`rgb`) with its label, or the value scale (`scale`: the
    texts at its low and high ends, drawn as a viridis bar between them)."""

    label: str = ""
    rgb: tuple[int, int, int] | None = None
    scale: tuple[str, str] | None = None

    def to_json(self) -> dict:
        if self.scale is not None:
            return {"scale": list(self.scale)}
        return {"label": self.label, "rgb": p.hex_colour(self.rgb or (0, 0, 0))}


class Cells(Protocol):
    """A grid of cells a mode's `values` is computed over: records (H,) x positions (W,).

    The canvas passes one record and every position (app.inspect), the overview the sampled
    grid (store.overview), the PNG/GIF one record at a time (export.images). Each caches its
    costly parts (the decoding order) itself.
    """

    records: np.ndarray  # (H,) indices into the branch's history
    positions: np.ndarray  # (W,) positions of the (whole) sequence
    n_records: int  # records in the branch's history
    vocab_size: int

    def field(self, name: str) -> np.ndarray:
        """(H, W) stored record field at the grid's cells (a block run: composed)."""
        ...

    def changed(self) -> np.ndarray:
        """(H, W) bool: visible and another token than at the record before (the overview pools
        each column's bin of positions, so one change in 65,536 still shows)."""
        ...

    def commit(self) -> np.ndarray:
        """(W,) int: the history record from which each position holds its final token; -1 never."""
        ...

    def disagreement(self) -> np.ndarray:
        """(H, W) float32: JS of the branch's model and its scoring model, on 0..1; NaN where none."""
        ...


def unit_scale(vocab_size: int) -> tuple[float, float]:
    return 0.0, 1.0


@dataclass(frozen=True)
class ColorMode:
    """One colour mode (see the module docstring)."""

    name: str
    label: str
    kind: str
    description: str = ""
    field: str | None = None  # a stored record field (value modes without `values`)
    values: Callable[[Cells], np.ndarray] | None = None  # derived: (H, W) from a Cells grid
    scale: Callable[[int], tuple[float, float]] = unit_scale
    swatches: Callable[[ColorMode, int], list[LegendItem]] | None = None  # None: the kind's own legend
    aliases: tuple[str, ...] = ()
    player: bool = False  # the HTML player offers it
    overview: bool = True  # the overview and the PNG/GIF can compute it (False: only the window has its data)
    extra: dict = dataclasses.field(default_factory=dict)  # anything else a view needs, by key

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"colour mode {self.name!r}: kind must be one of {', '.join(KINDS)}, not {self.kind!r}")
        if self.kind != "states" and self.field is None and self.values is None:
            raise ValueError(f"colour mode {self.name!r} needs a record field or a values function")

    @property
    def key(self) -> str:  # the window's name for it (gui.palette reads .key)
        return self.name

    @property
    def derived(self) -> bool:
        """Computed from the branch's history rather than read from one record."""
        return self.values is not None

    def cell_values(self, cells: Cells) -> np.ndarray:
        """(H, W) per-cell values (float32 for "value", bool for "binary") of the grid."""
        if self.values is not None:
            return np.asarray(self.values(cells))
        assert self.field is not None, self.name
        return cells.field(self.field)

    def legend(self, vocab_size: int) -> list[LegendItem]:
        """What explains this mode: swatches, and for a value mode its scale first."""
        if self.swatches is not None:
            return self.swatches(self, vocab_size)
        masked = LegendItem("masked", _rgb(p.STATE_RGB[p.STATE_MASKED]))
        if self.kind == "states":
            return [LegendItem(name, _rgb(p.STATE_RGB[i])) for i, name in enumerate(p.STATE_NAMES)]
        if self.kind == "binary":
            return [LegendItem(self.name, _rgb(HIGHLIGHT_RGB)), LegendItem(f"not {self.name}", _rgb(p.NO_VALUE_RGB)), masked]
        lo, hi = self.scale(vocab_size)
        return [LegendItem(scale=(f"{lo:g}", f"{hi:.3g}")), masked, LegendItem("no value", _rgb(p.NO_VALUE_RGB))]

    def legend_json(self, vocab_size: int) -> list[dict]:
        return [item.to_json() for item in self.legend(vocab_size)]


# Every colour cell_rgb paints, in one table: the viridis levels, then masked, no value and highlight.
_RGB_TABLE = np.concatenate(
    [p.VIRIDIS_RGB, p.STATE_RGB[p.STATE_MASKED][None], p.NO_VALUE_RGB[None], HIGHLIGHT_RGB[None]]
).astype(np.uint8)
_MASKED_AT, _NO_VALUE_AT, _HIGHLIGHT_AT = len(p.VIRIDIS_RGB), len(p.VIRIDIS_RGB) + 1, len(p.VIRIDIS_RGB) + 2
_NONE = np.iinfo(np.uint16).max  # "no value" in _levels' output


@functools.lru_cache(maxsize=16)
def _float16_levels(lo: float, hi: float) -> np.ndarray:
    """The viridis level of every float16 bit pattern on lo..hi (_NONE for NaN, inf): 65,536 entries,
    core.palette.value_levels' own quantisation, so float16 values colour by one lookup."""
    every = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    finite = np.isfinite(every)
    return np.where(finite, p.value_levels(np.where(finite, every, 0), lo, hi), _NONE).astype(np.uint16)


def _levels(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """uint16 viridis level per value (core.palette.value_levels), _NONE where not finite."""
    if values.dtype == np.float16:
        return _float16_levels(float(lo), float(hi))[values.view(np.uint16)]
    values = np.asarray(values, dtype=np.float32)
    return np.where(np.isfinite(values), p.value_levels(values, lo, hi), _NONE).astype(np.uint16)


def cell_rgb(mode: ColorMode, flags: np.ndarray, values: np.ndarray | None, vocab_size: int) -> np.ndarray:
    """(..., 3) uint8 colour of each cell in `mode`, from its FLAG_* bits and its `cell_values`.

    states: core.palette's state colours; value: viridis on the mode's scale where finite, else
    the masked grey (masked) or the no-value grey; binary: HIGHLIGHT_RGB where true, else
    masked / no-value grey. The one colouring of the overview and the PNG/GIF exports; the
    window's colormap indices (gui.palette.mode_indices) follow the same rules. One index per
    cell into one table, then one gather: no (..., 3) temporaries per rule.
    """
    flags = np.asarray(flags)
    if mode.kind == "states":
        return p.STATE_RGB[p.mask_states(flags)]
    assert values is not None, mode.name
    plain = np.where((flags & p.FLAG_MASKED) != 0, np.uint16(_MASKED_AT), np.uint16(_NO_VALUE_AT))
    if mode.kind == "binary":
        return _RGB_TABLE[np.where(np.asarray(values, dtype=bool), np.uint16(_HIGHLIGHT_AT), plain)]
    levels = _levels(np.asarray(values), *mode.scale(vocab_size))
    return _RGB_TABLE[np.where(levels == _NONE, plain, levels)]


# -- the registry ------------------------------------------------------------------------------
_MODES: dict[str, ColorMode] = {}
_ALIASES: dict[str, str] = {}


def register(mode: ColorMode) -> ColorMode:
    """Add `mode` (or replace the one of its name); returns it."""
    for alias in (mode.name, *mode.aliases):
        owner = _ALIASES.get(alias)
        if owner is not None and owner != mode.name:
            raise ValueError(f"colour mode name {alias!r} is taken by {owner!r}")
    _MODES[mode.name] = mode
    for alias in (mode.name, *mode.aliases):
        _ALIASES[alias] = mode.name
    return mode


def unregister(name: str) -> None:
    """Remove a mode registered at runtime (tests); the built-ins stay."""
    mode = _MODES.pop(name, None)
    if mode is not None:
        for alias in (mode.name, *mode.aliases):
            _ALIASES.pop(alias, None)


def get(name: str) -> ColorMode:
    """The mode called `name` (or an alias of it); ValueError naming the choices otherwise."""
    key = _ALIASES.get(name)
    if key is None:
        raise ValueError(f"unknown colour mode {name!r}; choose one of {', '.join(names())}")
    return _MODES[key]


def canonical(name: str) -> str:
    """The one name of `name` ("mask-state" -> "state"); ValueError if unknown."""
    return get(name).name


def names() -> tuple[str, ...]:
    return tuple(_MODES)


def modes() -> tuple[ColorMode, ...]:
    return tuple(_MODES.values())


# -- the built-in modes -------------------------------------------------------------------------
def _order_values(cells: Cells) -> np.ndarray:
    """Decoding order: the commit record as a fraction of the run (0 = first record, 1 = last),
    from that record on; NaN where the position has not settled yet (or never does)."""
    commit = np.asarray(cells.commit())[None, :]
    settled = (commit >= 0) & (np.asarray(cells.records)[:, None] >= commit)
    fraction = commit.astype(np.float32) / np.float32(max(1, cells.n_records - 1))
    return np.where(settled, fraction, np.float32(np.nan)).astype(np.float32)


def _order_legend(mode: ColorMode, vocab_size: int) -> list[LegendItem]:
    return [LegendItem(scale=("first record", "last record")),
            LegendItem("masked", _rgb(p.STATE_RGB[p.STATE_MASKED])), LegendItem("not settled", _rgb(p.NO_VALUE_RGB))]


def _changed_legend(mode: ColorMode, vocab_size: int) -> list[LegendItem]:
    return [LegendItem("changed", _rgb(HIGHLIGHT_RGB)), LegendItem("unchanged", _rgb(p.NO_VALUE_RGB)),
            LegendItem("masked", _rgb(p.STATE_RGB[p.STATE_MASKED]))]


def _disagreement_legend(mode: ColorMode, vocab_size: int) -> list[LegendItem]:
    return [LegendItem(scale=("0 agree", "1 bit (disjoint)")), LegendItem("masked", _rgb(p.STATE_RGB[p.STATE_MASKED])),
            LegendItem("not scored", _rgb(p.NO_VALUE_RGB))]


register(ColorMode(
    "state", "Mask state", "states", "What happened to each position in this step:\n"
    "new = unmasked this step, remasked = put back this step, edited = by hand",
    aliases=("mask-state",), player=True,
))
register(ColorMode("confidence", "Confidence p(token)", "value", "Model probability of the token shown",
                   field="confidence", player=True))
register(ColorMode("score", "Remask score", "value", "Higher = more likely to be masked again", field="score"))
register(ColorMode("entropy", "Entropy (nats)", "value", "Uncertainty of the prediction at this position",
                   field="entropy", scale=lambda vocab_size: (0.0, p.entropy_max(vocab_size))))
register(ColorMode(
    "changed", "Changed since previous step", "binary",
    "Tokens that differ from the step before (unmasked, remasked or resampled)",
    values=lambda cells: cells.changed(), swatches=_changed_legend,
))
register(ColorMode(
    "order", "Decoding order", "value",
    "When each token was committed for good: early (dark) to late (yellow) in the run;\n"
    "grey until the position settles",
    values=_order_values, swatches=_order_legend,
))
# A second model's score layer (`score`, Score with model...): where the two models' beliefs part.
register(ColorMode(
    "disagreement", "Disagreement (JS, bits)", "value",
    "Jensen-Shannon divergence between this branch's model and the model that scored it, from both\n"
    "top-8 lists (the tail beyond spread evenly): 0 = same beliefs, 1 bit = nothing in common.\n"
    "Shown at each step's last prediction; grey where nothing was scored (Branches > Score with model...)",
    values=lambda cells: cells.disagreement(), swatches=_disagreement_legend, overview=False,
))
