"""Benchmarks, all started one way: `python main.py bench NAME [flags]`.

    worker   bare forward vs in-process sampler vs worker + shared-memory ring (bench.worker; torch)
    sampler  per-iteration time of each strategy vs one bare forward pass (bench.sampler; torch)
    gui      frame times of the app on synthetic runs (bench.gui; dearpygui, needs a display)
    session  save / cold open / first touch of a large session file (bench.session; numpy)
    scrub    the frame path scrubbing a long run in every colour mode (bench.scrub; needs a display)
    startup  process start -> first rendered frame, median of launches (bench.startup; needs a display)
    soak     seeded random input on the real window on a private Xvfb (bench.soak; needs Xvfb, openbox, xdotool, wmctrl)
    journal  frame time of a real run with and without the recovery journal (bench.journal_cost; needs a display)
    transport  records/s through shared memory vs signed zmq over 127.0.0.1 (bench.transport; no model)
    record   Recorder.log with logits vs one forward pass of the default model (bench.record; torch)
    find     Find's re-search at 65,536 tokens vs a step switch, with and without a query (bench.find; display)
    overview the overview at 1,001 x 65,536 in every registered colour mode, slowest vs fastest (bench.overview; numpy)

`bench.synthetic` is the one generator of fake runs (numpy only), shared by the gui and
session benchmarks and by the tests.

This module only defines the argument parser and dispatches: importing it (the CLI does,
to build its parser) must not import torch, dearpygui or any benchmark module; each
benchmark's module, and what it needs, is imported when that benchmark runs. Benchmarks
print their result tables (or one JSON document with --json) to stdout.
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["NAMES", "add_parser", "main"]

NAMES = ("worker", "sampler", "gui", "session", "scrub", "startup", "soak", "journal", "transport", "find", "record",
         "overview")


def _sizes(text: str) -> tuple[int, ...]:
    """'4096,65536' -> (4096, 65536), for --switch-sizes."""
    try:
        return tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated token counts, got {text!r}") from exc


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add `bench` and its subcommands to the CLI's subparsers; returns the `bench` parser."""
    from dpgviz.cli.common import add_model_args  # here, not at import: dpgviz.cli imports this package

    p = sub.add_parser("bench", help="benchmarks")
    bench = p.add_subparsers(dest="bench", required=True)
    b = bench.add_parser("worker", help="bare forward vs in-process sampler vs worker+transport")
    add_model_args(b)
    b.add_argument("--length", type=int, default=256)
    b.add_argument("--steps", type=int, default=20)
    b.add_argument("--json", action="store_true")
    b = bench.add_parser("sampler", help="per-iteration time of each strategy vs one bare forward pass")
    add_model_args(b)
    b.add_argument("--length", type=int, default=256)
    b.add_argument("--steps", type=int, default=10)
    b.add_argument("--rounds", type=int, default=3)
    b.add_argument("--json", action="store_true")
    b.add_argument("--cache", choices=("none", "prefix"), default="none",
                   help="prefix: compare block runs with and without the prefix KV cache (time, KL, word validity)")
    b.add_argument("--cache-refresh", type=int, default=0, metavar="K", help="with --cache prefix (0 = once per block)")
    b.add_argument("--block-length", type=int, default=256, help="with --cache prefix")
    b.add_argument("--strategy", default="llada", help="with --cache prefix")
    b.add_argument("--runs", type=int, default=10, help="with --cache prefix: seeded runs each way")
    b.add_argument("--words", default=None, help="with --cache prefix: corpus for word validity "
                   "(default ../shared/data/tinyshakespeare.txt beside the repository)")
    b = bench.add_parser("gui", help="frame times of the app on a synthetic run (needs a display)")
    b.add_argument("--tokens", type=int, default=1024, help="tokens of the scrubbed run")
    b.add_argument("--steps", type=int, default=200, help="iterations of the scrubbed run")
    b.add_argument("--frames", type=int, default=300, help="frames timed per measurement")
    b.add_argument("--switch-sizes", type=_sizes, default=(4096, 65536), help="token counts for the step-switch timing")
    b.add_argument("--no-first-frame", action="store_true", help="skip the subprocess start-up timing")
    b.add_argument("--json", action="store_true")
    b = bench.add_parser("session", help="save, cold open and first touch of a large session file")
    b.add_argument("--tokens", type=int, default=16384)
    b.add_argument("--records", type=int, default=1000, help="about this many records (a root run and one fork)")
    b.add_argument("--dir", default=None, help="where the session file is written (default: the temp folder)")
    b.add_argument("--keep", action="store_true", help="keep the session file")
    b.add_argument("--json", action="store_true")
    b = bench.add_parser("scrub", help="Python and render time per step switch on a long run (needs a display)")
    b.add_argument("--tokens", type=int, default=1024)
    b.add_argument("--steps", type=int, default=100)
    b.add_argument("--json", action="store_true")
    b = bench.add_parser("startup", help="seconds to the first rendered frame, median of launches (needs a display)")
    b.add_argument("--launches", type=int, default=5)
    b.add_argument("--json", action="store_true")
    b = bench.add_parser("soak", help="seeded random input on the real window; exit 1 on a crash, traceback or leak")
    b.add_argument("--seconds", type=float, default=60.0, help="input time per seed")
    b.add_argument("--seed", action="append", default=None, help="seed; several times or a comma list for several runs")
    b.add_argument("--actions", type=int, default=None, help="stop after this many actions")
    b.add_argument("--screenshot", default=None, help="PNG of the screen before the window is closed (-seedK per seed)")
    b = bench.add_parser("journal", help="frame time of a run with and without the recovery journal (needs a display)")
    b.add_argument("--rounds", type=int, default=3, help="measurements of each mode, alternating, each a fresh process")
    b.add_argument("--length", type=int, default=1024)
    b.add_argument("--steps", type=int, default=20)
    b.add_argument("--json", action="store_true")
    b = bench.add_parser("transport", help="records/s through shared memory vs TCP (signed zmq over 127.0.0.1)")
    b.add_argument("--tokens", type=int, default=1024, help="tokens per record")
    b.add_argument("--records", type=int, default=1001, help="records per timed run")
    b.add_argument("--repeats", type=int, default=3, help="timed runs of each way, interleaved; the best counts")
    b.add_argument("--json", action="store_true")
    b = bench.add_parser("find", help="Find (Ctrl+F): search ms and step-switch ms with and without a query")
    b.add_argument("--length", type=int, default=65536, help="tokens of the searched run")
    b.add_argument("--steps", type=int, default=20)
    b.add_argument("--no-window", action="store_true", help="only the window-free search timing (no display)")
    b.add_argument("--json", action="store_true")
    b = bench.add_parser("overview", help="the overview at 1,001 x 65,536 in every colour mode: slowest vs fastest ms")
    b.add_argument("--tokens", type=int, default=65536)
    b.add_argument("--steps", type=int, default=500, help="iterations: 2 * STEPS + 1 records")
    b.add_argument("--width", type=int, default=1200, help="overview pixels across")
    b.add_argument("--height", type=int, default=1000, help="overview pixels down")
    b.add_argument("--repeats", type=int, default=3, help="timings per mode, interleaved; the median counts")
    b.add_argument("--json", action="store_true")
    from dpgviz.bench.record import add_arguments as add_record  # light: torch only when it runs

    add_record(bench)
    return p


def main(args: argparse.Namespace) -> int:
    """Run the benchmark `args.bench` with the flags `add_parser` defined; exit status 0 (soak: 1 if not ok)."""
    if args.bench == "worker":
        from dpgviz.bench.worker import bench_worker

        bench_worker(args.length, args.steps, args.model, args.meta, args.device, args.json)
    elif args.bench == "sampler":
        from dpgviz.bench.sampler import main as run_sampler
        from dpgviz.bench.sampler import main_cache

        if args.cache == "prefix":
            main_cache(args.length, args.block_length, args.steps, args.strategy, args.runs, args.cache_refresh,
                       args.model, args.meta, args.device, args.words, args.json)
        else:
            run_sampler(args.length, args.steps, args.rounds, args.model, args.meta, args.device, args.json)
    elif args.bench == "gui":
        from dpgviz.bench.gui import main as run_gui

        run_gui(args.tokens, args.steps, args.frames, args.switch_sizes, not args.no_first_frame, args.json)
    elif args.bench == "session":
        import tempfile

        from dpgviz.bench.session import main as run_session

        run_session(args.tokens, args.records, args.dir or tempfile.gettempdir(), args.keep, args.json)
    elif args.bench == "scrub":
        from dpgviz.bench.scrub import main as run_scrub

        run_scrub(args.tokens, args.steps, args.json)
    elif args.bench == "startup":
        from dpgviz.bench.startup import main as run_startup

        run_startup(args.launches, args.json)
    elif args.bench == "soak":
        from dpgviz.bench.soak import main as run_soak
        from dpgviz.bench.soak import parse_seeds

        return run_soak(parse_seeds(args.seed or ["1"]), args.seconds, args.actions, args.screenshot)
    elif args.bench == "journal":
        from dpgviz.bench.journal_cost import main as run_journal

        return run_journal(args.rounds, args.length, args.steps, args.json)
    elif args.bench == "transport":
        from dpgviz.bench.transport import main as run_transport

        run_transport(args.tokens, args.records, args.json, args.repeats)
    elif args.bench == "find":
        from dpgviz.bench.find import main as run_find

        run_find(args.length, args.steps, args.json, not args.no_window)
    elif args.bench == "overview":
        from dpgviz.bench.overview import main as run_overview

        run_overview(args.tokens, args.steps, args.width, args.height, args.repeats, args.json)
    elif args.bench == "record":
        from dpgviz.bench.record import main as run_record

        run_record(args.length, args.repeats, args.device, args.json, args.vocab)
    else:
        raise ValueError(f"no benchmark {args.bench!r}; choose from {', '.join(NAMES)}")
    return 0
