"""Session commands: `show` (also one position's history: `show --position`), `export`,
`open`, and saving `generate --out` (`branch`: cli.branch).

Each command takes plain arguments, prints only its output to stdout (progress bars
and messages go to stderr) and returns an exit status; anything the user got wrong
raises SessionError with a one-line message for the CLI to print. The record JSON is
`store.blocks.composed_records_json` (records_json; for a block run each record's own block
with its offset, and the whole text in the last record or, with --full-text, in every
one), the same function `generate --json` prints with. Positions (`show --position`) are
positions in the whole sequence, also in a block run.

Imports numpy and the standard library; `cmd_export` imports `dpgviz.export` (Pillow)
and tqdm when called, so `show` and `open` stay light. Never imports torch or dearpygui.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from dpgviz.cli.common import print_json
from dpgviz.core.discovery import model_file
from dpgviz.core.model_info import ModelInfo
from dpgviz.core.prompt import prompt_json
from dpgviz.core.records import FLAG_PROMPT
from dpgviz.core.settings import GenerationSettings
from dpgviz.core.vocab import MASK_GLYPH, Vocabulary
from dpgviz.store.blocks import compose, composed_records_json, final_text
from dpgviz.store.session import Progress, Session, SessionError, checkpoint_sha256
from dpgviz.store.session_format import FORMAT_VERSION
from dpgviz.store.session_open import open_session
from dpgviz.store.session_save import save_session
from dpgviz.store.step_store import StepStore

log = logging.getLogger(__name__)


def session_json(session: Session, branch: str | None = None, full_text: bool = False, ids: bool = False) -> dict:
    """`show --json`: every branch (id, parent, fork_record, settings) and one branch's records.

    `ids` (`show --json --ids`): each record also carries "ids", the whole sequence's token ids
    with the prompt, in the model's own id space (core.vocab.Vocabulary.model_ids).

    The records are the branch's full history (Session.rows): for a child, the parent's
    history up to the forked record, then the child's own ('edit' first, for a fork).
    `full_text`: a block run's records each carry the whole text (composed_records_json).
    """
    chosen = session.branch(branch)
    rows = session.rows(chosen.id)
    records = composed_records_json(session.store, rows, session.vocab, full_text=full_text)
    if ids:
        for k, rec in enumerate(records):
            tokens = compose(session.store, rows, k, "tokens", session.vocab.mask_id)
            rec["ids"] = session.vocab.model_ids(tokens).tolist()
    doc = {
        "branches": [
            {"id": b.id, "parent": b.parent, "fork_record": b.fork_record, "settings": b.settings}
            for b in (session.store.branches[i] for i in session.store.branch_order)
        ],
        "branch": chosen.id,
        "final_text": final_text(records),
        "records": records,
    }
    prompt = _prompt_of(session, chosen.settings, rows)
    if prompt is not None:  # a run with a prompt or template only: other sessions print as before
        doc = {**dict(list(doc.items())[:2]), "prompt": prompt, **dict(list(doc.items())[2:])}
    return doc


def _prompt_of(session: Session, settings: dict, rows: np.ndarray) -> dict | None:
    """core.prompt.prompt_json of a branch: its prompt and the positions it fixed (first record)."""
    if not len(rows) or prompt_json(settings) is None:
        return None
    flags = compose(session.store, rows, 0, "flags", session.vocab.mask_id)
    return prompt_json(settings, (flags & FLAG_PROMPT) != 0)


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


def position_json(session: Session, position: int, branch: str | None = None) -> dict:
    """`show --position P --json`: {"position": P, "history": store.inspect.position_history entries}.

    One entry per record of the branch's history, in order. SessionError for a position
    outside the sequence. A block run: P is a position of the whole sequence and each
    entry what the sequence composed at that record holds there (masked before P's block
    starts), with "source", the record its values come from.
    """
    from dpgviz.store.inspect import position_history, position_sources

    chosen = session.branch(branch)
    n = session.store.layout.total_len
    if not 0 <= position < n:
        raise SessionError(f"position {position} is outside the sequence (positions 0..{n - 1})")
    rows = session.rows(chosen.id)
    history = position_history(session.store, rows, position, session.vocab)
    doc = {"position": position, "history": history}
    from dpgviz.store.layers import layer_of, position_entries

    layer = layer_of(session.store, chosen.id)
    if layer is not None:  # a second model scored this branch (`score`): its values beside each record's
        src, local = position_sources(session.store, rows, position)
        has = src >= 0
        seconds = position_entries(session.store, layer, rows[src[has]], local, session.vocab)
        mine = iter(seconds)
        for entry, ok in zip(history, has.tolist(), strict=True):
            entry["second"] = next(mine) if ok else None
        doc["second_model"] = dict(layer.model)
    return doc


def _position_table(doc: dict, branch: str, top: int = 3) -> str:
    """`show --position` without --json: one line per record, the first `top` candidates."""

    def num(x: float | None) -> str:
        return "-" if x is None else f"{x:.4f}"

    def tok(t: str | None) -> str:
        return MASK_GLYPH if t is None else repr(t)

    lines = [
        f"branch {branch}, position {doc['position']}",
        f"{'record':>6}  {'iter':>4}  {'kind':10s} {'state':9s} {'token':6s} {'p':>7}  {'entropy':>7}  {'score':>7}  top",
    ]
    for h in doc["history"]:
        cands = "  ".join(f"{tok(t)} {p:.3f}" for t, p in h["top"][:top])
        lines.append(
            f"{h['record']:6d}  {h['iteration']:4d}  {h['kind']:10s} {h['state']:9s} {tok(h['token']):6s} "
            f"{num(h['p']):>7}  {num(h['entropy']):>7}  {num(h['score']):>7}  {cands}".rstrip()
        )
    return "\n".join(lines) + "\n"


PARTIAL_EXIT = 3  # `show` of a damaged file: what precedes the damage was printed (--allow-partial: 0)


def show_json(
    path: str | Path, branch: str | None = None, position: int | None = None, full_text: bool = False, ids: bool = False
) -> dict:
    """What `show --json` prints: `session_json` (or `position_json`), every column checksum checked.

    A partial read (a damaged recorder file or journal: store.session.Damage) puts
    "partial": true, "records_recovered", "records_written" (null: unknown) and "damage"
    first; a whole read adds nothing. SessionError for a file that cannot be read at all.
    """
    with open_session(path, verify=True) as session:
        doc = (position_json(session, position, branch) if position is not None
               else session_json(session, branch, full_text, ids))
        return doc if session.damage is None else {**session.damage.json(), **doc}


def cmd_show(
    path: str, branch: str | None = None, as_json: bool = False, position: int | None = None, full_text: bool = False,
    allow_partial: bool = False, ids: bool = False,
) -> int:
    """Print a session: JSON (`show_json`) or a readable summary and the branch's final text.

    With `position`, one position's history instead (`position_json`, or a table). A
    damaged file's records before the damage are printed, and the status is PARTIAL_EXIT
    unless `allow_partial` (the reader logged "partial: N of M records recovered (why)").
    """
    if as_json:
        doc = show_json(path, branch, position, full_text, ids)
        print_json(doc)
        is_partial = bool(doc.get("partial"))
    else:
        with open_session(path, verify=True) as session:
            if position is not None:
                pdoc = position_json(session, position, branch)
                sys.stdout.write(_position_table(pdoc, session.branch(branch).id))
            else:
                sys.stdout.write(_summary(session, session_json(session, branch, full_text=full_text)))
            is_partial = session.damage is not None
    if is_partial and not allow_partial:
        sys.stderr.write(f"dpgviz: {path} is damaged: only the records before the damage were read "
                         "(--allow-partial accepts that: exit status 0)\n")
        return PARTIAL_EXIT
    return 0


def _model_name(session: Session) -> str:
    """A session without a model file: the name a Recorder gave (no file to load), or 'not recorded'."""
    name = (session.model_info or {}).get("name")
    return f"{name} (no file: logged by dpgviz.Recorder)" if name and (session.model_info or {}).get("recorded_by") else "not recorded"


def _summary(session: Session, doc: dict) -> str:
    layout, store = session.store.layout, session.store
    sha = f"  sha256 {session.model_sha256[:12]}" if session.model_sha256 else ""
    lines = [
        f"session   {session.path}  (dpgviz {session.app_version or '?'}, format {FORMAT_VERSION}, saved {session.created or '?'})",
        f"model     {session.model_path or _model_name(session)}{sha}",
        f"records   {len(store)} in {len(store.branch_order)} branches; {layout.total_len} tokens"
        f"{f' in blocks of {layout.seq_len}' if layout.is_blocks else ''}, top-{layout.top_k}, "
        f"vocabulary {session.vocab.size} + mask",
    ]
    if doc.get("prompt") is not None:  # the branch shown started from a prompt or template
        p = doc["prompt"]
        how = "template" if p["template"] else "prompt in the chat template" if p["chat"] else "prompt"
        fixed = ", ".join(f"{a}:{b}" for a, b in p.get("fixed", []))
        lines.append(f"prompt    {p['text']!r} ({how}; fixed positions {fixed})")
    lines.append("branches")
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
    mode: str = "state",
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
    weights = model_file(model_path)
    if weights is not None and model_sha256 is None:
        model_sha256 = checkpoint_sha256(weights)
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

    p = sub.add_parser(
        "show", help="print a saved session",
        epilog="Exit status: 0; 2 when the file cannot be read; 3 when it is damaged and only the records before "
        "the damage were read (--json adds \"partial\": true, \"records_recovered\", \"records_written\", \"damage\").",
    )
    p.add_argument("file")
    p.add_argument("--allow-partial", action="store_true",
                   help="exit 0 on a damaged file whose records before the damage were read")
    p.add_argument("--branch")
    p.add_argument("--json", action="store_true")
    p.add_argument("--ids", action="store_true",
                   help="with --json: each record's token ids (the whole sequence, in the model's id space)")
    p.add_argument(
        "--position", type=int, metavar="P",
        help="print position P's history instead: token, state, p, entropy, score and candidates per record",
    )
    p.add_argument(
        "--full-text", action="store_true",
        help="with --json on a run in blocks: the whole text in every record, not only in the last",
    )

    p = sub.add_parser("export", help="export a saved session")
    p.add_argument("file")
    p.add_argument(
        "--format", required=True, choices=("text", "png", "gif", "html", "csv", "json", "overview", "plots")
    )
    p.add_argument("--branch")
    p.add_argument("--record", type=int)
    p.add_argument("--frame-ms", type=int, default=120)
    from dpgviz.core import color_modes  # the registry, read when the parser is built

    drawable = [m.name for m in color_modes.modes() if m.overview]
    p.add_argument(
        "--mode", default="state", type=_colour_mode, choices=drawable, metavar="{" + ",".join(drawable) + "}",
        help="colouring of png, gif, overview exports (core.color_modes; 'mask-state' is read as 'state')",
    )
    p.add_argument("--out", required=True)


def _colour_mode(text: str) -> str:
    """--mode's value as its one name: an alias ('mask-state') becomes the mode's name ('state')."""
    from dpgviz.core import color_modes

    try:
        return color_modes.canonical(text)
    except ValueError:
        return text  # argparse's choices then say what is accepted


COMMANDS = {
    "show": lambda args: cmd_show(
        args.file, args.branch, args.json, args.position, args.full_text, args.allow_partial, args.ids
    ),
    "export": lambda args: cmd_export(
        args.file, args.format, args.branch, args.record, args.frame_ms, args.out, mode=args.mode
    ),
}
