"""The window benchmarks run in CI at a small size and print the agreed JSON forms.

They run in subprocesses (a Dear PyGui context per process; test_gui_app.py owns this
one's). Numbers are printed, not asserted: only the forms and that they are numbers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [
    pytest.mark.gui,
    pytest.mark.skipif(not os.environ.get("DISPLAY"), reason="needs an X display (run under xvfb-run -a)"),
]
STATS = {"median", "p95", "max"}


def bench(*args: str) -> dict:
    out = subprocess.run([sys.executable, str(ROOT / "main.py"), "bench", *args, "--json"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_bench_scrub_small_prints_its_form() -> None:
    doc = bench("scrub", "--tokens", "512", "--steps", "4")
    for key in ("python_ms", "render_ms", "frame_ms", "idle_render_ms"):
        assert set(doc[key]) == STATS and all(doc[key][s] >= 0 for s in STATS), key
    assert set(doc["python_ms_by_mode"]) == {"state", "confidence", "score", "entropy", "text"}
    assert all(set(v) == STATS for v in doc["python_ms_by_mode"].values())
    assert 0 < doc["bytes_per_token_step"] < 64 and doc["peak_rss_mb"] > 0
    assert doc["records"] == 9


def test_bench_startup_prints_the_first_frame_time() -> None:
    doc = bench("startup", "--launches", "1")
    assert 0 < doc["first_frame_s"] < 60 and len(doc["launches_s"]) == 1
