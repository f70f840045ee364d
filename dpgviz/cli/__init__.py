"""Command-line front: `python main.py [command]`. With no command it opens the app.

Only argument parsing and printing live in this package; each command calls into the
rest of dpgviz. `cli.runs` holds the model commands (generate, inspect, models, train,
evaluate), `cli.sessions` the session ones (open, show, export), `cli.branch` the branch command; benchmarks are
`python main.py bench NAME`. Engine modules (torch) are imported inside the commands
that need them, so `python main.py` (the GUI) never imports torch in its own process.
Bad input ends with a one-line reason on stderr and a non-zero exit status.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Iterable, Sequence
from types import ModuleType

from dpgviz import bench
from dpgviz.cli.common import UserError
from dpgviz.core.settings import DEVICES, DTYPES, SettingsError

log = logging.getLogger("dpgviz")


__all__ = ["UserError", "build_parser", "main"]

# Each command's module (dpgviz.cli.NAME), imported when the command runs or --help lists them all:
# `python main.py` opens the window without importing any of them (first frame ~15 ms sooner).
COMMAND_MODULES: dict[str, str] = {
    "generate": "runs", "inspect": "runs", "models": "runs", "train": "runs", "evaluate": "runs",
    "worker": "worker", "compare": "compare", "explore": "explore",
    "branch": "branch", "show": "sessions", "export": "sessions", "open": "sessions",
    "score": "score", "verify": "verify",
}
MODULE_ORDER = ("runs", "worker", "compare", "explore", "sessions", "branch", "score", "verify")  # --help's order
_VALUED_OPTIONS = frozenset({"--models-dir", "--model", "--device", "--dtype", "--connect", "--key", "--listen-runs"})


def command_module(name: str) -> ModuleType:
    return importlib.import_module(f"dpgviz.cli.{name}")


def command_named(argv: Sequence[str]) -> str | None:
    """The command word in `argv` (the first word that is no top-level option nor its value); None: the window."""
    tokens = iter(argv)
    for token in tokens:
        if token == "--":
            return next(tokens, None)
        if token.startswith("-"):
            if token in _VALUED_OPTIONS:
                next(tokens, None)
            continue
        return token
    return None


def build_parser(modules: Iterable[str] | None = None) -> argparse.ArgumentParser:
    """The command-line parser with the commands of `modules` (None: every command)."""
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
    parser.add_argument(
        "--allow-remote", action="store_true", help="with --listen-runs HOST:PORT: allow an address other machines reach"
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command")
    wanted = set(MODULE_ORDER if modules is None else modules)
    for name in MODULE_ORDER:
        if name in wanted:
            command_module(name).add_parsers(sub)
        if name == "explore" and (modules is None or "bench" in wanted):
            bench.add_parser(sub)
    return parser


def parser_for(argv: Sequence[str]) -> argparse.ArgumentParser:
    """The parser `argv` needs: the window's options alone, one command's module, or all (help, an unknown word)."""
    command = command_named(argv)
    if command is None and not {"-h", "--help"} & set(argv):
        return build_parser(())
    if command == "bench":
        return build_parser(("bench",))
    if command in COMMAND_MODULES:
        return build_parser((COMMAND_MODULES[command],))
    return build_parser()  # argparse's help, or its "invalid choice" listing every command


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
        from dpgviz.ipc.wire import check_listen_host

        try:  # a bad port, or another machine's address without --allow-remote: one line, before the window opens
            check_listen_host(parse_listen(args.listen_runs)[0], args.allow_remote)
        except ValueError as exc:
            raise UserError(str(exc)) from None
    run_app(
        models_dir=args.models_dir, device=args.device, session=session, dtype=args.dtype, model=args.model,
        connect=connect, listen_runs=args.listen_runs, allow_remote=args.allow_remote,
    )
    return 0




def main(argv: list[str] | None = None) -> int:
    from dpgviz.core.determinism import set_reproducible_env

    set_reproducible_env()  # before torch loads, here and in the workers this process starts
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser_for(argv).parse_args(argv)
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
        if args.command == "bench":
            return cmd_bench(args)
        return command_module(COMMAND_MODULES[args.command]).COMMANDS[args.command](args)
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
