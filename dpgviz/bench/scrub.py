"""`dpgviz bench scrub`: the frame path while scrubbing a long run, in every colour mode.

    xvfb-run -a -s "-screen 0 1600x1000x24" python main.py bench scrub --tokens 65536 --steps 500 --json

Builds a realistic synthetic run in the step store (bench.synthetic: tokens and masks on
the sampler's schedule, confidences, entropies, top-8 candidates), opens the real window
and scrubs one step per frame through every step, then through random steps, in each
colour mode (state, confidence, score, entropy) and in text mode. Per frame it times:

    python_ms       App.update: callbacks, workspace, every panel (the Python half)
    render_ms       render_dearpygui_frame (Mesa's software OpenGL under Xvfb)
    frame_ms        the two together
    idle_render_ms  render of the same window when nothing changes (the floor to compare with)

each as {"median", "p95", "max"}, plus python_ms_by_mode, bytes_per_token_step of the
store and peak_rss_mb of the process. Prints numbers; asserts nothing. Needs a display.
"""

from __future__ import annotations

import json
import resource
import sys
import time

import numpy as np

from dpgviz.bench.synthetic import synthetic_store, synthetic_vocab
from dpgviz.core import color_modes

# The modes a step switch reads from the record alone (core.color_modes: not derived from the history).
MODES = tuple(m.name for m in color_modes.modes() if not m.derived)


def stats(samples_s: list[float]) -> dict[str, float]:
    """{"median", "p95", "max"} of durations in seconds, as milliseconds."""
    ms = np.asarray(samples_s, dtype=np.float64) * 1e3
    if not len(ms):
        return {"median": float("nan"), "p95": float("nan"), "max": float("nan")}
    return {"median": round(float(np.median(ms)), 3), "p95": round(float(np.percentile(ms, 95)), 3),
            "max": round(float(ms.max()), 3)}


def bytes_per_token_step(store: object) -> float:
    """The store's own figure when it has one, else its arrays' bytes over records x tokens."""
    value = getattr(store, "bytes_per_token_step", None)
    if value is not None:
        return float(value() if callable(value) else value)
    return store.nbytes / max(1, len(store) * store.layout.seq_len)  # type: ignore[attr-defined]


def measure(tokens: int, steps: int, seed: int = 0) -> dict:
    """Scrub a synthetic TOKENS x STEPS run in the real window; returns the numbers."""
    import dearpygui.dearpygui as dpg

    from dpgviz.gui.app import App  # dearpygui: only when measuring

    vocab = synthetic_vocab()
    t0 = time.perf_counter()
    store = synthetic_store(tokens, steps, vocab=vocab)
    build_s = time.perf_counter() - t0
    app = App(autoload=False).build()
    python, render, frame, idle = [], [], [], []
    by_mode: dict[str, list[float]] = {}
    rng = np.random.default_rng(seed)
    try:
        ws, view = app.workspace, app.view
        ws.doc.show_store(store, vocab)
        n = ws.n_records()
        for _ in range(5):  # settle the layout, the fit, the fonts
            app.frame()
        for _ in range(30):  # the floor: nothing changes
            t = time.perf_counter()
            dpg.render_dearpygui_frame()
            idle.append(time.perf_counter() - t)
        for mode, text_mode in [(m, False) for m in MODES] + [("state", True)]:
            key = "text" if text_mode else mode
            view.color_mode, view.text_mode = mode, text_mode
            app.frame()
            order = list(range(n)) + rng.integers(0, n, size=min(n, 200)).tolist()  # every step, then at random
            samples = by_mode.setdefault(key, [])
            for record in order:
                view.select(record, n)
                t = time.perf_counter()
                app.update()
                t1 = time.perf_counter()
                dpg.render_dearpygui_frame()
                t2 = time.perf_counter()
                python.append(t1 - t)
                render.append(t2 - t1)
                frame.append(t2 - t)
                samples.append(t1 - t)
        view.color_mode, view.text_mode = "state", False
        cells = f"{app.canvas.cols} cols x {app.canvas.view_rows} rows"
    finally:
        app.close()
    return {
        "tokens": tokens,
        "steps": steps,
        "records": n,
        "build_s": round(build_s, 3),
        "canvas_cells": cells,
        "python_ms": stats(python),
        "render_ms": stats(render),
        "frame_ms": stats(frame),
        "idle_render_ms": stats(idle),
        "python_ms_by_mode": {k: stats(v) for k, v in by_mode.items()},
        "bytes_per_token_step": round(bytes_per_token_step(store), 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main(tokens: int = 1024, steps: int = 100, as_json: bool = False) -> dict:
    results = measure(tokens, steps)
    if as_json:
        sys.stdout.write(json.dumps(results) + "\n")
    else:
        for key, value in results.items():
            sys.stdout.write(f"{key:24s} {value}\n")
    return results
