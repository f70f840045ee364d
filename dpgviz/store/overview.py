"""The overview: a records x positions picture of a branch, downsampled, its colour modes, and click-to-jump.

    OVERVIEW_MODES / normalise_mode   the modes ('state' is 'mask-state')
    overview_values                   the sampled grid before colouring (`Overview`)
    overview_rgb / overview_image     its colours, per mode (CHANGED_RGB, core.palette)
    overview_samples / overview_pick  which records and positions a W x H image shows,
                                      and pixel -> (record, position)

Every colour-mode piece of the overview lives here, together: the modes, what each
samples, and how each is coloured. A run in blocks is composed as store.inspect
describes (`Composer.cells`: only the sampled cells).

numpy and dpgviz.core only (and store.inspect, store.blocks for the values): never
imports torch, Pillow, dearpygui, or anything from export/gui/cli.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dpgviz.core.palette import (
    NO_VALUE_RGB,
    STATE_MASKED,
    STATE_RGB,
    STATE_VISIBLE,
    VALUE_MODES,
    VIRIDIS_RGB,
    cell_rgb,
    mask_states,
    value_levels,
    value_range,
)
from dpgviz.core.records import FLAG_MASKED
from dpgviz.store.blocks import Composer
from dpgviz.store.inspect import _mask_id, _rows, commit_records
from dpgviz.store.step_store import StepStore

# The export's colour modes plus two of the overview's own. "state" is accepted as an alias
# of "mask-state" (the GUI's short name).
OVERVIEW_MODES = ("mask-state", "confidence", "score", "entropy", "changed", "order")
# 'changed' mode: a changed token in the brightest viridis colour (stands out on the dark
# canvas grey); unchanged keeps the plain visible grey and masks the masked grey.
CHANGED_RGB = VIRIDIS_RGB[-1]
CHANGED_CODES = ("unchanged", "changed", "masked")  # Overview.codes in 'changed' mode
_CHANGED_RGB_TABLE = np.stack([STATE_RGB[STATE_VISIBLE], CHANGED_RGB, STATE_RGB[STATE_MASKED]]).astype(np.uint8)


def normalise_mode(mode: str) -> str:
    """An OVERVIEW_MODES name ('state' is 'mask-state'); ValueError for anything else."""
    mode = "mask-state" if mode == "state" else mode
    if mode not in OVERVIEW_MODES:
        raise ValueError(f"unknown overview mode {mode!r}; choose one of state, {', '.join(OVERVIEW_MODES)}")
    return mode


def overview_bins(n: int, size: int) -> np.ndarray:
    """Edges (m + 1,) of m = min(n, size) nearly equal bins over 0..n: bin j is edges[j]..edges[j+1]-1."""
    m = max(1, min(int(n), int(size)))
    return (np.arange(m + 1, dtype=np.int64) * int(n)) // m


def overview_samples(n_records: int, seq_len: int, width_px: int, height_px: int) -> tuple[np.ndarray, np.ndarray]:
    """(records (H,), positions (W,)) an overview image shows, H = min(n_records, height_px), W = min(seq_len, width_px).

    Nearest-neighbour sampling over equal bins: each image row shows the LAST record of its
    bin of records (so the bottom row is always the finished text) and each column the
    FIRST position of its bin of positions (the left edge is position 0). With no
    downsampling both are the identity.
    """
    rec_edges = overview_bins(n_records, height_px)
    pos_edges = overview_bins(seq_len, width_px)
    return rec_edges[1:] - 1, pos_edges[:-1]


def overview_pick(n_records: int, seq_len: int, width_px: int, height_px: int, x: float, y: float) -> tuple[int, int]:
    """(record, position) shown at image pixel (x, y) of `overview_image(..., width_px, height_px)`.

    x, y are in the image's own pixels (column, row; fractions allowed, clamped to the
    image): a view showing the image scaled must scale mouse coordinates back first. The
    result is exactly the sampled record and position the pixel was coloured from.
    """
    records, positions = overview_samples(n_records, seq_len, width_px, height_px)
    row = int(np.clip(np.floor(y), 0, len(records) - 1))
    col = int(np.clip(np.floor(x), 0, len(positions) - 1))
    return int(records[row]), int(positions[col])


@dataclass
class Overview:
    """What `overview_values` sampled: the grid before colouring.

    records (H,) and positions (W,) are the history indices / positions of each image row /
    column. `codes` (H, W) uint8 is the category of each cell: STATE_* codes in mask-state
    mode, CHANGED_CODES indices in changed mode, and in the value modes and order
    STATE_MASKED / STATE_VISIBLE for cells that show no value. `values` (H, W) float32 is the
    value shown (NaN where none) in value modes and order (the commit record), else None;
    `scale` its (lo, hi).
    """

    mode: str
    records: np.ndarray
    positions: np.ndarray
    codes: np.ndarray
    values: np.ndarray | None = None
    scale: tuple[float, float] | None = None


def overview_values(
    store: StepStore,
    rows: np.ndarray | list[int],
    mode: str,
    vocab_size: int,
    width_px: int = 1200,
    height_px: int = 1000,
) -> Overview:
    """Sample the records x positions grid of a branch for the overview in `mode`.

    Cost: mask-state, value modes and order read only the H x W sampled cells (plus, for
    order, one token row per record walking back from the end: `commit_records`).
    'changed' is max-pooled over each column's bin of positions instead of sampled (a
    single changed token in 65,536 would otherwise vanish between samples): it reads the
    full token rows of the H sampled records and of the record before each.

    A block run: positions across are the whole sequence (total_len), each cell composed at
    its record (`Composer.cells`: a gather of the sampled cells, no composed rows), so its
    cost is that of a run in one block of the same length.
    """
    mode = normalise_mode(mode)
    rows = _rows(rows)
    n_records, seq_len = len(rows), store.layout.total_len
    if n_records == 0:
        raise ValueError("no records to draw")
    if width_px < 1 or height_px < 1:
        raise ValueError(f"overview size must be at least 1x1, got {width_px}x{height_px}")
    records, positions = overview_samples(n_records, seq_len, width_px, height_px)
    comp = Composer(store, rows, _mask_id(store) if store.layout.is_blocks else 0)  # the id fills blocks to come
    flags = comp.cells("flags", records, positions)
    masked = (flags & FLAG_MASKED) != 0
    if mode == "mask-state":
        return Overview(mode, records, positions, mask_states(flags))
    plain = np.where(masked, STATE_MASKED, STATE_VISIBLE).astype(np.uint8)
    if mode in VALUE_MODES:
        values = comp.cells(mode, records, positions).astype(np.float32)
        return Overview(mode, records, positions, plain, values, value_range(mode, vocab_size))
    if mode == "order":
        commit = commit_records(store, rows)[positions]  # (W,)
        settled = (commit[None, :] >= 0) & (records[:, None] >= commit[None, :])
        values = np.where(settled, commit[None, :].astype(np.float32), np.nan).astype(np.float32)
        return Overview(mode, records, positions, plain, values, (0.0, float(max(1, n_records - 1))))
    # changed: any visible position of the column's bin differs from the previous record
    starts = overview_bins(seq_len, width_px)[:-1]
    changed = np.zeros((len(records), len(positions)), dtype=bool)
    for j, k in enumerate(records):  # one row of the image at a time: O(N) memory
        if k == 0:
            continue
        changed[j] = np.logical_or.reduceat(_changed_visible(store, rows, int(k), comp), starts)
    codes = np.where(changed, 1, np.where(masked, 2, 0)).astype(np.uint8)
    return Overview(mode, records, positions, codes)


def _changed_visible(store: StepStore, rows: np.ndarray, k: int, comp: Composer) -> np.ndarray:
    """(total_len,) bool: visible at record k and another token than at record k - 1 (k >= 1).

    A block run changes only record k's block between the two: that block is compared
    with what the sequence held there at k - 1 (an earlier record of it, or masks).
    """
    tokens, flags = store.column("tokens"), store.column("flags")
    row = rows[k]
    if not store.layout.is_blocks:
        return (tokens[row] != tokens[rows[k - 1]]) & ((flags[row] & FLAG_MASKED) == 0)
    layout = store.layout
    block = int(store.column("block")[row])
    off = layout.block_offset(block)
    span = layout.span(off)
    before = int(comp.sources_at([k - 1])[0, block])
    was = tokens[rows[before], :span] if before >= 0 else np.full(span, comp.mask_id)
    out = np.zeros(layout.total_len, dtype=bool)
    out[off : off + span] = (tokens[row, :span] != was) & ((flags[row, :span] & FLAG_MASKED) == 0)
    return out


def overview_rgb(view: Overview) -> np.ndarray:
    """(H, W, 3) uint8 colours of a sampled overview (the palette of `overview_image`)."""
    if view.mode == "mask-state":
        return STATE_RGB[view.codes]
    if view.mode == "changed":
        return _CHANGED_RGB_TABLE[view.codes]
    assert view.values is not None and view.scale is not None
    if view.mode in VALUE_MODES:
        # cell_rgb's rule: masked grey, no value plain grey; the codes carry the mask bit.
        flags = np.where(view.codes == STATE_MASKED, FLAG_MASKED, 0).astype(np.uint8)
        return cell_rgb(view.mode, flags, view.values, view.scale)
    has_value = np.isfinite(view.values)
    plain = np.where((view.codes == STATE_MASKED)[..., None], STATE_RGB[STATE_MASKED], NO_VALUE_RGB)
    coloured = VIRIDIS_RGB[value_levels(view.values, *view.scale)]
    return np.where(has_value[..., None], coloured, plain).astype(np.uint8)


def overview_image(
    store: StepStore,
    rows: np.ndarray | list[int],
    mode: str,
    vocab_size: int,
    width_px: int = 1200,
    height_px: int = 1000,
) -> np.ndarray:
    """(H, W, 3) uint8 picture of a branch: one row per record (top = record 0), one column per position.

    H = min(len(rows), height_px), W = min(total_len, width_px): downsampled by nearest-
    neighbour sampling (see `overview_samples`; 'changed' is max-pooled over positions,
    see `overview_values`), so a 1,000 x 65,536 run costs ~H x W cells, never a full image.

        mask-state   core.palette state colours ('state' is accepted too)
        confidence, score, entropy   viridis on the value_range scale; masked grey, none plain grey
        changed      CHANGED_RGB where a visible token differs from the previous record,
                     masked grey, else the plain visible grey
        order        decoding order: viridis of the commit record (dark = settled early) from
                     that record on; masked grey / plain grey until the position settles

    `overview_pick` maps a pixel back to (record, position).
    """
    return overview_rgb(overview_values(store, rows, mode, vocab_size, width_px, height_px))
