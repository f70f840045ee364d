"""Pieces every CLI module shares: the user-error type, model and settings arguments, JSON output.

Standard library and dpgviz.core only; no torch (engine modules are imported inside the
commands that need them).
"""

from __future__ import annotations

import argparse
import json
import sys

from dpgviz.core.settings import (
    CACHES,
    DEFAULT_BLOCK_LENGTH,
    DEVICES,
    DTYPES,
    MAX_LENGTH,
    PROPOSALS,
    SCHEDULES,
    STRATEGIES,
    STRATEGY_INFO,
    GenerationSettings,
)


class UserError(Exception):
    """Bad input: printed as one line, exit status 2."""


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="checkpoint (ckpt.pt) or Hugging Face masked-LM folder; default: the embedded model")
    p.add_argument("--meta", help="vocabulary meta.pkl (default: beside the checkpoint or in data/)")
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.add_argument("--dtype", default="auto", choices=DTYPES, help="weights' dtype (auto: float32 on CPU, bfloat16 on CUDA)")


def add_settings_args(p: argparse.ArgumentParser, strategy: bool = True) -> None:
    """The generation settings as flags (`strategy=False`: without --strategy, for `compare`)."""
    d = GenerationSettings()
    p.add_argument(
        "--length",
        type=int,
        default=None,
        help=f"tokens (default {d.length}, capped at the block size; up to {MAX_LENGTH} in blocks)",
    )
    p.add_argument(
        "--block-length",
        type=int,
        default=None,
        help="semi-autoregressive: generate blocks of N tokens one after another, each conditioned on "
        "the text before it (0 = off; default: off, or "
        f"min({DEFAULT_BLOCK_LENGTH}, block size) when --length exceeds the block size)",
    )
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--temperature", type=float, default=d.temperature)
    p.add_argument("--start-ratio", type=float, default=d.start_ratio)
    p.add_argument("--end-ratio", type=float, default=d.end_ratio)
    p.add_argument("--randomness", type=float, default=d.randomness)
    if strategy:
        p.add_argument(
            "--strategy",
            default=d.strategy,
            choices=STRATEGIES,
            help="unmasking strategy: " + "; ".join(f"{k}: {v}" for k, v in STRATEGY_INFO.items()),
        )
    p.add_argument("--schedule", default=d.schedule, choices=SCHEDULES, help="how the mask ratio falls")
    p.add_argument("--proposal", default=d.proposal, choices=PROPOSALS, help="sample a token, or take the argmax")
    p.add_argument("--sample-top-k", type=int, default=d.sample_top_k, help="sample among the k likeliest (0 = all)")
    p.add_argument("--top-p", type=float, default=d.top_p, help="sample within the top-p nucleus (1 = all)")
    p.add_argument("--threshold", type=float, default=d.threshold, help="tau of the threshold strategy")
    p.add_argument("--eta", type=float, default=d.eta, help="remdm: largest remask probability per step")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--top-k", type=int, default=d.top_k, help="candidates recorded per masked position")
    p.add_argument(
        "--cache",
        default=d.cache,
        choices=CACHES,
        help="prefix: reuse the keys and values of the text before each block (Fast-dLLM's prefix KV "
        "cache; an approximation, several times faster in blocks; the built-in GPT only)",
    )
    p.add_argument(
        "--cache-refresh",
        type=int,
        default=d.cache_refresh,
        metavar="K",
        help="with --cache prefix: recompute the cached keys and values every K iterations (0 = once per block)",
    )


def settings_from(args: argparse.Namespace, **extra: object) -> GenerationSettings:
    """The settings of the flags; `extra` fields (cli.runs: a reference sampler's) set too."""
    return GenerationSettings(
        temperature=args.temperature,
        steps=args.steps,
        length=GenerationSettings.length if args.length is None else args.length,
        start_ratio=args.start_ratio,
        end_ratio=args.end_ratio,
        randomness=args.randomness,
        strategy=getattr(args, "strategy", None) or GenerationSettings.strategy,
        schedule=args.schedule,
        proposal=args.proposal,
        sample_top_k=args.sample_top_k,
        top_p=args.top_p,
        threshold=args.threshold,
        eta=args.eta,
        seed=args.seed,
        top_k=args.top_k,
        block_length=getattr(args, "block_length", None) or 0,
        cache=getattr(args, "cache", None) or GenerationSettings.cache,
        cache_refresh=getattr(args, "cache_refresh", None) or 0,
        **extra,
    ).validate()


def print_json(doc: object) -> None:
    """One JSON document on stdout, non-ASCII kept as is."""
    json.dump(doc, sys.stdout, ensure_ascii=False)
    sys.stdout.write("\n")


def preview(text: str, width: int = 48) -> str:
    """A text's first `width` characters on one line (newlines as \u21b5), for tables."""
    flat = text.replace("\n", "\u21b5")
    return flat if len(flat) <= width else flat[: width - 1] + "\u2026"
