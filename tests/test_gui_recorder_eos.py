"""The window on a recorded LLaDA-sized batch (issue 31, Xvfb): left padding drawn as padding (dimmed,
never prompt), block= boundaries drawn as bars, end tokens as ⟨eos⟩/⟨eot⟩, an id past the tokenizer
as <126400>, score= in the tooltip and the remask-score colour mode, the EOS-mass plot, and
View > Hide tokens after the first EOS. One App per process: the scenario runs in a child process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHOTS = Path(os.environ.get("DPGVIZ_SHOTS", "/work/shots/recorder"))

SCENARIO = r'''
import sys, time, subprocess
import numpy as np
sys.path.insert(0, sys.argv[3])
from recorder_data import llada_like_tokenizer, LLADA_EOS, LLADA_EOT, LLADA_MASK, LLADA_WIDTH
from gui_frames import grab
from pathlib import Path
import dpgviz
from dpgviz.core.records import FLAG_PADDING, FLAG_PROMPT
from dpgviz.core.vocab import EOS_GLYPH, EOT_GLYPH
from dpgviz.gui.canvas_marks import BLOCK_GLYPH

path, shots = Path(sys.argv[1]), Path(sys.argv[2])
tok = llada_like_tokenizer()
B, L, PAD = 2, 48, 3
blocks = [(5, 21), (21, 37), (37, 48)]
rng = np.random.default_rng(0)
the, cat, sat = (tok.convert_tokens_to_ids("\u0120" + w) for w in ("the", "cat", "sat"))
x = np.full((B, L), LLADA_MASK)
x[0, :PAD] = LLADA_EOS  # left padding (the tokenizer pads with its end of text, as LLaDA's does)
x[0, PAD:5] = [the, cat]
x[1, :5] = [the, cat, sat, the, cat]
mask = np.ones((B, L), np.int64)
mask[0, :PAD] = 0
scores = {}
with dpgviz.Recorder(tok, LLADA_MASK, L, path=path, model="llada-like", names=["padded", "full prompt"]) as rec:
    rec.log(x, attention_mask=mask, block=blocks[0])
    for b, (lo, hi) in enumerate(blocks):
        for step in range(4):
            logits = rng.normal(size=(B, L, LLADA_WIDTH)).astype(np.float32)
            logits[..., LLADA_EOS] += 2.0 + 4.0 * b  # the end of text grows likelier block by block
            todo = [p for p in range(lo, hi) if x[0, p] == LLADA_MASK]
            take = todo[: max(1, len(todo) // (4 - step))]
            for p in take:
                if b == 2 and p >= 40:
                    x[:, p] = LLADA_EOS if p != 44 else LLADA_EOT  # the tail fills with end tokens
                else:
                    x[:, p] = 300 + p if p != 10 else 126400  # 126400: past the tokenizer, within the logits
            score = rng.random((B, L)).astype(np.float32)
            scores[len(scores) + 1] = score
            rec.log(x, logits=logits, score=score, block=(lo, hi))

from dpgviz.gui.app import App
import dearpygui.dearpygui as dpg
from dpgviz.gui.inspector import describe

app = App(autoload=False, width=1500, height=940).build()
app.frame()
ws = app.workspace
assert ws.files.open(path)
deadline = time.monotonic() + 60
while ws.files.is_checking:
    assert time.monotonic() < deadline and app.frame()
first = ws.store.branch_order[0]
assert ws.store.branches[first].label == "padded"
ws.view.branch, ws.view.follow_live = first, False
ws.view.record = ws.n_records() - 1
for _ in range(5):
    app.frame()
canvas = app.canvas
inks = "".join(canvas._texts[k] for k in ("light", "dark", "dim", "ghost"))
# block boundaries: a bar at each block's first position (5, 21, 37)
assert canvas._texts["block"].count(BLOCK_GLYPH) == 3, repr(canvas._texts["block"])
# end tokens and an id the tokenizer lacks, drawn by name
assert EOS_GLYPH in inks and EOT_GLYPH in inks and "<126400>" in inks, inks
# left padding: flagged as padding, never prompt; dimmed on the canvas
flags = ws.store.get("flags", int(ws.rows()[-1]))
assert ((flags[:PAD] & FLAG_PADDING) != 0).all() and ((flags[:PAD] & FLAG_PROMPT) == 0).all()
assert ((flags[PAD:5] & FLAG_PROMPT) != 0).all()
extras = ws.inspect.cell_extras("state")
assert extras.arrays["padding"][:PAD].all() and not extras.arrays["padding"][PAD:5].any()
assert not extras.arrays["padding"][5:40].any() and extras.arrays["padding"][41:].all()  # the padding is no EOS
assert ws.inspect.token_info(0).state == "padding" or ws.inspect.token_info(0).state != "prompt"
# score= in the tooltip's numbers
k = ws.view.record
info = ws.inspect.token_info(12)
assert info.score is not None and abs(info.score - float(scores[k][0, 12])) < 1e-3, (info.score, scores[k][0, 12])
assert f"remask score {info.score:.3f}"[:18] in describe(info), describe(info)
# the remask-score colour mode colours by it: it differs from the state colours
state_frame = grab(app, shots / "state.png")
app.set_color_mode("score")
score_frame = grab(app, shots / "score-mode.png")
assert (state_frame != score_frame).any()
# EOS mass per step rises as the end of text grows likelier
eos = app.run_plots.data["eos"]
assert np.isfinite(eos[1:]).all() and eos[-2] > eos[2] > 0, eos
app.set_color_mode("state")
# a screenshot with the tooltip over a scored position (the real mouse, moved by xdotool)
px = canvas.pixel_of(12)
geo = subprocess.run(["xdotool", "search", "--name", "dpgviz", "getwindowgeometry"], capture_output=True, text=True).stdout
at = next((line.split()[1] for line in geo.splitlines() if "Position" in line), "0,0").split(",")
for dx in (0, 1, 0):
    subprocess.run(["xdotool", "mousemove", str(int(px[0]) + int(at[0]) + dx), str(int(px[1]) + int(at[1]))], check=False)
    for _ in range(15):
        app.frame()
        time.sleep(0.03)
print("hover", ws.view.hover_pos, geo.replace(chr(10), " "))
grab(app, shots / "recorded-run-tooltip.png")
# View > Hide tokens after the first EOS: the tail goes blank, the first end token stays
dpg.get_item_callback(app.hide_eos_item)(app.hide_eos_item, True)
for _ in range(5):
    app.frame()
hidden_inks = "".join(canvas._texts[k] for k in ("light", "dark", "dim", "ghost"))
assert hidden_inks.count(EOS_GLYPH) == 1 + PAD and EOT_GLYPH not in hidden_inks, hidden_inks
grab(app, shots / "hide-after-eos.png")
dpg.set_value(app.side_tabs, app.tabs["Plots"])  # the EOS mass curve beside the others
subprocess.run(["xdotool", "mousemove", "5", "5"], check=False)
grab(app, shots / "plots-eos-mass.png")
app.close()
print("scenario ok")
'''


@pytest.mark.gui
@pytest.mark.skipif(not os.environ.get("DISPLAY"), reason="needs an X display (run under xvfb-run -a)")
def test_a_recorded_batch_draws_padding_blocks_eos_and_scores(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    SHOTS.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [sys.executable, "-c", SCENARIO, str(tmp_path / "llada.dpgviz"), str(SHOTS), str(ROOT / "tests")],
        cwd=ROOT, capture_output=True, text=True, timeout=400,
    )
    assert proc.returncode == 0 and "scenario ok" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-5000:]
    print(proc.stdout[-500:])
