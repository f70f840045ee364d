"""The overview: a records x positions picture of a branch, downsampled, coloured by any colour mode, and click-to-jump.

    overview_values                   the sampled grid before colouring (`Overview`): the mode's
                                      per-cell values over a `GridCells` (core.color_modes.Cells)
    overview_rgb / overview_image     its colours (core.color_modes.cell_rgb)
    overview_samples / overview_pick  which records and positions a W x H image shows,
                                      and pixel -> (record, position)

The modes are core.color_modes' registry: a mode's `values(cells)` runs once over the whole
sampled grid (vectorised), and `GridCells` supplies what a derived mode reads (the decoding
order, the changes since the record before, pooled over each column's bin of positions).
A run in blocks is composed as store.inspect describes (`Composer.cells`: only the sampled cells).

numpy and dpgviz.core only (and store.inspect, store.blocks for the values): never
imports torch, Pillow, dearpygui, or anything from export/gui/cli.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dpgviz.core import color_modes
from dpgviz.core.palette import STATE_MASKED, STATE_VISIBLE, mask_states
from dpgviz.core.records import FLAG_MASKED
from dpgviz.store.blocks import Composer
from dpgviz.store.inspect import _mask_id, _rows
from dpgviz.store.step_store import StepStore

CHANGED_RGB = color_modes.HIGHLIGHT_RGB  # a binary mode's "yes" (the 'changed' mode's changed token)
CHANGED_CHUNK = 16  # records compared at once by GridCells.changed: 16 x 65,536 cells a pass
BINARY_CODES = ("no", "yes", "masked")  # Overview.codes of a binary mode ('changed': unchanged / changed / masked)


def overview_mode(mode: str) -> color_modes.ColorMode:
    """The registered mode `mode` names (aliases too) if the overview can draw it; ValueError otherwise."""
    found = color_modes.get(mode)
    if not found.overview:
        drawable = [m.name for m in color_modes.modes() if m.overview]
        raise ValueError(f"colour mode {mode!r} has no overview; choose one of {', '.join(drawable)}")
    return found


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


class GridCells:
    """core.color_modes.Cells over the cells `records` x `positions` of a branch's history.

    `field` gathers only those cells (composed in a block run); `changed` reads the full token
    rows of each record and the one before and pools them over each column's bin (`pool_edges`)
    so a single change in 65,536 still shows; `commit` is store.inspect.commit_records. Each
    is computed once per grid.
    """

    def __init__(
        self, store: StepStore, rows: np.ndarray, records: np.ndarray, positions: np.ndarray, vocab_size: int,
        comp: Composer | None = None, pool_edges: np.ndarray | None = None, branch: str | None = None,
    ) -> None:
        self.store, self.rows, self.branch = store, rows, branch
        self.records, self.positions = np.asarray(records), np.asarray(positions)
        self.n_records, self.vocab_size = len(rows), vocab_size
        self.comp = comp or Composer(store, rows, _mask_id(store) if store.layout.is_blocks else 0)
        self.pool_edges = pool_edges
        self._cache: dict[str, np.ndarray] = {}

    def prime(self, key: str, value: np.ndarray) -> None:
        """Hand in a part computed elsewhere (a GIF's frames share one decoding order)."""
        self._cache[key] = value

    def field(self, name: str) -> np.ndarray:
        if name not in self._cache:
            self._cache[name] = self.comp.cells(name, self.records, self.positions)
        return self._cache[name]

    def commit(self) -> np.ndarray:
        """Decoding order (store.inspect.commit_records) at the grid's positions only: each sampled
        column of every record (composed in a block run), walked back from the last record at once."""
        if "commit" not in self._cache:
            records = np.arange(self.n_records)
            tokens = self.comp.cells("tokens", records, self.positions)  # (R, W)
            visible = (self.comp.cells("flags", records, self.positions) & FLAG_MASKED) == 0
            holds = (tokens == tokens[-1]) & visible  # (R, W): this record already shows the final token
            held = np.logical_and.accumulate(holds[::-1], axis=0)[::-1]  # ... and so does every one after
            first = np.argmax(held, axis=0).astype(np.int32)  # held is False...False True...True per column
            self._cache["commit"] = np.where(held[-1], first, np.int32(-1))
        return self._cache["commit"]

    def changed(self) -> np.ndarray:
        if "changed" in self._cache:
            return self._cache["changed"]
        out = np.zeros((len(self.records), len(self.positions)), dtype=bool)
        starts = self.pool_edges[:-1] if self.pool_edges is not None else None
        if not self.store.layout.is_blocks:  # whole rows, CHANGED_CHUNK records at a time
            at = np.flatnonzero(self.records > 0)
            for i in range(0, len(at), CHANGED_CHUNK):
                j = at[i : i + CHANGED_CHUNK]
                diff = _changed_rows(self.store, self.rows[self.records[j]], self.rows[self.records[j] - 1])
                out[j] = (np.maximum.reduceat(diff, starts, axis=1) if starts is not None else diff[:, self.positions]) != 0
        else:
            for j, k in enumerate(self.records):  # one row at a time: O(N) memory
                if k == 0:
                    continue
                row = _changed_visible(self.store, self.rows, int(k), self.comp)
                out[j] = np.logical_or.reduceat(row, starts) if starts is not None else row[self.positions]
        self._cache["changed"] = out
        return out

    def disagreement(self) -> np.ndarray:
        from dpgviz.store.layers import disagreement_at

        out = np.full((len(self.records), len(self.positions)), np.nan, dtype=np.float32)
        if self.branch is None:  # no branch named: nothing scored
            return out
        for j, k in enumerate(self.records):  # one record at a time (store.layers)
            out[j] = disagreement_at(self.store, self.branch, self.rows, int(k), self.vocab_size, scaled=True)[self.positions]
        return out


@dataclass
class Overview:
    """What `overview_values` sampled: the grid before colouring.

    records (H,) and positions (W,) are the history indices / positions of each image row /
    column; `flags` (H, W) the cells' FLAG_* bits. `codes` (H, W) uint8 is the category of each
    cell: STATE_* codes in a states mode, BINARY_CODES indices in a binary mode, and in a value
    mode STATE_MASKED / STATE_VISIBLE. `values` (H, W) is the mode's per-cell values (None in a
    states mode).
    """

    mode: str
    records: np.ndarray
    positions: np.ndarray
    codes: np.ndarray
    flags: np.ndarray
    values: np.ndarray | None = None
    vocab_size: int = 0


def overview_values(
    store: StepStore,
    rows: np.ndarray | list[int],
    mode: str,
    vocab_size: int,
    width_px: int = 1200,
    height_px: int = 1000,
) -> Overview:
    """Sample the records x positions grid of a branch for the overview in `mode`.

    Cost: a mode reads the H x W sampled cells it needs (stored fields), plus for 'order' one
    token row per record walking back from the end (`commit_records`). 'changed' is max-pooled
    over each column's bin of positions instead of sampled (a single changed token in 65,536
    would otherwise vanish between samples): it reads the full token rows of the H sampled
    records and of the record before each. `python main.py bench overview` times every mode.

    A block run: positions across are the whole sequence (total_len), each cell composed at
    its record (`Composer.cells`: a gather of the sampled cells, no composed rows), so its
    cost is that of a run in one block of the same length.
    """
    spec = overview_mode(mode)
    rows = _rows(rows)
    n_records, seq_len = len(rows), store.layout.total_len
    if n_records == 0:
        raise ValueError("no records to draw")
    if width_px < 1 or height_px < 1:
        raise ValueError(f"overview size must be at least 1x1, got {width_px}x{height_px}")
    records, positions = overview_samples(n_records, seq_len, width_px, height_px)
    cells = GridCells(store, rows, records, positions, vocab_size, pool_edges=overview_bins(seq_len, width_px))
    flags = cells.field("flags")
    masked = (flags & FLAG_MASKED) != 0
    if spec.kind == "states":
        return Overview(spec.name, records, positions, mask_states(flags), flags, None, vocab_size)
    values = spec.cell_values(cells)
    if spec.kind == "binary":
        codes = np.where(values, 1, np.where(masked, 2, 0)).astype(np.uint8)
        # a cell shows "yes" over its mask (as the canvas does): its colour comes from the codes' flags
        flags = np.where(codes == 2, FLAG_MASKED, 0).astype(np.uint8)
    else:
        codes = np.where(masked, STATE_MASKED, STATE_VISIBLE).astype(np.uint8)
    return Overview(spec.name, records, positions, codes, flags, values, vocab_size)


def _changed_rows(store: StepStore, now: np.ndarray, before: np.ndarray) -> np.ndarray:
    """(len(now), N) uint8, nonzero where store row now[i] is visible and holds another token than
    row before[i]. uint8 in place (xor, then and with 0xFF where visible / 0 where masked): half the
    passes of bool compares; consecutive rows (the usual sampled history) are read as slices, not copied."""
    tokens, flags = store.column("tokens"), store.column("flags")
    if len(now) > 1 and (np.diff(now) == 1).all() and (before == now - 1).all():
        a, b = slice(int(now[0]), int(now[-1]) + 1), slice(int(before[0]), int(before[-1]) + 1)
    else:
        a, b = now, before
    diff = np.bitwise_xor(tokens[a], tokens[b])
    if diff.dtype != np.uint8:
        diff = (diff != 0).view(np.uint8)
    visible = np.bitwise_and(flags[a], FLAG_MASKED)  # FLAG_MASKED or 0
    visible >>= FLAG_MASKED.bit_length() - 1  # 1 masked, 0 visible
    visible -= 1  # 0 masked, 0xFF visible (uint8 wraps)
    diff &= visible.astype(np.uint8, copy=False)
    return diff


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
    """(H, W, 3) uint8 colours of a sampled overview (core.color_modes.cell_rgb, as the exports)."""
    return color_modes.cell_rgb(color_modes.get(view.mode), view.flags, view.values, view.vocab_size)


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

    coloured by the registered mode `mode` (core.color_modes; 'mask-state' is 'state').

    `overview_pick` maps a pixel back to (record, position).
    """
    return overview_rgb(overview_values(store, rows, mode, vocab_size, width_px, height_px))
