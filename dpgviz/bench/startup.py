"""`dpgviz bench startup`: seconds from process start to the app's first rendered frame.

    xvfb-run -a -s "-screen 0 1600x1000x24" python main.py bench startup --json

Launches the app the way `python main.py` does (the CLI package, then the window) in
fresh interpreters, several times, and reports the median and every launch. The child
prints the wall-clock time just after its first frame; the parent subtracts the time it
started the process, so interpreter start, imports, fonts, theme and panels all count.
The worker and the model load start after the first frame in the real app, so they are
left out here (no model is loaded). Needs a display.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

CHILD = (
    "import time\n"
    "import dpgviz.cli\n"  # what main.py imports first
    "from dpgviz.gui.app import App\n"
    "app = App(autoload=False).build()\n"
    "app.frame()\n"
    "print(time.time(), flush=True)\n"
    "app.close()\n"
)


def first_frame_seconds() -> float:
    """One launch: process start -> first frame rendered."""
    t0 = time.time()
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, env=dict(os.environ))
    if out.returncode != 0:
        tail = out.stderr.strip().splitlines()[-1:] or [f"exit status {out.returncode}"]
        raise RuntimeError(f"the app failed to start: {tail[0]}")
    return float(out.stdout.strip().splitlines()[-1]) - t0


def main(launches: int = 5, as_json: bool = False) -> dict:
    times = [first_frame_seconds() for _ in range(max(1, launches))]
    results = {"first_frame_s": round(statistics.median(times), 3), "launches_s": [round(t, 3) for t in times]}
    if as_json:
        sys.stdout.write(json.dumps(results) + "\n")
    else:
        sys.stdout.write(f"first frame: median {results['first_frame_s']} s over {len(times)} launches "
                         f"({', '.join(f'{t:.3f}' for t in times)})\n")
    return results
