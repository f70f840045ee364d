"""`python main.py worker --listen HOST:PORT`: serve the model to a window on another machine.

Binds 127.0.0.1 unless told otherwise (another address needs --allow-remote, and the server
then says to prefer an SSH tunnel), writes a connection file (0600, as Jupyter's
kernel-*.json: address, port, key), prints the one command that connects to it, and runs
`ipc.server.WorkerServer` until Ctrl-C or SIGTERM. Never imports dearpygui; torch only
in the worker process the server starts.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from dpgviz.cli.common import UserError
from dpgviz.core.settings import DEVICES, DTYPES

log = logging.getLogger("dpgviz")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("worker", help="serve a model to a window on another machine (ZeroMQ, signed messages)")
    p.add_argument(
        "--listen", default="127.0.0.1:5557",
        help="[HOST:]PORT to bind (default 127.0.0.1:5557; a port alone: 127.0.0.1:PORT; port 0: any free one)",
    )
    p.add_argument("--allow-remote", action="store_true", help="allow binding an address other machines reach")
    p.add_argument("--connection-file", help="where to write address, port and key (default: the cache folder)")
    p.add_argument("--model", help="the model a client's default load gets (default: the embedded model)")
    p.add_argument("--meta", help="its vocabulary meta.pkl")
    p.add_argument("--models-dir", help="more models to offer (checkpoints, Hugging Face folders); ./out is offered too")
    p.add_argument("--device", default="auto", choices=DEVICES, help="what a client's 'auto' device means here")
    p.add_argument("--dtype", default="auto", choices=DTYPES, help="what a client's 'auto' dtype means here")
    p.add_argument("--device-map", choices=("auto",), help="Hugging Face models: spread layers over GPUs, CPU, disk (accelerate)")
    p.add_argument("--max-memory", help="with --device-map: per device, e.g. 0=20GiB,1=20GiB,cpu=64GiB")
    p.add_argument("--no-preload", action="store_true", help="load the model when a client asks, not at start")


def add_connect_args(p: argparse.ArgumentParser) -> None:
    """`--connect FILE|HOST:PORT [--key K]` for commands that can use a worker on another machine."""
    p.add_argument(
        "--connect", metavar="FILE|HOST:PORT",
        help="use the worker on another machine (`python main.py worker`); --model is then a path there",
    )
    p.add_argument("--key", help="with --connect HOST:PORT: the worker's key (its connection file holds it)")


def connect_factory(args: argparse.Namespace) -> Callable[[], object] | None:
    """A source factory for `ipc.runner.run_via_worker` when --connect was given, else None."""
    if not getattr(args, "connect", None):
        return None
    from dpgviz.ipc.remote import remote_factory
    from dpgviz.ipc.wire import read_target

    try:
        read_target(args.connect, args.key)  # a bad file or a missing key: one line, now
    except ValueError as exc:
        raise UserError(str(exc)) from None
    return remote_factory(args.connect, args.key)


def cmd_remote_models(args: argparse.Namespace, timeout_s: float = 15.0) -> int:
    """`models --connect ...`: what the worker offers (paths on its host), its own choice first."""
    import time

    from dpgviz.cli.common import print_json
    from dpgviz.ipc.messages import Connected, Disconnected

    client = connect_factory(args)()
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            events = client.poll()
            done = next((e for e in events if isinstance(e, (Connected, Disconnected))), None)
            if isinstance(done, Disconnected):
                raise UserError(f"disconnected from {done.address}: {done.reason}")
            if done is not None:
                break
            if time.monotonic() > deadline:
                raise UserError(f"no answer from {client.address} within {timeout_s:.0f} s")
            time.sleep(0.01)
    finally:
        client.close()
    models = [
        {"name": e.name, "path": str(e.path), "meta": str(e.meta) if e.meta else None, "default": e.is_default,
         "iter_num": e.iter_num, "best_val_loss": e.best_val_loss}
        for e in done.models
    ]
    if args.json:
        print_json({"host": done.host, "address": done.address, "models": models})
    else:
        sys.stdout.write(f"models offered by the worker at {done.address} ({done.host}), its own first:\n")
        for m in models:
            trained = "" if m["iter_num"] is None else f"  iter {m['iter_num']}"
            sys.stdout.write(f"  {m['name']:40s}{trained}  {m['path']}\n")
    return 0


def parse_max_memory(text: str | None) -> dict | None:
    """'0=20GiB,cpu=64GiB' -> {"0": "20GiB", "cpu": "64GiB"} (accelerate's max_memory)."""
    if not text:
        return None
    out = {}
    for part in text.split(","):
        name, sep, size = part.strip().partition("=")
        if not sep or not name or not size:
            raise UserError(f"--max-memory {text!r}: expected DEVICE=SIZE pairs, e.g. 0=20GiB,cpu=64GiB")
        if not (name.isdigit() or name in ("cpu", "mps")):
            raise UserError(f"--max-memory: device {name!r} is not a GPU index, cpu or mps")
        out[name] = size
    return out


def default_connection_file(port: int) -> Path:
    from dpgviz.core.paths import cache_dir

    return cache_dir() / f"worker-{port}.json"


def remove_connection_file(path: Path, key: str) -> None:
    """Remove the file if it is still ours (a newer worker may have written its own there since)."""
    import json

    try:
        if json.loads(path.read_text(encoding="utf-8")).get("key") == key:
            path.unlink()
    except (OSError, ValueError, AttributeError):
        pass


def cmd_worker(args: argparse.Namespace) -> int:
    from dpgviz.ipc import wire

    try:
        wire.require_zmq()
        host, port = wire.parse_address(args.listen)  # the parser of --listen-runs too
        wire.check_listen_host(host, args.allow_remote)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if args.max_memory and not args.device_map:
        raise UserError("--max-memory applies with --device-map auto")
    from dpgviz.ipc.server import ServerOptions, WorkerServer

    options = ServerOptions(
        model=args.model, meta=args.meta, models_dir=args.models_dir, device=args.device, dtype=args.dtype,
        device_map=args.device_map, max_memory=parse_max_memory(args.max_memory), preload=not args.no_preload,
    )
    key = wire.new_key()
    try:
        server = WorkerServer(host, port, key, options)
    except Exception as exc:  # zmq.ZMQError (address in use, cannot assign), named in one line
        raise UserError(f"cannot listen on {args.listen}: {exc}") from None

    def on_signal(signum: int, frame: object) -> None:
        server.stop()

    # Before the connection file exists: a SIGTERM as soon as it appears must still remove it.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    warning = wire.remote_warning(host, server.port)
    if warning:
        log.warning(warning)
    path = wire.write_connection_file(args.connection_file or default_connection_file(server.port), host, server.port, key)
    try:
        log.info("dpgviz worker on %s:%d (pid %d, its model process %s); connection file %s",
                 host, server.port, os.getpid(), server.source.pid, path)
        log.info("from another machine: copy that file there, run  ssh -N -L %d:127.0.0.1:%d THIS_HOST  and connect "
                 "with it", server.port, server.port)
        sys.stdout.write(f"python main.py --connect {path}\n")
        sys.stdout.flush()
        server.serve()
    finally:
        remove_connection_file(path, key)  # as Jupyter removes its kernel file: a stale key points nowhere
        log.info("worker stopped")
    return 0


COMMANDS = {"worker": cmd_worker}
