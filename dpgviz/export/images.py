"""PNG and animated GIF exports of the canvas, drawn with Pillow.

Pillow does the parts it is good at and numpy the rest: Pillow draws each token's glyph
once into an alpha atlas with its default font (`ImageFont.load_default`), writes the
caption and legend, quantises and encodes; `export.raster` paints every frame's grid
from the atlas with whole-array numpy operations.

A frame is: caption (branch, record, iteration, kind, masks left), the token grid, and
a legend of the colour mode. GIF frames share one palette (median cut over a few sample
frames) and are quantised without dithering, so colours do not flicker between frames;
the last frame is held longer so a looping GIF shows the finished text.

Subword tokens: as on the canvas's grid, every position gets a slot of `slot_width(vocab)`
glyph cells (the longest display string, at most MAX_SLOT_WIDTH, as the canvas); a token
draws its characters one per glyph cell from the left of its slot, so " cat" takes four
cells and "s" one, never squeezed. `columns` counts glyph cells, so a row holds
columns // slot positions. Only the ids a branch shows are drawn into the atlas.

Long sequences: a frame never exceeds PNG_MAX_SIZE (4096 x 4096 px) for a PNG or
GIF_MAX_SIZE (1600 x 1200 px) for a GIF. When the grid at `columns` glyph cells a row
would not fit, `export.raster.fit_grid` reflows it to more glyph cells a row, or else
draws square cells without glyphs, as large as fit (a 65,536-token PNG keeps its glyphs,
370 a row; a GIF shows 5-px blocks, 316 a row); only past one pixel per cell does it cut
the grid to its first positions. We scale rather than tile: one file per export, the
whole run in one picture, and the state colours (what a long run is looked at for) stay
exact, since each block is its cell's own colour, not a resampled blend. A picture drawn
other than as asked says so on a line under the legend, in its metadata (the PNG's
"Comment" text chunk, the GIF's comment extension) and in the log.

Runs made in blocks: a frame shows the whole sequence composed at its record
(`store.blocks.Composer`: finished blocks, the record's block, masks to come), and its
caption names the block; a GIF walks the records in order, so each frame re-copies one block.

Imports Pillow and numpy; no torch, no dearpygui.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from PIL.PngImagePlugin import PngInfo

from dpgviz.core import color_modes
from dpgviz.core.palette import INK_LIGHT, PAGE_RGB, VIRIDIS_RGB, ink_rgb
from dpgviz.core.records import FLAG_MASKED, KINDS
from dpgviz.core.vocab import MAX_SLOT_WIDTH, Vocabulary
from dpgviz.export.raster import CanvasRaster, GridFit, fit_grid
from dpgviz.store.blocks import Composer
from dpgviz.store.inspect import commit_records
from dpgviz.store.overview import GridCells
from dpgviz.store.session import Progress, Session, SessionError
from dpgviz.store.session_save import atomic_writer

log = logging.getLogger(__name__)

FONT_PX = 13  # Pillow's default font at this size gives ~9 px wide cells: 64 columns ~ 640 px
MARGIN_PX = 8
LAST_FRAME_MS = 1500  # hold the finished text before a GIF loops
MIN_FRAME_MS = 20  # GIF delays are centiseconds, and browsers slow anything under 20 ms to 100 ms
# Frame caps (width, height): a PNG is looked at zoomed in, so 4096 px a side keeps the glyphs
# of 65,536 tokens; a GIF is every frame again and viewers show it at screen size.
PNG_MAX_SIZE = (4096, 4096)
GIF_MAX_SIZE = (1600, 1200)
# Pillow's `optimize` (zlib level 9 and filter search) is 5x slower than its default on a
# 4096-px picture for ~5% smaller output: worth it only on pictures up to this many pixels.
PNG_OPTIMIZE_MAX_PX = 2_000_000


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


def slot_width(vocab: Vocabulary) -> int:
    """Glyph cells of every position's slot: the longest display string, at most MAX_SLOT_WIDTH."""
    widths = vocab.display_widths()[: vocab.size]
    return int(min(MAX_SLOT_WIDTH, widths.max())) if len(widths) else 1


def glyph_atlas(
    vocab: Vocabulary, font_px: int = FONT_PX, gutter_px: int = 1, ids: np.ndarray | None = None
) -> np.ndarray:
    """(len(ids), cell_h, cell_w) uint8 glyph coverage per token id (`ids`: default every id), for CanvasRaster.

    A cell is a slot of `slot_width(vocab)` glyph cells (1 for a char model) plus the gutter;
    a token's characters go one per glyph cell from the left. Masks, spaces and reserved
    ids are empty; a newline is a drawn return arrow (the default font has no U+21B5); a
    character the font lacks becomes '?'. Glyphs wider than a glyph cell (W, M) are squeezed.
    """
    font = default_font(font_px)
    inner_w = math.ceil(font.getlength("0")) + 2
    inner_h = max(font.getbbox("Hgjy|")[3], font_px) + 2
    notdef = np.asarray(_render(font, "\uffff", inner_h))
    slot = slot_width(vocab)
    ids = np.arange(vocab.n_ids) if ids is None else np.asarray(ids, dtype=np.int64)
    atlas = np.zeros((len(ids), inner_h + gutter_px, slot * inner_w + gutter_px), dtype=np.uint8)
    glyphs: dict[str, np.ndarray | None] = {}

    def glyph(ch: str) -> np.ndarray | None:
        if ch not in glyphs:  # each distinct character drawn once
            if ch == "\n":
                glyphs[ch] = _return_arrow(inner_w, inner_h)
            elif not ch.strip():
                glyphs[ch] = None
            else:
                im = _render(font, ch, inner_h)
                if np.array_equal(np.asarray(im), notdef):
                    im = _render(font, "?", inner_h)
                if im.width > inner_w:
                    im = im.resize((inner_w, inner_h), Image.Resampling.LANCZOS)
                cell = np.zeros((inner_h, inner_w), np.uint8)
                x = (inner_w - im.width) // 2
                cell[:, x : x + im.width] = np.asarray(im)
                glyphs[ch] = cell
        return glyphs[ch]

    for k, i in enumerate(ids.tolist()):  # once per token shown, not per frame
        if i >= vocab.size:  # the mask and reserved ids
            continue
        for j, ch in enumerate(vocab.itos[i][:slot]):
            cell = glyph(ch)
            if cell is not None:
                atlas[k, :inner_h, j * inner_w : (j + 1) * inner_w] = cell
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
    """Draws the frames of one branch in one colour mode: caption, grid, legend (and a note).

    `max_size` (width, height) caps the frame: a grid that would not fit is reflowed,
    drawn as blocks or cut (`self.fit`, `self.note`; see the module docstring); None
    draws it as asked at any size.
    """

    def __init__(
        self,
        session: Session,
        branch: str | None = None,
        mode: str = "state",
        columns: int = 64,
        font_px: int = FONT_PX,
        max_size: tuple[int, int] | None = PNG_MAX_SIZE,
    ) -> None:
        self.session = session
        self.branch = session.branch(branch)
        self.rows = session.rows(self.branch.id)
        if len(self.rows) == 0:
            raise SessionError(f"branch {self.branch.id!r} has no records to draw")
        self.spec = color_modes.get(mode)  # refuses an unknown mode before any drawing
        if not self.spec.overview:
            raise SessionError(f"colour mode {mode!r} is the window's only (its data is not in a session file)")
        self.mode = self.spec.name
        self._commit: np.ndarray | None = None  # a derived mode's decoding order, once per branch
        self.font = default_font(font_px)
        # The atlas holds only the ids this branch shows; `_atlas_row` maps an id to its row.
        store, vocab = session.store, session.vocab
        self.composer = Composer(store, self.rows, vocab.mask_id)  # a block run's whole sequence per record
        parts = [store.get("tokens", int(r)) for r in self.rows]  # per record, not token
        if store.layout.is_blocks:  # masks of blocks not started, and a prompt before the first block
            parts += [np.array([vocab.mask_id], dtype=parts[0].dtype), np.asarray(store.layout.prefix, parts[0].dtype)]
        shown_ids = np.unique(np.concatenate(parts))
        self._atlas_row = np.zeros(max(vocab.n_ids, int(shown_ids[-1]) + 1), dtype=np.intp)
        self._atlas_row[shown_ids] = np.arange(len(shown_ids))
        atlas = glyph_atlas(vocab, font_px, ids=shown_ids)
        self.slot = slot_width(vocab)  # glyph cells per position
        self.line_h = atlas.shape[1] + 4
        self.legend = legend_image(self.spec.legend(vocab.size), self.mode, self.font, self.line_h, atlas.shape[1] - 2)
        seq_len = store.layout.total_len
        self.fit = self._fit(seq_len, max(1, columns // self.slot), atlas, max_size)
        self.note = self.fit.note
        if self.fit.block_px is None:
            self.raster = CanvasRaster(atlas, self.fit.columns)
        else:
            self.raster = CanvasRaster.blocks(len(shown_ids), self.fit.block_px, self.fit.columns)
        grid_w, grid_h = self.raster.image_size(self.fit.shown)
        note_w = math.ceil(self.font.getlength(self.note)) if self.note else 0
        self.size = (
            max(grid_w, self.legend.width, note_w) + 2 * MARGIN_PX,
            self._chrome_h() + grid_h,
        )
        if self.note:  # a cut loses positions: worth a warning; a scaled picture is only news
            log.log(logging.WARNING if self.fit.shown < seq_len else logging.INFO, "%s", self.note)

    def _chrome_h(self, note: bool | None = None) -> int:
        """Frame height taken by margins, caption, legend and the note line if there is one."""
        note = bool(self.note) if note is None else note
        return MARGIN_PX + self.line_h + 4 + self.line_h + (self.line_h if note else 0) + MARGIN_PX

    def _fit(self, seq_len: int, columns: int, atlas: np.ndarray, max_size: tuple[int, int] | None) -> GridFit:
        cell_h, cell_w = atlas.shape[1:]
        if max_size is None:
            return GridFit(min(columns, max(1, seq_len)), None, seq_len, seq_len, "")
        max_w, cap = max_size[0] - 2 * MARGIN_PX, f"a {max_size[0]}x{max_size[1]} px picture"
        fit = fit_grid(seq_len, columns, cell_h, cell_w, max_w, max_size[1] - self._chrome_h(False), cap)
        if fit.note:  # not as asked: the note takes a line, so fit again in what is left
            fit = fit_grid(seq_len, columns, cell_h, cell_w, max_w, max_size[1] - self._chrome_h(True), cap)
        return fit

    def positions(self) -> tuple[np.ndarray, np.ndarray]:
        """(y, x) pixel of each drawn position's cell's top-left corner within a frame."""
        pos = np.arange(self.fit.shown)
        cols = self.raster.grid_shape(self.fit.shown)[1]
        top = MARGIN_PX + self.line_h
        return top + (pos // cols) * self.raster.cell_h, MARGIN_PX + (pos % cols) * self.raster.cell_w

    def __len__(self) -> int:
        return len(self.rows)

    def grid(self, k: int) -> np.ndarray:
        """(H, W, 3) uint8 token grid of record k of the branch (a block run: the whole sequence)."""
        comp, n = self.composer, self.fit.shown
        flags, values = comp.field("flags", k)[:n], None
        if self.spec.kind != "states":  # the mode's per-cell values over this record (core.color_modes)
            cells = GridCells(self.session.store, self.rows, np.array([k]), np.arange(n), self.session.vocab.size,
                              comp=comp, branch=self.branch.id)
            if self.spec.derived:
                if self._commit is None:
                    self._commit = commit_records(self.session.store, self.rows)
                cells.prime("commit", self._commit[:n])
            values = self.spec.cell_values(cells)[0]
        background = color_modes.cell_rgb(self.spec, flags, values, self.session.vocab.size)
        return self.raster.paint(self._atlas_row[comp.field("tokens", k)[:n]], background, ink_rgb(background))

    def caption(self, k: int) -> str:
        store, row = self.session.store, int(self.rows[k])
        kind = KINDS[int(store.get("kind", row))]
        layout = store.layout
        if layout.is_blocks:  # masks in the whole sequence, and which block the record is of
            masked = int(np.count_nonzero(self.composer.field("flags", k) & FLAG_MASKED))
            where = f" \u00b7 block {int(store.get('block', row)) + 1} of {layout.n_blocks}"
        else:
            masked, where = int(store.get("n_masked", row)), ""
        return (
            f"branch {self.branch.id} \u00b7 record {k}/{len(self.rows) - 1} \u00b7 "
            f"iteration {int(store.get('iteration', row))} \u00b7 {kind}{where} \u00b7 "
            f"{masked} masked"
        )

    def frame(self, k: int) -> Image.Image:
        """The whole RGB frame of record k."""
        im = Image.new("RGB", self.size, tuple(int(c) for c in PAGE_RGB))
        ImageDraw.Draw(im).text(
            (MARGIN_PX, MARGIN_PX), self.caption(k), font=self.font, fill=tuple(int(c) for c in INK_LIGHT)
        )
        grid = Image.fromarray(self.grid(k), "RGB")
        im.paste(grid, (MARGIN_PX, MARGIN_PX + self.line_h))
        legend_y = MARGIN_PX + self.line_h + grid.height + 4
        im.paste(self.legend, (MARGIN_PX, legend_y))
        if self.note:
            ImageDraw.Draw(im).text(
                (MARGIN_PX, legend_y + self.line_h), self.note, font=self.font, fill=tuple(int(c) for c in INK_LIGHT)
            )
        return im


def legend_image(items: list[color_modes.LegendItem], name: str, font: ImageFont.ImageFont, line_h: int, sw: int) -> Image.Image:
    """One row of a mode's legend (`ColorMode.legend`): its scale as `name lo`, a viridis bar and `hi`,
    then `sw`-px swatches and their labels. The PNG/GIF and the overview draw this; the window
    draws the same items (gui.status.Legend), the HTML player their JSON."""
    ink, page = tuple(int(c) for c in INK_LIGHT), tuple(int(c) for c in PAGE_RGB)
    im = Image.new("RGB", (4096, line_h), page)
    d = ImageDraw.Draw(im)
    x = 0

    def text(label: str, gap: int) -> None:
        nonlocal x
        d.text((x, 0), label, font=font, fill=ink)
        x += math.ceil(font.getlength(label)) + gap

    for item in items:
        if item.scale is not None:
            lo, hi = item.scale
            text(f"{name}  {lo}", 4)
            bar = VIRIDIS_RGB[np.linspace(0, 255, 96).astype(np.intp)][None].repeat(sw, axis=0)
            im.paste(Image.fromarray(np.ascontiguousarray(bar), "RGB"), (x, 2))
            x += bar.shape[1] + 4
            text(hi, 16)
        else:
            d.rectangle([x, 2, x + sw - 1, 1 + sw], fill=item.rgb)
            x += sw + 4
            text(item.label, 12)
    return im.crop((0, 0, max(1, x), line_h))


# -- writers --------------------------------------------------------------------------------
def write_png(
    session: Session,
    out: str | Path,
    branch: str | None = None,
    record: int | None = None,
    mode: str = "state",
    columns: int = 64,
) -> Path:
    """The canvas at one record of a branch (default: the last) as a PNG, at most PNG_MAX_SIZE."""
    painter = FramePainter(session, branch, mode, columns, max_size=PNG_MAX_SIZE)
    k = session.record_index(painter.branch.id, record)
    image = painter.frame(k)
    info = PngInfo()
    if painter.note:
        info.add_text("Comment", painter.note)
    with atomic_writer(out) as f:
        image.save(f, format="PNG", optimize=image.width * image.height <= PNG_OPTIMIZE_MAX_PX, pnginfo=info)
    log.debug("wrote %s: %dx%d, record %d of branch %s", out, image.width, image.height, k, painter.branch.id)
    return Path(out)


def write_gif(
    session: Session,
    out: str | Path,
    branch: str | None = None,
    frame_ms: int = 120,
    mode: str = "state",
    columns: int = 64,
    progress: Progress | None = None,
) -> Path:
    """The denoising of a branch as an animated GIF: one frame per record, looping, at most GIF_MAX_SIZE."""
    painter = FramePainter(session, branch, mode, columns, max_size=GIF_MAX_SIZE)
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
    extra = {"comment": painter.note} if painter.note else {}
    with atomic_writer(out) as f:
        first.save(
            f, format="GIF", save_all=True, append_images=rest(), duration=durations, loop=0, disposal=1, **extra
        )
    log.debug("wrote %s: %d frames of %dx%d", out, n, first.width, first.height)
    return Path(out)
