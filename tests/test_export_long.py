"""Exports at 65,536 tokens: PNG, GIF and HTML stay within their caps, fast enough, and right.

A synthetic run (`bench.synthetic`, noise tokens, every prediction re-draws every
confidence: the hardest case for compression) of 3 iterations, 7 records, saved and
opened as the CLI does. Timings are printed (pytest -s), not asserted: the machine varies.
"""

from __future__ import annotations

import logging
import math
import re
import shutil
import time

import numpy as np
import pytest
from PIL import Image
from test_export import _run_player  # the page's player under node with a stub DOM

from dpgviz.bench.synthetic import synthetic_store, synthetic_vocab
from dpgviz.core import records
from dpgviz.core.palette import cell_rgb, mask_states
from dpgviz.export import export_session
from dpgviz.export.html import MASK_TOKEN_BIT
from dpgviz.export.images import GIF_MAX_SIZE, PNG_MAX_SIZE, FramePainter
from dpgviz.export.raster import fit_grid
from dpgviz.store.session_open import open_session
from dpgviz.store.session_save import save_session

SEQ_LEN = 65_536
STEPS = 3  # 2 * STEPS + 1 = 7 records: initial, 3 predictions, 2 remasks, final

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    vocab = synthetic_vocab()
    path = save_session(tmp_path_factory.mktemp("long") / "long.dpgviz", synthetic_store(SEQ_LEN, STEPS), vocab)
    with open_session(path) as s:
        yield s


def _timed(label: str, f):
    t = time.perf_counter()
    result = f()
    print(f"{label}: {time.perf_counter() - t:.2f} s")
    return result


# -- the fitting policy -------------------------------------------------------------------------
def test_fit_grid_prefers_as_asked_then_reflow_then_blocks_then_a_cut():
    # 11 x 19 glyph cells, as the default font draws them
    asked = fit_grid(256, 64, 19, 11, 1000, 1000)
    assert (asked.columns, asked.block_px, asked.shown, asked.note) == (64, None, 256, "")
    reflowed = fit_grid(4096, 64, 19, 11, 1000, 1000)  # 64 a row would be 1216 px tall
    assert reflowed.block_px is None and reflowed.columns == 90 and math.ceil(4096 / 90) * 19 <= 1000
    assert "reflowed to 90 a row" in reflowed.note
    blocks = fit_grid(SEQ_LEN, 64, 19, 11, 1584, 1111)
    assert blocks.block_px == 5 and blocks.columns == 316 and blocks.gutter_px == 1 and blocks.shown == SEQ_LEN
    assert fit_grid(SEQ_LEN, 64, 19, 11, 300, 300).block_px == 1  # 300 x 300 >= 65,536 one-pixel cells
    cut = fit_grid(SEQ_LEN, 64, 19, 11, 200, 100)
    assert (cut.block_px, cut.gutter_px, cut.columns, cut.shown) == (1, 0, 200, 20_000)
    assert "showing positions 0-19,999 of 65,536" in cut.note


def test_player_flag_bits_are_free_in_the_record_flags():
    used = [v for name, v in vars(records).items() if name.startswith("FLAG_") and isinstance(v, int)]
    assert used and max(used) < MASK_TOKEN_BIT <= 0x80


# -- PNG ------------------------------------------------------------------------------------------
def test_png_at_65536_tokens_fits_and_colours_each_cell_by_its_state(session, tmp_path, caplog):
    record = 2  # a remask: masked, remasked and visible positions side by side
    with caplog.at_level(logging.INFO, logger="dpgviz.export.images"):
        out = _timed("png 65,536", lambda: export_session(session, "png", tmp_path / "long.png", record=record))
    print(f"png 65,536: {out.stat().st_size:,} bytes")
    painter = FramePainter(session)
    assert painter.fit.shown == SEQ_LEN and painter.fit.block_px is None  # every position, glyphs kept
    with Image.open(out) as im:
        assert im.size == painter.size and im.width <= PNG_MAX_SIZE[0] and im.height <= PNG_MAX_SIZE[1]
        assert "reflowed" in im.info["Comment"]
        pixels = np.asarray(im.convert("RGB"))
    assert "reflowed" in caplog.text
    assert out.stat().st_size < 8_000_000

    row = int(session.rows()[record])
    tokens = session.store.get("tokens", row).astype(np.intp)
    flags = session.store.get("flags", row)
    states = mask_states(flags)
    assert len(np.unique(states)) >= 2
    # the first position of each state, and the very last position
    probe = sorted({int(np.flatnonzero(states == s)[0]) for s in np.unique(states)} | {SEQ_LEN - 1})
    y0, x0 = painter.positions()
    expected = cell_rgb("mask-state", flags)
    for pos in probe:
        glyph = painter.raster.atlas[tokens[pos]][:-1, :-1]  # without the gutter
        by, bx = np.argwhere(glyph == 0)[0]  # a pixel the glyph leaves uncovered: the background
        assert pixels[y0[pos] + by, x0[pos] + bx].tolist() == expected[pos].tolist(), pos


# -- GIF ------------------------------------------------------------------------------------------
def test_gif_at_65536_tokens_is_capped_with_a_note(session, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="dpgviz.export.images"):
        out = _timed("gif 65,536", lambda: export_session(session, "gif", tmp_path / "long.gif"))
    print(f"gif 65,536: {out.stat().st_size:,} bytes")
    n = len(session.rows())
    painter = FramePainter(session, max_size=GIF_MAX_SIZE)
    assert painter.fit.block_px is not None and painter.fit.shown == SEQ_LEN  # blocks, nothing cut
    with Image.open(out) as im:
        assert im.n_frames == n and im.size == painter.size
        assert im.width <= GIF_MAX_SIZE[0] and im.height <= GIF_MAX_SIZE[1]
        assert b"without glyphs" in im.info["comment"]
        first = np.asarray(im.convert("RGB"))
    assert "without glyphs" in caplog.text
    # record 0 masks everything: every cell is the masked grey (up to the shared palette's quantisation)
    y0, x0 = painter.positions()
    grey = cell_rgb("mask-state", session.store.get("flags", int(session.rows()[0])))[0].astype(int)
    cells = first[y0, x0].astype(int)
    assert np.abs(cells - grey).max() <= 8


# -- HTML -----------------------------------------------------------------------------------------
def _html(session, tmp_path):
    out = _timed("html 65,536", lambda: export_session(session, "html", tmp_path / "long.html"))
    print(f"html 65,536 x {len(session.rows())} records: {out.stat().st_size:,} bytes")
    return out.read_text(encoding="utf-8")


def test_html_at_65536_tokens_embeds_its_records_compactly(session, tmp_path):
    page = _html(session, tmp_path)
    size = len(page.encode("utf-8"))
    # The floor is the noise: a prediction re-draws every confidence (a uint8 level, 8 random
    # bits) and the tokens of the positions it fills (~6 bits of 65 characters): <= 1.75 bytes
    # a position, 2.33 once base64-encoded. Remasks, the final record and the flags cost little
    # (held ids and levels), so 2.6 bytes a position per prediction leaves ~10% for deflate's
    # overhead, plus 64 KB for the page itself. The uint16 encoding before took ~4.
    predictions = STEPS
    assert size < 2.6 * SEQ_LEN * predictions + 64_000
    assert page.count('<canvas id="grid"') == 1  # one canvas, not 65,536 cells
    assert not re.search(r"(src|href)=\"https?:", page)


_NODE_LAYOUT = r"""
(async () => {
  await ready;
  if (__els.error && __els.error.textContent) { console.error(__els.error.textContent); process.exit(1); }
  const view = __els.view, out = { cell_w: CELL_W, cell_h: CELL_H };
  const frame = () => { __ctx.texts = []; __ctx.rects = []; show(R - 1); };
  frame();
  out.wide = { cols, sizer: __els.sizer.style.height, rects: __ctx.rects.length };
  view.clientWidth = 600; __window.resize(); frame();
  out.narrow = { cols, sizer: __els.sizer.style.height, rects: __ctx.rects.length };
  view.scrollTop = 20000; view.listeners.scroll(); frame();
  out.scrolled = { top: view.scrollTop, texts: __ctx.texts };
  console.log(JSON.stringify(out));
})();
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node to run the player's script")
def test_html_player_fits_columns_to_the_window_and_draws_only_what_is_in_view(session, tmp_path):
    page = _html(session, tmp_path)
    # The shared stub DOM of test_export, with an 1200 x 800 px view.
    shown = _timed("node player", lambda: _run_player(page, tmp_path, _NODE_LAYOUT, view_px=(1200, 800), timeout_s=120))
    cell_w, cell_h = shown["cell_w"], shown["cell_h"]
    assert cell_w == math.ceil(7.8) + 3  # the font's measured width and a gutter
    for key, width in (("wide", 1200), ("narrow", 600)):
        cols = width // cell_w
        assert shown[key]["cols"] == cols, key
        assert shown[key]["sizer"] == f"{math.ceil(SEQ_LEN / cols) * cell_h}px"
        # the page plus the cells of the rows in an 800-px view, not 65,536 cells
        assert shown[key]["rects"] <= 1 + (800 // cell_h + 2) * cols, key
    # Scrolled: the glyphs drawn are the last record's tokens at the positions in view.
    cols, top = shown["narrow"]["cols"], shown["scrolled"]["top"]
    tokens = session.store.get("tokens", int(session.rows()[-1]))
    itos = session.vocab.strings(mask="", newline="\u21b5")
    texts = shown["scrolled"]["texts"]
    positions = [((y + top) // cell_h) * cols + x // cell_w for _, x, y in texts]
    assert positions[0] == (top // cell_h) * cols and positions == sorted(positions)
    assert len(texts) >= 800 // cell_h * cols - cols  # the view is full
    assert [s for s, _, _ in texts] == [itos[t] for t in tokens[positions]]
