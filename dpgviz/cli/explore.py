"""`explore`: how well models repair corrupted text, over many samples, mask ratios and models.

    python main.py explore --data FILE [--model CKPT]... --samples N --ratios 0.1,0.3,0.5
                           --strategy random|span|replace|fragment|mix [--length L] [--seed K]
                           [--json] [--csv FILE]

Windows are drawn (seeded) from the held-out last 10% of FILE, the part training never
saw (engine.train.split_corpus); every model sees the same corrupted windows. The table
goes to stdout; `--json` prints {"results": [{"model", "ratio", "accuracy", "true_prob",
"ce", "n"}, ...]} with n the samples evaluated. torch is imported inside the command.
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
from pathlib import Path

from dpgviz.cli.common import UserError, print_json
from dpgviz.core.corruption import CORRUPTION_INFO, CORRUPTIONS
from dpgviz.core.settings import DEVICES

log = logging.getLogger("dpgviz")

DEFAULT_MODEL_ARG = "default"  # `--model default` names the embedded model beside checkpoints
CSV_COLUMNS = ("model", "ratio", "accuracy", "accuracy_std", "true_prob", "true_prob_std", "ce", "ce_std", "n", "positions")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    strategies = "; ".join(f"{k}: {v}" for k, v in CORRUPTION_INFO.items())
    p = sub.add_parser(
        "explore", help="corrupt held-out text and score how well models repair it",
        description=f"Corruption strategies. {strategies}.",
    )
    p.add_argument("--data", required=True, help="UTF-8 text; windows come from its last 10%% (held out)")
    p.add_argument(
        "--model", action="append", default=None,
        help=f"checkpoint to score (repeatable; '{DEFAULT_MODEL_ARG}' = the embedded model, the default)",
    )
    p.add_argument("--meta", help="vocabulary meta.pkl for the checkpoints (default: beside each)")
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.add_argument("--samples", type=int, default=32, help="windows per ratio")
    p.add_argument("--ratios", default="0.1,0.3,0.5,0.7,0.9", help="comma-separated corruption ratios in (0, 1]")
    p.add_argument("--strategy", default="random", choices=CORRUPTIONS)
    p.add_argument("--length", type=int, default=256, help="window length in tokens (capped at the block size)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--whole", action="store_true", help="draw windows from the whole text, not its held-out 10%%")
    p.add_argument("--json", action="store_true")
    p.add_argument("--csv", help="also write the table, with spreads, to this CSV file")


def parse_ratios(text: str) -> list[float]:
    try:
        ratios = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"--ratios must be comma-separated numbers, got {text!r}") from None
    if not ratios or any(not 0.0 < r <= 1.0 for r in ratios):
        raise UserError(f"--ratios must be numbers in (0, 1], got {text!r}")
    return ratios


def write_csv(path: str | Path, rows: list[dict]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def format_table(rows: list[dict]) -> str:
    """A plain-text table, one line per (model, ratio): mean ± std over samples."""
    width = max([len("model"), *(len(r["model"]) for r in rows)])
    lines = [f"{'model':<{width}}  ratio  {'accuracy':<13}  {'p(true)':<13}  {'CE (nats)':<13}  samples  positions"]
    for r in rows:
        lines.append(
            f"{r['model']:<{width}}  {r['ratio']:5.2f}  {r['accuracy']:.4f}±{r['accuracy_std']:.4f}  "
            f"{r['true_prob']:.4f}±{r['true_prob_std']:.4f}  {r['ce']:.4f}±{r['ce_std']:.4f}  "
            f"{r['n']:7d}  {r['positions']:9d}"
        )
    return "\n".join(lines) + "\n"


def cmd_explore(args: argparse.Namespace) -> int:
    ratios = parse_ratios(args.ratios)
    if args.samples < 1:
        raise UserError("--samples must be >= 1")
    if args.length < 1:
        raise UserError("--length must be >= 1")
    try:
        text = Path(args.data).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {args.data}: {exc}") from None

    from dpgviz.core.corruption import CorruptionSettings
    from dpgviz.core.vocab import VocabError
    from dpgviz.engine.checkpoint import load_model
    from dpgviz.engine.explore import ExploreError, explore_batch, source_ids

    models = []
    for spec in args.model or [DEFAULT_MODEL_ARG]:
        is_default = spec == DEFAULT_MODEL_ARG
        loaded = load_model(None if is_default else spec, None if is_default else args.meta, args.device)
        names = {name for name, _ in models}
        name = loaded.name if loaded.name not in names else str(spec)
        models.append((name, loaded))
    try:
        ids = source_ids(text, models[0][1].vocab, held_out=not args.whole)
        rows = explore_batch(
            models, ids, ratios, CorruptionSettings(args.strategy, seed=args.seed).validate(),
            samples=args.samples, length=args.length, seed=args.seed,
        )
    except (ExploreError, VocabError) as exc:
        raise UserError(str(exc)) from None
    table = [row.to_dict() for row in rows]
    if args.csv:
        write_csv(args.csv, table)
        log.info("wrote %s", args.csv)
    if args.json:
        print_json({"results": [row.result() for row in rows]})
    else:
        sys.stdout.write(format_table(table))
    return 0


COMMANDS = {"explore": cmd_explore}
