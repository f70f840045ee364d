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
nothing loops over cells or pixels in Python.

numpy only: the atlas is drawn by `export.images` (Pillow) and handed in.
"""

from __future__ import annotations

import numpy as np

from dpgviz.core.palette import PAGE_RGB, cell_rgb, ink_rgb


class CanvasRaster:
    """Paints token grids from a glyph atlas; holds no record data."""

    def __init__(self, atlas: np.ndarray, columns: int = 64, gutter_px: int = 1) -> None:
        assert atlas.ndim == 3 and atlas.dtype == np.uint8, (atlas.shape, atlas.dtype)
        assert columns >= 1, columns
        self.atlas = atlas
        self.columns = columns
        self.cell_h, self.cell_w = atlas.shape[1:]
        self.gutter_px = gutter_px

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
        alpha = self.atlas[np.asarray(tokens, dtype=np.intp)].astype(np.uint16)[..., None]  # (N, ch, cw, 1)
        bg = background.astype(np.uint16)[:, None, None, :]  # (N, 1, 1, 3)
        fg = ink.astype(np.uint16)[:, None, None, :]
        cells = np.empty((rows * cols, self.cell_h, self.cell_w, 3), dtype=np.uint8)
        cells[:n] = (bg * (255 - alpha) + fg * alpha + 127) // 255
        cells[n:] = PAGE_RGB  # the unused tail of the last row
        if self.gutter_px:
            cells[:, -self.gutter_px :, :] = PAGE_RGB
            cells[:, :, -self.gutter_px :] = PAGE_RGB
        grid = cells.reshape(rows, cols, self.cell_h, self.cell_w, 3).transpose(0, 2, 1, 3, 4)
        return np.ascontiguousarray(grid).reshape(rows * self.cell_h, cols * self.cell_w, 3)

    def paint_record(
        self,
        tokens: np.ndarray,
        flags: np.ndarray,
        mode: str = "mask-state",
        values: np.ndarray | None = None,
        scale: tuple[float, float] | None = None,
    ) -> np.ndarray:
        """Paint one record's cells coloured by a `core.palette` colour mode."""
        background = cell_rgb(mode, flags, values, scale)
        return self.paint(tokens, background, ink_rgb(background))
