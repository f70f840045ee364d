"""Two marks the token canvas draws from a record's extras (app.inspect.cell_extras), kept here
so gui/canvas.py stays small:

    hidden        View > Hide tokens after the first EOS: those cells are drawn blank, no glyph
    block_start   a recorded run's block boundaries (Recorder.log(block=)): a bright bar "▏"
                  at the left edge of the first cell of each block's first position

numpy only (the canvas pushes the strings to dearpygui).
"""

from __future__ import annotations

import numpy as np

BLOCK_GLYPH = "\u258f"  # left one-eighth block: a thin bar at the cell's left edge (DejaVu Sans Mono has it)
BLOCK_INK = (255, 176, 0, 255)  # amber: apart from every state colour and from viridis


def add_values(values: dict, arrays: dict[str, np.ndarray], sl: slice) -> None:
    """The marks' per-position values for layout.scatter_cells (positions `sl` drawn)."""
    hidden = arrays.get("hidden")
    if hidden is not None and hidden[sl].any():
        values["hidden"] = (hidden[sl], False)
    starts = arrays.get("block_start")
    if starts is not None and starts[sl].any():
        pos = np.arange(sl.start + 1, sl.stop + 1)
        values["block"] = (np.where(starts[sl], pos, 0), 0)  # a position's number: its first cell is found


def apply(grids: dict[str, np.ndarray], color: np.ndarray, chars: np.ndarray, blank: int) -> tuple:
    """(color, chars, the block bar's rows of text or []) with the hidden cells blanked."""
    hidden = grids.get("hidden")
    if hidden is not None:
        color, chars = np.where(hidden, blank, color), np.where(hidden, " ", chars)
    block = grids.get("block")
    if block is None:
        return color, chars, []
    before = np.concatenate([np.zeros((block.shape[0], 1), block.dtype), block[:, :-1]], axis=1)
    bars = (block != 0) & (before != block)  # the first cell of the position only
    return color, chars, ["".join(r) for r in np.where(bars, BLOCK_GLYPH, " ")]
