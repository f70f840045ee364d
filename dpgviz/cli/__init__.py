"""Command-line front: `python main.py [command]`. With no command it opens the app.

Only argument parsing and printing live in this package; each command calls into the
rest of dpgviz. `cli.runs` holds the model commands (generate, inspect, models, train,
evaluate), `cli.sessions` the session ones (open, show, export); benchmarks are
`python main.py bench NAME`. Engine modules (torch) are imported inside the commands
that need them, so `python main.py` (the GUI) never imports torch in its own process.
Bad input ends with a one-line reason on stderr and a non-zero exit status.
"""

from __future__ import annotations

import argparse
import logging
import sys

from dpgviz import bench
from dpgviz.cli import compare, explore, runs, score, sessions, verify, worker
from dpgviz.cli.common import UserError
from dpgviz.core.settings import DEVICES, DTYPES, SettingsError

log = logging.getLogger("dpgviz")


__all__ = ["UserError", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    # allow_abbrev=False: a subcommand's --mode must not read as an abbreviation of --model here
    parser = argparse.ArgumentParser(
        prog="dpgviz", description="Visualize masked-diffusion language models.", allow_abbrev=False
    )
    parser.add_argument("--models-dir", help="extra folder to look for checkpoints in (GUI)")
    parser.add_argument(
        "--model", help="GUI: load this checkpoint, Hugging Face folder or adapter file (FILE.py) instead of the default"
    )
    parser.add_argument("--device", default="auto", choices=DEVICES, help="GUI worker device")
    parser.add_argument("--dtype", default="auto", choices=DTYPES, help="GUI worker weights' dtype")
    parser.add_argument(
        "--connect", metavar="FILE|HOST:PORT", help="GUI: use the worker on another machine (`python main.py worker`)"
    )
    parser.add_argument("--key", help="with --connect HOST:PORT: the worker's key (a connection file holds it)")
    parser.add_argument(
        "--listen-runs", metavar="[HOST:]PORT",
        help="GUI: show the runs a dpgviz.Recorder streams here (connect=\"127.0.0.1:PORT\"); 127.0.0.1 unless HOST",
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command")
    runs.add_parsers(sub)
    worker.add_parsers(sub)
    compare.add_parsers(sub)
    explore.add_parsers(sub)
    bench.add_parser(sub)
    sessions.add_parsers(sub)
    score.add_parsers(sub)
    verify.add_parsers(sub)
    return parser


def cmd_bench(args: argparse.Namespace) -> int:
    return bench.main(args)  # imports the chosen benchmark's heavy modules only now


def cmd_gui(args: argparse.Namespace, session: str | None = None) -> int:
    from dpgviz.gui.app import run_app

    connect = None
    if args.connect:
        from dpgviz.ipc.wire import read_target

        try:
            read_target(args.connect, args.key)  # a bad file or a missing key: one line, before the window opens
        except ValueError as exc:
            raise UserError(str(exc)) from None
        connect = (args.connect, args.key)
    if args.listen_runs is not None:
        from dpgviz.ipc.listen import parse_listen

        try:
            parse_listen(args.listen_runs)  # a bad port: one line, before the window opens
        except ValueError as exc:
            raise UserError(str(exc)) from None
    run_app(
        models_dir=args.models_dir, device=args.device, session=session, dtype=args.dtype, model=args.model,
        connect=connect, listen_runs=args.listen_runs,
    )
    return 0


COMMANDS = {
    **runs.COMMANDS, **compare.COMMANDS, **explore.COMMANDS, **sessions.COMMANDS, **worker.COMMANDS, "bench": cmd_bench,
    **score.COMMANDS, **verify.COMMANDS,
}


def main(argv: list[str] | None = None) -> int:
    from dpgviz.core.determinism import set_reproducible_env

    set_reproducible_env()  # before torch loads, here and in the workers this process starts
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s" if args.verbose else "%(message)s",
        stream=sys.stderr,
    )
    from dpgviz.core.vocab import VocabError

    user_errors: tuple[type[Exception], ...] = (UserError, SettingsError, VocabError, FileNotFoundError)
    try:
        if args.command is None:
            return cmd_gui(args)
        if args.command == "open":
            return cmd_gui(args, session=args.file)
        return COMMANDS[args.command](args)
    except user_errors as exc:
        sys.stderr.write(f"dpgviz: {exc}\n")
        return 2
    except ValueError as exc:  # CheckpointError, SessionError and friends are ValueErrors with a user message
        sys.stderr.write(f"dpgviz: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("dpgviz: interrupted\n")
        return 130
    except BrokenPipeError:  # `show --json | head`: the reader left; not an error of ours
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
