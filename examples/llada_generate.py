"""LLaDA's sampling algorithm on any local masked LM, every step logged with dpgviz.Recorder.

    python examples/llada_generate.py FOLDER --prompt "the cat" [--gen-length 64] [--block-length 32]
        [--steps 32] [--temperature 0] [--cfg-scale 0] [--remasking low_confidence|random]
        [--batch 1] [--out run.dpgviz] [--spawn | --connect 127.0.0.1:5560] [--device cpu]

FOLDER is a masked LM as `save_pretrained` writes it (transformers AutoModelForMaskedLM and
AutoTokenizer; BERT, RoBERTa, ModernBERT ...), read offline. `--trust-remote-code` loads a
model that ships its own code through AutoModel instead (LLaDA itself: its mask id is
126336, given with --mask-id). Then `python main.py open run.dpgviz`, or watch it live with --spawn.

The algorithm is the one published with LLaDA (Nie et al., "Large Language Diffusion
Models", 2025), `generate()` in github.com/ML-GSAI/LLaDA/blob/main/generate.py, written
here afresh against the recorder:

  * the answer is `gen_length` masks after the prompt, generated in blocks of `block_length`
    left to right (semi-autoregressive); each block gets steps / n_blocks steps;
  * each step, one forward pass; with classifier-free guidance (cfg_scale > 0) a second pass
    with the prompt masked, and logits = uncond + (cfg + 1) * (cond - uncond);
  * the proposal x0 = argmax of the logits with Gumbel noise at `temperature` (float64, as the
    reference: low-precision Gumbel max hurts quality), never the mask itself (LLaDA's model
    does not predict it; a generic masked LM may, so its logit is set to -inf here);
  * how many masks each step fills comes from the schedule: a block's masks spread evenly
    over its steps, the remainder to the first steps (LLaDA's linear schedule);
  * which ones: the most confident (p of x0, `low_confidence` remasking: the rest stay
    masked) or random ones (`random`); positions after the current block never.

Every step's x is logged with the logits that made it (kind inferred: 'initial', then
'prediction' until 'final'); --batch B samples B rows at once, B sibling branches in dpgviz.
"""

from __future__ import annotations

import argparse
import logging

import numpy as np
import torch

import dpgviz


def add_gumbel_noise(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """argmax of the result samples softmax(logits / temperature): exp(logits) / (-log u) ** T, in float64."""
    if temperature == 0:
        return logits
    logits = logits.to(torch.float64)
    noise = torch.rand_like(logits, dtype=torch.float64)
    return logits.exp() / (-torch.log(noise)) ** temperature


def transfer_counts(block_masks: torch.Tensor, steps: int) -> torch.Tensor:
    """(B, steps) masks to fill at each step: the block's masks spread evenly, the remainder first."""
    n = block_masks.sum(dim=1, keepdim=True)  # (B, 1)
    counts = (n // steps).repeat(1, steps)  # (B, steps)
    extra = torch.arange(steps, device=n.device)[None, :] < (n % steps)  # (B, steps)
    return counts + extra.long()


def model_logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(input_ids=x).logits  # (B, L, V)


@torch.no_grad()
def generate(
    model: torch.nn.Module,
    prompt: torch.Tensor,
    mask_id: int,
    rec: dpgviz.Recorder | None = None,
    *,
    steps: int = 32,
    gen_length: int = 64,
    block_length: int = 32,
    temperature: float = 0.0,
    cfg_scale: float = 0.0,
    remasking: str = "low_confidence",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """LLaDA's generate() (module docstring) for a (B, P) prompt; logs each step's (B, P + gen_length) x to `rec`."""
    B, P = prompt.shape
    x = torch.full((B, P + gen_length), mask_id, dtype=torch.long, device=prompt.device)  # (B, L)
    x[:, :P] = prompt
    is_prompt = x != mask_id  # (B, L)
    if gen_length % block_length or steps % (gen_length // block_length):
        raise ValueError("gen_length must be a multiple of block_length, and steps of the number of blocks")
    n_blocks = gen_length // block_length
    steps_per_block = steps // n_blocks
    if rec is not None:
        rec.log(x)  # 'initial': the prompt and the masks
    for block in range(n_blocks):
        start, stop = P + block * block_length, P + (block + 1) * block_length
        counts = transfer_counts(x[:, start:stop] == mask_id, steps_per_block)  # (B, steps_per_block)
        for i in range(steps_per_block):
            is_masked = x == mask_id  # (B, L)
            if cfg_scale > 0:
                unconditional = x.clone()
                unconditional[is_prompt] = mask_id
                both = model_logits(model, torch.cat([x, unconditional]))  # (2B, L, V)
                cond, uncond = both[:B], both[B:]
                logits = uncond + (cfg_scale + 1) * (cond - uncond)
            else:
                logits = model_logits(model, x)  # (B, L, V)
            logits[..., mask_id] = -torch.inf  # LLaDA never predicts its mask; a generic masked LM might
            x0 = add_gumbel_noise(logits, temperature).argmax(dim=-1)  # (B, L)
            if remasking == "low_confidence":
                p = torch.softmax(logits.float(), dim=-1)
                x0_p = p.gather(-1, x0[..., None])[..., 0]  # (B, L)
            elif remasking == "random":
                x0_p = torch.rand(x0.shape, device=x0.device, generator=generator)
            else:
                raise ValueError(f"remasking {remasking!r}: low_confidence or random")
            x0_p[:, stop:] = -np.inf  # never past the current block
            x0 = torch.where(is_masked, x0, x)
            confidence = torch.where(is_masked, x0_p, torch.tensor(-np.inf, device=x0.device))
            fill = torch.zeros_like(x0, dtype=torch.bool)
            for b in range(B):  # B rows: each its own count
                fill[b, confidence[b].topk(int(counts[b, i])).indices] = True
            x[fill] = x0[fill]
            if rec is not None:
                rec.log(x, logits=logits)  # this step's x and the logits that chose it
    return x


def load(folder: str, device: str, trust_remote_code: bool) -> tuple[torch.nn.Module, object]:
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True, trust_remote_code=trust_remote_code)
    auto = transformers.AutoModel if trust_remote_code else transformers.AutoModelForMaskedLM
    model = auto.from_pretrained(folder, local_files_only=True, trust_remote_code=trust_remote_code)
    return model.to(device).eval(), tok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folder")
    ap.add_argument("--prompt", default="the")
    ap.add_argument("--gen-length", type=int, default=64)
    ap.add_argument("--block-length", type=int, default=32)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--cfg-scale", type=float, default=0.0)
    ap.add_argument("--remasking", default="low_confidence", choices=("low_confidence", "random"))
    ap.add_argument("--batch", type=int, default=1, help="rows sampled at once: sibling branches in dpgviz")
    ap.add_argument("--mask-id", type=int, default=None, help="default: the tokenizer's mask token")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--trust-remote-code", action="store_true", help="AutoModel with the folder's own code (LLaDA)")
    ap.add_argument("--out", default="run.dpgviz")
    ap.add_argument("--spawn", action="store_true", help="watch it live in a window this starts")
    ap.add_argument("--connect", default=None, help="stream into a window listening there (--listen-runs)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    torch.manual_seed(args.seed)
    model, tok = load(args.folder, args.device, args.trust_remote_code)
    mask_id = tok.mask_token_id if args.mask_id is None else args.mask_id
    ids = tok(args.prompt)["input_ids"]
    prompt = torch.tensor([ids] * args.batch, device=args.device)  # (B, P)
    length = prompt.shape[1] + args.gen_length
    settings = {
        "strategy": "llada" if args.remasking == "low_confidence" else "random", "steps": args.steps,
        "temperature": args.temperature, "seed": args.seed, "prompt_text": args.prompt,
        "gen_length": args.gen_length, "llada_block_length": args.block_length, "cfg_scale": args.cfg_scale,
        "remasking": args.remasking, "source": "ML-GSAI/LLaDA generate.py",
    }
    with dpgviz.Recorder(tok, mask_id, length, path=args.out, model=args.folder, settings=settings,
                         spawn=args.spawn, connect=args.connect) as rec:
        out = generate(
            model, prompt, mask_id, rec, steps=args.steps, gen_length=args.gen_length, block_length=args.block_length,
            temperature=args.temperature, cfg_scale=args.cfg_scale, remasking=args.remasking,
        )
    for row in out.tolist():
        print(tok.decode(row[prompt.shape[1]:], skip_special_tokens=True))
    logging.info("%d records in %s: python main.py open %s", rec.n_records, args.out, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
