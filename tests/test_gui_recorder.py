"""The window and dpgviz.Recorder (Xvfb): a recorded LLaDA-style run opens like a session; a recorder
streams into a listening window while it draws; the window stops listening mid-run and the
recorder writes on; spawn=True starts a window that takes the stream.

Dear PyGui hosts one App per process (test_gui_files.py), so the scenario runs in a child pytest
(DPGVIZ_RECORDER_SCENARIO=1 runs the `test_scenario_*` steps in order, one App for all). Frames
are saved under DPGVIZ_SHOTS (default: the child's tmp folder) for a person to look at.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import pytest
from gui_frames import grab

ROOT = Path(__file__).resolve().parents[1]
HAS_DISPLAY = bool(os.environ.get("DISPLAY"))
IN_SCENARIO = os.environ.get("DPGVIZ_RECORDER_SCENARIO") == "1"

# A LLaDA-style run on the embedded Shakespeare model: examples/llada_generate.generate (semi-
# autoregressive blocks, low-confidence remasking) driving the model through a 3-line wrapper.
LLADA_RUN = """
import importlib.util, sys, torch, dpgviz
from dpgviz.engine.checkpoint import load_model
spec = importlib.util.spec_from_file_location("llada", sys.argv[2]); llada = importlib.util.module_from_spec(spec)
spec.loader.exec_module(llada)
m = load_model(None, device="cpu")
class Wrapped:
    def __call__(self, input_ids): return type("Out", (), {"logits": m.adapter.logits(input_ids)})()
prompt = torch.as_tensor(m.vocab.encode("ROMEO:\\n"))[None]
L = prompt.shape[1] + 128
with dpgviz.Recorder(list(m.vocab.itos), m.vocab.mask_id, L, path=sys.argv[1], model=m.name,
                     settings={"strategy": "llada", "steps": 32}) as rec:
    llada.generate(Wrapped(), prompt, m.vocab.mask_id, rec, steps=32, gen_length=128, block_length=32, temperature=0.8)
"""

# A recorder streaming to argv[2] (HOST:PORT), argv[3] records, a pause between them; prints each log.
STREAM = """
import sys, time, numpy as np, dpgviz
vocab = [*"abcdefghijklmnopqrstuvwxyz", " ", "."]; M = len(vocab); L = 96; n = int(sys.argv[3])
rng = np.random.default_rng(0); x = np.full(L, M); order = rng.permutation(L)
connect = None if sys.argv[2] == "spawn" else sys.argv[2]
with dpgviz.Recorder(vocab, M, L, path=sys.argv[1], model="stream", connect=connect, spawn=connect is None) as rec:
    print("streaming" if rec.is_streaming else "alone", rec._stream.proc.pid if connect is None else 0, flush=True)
    rec.log(x)
    for i in range(n - 1):
        logits = 3 * rng.normal(size=(L, M))
        fill = order[i * L // (n - 1):(i + 1) * L // (n - 1)]
        x[fill] = logits[fill].argmax(-1)
        rec.log(x, logits=logits)
        print("logged", i + 2, rec.is_streaming, flush=True)
        time.sleep(float(sys.argv[4]))
"""


@pytest.mark.gui
@pytest.mark.skipif(not HAS_DISPLAY or IN_SCENARIO, reason="needs an X display (run under xvfb-run -a)")
def test_recorder_window_in_its_own_process(tmp_path: Path) -> None:
    env = {**os.environ, "DPGVIZ_RECORDER_SCENARIO": "1"}
    env.setdefault("DPGVIZ_SHOTS", str(tmp_path / "shots"))
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--basetemp", str(tmp_path / "t"),
           "-k", "scenario_", str(Path(__file__))]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=400, env=env)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert " passed" in proc.stdout and "skipped" not in proc.stdout, proc.stdout[-2000:]


scenario = pytest.mark.skipif(not (HAS_DISPLAY and IN_SCENARIO), reason="runs in the child process only")


class State:
    folder: Path
    children: ClassVar[list[subprocess.Popen]] = []


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory):
    State.folder = tmp_path_factory.mktemp("recorder")
    yield State
    for child in State.children:
        if child.poll() is None:
            child.kill()
            child.wait(10)


@pytest.fixture(scope="module")
def app(state):
    from dpgviz.gui.app import App

    app = App(autoload=False, width=1500, height=940).build()
    app.frame()
    yield app
    app.close()


def run_until(app, condition: Callable[[], bool], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out; status: {app.status.text!r}"
        assert app.frame(), "the window closed"
    app.frame()


def stream(state, out: Path, where: str, n: int, pause_s: float) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", STREAM, str(out), where, str(n), str(pause_s)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    state.children.append(proc)
    return proc


@scenario
def test_scenario_1_a_recorded_llada_run_opens_like_a_session(app, state, shots: Path) -> None:
    path = state.folder / "llada.dpgviz"
    subprocess.run([sys.executable, "-c", LLADA_RUN, str(path), str(ROOT / "examples" / "llada_generate.py")],
                   cwd=ROOT, check=True, timeout=300)
    ws = app.workspace
    assert ws.files.open(path)
    run_until(app, lambda: not ws.files.is_checking)
    assert ws.n_records() == 33 and ws.store.kind(int(ws.rows()[-1])) == "final"
    ws.view.record, ws.view.follow_live = 13, False  # mid-run: a block done, one filling, the rest masked
    app.set_color_mode("confidence")
    frame = grab(app, shots / "recorded-llada-run.png")
    assert frame.std() > 10  # a drawn canvas, not a blank window
    info = ws.inspect.token_info(10)  # a position of the first block, filled by now: the tooltip's numbers
    assert info is not None and info.p is not None and info.candidates


@scenario
def test_scenario_2_a_recorder_streams_into_the_listening_window_while_it_draws(app, state, shots: Path) -> None:
    import dearpygui.dearpygui as dpg

    ws = app.workspace
    dpg.get_item_callback(app.listen.menu_item)()  # File > Listen for recorded runs...
    run_until(app, lambda: app.listen.is_shown)
    assert app.listen.listen("127.0.0.1:0")
    address = ws.live.address
    assert "Listening on" in dpg.get_value(app.listen.message)
    dpg.hide_item(app.listen.window)
    proc = stream(state, state.folder / "live.dpgviz", address, 60, 0.05)
    assert proc.stdout.readline().split()[0] == "streaming"
    seen: set[int] = set()
    frames_before = app.frame_count

    def arrived() -> bool:
        if ws.store is not None and ws.view.branch in ws.store.branches:
            seen.add(ws.n_records())
        return ws.store is not None and ws.n_records() == 60

    run_until(app, arrived)
    assert app.frame_count - frames_before > 10
    partial = {n for n in seen if 0 < n < 60}
    assert len(partial) >= 5, sorted(seen)  # records came in while the window kept drawing
    assert ws.view.record == 59  # it followed the run
    proc.wait(30)
    run_until(app, lambda: not ws.live.is_live)
    grab(app, shots / "live-stream.png")


@scenario
def test_scenario_3_the_window_stops_listening_and_the_recorder_writes_on(app, state) -> None:
    from dpgviz.store.session_open import open_session

    ws = app.workspace
    out = state.folder / "outlived.dpgviz"
    proc = stream(state, out, ws.live.address, 40, 0.05)
    assert proc.stdout.readline().split()[0] == "streaming"
    run_until(app, lambda: ws.store is not None and ws.store.branches and ws.n_records() >= 10)
    ws.live.close()  # the viewer goes away mid-run: Bye to the recorder
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert err.count("dpgviz.Recorder:") == 1 and "logging to" in err, err  # one warning
    with open_session(out) as session:
        assert len(session.store) == 40 and session.store.kind(int(session.rows()[-1])) == "final"


@scenario
def test_scenario_4_spawn_starts_a_window_that_takes_the_stream(state) -> None:
    proc = stream(state, state.folder / "spawned.dpgviz", "spawn", 12, 0.0)
    first = proc.stdout.readline().split()
    assert first[0] == "streaming", proc.stderr.read()[-2000:]
    window_pid = int(first[1])
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "dpgviz.Recorder:" not in err, err  # no warning: the window took it all
    assert out.strip().splitlines()[-1] == "logged 12 True"
    os.kill(window_pid, signal.SIGTERM)


@pytest.mark.parametrize(
    ("settings", "note"),
    [
        ({"length": 48}, ""),  # a Recorder's run with no settings passed: nothing made up
        ({"length": 48, "steps": 64, "seed": 0}, " (seed 0, 64 steps)"),
        ({"seed": 3, "strategy": "threshold", "steps": 20}, " (seed 3, threshold)"),  # it ends when it decides
        ({"strategy": "llada"}, " (llada)"),
    ],
)
def test_the_timeline_caption_says_only_what_the_settings_say(settings: dict, note: str) -> None:
    from dpgviz.gui.timeline import settings_note

    assert settings_note(settings) == note
