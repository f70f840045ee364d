"""A self-contained HTML player of one branch's denoising, for sharing.

One file, no network: inline CSS and JavaScript, and the records embedded compactly.
Per record the player needs the tokens, the flags (mask state) and the confidence; each
is a (records, positions) array whose rows differ from the previous row in few places,
so every row is XOR-ed with the one before (mostly zero bytes), deflated with zlib and
base64-encoded. The browser undoes this with `DecompressionStream("deflate")` (all
current browsers) and a running XOR. Confidence travels as its colour level, a uint16:
`core.palette.value_levels` (0..255, the PNG export's quantisation), 65535 for "no value".

The player draws the same grid as the app and the PNG export, with play/pause, a record
slider, speed and colour mode (mask state or confidence); keys: space plays, arrows step.
Its colour rules are not written in its JavaScript: the flag bits, the mask-state
priority, the colours and the ink choice arrive as JSON (`player_palette`), generated
from `core.palette` and `core.records`, so the player cannot drift from the app.

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
from dpgviz.store.session import Progress, Session, atomic_writer

_CHUNK_BYTES = 8 * 1024 * 1024  # rows per deflate chunk: progress granularity for long sessions
NO_LEVEL = 0xFFFF  # a confidence level the player reads as "no value"


def _packed(column: np.ndarray, rows: np.ndarray, transform=None, progress: Progress | None = None) -> str:
    """base64(zlib(row-XOR-delta of column[rows] as little-endian bytes))."""
    n_rows = len(rows)
    row_bytes = int(np.prod(column.shape[1:])) * column.dtype.itemsize if n_rows else 0
    step = max(1, _CHUNK_BYTES // max(1, row_bytes))
    comp = zlib.compressobj(6)
    parts, prev = [], None
    for start in range(0, n_rows, step):
        block = column[rows[start : start + step]]
        if transform is not None:
            block = transform(block)
        raw = np.ascontiguousarray(block.astype(block.dtype.newbyteorder("<"), copy=False)).view(np.uint8)
        raw = raw.reshape(len(block), -1)
        delta = raw.copy()
        delta[1:] ^= raw[:-1]
        if prev is not None:
            delta[0] ^= prev
        prev = raw[-1]
        parts.append(comp.compress(delta.tobytes()))
        if progress is not None:
            progress(start + len(block), n_rows)
    parts.append(comp.flush())
    return base64.b64encode(b"".join(parts)).decode("ascii")


def _confidence_levels(block: np.ndarray) -> np.ndarray:
    """viridis level of each confidence on the fixed 0..1 scale, NO_LEVEL where it has none.

    Levels rather than probabilities: the player only colours by them, and quantising
    here with the PNG's own function keeps the two exports' colours identical.
    """
    p = block.astype(np.float32)
    levels = value_levels(p, 0.0, 1.0).astype(np.uint16)
    levels[~np.isfinite(p)] = NO_LEVEL
    return levels


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
        "no_level": NO_LEVEL,
        "viridis": "".join(hex_colour(c)[1:] for c in VIRIDIS_RGB),
        "viridis_dark_ink": "".join("1" if dark else "0" for dark in _dark_ink(VIRIDIS_RGB)),
    }


def player_data(
    session: Session, branch: str | None = None, frame_ms: int = 120, progress: Progress | None = None
) -> dict:
    """Everything the player shows, as plain JSON data."""
    b = session.branch(branch)
    store, rows = session.store, session.rows(b.id)
    n = len(rows)
    done = [0, 0, 0]

    def part(i: int) -> Progress | None:
        if progress is None:
            return None

        def report(d: int, _total: int) -> None:
            done[i] = d
            progress(sum(done), 3 * n)

        return report

    ids = store.column("tokens")
    return {
        "title": f"dpgviz \u00b7 branch {b.id}" + (f" ({b.label})" if b.label else ""),
        "app_version": dpgviz.__version__,
        "branch": {"id": b.id, "parent": b.parent, "fork_record": b.fork_record, "settings": b.settings},
        "model": session.model_info.get("name") or session.model_path,
        "seq_len": store.layout.seq_len,
        "records": n,
        "frame_ms": int(frame_ms),
        "itos": [str(s) for s in session.vocab.strings(mask="", newline="\u21b5")],
        "mask_id": session.vocab.mask_id,
        "id_bytes": ids.dtype.itemsize,
        "scalars": [
            [int(store.get("iteration", r)), KINDS[int(store.get("kind", r))], int(store.get("n_masked", r))]
            for r in rows
        ],
        "tokens": _packed(ids, rows, progress=part(0)),
        "flags": _packed(store.column("flags"), rows, progress=part(1)),
        "confidence": _packed(store.column("confidence"), rows, _confidence_levels, progress=part(2)),
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
  body { background: var(--page); color: var(--ink); font: 14px system-ui, sans-serif; margin: 16px; }
  h1 { font-size: 16px; font-weight: 600; margin: 0 0 8px; }
  .bar { display: flex; gap: 10px; align-items: center; flex-wrap: wrap; margin: 8px 0; }
  button, select { background: var(--control); color: var(--ink); border: 1px solid #555; border-radius: 4px; padding: 3px 10px; font: inherit; }
  input[type=range] { flex: 1; min-width: 200px; }
  #info { font-variant-numeric: tabular-nums; }
  #grid { display: grid; gap: 1px; font: 13px/18px ui-monospace, Menlo, Consolas, monospace; }
  #grid span { width: 1.25ch; height: 18px; text-align: center; white-space: pre; overflow: hidden; }
  .legend { display: flex; gap: 12px; flex-wrap: wrap; margin-top: 8px; font-size: 12px; }
  .legend i { display: inline-block; width: 12px; height: 12px; margin-right: 4px; vertical-align: -2px; }
  details { margin-top: 12px; font-size: 12px; color: #b0b4bc; }
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
  <label>colour <select id="mode"><option value="state">mask state</option><option value="confidence">confidence</option></select></label>
</div>
<div id="info"></div>
<div id="error"></div>
<div id="grid"></div>
<div class="legend" id="legend"></div>
<details><summary>settings</summary><pre id="settings"></pre></details>
<script id="session-data" type="application/json">%DATA%</script>
<script>
"use strict";
const D = JSON.parse(document.getElementById("session-data").textContent);
const N = D.seq_len, R = D.records, COLS = Math.min(64, N);
const $ = (id) => document.getElementById(id);
let tokens, flags, conf, cells = [], shownTok, shownCol, k = 0, timer = null;

async function unpack(b64, rowBytes) {
  const bin = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
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
function colourOf(mode, r, i) {
  const f = flags[r * N + i];
  if (mode === "confidence") {
    const v = conf[r * N + i];
    if (v !== P.no_level) return ["#" + P.viridis.substr(6 * v, 6), P.viridis_dark_ink[v] === "1" ? dark : light];
    if (f & P.flag_masked) return [P.states[P.masked], P.state_dark_ink[P.masked] ? dark : light];
    return [P.no_value, P.no_value_dark_ink ? dark : light];
  }
  const s = stateOf(f);
  return [P.states[s], P.state_dark_ink[s] ? dark : light];
}

function show(r) {
  k = Math.max(0, Math.min(R - 1, r));
  const mode = $("mode").value;
  for (let i = 0; i < N; i++) {
    const t = tokens[k * N + i];
    if (t !== shownTok[i]) { cells[i].textContent = D.itos[t] ?? "?"; shownTok[i] = t; }
    const [bg, ink] = colourOf(mode, k, i);
    const key = bg + ink;
    if (key !== shownCol[i]) { cells[i].style.background = bg; cells[i].style.color = ink; shownCol[i] = key; }
  }
  const [it, kind, masked] = D.scalars[k];
  $("info").textContent = `record ${k}/${R - 1} \\u00b7 iteration ${it} \\u00b7 ${kind} \\u00b7 ${masked} masked`;
  $("slider").value = k;
}

function legend() {
  const el = $("legend"); el.textContent = "";
  const add = (c, label) => { const s = document.createElement("span"); const i = document.createElement("i"); i.style.background = c; s.append(i, label); el.append(s); };
  if ($("mode").value === "confidence") {
    const bar = document.createElement("span"); bar.textContent = "confidence 0 ";
    const g = document.createElement("i"); g.style.width = "96px";
    const top = P.viridis.length / 6 - 1;
    g.style.background = `linear-gradient(to right, #${P.viridis.substr(0, 6)}, #${P.viridis.substr(6 * (top >> 1), 6)}, #${P.viridis.substr(6 * top, 6)})`;
    bar.append(g, " 1"); el.append(bar); add(P.states[P.masked], "masked"); add(P.no_value, "no value");
  } else P.state_names.forEach((name, i) => add(P.states[i], name));
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
  tokens = D.id_bytes === 2 ? new Uint16Array(tok.buffer) : new Int32Array(tok.buffer);
  flags = await unpack(D.flags, N); conf = new Uint16Array((await unpack(D.confidence, 2 * N)).buffer);
  const grid = $("grid"); grid.style.gridTemplateColumns = `repeat(${COLS}, 1.25ch)`; grid.style.background = P.page;
  for (let i = 0; i < N; i++) { const c = document.createElement("span"); c.title = "position " + i; cells.push(c); grid.append(c); }
  shownTok = new Int32Array(N).fill(-1); shownCol = new Array(N).fill("");
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
