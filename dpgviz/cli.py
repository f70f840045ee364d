"""Command-line front: `python main.py [command]`. With no command it opens the app.

Only argument parsing and printing live here; each command calls into the package.
Engine modules (torch) are imported inside the commands that need them, so
`python main.py` (the GUI) never imports torch in its own process.
Bad input ends with a one-line reason on stderr and a non-zero exit status.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from dpgviz.core.settings import STRATEGIES, GenerationSettings, SettingsError
from dpgviz.core.vocab import MASK_GLYPH

log = logging.getLogger("dpgviz")


class UserError(Exception):
    """Bad input: printed as one line, exit status 2."""


# -- parsers ------------------------------------------------------------------------------
def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="checkpoint (ckpt.pt); default: the embedded model")
    p.add_argument("--meta", help="vocabulary meta.pkl (default: beside the checkpoint or in data/)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))


def _settings_args(p: argparse.ArgumentParser) -> None:
    d = GenerationSettings()
    p.add_argument("--length", type=int, default=None, help=f"tokens (default {d.length}, capped at the block size)")
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--temperature", type=float, default=d.temperature)
    p.add_argument("--start-ratio", type=float, default=d.start_ratio)
    p.add_argument("--end-ratio", type=float, default=d.end_ratio)
    p.add_argument("--randomness", type=float, default=d.randomness)
    p.add_argument("--strategy", default=d.strategy, choices=STRATEGIES)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--top-k", type=int, default=d.top_k, help="candidates recorded per masked position")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dpgviz", description="Visualize masked-diffusion language models.")
    parser.add_argument("--models-dir", help="extra folder to look for checkpoints in (GUI)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="GUI worker device")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command")

    p = sub.add_parser("generate", help="run a generation and print the final text")
    _model_args(p)
    _settings_args(p)
    p.add_argument("--json", action="store_true", help="print every record as JSON")
    p.add_argument("--out", help="also save the run as a session file")

    p = sub.add_parser("inspect", help="one forward pass: top-K candidates per position")
    _model_args(p)
    p.add_argument("--text", required=True, help=f"text to inspect; {MASK_GLYPH} (U+2588) marks a mask")
    p.add_argument("--top", type=int, default=5)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("models", help="list the models found")
    p.add_argument("--models-dir")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("train", help="train a char-level masked-diffusion model")
    p.add_argument("--data", required=True, help="UTF-8 text file")
    p.add_argument("--out", required=True, help="output folder (ckpt.pt, meta.pkl)")
    p.add_argument("--n-layer", type=int, default=6)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--n-embd", type=int, default=256)
    p.add_argument("--block-size", type=int, default=1024)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--iters", type=int, default=5000)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--eval-interval", type=int, default=250)
    p.add_argument("--eval-batches", type=int, default=8)
    p.add_argument("--log-interval", type=int, default=50)
    p.add_argument("--max-minutes", type=float, default=0.0, help="stop and save after this long")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (GPU)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt or OUT/ckpt.pt")

    p = sub.add_parser("evaluate", help="held-out masked CE and word realism of a model")
    _model_args(p)
    p.add_argument("--data", required=True, help="the corpus; its last 10%% is held out")
    p.add_argument("--windows", type=int, default=0, help="limit held-out windows (0 = all)")
    p.add_argument("--samples", type=int, default=10)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("bench", help="benchmarks")
    bench = p.add_subparsers(dest="bench", required=True)
    b = bench.add_parser("worker", help="bare forward vs in-process sampler vs worker+transport")
    _model_args(b)
    b.add_argument("--length", type=int, default=256)
    b.add_argument("--steps", type=int, default=20)
    b.add_argument("--json", action="store_true")
    b = bench.add_parser("sampler", help="per-iteration time of each strategy vs one bare forward pass")
    _model_args(b)
    b.add_argument("--length", type=int, default=256)
    b.add_argument("--steps", type=int, default=10)
    b.add_argument("--rounds", type=int, default=3)
    b.add_argument("--json", action="store_true")

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
    p.add_argument("--mode", default="mask-state", choices=("mask-state", "confidence", "score", "entropy"),
                   help="colouring of PNG and GIF exports")
    p.add_argument("--out", required=True)
    return parser


def settings_from(args: argparse.Namespace) -> GenerationSettings:
    return GenerationSettings(
        temperature=args.temperature,
        steps=args.steps,
        length=GenerationSettings.length if args.length is None else args.length,
        start_ratio=args.start_ratio,
        end_ratio=args.end_ratio,
        randomness=args.randomness,
        strategy=args.strategy,
        seed=args.seed,
        top_k=args.top_k,
    ).validate()


# -- commands -----------------------------------------------------------------------------
def cmd_generate(args: argparse.Namespace) -> int:
    from dpgviz.core.records import KINDS
    from dpgviz.core.vocab import Vocabulary
    from dpgviz.ipc.runner import WorkerFailed, run_via_worker

    settings = settings_from(args)
    from tqdm import tqdm

    bar = tqdm(total=None, unit="step", file=sys.stderr, disable=None, desc="loading model")

    def on_event(event: object) -> None:
        name = type(event).__name__
        if name == "RunStarted":
            bar.reset(total=2 * settings.steps + 1)  # initial, (prediction, remask) x (S-1), prediction, final
            bar.set_description("denoising")
        elif name == "StepReady":
            bar.update(1)

    try:
        info, store, branch, _summary = run_via_worker(
            settings, args.model, args.meta, args.device, on_event=on_event, cap_length=args.length is None
        )
    except WorkerFailed as exc:
        raise UserError(str(exc)) from None
    finally:
        bar.close()
    vocab = Vocabulary(itos=tuple(info["itos"]), model_vocab_size=info.get("n_ids", 0))
    table = vocab.strings()
    rows = store.rows(branch)
    tokens = store.column("tokens")
    final_text = "".join(table[tokens[rows[-1]].astype(int)])
    if args.out:
        from dpgviz.store.commands import save_run

        save_run(args.out, store, info, settings.to_dict())
    if args.json:
        records = [
            {
                "iteration": int(store.column("iteration")[r]),
                "kind": KINDS[int(store.column("kind")[r])],
                "text": "".join(table[tokens[r].astype(int)]),
                "masked": int(store.column("n_masked")[r]),
            }
            for r in rows
        ]
        json.dump({"final_text": final_text, "records": records}, sys.stdout, ensure_ascii=False)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(final_text + "\n")
    return 0


def _load(args: argparse.Namespace):
    from dpgviz.engine.checkpoint import load_model

    return load_model(args.model, args.meta, args.device)


def cmd_inspect(args: argparse.Namespace) -> int:
    import torch

    from dpgviz.core.vocab import VocabError

    loaded = _load(args)
    if not args.text:
        raise UserError("--text is empty")
    if len(args.text) > loaded.config.block_size:
        raise UserError(f"text has {len(args.text)} tokens, more than the block size {loaded.config.block_size}")
    if args.top < 1:
        raise UserError("--top must be >= 1")
    try:
        ids = loaded.vocab.encode(args.text)
    except VocabError as exc:
        raise UserError(str(exc)) from None
    with torch.inference_mode():
        logits = loaded.model(torch.as_tensor(ids, device=loaded.device)[None])[0, :, : loaded.vocab.size].float()
        probs, top = torch.softmax(logits, -1).topk(min(args.top, loaded.vocab.size), dim=-1)
    probs, top = probs.cpu().numpy(), top.cpu().numpy()
    itos = loaded.vocab.itos
    positions = [
        {
            "pos": i,
            "token": None if ids[i] == loaded.vocab.mask_id else itos[ids[i]],
            "top": [[itos[t], round(float(p), 6)] for t, p in zip(top[i], probs[i], strict=True)],
        }
        for i in range(len(ids))
    ]
    if args.json:
        json.dump({"positions": positions}, sys.stdout, ensure_ascii=False)
        sys.stdout.write("\n")
    else:
        for entry in positions:
            shown = MASK_GLYPH if entry["token"] is None else repr(entry["token"])
            cands = "  ".join(f"{c!r}:{p:.3f}" for c, p in entry["top"])
            sys.stdout.write(f"{entry['pos']:5d} {shown:>6}  {cands}\n")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from dpgviz.core.discovery import find_checkpoints
    from dpgviz.engine.checkpoint import CheckpointError, load_model

    models = []
    for entry in find_checkpoints(Path("out"), args.models_dir):
        try:
            loaded = load_model(None if entry.is_default else entry.path, None if entry.is_default else entry.meta, "cpu")
        except CheckpointError as exc:
            log.warning("skipping %s: %s", entry.path, exc)
            continue
        models.append(
            {
                "name": entry.name,
                "path": str(entry.path),
                "meta": str(loaded.meta_path) if loaded.meta_path else None,
                "block_size": loaded.config.block_size,
                "params": loaded.params,
                "default": entry.is_default,
            }
        )
    if args.json:
        json.dump({"models": models}, sys.stdout, ensure_ascii=False)
        sys.stdout.write("\n")
    else:
        for m in models:
            mark = "*" if m["default"] else " "
            sys.stdout.write(f"{mark} {m['name']:40s} {m['params'] / 1e6:6.2f}M  block {m['block_size']:5d}  {m['path']}\n")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from dpgviz.engine.train import TrainConfig, train

    if not Path(args.data).is_file():
        raise UserError(f"no such data file: {args.data}")
    cfg = TrainConfig(
        data=args.data, out=args.out, n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd,
        block_size=args.block_size, batch_size=args.batch_size, iters=args.iters, lr=args.lr,
        dropout=args.dropout, warmup=args.warmup, eval_interval=args.eval_interval,
        eval_batches=args.eval_batches, log_interval=args.log_interval, device=args.device,
        resume=args.resume, max_minutes=args.max_minutes, compile=args.compile,
    )
    try:
        summary = train(cfg)
    except (ValueError, UnicodeDecodeError) as exc:
        raise UserError(str(exc)) from None
    log.info("done: %d iterations, best held-out masked CE %.4f, %.1f minutes", summary["iters"], summary["best_val_ce"], summary["minutes"])
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from dpgviz.engine.evaluate import evaluate

    loaded = _load(args)
    try:
        text = Path(args.data).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {args.data}: {exc}") from None
    result = evaluate(loaded, text, max_windows=args.windows, samples=args.samples)
    if args.json:
        json.dump(result, sys.stdout, ensure_ascii=False)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(f"held-out masked CE (mean over ratios 0.1..0.9): {result['masked_ce']:.4f} nats\n")
        for ratio, ce in result["masked_ce_by_ratio"].items():
            sys.stdout.write(f"  ratio {ratio}: {ce:.4f}\n")
        sys.stdout.write(f"words found in the corpus: {100 * result['word_share']:.1f}% of {args.samples} samples\n")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    if args.bench == "sampler":
        from dpgviz.engine.bench_sampler import main as bench_sampler

        bench_sampler(args.length, args.steps, args.rounds, args.model, args.meta, args.device, args.json)
        return 0
    from dpgviz.bench import bench_worker

    bench_worker(args.length, args.steps, args.model, args.meta, args.device, args.json)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from dpgviz.store.commands import cmd_show as show

    return show(args.file, args.branch, args.json)


def cmd_export(args: argparse.Namespace) -> int:
    from dpgviz.store.commands import cmd_export as export

    return export(args.file, args.format, args.branch, args.record, args.frame_ms, args.out, mode=args.mode)


def cmd_gui(args: argparse.Namespace, session: str | None = None) -> int:
    from dpgviz.gui.app import run_app

    run_app(models_dir=args.models_dir, device=args.device, session=session)
    return 0


COMMANDS = {
    "generate": cmd_generate,
    "inspect": cmd_inspect,
    "models": cmd_models,
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "bench": cmd_bench,
    "show": cmd_show,
    "export": cmd_export,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s" if args.verbose else "%(message)s",
        stream=sys.stderr,
    )
    from dpgviz.core.vocab import VocabError

    user_errors: tuple[type[Exception], ...] = (UserError, SettingsError, VocabError, FileNotFoundError)
    try:
        if args.command is None:
            return cmd_gui(args)
        if args.command == "open":
            return cmd_gui(args, session=args.file)
        return COMMANDS[args.command](args)
    except user_errors as exc:
        sys.stderr.write(f"dpgviz: {exc}\n")
        return 2
    except ValueError as exc:  # CheckpointError, SessionError and friends are ValueErrors with a user message
        sys.stderr.write(f"dpgviz: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("dpgviz: interrupted\n")
        return 130
    except BrokenPipeError:  # `show --json | head`: the reader left; not an error of ours
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
