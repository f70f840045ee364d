"""The window on a worker over the network (Xvfb, 127.0.0.1): connect, run, the server killed mid-run,
reconnect to a new server, run again.

Dear PyGui hosts one App per process (see test_gui_explore.py), so the scenario runs in a
child pytest started by `test_remote_window_in_its_own_process`; the child sees
DPGVIZ_REMOTE_SCENARIO=1 and runs the `test_scenario_*` steps in order, one App for all.
Frames are saved under DPGVIZ_SHOTS (default: the child's tmp folder) for a person to look at.
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

sys.path.insert(0, str(Path(__file__).parent))

HAS_DISPLAY = bool(os.environ.get("DISPLAY"))
IN_SCENARIO = os.environ.get("DPGVIZ_REMOTE_SCENARIO") == "1"


@pytest.mark.gui
@pytest.mark.skipif(not HAS_DISPLAY or IN_SCENARIO, reason="needs an X display (run under xvfb-run -a)")
def test_remote_window_in_its_own_process(tmp_path: Path) -> None:
    env = {**os.environ, "DPGVIZ_REMOTE_SCENARIO": "1"}
    env.setdefault("DPGVIZ_SHOTS", str(tmp_path / "shots"))
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--basetemp", str(tmp_path / "t"),
           "-k", "scenario_", str(Path(__file__))]
    proc = subprocess.run(cmd, cwd=Path(__file__).parent.parent, capture_output=True, text=True, timeout=400, env=env)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert " passed" in proc.stdout and "skipped" not in proc.stdout, proc.stdout[-2000:]


scenario = pytest.mark.skipif(not (HAS_DISPLAY and IN_SCENARIO), reason="runs in the child process only")


class State:
    """What the scenario's steps hand on to each other."""

    folder: Path
    tiny: Path
    servers: ClassVar[list] = []
    records_before_kill = 0


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory):
    from model_data import tiny_checkpoint

    State.folder = tmp_path_factory.mktemp("remote")
    State.tiny = tiny_checkpoint(State.folder / "models" / "tiny")
    yield State
    for server in State.servers:
        server.stop()


@pytest.fixture(scope="module")
def app(state):
    from dpgviz.gui.app import App

    app = App(autoload=False, width=1500, height=940).build()
    app.frame()
    yield app
    app.close()


def start_server(state) -> object:
    from remote_data import Server

    server = Server(state.folder, "--model", str(state.tiny))  # the same connection file each time
    state.servers.append(server)
    return server


def run_until(app, condition: Callable[[], bool], timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out; status: {app.status.text!r}"
        assert app.frame(), "the window closed"
    app.frame()


@scenario
def test_scenario_1_connect_and_run(app, state, shots: Path) -> None:
    import dearpygui.dearpygui as dpg

    from dpgviz.core.settings import GenerationSettings

    server = start_server(state)
    ws = app.workspace
    dpg.get_item_callback(app.connect.menu_item)()  # File > Connect to worker...
    run_until(app, lambda: app.connect.is_shown)
    assert app.connect.connect(str(server.path))
    run_until(app, lambda: ws.model_info is not None and ws.runs.remote is not None)
    assert ws.runs.remote == server.target.address
    assert f"@ {server.target.address}" in dpg.get_value(app.status.device)
    assert app.settings.remote == server.target.address and app.settings.entries[0].path == state.tiny
    assert "tiny" in dpg.get_value(app.settings.model_combo)
    app.settings.write(GenerationSettings(length=128, steps=2000))
    app.settings.start()
    run_until(app, lambda: ws.n_records() >= 30)
    assert ws.is_running
    grab(app, shots / "remote-connected-running.png")


@scenario
def test_scenario_2_the_server_killed_mid_run_keeps_the_records(app, state, shots: Path) -> None:
    import dearpygui.dearpygui as dpg

    ws = app.workspace
    server = state.servers[-1]
    os.kill(server.proc.pid, signal.SIGKILL)
    run_until(app, lambda: ws.runs.disconnected is not None, 20)
    state.records_before_kill = ws.n_records()
    assert state.records_before_kill >= 30 and not ws.is_running
    assert f"Disconnected from {server.target.address}" in app.status.text
    assert dpg.is_item_shown(app.status.restart_button)
    assert dpg.get_item_label(app.status.restart_button) == "Reconnect"
    info = dpg.get_value(app.settings.model_info)  # the model panel agrees with the status bar: no model now
    assert "no model loaded" in info and "cpu" not in info, info
    assert dpg.get_value(app.status.model) == "model: none"
    assert not dpg.get_item_configuration(app.edit_bar.restart_button)["enabled"]  # Reconnect first
    frame = grab(app, shots / "remote-disconnected.png")
    assert frame.shape[0] > 0
    for pid in server.children():  # its orphaned worker exits by itself; do not leave it to chance
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@scenario
def test_scenario_3_reconnect_to_a_new_server_and_run(app, state, shots: Path) -> None:
    import dearpygui.dearpygui as dpg

    from dpgviz.core.records import record_count
    from dpgviz.core.settings import GenerationSettings

    ws = app.workspace
    server = start_server(state)  # a new port and key in the same connection file
    assert ws.n_records() == state.records_before_kill
    dpg.get_item_callback(app.status.restart_button)()  # Reconnect
    run_until(app, lambda: ws.model_info is not None)
    assert ws.runs.remote == server.target.address and ws.runs.restart_label() is None
    run_until(app, lambda: not dpg.is_item_shown(app.status.restart_button))
    app.settings.write(GenerationSettings(length=128, steps=4, seed=5))
    app.settings.start()
    run_until(app, lambda: not ws.is_running)
    branch = ws.view.branch
    assert len(ws.store.rows(branch)) == record_count(4)
    assert ws.store.kind(int(ws.store.rows(branch)[-1])) == "final"
    grab(app, shots / "remote-reconnected.png")
