"""Frames of a real Dear PyGui window in the GUI tests that run as child scenarios.

    grab(app, path) the whole viewport of the next rendered frame, saved at `path`, as (H, W, 3)
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np


def grab(app, path: Path) -> np.ndarray:
    """The whole viewport (H, W, 3) of the next rendered frame, saved at `path`."""
    import dearpygui.dearpygui as dpg
    from PIL import Image

    path.unlink(missing_ok=True)
    for _ in range(3):
        app.frame()
    dpg.output_frame_buffer(file=str(path))
    size = (dpg.get_viewport_client_width(), dpg.get_viewport_client_height())
    for _ in range(50):
        app.frame()
        try:
            with Image.open(path) as im:
                im.load()
                if im.size == size:
                    return np.asarray(im.convert("RGB"))
        except (OSError, SyntaxError):
            time.sleep(0.02)
    raise AssertionError(f"no complete {size} frame in {path}")
