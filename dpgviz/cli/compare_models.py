"""`python main.py compare --models A,B[,C...]`: one strategy, seed and schedule on several models.

The same settings run on each model (`default` = the embedded one) through the one sampler
(engine.compare.compare_models). `--json` prints {"results": [{"model", "final_text",
"forward_passes", "steps_per_s", "mean_confidence"}, ...]} (plus "word_validity" with
--words); `--out FILE` saves the runs as sibling branches of one all-masked start, each
branch recording which model made it (sha256, runtime), so `score` and `verify` find it.
Models that do not share a vocabulary are refused in one line.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

from dpgviz.cli.common import UserError, preview, print_json, settings_from
from dpgviz.cli.model_refs import check_same_vocabulary, load_named, model_list, provenance_of

log = logging.getLogger(__name__)


def _strategy(args: argparse.Namespace) -> str:
    from dpgviz.core.settings import STRATEGIES, GenerationSettings

    if args.strategies is None:
        return GenerationSettings.strategy
    names = [s.strip() for s in args.strategies.split(",") if s.strip()]
    if len(names) != 1:
        raise UserError("--models runs one strategy on every model: give --strategies NAME with one name")
    if names[0] not in STRATEGIES:
        raise UserError(f"unknown strategy {names[0]}; choose from {', '.join(STRATEGIES)}")
    return names[0]


def cmd_compare_models(args: argparse.Namespace) -> int:
    import torch

    from dpgviz.engine.compare import compare_models, comparison_store, known_words, word_validity
    from dpgviz.engine.sampler import Sampler

    if args.model is not None:
        raise UserError("--model and --models do not go together: name every model in --models")
    names = model_list(args.models)
    if len(set(names)) != len(names):
        raise UserError("--models names a model twice")
    settings = dataclasses.replace(settings_from(args), strategy=_strategy(args))
    known: set[str] | None = None
    if args.words:
        try:
            known = known_words(Path(args.words).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"cannot read {args.words}: {exc}") from None
    loaded = [(name, load_named(name, args.meta, args.device, args.dtype)) for name in names]
    check_same_vocabulary([(name, m.vocab) for name, m in loaded])
    threads = torch.get_num_threads()
    labels: list[str] = []
    for name, m in loaded:  # the model's own name on its branch; the name given when two share one
        labels.append(m.name if m.name not in labels else name)
    models = [
        (label, Sampler(m.adapter, m.vocab, m.device), provenance_of(m, threads))
        for label, (_, m) in zip(labels, loaded, strict=True)
    ]
    block_size = min(s.block_size for _, s, _ in models)
    if args.length is None:
        settings = settings.capped(block_size)
    elif args.out is None:
        settings = settings.with_default_blocks(block_size)
    settings = settings.validate(block_size)
    widest = max(models, key=lambda m: m[1].vocab.n_ids)[1]  # records of every model fit its layout
    store = comparison_store(widest, settings, len(models)) if args.out else None

    def progress(result) -> None:
        log.info("%-24s %5d passes  %7.2f steps/s", result.strategy, result.forward_passes, result.steps_per_s)

    results = compare_models(models, settings, store, on_done=None if args.json else progress)
    rows = []
    for name, r in zip(names, results, strict=True):
        row = {"model": name, **{k: v for k, v in r.to_dict().items() if k != "strategy"}}
        if known is not None:
            row["word_validity"] = word_validity(r.final_text, known)
        rows.append(row)
    if args.out:
        from dpgviz.cli.sessions import save_run

        first = loaded[0][1]
        save_run(args.out, store, first.info(threads=threads), settings, first.path)
    if args.json:
        print_json({"results": rows})
        return 0
    width = max(10, *(len(r["model"]) for r in rows))
    head = f"{'model':<{width}} {'passes':>6} {'steps/s':>8} {'mean conf':>9}" + (f" {'words':>6}" if known else "")
    sys.stdout.write(
        f"{settings.length} tokens, {settings.steps} steps, strategy {settings.strategy}, seed {settings.seed}\n"
        f"{head}  final text\n"
    )
    for row in rows:
        line = f"{row['model']:<{width}} {row['forward_passes']:>6} {row['steps_per_s']:>8.2f} {row['mean_confidence']:>9.3f}"
        if known is not None:
            line += f" {100 * row['word_validity']:>5.1f}%"
        sys.stdout.write(f"{line}  {preview(row['final_text'])}\n")
    if args.out:
        sys.stdout.write(f"saved {args.out}: one branch per model (open it: python main.py open {args.out})\n")
    return 0
