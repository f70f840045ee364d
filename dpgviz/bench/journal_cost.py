"""`dpgviz bench journal`: what the recovery journal costs the frame loop.

    xvfb-run -a -s "-screen 0 1600x1000x24" python main.py bench journal --rounds 3 [--length 1024] [--json]

The journal (store.journal, driven by app.recovery) is meant to cost no frame time: the
frame thread only appends to a deque in `Recovery.sync`, and a thread of its own writes.
This measures that claim on a real run: the real window, the default embedded model in
its worker on the CPU, one LENGTH x STEPS run, once with the journal and once without.

Dear PyGui allows one context per process, so each measurement is a fresh child
(`python -c CHILD journal|none LENGTH STEPS`) with its own cache folder. The modes
alternate, journal-none then none-journal (ABBA), ROUNDS times each, so drift and noise
fall on both alike. In the child, per frame of the run (from `Runs.start` to the frame
that sees it end):

    update_ms  App.update: callbacks, polling the worker into the store, panels, and
               Recovery.sync (the Python half of a frame; the render is Mesa's software
               GL floor here and is not what differs)
    sync_ms    Recovery.sync alone (journal mode only; the end-of-run flush included)

each as median, p90, p99 and max; plus frames, records, run_s (first to last record seen
by the frame loop) and, for the journal, its size once flushed and whether
`find_recovery` counts every record in it. The table ends with the medians across rounds
and the ratio journal / none of the median update_ms. Prints numbers; asserts nothing.

This module imports neither dearpygui nor torch: the child's script (CHILD) imports the
window, as bench.startup's does, and hands `App` to `child` (tests/test_layering.py keeps
the importers of gui.app to the entry points). The model runs in the app's worker
process, as in the app.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CHILD", "child", "main", "measure"]

ROOT = Path(__file__).resolve().parents[2]  # the checkout: the child runs here, so `dpgviz` imports
MODES = ("journal", "none")
CHILD = (
    "import sys\n"
    "from dpgviz.bench.journal_cost import child\n"
    "from dpgviz.gui.app import App\n"
    "sys.exit(child(App, sys.argv[1:]))\n"
)
MARK = "JOURNAL-COST "  # the child's result line starts with this (anything else on stdout is ignored)
LOAD_TIMEOUT_S = 60.0  # the default model loads in 2-3 s (NOTES-dpg.md); seconds more under load
RUN_TIMEOUT_S = 120.0  # a 1,024 x 20 run takes about 4 s on the idle 2-core CPU, 12-16 s beside other work
CHILD_TIMEOUT_S = 240.0  # start, load, run, close
WAIT_S = 10.0  # for the writer to finish what was handed over


def stats_ms(samples_ms: list[float]) -> dict[str, float]:
    """{"median", "p90", "p99", "max"} of millisecond samples (NaN when none)."""
    ms = np.asarray(samples_ms, dtype=np.float64)
    if not len(ms):
        return dict.fromkeys(("median", "p90", "p99", "max"), float("nan"))
    return {
        "median": round(float(np.median(ms)), 3),
        "p90": round(float(np.percentile(ms, 90)), 3),
        "p99": round(float(np.percentile(ms, 99)), 3),
        "max": round(float(ms.max()), 3),
    }


class _Timed:
    """Wraps a bound method; keeps the milliseconds of each call."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.ms: list[float] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.ms.append((time.perf_counter() - t0) * 1e3)


# -- the child: one measurement in a fresh process ---------------------------------------------
def measure(app_class: type, is_journal: bool, length: int, steps: int) -> dict:
    """One run in the real window (`app_class`: gui.app.App), with or without the journal; the numbers."""
    cache = Path(tempfile.mkdtemp(prefix="dpgviz-journal-bench-"))
    os.environ["DPGVIZ_CACHE_DIR"] = str(cache)  # the log and any journal go here, not to the user's cache
    from dpgviz.core.discovery import default_model_entry
    from dpgviz.core.settings import GenerationSettings
    from dpgviz.store.journal_reader import find_recovery

    path = cache / "recovery.dpgjournal" if is_journal else None
    app = app_class(device="cpu", autoload=False, journal=path).build()
    try:
        ws = app.workspace
        app.frame()
        ws.runs.load_model(default_model_entry())
        deadline = time.monotonic() + LOAD_TIMEOUT_S
        while ws.model_info is None:
            if time.monotonic() > deadline or not app.frame():
                raise RuntimeError(f"the default model did not load within {LOAD_TIMEOUT_S:.0f} s")

        update = app.update = _Timed(app.update)  # App.frame calls self.update: the instance attribute wins
        sync = None
        if ws.recovery is not None:
            sync = ws.recovery.sync = _Timed(ws.recovery.sync)  # Workspace.update and run_ended call it so
        if not ws.runs.start(GenerationSettings(length=length, steps=steps, seed=0)):
            raise RuntimeError("the run did not start")
        update.ms.clear()
        if sync is not None:
            sync.ms.clear()
        sync_ms: list[float] = []
        n_seen, first_t, last_t = 0, None, None
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while True:
            n_sync = len(sync.ms) if sync is not None else 0
            if not app.frame():
                raise RuntimeError("the window closed during the run")
            if sync is not None:
                sync_ms.append(sum(sync.ms[n_sync:]))
            n = len(ws.store) if ws.store is not None else 0
            if n != n_seen:
                now = time.perf_counter()
                first_t = now if first_t is None else first_t
                last_t, n_seen = now, n
            if not ws.is_running:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the run did not end within {RUN_TIMEOUT_S:.0f} s")

        result = {
            "mode": "journal" if is_journal else "none",
            "frames": len(update.ms),
            "records": n_seen,
            "run_s": round((last_t - first_t) if first_t is not None else 0.0, 3),
            "update_ms": stats_ms(update.ms),
            "sync_ms": stats_ms(sync_ms) if sync is not None else None,
            "journal_bytes": None,
            "recovered_records": None,
            "is_complete": None,
        }
        if ws.recovery is not None:
            journal = ws.recovery.journal
            journal.flush()
            if not journal.wait(WAIT_S):
                raise RuntimeError(f"the journal writer did not finish within {WAIT_S:.0f} s")
            info = find_recovery(journal.path)
            recovered = info.n_records if info is not None else 0
            result.update(
                journal_bytes=journal.path.stat().st_size,
                recovered_records=recovered,
                is_complete=recovered == n_seen and journal.error is None,
            )
        return result
    finally:
        app.close()  # a normal close: deletes the journal
        shutil.rmtree(cache, ignore_errors=True)


def child(app_class: type, argv: list[str]) -> int:
    """The child's entry (CHILD): argv is MODE LENGTH STEPS; prints one MARK line of JSON."""
    mode, length, steps = argv
    assert mode in MODES, mode
    result = measure(app_class, mode == "journal", int(length), int(steps))
    sys.stdout.write(MARK + json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


# -- the parent: alternate the modes in fresh processes ---------------------------------------
def run_child(mode: str, length: int, steps: int) -> dict:
    """One measurement in a fresh interpreter; its result dict."""
    cmd = [sys.executable, "-c", CHILD, mode, str(length), str(steps)]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)
    lines = [line for line in out.stdout.splitlines() if line.startswith(MARK)]
    if out.returncode != 0 or not lines:
        tail = out.stderr.strip().splitlines()[-3:] or [f"exit status {out.returncode}"]
        raise RuntimeError(f"the {mode} child failed: " + " | ".join(tail))
    return json.loads(lines[-1][len(MARK) :])


def summarize(results: list[dict]) -> dict:
    """Per mode, the medians across rounds; and journal / none of the median update_ms."""
    summary: dict[str, Any] = {}
    for mode in MODES:
        rows = [r for r in results if r["mode"] == mode]
        if not rows:
            continue
        med = {
            "frames": statistics.median(r["frames"] for r in rows),
            "records": statistics.median(r["records"] for r in rows),
            "run_s": round(statistics.median(r["run_s"] for r in rows), 3),
            "update_ms": {
                k: round(statistics.median(r["update_ms"][k] for r in rows), 3) for k in ("median", "p90", "p99", "max")
            },
        }
        if mode == "journal":
            med["sync_ms"] = {
                k: round(statistics.median(r["sync_ms"][k] for r in rows), 3) for k in ("median", "p90", "p99", "max")
            }
            med["journal_bytes"] = statistics.median(r["journal_bytes"] for r in rows)
            med["is_complete"] = all(r["is_complete"] for r in rows)
        summary[mode] = med
    if "journal" in summary and "none" in summary and summary["none"]["update_ms"]["median"] > 0:
        summary["update_median_ratio"] = round(
            summary["journal"]["update_ms"]["median"] / summary["none"]["update_ms"]["median"], 3
        )
    return summary


def _row(mode: str, label: str, r: dict) -> str:
    u = r["update_ms"]
    s = r.get("sync_ms")
    sync = f"{s['median']:7.3f} {s['p99']:7.3f} {s['max']:7.3f}" if s else f"{'-':>7} {'-':>7} {'-':>7}"
    size = f"{r['journal_bytes'] / 1e6:8.2f}" if r.get("journal_bytes") is not None else f"{'-':>8}"
    complete = r.get("is_complete")
    ok = "-" if complete is None else ("yes" if complete else "NO")
    return (
        f"{mode:<8}{label:>6}{r['frames']:>7.0f}{r['records']:>8.0f}{r['run_s']:>7.2f}  "
        f"{u['median']:7.2f} {u['p90']:7.2f} {u['p99']:7.2f} {u['max']:7.2f}  {sync}  {size}  {ok:>4}"
    )


def format_table(results: list[dict], summary: dict, length: int, steps: int) -> str:
    head = (
        f"recovery journal cost, {length} x {steps} run, default model on CPU; "
        "update_ms = App.update per frame, sync_ms = Recovery.sync per frame\n"
        f"{'mode':<8}{'round':>6}{'frames':>7}{'records':>8}{'run s':>7}  "
        f"{'upd med':>7} {'upd p90':>7} {'upd p99':>7} {'upd max':>7}  "
        f"{'syn med':>7} {'syn p99':>7} {'syn max':>7}  {'MB':>8}  {'all?':>4}"
    )
    lines = [head]
    for mode in MODES:
        for r in results:
            if r["mode"] == mode:
                lines.append(_row(mode, str(r["round"]), r))
    for mode in MODES:
        if mode in summary:
            lines.append(_row(mode, "median", summary[mode]))
    if "update_median_ratio" in summary:
        lines.append(f"journal / none, median update ms: {summary['update_median_ratio']:.3f}")
    return "\n".join(lines) + "\n"


def main(rounds: int = 3, length: int = 1024, steps: int = 20, as_json: bool = False) -> int:
    """ROUNDS measurements of each mode, alternating (ABBA), each in a fresh process; prints the table or JSON."""
    results = []
    for i in range(max(1, rounds)):
        for mode in MODES if i % 2 == 0 else MODES[::-1]:
            result = run_child(mode, length, steps)
            result["round"] = i + 1
            results.append(result)
    summary = summarize(results)
    if as_json:
        doc = {"length": length, "steps": steps, "rounds": rounds, "runs": results, "summary": summary}
        sys.stdout.write(json.dumps(doc) + "\n")
    else:
        sys.stdout.write(format_table(results, summary, length, steps))
    return 0
