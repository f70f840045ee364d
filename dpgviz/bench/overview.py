"""`dpgviz bench overview`: the overview's cost in every registered colour mode, at full size.

    python main.py bench overview --json     # 1,001 records x 65,536 positions

Builds a synthetic run (bench.synthetic: the sampler's schedule of masks and remasks,
confidences, entropies, scores) and times `store.overview.overview_image` (sampling the
grid, the mode's `values(cells)`, colouring) at the overview panel's usual 1,200 x 1,000
pixels, for every mode of core.color_modes the overview draws; median of `--repeats`, in
milliseconds. Prints {"modes": {name: ms}, "fastest", "slowest", "ratio", ...}: a mode whose
values are not vectorised shows up as a ratio far above the others'. A mode the overview
cannot draw (its data lives only in the window) is listed under "not_drawn".

numpy only; asserts nothing.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

from dpgviz.bench.synthetic import synthetic_store, synthetic_vocab
from dpgviz.core import color_modes
from dpgviz.store.overview import overview_image


def measure(tokens: int, steps: int, width: int, height: int, repeats: int) -> dict:
    """Time the overview of a synthetic TOKENS x (2 * STEPS + 1) run in every drawable mode."""
    vocab = synthetic_vocab()
    t0 = time.perf_counter()
    store = synthetic_store(tokens, steps, vocab=vocab)
    build_s = time.perf_counter() - t0
    rows = store.history(next(iter(store.branches)))
    drawn = [m.name for m in color_modes.modes() if m.overview]
    times: dict[str, list[float]] = {name: [] for name in drawn}
    for _ in range(repeats):  # modes interleaved, so a slow moment of the machine spreads over all
        for name in drawn:
            t = time.perf_counter()
            overview_image(store, rows, name, vocab.size, width, height)
            times[name].append(time.perf_counter() - t)
    ms = {name: round(float(np.median(t)) * 1e3, 1) for name, t in times.items()}
    fastest, slowest = min(ms, key=ms.__getitem__), max(ms, key=ms.__getitem__)
    return {
        "modes": ms,
        "fastest": fastest,
        "slowest": slowest,
        "ratio": round(ms[slowest] / max(ms[fastest], 1e-3), 2),
        "records": len(rows),
        "positions": store.layout.total_len,
        "image_px": [width, height],
        "repeats": repeats,
        "build_s": round(build_s, 1),
        "not_drawn": [m.name for m in color_modes.modes() if not m.overview],
    }


def main(tokens: int = 65536, steps: int = 500, width: int = 1200, height: int = 1000, repeats: int = 3,
         as_json: bool = False) -> None:
    result = measure(tokens, steps, width, height, repeats)
    if as_json:
        json.dump(result, sys.stdout)
        sys.stdout.write("\n")
        return
    print(f"overview of {result['records']} records x {result['positions']} positions at {width} x {height} px "
          f"(median of {repeats}; run built in {result['build_s']} s)")
    for name, ms in result["modes"].items():
        print(f"  {name:14s} {ms:10.1f} ms")
    print(f"slowest {result['slowest']} / fastest {result['fastest']}: {result['ratio']}x")
