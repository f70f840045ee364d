"""Model commands: `generate`, `inspect`, `models`, `train`, `evaluate`.

Each takes the parsed arguments, prints its output on stdout and returns an exit status;
torch and dpgviz.engine are imported inside the commands, never at module import.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

from dpgviz.cli.common import UserError, add_model_args, add_settings_args, print_json, settings_from
from dpgviz.cli.worker import add_connect_args, cmd_remote_models, connect_factory
from dpgviz.core.records import run_record_count
from dpgviz.core.settings import DEVICES, GenerationSettings
from dpgviz.core.vocab import MASK_GLYPH

log = logging.getLogger("dpgviz")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="run a generation and print the final text")
    add_model_args(p)
    add_settings_args(p)
    start = p.add_mutually_exclusive_group()
    start.add_argument("--prompt", metavar="TEXT", help="fixed text the run starts with; --length masked positions follow")
    start.add_argument("--prompt-file", metavar="FILE", help="the prompt read from a UTF-8 file")
    start.add_argument(
        "--init", metavar="TEMPLATE",
        help=f"infilling: each {MASK_GLYPH} (U+2588) is a position to fill, the rest stays as written",
    )
    p.add_argument("--chat", action="store_true", help="wrap the prompt in the model's own chat template first")
    p.add_argument("--json", action="store_true", help="print every record as JSON")
    p.add_argument(
        "--full-text", action="store_true",
        help="with --json on a run in blocks: the whole text in every record, not only in the last",
    )
    p.add_argument("--out", help="also save the run as a session file")
    p.add_argument("--ids", action="store_true", help="with --json: each record's token ids (key ids), the whole "
                   "sequence with the prompt, in the model's own id space (LLaDA's mask is 126336)")
    add_reference_args(p)
    add_connect_args(p)

    p = sub.add_parser("inspect", help="one forward pass: top-K candidates per position")
    add_model_args(p)
    p.add_argument("--text", required=True, help=f"text to inspect; {MASK_GLYPH} (U+2588) marks a mask")
    p.add_argument("--top", type=int, default=5)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("models", help="list the models found")
    p.add_argument("--models-dir")
    p.add_argument("--json", action="store_true")
    add_connect_args(p)

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
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt or OUT/ckpt.pt")

    p = sub.add_parser("evaluate", help="held-out masked CE and word realism of a model")
    add_model_args(p)
    p.add_argument("--data", required=True, help="the corpus; its last 10%% is held out")
    p.add_argument("--windows", type=int, default=0, help="limit held-out windows (0 = all)")
    p.add_argument("--samples", type=int, default=10)
    p.add_argument("--json", action="store_true")


REFERENCE_FLAGS = {  # flag -> the settings field it sets (what the user gave keeps its value)
    "--temperature": "temperature", "--steps": "steps", "--length": "length", "--block-length": "block_length",
    "--strategy": "strategy", "--remasking": "strategy", "--alg": "strategy", "--top-p": "top_p",
    "--sample-top-k": "sample_top_k", "--cfg-scale": "cfg_scale", "--alg-temp": "alg_temp", "--eps": "eps",
}
REMASKING = {"low_confidence": "llada", "random": "random"}  # LLaDA's names -> dpgviz's strategies
ALGS = {"origin": "origin", "maskgit_plus": "llada", "topk_margin": "margin", "entropy": "entropy"}  # Dream's


def add_reference_args(p: argparse.ArgumentParser) -> None:
    """A llada:/dream: folder's own sampler (engine.dllm_sampling) and its options."""
    p.add_argument("--sampler", choices=("reference", "dpgviz"), default=None,
                   help="llada:/dream: folders: the reference's own sampler (default) or dpgviz's loop")
    p.add_argument("--remasking", choices=tuple(REMASKING), help="LLaDA's remasking (sets --strategy)")
    p.add_argument("--alg", choices=tuple(ALGS), help="Dream's alg (sets --strategy)")
    p.add_argument("--cfg-scale", type=float, default=0.0, help="LLaDA: classifier-free guidance scale")
    p.add_argument("--logits-eos-inf", action="store_true", help="LLaDA: the EOS logit set to -inf")
    p.add_argument("--confidence-eos-eot-inf", action="store_true", help="LLaDA: EOS/EoT confidence set to -inf")
    p.add_argument("--alg-temp", type=float, default=0.0, help="Dream: alg_temp (0 = None: top-k commits)")
    p.add_argument("--eps", type=float, default=1e-3, help="Dream: the last timestep")


def _family(model: str | None) -> str | None:
    kind = (model or "").split(":", 1)[0]
    return kind if kind in ("llada", "dream") and ":" in (model or "") else None


def reference_settings(args: argparse.Namespace, argv: list[str]) -> GenerationSettings:
    """`generate`'s settings: for a llada:/dream: folder its reference's sampler with the
    reference's defaults (core.reference) under what the flags give; else dpgviz's, as before."""
    from dpgviz.core.reference import with_reference_defaults

    family = _family(args.model)
    if args.remasking:
        args.strategy = REMASKING[args.remasking]
    if args.alg:
        args.strategy = ALGS[args.alg]
    if family is None or args.sampler == "dpgviz":
        if args.remasking or args.alg:
            raise UserError("--remasking and --alg choose a reference sampler's rule: give a llada:/dream: model")
        return settings_from(args)
    given = {REFERENCE_FLAGS[a.split("=", 1)[0]] for a in argv if a.split("=", 1)[0] in REFERENCE_FLAGS}
    extra = dict(sampler=family, cfg_scale=args.cfg_scale, logits_eos_inf=args.logits_eos_inf,
                 confidence_eos_eot_inf=args.confidence_eos_eot_inf, alg_temp=args.alg_temp, eps=args.eps)
    from dpgviz.core.settings import SettingsError

    try:
        base = GenerationSettings(**{**_flag_fields(args), **extra, "temperature": 1.0})
        settings = with_reference_defaults(base, family, given)
        if "temperature" in given:
            settings = dataclasses.replace(settings, temperature=args.temperature)
        return settings.validate()
    except SettingsError as exc:
        raise UserError(str(exc)) from None


def _flag_fields(args: argparse.Namespace) -> dict:
    return dict(
        steps=args.steps, length=GenerationSettings.length if args.length is None else args.length,
        start_ratio=args.start_ratio, end_ratio=args.end_ratio, randomness=args.randomness,
        strategy=args.strategy, schedule=args.schedule, proposal=args.proposal, sample_top_k=args.sample_top_k,
        top_p=args.top_p, threshold=args.threshold, eta=args.eta, seed=args.seed, top_k=args.top_k,
        block_length=args.block_length or 0,
    )


def tokenized_prompt(args: argparse.Namespace, settings: GenerationSettings) -> GenerationSettings:
    """A llada:/dream: folder's prompt split by the model's own tokenizer, loaded alone before
    the model (engine.dllm.tokenize_prompt), its ids in settings.prompt_ids; a character it
    cannot encode is refused here, each one named."""
    family = _family(args.model)
    if family is None or not settings.prompt or settings.template:
        return settings
    folder = Path(args.model.split(":", 1)[1])
    if not (folder / "config.json").is_file():
        return settings  # a remote worker's folder, or none: the worker says what is wrong
    from dpgviz.core.prompt import PromptError
    from dpgviz.engine.dllm import FAMILIES, HFError, _mask_id, _raw_config, load_tokenizer, tokenize_prompt

    try:
        tok = load_tokenizer(family, folder)
        mask = _mask_id(FAMILIES[family], _raw_config(folder), tok)
        ids = tokenize_prompt(tok, settings.prompt, settings.chat, mask)
    except (PromptError, HFError) as exc:
        raise UserError(str(exc)) from None
    internal = tuple(i - (i > mask) for i in ids)  # dpgviz's ids: the mask's column removed (core.reference)
    return dataclasses.replace(settings, prompt_ids=internal)


def prompt_settings(args: argparse.Namespace, settings: GenerationSettings) -> GenerationSettings:
    """`settings` with the prompt, template or chat of `generate`'s flags (core.prompt), checked
    as far as it can be without a model; UserError in one line."""
    from dpgviz.core.prompt import PromptError, check_prompt, normalised

    text, template = args.prompt, False
    if args.prompt_file is not None:
        try:
            text = Path(args.prompt_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"cannot read the prompt file {args.prompt_file}: {exc}") from None
    if args.init is not None:
        text, template = args.init, True
        if args.length is not None:
            raise UserError(f"--length does not go with --init: each {MASK_GLYPH} is one position to fill")
    if args.chat and text is None:
        raise UserError("--chat wraps a prompt in the model's chat template: give --prompt or --prompt-file")
    if text is None:
        return settings
    settings = normalised(dataclasses.replace(settings, prompt=text, template=template, chat=args.chat))
    try:
        check_prompt(settings)
    except PromptError as exc:
        raise UserError(str(exc)) from None
    return settings


def cmd_generate(args: argparse.Namespace) -> int:
    from dpgviz.core.model_info import ModelInfo
    from dpgviz.core.prompt import PromptError, context_note, fit_to_model, prompt_json
    from dpgviz.core.records import FLAG_PROMPT
    from dpgviz.ipc.runner import WorkerFailed, run_via_worker
    from dpgviz.store.blocks import compose, composed_records_json, final_text

    settings = tokenized_prompt(args, prompt_settings(args, reference_settings(args, sys.argv[1:])))
    # An explicit --length over the model's block size runs in blocks of a default length
    # unless --block-length says otherwise (0 keeps it off, and the length is refused).
    auto_blocks = args.length is not None and args.block_length is None
    from tqdm import tqdm

    bar = tqdm(total=None, unit="step", file=sys.stderr, disable=None, desc="loading model")
    ran: list[GenerationSettings] = [settings]  # what runs, once the model's block size is known

    def on_loaded(info: ModelInfo) -> None:
        block_size = info.block_size
        try:  # as run_via_worker fits them, to say what it chose (and refuse a prompt the model cannot read)
            fitted, encoded = fit_to_model(
                settings, info.vocab(), info.chat_wrap, block_size, cap_length=args.length is None,
                auto_blocks=auto_blocks, model_name=info.name,
            )
        except PromptError as exc:
            raise UserError(str(exc)) from None
        if fitted.block_length != settings.block_length:
            total = settings.length if encoded is None else encoded.n
            bar.write(
                f"length {total} exceeds the block size {block_size}: generating in blocks of "
                f"{fitted.block_length} (--block-length)",
                file=sys.stderr,
            )
        note = context_note(fitted, encoded, block_size)  # said once: a long prompt keeps its last part
        if note is not None:
            bar.write(note, file=sys.stderr)
        ran[0] = fitted

    def on_event(event: object) -> None:
        name = type(event).__name__
        if name == "RunStarted":
            bar.reset(total=run_record_count(ran[0]))
            bar.set_description("denoising")
        elif name == "StepReady":
            bar.update(1)

    try:
        info, store, branch, summary = run_via_worker(
            settings, args.model, args.meta, args.device, on_event=on_event, cap_length=args.length is None,
            on_loaded=on_loaded, auto_blocks=auto_blocks, dtype=args.dtype, source_factory=connect_factory(args),
        )
    except WorkerFailed as exc:
        raise UserError(str(exc)) from None
    finally:
        bar.close()
    settings = GenerationSettings.from_dict(summary["settings"])  # block length and capping applied
    rows = store.rows(branch)
    # A block run's records hold one block each; their JSON carries that block's "text" and
    # the whole sequence composed (store.blocks) only in the last record, unless --full-text.
    records = composed_records_json(store, rows, info.vocab(), full_text=args.full_text)
    if args.out:
        from dpgviz.cli.sessions import save_run

        save_run(args.out, store, info, settings.to_dict())
    if args.json:
        if args.ids:
            add_model_ids(records, store, rows, info)
        doc = {"final_text": final_text(records), "records": records}
        if settings.has_prompt:  # only then: a run without a prompt prints exactly what it did before
            fixed = compose(store, rows, 0, "flags", info.mask_id) & FLAG_PROMPT != 0
            doc = {"prompt": prompt_json(settings, fixed), **doc}
        print_json(doc)
    else:
        sys.stdout.write(final_text(records) + "\n")
    return 0


def add_model_ids(records: list[dict], store, rows, info) -> None:
    """Each record's whole sequence (the prompt too) in the model's own ids, key "ids"."""
    from dpgviz.core.reference import to_model_ids
    from dpgviz.store.blocks import Composer

    composer = Composer(store, rows, info.mask_id)
    for i, rec in enumerate(records):
        tokens = composer.field("tokens", i)
        rec["ids"] = to_model_ids(tokens, info.mask_id, info.model_mask_id).tolist()


def _load(args: argparse.Namespace):
    from dpgviz.engine.checkpoint import load_model

    return load_model(args.model, args.meta, args.device, getattr(args, "dtype", "auto"))


def cmd_inspect(args: argparse.Namespace) -> int:
    import torch

    from dpgviz.core.vocab import VocabError

    loaded = _load(args)
    if not args.text:
        raise UserError("--text is empty")
    if args.top < 1:
        raise UserError("--top must be >= 1")
    try:
        ids = loaded.vocab.encode(args.text)
    except VocabError as exc:
        raise UserError(str(exc)) from None
    if len(ids) > loaded.block_size:
        raise UserError(f"text has {len(ids)} tokens, more than the block size {loaded.block_size}")
    with torch.inference_mode():
        logits = loaded.adapter.logits(torch.as_tensor(ids, device=loaded.device)[None])[0, :, : loaded.vocab.size].float()
        logits[:, list(loaded.vocab.never_sample)] = -float("inf")  # specials, as the sampler leaves them out
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
        print_json({"positions": positions})
    else:
        for entry in positions:
            shown = MASK_GLYPH if entry["token"] is None else repr(entry["token"])
            cands = "  ".join(f"{c!r}:{p:.3f}" for c, p in entry["top"])
            sys.stdout.write(f"{entry['pos']:5d} {shown:>6}  {cands}\n")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    if args.connect:  # the worker host's models, as its Load list shows them
        return cmd_remote_models(args)
    from dpgviz.core.discovery import find_checkpoints, split_prefixed
    from dpgviz.engine.checkpoint import CheckpointError, load_model

    models = []
    for entry in find_checkpoints(Path("out"), args.models_dir):
        if split_prefixed(entry.path) is not None:  # its own code runs only when named, never in a listing
            log.info("%s runs its own modelling code: not loaded for this list (--model %s loads it)", entry.name, entry.path)
            continue
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
                "block_size": loaded.block_size,
                "params": loaded.params,
                "default": entry.is_default,
                "iter_num": loaded.iter_num,
                "best_val_loss": loaded.best_val_loss,
                "stand_ins": list(loaded.stand_ins),
            }
        )
    if args.json:
        print_json({"models": models})
    else:
        for m in models:
            mark = "*" if m["default"] else " "
            trained = "" if m["iter_num"] is None else f"  iter {m['iter_num']}"
            trained += "" if m["best_val_loss"] is None else f"  val {m['best_val_loss']:.4f}"
            sys.stdout.write(f"{mark} {m['name']:40s} {m['params'] / 1e6:6.2f}M  block {m['block_size']:5d}{trained}  {m['path']}\n")
            for line in m["stand_ins"]:  # classes of the trainer kept as data, so users see what was not loaded
                sys.stdout.write(f"      {line}\n")
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
        print_json(result)
    else:
        sys.stdout.write(f"held-out masked CE (mean over ratios 0.1..0.9): {result['masked_ce']:.4f} nats\n")
        for ratio, ce in result["masked_ce_by_ratio"].items():
            sys.stdout.write(f"  ratio {ratio}: {ce:.4f}\n")
        sys.stdout.write(f"words found in the corpus: {100 * result['word_share']:.1f}% of {args.samples} samples\n")
    return 0


COMMANDS = {
    "generate": cmd_generate,
    "inspect": cmd_inspect,
    "models": cmd_models,
    "train": cmd_train,
    "evaluate": cmd_evaluate,
}
