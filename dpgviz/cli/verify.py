"""`python main.py verify FILE [--branch ID] [--json]`: re-run a saved branch and compare every record.

The model is found by the sha256 the session recorded (the recorded path, then the known
models: the embedded default, ./out and --models-dir), or named with `--model`, which must
have that hash; a missing or different model is refused in one line naming the hashes,
before anything runs. The re-run uses the recorded device, dtype and thread count
(store.provenance) and engine.replay compares each record bit for bit. It prints
"identical: N records" and exits 0, or "diverges at record K (iteration I, N positions
differ)" and exits 1 (what differs goes to stderr); `--json` prints engine.replay.Outcome.to_dict().
"""

from __future__ import annotations

import argparse
import logging
import sys

from dpgviz.cli.common import UserError, print_json
from dpgviz.cli.model_refs import check_given, find_by_hash, recorded_device

log = logging.getLogger(__name__)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    from dpgviz.core.settings import DEVICES, DTYPES

    p = sub.add_parser("verify", help="re-run a saved branch and check every record is what it was, bit for bit")
    p.add_argument("file")
    p.add_argument("--branch", help="the branch to re-run (default: the root)")
    p.add_argument("--model", help="the model that made it (default: found by its recorded sha256)")
    p.add_argument("--meta", help="its vocabulary meta.pkl (default: beside the checkpoint)")
    p.add_argument("--models-dir", help="another folder of known models to search by hash")
    p.add_argument("--device", choices=DEVICES, help="default: the recorded device")
    p.add_argument("--dtype", choices=DTYPES, help="default: the recorded dtype")
    p.add_argument(
        "--tolerance", type=float, default=0.0,
        help="compare probabilities, scores and entropies within this absolute difference (default 0: bit for bit)",
    )
    p.add_argument("--json", action="store_true", help="print the outcome as JSON")


def cmd_verify(args: argparse.Namespace) -> int:
    from dpgviz.cli.sessions import tqdm_progress
    from dpgviz.engine.replay import plan, replay
    from dpgviz.store.provenance import branch_origin
    from dpgviz.store.session_open import open_session

    if args.tolerance < 0:
        raise UserError("--tolerance must be >= 0")
    with open_session(args.file) as session:
        branch = session.branch(args.branch).id
        segments = plan(session, branch)
        target = branch_origin(session, branch)
        paths: dict[str | None, str | None] = {}  # sha256 -> local model path (None = the embedded default)
        for seg in segments:  # every refusal before anything loads
            sha = seg.origin.sha256
            if sha in paths:
                continue
            if args.model is not None and sha == target.sha256:
                paths[sha] = check_given(args.model, sha, f"branch {branch}")
            else:
                paths[sha] = find_by_hash(sha, seg.origin.path, args.models_dir)
        samplers: dict[str | None, object] = {}

        def sampler_for(origin):
            import torch

            threads = origin.runtime.get("threads")
            if threads:  # the recorded thread count: the same reductions in the same order
                torch.set_num_threads(int(threads))
            if origin.sha256 not in samplers:
                from dpgviz.engine.checkpoint import load_model
                from dpgviz.engine.sampler import Sampler

                device, dtype = recorded_device(origin.runtime, args.device, args.dtype)
                path = paths[origin.sha256]
                meta = args.meta if path == paths.get(target.sha256) else None
                loaded = load_model(path, meta, device, dtype)
                if tuple(loaded.vocab.itos) != tuple(session.vocab.itos):
                    raise UserError(f"model {loaded.name} has another vocabulary than the session")
                samplers[origin.sha256] = Sampler(loaded.adapter, loaded.vocab, loaded.device)
            return samplers[origin.sha256]

        with tqdm_progress("verifying", unit="record") as progress:
            outcome = replay(session.store, segments, sampler_for, progress, args.tolerance)
    if args.json:
        print_json(outcome.to_dict())
    else:
        sys.stdout.write(outcome.line() + "\n")
    if not outcome.is_identical:
        if outcome.detail():
            sys.stderr.write(f"dpgviz: {outcome.detail()}\n")
        for note in runtime_differences(target.runtime):
            sys.stderr.write(f"dpgviz: {note}\n")
    return 0 if outcome.is_identical else 1


def runtime_differences(recorded: dict) -> list[str]:
    """What differs between the recorded runtime and this one (why a re-run may not be exact)."""
    import torch

    from dpgviz.store.provenance import runtime_of

    here = {**runtime_of({}), "torch": torch.__version__}
    notes = [
        f"the records were made with {key} {recorded.get(key)!r}, this re-run has {here.get(key)!r}"
        for key in ("torch", "numpy", "dpgviz", "mkl_cbwr")
        if key in recorded and recorded.get(key) != here.get(key)
    ]
    if "mkl_cbwr" not in recorded:
        notes.append("the records were made before dpgviz set MKL_CBWR (core.determinism): their last bits may vary")
    return notes


COMMANDS = {"verify": cmd_verify}
