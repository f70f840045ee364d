"""`python main.py compare`: several unmasking strategies on the same model and seed, or
(`--models A,B[,C...]`) one strategy on several models.

Prints a table (or `--json`: {"results": [{strategy, final_text, forward_passes,
steps_per_s, mean_confidence}, ...]}, with "model" in place of "strategy" for --models);
`--out FILE` saves every run as a sibling branch of one session, which the app opens with
the first two side by side. Models must share a vocabulary; `default` names the embedded one.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from dpgviz.cli.common import UserError, add_model_args, add_settings_args, preview, print_json, settings_from
from dpgviz.core.settings import STRATEGIES

log = logging.getLogger(__name__)

DEFAULT_STRATEGIES = ",".join(STRATEGIES)


def strategy_list(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in names if s not in STRATEGIES]
    if unknown:
        raise UserError(f"unknown strategy {', '.join(unknown)}; choose from {', '.join(STRATEGIES)}")
    if not names:
        raise UserError("--strategies needs at least one strategy")
    if len(set(names)) != len(names):
        raise UserError("--strategies names a strategy twice")
    return names


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="run several unmasking strategies on the same model and seed")
    p.add_argument(
        "--strategies", default=None, help=f"comma-separated (default: all: {DEFAULT_STRATEGIES}; "
        "with --models one strategy, default seed)",
    )
    p.add_argument(
        "--models", metavar="A,B[,C...]",
        help="run the same settings, seed and strategy on each of these models instead (default = the embedded model)",
    )
    add_model_args(p)
    add_settings_args(p, strategy=False)
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--out", help="save every run as a sibling branch of one session file")
    p.add_argument("--words", help="a corpus: also report the share of words of each text found in it")


_preview = preview  # cli.common: a final text's first characters on one line


def cmd_compare(args: argparse.Namespace) -> int:
    import dataclasses

    from dpgviz.cli.runs import _load
    from dpgviz.engine.compare import compare_strategies, comparison_store, known_words, word_validity
    from dpgviz.engine.sampler import Sampler

    if args.models is not None:
        from dpgviz.cli.compare_models import cmd_compare_models

        return cmd_compare_models(args)
    names = strategy_list(args.strategies or DEFAULT_STRATEGIES)
    settings = settings_from(args)
    known: set[str] | None = None
    if args.words:
        try:
            known = known_words(Path(args.words).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"cannot read {args.words}: {exc}") from None
    loaded = _load(args)
    sampler = Sampler(loaded.adapter, loaded.vocab, loaded.device)
    block_size = sampler.block_size
    if args.length is None:
        settings = settings.capped(block_size)
    elif args.out is None:
        settings = settings.with_default_blocks(block_size)
    settings = settings.validate(block_size)
    store = comparison_store(sampler, settings, len(names)) if args.out else None

    def progress(result) -> None:
        log.info("%-9s %5d passes  %7.2f steps/s", result.strategy, result.forward_passes, result.steps_per_s)

    results = compare_strategies(sampler, settings, names, store, on_done=None if args.json else progress)
    rows = [r.to_dict() for r in results]
    if known is not None:
        for row, r in zip(rows, results, strict=True):
            row["word_validity"] = word_validity(r.final_text, known)
    if args.out:
        from dpgviz.cli.sessions import save_run

        save_run(args.out, store, loaded.info(), dataclasses.replace(settings, strategy=names[0]), loaded.path)
    if args.json:
        print_json({"results": rows})
        return 0
    head = f"{'strategy':<10} {'passes':>6} {'steps/s':>8} {'mean conf':>9}"
    head += f" {'words':>6}" if known is not None else ""
    sys.stdout.write(f"{settings.length} tokens, {settings.steps} steps, seed {settings.seed}\n{head}  final text\n")
    for row in rows:
        line = f"{row['strategy']:<10} {row['forward_passes']:>6} {row['steps_per_s']:>8.2f} {row['mean_confidence']:>9.3f}"
        if known is not None:
            line += f" {100 * row['word_validity']:>5.1f}%"
        sys.stdout.write(f"{line}  {_preview(row['final_text'])}\n")
    if args.out:
        sys.stdout.write(f"saved {args.out}: one branch per strategy (open it: python main.py open {args.out})\n")
    return 0


COMMANDS = {"compare": cmd_compare}
