"""Canvas layout math: which cell each token occupies, which rows are visible, row strings.

Plain numpy, no dearpygui, so it is testable without a window. Two layouts:

    grid   every position gets a fixed slot (`slot_width` cells), rows of `cols` cells;
           a token keeps its cell across steps, so change is visible in place.
    text   reading mode: a newline token ends its row (its glyph stays visible at the
           row's end), long lines wrap at `cols`; depends on the tokens of one record.

A token wider than one cell (subword vocabularies) takes `width` consecutive cells and
never straddles two rows. Rows are numbered from 0 at the top; positions are laid out
in order, so the positions of rows [r0, r1) are the slice row_first[r0]:row_first[r1].

No Python loop runs per token. Uniform widths (every char-level model) are fully
vectorised; mixed widths wrap with one numpy search per row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CellLayout:
    """Where each position sits: row, first column and width in cells."""

    cols: int
    row: np.ndarray  # (N,) int64
    col: np.ndarray  # (N,) int64 first cell of the token in its row
    width: np.ndarray  # (N,) int64 cells the token takes
    row_first: np.ndarray  # (n_rows + 1,) first position of each row; last entry = N

    @property
    def n_rows(self) -> int:
        return len(self.row_first) - 1

    @property
    def seq_len(self) -> int:
        return len(self.row)

    def positions(self, r0: int, r1: int) -> slice:
        """Positions laid out in rows [r0, r1) (clipped to the layout)."""
        r0 = min(max(r0, 0), self.n_rows)
        r1 = min(max(r1, r0), self.n_rows)
        return slice(int(self.row_first[r0]), int(self.row_first[r1]))

    def cell_of(self, pos: int) -> tuple[int, int]:
        return int(self.row[pos]), int(self.col[pos])

    def same_as(self, other: CellLayout | None) -> bool:
        """True when `other` places every position in the same cell (cheap for equal objects)."""
        if other is None:
            return False
        if other is self:
            return True
        return (
            self.cols == other.cols
            and np.array_equal(self.row, other.row)
            and np.array_equal(self.col, other.col)
            and np.array_equal(self.width, other.width)
        )


def _row_first(row: np.ndarray, n_rows: int) -> np.ndarray:
    """First position of each row (rows are non-decreasing in position order)."""
    return np.searchsorted(row, np.arange(n_rows + 1), side="left").astype(np.int64)


def _wrap_uniform(n: int, width: int, cols: int, breaks: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns for tokens of one width; `breaks[p]` ends a row after position p."""
    per_row = max(1, cols // width)
    pos = np.arange(n, dtype=np.int64)
    if breaks is None or not breaks[:-1].any():
        return pos // per_row, (pos % per_row) * width
    # Line index of each position: breaks strictly before it.
    ends = np.flatnonzero(breaks[:-1])  # a break after the last token starts no new line
    line_start = np.concatenate(([0], ends + 1))  # (L,)
    line_len = np.diff(np.concatenate((line_start, [n])))  # (L,)
    line = np.repeat(np.arange(len(line_start)), line_len)  # (N,)
    offset = pos - line_start[line]
    rows_per_line = np.maximum(1, -(-line_len // per_row))  # ceil
    first_row = np.concatenate(([0], np.cumsum(rows_per_line)[:-1]))
    return first_row[line] + offset // per_row, (offset % per_row) * width


def _wrap_mixed(widths: np.ndarray, cols: int, breaks: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Greedy wrap of tokens of varying width: one searchsorted per row, not per token."""
    n = len(widths)
    w = np.minimum(widths, cols)  # a token wider than a row gets a row of its own, clipped
    end = np.cumsum(w)  # (N,) cell offset just past each token
    start = end - w
    brk = np.flatnonzero(breaks) if breaks is not None else np.empty(0, np.int64)
    row = np.empty(n, np.int64)
    col = np.empty(n, np.int64)
    p, r = 0, 0
    while p < n:
        limit = start[p] + cols
        q = int(np.searchsorted(end, limit, side="right"))  # tokens p..q-1 fit
        q = max(q, p + 1)
        b = int(np.searchsorted(brk, p, side="left"))
        if b < len(brk) and brk[b] < q:
            q = int(brk[b]) + 1  # the newline token ends this row
        row[p:q] = r
        col[p:q] = start[p:q] - start[p]
        p, r = q, r + 1
    return row, col


def wrap(widths: np.ndarray, cols: int, breaks: np.ndarray | None = None) -> CellLayout:
    """Lay tokens of `widths` cells into rows of `cols` cells, ending rows after `breaks`."""
    widths = np.asarray(widths, dtype=np.int64)
    cols = max(1, int(cols))
    n = len(widths)
    if n == 0:
        empty = np.empty(0, np.int64)
        return CellLayout(cols, empty, empty, empty, np.zeros(1, np.int64))
    if breaks is not None:
        breaks = np.asarray(breaks, dtype=bool)
    if (widths == widths[0]).all() and widths[0] <= cols:
        row, col = _wrap_uniform(n, int(widths[0]), cols, breaks)
    else:
        row, col = _wrap_mixed(widths, cols, breaks)
    n_rows = int(row[-1]) + 1
    return CellLayout(cols, row, col, np.minimum(widths, cols), _row_first(row, n_rows))


def grid_layout(seq_len: int, cols: int, slot_width: int = 1) -> CellLayout:
    """Fixed slots: position p sits in the same cell in every record."""
    return wrap(np.full(seq_len, max(1, slot_width), np.int64), cols)


def text_layout(tokens: np.ndarray, id_widths: np.ndarray, newline_id: int | None, cols: int) -> CellLayout:
    """Reading mode for one record: rows end after newline tokens and wrap at `cols`."""
    tokens = np.asarray(tokens, dtype=np.int64)
    breaks = tokens == newline_id if newline_id is not None else None
    return wrap(np.asarray(id_widths)[tokens], cols, breaks)


def pos_at(layout: CellLayout, row: int, col: int) -> int | None:
    """The position whose cells include (row, col): the inverse of `CellLayout.cell_of`.

    Any cell of a wide token returns that token. None for a cell no token covers: past
    the end of a row's tokens, left of column 0, or outside the rows. Two binary searches
    (the row's positions, then the column within them), so it is cheap on any length.
    """
    row, col = int(row), int(col)
    if not 0 <= row < layout.n_rows or col < 0:
        return None
    first, stop = int(layout.row_first[row]), int(layout.row_first[row + 1])
    if first == stop:
        return None
    # Columns rise within a row, so the token holding `col` is the last one starting at or before it.
    k = first + int(np.searchsorted(layout.col[first:stop], col, side="right")) - 1
    if k < first or col >= layout.col[k] + layout.width[k]:
        return None
    return k


def visible_rows(top_row: int, view_rows: int, n_rows: int) -> tuple[int, int]:
    """Clamp a scroll position: the rows [r0, r1) a view of `view_rows` rows shows."""
    view_rows = max(1, int(view_rows))
    top = min(max(0, int(top_row)), max(0, n_rows - view_rows))
    return top, min(n_rows, top + view_rows)


def char_table(id_strings: np.ndarray, max_width: int) -> np.ndarray:
    """(n_ids, max_width) `<U1` characters of each id's display string, space padded.

    Built once per vocabulary (a loop over the vocabulary, not the frame path).
    """
    table = np.full((len(id_strings), max_width), " ", dtype="<U1")
    for i, s in enumerate(id_strings):
        chars = list(str(s)[:max_width])
        if chars:
            table[i, : len(chars)] = chars
    return table


def scatter_cells(
    layout: CellLayout,
    r0: int,
    r1: int,
    values: dict[str, tuple[np.ndarray, object]],
    tokens: np.ndarray | None = None,
    chars_by_id: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """(r1-r0, cols) grids of the visible positions' values, for rows [r0, r1) only.

    Every array given here covers just `layout.positions(r0, r1)` (slice it before, so
    nothing is computed for rows out of view). `values[name] = (array, fill)`: every cell
    a token covers gets its value, cells no token covers get `fill`. With `tokens` and
    `chars_by_id` (n_ids, max_width) `<U1` (see `char_table`), the result's "chars" grid
    spells each token's string across its cells.
    """
    sl = layout.positions(r0, r1)
    n_vis_rows, cols = max(0, r1 - r0), layout.cols
    first = (layout.row[sl] - r0) * cols + layout.col[sl]  # flat cell of each token's first cell
    widths = layout.width[sl]
    if (widths == 1).all():
        cells, owner, within = first, slice(None), None
    else:
        owner = np.repeat(np.arange(len(widths)), widths)  # token of each covered cell
        within = np.arange(len(owner)) - np.repeat(np.cumsum(widths) - widths, widths)
        cells = first[owner] + within
    out: dict[str, np.ndarray] = {}
    # The fixed char grid fills cells 0..n-1 in order: a slice beats a scatter there.
    is_dense = within is None and (len(cells) == 0 or (cells[0] == 0 and cells[-1] == len(cells) - 1))
    target = slice(0, len(cells)) if is_dense else cells

    for name, (per_pos, fill) in values.items():
        vis = np.asarray(per_pos)
        assert len(vis) == sl.stop - sl.start, (len(vis), sl)
        grid = np.full(n_vis_rows * cols, fill, dtype=vis.dtype)
        grid[target] = vis[owner]
        out[name] = grid.reshape(n_vis_rows, cols)
    if tokens is not None and chars_by_id is not None:
        ids = np.asarray(tokens)
        grid = np.full(n_vis_rows * cols, " ", dtype="<U1")
        if within is None:
            grid[target] = chars_by_id[ids, 0]
        else:
            grid[target] = chars_by_id[ids[owner], np.minimum(within, chars_by_id.shape[1] - 1)]
        out["chars"] = grid.reshape(n_vis_rows, cols)
    return out


def row_strings(chars: np.ndarray) -> list[str]:
    """One string per row of a (rows, cols) `<U1` grid, without a per-cell loop."""
    rows, cols = chars.shape
    if rows == 0:
        return []
    if cols == 0:
        return [""] * rows
    return np.ascontiguousarray(chars).view(f"<U{cols}").reshape(rows).tolist()
