"""A self-contained HTML player of one branch's denoising, for sharing.

One file, no network: inline CSS and JavaScript, and the records embedded compactly.
Per record the player needs the tokens, the flags (mask state) and the values of each colour
mode it offers (core.color_modes, `player=True`: confidence and any registered so); each
is a (records, positions) array whose rows differ from the previous row in few places,
so every row is XOR-ed with the one before (mostly zero bytes), deflated with zlib and
base64-encoded. The browser undoes this with `DecompressionStream("deflate")` (all
current browsers) and a running XOR. Two things keep the rows alike (`player_data`):
ids travel as uint8 when the vocabulary has at most 256 (else as stored), and a mode's values
as their uint8 colour level (`core.palette.value_levels`, the PNG export's quantisation);
where a position is masked or has no value, its id or level is held from the record
before and a player-only flag bit (MASK_TOKEN_BIT) or the mode's "none" stream says so,
so a remask costs a flag change rather than a random byte. At 65,536 positions x 41 records of
synthetic noise (`bench.synthetic`, every prediction re-draws every confidence: the
worst case) the file is ~3.5 MB, against ~7.2 MB with uint16 ids and levels; the browser
holds 3 bytes per position per record once decoded.

The player draws the same grid as the app and the PNG export on one <canvas>: the
columns follow the window's width, the grid scrolls inside the page, and only the rows
in view are drawn, so a 65,536-token run plays as smoothly as a short one. Controls:
play/pause, a record slider, speed and colour mode (the modes listed in its data); keys:
space plays, arrows step; hovering a cell names its position and token.
Its colour rules are not written in its JavaScript: the flag bits, the state priority,
the colours and the ink choice arrive as JSON (`player_palette`), generated from
`core.palette` and `core.records`, and its modes, their kinds and legends (`player_modes`)
from `core.color_modes`, so the player cannot drift from the app.

A run made in blocks plays the whole sequence: each record's arrays are composed
(`store.blocks.Composer`, walking the records in order: one block re-copied per record),
so rows differ from the row before only in the record's block, which the XOR keeps cheap.

numpy and the standard library only.
"""

from __future__ import annotations

import base64
import html
import json
import zlib
from pathlib import Path

import numpy as np

import dpgviz
from dpgviz.core import color_modes
from dpgviz.core.palette import (
    INK_DARK,
    INK_LIGHT,
    NO_VALUE_RGB,
    PAGE_RGB,
    STATE_MASKED,
    STATE_NAMES,
    STATE_PRIORITY,
    STATE_RGB,
    STATE_VISIBLE,
    VIRIDIS_RGB,
    hex_colour,
    ink_rgb,
    value_levels,
)
from dpgviz.core.records import FLAG_MASKED, KINDS
from dpgviz.store.blocks import Composer, composed_masked
from dpgviz.store.inspect import commit_records
from dpgviz.store.overview import GridCells
from dpgviz.store.session import Progress, Session
from dpgviz.store.session_save import atomic_writer

_CHUNK_CELLS = 1 << 20  # positions x records encoded at a time: bounds memory, sets progress granularity
# Player-only flag bits, above every core.records FLAG_* (tests/test_export_long.py checks):
MASK_TOKEN_BIT = 0x80  # the token is the mask (its embedded id is held from the record before)


class _DeltaDeflate:
    """Rows XOR-ed with the row before, deflated as they arrive; base64 text at the end."""

    def __init__(self) -> None:
        self._comp = zlib.compressobj(6)  # level 9: 8x slower here for 1% less
        self._parts: list[bytes] = []
        self._prev: np.ndarray | None = None

    def add(self, block: np.ndarray) -> None:
        """Append (rows, ...) `block`, as little-endian bytes."""
        raw = np.ascontiguousarray(block.astype(block.dtype.newbyteorder("<"), copy=False)).view(np.uint8)
        raw = raw.reshape(len(block), -1)
        delta = raw.copy()
        delta[1:] ^= raw[:-1]
        if self._prev is not None:
            delta[0] ^= self._prev
        self._prev = raw[-1].copy()
        self._parts.append(self._comp.compress(delta.tobytes()))

    def text(self) -> str:
        self._parts.append(self._comp.flush())
        return base64.b64encode(b"".join(self._parts)).decode("ascii")


def _held(values: np.ndarray, hidden: np.ndarray, carry: np.ndarray) -> np.ndarray:
    """`values` (rows, N) with each hidden entry replaced by the last shown one above it.

    `carry` is the (held) row before the block. Holding makes a hidden entry cost nothing
    in the row-XOR stream: a remask turns a token into the mask and its confidence into
    "none" at up to every position, which would otherwise be a random byte each, twice
    (out and back); the flag bits say what is hidden, so nothing is lost.
    """
    stacked = np.concatenate([carry[None], values])
    idx = np.where(hidden, 0, np.arange(1, len(stacked), dtype=np.int32)[:, None])
    idx = np.maximum.accumulate(np.concatenate([np.zeros((1, idx.shape[1]), np.int32), idx]), axis=0)
    return np.take_along_axis(stacked, idx, axis=0)[1:]


def _wire_ids(n_ids: int, stored: np.dtype) -> np.dtype:
    """Token ids travel as uint8 where the vocabulary allows (character models): half of uint16."""
    return np.dtype(np.uint8) if n_ids <= 256 else stored


def _dark_ink(backgrounds: np.ndarray) -> list[bool]:
    return [bool((ink == INK_DARK).all()) for ink in ink_rgb(backgrounds)]


def player_palette() -> dict:
    """The player's colour rules as JSON data, all from core.palette and core.records.

    `priority` is STATE_PRIORITY ([flag bit, state] pairs, first match wins); `*_dark_ink`
    say, per colour, whether `ink_rgb` picks the dark ink. Viridis travels as one hex string
    and its ink flags as a string of 0/1, 6 and 1 characters per level.
    """
    return {
        "page": hex_colour(PAGE_RGB),
        "ink": {"dark": hex_colour(INK_DARK), "light": hex_colour(INK_LIGHT)},
        "states": [hex_colour(c) for c in STATE_RGB],
        "state_names": list(STATE_NAMES),
        "state_dark_ink": _dark_ink(STATE_RGB),
        "priority": [[int(flag), int(state)] for flag, state in STATE_PRIORITY],
        "visible": STATE_VISIBLE,
        "masked": STATE_MASKED,
        "flag_masked": FLAG_MASKED,
        "no_value": hex_colour(NO_VALUE_RGB),
        "no_value_dark_ink": _dark_ink(NO_VALUE_RGB[None])[0],
        "viridis": "".join(hex_colour(c)[1:] for c in VIRIDIS_RGB),
        "viridis_dark_ink": "".join("1" if dark else "0" for dark in _dark_ink(VIRIDIS_RGB)),
        "highlight": hex_colour(color_modes.HIGHLIGHT_RGB),
        "highlight_dark_ink": _dark_ink(color_modes.HIGHLIGHT_RGB[None])[0],
    }


def player_modes(vocab_size: int) -> list[dict]:
    """The colour modes the player offers (core.color_modes, `player=True`), in registry order:
    name, label, kind ("states", "value", "binary") and legend items (ColorMode.legend as JSON)."""
    return [
        {"name": m.name, "label": m.label, "kind": m.kind, "legend": m.legend_json(vocab_size)}
        for m in color_modes.modes() if m.player and m.overview
    ]


def player_data(
    session: Session, branch: str | None = None, frame_ms: int = 120, progress: Progress | None = None
) -> dict:
    """Everything the player shows, as plain JSON data.

    `tokens` and `flags` are (records, positions) arrays, and `values[mode]` = {"levels",
    "none"} two more per mode of `modes` that is not a states mode, each packed by
    `_DeltaDeflate`: ids as `id_bytes`-byte integers, flags as uint8 with MASK_TOKEN_BIT added,
    a value mode's levels as uint8 viridis levels on its scale (a binary mode's as 0 / 1) and
    "none" as 1 where the cell has no value. Masked ids and missing levels are held (`_held`):
    the player puts the mask id back where MASK_TOKEN_BIT is set.
    """
    b = session.branch(branch)
    store, rows = session.store, session.rows(b.id)
    n, seq_len = len(rows), store.layout.total_len  # a block run: the whole sequence at each record
    mask_id, vocab_size = session.vocab.mask_id, session.vocab.size
    ids = store.column("tokens")
    comp = Composer(store, rows, mask_id)
    wire = _wire_ids(session.vocab.n_ids, ids.dtype)
    modes = player_modes(vocab_size)
    valued = [color_modes.get(m["name"]) for m in modes if m["kind"] != "states"]
    streams = {name: _DeltaDeflate() for name in ("tokens", "flags")}
    levels_out = {m.name: (_DeltaDeflate(), _DeltaDeflate()) for m in valued}
    held_ids = np.zeros(seq_len, wire)
    held_levels = {m.name: np.zeros(seq_len, np.uint8) for m in valued}
    # a derived mode's decoding order, once for the branch (not once per chunk)
    commit = commit_records(store, rows) if any(m.derived for m in valued) else None
    step = max(1, _CHUNK_CELLS // max(1, seq_len))
    for start in range(0, n, step):
        block = rows[start : start + step]
        stop = start + len(block)
        tokens = comp.stack("tokens", start, stop)
        masked = tokens == mask_id
        flags = comp.stack("flags", start, stop) | (masked * np.uint8(MASK_TOKEN_BIT))
        wire_ids = _held(tokens.astype(wire), masked, held_ids)
        held_ids = wire_ids[-1]
        streams["tokens"].add(wire_ids)
        streams["flags"].add(flags.astype(np.uint8))
        cells = GridCells(store, rows, np.arange(start, stop), np.arange(seq_len), vocab_size, comp=comp, branch=b.id)
        if commit is not None:
            cells.prime("commit", commit)
        for mode in valued:  # each mode's per-cell values over the chunk (vectorised), as levels
            values = mode.cell_values(cells)
            if mode.kind == "binary":
                levels, none = np.asarray(values, dtype=np.uint8), np.zeros(values.shape, dtype=bool)
            else:
                v = np.asarray(values, dtype=np.float32)
                none = ~np.isfinite(v)
                # the PNG's own quantisation (value_levels), so the two exports' colours are identical
                levels = value_levels(v, *mode.scale(vocab_size)).astype(np.uint8)
            levels = _held(levels, none, held_levels[mode.name])
            held_levels[mode.name] = levels[-1]
            levels_out[mode.name][0].add(levels)
            levels_out[mode.name][1].add(none.astype(np.uint8))
        if progress is not None:
            progress(start + len(block), n)
    return {
        "title": f"dpgviz \u00b7 branch {b.id}" + (f" ({b.label})" if b.label else ""),
        "app_version": dpgviz.__version__,
        "branch": {"id": b.id, "parent": b.parent, "fork_record": b.fork_record, "settings": b.settings},
        "model": session.model_info.get("name") or session.model_path,
        "seq_len": seq_len,
        "records": n,
        "frame_ms": int(frame_ms),
        "itos": [str(s) for s in session.vocab.strings(mask="", newline="\u21b5")],
        "mask_id": mask_id,
        "id_bytes": wire.itemsize,
        "bits": {"mask_token": MASK_TOKEN_BIT},
        "scalars": [
            [int(store.get("iteration", r)), KINDS[int(store.get("kind", r))], int(m)]
            for r, m in zip(rows, composed_masked(store, rows), strict=True)
        ],
        "tokens": streams["tokens"].text(),
        "flags": streams["flags"].text(),
        "modes": modes,
        "values": {name: {"levels": lv.text(), "none": nv.text()} for name, (lv, nv) in levels_out.items()},
        "palette": player_palette(),
    }


def write_html(
    session: Session,
    out: str | Path,
    branch: str | None = None,
    frame_ms: int = 120,
    progress: Progress | None = None,
) -> Path:
    """Write the player for one branch as a single HTML file."""
    data = player_data(session, branch, frame_ms, progress)
    blob = json.dumps(data, ensure_ascii=True, separators=(",", ":")).replace("<", "\\u003c")
    page = (
        _TEMPLATE.replace("%TITLE%", html.escape(data["title"]))
        .replace("%CSS_COLOURS%", _css_colours())
        .replace("%DATA%", blob)
    )
    with atomic_writer(out) as f:
        f.write(page.encode("utf-8"))
    return Path(out)


def _css_colours() -> str:
    """CSS custom properties for the page chrome, in the canvas's own colours."""
    page, ink = hex_colour(PAGE_RGB), hex_colour(INK_LIGHT)
    return f"--page: {page}; --ink: {ink}; --control: {hex_colour(STATE_RGB[STATE_VISIBLE])};"


_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>%TITLE%</title>
<style>
  :root { %CSS_COLOURS% }
  html, body { height: 100%; }
  body { background: var(--page); color: var(--ink); font: 14px system-ui, sans-serif; margin: 0; padding: 16px; box-sizing: border-box; display: flex; flex-direction: column; }
  h1 { font-size: 16px; font-weight: 600; margin: 0 0 8px; }
  .bar { display: flex; gap: 10px; align-items: center; flex-wrap: wrap; margin: 8px 0; }
  button, select { background: var(--control); color: var(--ink); border: 1px solid #555; border-radius: 4px; padding: 3px 10px; font: inherit; }
  input[type=range] { flex: 1; min-width: 200px; }
  #info { font-variant-numeric: tabular-nums; }
  /* as tall as the grid, shrunk to what the window leaves (then it scrolls); at least 3 rows */
  #view { flex: 0 1 auto; min-height: 54px; overflow-x: hidden; overflow-y: auto; margin-top: 6px; }
  #sizer { position: relative; }
  #grid { position: sticky; top: 0; display: block; }
  .legend { display: flex; gap: 12px; flex-wrap: wrap; margin-top: 8px; font-size: 12px; }
  .legend i { display: inline-block; width: 12px; height: 12px; margin-right: 4px; vertical-align: -2px; }
  details { margin-top: 12px; font-size: 12px; color: #b0b4bc; }
  details pre { max-height: 30vh; overflow: auto; }
  #error { color: #f08080; }
</style>
</head>
<body>
<h1 id="title"></h1>
<div class="bar">
  <button id="play" title="play / pause (space)">&#9654;</button>
  <input id="slider" type="range" min="0" value="0" aria-label="record">
  <label>speed <select id="speed">
    <option value="0.25">0.25&times;</option><option value="0.5">0.5&times;</option>
    <option value="1" selected>1&times;</option><option value="2">2&times;</option><option value="4">4&times;</option>
  </select></label>
  <label>colour <select id="mode"></select></label>
</div>
<div id="info"></div>
<div id="error"></div>
<div id="view"><div id="sizer"><canvas id="grid" aria-label="token grid"></canvas></div></div>
<div class="legend" id="legend"></div>
<details><summary>settings</summary><pre id="settings"></pre></details>
<script id="session-data" type="application/json">%DATA%</script>
<script>
"use strict";
// The grid is one <canvas> the size of the visible part of #view (sticky at its top), inside
// a #sizer as tall as the whole grid: scrolling moves the sizer and the canvas redraws only
// the rows in view, so 65,536 positions cost what a screenful does. Columns follow the
// view's width (recomputed on resize).
const D = JSON.parse(document.getElementById("session-data").textContent);
const N = D.seq_len, R = D.records, B = D.bits;
const CELL_H = 18, FONT = "13px ui-monospace, Menlo, Consolas, monospace";
const $ = (id) => document.getElementById(id);
let tokens, flags, k = 0, timer = null;
const MODE = {}, LEVELS = {}, NONE = {};  // D.modes by name; each value mode's levels and "none" (unpacked)
for (const m of D.modes) MODE[m.name] = m;
let CELL_W = 11, cols = 1, gridRows = 1, pending = false, needLayout = true;

async function unpack(b64, rowBytes) {
  const s = atob(b64), bin = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) bin[i] = s.charCodeAt(i);
  const stream = new Blob([bin]).stream().pipeThrough(new DecompressionStream("deflate"));
  const out = new Uint8Array(await new Response(stream).arrayBuffer());
  for (let i = rowBytes; i < out.length; i++) out[i] ^= out[i - rowBytes];  // undo the row XOR
  return out;
}

const P = D.palette, dark = P.ink.dark, light = P.ink.light;
function stateOf(f) {  // P.priority is core/palette.py STATE_PRIORITY: the first set flag wins
  for (const [bit, state] of P.priority) if (f & bit) return state;
  return P.visible;
}
function colourOf(mode, r, i) {  // the rules of core/color_modes.py cell_rgb, by the mode's kind
  const j = r * N + i, f = flags[j], kind = (MODE[mode] || MODE.state).kind;
  if (kind === "states") { const s = stateOf(f); return [P.states[s], P.state_dark_ink[s] ? dark : light]; }
  if (kind === "value" && !NONE[mode][j]) { const v = LEVELS[mode][j]; return ["#" + P.viridis.substr(6 * v, 6), P.viridis_dark_ink[v] === "1" ? dark : light]; }
  if (kind === "binary" && LEVELS[mode][j]) return [P.highlight, P.highlight_dark_ink ? dark : light];
  if (f & P.flag_masked) return [P.states[P.masked], P.state_dark_ink[P.masked] ? dark : light];
  return [P.no_value, P.no_value_dark_ink ? dark : light];
}

function columnsFor(width) { return Math.max(1, Math.min(N, Math.floor(width / CELL_W))); }
function layout() {
  const view = $("view");
  for (let pass = 0; pass < 2; pass++) {  // a scrollbar that appears narrows the view: fit once more
    cols = columnsFor(view.clientWidth);
    gridRows = Math.ceil(N / cols);
    $("sizer").style.height = gridRows * CELL_H + "px";
  }
}
function gridTop(h) { return Math.max(0, Math.min($("view").scrollTop, gridRows * CELL_H - h)); }
function draw() {
  pending = false;
  if (needLayout) { needLayout = false; layout(); }
  const view = $("view"), canvas = $("grid"), dpr = window.devicePixelRatio || 1;
  const w = cols * CELL_W, h = Math.max(1, Math.min(view.clientHeight, gridRows * CELL_H));
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
    canvas.width = Math.round(w * dpr); canvas.height = Math.round(h * dpr);
    canvas.style.width = w + "px"; canvas.style.height = h + "px";
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.fillStyle = P.page; ctx.fillRect(0, 0, w, h);
  ctx.font = FONT; ctx.textAlign = "center"; ctx.textBaseline = "middle";
  const top = gridTop(h), first = Math.floor(top / CELL_H), last = Math.min(gridRows, Math.ceil((top + h) / CELL_H));
  const mode = $("mode").value, base = k * N;
  for (let row = first; row < last; row++) {  // only the rows in view
    const y = row * CELL_H - top;
    for (let i = row * cols, x = 0, end = Math.min(N, i + cols); i < end; i++, x += CELL_W) {
      const [bg, ink] = colourOf(mode, k, i);
      ctx.fillStyle = bg; ctx.fillRect(x, y, CELL_W - 1, CELL_H - 1);  // a 1-px gutter in the page colour
      const s = D.itos[tokens[base + i]] ?? "?";
      if (s) { ctx.fillStyle = ink; ctx.fillText(s, x + (CELL_W - 1) / 2, y + CELL_H / 2, CELL_W - 2); }
    }
  }
}
function redraw(relayout) {  // at most one layout and draw per animation frame, however many events
  needLayout = needLayout || relayout;
  if (!pending) { pending = true; requestAnimationFrame(draw); }
}

function show(r) {
  k = Math.max(0, Math.min(R - 1, r));
  const [it, kind, masked] = D.scalars[k];
  $("info").textContent = `record ${k}/${R - 1} \\u00b7 iteration ${it} \\u00b7 ${kind} \\u00b7 ${masked} masked`;
  $("slider").value = k;
  redraw(false);
}

function legend() {
  const el = $("legend"); el.textContent = "";
  const add = (c, label) => { const s = document.createElement("span"); const i = document.createElement("i"); i.style.background = c; s.append(i, label); el.append(s); };
  const m = MODE[$("mode").value] || MODE.state;
  for (const item of m.legend) {  // core/color_modes.py ColorMode.legend: the scale, or a swatch
    if (!item.scale) { add(item.rgb, item.label); continue; }
    const bar = document.createElement("span"); bar.textContent = `${m.name} ${item.scale[0]} `;
    const g = document.createElement("i"); g.style.width = "96px";
    const top = P.viridis.length / 6 - 1;
    g.style.background = `linear-gradient(to right, #${P.viridis.substr(0, 6)}, #${P.viridis.substr(6 * (top >> 1), 6)}, #${P.viridis.substr(6 * top, 6)})`;
    bar.append(g, ` ${item.scale[1]}`); el.append(bar);
  }
}

function stop() { clearTimeout(timer); timer = null; $("play").innerHTML = "&#9654;"; }
function tick() {
  if (k >= R - 1) { stop(); return; }
  show(k + 1);
  timer = setTimeout(tick, D.frame_ms / Number($("speed").value));
}
function play() {
  if (timer) { stop(); return; }
  if (k >= R - 1) show(0);
  $("play").innerHTML = "&#10074;&#10074;";
  timer = setTimeout(tick, D.frame_ms / Number($("speed").value));
}

async function main() {
  document.title = D.title; $("title").textContent = D.title + (D.model ? " \\u00b7 " + D.model : "");
  $("settings").textContent = JSON.stringify(D.branch, null, 1);
  if (typeof DecompressionStream === "undefined") { $("error").textContent = "This browser cannot decompress the embedded records (no DecompressionStream)."; return; }
  const tok = await unpack(D.tokens, N * D.id_bytes);
  tokens = D.id_bytes === 1 ? tok : D.id_bytes === 2 ? new Uint16Array(tok.buffer) : new Int32Array(tok.buffer);
  flags = await unpack(D.flags, N);
  for (const [name, v] of Object.entries(D.values)) { LEVELS[name] = await unpack(v.levels, N); NONE[name] = await unpack(v.none, N); }
  for (const m of D.modes) { const o = document.createElement("option"); o.value = m.name; o.textContent = m.label; $("mode").append(o); }
  for (let j = 0; j < flags.length; j++) if (flags[j] & B.mask_token) tokens[j] = D.mask_id;  // ids are held under masks
  const canvas = $("grid"), ctx = canvas.getContext("2d"), view = $("view");
  ctx.font = FONT; CELL_W = Math.max(6, Math.ceil(ctx.measureText("M").width) + 3);
  view.style.background = P.page;
  view.addEventListener("scroll", () => redraw(false));
  window.addEventListener("resize", () => redraw(true));
  if (typeof ResizeObserver !== "undefined") new ResizeObserver(() => redraw(true)).observe(view);
  canvas.addEventListener("mousemove", (e) => {  // the old per-cell tooltip: position and token
    const row = Math.floor((e.offsetY + gridTop(canvas.clientHeight)) / CELL_H), col = Math.floor(e.offsetX / CELL_W);
    const i = row * cols + col;
    canvas.title = col < cols && i < N ? `position ${i}: ${JSON.stringify(D.itos[tokens[k * N + i]] ?? "?")}` : "";
  });
  $("slider").max = R - 1;
  $("slider").addEventListener("input", (e) => { stop(); show(Number(e.target.value)); });
  $("play").addEventListener("click", play);
  $("mode").addEventListener("change", () => { legend(); show(k); });
  document.addEventListener("keydown", (e) => {
    if (e.target.tagName === "SELECT") return;
    if (e.key === " ") { e.preventDefault(); play(); }
    else if (e.key === "ArrowRight") { stop(); show(k + 1); }
    else if (e.key === "ArrowLeft") { stop(); show(k - 1); }
  });
  legend(); show(0); play();
}
const ready = main().catch((e) => { $("error").textContent = "Could not load the session: " + e; });
</script>
</body>
</html>
"""
