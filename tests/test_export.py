"""Exports: PNG and GIF decode back with the expected size and frames; text, CSV, JSON, HTML."""

from __future__ import annotations

import base64
import csv
import json
import re
import shutil
import subprocess
import zlib

import numpy as np
import pytest
from PIL import Image
from session_data import sampled_store

from dpgviz.core import color_modes
from dpgviz.core.palette import STATE_MASKED, STATE_RGB, cell_rgb, ink_rgb, mask_states, value_levels
from dpgviz.core.records import FLAG_MASKED, FLAG_NEW, FLAG_PROTECTED, FLAG_REMASKED
from dpgviz.export import export_session
from dpgviz.export.html import player_data
from dpgviz.export.images import FramePainter, glyph_atlas
from dpgviz.export.raster import CanvasRaster
from dpgviz.export.tables import STAT_COLUMNS, step_stats
from dpgviz.store.session import SessionError
from dpgviz.store.session_open import open_session
from dpgviz.store.session_save import save_session


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    store, vocab, settings = sampled_store()
    path = save_session(tmp_path_factory.mktemp("s") / "run.dpgviz", store, vocab, settings=settings.to_dict())
    with open_session(path) as s:
        yield s


# -- palette and rasteriser ---------------------------------------------------------------------
def test_mask_state_priority_matches_the_app():
    flags = np.array([0, FLAG_NEW, FLAG_MASKED, FLAG_MASKED | FLAG_REMASKED, FLAG_PROTECTED | FLAG_NEW], np.uint8)
    assert mask_states(flags).tolist() == [0, 1, 2, 3, 4]


def test_value_mode_keeps_masked_cells_grey_without_a_value():
    flags = np.array([FLAG_MASKED, 0, 0], np.uint8)
    rgb = cell_rgb("confidence", flags, np.array([np.nan, 0.0, 1.0], np.float16), (0.0, 1.0))
    assert rgb[0].tolist() == STATE_RGB[STATE_MASKED].tolist()
    assert rgb[1].tolist() != rgb[2].tolist()


def test_ink_contrasts_with_background():
    assert ink_rgb(np.array([[0, 0, 0], [255, 255, 255]], np.uint8)).tolist() == [[230, 232, 236], [16, 16, 20]]


def test_raster_grid_has_one_cell_per_token(session):
    atlas = glyph_atlas(session.vocab)
    raster = CanvasRaster(atlas, columns=10)
    n = 25
    image = raster.paint(np.zeros(n, np.int64), np.full((n, 3), 200, np.uint8), np.zeros((n, 3), np.uint8))
    assert image.shape == (3 * atlas.shape[1], 10 * atlas.shape[2], 3)
    assert image[0, 0].tolist() == [200, 200, 200]  # cell 0's background
    assert image[-2, -2].tolist() == [30, 32, 38]  # past token 24: the page colour


def test_mask_glyph_is_empty_and_letters_are_not(session):
    atlas = glyph_atlas(session.vocab)
    assert atlas[session.vocab.mask_id].max() == 0
    assert atlas[session.vocab.itos.index("W")].max() > 0
    assert atlas[session.vocab.itos.index("\n")].max() > 0  # drawn return arrow


# -- images ---------------------------------------------------------------------------------------
def test_png_decodes_with_the_frame_size(session, tmp_path):
    out = export_session(session, "png", tmp_path / "last.png")
    painter = FramePainter(session)
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size == painter.size
        assert np.array_equal(np.asarray(im.convert("RGB")), np.asarray(painter.frame(len(painter) - 1)))


@pytest.mark.parametrize("mode", [m.name for m in color_modes.modes() if m.overview])
def test_png_in_every_colour_mode(session, tmp_path, mode):
    out = export_session(session, "png", tmp_path / f"{mode}.png", record=3, mode=mode)
    with Image.open(out) as im:
        assert im.size == FramePainter(session, mode=mode).size


def test_gif_has_one_frame_per_record(session, tmp_path):
    calls = []
    out = export_session(session, "gif", tmp_path / "run.gif", frame_ms=80, progress=lambda d, t: calls.append((d, t)))
    n = len(session.rows())
    with Image.open(out) as im:
        assert im.format == "GIF" and im.n_frames == n and im.size == FramePainter(session).size
        im.seek(1)
        assert im.info["duration"] == 80
        im.seek(n - 1)
        assert im.info["duration"] == 1500
        assert im.info["loop"] == 0
    assert calls[-1] == (n, n)


def test_gif_of_a_child_branch(session, tmp_path):
    out = export_session(session, "gif", tmp_path / "child.gif", branch="1")
    with Image.open(out) as im:
        assert im.n_frames == len(session.rows("1"))


# -- tables ---------------------------------------------------------------------------------------
def test_text_of_a_record_and_of_the_branch(session, tmp_path):
    first = export_session(session, "text", tmp_path / "first.txt", record=0).read_text(encoding="utf-8")
    assert first == "\u2588" * session.store.layout.seq_len
    final = export_session(session, "text", tmp_path / "final.txt").read_text(encoding="utf-8")
    assert "\u2588" not in final and len(final) == session.store.layout.seq_len


def test_stats_follow_the_records(session):
    stats = step_stats(session)
    rows = session.rows()
    assert [s["record"] for s in stats] == list(range(len(rows)))
    assert stats[0]["kind"] == "initial" and stats[0]["mean_confidence"] is None
    assert stats[-1]["n_masked"] == 0 and stats[-1]["kind"] == "final"
    assert stats[1]["n_new"] == session.store.layout.seq_len  # the first prediction fills every position
    assert all(0.0 < s["mean_confidence"] <= 1.0 for s in stats[1:])
    remask = stats[2]
    assert remask["kind"] == "remask" and remask["n_remasked"] == remask["n_masked"] == remask["target_masks"]


def test_csv_has_a_header_and_a_row_per_record(session, tmp_path):
    out = export_session(session, "csv", tmp_path / "stats.csv", branch="1")
    with out.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == STAT_COLUMNS
    assert len(rows) == len(session.rows("1"))
    assert rows[0]["mean_confidence"] == ""


def test_json_stats_name_the_branch(session, tmp_path):
    doc = json.loads(export_session(session, "json", tmp_path / "stats.json", branch="1").read_text())
    assert doc["branch"] == "1" and doc["parent"] == "0"
    assert len(doc["steps"]) == len(session.rows("1"))
    assert doc["steps"][0]["mean_entropy"] is None


# -- html -----------------------------------------------------------------------------------------
def _unpack(b64: str, row_bytes: int) -> np.ndarray:
    raw = np.frombuffer(zlib.decompress(base64.b64decode(b64)), np.uint8).reshape(-1, row_bytes)
    return np.bitwise_xor.accumulate(raw, axis=0)


def test_html_embeds_every_record_compactly(session, tmp_path):
    data = player_data(session, "0")
    n, rows = session.store.layout.seq_len, session.rows("0")
    assert data["id_bytes"] == 1  # a character vocabulary: one byte an id
    flags = _unpack(data["flags"], n)
    tokens = _unpack(data["tokens"], n).astype(np.int64)
    masked = (flags & data["bits"]["mask_token"]) != 0
    tokens[masked] = data["mask_id"]  # ids are held under masks; the flag bit restores them
    assert np.array_equal(tokens, session.store.column("tokens")[rows])
    assert np.array_equal(flags & ~np.uint8(data["bits"]["mask_token"]), session.store.column("flags")[rows])
    conf = session.store.column("confidence")[rows].astype(np.float32)
    assert np.array_equal(_unpack(data["values"]["confidence"]["none"], n) != 0, ~np.isfinite(conf))
    levels = _unpack(data["values"]["confidence"]["levels"], n)
    assert np.array_equal(levels[np.isfinite(conf)], value_levels(conf[np.isfinite(conf)], 0.0, 1.0))
    assert len(data["scalars"]) == len(rows)


def test_html_is_self_contained(session, tmp_path):
    page = export_session(session, "html", tmp_path / "player.html").read_text(encoding="utf-8")
    assert "DecompressionStream" in page and 'id="slider"' in page and 'id="speed"' in page
    assert not re.search(r"(src|href)=\"https?:", page)
    assert page.count("</script>") == 2  # the embedded data cannot close its script tag


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node to run the player's script")
def test_html_player_runs_and_shows_the_last_record(session, tmp_path):
    page = export_session(session, "html", tmp_path / "player.html").read_text(encoding="utf-8")
    shown = _run_player(page, tmp_path, _NODE_CHECK, timeout_s=30)
    final = session.vocab.decode(session.store.get("tokens", session.rows()[-1]))
    assert shown["info"].startswith(f"record {len(session.rows()) - 1}/")
    assert shown["text"] == final.replace("\n", "\u21b5")


def _run_player(page: str, tmp_path, check: str, *, view_px: tuple[int, int] = (1000, 100000), timeout_s: int = 60) -> dict:
    """Run the page's own player script under node with a stub DOM, then `check` (prints JSON).

    `view_px` is every element's client width and height (the player sizes its grid to its view).
    """
    data_json = re.search(r'<script id="session-data" type="application/json">(.*?)</script>', page, re.S).group(1)
    script = re.findall(r"<script>(.*?)</script>", page, re.S)[-1]
    harness = tmp_path / "run.js"
    sizes = f"const __VIEW_W = {int(view_px[0])}, __VIEW_H = {int(view_px[1])};\n"
    harness.write_text(sizes + _NODE_DOM + f"\nconst __DATA = {json.dumps(data_json)};\n" + script + check)
    result = subprocess.run(["node", str(harness)], capture_output=True, text=True, timeout=timeout_s)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _hex(rgb: np.ndarray) -> np.ndarray:
    return np.array([f"#{r:02x}{g:02x}{b:02x}" for r, g, b in np.asarray(rgb).reshape(-1, 3).tolist()])


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node to run the player's script")
def test_html_player_colours_equal_the_png_cells(session, tmp_path):
    """Every cell of every record, in both player modes: the player's background and ink are the PNG's."""
    page = export_session(session, "html", tmp_path / "player.html").read_text(encoding="utf-8")
    shown = _run_player(page, tmp_path, _NODE_COLOURS)
    rows = session.rows("0")
    n = session.store.layout.seq_len
    # The fixture must exercise what could go wrong: several mask states and both confidence cases.
    flags = session.store.column("flags")[rows]
    assert len(np.unique(mask_states(flags))) >= 3
    conf = session.store.column("confidence")[rows].astype(np.float32)
    assert np.isfinite(conf).any() and (~np.isfinite(conf) & ((flags & FLAG_MASKED) != 0)).any()
    for player_mode, png_mode in (("state", "mask-state"), ("confidence", "confidence")):
        painter = FramePainter(session, "0", mode=png_mode)
        raster = painter.raster
        _, cols = raster.grid_shape(n)
        pos = np.arange(n)
        y0, x0 = (pos // cols) * raster.cell_h, (pos % cols) * raster.cell_w
        for k, row in enumerate(rows):
            tokens = session.store.get("tokens", row).astype(np.intp)
            grid = painter.grid(k)
            # Background: a pixel of each cell that its glyph leaves uncovered (the gutter is the page).
            glyph = painter.raster.atlas[tokens][:, :-1, :-1]
            blank = np.argmax(glyph.reshape(n, -1) == 0, axis=1)
            assert (glyph.reshape(n, -1)[pos, blank] == 0).all()
            by, bx = np.divmod(blank, glyph.shape[2])
            background = grid[y0 + by, x0 + bx]
            # Ink: where a glyph is fully drawn the pixel is the ink colour itself.
            ink = ink_rgb(background)
            bg_hex, ink_hex = shown[player_mode]["bg"][k], shown[player_mode]["ink"][k]
            assert bg_hex == _hex(background).tolist(), (player_mode, k)
            assert ink_hex == _hex(ink).tolist(), (player_mode, k)
            full = glyph.reshape(n, -1) == 255
            if full.any():
                cell = np.argmax(full.any(axis=1))
                fy, fx = np.divmod(np.argmax(full[cell]), glyph.shape[2])
                assert grid[y0[cell] + fy, x0[cell] + fx].tolist() == ink[cell].tolist()


_NODE_DOM = r"""
// The smallest DOM the player touches, enough to run it under node. The canvas's 2D
// context records what is drawn: __ctx.texts ([text, x, y]) and __ctx.rects ([colour, x, y]).
const __ctx = {
  texts: [], rects: [], fillStyle: "", font: "", textAlign: "", textBaseline: "",
  setTransform() {}, measureText() { return { width: 7.8 }; },
  fillRect(x, y, w, h) { this.rects.push([this.fillStyle, x, y]); },
  fillText(s, x, y) { this.texts.push([s, x, y]); },
};
class El {
  constructor(id) { this.id = id; this.children = []; this.style = {}; this.textContent = ""; this.innerHTML = ""; this.value = ""; this.listeners = {}; this.clientWidth = __VIEW_W; this.clientHeight = __VIEW_H; this.scrollTop = 0; this.width = 0; this.height = 0; }
  append(...xs) { this.children.push(...xs); }
  addEventListener(name, f) { this.listeners[name] = f; }
  getContext() { return __ctx; }
}
const __window = {};
globalThis.window = { devicePixelRatio: 1, addEventListener(name, f) { __window[name] = f; } };
globalThis.requestAnimationFrame = (f) => { f(); return 0; };
const __els = {};
const document = {
  getElementById(id) {
    if (!__els[id]) { __els[id] = new El(id); if (id === "session-data") __els[id].textContent = __DATA; if (id === "speed") __els[id].value = "1"; if (id === "mode") __els[id].value = "state"; }
    return __els[id];
  },
  createElement(tag) { return new El(tag); },
  addEventListener() {},
  title: "",
};
globalThis.setTimeout = (f) => 0; globalThis.clearTimeout = () => {};
"""

_NODE_CHECK = r"""
(async () => {
  await ready;
  if (__els.error && __els.error.textContent) { console.error(__els.error.textContent); process.exit(1); }
  show(R - 1);
  __els.mode.value = "confidence"; __ctx.texts = []; show(R - 1);
  // Every row is in view (clientHeight is large), so each position's glyph was drawn once.
  const text = new Array(N).fill("");
  for (const [s, x, y] of __ctx.texts) text[Math.floor(y / CELL_H) * cols + Math.floor(x / CELL_W)] = s;
  console.log(JSON.stringify({ info: __els.info.textContent, text: text.join("") }));
})();
"""

_NODE_COLOURS = r"""
(async () => {
  await ready;
  if (__els.error && __els.error.textContent) { console.error(__els.error.textContent); process.exit(1); }
  const out = {};
  for (const mode of ["state", "confidence"]) {
    out[mode] = { bg: [], ink: [] };
    for (let r = 0; r < R; r++) {
      const bg = [], ink = [];
      for (let i = 0; i < N; i++) { const [b, c] = colourOf(mode, r, i); bg.push(b); ink.push(c); }
      out[mode].bg.push(bg); out[mode].ink.push(ink);
    }
  }
  console.log(JSON.stringify(out));
})();
"""


# -- refusals -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "why"),
    [
        ({"fmt": "bmp"}, "unknown export format"),
        ({"fmt": "png", "mode": "rainbow"}, "unknown colour mode"),
        ({"fmt": "png", "record": 999}, "not 999"),
        ({"fmt": "gif", "branch": "9"}, "no branch '9'"),
    ],
)
def test_bad_export_requests_are_refused(session, tmp_path, kwargs, why):
    fmt = kwargs.pop("fmt")
    with pytest.raises(SessionError, match=why):
        export_session(session, fmt, tmp_path / "x", **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_export_into_missing_folder_is_refused(session, tmp_path):
    with pytest.raises(SessionError, match="does not exist"):
        export_session(session, "text", tmp_path / "no" / "x.txt")
