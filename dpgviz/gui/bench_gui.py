"""Frame-time benchmark of the app: time to first frame, idle frames, scrubbing, step switches.

    xvfb-run -a -s "-screen 0 1600x1000x24" python -m dpgviz.gui.bench_gui
    python -m dpgviz.gui.bench_gui --tokens 1024 --steps 200 --frames 300 --json

Numbers printed (medians):
  first_frame_s          `python` start -> first frame rendered, App with no model (subprocess)
  empty_frame_ms         frame() of a window with nothing to show
  scrub_frame_ms         frame() while the record changes every frame (TOKENS x STEPS run)
  switch_py_ms[N]        Python time of the canvas refresh per step switch at N tokens
  idle_view_frame_ms     frame() showing a run without changes (nothing is redrawn)
  idle_view_py_ms        the Python half of such a frame (App.update: callbacks, poll, panels)

The records are synthetic (`synthetic_store`: the sampler's record shapes and flags from
numpy random draws), so no model or torch is needed. Under Xvfb the renderer is Mesa's
software OpenGL; compare frame times with the empty window's, not with a real GPU's.
Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import time

import numpy as np

from dpgviz.core.records import RecordLayout, step_flags
from dpgviz.core.schedule import target_masks
from dpgviz.core.vocab import Vocabulary
from dpgviz.store.step_store import StepStore

log = logging.getLogger(__name__)

SHAKESPEARE_CHARS = "\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"  # the default model's 65


def synthetic_vocab() -> Vocabulary:
    return Vocabulary(itos=tuple(SHAKESPEARE_CHARS))


def synthetic_store(seq_len: int = 1024, steps: int = 200, seed: int = 0, vocab: Vocabulary | None = None) -> StepStore:
    """A store holding one run of the sampler's record sequence, filled with random draws.

    Same kinds, iterations, mask counts (core.schedule) and flags as a real run, so the
    canvas and timeline do the same work; the tokens are noise.
    """
    vocab = vocab or synthetic_vocab()
    rng = np.random.default_rng(seed)
    layout = RecordLayout(seq_len=seq_len, top_k=8, n_ids=vocab.n_ids)
    store = StepStore(layout, capacity=2 * steps + 1)
    branch = store.new_branch({"steps": steps, "length": seq_len, "seed": seed}, label="synthetic").id
    mask_id = vocab.mask_id
    tokens = np.full(seq_len, mask_id, np.int64)
    prev: np.ndarray | None = None

    def emit(kind: str, iteration: int, target: int, conf: np.ndarray | None, score: np.ndarray | None) -> None:
        nonlocal prev
        rec = layout.empty()
        rec.tokens[:] = tokens
        rec.flags[:] = step_flags(prev, tokens, mask_id, None)
        prev = tokens.copy()
        if conf is not None:
            rec.confidence[:] = np.where(tokens == mask_id, np.nan, conf)
            rec.entropy[:] = rng.random(seq_len) * np.log(vocab.size)
        if score is not None:
            rec.score[:] = score
        rec.iteration, rec.kind, rec.target_masks = iteration, kind, target
        rec.n_masked = int((tokens == mask_id).sum())
        store.append_record(rec, branch)

    emit("initial", 0, seq_len, None, None)
    for it in range(steps):
        is_masked = tokens == mask_id
        tokens = np.where(is_masked, rng.integers(0, vocab.size, seq_len), tokens)
        conf = rng.random(seq_len).astype(np.float32)
        target = target_masks(seq_len, it, steps, 0.99, 0.15)
        emit("prediction", it, target, conf, None)
        if it == steps - 1:
            break
        score = rng.random(seq_len).astype(np.float32)
        n_remask = max(0, target - int((tokens == mask_id).sum()))
        chosen = np.argsort(-score)[:n_remask]
        tokens = tokens.copy()
        tokens[chosen] = mask_id
        emit("remask", it, target, conf, score)
    emit("final", steps - 1, 0, conf, None)
    return store


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
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=dict(os.environ))
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
        app.show_store(store, list(vocab.itos), vocab.n_ids)
        n = app.n_records()
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
            app.show_store(store, list(vocab.itos), vocab.n_ids)
            n = app.n_records()
            for _ in range(3):
                app.frame()
            for mode_key, text_mode in (("state", False), ("confidence", False), ("state", True)):
                app.view.color_mode, app.view.text_mode = mode_key, text_mode
                app.frame()
                samples = []
                for i in range(min(frames, 200)):
                    app.view.select(i % n, n)
                    t = time.perf_counter()
                    app.canvas.refresh(app.store, app.view)
                    samples.append(time.perf_counter() - t)
                    app.frame()
                name = f"switch_py_ms[{size}{',' + mode_key if mode_key != 'state' else ''}{',text' if text_mode else ''}]"
                results[name] = _median_ms(samples)
            app.view.color_mode, app.view.text_mode = "state", False
        results["canvas_cells"] = f"{app.canvas.cols} cols x {app.canvas.view_rows} rows"
    finally:
        app.close()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--switch-sizes", default="4096,65536", help="token counts for the step-switch timing")
    parser.add_argument("--no-first-frame", action="store_true", help="skip the subprocess start-up timing")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    results = {}
    if not args.no_first_frame:
        results["first_frame_s"] = first_frame_seconds()
    sizes = tuple(int(s) for s in args.switch_sizes.split(",") if s)
    results.update(measure(args.tokens, args.steps, args.frames, sizes))
    if args.json:
        sys.stdout.write(json.dumps(results, indent=2) + "\n")
    else:
        for key, value in results.items():
            sys.stdout.write(f"{key:32s} {value:.3f}\n" if isinstance(value, float) else f"{key:32s} {value}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
