"""The File menu's Open / Save / Export: the window scenario in a fresh process, and path handling.

Dear PyGui 2.3.1 cannot host a second App in one process: after `destroy_context`, the
next context segfaults in its first `render_dearpygui_frame` once it has a theme, a
font or a plot (reproduced here with a 20-line script; upstream #2662 is the same
teardown gap). test_gui_app.py owns the one App of the pytest process, so the file
scenario (gui_files_scenario.py, one App of its own) runs in a child pytest.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dpgviz.gui.files import chosen_path

SCENARIO = Path(__file__).with_name("gui_files_scenario.py")


@pytest.mark.gui
@pytest.mark.skipif(not os.environ.get("DISPLAY"), reason="needs an X display (run under xvfb-run -a)")
def test_file_menu_scenario_in_its_own_process(tmp_path: Path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "--basetemp",
        str(tmp_path / "t"),
        str(SCENARIO),
    ]
    proc = subprocess.run(cmd, cwd=SCENARIO.parent.parent, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert " passed" in proc.stdout and "skipped" not in proc.stdout, proc.stdout[-2000:]


def test_chosen_path_adds_the_suffix_and_drops_the_wildcard() -> None:
    assert chosen_path({"file_path_name": "/x/run.*"}, ".dpgviz") == Path("/x/run.dpgviz")
    assert chosen_path({"file_path_name": "/x/a.png"}, ".png") == Path("/x/a.png")
    assert chosen_path({"file_path_name": "/x/a.*", "selections": {"b.dpgviz": "/y/b.dpgviz"}}) == Path("/y/b.dpgviz")
    assert chosen_path(None) is None
