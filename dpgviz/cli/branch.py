"""The `branch` command: fork a saved session at a record, edit it, run on through a worker, save.

Everything the user can get wrong is checked before the model loads, and the file is
written (atomically) only once the run has finished. The edits themselves are
store.edits'; the run is ipc.runner's (a worker process).

Imports numpy and the standard library; never imports torch (the model runs in a worker
process), dearpygui, or the other session commands (cli.sessions).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys

import numpy as np

from dpgviz.cli.common import UserError, add_model_args
from dpgviz.core.discovery import model_file
from dpgviz.core.model_info import ModelInfo
from dpgviz.core.prompt import continued
from dpgviz.core.records import continue_point
from dpgviz.core.settings import OPEN_ENDED, GenerationSettings
from dpgviz.store.edits import apply_edit, encode_text, parse_range, parse_replace, predicted_tokens
from dpgviz.store.session import SessionError, checkpoint_sha256
from dpgviz.store.session_open import open_session
from dpgviz.store.session_save import save_session, set_aside_damaged

log = logging.getLogger(__name__)

BRANCH_OVERRIDES = ("temperature", "strategy", "randomness", "seed", "steps")


def cmd_branch(
    path: str,
    record: int,
    edits: list[tuple[str, str]],
    branch: str | None = None,
    overrides: dict | None = None,
    model: str | None = None,
    meta: str | None = None,
    device: str = "auto",
) -> int:
    """Fork `branch` (None = the root) at history record `record`, edit, run, save; print the new id.

    `edits` are (op, argument) pairs in command-line order: ('mask'|'unmask'|'protect'|
    'unprotect', 'A:B') or ('replace', 'POS:TEXT'). The child runs with the parent's
    settings, `overrides` (non-None values of BRANCH_OVERRIDES) replacing some, from the
    edit record, through a worker like `generate`. Everything the user can get wrong is
    checked before the model loads, and the file is written (atomically) only once the
    run has finished, so any failure leaves it byte-identical.

    A run made in blocks is edited in whole-sequence positions (store.edits.edit_state): up to
    the end of record `record`'s block, masks in that block only; the run goes on from that
    block (store.edits.start_point), then every later block, each after the text before it.
    """
    from dpgviz.ipc.runner import WorkerFailed, run_via_worker
    from dpgviz.store.edits import check_editable, check_masks, edit_state, fork_edit, start_point

    with open_session(path) as session:
        store, vocab = session.store, session.vocab
        layout = store.layout
        parent = session.branch(branch).id
        k = session.record_index(parent, record)
        row = int(session.rows(parent)[k])
        n = layout.total_len  # positions in the whole sequence (a block run's records hold one block)
        state = edit_state(store, session.rows(parent), k, vocab.mask_id)
        tokens, protected = state.tokens, state.protected
        edited = np.zeros(n, dtype=bool)
        predicted = predicted_tokens(store, parent, k)
        done: list[dict] = []
        for op, arg in edits:
            text: str | None = None
            text_ids = None
            if op == "replace":
                start, text = parse_replace(arg)
                text_ids = encode_text(text, vocab)
                stop = start + len(text_ids)
            else:
                start, stop = parse_range(arg, n)
            check_editable(layout, state, start, stop)
            tokens, protected, changed = apply_edit(
                tokens, protected, op, start, stop, mask_id=vocab.mask_id, text_ids=text_ids, predicted=predicted
            )
            edited |= changed
            done.append({"op": op, "start": start, "stop": stop, "text": text})
        check_masks(layout, state, tokens, vocab.mask_id)  # finished blocks before the record's stay text

        base = session.branch(parent).settings or session.settings
        try:
            settings = GenerationSettings.from_dict(base)
            settings = dataclasses.replace(settings, **{k: v for k, v in (overrides or {}).items() if v is not None})
            settings = continued(settings, base)  # the prompt's positions stay fixed (the sampler re-encodes it)
            settings.validate()
        except (TypeError, KeyError) as exc:
            raise SessionError(f"branch {parent!r} has unusable settings ({exc})") from None
        if (
            (not settings.has_prompt and settings.length != n - layout.prefix_len)
            or settings.top_k != layout.top_k
            or (layout.is_blocks and settings.block_tokens != layout.seq_len)
        ):
            raise SessionError(f"branch {parent!r} settings do not match the session's records ({n} tokens)")
        kind, iteration = store.kind(row), int(store.get("iteration", row))
        start_it, start_block, emit_initial = continue_point(kind, iteration), 0, False
        if layout.is_blocks:  # the first block with a mask runs first (store.edits.start_point)
            where = start_point(layout, tokens, vocab.mask_id, state.block, start_it, kind == "final", settings.steps)
            if where is None:
                raise SessionError(f"nothing is masked at record {k} after these edits, so nothing is left to "
                                   "generate; add --mask A:B to regenerate positions")
            start_it, start_block, emit_initial = where.iteration, where.block, not where.has_record
        if start_it >= settings.steps and settings.strategy not in OPEN_ENDED:
            raise SessionError(
                f"record {k} ({kind}) is after iteration {start_it - 1}; pass --steps above {start_it} to continue it"
            )
        model_path = model or session.model_path
        if not model and model_file(model_path) is None:
            recorded = session.model_path or "not recorded"
            raise SessionError(f"the session's model ({recorded}) cannot be found; pass --model CKPT")

        def check_model(info: ModelInfo) -> None:
            if tuple(info.itos) != tuple(vocab.itos) or info.n_ids != store.layout.n_ids:
                raise UserError(f"model {info.path or info.name} has another vocabulary than the session")

        child = fork_edit(
            store, parent, k, tokens, protected, edited, settings.to_dict(), label=f"branch @ {k}", edits=done,
            mask_id=vocab.mask_id,
        )
        log.info("branch %s: the run starts at block %d, iteration %d", child.id, start_block, start_it)
        try:
            info, _, _, summary = run_via_worker(
                settings, model_path, meta, device, store=store, branch=child.id, tokens=tokens,
                iteration=start_it, protected=protected if protected.any() else None, edited=edited,
                emit_initial=emit_initial, on_loaded=check_model,
            )
        except WorkerFailed as exc:
            raise UserError(str(exc)) from None
        if model:  # another model than the session's made this branch: say which, for score and verify
            from dpgviz.store.provenance import model_ref, runtime_of

            weights = model_file(info.path)
            ref = model_ref(info.name, info.path, checkpoint_sha256(weights) if weights is not None else None)
            child.provenance = {"model": {**ref, "block_size": info.block_size},
                                "runtime": runtime_of(info.to_dict(with_itos=False))}
        set_aside_damaged(session, path)  # a partial read must not overwrite the records it could not read
        save_session(
            path, store, vocab, settings=session.settings, model_path=session.model_path,
            model_sha256=session.model_sha256, model_info=session.model_info, runtime=session.runtime or None,
        )
    log.info(
        "branch %s: forked from %s @ record %d (%d edits), %d records run", child.id, parent, k, len(done),
        summary["n_records"],
    )
    sys.stdout.write(f"{child.id}\n")
    return 0


class _EditAction(argparse.Action):
    """Collects --mask/--unmask/--replace/--protect/--unprotect into one list, in command-line order."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        edits = list(getattr(namespace, "edits", None) or [])
        edits.append((self.dest, values))
        namespace.edits = edits


# -- argparse ---------------------------------------------------------------------------
def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("branch", help="fork a saved session at a record, edit it, run on, save (prints the new id)")
    p.add_argument("file")
    p.add_argument("--record", type=int, required=True, help="record of the branch's history (negative: from the end)")
    p.add_argument("--branch", help="branch to fork (default: the root)")
    p.epilog = ("Positions are in the whole sequence, also in a run made in blocks: there an edit may reach up "
                "to the end of the record's block, masks go in that block only, and the run goes on from it, "
                "then every later block.")
    for op, metavar, what in (
        ("mask", "A:B", "mask positions A..B-1 (protected ones stay)"),
        ("unmask", "A:B", "put back the prediction's tokens at masked positions A..B-1"),
        ("replace", "POS:TEXT", "write TEXT from position POS"),
        ("protect", "A:B", "protect the visible positions A..B-1 (the sampler never changes them)"),
        ("unprotect", "A:B", "unprotect positions A..B-1"),
    ):
        p.add_argument(f"--{op}", dest=op, action=_EditAction, metavar=metavar, help=f"{what}; repeatable")
    p.add_argument("--temperature", type=float)
    p.add_argument("--strategy")
    p.add_argument("--randomness", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--steps", type=int)
    add_model_args(p)
    p.set_defaults(edits=[])


COMMANDS = {
    "branch": lambda args: cmd_branch(
        args.file, args.record, args.edits, args.branch, {k: getattr(args, k) for k in BRANCH_OVERRIDES},
        args.model, args.meta, args.device,
    ),
}
