"""PNG and animated GIF exports of the canvas, drawn with Pillow.

Pillow does the parts it is good at and numpy the rest: Pillow draws each token's glyph
once into an alpha atlas with its default font (`ImageFont.load_default`), writes the
caption and legend, quantises and encodes; `export.raster` paints every frame's grid
from the atlas with whole-array numpy operations.

A frame is: caption (branch, record, iteration, kind, masks left), the token grid, and
a legend of the colour mode. GIF frames share one palette (median cut over a few sample
frames) and are quantised without dithering, so colours do not flicker between frames;
the last frame is held longer so a looping GIF shows the finished text.

Imports Pillow and numpy; no torch, no dearpygui.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from dpgviz.core.palette import INK_LIGHT, PAGE_RGB, VALUE_MODES, VIRIDIS_RGB, legend, value_range
from dpgviz.core.records import KINDS
from dpgviz.core.vocab import Vocabulary
from dpgviz.export.raster import CanvasRaster
from dpgviz.store.session import Progress, Session, SessionError, atomic_writer

log = logging.getLogger(__name__)

FONT_PX = 13  # Pillow's default font at this size gives ~9 px wide cells: 64 columns ~ 640 px
MARGIN_PX = 8
LAST_FRAME_MS = 1500  # hold the finished text before a GIF loops
MIN_FRAME_MS = 20  # GIF delays are centiseconds, and browsers slow anything under 20 ms to 100 ms


def default_font(size: int = FONT_PX) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's bundled default font at `size` (the bitmap fallback where FreeType is missing)."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no sized default font
        return ImageFont.load_default()


def _render(font: ImageFont.ImageFont, text: str, height: int) -> Image.Image:
    width = max(1, math.ceil(font.getlength(text)))
    im = Image.new("L", (width, height))
    ImageDraw.Draw(im).text((0, 1), text, font=font, fill=255)
    return im


def glyph_atlas(vocab: Vocabulary, font_px: int = FONT_PX, gutter_px: int = 1) -> np.ndarray:
    """(n_ids, cell_h, cell_w) uint8 glyph coverage per token id, for CanvasRaster.

    Masks, spaces and reserved ids are empty cells; a newline is a drawn return arrow
    (the default font has no U+21B5); a character the font lacks becomes '?'. Glyphs
    wider than a cell (W, M, subword tokens) are squeezed to fit.
    """
    font = default_font(font_px)
    inner_w = math.ceil(font.getlength("0")) + 2
    inner_h = max(font.getbbox("Hgjy|")[3], font_px) + 2
    notdef = np.asarray(_render(font, "\uffff", inner_h))
    atlas = np.zeros((vocab.n_ids, inner_h + gutter_px, inner_w + gutter_px), dtype=np.uint8)
    for i, s in enumerate(vocab.itos):  # once per vocabulary entry, not per frame
        if s == "\n":
            atlas[i, :inner_h, :inner_w] = _return_arrow(inner_w, inner_h)
            continue
        if not s.strip():
            continue
        im = _render(font, s, inner_h)
        if len(s) == 1 and np.array_equal(np.asarray(im), notdef):
            im = _render(font, "?", inner_h)
        if im.width > inner_w:
            im = im.resize((inner_w, inner_h), Image.Resampling.LANCZOS)
        x = (inner_w - im.width) // 2
        atlas[i, :inner_h, x : x + im.width] = np.asarray(im)
    return atlas


def _return_arrow(w: int, h: int) -> np.ndarray:
    im = Image.new("L", (w, h))
    d = ImageDraw.Draw(im)
    y = round(h * 0.62)
    d.line([(w - 3, round(h * 0.3)), (w - 3, y), (2, y)], fill=190)
    d.line([(2, y), (4, y - 2)], fill=190)
    d.line([(2, y), (4, y + 2)], fill=190)
    return np.asarray(im)


class FramePainter:
    """Draws the frames of one branch in one colour mode: caption, grid, legend."""

    def __init__(
        self,
        session: Session,
        branch: str | None = None,
        mode: str = "mask-state",
        columns: int = 64,
        font_px: int = FONT_PX,
    ) -> None:
        self.session = session
        self.branch = session.branch(branch)
        self.rows = session.rows(self.branch.id)
        if len(self.rows) == 0:
            raise SessionError(f"branch {self.branch.id!r} has no records to draw")
        self.mode = mode
        self.scale = value_range(mode, session.vocab.size) if mode in VALUE_MODES else None
        legend(mode)  # refuses an unknown mode before any drawing
        self.font = default_font(font_px)
        self.raster = CanvasRaster(glyph_atlas(session.vocab, font_px), columns)
        self.line_h = self.raster.cell_h + 4
        self.legend = self._legend_image()
        grid_w, grid_h = self.raster.image_size(session.store.layout.seq_len)
        self.size = (
            max(grid_w, self.legend.width) + 2 * MARGIN_PX,
            MARGIN_PX + self.line_h + grid_h + 4 + self.legend.height + MARGIN_PX,
        )

    def __len__(self) -> int:
        return len(self.rows)

    def grid(self, k: int) -> np.ndarray:
        """(H, W, 3) uint8 token grid of record k of the branch."""
        store, row = self.session.store, int(self.rows[k])
        values = store.get(self.mode, row) if self.scale is not None else None
        return self.raster.paint_record(
            store.get("tokens", row), store.get("flags", row), self.mode, values, self.scale
        )

    def caption(self, k: int) -> str:
        store, row = self.session.store, int(self.rows[k])
        kind = KINDS[int(store.get("kind", row))]
        return (
            f"branch {self.branch.id} \u00b7 record {k}/{len(self.rows) - 1} \u00b7 "
            f"iteration {int(store.get('iteration', row))} \u00b7 {kind} \u00b7 "
            f"{int(store.get('n_masked', row))} masked"
        )

    def frame(self, k: int) -> Image.Image:
        """The whole RGB frame of record k."""
        im = Image.new("RGB", self.size, tuple(int(c) for c in PAGE_RGB))
        ImageDraw.Draw(im).text(
            (MARGIN_PX, MARGIN_PX), self.caption(k), font=self.font, fill=tuple(int(c) for c in INK_LIGHT)
        )
        grid = Image.fromarray(self.grid(k), "RGB")
        im.paste(grid, (MARGIN_PX, MARGIN_PX + self.line_h))
        im.paste(self.legend, (MARGIN_PX, MARGIN_PX + self.line_h + grid.height + 4))
        return im

    def _legend_image(self) -> Image.Image:
        """One row of swatches and labels; in a value mode, the viridis bar with its ends first."""
        ink, page = tuple(int(c) for c in INK_LIGHT), tuple(int(c) for c in PAGE_RGB)
        sw = self.raster.cell_h - 2
        im = Image.new("RGB", (4096, self.line_h), page)
        d = ImageDraw.Draw(im)
        x = 0

        def text(label: str, gap: int) -> None:
            nonlocal x
            d.text((x, 0), label, font=self.font, fill=ink)
            x += math.ceil(self.font.getlength(label)) + gap

        def swatch(rgb: tuple[int, int, int], width: int) -> None:
            nonlocal x
            d.rectangle([x, 2, x + width - 1, 1 + sw], fill=rgb)
            x += width + 4

        swatches = legend(self.mode)
        if self.scale is not None:
            lo, hi = self.scale
            text(f"{self.mode}  {lo:g}", 4)
            bar = VIRIDIS_RGB[np.linspace(0, 255, 96).astype(np.intp)][None].repeat(sw, axis=0)
            im.paste(Image.fromarray(np.ascontiguousarray(bar), "RGB"), (x, 2))
            x += bar.shape[1] + 4
            text(f"{hi:.3g}", 16)
            swatches = swatches[2:]  # masked, no value
        for label, rgb in swatches:
            swatch(rgb, sw)
            text(label, 12)
        return im.crop((0, 0, max(1, x), self.line_h))


# -- writers --------------------------------------------------------------------------------
def write_png(
    session: Session,
    out: str | Path,
    branch: str | None = None,
    record: int | None = None,
    mode: str = "mask-state",
    columns: int = 64,
) -> Path:
    """The canvas at one record of a branch (default: the last) as a PNG."""
    painter = FramePainter(session, branch, mode, columns)
    k = session.record_index(painter.branch.id, record)
    image = painter.frame(k)
    with atomic_writer(out) as f:
        image.save(f, format="PNG", optimize=True)
    log.debug("wrote %s: %dx%d, record %d of branch %s", out, image.width, image.height, k, painter.branch.id)
    return Path(out)


def write_gif(
    session: Session,
    out: str | Path,
    branch: str | None = None,
    frame_ms: int = 120,
    mode: str = "mask-state",
    columns: int = 64,
    progress: Progress | None = None,
) -> Path:
    """The denoising of a branch as an animated GIF: one frame per record, looping."""
    painter = FramePainter(session, branch, mode, columns)
    n = len(painter)
    if frame_ms < MIN_FRAME_MS:
        log.warning("frame time %d ms is below what GIF viewers show; using %d ms", frame_ms, MIN_FRAME_MS)
        frame_ms = MIN_FRAME_MS
    samples = sorted({0, n // 2, n - 1})
    sheet = np.concatenate([np.asarray(painter.frame(k)) for k in samples], axis=0)
    palette = Image.fromarray(sheet, "RGB").quantize(256, method=Image.Quantize.MEDIANCUT)

    def quantised(k: int) -> Image.Image:
        frame = painter.frame(k).quantize(palette=palette, dither=Image.Dither.NONE)
        if progress is not None:
            progress(k + 1, n)
        return frame

    def rest() -> Iterator[Image.Image]:
        for k in range(1, n):
            yield quantised(k)

    durations = [frame_ms] * n
    durations[-1] = max(frame_ms, LAST_FRAME_MS)
    first = quantised(0)
    with atomic_writer(out) as f:
        first.save(f, format="GIF", save_all=True, append_images=rest(), duration=durations, loop=0, disposal=1)
    log.debug("wrote %s: %d frames of %dx%d", out, n, first.width, first.height)
    return Path(out)
