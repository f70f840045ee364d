"""`python main.py score FILE --branch ID --model B [--out FILE] [--json]`: where two models disagree.

Model B runs, teacher-forced and without sampling, on exactly the inputs the branch's own
model saw at each of its 'prediction' records (engine.score); its p(token), entropy and
top-K are stored beside the branch's own values as a score layer of that branch
(store.layers), saved in the session: FILE itself, or `--out FILE`. It prints the mean
Jensen-Shannon divergence (bits) per record scored, and where the two disagree most;
`--json` prints {"mean_js": float, "mean_js_by_step": [float, ...]} (one value per record
scored). `show FILE --branch ID --position P --json` then carries B's values too.
"""

from __future__ import annotations

import argparse
import logging
import sys

from dpgviz.cli.common import UserError, print_json
from dpgviz.cli.model_refs import check_same_vocabulary, load_named, provenance_of, recorded_device

log = logging.getLogger(__name__)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    from dpgviz.core.settings import DEVICES, DTYPES

    p = sub.add_parser("score", help="run a second model on one branch's exact inputs: where the two disagree")
    p.add_argument("file")
    p.add_argument("--branch", help="the branch to score (default: the root)")
    p.add_argument("--model", required=True, help="the second model (default = the embedded model)")
    p.add_argument("--meta", help="its vocabulary meta.pkl (default: beside the checkpoint)")
    p.add_argument("--device", choices=DEVICES, help="where model B runs (default: where the branch's model ran)")
    p.add_argument("--dtype", choices=DTYPES, help="model B's weights (default: the branch's model's dtype)")
    p.add_argument("--out", help="save the session with the layer here instead of FILE")
    p.add_argument("--json", action="store_true", help='print {"mean_js": float, "mean_js_by_step": [...]}')


def cmd_score(args: argparse.Namespace) -> int:
    import torch

    from dpgviz.cli.sessions import tqdm_progress
    from dpgviz.engine.sampler import Sampler
    from dpgviz.engine.score import score_branch
    from dpgviz.store.layers import js_summary, put_layer
    from dpgviz.store.provenance import branch_origin
    from dpgviz.store.session_open import open_session
    from dpgviz.store.session_save import save_session, set_aside_damaged

    with open_session(args.file) as session:
        branch = session.branch(args.branch).id
        origin = branch_origin(session, branch)
        threads = origin.runtime.get("threads")
        if threads:  # the thread count the records were made with: same reductions, same bits
            torch.set_num_threads(int(threads))
        device, dtype = recorded_device(origin.runtime, args.device, args.dtype)
        loaded = load_named(args.model, args.meta, device, dtype)
        check_same_vocabulary([(f"of branch {branch}", session.vocab), (args.model, loaded.vocab)])
        provenance = provenance_of(loaded, torch.get_num_threads())
        sampler = Sampler(loaded.adapter, loaded.vocab, loaded.device)
        with tqdm_progress("scoring", unit="record") as progress:
            try:
                layer = score_branch(
                    sampler, session.store, branch, provenance["model"], origin.block_size, progress,
                    info={"runtime": provenance["runtime"]},
                )
            except ValueError as exc:
                raise UserError(str(exc)) from None
        put_layer(session.store, layer)
        out = args.out or args.file
        set_aside_damaged(session, out)  # a partial read must not overwrite the records it could not read
        save_session(
            out, session.store, session.vocab, settings=session.settings, model_path=session.model_path,
            model_sha256=session.model_sha256, model_info=session.model_info, runtime=session.runtime or None,
        )
        summary = js_summary(session.store, layer, session.vocab.size)
        log.info("scored %d records of branch %s with %s; saved %s", len(layer.rows), branch, loaded.name, out)
        if args.json:
            print_json({"mean_js": summary["mean_js"], "mean_js_by_step": summary["mean_js_by_step"]})
            return 0
        sys.stdout.write(_table(session, branch, layer, summary, origin.name))
    return 0


def _table(session, branch: str, layer, summary: dict, own: str) -> str:
    store = session.store
    history = store.history(branch)
    where = {int(r): k for k, r in enumerate(history)}
    lines = [
        f"branch {branch}: {own} (its own) against {layer.name}; Jensen-Shannon divergence in bits (0 = same, 1 = disjoint)",
        f"{'record':>6} {'iteration':>9} {'positions':>9} {'mean JS':>8}",
    ]
    for i, row in enumerate(layer.rows):
        n = int(layer.candidate_mask(i).sum())
        js = summary["mean_js_by_step"][i]
        lines.append(f"{where.get(int(row), -1):>6} {int(store.columns['iteration'][row]):>9} {n:>9} "
                     f"{'-' if js is None else f'{js:.4f}':>8}")
    lines.append(f"mean JS over every position scored: {summary['mean_js']:.4f}")
    worst = summary.get("worst")
    if worst is not None:
        lines.append(f"most disagreement: record {worst['record']}, position {worst['position']} (JS {worst['js']:.4f}); "
                     f"show it: python main.py show FILE --branch {branch} --position {worst['position']}")
    return "\n".join(lines) + "\n"


COMMANDS = {"score": cmd_score}
