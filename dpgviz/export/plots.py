"""Whole-run PNG exports: the overview image (records x positions) and the run plots.

    overview   `store.overview.overview_image` of a branch (one row per record, one column
               per position, downsampled to at most OVERVIEW_MAX_W x OVERVIEW_MAX_H cells and
               scaled up by a whole factor when small), under a caption and over a legend
    plots      three stacked line plots per record of the branch: masked fraction, mean
               confidence (visible tokens) and mean entropy (where predicted), from
               `store.inspect.run_series`, drawn with Pillow's ImageDraw (no matplotlib)

A run made in blocks: both show the whole sequence at each record (positions across the
overview are all total_len positions; the plots' fractions and means are over them all),
as store.inspect composes them.

Imports Pillow and numpy; no torch, no dearpygui.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from dpgviz.core.palette import INK_LIGHT, PAGE_RGB, VIRIDIS_RGB, entropy_max
from dpgviz.export.images import MARGIN_PX, default_font, legend_image
from dpgviz.store import inspect, overview
from dpgviz.store.session import Session, SessionError
from dpgviz.store.session_save import atomic_writer

log = logging.getLogger(__name__)

OVERVIEW_MAX_W = 2048  # columns (positions) before downsampling: a 2,048-token run keeps one column per position
OVERVIEW_MAX_H = 2000  # rows (records) before downsampling
OVERVIEW_MIN_W = 600  # small grids are scaled up by a whole factor towards this width ...
OVERVIEW_MAX_CELL = 12  # ... with cells at most this many pixels wide

PLOT_W, PANEL_H = 900, 170  # size of the plot area of one panel, pixels
AXIS_RGB = (120, 126, 138)
# One colour per series from the palette (light ink, two viridis levels far enough apart to
# tell the lines apart), all readable on the dark page.
SERIES_RGB = {
    "masked_fraction": tuple(int(c) for c in INK_LIGHT),
    "mean_confidence": tuple(int(c) for c in VIRIDIS_RGB[200]),
    "mean_entropy": tuple(int(c) for c in VIRIDIS_RGB[120]),
}


def _rgb(c: np.ndarray) -> tuple[int, int, int]:
    r, g, b = (int(x) for x in c)
    return r, g, b


def _branch_rows(session: Session, branch: str | None) -> tuple[str, np.ndarray]:
    b = session.branch(branch)
    rows = session.rows(b.id)
    if len(rows) == 0:
        raise SessionError(f"branch {b.id!r} has no records to draw")
    return b.id, rows


# -- overview -------------------------------------------------------------------------------
def overview_figure(session: Session, branch: str | None = None, mode: str = "state") -> Image.Image:
    """The overview of a branch as an RGB image: caption, the grid (record 0 on top), the mode's legend."""
    try:
        spec = overview.overview_mode(mode)
    except ValueError as exc:
        raise SessionError(str(exc)) from None
    mode = spec.name
    branch_id, rows = _branch_rows(session, branch)
    store, vocab_size = session.store, session.vocab.size
    grid = overview.overview_image(store, rows, mode, vocab_size, OVERVIEW_MAX_W, OVERVIEW_MAX_H)
    h, w = grid.shape[:2]
    # Whole-number nearest scaling keeps one record / position per block of pixels.
    scale = max(1, min(OVERVIEW_MAX_CELL, OVERVIEW_MIN_W // w))
    grid = np.repeat(np.repeat(grid, scale, axis=0), scale, axis=1)
    font = default_font()
    ink, page = _rgb(INK_LIGHT), _rgb(PAGE_RGB)
    line_h = 18
    n_records, seq_len = len(rows), store.layout.total_len
    sampled = "" if (h, w) == (n_records, seq_len) else f" (sampled to {h} x {w})"
    caption = f"branch {branch_id} \u00b7 {mode} \u00b7 {n_records} records x {seq_len} positions{sampled}"
    legend = legend_image(spec.legend(vocab_size), mode, font, line_h, 12)
    width = max(grid.shape[1], math.ceil(font.getlength(caption)), legend.width) + 2 * MARGIN_PX
    height = MARGIN_PX + line_h + grid.shape[0] + 6 + line_h + MARGIN_PX
    im = Image.new("RGB", (width, height), page)
    d = ImageDraw.Draw(im)
    d.text((MARGIN_PX, MARGIN_PX), caption, font=font, fill=ink)
    im.paste(Image.fromarray(np.ascontiguousarray(grid), "RGB"), (MARGIN_PX, MARGIN_PX + line_h))
    im.paste(legend, (MARGIN_PX, MARGIN_PX + line_h + grid.shape[0] + 6))
    return im


def write_overview(session: Session, out: str | Path, branch: str | None = None, mode: str = "state") -> Path:
    """The overview of a branch in `mode` (a core.color_modes name) as a PNG."""
    image = overview_figure(session, branch, mode)
    with atomic_writer(out) as f:
        image.save(f, format="PNG", optimize=True)
    log.debug("wrote %s: overview %s, %dx%d", out, mode, image.width, image.height)
    return Path(out)


# -- run plots ----------------------------------------------------------------------------------
def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About `n` round tick values from lo to hi (1, 2 or 5 times a power of ten apart)."""
    span = max(hi - lo, 1e-12)
    raw = span / max(1, n - 1)
    base = 10 ** math.floor(math.log10(raw))
    step = next(m * base for m in (1, 2, 5, 10) if m * base >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def _segments(x: np.ndarray, y: np.ndarray) -> list[list[tuple[float, float]]]:
    """Polylines of the finite points, broken where y is NaN (a record without that value)."""
    finite = np.isfinite(y)
    breaks = np.flatnonzero(np.diff(finite.astype(np.int8)) != 0) + 1
    out = []
    for part in np.split(np.arange(len(y)), breaks):
        if len(part) and finite[part[0]]:
            out.append(list(zip(x[part].tolist(), y[part].tolist(), strict=True)))
    return out


def plots_figure(session: Session, branch: str | None = None) -> Image.Image:
    """Three stacked panels over the records of a branch: masked fraction, mean confidence, mean entropy."""
    branch_id, rows = _branch_rows(session, branch)
    series = inspect.run_series(session.store, rows)
    n = len(rows)
    font = default_font()
    ink, page, axis = _rgb(INK_LIGHT), _rgb(PAGE_RGB), AXIS_RGB
    left, right, top, gap, bottom = 56, 16, 30, 34, 40
    panels = [
        ("masked_fraction", "masked fraction", (0.0, 1.0)),
        ("mean_confidence", "mean confidence (visible tokens)", (0.0, 1.0)),
        ("mean_entropy", "mean entropy, nats (where predicted)", (0.0, entropy_max(session.vocab.size))),
    ]
    width = left + PLOT_W + right
    height = top + len(panels) * PANEL_H + (len(panels) - 1) * gap + bottom
    im = Image.new("RGB", (width, height), page)
    d = ImageDraw.Draw(im)
    d.text((left, 8), f"branch {branch_id} \u00b7 {n} records \u00b7 per-record statistics", font=font, fill=ink)
    x_hi = max(1, n - 1)
    px = left + np.arange(n, dtype=np.float64) * (PLOT_W - 1) / x_hi  # record -> pixel x
    x_ticks = [t for t in _ticks(0, x_hi, 8) if float(t).is_integer()]
    for i, (key, title, (lo, hi)) in enumerate(panels):
        y0 = top + i * (PANEL_H + gap)  # top of the plot area
        y1 = y0 + PANEL_H - 1
        d.rectangle([left, y0, left + PLOT_W - 1, y1], outline=axis)
        d.text((left + 6, y0 + 4), title, font=font, fill=SERIES_RGB[key])
        for t in _ticks(lo, hi, 5):
            y = y1 - (t - lo) / (hi - lo) * (PANEL_H - 1)
            d.line([(left - 4, y), (left, y)], fill=axis)
            label = f"{t:g}"
            d.text((left - 8 - font.getlength(label), y - 7), label, font=font, fill=ink)
        for t in x_ticks:
            x = left + t * (PLOT_W - 1) / x_hi
            d.line([(x, y1), (x, y1 + 4)], fill=axis)
            if i == len(panels) - 1:
                label = f"{int(t)}"
                d.text((x - font.getlength(label) / 2, y1 + 6), label, font=font, fill=ink)
        py = y1 - (np.clip(series[key], lo, hi) - lo) / (hi - lo) * (PANEL_H - 1)
        for seg in _segments(px, py):
            if len(seg) == 1:  # a lone value between gaps: a dot
                (x, y), = seg
                d.ellipse([x - 2, y - 2, x + 2, y + 2], fill=SERIES_RGB[key])
            else:
                d.line(seg, fill=SERIES_RGB[key], width=2)
    label = "record"
    d.text((left + PLOT_W / 2 - font.getlength(label) / 2, height - 18), label, font=font, fill=ink)
    return im


def write_plots(session: Session, out: str | Path, branch: str | None = None) -> Path:
    """The run plots of a branch as a PNG."""
    image = plots_figure(session, branch)
    with atomic_writer(out) as f:
        image.save(f, format="PNG", optimize=True)
    log.debug("wrote %s: plots %dx%d", out, image.width, image.height)
    return Path(out)

