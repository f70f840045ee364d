"""The canvas rasteriser: a record's token grid as an RGB array, in numpy.

The canvas is a grid of `columns` cells per row, one cell per token position, the way
the app lays it out (a newline is a visible glyph, not a line break, so a position
never moves between records). Each cell is `cell_h` x `cell_w` pixels: a background
colour from `core.palette`, a glyph from a pre-drawn alpha atlas (one bitmap per token
id; the mask id's is empty, so a masked cell is a filled block), and a one-pixel gutter
on its right and bottom in the page colour.

    atlas[id]      (cell_h, cell_w) uint8 coverage of the glyph, 0..255
    pixel          = background * (1 - a) + ink * a       (a = coverage / 255)
    image          (rows * cell_h, columns * cell_w, 3) uint8

Painting a frame is a handful of whole-array operations (gather, blend, transpose);
nothing loops over cells or pixels in Python (long grids go in blocks of rows, to bound
the blend's temporaries).

Long sequences: `fit_grid` decides how a grid of `seq_len` cells fits a maximum picture
size, in this order of preference:

    1. as asked: `columns` glyph cells a row;
    2. reflowed: glyph cells, as many a row as the width allows (fewer, taller rows
       would not fit);
    3. blocks: square cells without glyphs, the largest size (down to 1 px) that fits,
       with a one-pixel gutter while cells are at least 4 px;
    4. cut: 1-px cells, and only the first positions that fit.

Anything but 1 comes with a one-line note saying what was changed, for the picture, its
metadata and the log. A block cell is painted with an empty atlas, so it is the same
colour the glyph cell's background would be.

numpy only: the atlas is drawn by `export.images` (Pillow) and handed in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dpgviz.core.palette import PAGE_RGB

PAINT_BLOCK_PX = 4_000_000  # pixels painted per block of rows: bounds the uint16 blend's temporaries
MIN_GUTTER_CELL_PX = 4  # below this a block cell has no gutter: it would take a third of the cell or more


@dataclass(frozen=True)
class GridFit:
    """How a grid is drawn within a size cap: see the module docstring."""

    columns: int  # cells a row
    block_px: int | None  # None: glyph cells from the atlas; else square cells of this size, no glyphs
    shown: int  # positions drawn: the first `shown` of seq_len
    seq_len: int
    note: str  # "" when drawn as asked; else what was reflowed, scaled or cut, in one line

    @property
    def gutter_px(self) -> int:
        return 1 if self.block_px is None or self.block_px >= MIN_GUTTER_CELL_PX else 0


def fit_grid(
    seq_len: int, columns: int, cell_h: int, cell_w: int, max_w: int, max_h: int, cap: str = ""
) -> GridFit:
    """The largest drawing of `seq_len` cells within max_w x max_h pixels (see the module docstring).

    `cap` names the limit in the note (default: "max_w x max_h px").
    """
    n = max(1, seq_len)
    max_w, max_h = max(1, max_w), max(1, max_h)
    cap = cap or f"{max_w}x{max_h} px"
    cols = min(columns, n)
    if cols * cell_w <= max_w and -(-n // cols) * cell_h <= max_h:
        return GridFit(cols, None, seq_len, seq_len, "")
    cols = min(n, max_w // cell_w)
    if cols >= 1 and -(-n // cols) * cell_h <= max_h:
        return GridFit(cols, None, seq_len, seq_len, f"{seq_len:,} positions reflowed to {cols} a row to fit {cap}")
    for px in range(min(cell_h, cell_w), 0, -1):  # a handful of sizes, largest first
        cols = min(n, max_w // px)
        if -(-n // cols) * px <= max_h:
            return GridFit(
                cols, px, seq_len, seq_len,
                f"{seq_len:,} positions as {px}-px cells without glyphs, {cols} a row, to fit {cap}",
            )
    cols = min(n, max_w)
    shown = min(seq_len, cols * max_h)
    return GridFit(
        cols, 1, shown, seq_len,
        f"showing positions 0-{shown - 1:,} of {seq_len:,} as 1-px cells ({cols} a row); the rest does not fit {cap}",
    )


class CanvasRaster:
    """Paints token grids from a glyph atlas; holds no record data."""

    def __init__(self, atlas: np.ndarray, columns: int = 64, gutter_px: int = 1) -> None:
        assert atlas.ndim == 3 and atlas.dtype == np.uint8, (atlas.shape, atlas.dtype)
        assert columns >= 1, columns
        self.atlas = atlas
        self.columns = columns
        self.cell_h, self.cell_w = atlas.shape[1:]
        self.gutter_px = gutter_px
        self.blank = not atlas.any()  # block cells: a cell is its background, no blend needed

    @classmethod
    def blocks(cls, n_ids: int, px: int, columns: int) -> CanvasRaster:
        """A raster of square `px`-pixel cells without glyphs (GridFit.block_px)."""
        return cls(np.zeros((n_ids, px, px), np.uint8), columns, 1 if px >= MIN_GUTTER_CELL_PX else 0)

    def grid_shape(self, seq_len: int) -> tuple[int, int]:
        """(rows, columns) of the grid for `seq_len` tokens."""
        cols = min(self.columns, max(1, seq_len))
        return -(-seq_len // cols), cols

    def image_size(self, seq_len: int) -> tuple[int, int]:
        """(width, height) in pixels of a painted grid."""
        rows, cols = self.grid_shape(seq_len)
        return cols * self.cell_w, rows * self.cell_h

    def paint(self, tokens: np.ndarray, background: np.ndarray, ink: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 image of tokens (N,) on per-cell background and ink colours (N, 3)."""
        n = len(tokens)
        assert background.shape == (n, 3) and ink.shape == (n, 3), (n, background.shape, ink.shape)
        rows, cols = self.grid_shape(n)
        cells = np.empty((rows * cols, self.cell_h, self.cell_w, 3), dtype=np.uint8)
        if self.blank:
            cells[:n] = background[:, None, None, :]
        else:
            ids = np.asarray(tokens, dtype=np.intp)
            step = max(1, PAINT_BLOCK_PX // (self.cell_h * self.cell_w))
            for a in range(0, n, step):  # blocks of cells, not single cells: bounds the temporaries
                b = min(n, a + step)
                alpha = self.atlas[ids[a:b]].astype(np.uint16)[..., None]  # (B, ch, cw, 1)
                bg = background[a:b].astype(np.uint16)[:, None, None, :]  # (B, 1, 1, 3)
                fg = ink[a:b].astype(np.uint16)[:, None, None, :]
                cells[a:b] = (bg * (255 - alpha) + fg * alpha + 127) // 255
        cells[n:] = PAGE_RGB  # the unused tail of the last row
        if self.gutter_px:
            cells[:, -self.gutter_px :, :] = PAGE_RGB
            cells[:, :, -self.gutter_px :] = PAGE_RGB
        grid = cells.reshape(rows, cols, self.cell_h, self.cell_w, 3).transpose(0, 2, 1, 3, 4)
        return np.ascontiguousarray(grid).reshape(rows * self.cell_h, cols * self.cell_w, 3)
