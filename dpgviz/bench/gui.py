"""`dpgviz bench gui`: frame times of the app: first frame, idle frames, scrubbing, step switches.

    xvfb-run -a -s "-screen 0 1600x1000x24" python main.py bench gui
    python main.py bench gui --tokens 1024 --steps 200 --frames 300 --switch-sizes 4096,65536 --json

Numbers printed (medians):
  first_frame_s          `python` start -> first frame rendered, App with no model (subprocess)
  empty_frame_ms         frame() of a window with nothing to show
  scrub_frame_ms         frame() while the record changes every frame (TOKENS x STEPS run)
  switch_py_ms[N]        Python time of the canvas refresh per step switch at N tokens
  idle_view_frame_ms     frame() showing a run without changes (nothing is redrawn)
  idle_view_py_ms        the Python half of such a frame (App.update: callbacks, poll, panels)

The records are synthetic (bench.synthetic: the sampler's record shapes and flags from
numpy random draws), so no model or torch is needed. Under Xvfb the renderer is Mesa's
software OpenGL; compare frame times with the empty window's, not with a real GPU's.
Prints numbers; asserts nothing. Needs a display. Never imports torch; dearpygui (through
gui.app) only inside `measure`, so importing this module opens nothing.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import subprocess
import sys
import time

from dpgviz.bench.synthetic import synthetic_store, synthetic_vocab

log = logging.getLogger(__name__)

def _median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1e3 if samples else float("nan")


def first_frame_seconds() -> float:
    """Seconds from starting `python` to the first rendered frame of the app (no model)."""
    code = (
        "import time\n"
        "from dpgviz.gui.app import App\n"
        "app = App(autoload=False).build()\n"
        "app.frame()\n"
        "print(time.time(), flush=True)\n"
        "app.close()\n"
    )
    t0 = time.time()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ))
    if out.returncode != 0:
        tail = out.stderr.strip().splitlines()[-1:] or [f"exit status {out.returncode}"]
        raise RuntimeError(f"the first-frame subprocess failed: {tail[0]}")
    return float(out.stdout.strip().splitlines()[-1]) - t0


def measure(tokens: int, steps: int, frames: int, switch_sizes: tuple[int, ...]) -> dict:
    from dpgviz.gui.app import App  # dearpygui: imported only when measuring

    results: dict = {"tokens": tokens, "steps": steps, "frames": frames}
    app = App(autoload=False).build()
    try:
        for _ in range(10):  # settle layout and fonts
            app.frame()
        samples = []
        for _ in range(frames):
            t = time.perf_counter()
            app.frame()
            samples.append(time.perf_counter() - t)
        results["empty_frame_ms"] = _median_ms(samples)

        vocab = synthetic_vocab()
        store = synthetic_store(tokens, steps, vocab=vocab)
        app.workspace.doc.show_store(store, vocab)
        n = app.workspace.n_records()
        for _ in range(5):
            app.frame()
        samples, redraws = [], app.canvas.redraws
        for i in range(frames):
            app.view.select(i % n, n)
            t = time.perf_counter()
            app.frame()
            samples.append(time.perf_counter() - t)
        results["scrub_frame_ms"] = _median_ms(samples)
        results["scrub_redraws"] = app.canvas.redraws - redraws
        samples, redraws = [], app.canvas.redraws
        for _ in range(frames):
            t = time.perf_counter()
            app.frame()
            samples.append(time.perf_counter() - t)
        results["idle_view_frame_ms"] = _median_ms(samples)
        results["idle_view_redraws"] = app.canvas.redraws - redraws
        samples = []
        for _ in range(frames):
            t = time.perf_counter()
            app.update()
            samples.append(time.perf_counter() - t)
            app.frame()
        results["idle_view_py_ms"] = _median_ms(samples)

        for size in switch_sizes:
            store = synthetic_store(size, 20, vocab=vocab)
            app.workspace.doc.show_store(store, vocab)
            n = app.workspace.n_records()
            for _ in range(3):
                app.frame()
            for mode_key, text_mode in (("state", False), ("confidence", False), ("state", True)):
                app.view.color_mode, app.view.text_mode = mode_key, text_mode
                app.frame()
                samples = []
                for i in range(min(frames, 200)):
                    app.view.select(i % n, n)
                    t = time.perf_counter()
                    app.canvas.refresh(app.workspace.inspect.shown(), app.view)
                    samples.append(time.perf_counter() - t)
                    app.frame()
                name = f"switch_py_ms[{size}{',' + mode_key if mode_key != 'state' else ''}{',text' if text_mode else ''}]"
                results[name] = _median_ms(samples)
            app.view.color_mode, app.view.text_mode = "state", False
        results["canvas_cells"] = f"{app.canvas.cols} cols x {app.canvas.view_rows} rows"
    finally:
        app.close()
    return results


def main(
    tokens: int = 1024,
    steps: int = 200,
    frames: int = 300,
    switch_sizes: tuple[int, ...] = (4096, 65536),
    first_frame: bool = True,
    as_json: bool = False,
) -> dict:
    """Measure and print the frame times (indented JSON with `as_json`); returns them."""
    results: dict = {}
    if first_frame:
        results["first_frame_s"] = first_frame_seconds()
    results.update(measure(tokens, steps, frames, switch_sizes))
    if as_json:
        sys.stdout.write(json.dumps(results, indent=2) + "\n")
    else:
        for key, value in results.items():
            sys.stdout.write(f"{key:32s} {value:.3f}\n" if isinstance(value, float) else f"{key:32s} {value}\n")
    return results
