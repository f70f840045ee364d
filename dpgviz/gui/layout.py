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

import numpy as np


class CellLayout:
    """Where each position sits: row, first column and width in cells.

    Built from `row_first` (the first position of each row) plus either one `slot` width
    for every token (uniform: char-level vocabularies, every grid) or per-token arrays
    (mixed widths). A uniform layout never materialises per-position arrays on the frame
    path: `span(sl)` computes rows and columns for just the positions asked for (the
    visible rows), so a 65,536-token text layout costs O(rows), not O(tokens). `row`,
    `col` and `width` give the whole arrays, built once on first use (tests, tools).
    """

    def __init__(
        self,
        cols: int,
        row_first: np.ndarray,
        *,
        slot: int | None = None,
        row: np.ndarray | None = None,
        col: np.ndarray | None = None,
        width: np.ndarray | None = None,
    ) -> None:
        assert slot is not None or (row is not None and col is not None and width is not None), "slot or arrays"
        self.cols = int(cols)
        self.row_first = row_first  # (n_rows + 1,) first position of each row; last entry = N
        self.slot = slot
        # Uniform with no breaks (a grid): row p // per_row, no search needed; 0 otherwise.
        self.per_row = 0
        if slot is not None and len(row_first) > 2:
            step = int(row_first[1] - row_first[0])
            # The last row must fit in `step` too: a text layout whose rows all start `step`
            # apart but whose last line is longer (wrapped at cols) is not a grid (p // step
            # would put its tail in a row that does not exist).
            if (
                step > 0
                and int(row_first[-1] - row_first[-2]) <= step
                and np.array_equal(row_first[:-1], np.arange(len(row_first) - 1) * step)
            ):
                self.per_row = step
        self._row, self._col, self._width = row, col, width

    @property
    def n_rows(self) -> int:
        return len(self.row_first) - 1

    @property
    def seq_len(self) -> int:
        return int(self.row_first[-1])

    def positions(self, r0: int, r1: int) -> slice:
        """Positions laid out in rows [r0, r1) (clipped to the layout)."""
        r0 = min(max(r0, 0), self.n_rows)
        r1 = min(max(r1, r0), self.n_rows)
        return slice(int(self.row_first[r0]), int(self.row_first[r1]))

    def span(self, sl: slice) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(row, col, width) of the positions in `sl` (a slice of positions, in order)."""
        if self.slot is None:
            return self._row[sl], self._col[sl], self._width[sl]
        pos = np.arange(sl.start, sl.stop, dtype=np.int64)
        if self.per_row:  # a plain grid: every row full but the last
            row, k = np.divmod(pos, self.per_row)
            return row, k * self.slot, np.full(len(pos), self.slot, np.int64)
        row = np.searchsorted(self.row_first, pos, side="right") - 1
        return row, (pos - self.row_first[row]) * self.slot, np.full(len(pos), self.slot, np.int64)

    def _whole(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._row is None:
            self._row, self._col, self._width = self.span(slice(0, self.seq_len))
        return self._row, self._col, self._width

    @property
    def row(self) -> np.ndarray:
        """(N,) int64 row of each position (built on first use for uniform layouts)."""
        return self._whole()[0]

    @property
    def col(self) -> np.ndarray:
        """(N,) int64 first cell of each token in its row."""
        return self._whole()[1]

    @property
    def width(self) -> np.ndarray:
        """(N,) int64 cells each token takes."""
        return self._whole()[2]

    def cell_of(self, pos: int) -> tuple[int, int]:
        row, col, _ = self.span(slice(pos, pos + 1))
        return int(row[0]), int(col[0])

    def same_as(self, other: CellLayout | None) -> bool:
        """True when `other` places every position in the same cell (cheap for equal objects)."""
        if other is None:
            return False
        if other is self:
            return True
        if self.cols != other.cols or not np.array_equal(self.row_first, other.row_first):
            return False
        if self.slot is not None and self.slot == other.slot:
            return True
        return (
            np.array_equal(self.row, other.row)
            and np.array_equal(self.col, other.col)
            and np.array_equal(self.width, other.width)
        )


def _row_first(row: np.ndarray, n_rows: int) -> np.ndarray:
    """First position of each row (rows are non-decreasing in position order)."""
    return np.searchsorted(row, np.arange(n_rows + 1), side="left").astype(np.int64)


def _uniform_row_first(n: int, width: int, cols: int, breaks: np.ndarray | None) -> np.ndarray:
    """First position of each row for tokens of one width; `breaks[p]` ends a row after p.

    O(lines + rows), never O(tokens) beyond finding the breaks: each line (a run ending
    at a break) takes ceil(len / per_row) rows starting every per_row positions.
    """
    per_row = max(1, cols // width)
    if breaks is None:
        return np.append(np.arange(0, n, per_row, dtype=np.int64), n) if n else np.zeros(1, np.int64)
    ends = np.flatnonzero(breaks[:-1])  # a break after the last token starts no new line
    line_start = np.concatenate(([0], ends + 1)).astype(np.int64)  # (L,)
    line_len = np.diff(np.append(line_start, n))  # (L,)
    rows_per_line = np.maximum(1, -(-line_len // per_row))  # ceil; an empty line still takes a row
    line_of_row = np.repeat(np.arange(len(line_start)), rows_per_line)  # (R,)
    first_row = np.cumsum(rows_per_line) - rows_per_line  # (L,) first row of each line
    starts = line_start[line_of_row] + (np.arange(len(line_of_row)) - first_row[line_of_row]) * per_row
    return np.append(starts, n).astype(np.int64)


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


def wrap(widths: np.ndarray | int, cols: int, breaks: np.ndarray | None = None, n: int | None = None) -> CellLayout:
    """Lay tokens into rows of `cols` cells, ending rows after `breaks`.

    `widths` is an int (every token that wide: pass `n`, the token count) or an array of
    per-token widths; an array whose widths are all equal takes the uniform path too.
    """
    cols = max(1, int(cols))
    if breaks is not None:
        breaks = np.asarray(breaks, dtype=bool)
    if np.ndim(widths) == 0:
        width, n = int(widths), int(n if n is not None else (len(breaks) if breaks is not None else 0))
    else:
        widths = np.asarray(widths, dtype=np.int64)
        n = len(widths)
        width = int(widths[0]) if n and (widths == widths[0]).all() else 0
    if n == 0:
        empty = np.empty(0, np.int64)
        return CellLayout(cols, np.zeros(1, np.int64), row=empty, col=empty, width=empty)
    if 0 < width <= cols:
        return CellLayout(cols, _uniform_row_first(n, width, cols, breaks), slot=width)
    row, col = _wrap_mixed(np.broadcast_to(np.asarray(widths, dtype=np.int64), (n,)), cols, breaks)
    n_rows = int(row[-1]) + 1
    w = np.minimum(np.broadcast_to(np.asarray(widths, dtype=np.int64), (n,)), cols)
    return CellLayout(cols, _row_first(row, n_rows), row=row, col=col, width=np.ascontiguousarray(w))


def grid_layout(seq_len: int, cols: int, slot_width: int = 1) -> CellLayout:
    """Fixed slots: position p sits in the same cell in every record."""
    return wrap(max(1, slot_width), cols, n=seq_len)


def text_layout(tokens: np.ndarray, id_widths: np.ndarray, newline_id: int | None, cols: int) -> CellLayout:
    """Reading mode for one record: rows end after newline tokens and wrap at `cols`.

    With one width for every id (char vocabularies) this reads the tokens once (the
    newline test) and the rest is O(lines): see `_uniform_row_first`.
    """
    tokens = np.asarray(tokens)
    breaks = tokens == newline_id if newline_id is not None else None
    id_widths = np.asarray(id_widths)
    if len(id_widths) and (id_widths == id_widths[0]).all():
        return wrap(int(id_widths[0]), cols, breaks, n=len(tokens))
    return wrap(id_widths[tokens.astype(np.int64)], cols, breaks)


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
    _, cols, widths = layout.span(slice(first, stop))
    # Columns rise within a row, so the token holding `col` is the last one starting at or before it.
    k = int(np.searchsorted(cols, col, side="right")) - 1
    if k < 0 or col >= cols[k] + widths[k]:
        return None
    return first + k


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
    rows, first_cols, widths = layout.span(sl)
    first = (rows - r0) * cols + first_cols  # flat cell of each token's first cell
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
