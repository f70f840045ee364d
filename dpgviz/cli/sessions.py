"""Session commands: `show`, `export`, `open`, and saving `generate --out`.

Each command takes plain arguments, prints only its output to stdout (progress bars
and messages go to stderr) and returns an exit status; anything the user got wrong
raises SessionError with a one-line message for the CLI to print. The record JSON is
`store.step_store.records_json`, the same function `generate --json` prints with.

Imports numpy and the standard library; `cmd_export` imports `dpgviz.export` (Pillow)
and tqdm when called, so `show` and `open` stay light. No torch.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

from dpgviz.cli.common import print_json
from dpgviz.core.model_info import ModelInfo
from dpgviz.core.settings import GenerationSettings
from dpgviz.core.vocab import Vocabulary
from dpgviz.store.session import (
    FORMAT_VERSION,
    Progress,
    Session,
    SessionError,
    checkpoint_sha256,
    open_session,
    save_session,
)
from dpgviz.store.step_store import StepStore, records_json

log = logging.getLogger(__name__)


def session_json(session: Session, branch: str | None = None) -> dict:
    """`show --json`: every branch (id, parent, fork_record, settings) and one branch's records.

    The records are the branch's full history (Session.rows): for a child, the parent's
    history up to the forked record, then the child's own ('edit' first, for a fork).
    """
    chosen = session.branch(branch)
    records = records_json(session.store, session.rows(chosen.id), session.vocab)
    return {
        "branches": [
            {"id": b.id, "parent": b.parent, "fork_record": b.fork_record, "settings": b.settings}
            for b in (session.store.branches[i] for i in session.store.branch_order)
        ],
        "branch": chosen.id,
        "final_text": records[-1]["text"] if records else "",
        "records": records,
    }


@contextlib.contextmanager
def tqdm_progress(desc: str, unit: str = "it", unit_scale: bool = False) -> Iterator[Progress]:
    """A progress(done, total) callback drawing a tqdm bar on stderr, shown only past half a second."""
    from tqdm import tqdm

    bar = tqdm(
        total=None, desc=desc, unit=unit, unit_scale=unit_scale, file=sys.stderr, disable=None, delay=0.5, leave=False
    )

    def report(done: int, total: int) -> None:
        if bar.total != total:
            bar.total = total
        bar.update(done - bar.n)

    try:
        yield report
    finally:
        bar.close()


# -- commands -------------------------------------------------------------------------------
def cmd_open(path: str | Path) -> Session:
    """Open a session for the app: memory-mapped, no model loaded. SessionError if unusable."""
    session = open_session(path)
    log.info(
        "opened %s: %d records in %d branches, %d tokens, model %s",
        path,
        len(session.store),
        len(session.store.branch_order),
        session.store.layout.seq_len,
        session.model_path or "not recorded",
    )
    return session


def cmd_show(path: str, branch: str | None = None, as_json: bool = False) -> int:
    """Print a session: JSON (`session_json`) or a readable summary and the branch's final text."""
    with open_session(path) as session:
        doc = session_json(session, branch)
        if as_json:
            print_json(doc)
            return 0
        sys.stdout.write(_summary(session, doc))
    return 0


def _summary(session: Session, doc: dict) -> str:
    layout, store = session.store.layout, session.store
    sha = f"  sha256 {session.model_sha256[:12]}" if session.model_sha256 else ""
    lines = [
        f"session   {session.path}  (dpgviz {session.app_version or '?'}, format {FORMAT_VERSION}, saved {session.created or '?'})",
        f"model     {session.model_path or 'not recorded'}{sha}",
        f"records   {len(store)} in {len(store.branch_order)} branches; {layout.seq_len} tokens, top-{layout.top_k}, "
        f"vocabulary {session.vocab.size} + mask",
        "branches",
    ]
    for b in (store.branches[i] for i in store.branch_order):
        origin = "root" if b.parent is None else f"from {b.parent} @ record {b.fork_record}"
        s = b.settings
        knobs = " ".join(f"{k}={s[k]}" for k in ("strategy", "steps", "length", "temperature", "seed") if k in s)
        label = f" '{b.label}'" if b.label else ""
        lines.append(f"  {b.id:>3}{label}  {origin:24s} {len(b.rows):5d} records  {knobs}")
    lines.append(f"branch {doc['branch']}: record  iteration  kind        masked")
    for k, rec in enumerate(doc["records"]):
        lines.append(f"  {k:14d}  {rec['iteration']:9d}  {rec['kind']:10s} {rec['masked']:6d}")
    lines.append("final text")
    lines.append(doc["final_text"])
    return "\n".join(lines) + "\n"


def cmd_export(
    path: str,
    fmt: str,
    branch: str | None = None,
    record: int | None = None,
    frame_ms: int = 120,
    out: str | None = None,
    mode: str = "mask-state",
    columns: int = 64,
) -> int:
    """Export one branch of a session file (see `dpgviz.export.export_session`); progress on stderr."""
    from dpgviz.export import export_session

    if not out:
        raise SessionError("export needs --out PATH")
    with open_session(path) as session, tqdm_progress(f"export {fmt}", unit="record") as progress:
        written = export_session(
            session,
            fmt,
            out,
            branch=branch,
            record=record,
            frame_ms=frame_ms,
            mode=mode,
            columns=columns,
            progress=progress,
        )
    log.info("wrote %s (%d bytes)", written, written.stat().st_size)
    return 0


def save_run(
    path: str | Path,
    store: StepStore,
    vocab: Vocabulary | ModelInfo,
    settings: dict | GenerationSettings | None = None,
    model_path: str | Path | None = None,
    *,
    model_sha256: str | None = None,
) -> Path:
    """Save a finished run (`generate --out FILE`); returns the path.

    `vocab` is the Vocabulary, or the worker's ModelInfo, from which the vocabulary,
    model path and info are taken. The checkpoint is hashed (sha256, cached) when it
    exists and no hash is given.
    """
    model_info: dict = {}
    if isinstance(vocab, ModelInfo):
        info = vocab
        vocab = info.vocab()
        model_path = model_path or info.path
        model_info = info.to_dict(with_itos=False)
    if model_path and model_sha256 is None and Path(model_path).is_file():
        model_sha256 = checkpoint_sha256(model_path)
    with tqdm_progress("saving session", unit="B", unit_scale=True) as progress:
        written = save_session(
            path,
            store,
            vocab,
            settings=settings.to_dict() if isinstance(settings, GenerationSettings) else dict(settings or {}),
            model_path=model_path,
            model_sha256=model_sha256,
            model_info=model_info,
            progress=progress,
        )
    log.info("saved session %s", written)
    return written


# -- argparse ---------------------------------------------------------------------------
def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("open", help="open a saved session in the app")
    p.add_argument("file")

    p = sub.add_parser("show", help="print a saved session")
    p.add_argument("file")
    p.add_argument("--branch")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("export", help="export a saved session")
    p.add_argument("file")
    p.add_argument("--format", required=True, choices=("text", "png", "gif", "html", "csv", "json"))
    p.add_argument("--branch")
    p.add_argument("--record", type=int)
    p.add_argument("--frame-ms", type=int, default=120)
    p.add_argument(
        "--mode", default="mask-state", choices=("mask-state", "confidence", "score", "entropy"),
        help="colouring of PNG and GIF exports",
    )
    p.add_argument("--out", required=True)


COMMANDS = {
    "show": lambda args: cmd_show(args.file, args.branch, args.json),
    "export": lambda args: cmd_export(
        args.file, args.format, args.branch, args.record, args.frame_ms, args.out, mode=args.mode
    ),
}
