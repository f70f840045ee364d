"""The Prompt box in a real window (Xvfb): type a prompt, Start, and the prompt's cells never
change and are drawn in the prompt colour; a template fills only its holes; Restart keeps the
prompt of the run it continues, whatever the box says by then.

Dear PyGui hosts one App per process, so the scenario runs in a child pytest started by
`test_prompt_box_in_its_own_process` (as tests/test_gui_explore.py does); the child sees
DPGVIZ_PROMPT_SCENARIO=1 and runs the `test_scenario_*` steps in order, one App for all.
Frames are saved under DPGVIZ_SHOTS (default: the child's tmp folder) for a person to look at.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from gui_frames import grab

HAS_DISPLAY = bool(os.environ.get("DISPLAY"))
IN_SCENARIO = os.environ.get("DPGVIZ_PROMPT_SCENARIO") == "1"
PROMPT = "ROMEO:\nBut soft, what light through yonder window breaks?\n"
TEMPLATE = "To be, or \u2588\u2588\u2588 \u2588\u2588 \u2588\u2588: that is the question"


@pytest.mark.gui
@pytest.mark.skipif(not HAS_DISPLAY or IN_SCENARIO, reason="needs an X display (run under xvfb-run -a)")
def test_prompt_box_in_its_own_process(tmp_path: Path) -> None:
    env = {**os.environ, "DPGVIZ_PROMPT_SCENARIO": "1"}
    env.setdefault("DPGVIZ_SHOTS", str(tmp_path / "shots"))
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--basetemp", str(tmp_path / "t"),
           "-k", "scenario_", str(Path(__file__))]
    proc = subprocess.run(cmd, cwd=Path(__file__).parent.parent, capture_output=True, text=True, timeout=400, env=env)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert " passed" in proc.stdout and "skipped" not in proc.stdout, proc.stdout[-2000:]


scenario = pytest.mark.skipif(not (HAS_DISPLAY and IN_SCENARIO), reason="runs in the child process only")


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory):
    from model_data import tiny_checkpoint

    from dpgviz.core.discovery import ModelEntry
    from dpgviz.gui.app import App

    ckpt = tiny_checkpoint(tmp_path_factory.mktemp("models") / "tiny", block_size=256)
    app = App(models_dir=str(ckpt.parent.parent), autoload=False, width=1500, height=940).build()
    app.frame()
    app.workspace.runs.load_model(ModelEntry("tiny", ckpt, ckpt.with_name("meta.pkl")))
    run_until(app, lambda: app.workspace.model_info is not None)
    yield app
    app.close()


def run_until(app, condition: Callable[[], bool], timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out; status: {app.status.text!r}"
        assert app.frame(), "the window closed"
    app.frame()


def share_of(app, frame: np.ndarray, pos: int, rgb: tuple[int, int, int]) -> float:
    """Share of position `pos`'s cell pixels that have colour `rgb` (its glyph covers the rest)."""
    x, y = app.canvas.pixel_of(pos)
    half_w = 0.45 * (app.canvas.pixel_of(1)[0] - app.canvas.pixel_of(0)[0])
    half_h = 0.45 * app.view.font_px  # the whole cell: at 16 px a square of its width is mostly glyph
    cell = frame[int(y - half_h) : int(y + half_h), int(x - half_w) : int(x + half_w)].astype(int)
    return float((np.abs(cell - np.array(rgb)).max(axis=-1) <= 3).mean())


def type_prompt(app, text: str, template: bool = False) -> None:
    """What typing into the Prompt box leaves: its value, then its callback (the hint line)."""
    import dearpygui.dearpygui as dpg

    panel = app.settings
    dpg.set_value(panel.prompt, text)
    dpg.set_value(panel.template, template)
    dpg.get_item_callback(panel.prompt)()
    app.frame()


@scenario
def test_scenario_1_a_typed_prompt_stays_fixed_and_is_drawn_as_prompt(app, shots: Path) -> None:
    import dearpygui.dearpygui as dpg

    from dpgviz.core.records import FLAG_PROMPT, FLAG_PROTECTED
    from dpgviz.gui import palette

    panel, ws = app.settings, app.workspace
    dpg.set_value(panel.length, 120)
    dpg.set_value(panel.steps, 6)
    type_prompt(app, PROMPT)
    assert "characters fixed" in dpg.get_value(panel.prompt_hint)
    dpg.get_item_callback(panel.start_button)()
    run_until(app, lambda: not ws.is_running)
    n = len(PROMPT)
    prompt_ids = ws.vocab.encode(PROMPT)
    rows = ws.rows()
    assert len(rows) == 2 * 6 + 1 and ws.store.layout.seq_len == n + 120
    for row in rows:  # every record: the prompt's cells unchanged, flagged as the prompt's
        assert (ws.store.get("tokens", int(row))[:n] == prompt_ids).all()
        flags = ws.store.get("flags", int(row))
        assert ((flags[:n] & (FLAG_PROMPT | FLAG_PROTECTED)) == FLAG_PROMPT | FLAG_PROTECTED).all()
        assert not (flags[n:] & FLAG_PROMPT).any()
    assert ws.vocab.decode(ws.store.get("tokens", int(rows[-1]))).startswith(PROMPT)
    assert "started from: prompt 'ROMEO:" in dpg.get_value(app.branches.details)

    prompt_rgb = palette.STATES[[k for k, _, _ in palette.STATES].index("prompt")][2]
    ws.view.follow_live = False
    for record in (0, len(rows) // 2, len(rows) - 1):  # the colour holds at the start, midway and the end
        ws.view.record = record
        frame = grab(app, shots / f"prompt-record-{record}.png")
        for pos in (0, 5, 20, n - 2):
            assert share_of(app, frame, pos, prompt_rgb) > 0.2, (record, pos)  # the rest is its glyph
        assert share_of(app, frame, n + 3, prompt_rgb) == 0.0  # a generated cell: never the prompt's colour


@scenario
def test_scenario_2_the_legend_names_the_prompt(app, shots: Path) -> None:
    import dearpygui.dearpygui as dpg

    group = app.legend._groups["state"]
    texts = [dpg.get_value(item) for item in dpg.get_item_children(group, 1) if dpg.get_item_type(item).endswith("mvText")]
    assert "prompt" in texts


@scenario
def test_scenario_3_restart_keeps_the_runs_prompt_whatever_the_box_says(app, shots: Path) -> None:
    import dearpygui.dearpygui as dpg

    ws = app.workspace
    root = ws.view.branch
    ws.view.follow_live, ws.view.record = False, 4
    type_prompt(app, "something else entirely")
    dpg.get_item_callback(app.settings.continue_button)()
    run_until(app, lambda: not ws.is_running)
    assert ws.view.branch != root and ws.store.branches[ws.view.branch].settings["prompt"] == PROMPT
    final = ws.vocab.decode(ws.store.get("tokens", int(ws.rows()[-1])))
    assert final.startswith(PROMPT) and "\u2588" not in final


@scenario
def test_scenario_4_a_template_fills_only_its_holes(app, shots: Path) -> None:
    import dearpygui.dearpygui as dpg

    ws = app.workspace
    dpg.set_value(app.settings.steps, 4)
    type_prompt(app, TEMPLATE, template=True)
    assert dpg.get_value(app.settings.prompt_hint).startswith("7 positions to fill")
    dpg.get_item_callback(app.settings.start_button)()
    run_until(app, lambda: not ws.is_running)
    final = ws.vocab.decode(ws.store.get("tokens", int(ws.rows()[-1])))
    assert len(final) == len(TEMPLATE) and "\u2588" not in final
    assert all(a == b for a, b in zip(final, TEMPLATE, strict=True) if b != "\u2588")
    assert ws.store.branches[ws.view.branch].settings["length"] == 7  # a template's length: its holes
    grab(app, shots / "prompt-template.png")


@scenario
def test_scenario_5_a_template_without_holes_is_refused_in_the_panel(app) -> None:
    ws = app.workspace
    before = len(ws.store.branch_order)
    type_prompt(app, "no holes at all", template=True)
    app.settings.start()
    app.frame()
    assert "has no \u2588" in app.status.text and len(ws.store.branch_order) == before
    type_prompt(app, "")  # leave the box empty for whatever runs next


@scenario
def test_scenario_6_text_after_an_end_of_text_is_drawn_dimmed(app, shots: Path) -> None:
    import dataclasses

    ws = app.workspace
    vocab = ws.doc.vocab
    ws.view.follow_live, ws.view.record = False, ws.n_records() - 2  # the template run's last prediction
    tokens = ws.store.get("tokens", ws.current_row())
    first_hole = TEMPLATE.index("\u2588")
    ws.doc.vocab = dataclasses.replace(vocab, eos_id=int(tokens[first_hole]))  # as if it wrote LLaDA's EOS there
    try:
        app.frame()
        app.frame()
        dim = app.canvas._texts["dim"].replace("\n", "")
        strings = vocab.strings()
        holes = [i for i, ch in enumerate(TEMPLATE) if ch == "\u2588"]
        # the end of text and the generated cells after it, dimmed; the template's fixed text is not
        assert dim.replace(" ", "") == "".join(strings[int(tokens[i])] for i in holes).replace(" ", "")
        grab(app, shots / "prompt-padding-dimmed.png")
    finally:
        ws.doc.vocab = vocab
