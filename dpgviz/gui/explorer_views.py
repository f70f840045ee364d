"""The explorer's aligned views as text: the (lines, cols) character grid and its inks, built with numpy.

    view_lines   per chunk of COLS positions: original, corrupted, one line per model's
                 prediction; each character with an ink (INKS: a colour each)
    ink_texts    one multi-line string per ink, for one `draw_text` each

gui.explorer draws these; tests check them without a window. numpy only: never imports
dearpygui, torch or the engine.
"""

from __future__ import annotations

import numpy as np

from dpgviz.core.palette import GHOST_RGB, STATE_PROTECTED, STATE_RGB

COLS = 64  # positions per chunk line
LABEL_W = 10  # label column, characters
# Inks: one colour each. Okabe-Ito hues on the dark page (core.palette is the home of the palette).
INKS = {
    "label": (150, 156, 168),
    "text": (222, 224, 230),
    "dim": (96, 100, 110),  # a prediction at a position nobody corrupted: not scored
    "marked": tuple(int(c) for c in STATE_RGB[STATE_PROTECTED]),  # a corrupted position in the original
    "masked": (150, 156, 168),
    "replaced": (230, 159, 0),  # Okabe-Ito orange: other text written over
    "correct": (0, 200, 150),  # Okabe-Ito bluish green, lifted for the dark page
    "wrong": tuple(int(c) for c in GHOST_RGB),  # light vermillion
}
INK_NAMES = tuple(INKS)
INK = {name: i for i, name in enumerate(INK_NAMES)}


def view_lines(
    chars: np.ndarray, target: np.ndarray, corrupted_ids: np.ndarray, is_corrupted: np.ndarray, is_masked: np.ndarray,
    predicted: list[np.ndarray], labels: list[str], cols: int = COLS,
) -> tuple[np.ndarray, np.ndarray]:
    """(lines, LABEL_W + cols * slot) <U1 characters and ink indices of the aligned views.

    Per chunk of `cols` positions: original, corrupted, one line per model's prediction,
    then a blank line. `chars` is (n_ids, slot): each id's display string in `slot` cells
    (one cell for a char model, a subword token its width). numpy throughout.
    """
    chars = chars[:, None] if chars.ndim == 1 else chars
    slot = chars.shape[1]
    n = len(target)
    rows = -(-n // cols)
    per = 3 + len(predicted)  # lines in a chunk
    pad = rows * cols - n

    def grid(a: np.ndarray, fill: object) -> np.ndarray:
        return np.concatenate([a, np.full(pad, fill, dtype=a.dtype)]).reshape(rows, cols)

    def cells(ids: np.ndarray) -> np.ndarray:  # (rows, cols * slot) characters of ids
        return chars[grid(ids, 0)].reshape(rows, cols * slot)

    def spread(a: np.ndarray) -> np.ndarray:  # a per-position grid over its slot's cells
        return np.repeat(a, slot, axis=-1)

    corrupted, masked = grid(is_corrupted, False), grid(is_masked, False)
    valid = spread(grid(np.ones(n, dtype=bool), False))
    text = np.full((rows, per, LABEL_W + cols * slot), " ", dtype="<U1")
    ink = np.full((rows, per, LABEL_W + cols * slot), INK["text"], dtype=np.int8)
    body = slice(LABEL_W, None)
    text[:, 0, body] = cells(target)
    ink[:, 0, body] = spread(np.where(corrupted, INK["marked"], INK["text"]))
    text[:, 1, body] = cells(corrupted_ids)
    ink[:, 1, body] = spread(np.where(masked, INK["masked"], np.where(corrupted, INK["replaced"], INK["text"])))
    tgt = grid(target, -1)
    for m, pred in enumerate(predicted):
        text[:, 2 + m, body] = cells(pred)
        ink[:, 2 + m, body] = spread(
            np.where(corrupted, np.where(grid(pred, -2) == tgt, INK["correct"], INK["wrong"]), INK["dim"])
        )
    text[:, :, body] = np.where(valid[:, None, :], text[:, :, body], " ")
    for i, label in enumerate(["corrupt", *labels], start=1):
        text[:, i, :LABEL_W] = np.array(list(label[: LABEL_W - 1].rjust(LABEL_W - 1) + " "), dtype="<U1")
    for r in range(rows):  # the original line's label carries the chunk's first position (O(rows))
        text[r, 0, :LABEL_W] = np.array(list(f"{r * cols} orig"[: LABEL_W - 1].rjust(LABEL_W - 1) + " "), dtype="<U1")
    ink[:, :, :LABEL_W] = INK["label"]
    return text.reshape(rows * per, -1), ink.reshape(rows * per, -1)


def ink_texts(text: np.ndarray, ink: np.ndarray) -> list[str]:
    """One multi-line string per ink: that ink's characters, spaces elsewhere."""
    width = text.shape[1]
    out = []
    for i in range(len(INK_NAMES)):
        layer = np.ascontiguousarray(np.where(ink == i, text, " "))
        out.append("\n".join(layer.view(f"<U{width}").ravel().tolist()))
    return out
