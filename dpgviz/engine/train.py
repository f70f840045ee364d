"""Training a char-level masked-diffusion model: the objective, the loop, resumable checkpoints.

Objective (MDLM / LLaDA style absorbing-state diffusion): per sequence draw t ~ U(0,1)
(stratified across the batch, as in MDLM, to lower gradient noise), mask each token with
probability t, and take cross-entropy on the masked positions over the real vocabulary.
The optimised loss is each sequence's mean masked CE averaged over the batch, which
weights every mask ratio equally (as the evaluation does); the ELBO-weighted loss
(sum of masked CE / t over all tokens) is reported alongside.

The output is a seed-format checkpoint (`ckpt.pt` with `model_args` and `model`, plus
dpgviz extras: optimizer state, iteration, vocabulary, training summary) and `meta.pkl`
beside it, so nanoGPT-diffusion loaders read it unchanged.
"""

from __future__ import annotations

import json
import logging
import math
import pickle
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from dpgviz.core.vocab import Vocabulary
from dpgviz.engine.model import DiffusionGPT, ModelConfig

log = logging.getLogger(__name__)

EVAL_RATIOS = (0.1, 0.3, 0.5, 0.7, 0.9)  # the mask ratios the quality number averages over


@dataclass
class TrainConfig:
    data: str = ""
    out: str = "out"
    n_layer: int = 6
    n_head: int = 4
    n_embd: int = 256
    block_size: int = 1024
    dropout: float = 0.1  # tinyshakespeare is 1M chars: small models overfit without it
    batch_size: int = 16
    iters: int = 5000
    lr: float = 1e-3
    min_lr_ratio: float = 0.1  # cosine decays to lr * this
    warmup: int = 200
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    eval_interval: int = 250
    eval_batches: int = 8  # batches per mask ratio in periodic evaluation
    log_interval: int = 50
    device: str = "auto"
    seed: int = 1337
    resume: bool = False
    max_minutes: float = 0.0  # stop (and save) after this long; 0 = no limit
    compile: bool = False


def split_corpus(text: str) -> tuple[str, str]:
    """First 90% train, last 10% held out."""
    cut = int(len(text) * 0.9)
    return text[:cut], text[cut:]


def lr_at(it: int, cfg: TrainConfig, time_fraction: float = 0.0) -> float:
    """Linear warm-up, then cosine decay to lr * min_lr_ratio at cfg.iters.

    With a time limit, the decay follows whichever runs out first, iterations or time,
    so a run cut by --max-minutes still ends at the low learning rate.
    """
    if it < cfg.warmup:
        return cfg.lr * (it + 1) / cfg.warmup
    progress = min(1.0, max(time_fraction, (it - cfg.warmup) / max(1, cfg.iters - cfg.warmup)))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def get_batch(data: torch.Tensor, batch_size: int, block: int, gen: torch.Generator) -> torch.Tensor:
    """Random windows of `block` tokens: (B, T) on data's device."""
    starts = torch.randint(0, len(data) - block, (batch_size,), generator=gen, device="cpu")
    idx = starts[:, None] + torch.arange(block)[None, :]
    return data[idx.to(data.device)]


def masked_ce(model: DiffusionGPT, x0: torch.Tensor, is_masked: torch.Tensor, vocab_size: int, mask_id: int) -> torch.Tensor:
    """Cross-entropy (nats, B x T) of the clean tokens x0 at the masked positions, 0 elsewhere.

    The model sees x0 with `is_masked` positions replaced by the mask id; the softmax runs
    over the real vocabulary only (the mask and reserved ids are never a target).
    """
    xt = torch.where(is_masked, mask_id, x0)
    logits = model(xt)[..., :vocab_size].float()  # (B, T, V): real vocabulary only
    ce = F.cross_entropy(logits.transpose(1, 2), x0, reduction="none")  # (B, T)
    return ce * is_masked


def masked_ce_by_ratio(
    model: DiffusionGPT,
    batches: Callable[[], Iterable[torch.Tensor]],
    vocab_size: int,
    mask_id: int,
    gen: torch.Generator,
) -> dict[float, float]:
    """Masked-token CE (nats per masked token) at each ratio of EVAL_RATIOS.

    `batches()` yields the clean (B, T) batches of one pass; it is called once per ratio.
    Each token is masked with probability `ratio` by a CPU draw from `gen` made right after
    its batch is produced, so a lazily drawn batch and its mask share one random stream.
    Run it without gradients (the callers' no_grad / inference_mode).
    """
    out = {}
    for ratio in EVAL_RATIOS:
        total, count = 0.0, 0
        for x0 in batches():
            is_masked = (torch.rand(x0.shape, generator=gen) < ratio).to(x0.device)
            total += float(masked_ce(model, x0, is_masked, vocab_size, mask_id).sum())
            count += int(is_masked.sum())
        out[ratio] = total / max(1, count)
    return out


def masked_losses(
    model: DiffusionGPT, x0: torch.Tensor, t: torch.Tensor, vocab_size: int, mask_id: int, gen: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean over sequences of mean masked CE, ELBO-weighted loss) for clean x0 (B, T), ratios t (B,)."""
    noise = torch.rand(x0.shape, generator=gen, device="cpu").to(x0.device) if gen is not None else torch.rand(x0.shape, device=x0.device)
    is_masked = noise < t[:, None]  # (B, T)
    # Every sequence needs a target; mask position 0 where the draw masked nothing.
    none = ~is_masked.any(dim=1)
    is_masked[none, 0] = True
    ce = masked_ce(model, x0, is_masked, vocab_size, mask_id)
    per_seq = ce.sum(1) / is_masked.sum(1)
    elbo = (ce / t[:, None]).sum() / x0.numel()
    return per_seq.mean(), elbo


@torch.no_grad()
def evaluate_ce(model: DiffusionGPT, data: torch.Tensor, vocab_size: int, mask_id: int, block: int, batches: int, batch_size: int, seed: int = 0) -> dict[float, float]:
    """Masked-token CE (nats) at each ratio of EVAL_RATIOS on fixed windows of `data`."""
    was_training = model.training
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    # A generator expression: each window is drawn just before its mask, as the ratio loop expects.
    out = masked_ce_by_ratio(
        model, lambda: (get_batch(data, batch_size, block, gen) for _ in range(batches)), vocab_size, mask_id, gen
    )
    model.train(was_training)
    return out


def save_checkpoint(path: Path, model: DiffusionGPT, optimizer: torch.optim.Optimizer | None, vocab: Vocabulary, extra: dict) -> None:
    """Seed-format checkpoint, written aside then renamed so a crash never leaves half a file."""
    state = {k.removeprefix("_orig_mod."): v for k, v in model.state_dict().items()}
    ckpt = {
        "model_args": model.config.to_model_args(),
        "model": state,
        "vocab": vocab.to_meta(),
        **extra,
    }
    if optimizer is not None:
        ckpt["optimizer"] = optimizer.state_dict()
    tmp = path.with_suffix(".tmp")
    torch.save(ckpt, tmp)
    tmp.replace(path)
    with open(path.with_name("meta.pkl"), "wb") as fh:
        pickle.dump(vocab.to_meta(), fh)


def slim_checkpoint(src: str | Path, dst: str | Path) -> int:
    """Copy a checkpoint without optimizer state, weights in float16; returns bytes written."""
    ckpt = torch.load(src, map_location="cpu", weights_only=True)
    ckpt.pop("optimizer", None)
    ckpt["model"] = {k: v.half() if v.is_floating_point() else v for k, v in ckpt["model"].items()}
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, dst)
    with open(dst.with_name("meta.pkl"), "wb") as fh:
        pickle.dump(ckpt["vocab"], fh)
    return dst.stat().st_size


def train(cfg: TrainConfig) -> dict:
    """Train (or resume) and return the summary; checkpoints the best held-out model."""
    from dpgviz.engine.checkpoint import resolve_device

    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    text = Path(cfg.data).read_text(encoding="utf-8")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / "ckpt.pt"
    log_path = out / "train_log.jsonl"

    resume_state = None
    resume_from = next((p for p in (out / "last.pt", ckpt_path) if p.is_file()), None)
    if cfg.resume and resume_from is not None:
        resume_state = torch.load(resume_from, map_location="cpu", weights_only=True)
        vocab = Vocabulary.from_meta(resume_state["vocab"])
        mcfg = ModelConfig.from_model_args(resume_state["model_args"])
        mcfg.dropout = cfg.dropout
    else:
        vocab = Vocabulary.from_text(text)
        mcfg = ModelConfig(
            block_size=cfg.block_size,
            vocab_size=vocab.size + 1,
            n_layer=cfg.n_layer,
            n_head=cfg.n_head,
            n_embd=cfg.n_embd,
            dropout=cfg.dropout,
        )
    mask_id = vocab.mask_id
    train_text, val_text = split_corpus(text)
    block = min(mcfg.block_size, len(val_text) - 1, len(train_text) - 1)
    if block < 8:
        raise ValueError(f"{cfg.data} is too short to train on ({len(text)} characters)")
    train_ids = torch.as_tensor(vocab.encode(train_text), device=device)
    val_ids = torch.as_tensor(vocab.encode(val_text), device=device)

    model = DiffusionGPT(mcfg).to(device)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.95),
        fused=device.type == "cuda",
    )
    start_iter, best_val, history = 0, float("inf"), []
    if resume_state is not None:
        model.load_state_dict(resume_state["model"])
        if "optimizer" in resume_state:
            optimizer.load_state_dict(resume_state["optimizer"])
        start_iter = int(resume_state.get("iter_num", 0))
        best_val = float(resume_state.get("best_val_loss", float("inf")))
        history = list(resume_state.get("train_summary", {}).get("history", []))
        log.info("resuming from iteration %d (best held-out CE %.4f)", start_iter, best_val)
    train_model = torch.compile(model) if cfg.compile else model
    use_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    gen = torch.Generator().manual_seed(cfg.seed + start_iter)

    log.info("model %.2fM params, block %d, %s, train %d / held-out %d chars", model.num_params() / 1e6, block, device, len(train_text), len(val_text))
    t_start = time.time()
    t_log, tokens_since = time.time(), 0
    it = start_iter
    model.train()
    last_loss = last_elbo = float("nan")

    def evaluate_and_save(it: int) -> None:
        nonlocal best_val
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            ces = evaluate_ce(model, val_ids, vocab.size, mask_id, block, cfg.eval_batches, cfg.batch_size)
        mean_ce = float(np.mean(list(ces.values())))
        entry = {"iter": it, "train_loss": last_loss, "train_elbo": last_elbo, "val_ce": mean_ce,
                 "val_ce_by_ratio": {str(k): round(v, 4) for k, v in ces.items()},
                 "minutes": round((time.time() - t_start) / 60, 2)}
        history.append(entry)
        with open(log_path, "a") as fh:
            fh.write(json.dumps(entry) + "\n")
        improved = mean_ce < best_val
        log.info("eval iter %d: held-out masked CE %.4f%s", it, mean_ce, " (best)" if improved else "")
        if improved:
            best_val = mean_ce
        if improved or not ckpt_path.is_file():
            summary = {"history": history, "config": asdict(cfg), "best_val_ce": best_val}
            save_checkpoint(ckpt_path, model, optimizer, vocab,
                            {"iter_num": it, "best_val_loss": best_val, "train_summary": summary})

    while it < cfg.iters:
        time_fraction = (time.time() - t_start) / (cfg.max_minutes * 60) if cfg.max_minutes else 0.0
        if time_fraction >= 1.0:
            log.info("time limit of %.1f minutes reached at iteration %d", cfg.max_minutes, it)
            break
        lr = lr_at(it, cfg, time_fraction)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x0 = get_batch(train_ids, cfg.batch_size, block, gen)
        # Stratified t across the batch (MDLM): one uniform offset, evenly spaced strata.
        u = torch.rand(1, generator=gen).item()
        t = ((u + torch.arange(cfg.batch_size) / cfg.batch_size) % 1.0).clamp_min(1e-3).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            loss, elbo = masked_losses(train_model, x0, t, vocab.size, mask_id, gen)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        it += 1
        tokens_since += x0.numel()
        if it % cfg.log_interval == 0 or it == cfg.iters:
            last_loss, last_elbo = float(loss.detach()), float(elbo.detach())
            dt = time.time() - t_log
            log.info("iter %d/%d loss %.4f elbo %.4f lr %.2e %.0f tok/s", it, cfg.iters, last_loss, last_elbo, lr, tokens_since / max(dt, 1e-9))
            t_log, tokens_since = time.time(), 0
        if it % cfg.eval_interval == 0:
            evaluate_and_save(it)
    if not history or history[-1]["iter"] != it:
        evaluate_and_save(it)
    # Resumable from where it stopped: keep the latest state too (ckpt.pt holds the best).
    save_checkpoint(out / "last.pt", model, optimizer, vocab,
                    {"iter_num": it, "best_val_loss": best_val, "train_summary": {"history": history, "config": asdict(cfg), "best_val_ce": best_val}})
    return {"iters": it, "best_val_ce": best_val, "minutes": (time.time() - t_start) / 60, "history": history}
