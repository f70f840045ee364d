"""Reference-exact samplers: LLaDA's generate() and Dream's diffusion_generate, step for step.

Written from the published algorithms (github ML-GSAI/LLaDA generate.py; DreamLM/Dream's
generation_utils `_sample`); the code is dpgviz's own. Both run in the model's own id space on
the whole sequence (prompt + every generated position) and sample over EVERY column of the
model's logits, as the references do: end of text, <|eot_id|> and ids past the tokenizer can
all appear (dpgviz's vocabulary covers every column: engine.hf.vocab_from_tokenizer). Random
draws come from one torch.Generator seeded with settings.seed, in the references' order, so
on the CPU a run equals the reference run under torch.manual_seed(seed).

LLaDA (settings.sampler "llada"; strategy "llada" = remasking low_confidence, "random"):
    blocks of block_length (0: one block of the whole length); steps // n_blocks per block;
    get_num_transfer_tokens: the block's masked count split equally over its steps, the
    remainder to the first steps; each step one pass over x (with cfg_scale > 0 a second row
    with the prompt masked, logits = un + (cfg + 1) * (cond - un)); logits_eos_inf sets the EOS
    column to -inf; Gumbel-max at temperature T in float64 (exp(logits) / (-log U) ** T, argmax);
    confidence_eos_eot_inf as the reference writes it (`noisy[..., EOS] = logits[..., EOT] = -inf`:
    at T = 0 both are the same tensor); confidence p(x0) (softmax of the logits) or U(0,1); -inf
    past the block and where not masked; the top num_transfer_tokens positions commit.
Dream (sampler "dream"; strategy origin, "llada" = maskgit_plus, margin = topk_margin, entropy):
    logits shifted right by one; timesteps linspace(1, eps, steps + 1); origin: each masked
    position is revealed with probability 1 - s/t (all at the last step), sampled from
    softmax(logits / T) (top_p, top_k) or argmax at T = 0; the others: a confidence per masked
    position (p, top1 - top2, or sum p log p), int(masked * (1 - s/t)) commit (all at the last
    step), by top-k or, with alg_temp > 0, drawn from softmax(confidence / alg_temp).

Records: per step a 'prediction' (each masked position of the block shows the reference's x0;
Dream origin's unrevealed positions show the argmax, drawing nothing) and a 'remask' (the
reference's x after the step), the last step a 'final'; per block an 'initial'. `score` is the
confidence that decided the commit.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from dpgviz.core.prompt import EncodedPrompt, layout_for
from dpgviz.core.records import RecordLayout, StepRecord, step_flags
from dpgviz.core.settings import GenerationSettings, SettingsError


def add_gumbel_noise(logits: torch.Tensor, temperature: float, gen: torch.Generator) -> torch.Tensor:
    """LLaDA's Gumbel-max in float64: exp(logits) / (-log U) ** T; the logits themselves at T = 0."""
    if temperature == 0:
        return logits
    logits = logits.to(torch.float64)
    noise = torch.rand(logits.shape, dtype=torch.float64, generator=gen, device=logits.device)
    return logits.exp() / (-torch.log(noise)) ** temperature


def num_transfer_tokens(mask_index: torch.Tensor, steps: int) -> torch.Tensor:
    """(B, steps) tokens to commit per step: masked // steps each, the remainder to the first steps."""
    mask_num = mask_index.sum(dim=1, keepdim=True)  # (B, 1)
    base, remainder = mask_num // steps, mask_num % steps
    out = torch.zeros(mask_num.size(0), steps, device=mask_index.device, dtype=torch.int64) + base
    for row in range(mask_num.size(0)):  # batch rows: one here
        out[row, : remainder[row]] += 1
    return out


def _top_p(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    sorted_logits, order = torch.sort(logits, descending=True)
    cumulative = torch.cumsum(F.softmax(sorted_logits, dim=-1), dim=-1)
    drop = cumulative > top_p
    drop[..., 1:] = drop[..., :-1].clone()  # keep the first token past the threshold
    drop[..., 0] = 0
    mask = torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, order, drop)
    return logits.masked_fill(mask, torch.finfo(logits.dtype).min)


def _top_k(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    top_k = min(top_k, logits.size(-1))
    drop = logits < torch.topk(logits, top_k)[0][..., -1, None]
    return logits.masked_fill(drop, torch.finfo(logits.dtype).min)


def dream_sample_tokens(
    logits: torch.Tensor, settings: GenerationSettings, gen: torch.Generator, confidence: str = "p"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dream's sample_tokens on (n, V) logits: (confidence, x0); confidence "p", "margin" or "neg_entropy"."""
    temperature = settings.temperature
    if temperature > 0:
        logits = logits / temperature
    if settings.top_p < 1:
        logits = _top_p(logits, settings.top_p)
    if settings.sample_top_k:
        logits = _top_k(logits, settings.sample_top_k)
    probs = torch.softmax(logits, dim=-1)
    if temperature > 0 and len(probs):
        try:  # Categorical(probs).sample(): multinomial of the renormalised rows, one draw each
            x0 = torch.multinomial(probs / probs.sum(-1, keepdim=True), 1, True, generator=gen)[:, 0]
            conf = torch.gather(probs, -1, x0.unsqueeze(-1)).squeeze(-1)
        except RuntimeError:  # the reference falls back to the argmax too
            conf, x0 = probs.max(dim=-1)
    else:
        conf, x0 = probs.max(dim=-1)
    if confidence == "margin":
        top = torch.sort(probs, dim=-1, descending=True)[0]
        conf = top[:, 0] - top[:, 1]
    elif confidence == "neg_entropy":
        conf = torch.sum(probs * torch.log(probs + 1e-10), dim=-1)
    return conf, x0


class ReferenceRun:
    """One reference run on a DiffusionLMAdapter (engine.dllm): yields StepRecords."""

    def __init__(self, adapter, settings: GenerationSettings, encoded: EncodedPrompt | None, n_ids: int) -> None:
        if settings.template:
            raise SettingsError(f"the {settings.sampler} sampler continues a prompt; an infilling template needs dpgviz's loop")
        self.adapter, self.s = adapter, settings
        self.dev = adapter.to_model_ids.device
        self.mask_model = int(adapter.model_mask_id)
        self.V = int(adapter.vocab.mask_id)
        self.layout: RecordLayout = layout_for(settings, n_ids, encoded)
        if encoded is not None:
            start = torch.as_tensor(encoded.tokens, device=self.dev)
            self.prompt_len = encoded.prefix_len
        else:
            start = torch.full((settings.length,), self.V, dtype=torch.long, device=self.dev)
            self.prompt_len = 0
        self.x = adapter.to_model_ids[start][None].clone()  # (1, N) model ids
        self.prompt_np = np.arange(self.x.shape[1]) < self.prompt_len
        self.gen = torch.Generator(device=self.dev)
        self.gen.manual_seed(int(settings.seed))
        self.passes = 0

    # -- ids and records ---------------------------------------------------------------------
    def internal(self, model_ids: torch.Tensor) -> torch.Tensor:
        """Model ids -> dpgviz ids (the mask column removed, the mask at V)."""
        shifted = model_ids - (model_ids > self.mask_model).long()
        return torch.where(model_ids == self.mask_model, self.V, shifted)

    @staticmethod
    def stats(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(probs, entropy) of (n, V_model) logits, once per step for both of its records."""
        probs = torch.softmax(logits.float(), dim=-1)  # (n, V_model)
        return probs, -(probs * torch.log(probs.clamp_min(1e-12))).sum(-1)

    def _record(self, kind, it, block, lo, hi, x, prev, stats=None, score=None, target=0) -> tuple[StepRecord, np.ndarray]:
        toks = self.internal(x[0, lo:hi]).cpu().numpy()
        rec = self.layout.empty()
        n, k = hi - lo, self.layout.top_k
        rec.tokens[:n] = toks
        rec.flags[:n] = step_flags(prev, toks, self.V, self.prompt_np[lo:hi], self.prompt_np[lo:hi])
        if stats is not None:
            probs, ent = stats
            model_tok = x[0, lo:hi]
            visible = model_tok != self.mask_model
            p_tok = probs.gather(1, torch.where(visible, model_tok, 0)[:, None])[:, 0]
            rec.confidence[:n] = torch.where(visible, p_tok, float("nan")).cpu().numpy()
            was = torch.as_tensor(prev == self.V, device=self.dev)
            rec.entropy[:n] = torch.where(was, ent, float("nan")).cpu().numpy()
            if kind == "prediction":
                top_p, top_m = probs.topk(min(k, probs.shape[-1]), dim=-1)
                rec.top_probs[:n, : top_p.shape[1]] = torch.where(was[:, None], top_p, 0.0).cpu().numpy()
                rec.top_ids[:n, : top_p.shape[1]] = torch.where(was[:, None], self.internal(top_m), 0).cpu().numpy()
        if score is not None:
            sc = score[0, lo:hi].float()
            rec.score[:n] = torch.where(torch.isfinite(sc), sc, float("nan")).cpu().numpy()
        rec.iteration, rec.kind, rec.target_masks = it, kind, target
        rec.n_masked = int((toks == self.V).sum())
        rec.forward_passes = self.passes
        rec.offset, rec.block = lo, block
        return rec, toks

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        self.passes += 1
        return self.adapter.forward_model(x)

    # -- LLaDA -------------------------------------------------------------------------------
    def llada(self) -> Iterator[StepRecord]:
        s, x, mask_id, P = self.s, self.x, self.mask_model, self.prompt_len
        gen_length = s.length
        block_length = s.block_length or gen_length
        n_blocks = gen_length // block_length
        steps = s.steps // n_blocks
        eos, eot = self.adapter.eos_model_id, self.adapter.eot_model_id
        prompt_index = x != mask_id
        for nb in range(n_blocks):
            lo, hi = (P + nb * block_length, P + (nb + 1) * block_length) if s.block_length else (0, x.shape[1])
            block_mask_index = x[:, P + nb * block_length : P + (nb + 1) * block_length] == mask_id
            transfer = num_transfer_tokens(block_mask_index, steps)
            rec, prev = self._record("initial", 0, nb, lo, hi, x, None, target=int(block_mask_index.sum()))
            yield rec
            for i in range(steps):
                mask_index = x == mask_id
                if s.cfg_scale > 0.0:
                    un_x = x.clone()
                    un_x[prompt_index] = mask_id
                    logits = self._forward(torch.cat([x, un_x], dim=0))
                    logits, un_logits = torch.chunk(logits, 2, dim=0)
                    logits = un_logits + (s.cfg_scale + 1) * (logits - un_logits)
                else:
                    logits = self._forward(x)
                if s.logits_eos_inf and eos is not None:
                    logits[:, :, eos] = -torch.inf
                noisy = add_gumbel_noise(logits, s.temperature, self.gen)
                x0 = torch.argmax(noisy, dim=-1)  # (1, N)
                if s.confidence_eos_eot_inf:
                    if eot is not None:
                        logits[:, :, eot] = -torch.inf
                    if eos is not None:
                        noisy[:, :, eos] = -torch.inf
                if s.strategy == "llada":  # low_confidence
                    p = F.softmax(logits, dim=-1)
                    x0_p = torch.squeeze(torch.gather(p, dim=-1, index=torch.unsqueeze(x0, -1)), -1)
                else:  # random
                    x0_p = torch.rand((x0.shape[0], x0.shape[1]), generator=self.gen, device=self.dev)
                x0_p[:, P + (nb + 1) * block_length :] = -np.inf
                x0 = torch.where(mask_index, x0, x)
                confidence = torch.where(mask_index, x0_p, -np.inf)
                transfer_index = torch.zeros_like(x0, dtype=torch.bool)
                _, select = torch.topk(confidence[0], k=int(transfer[0, i]))
                transfer_index[0, select] = True
                left = int(block_mask_index.sum()) - int(transfer[0, : i + 1].sum())
                stats = self.stats(logits[0, lo:hi])
                rec, prev = self._record("prediction", i, nb, lo, hi, x0, prev, stats, confidence, left)
                yield rec
                x[transfer_index] = x0[transfer_index]
                kind = "final" if i == steps - 1 else "remask"
                rec, prev = self._record(kind, i, nb, lo, hi, x, prev, stats, confidence, left)
                yield rec

    # -- Dream -------------------------------------------------------------------------------
    def dream(self) -> Iterator[StepRecord]:
        s, x, mask_id = self.s, self.x, self.mask_model
        steps, alg = s.steps, s.strategy
        lo, hi = 0, x.shape[1]
        timesteps = torch.linspace(1, s.eps, steps + 1, device=self.dev)
        rec, prev = self._record("initial", 0, 0, lo, hi, x, None, target=int((x == mask_id).sum()))
        yield rec
        for i in range(steps):
            mask_index = x == mask_id
            logits = self._forward(x)
            logits = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)
            mask_logits = logits[mask_index]
            t, s_ = timesteps[i], timesteps[i + 1]
            full_confidence = None
            stats = self.stats(logits[0, lo:hi])
            if alg == "origin":
                p_transfer = 1 - s_ / t if i < steps - 1 else 1
                x0 = torch.zeros_like(x[mask_index], dtype=torch.long) + mask_id
                reveal = torch.rand(*x0.shape, generator=self.gen, device=self.dev) < p_transfer
                if bool(reveal.any()):
                    _, x0[reveal] = dream_sample_tokens(mask_logits[reveal], s, self.gen)
                shown = torch.where(x0 == mask_id, mask_logits.argmax(-1), x0)  # the unrevealed: argmax
                pred = x.clone()
                pred[mask_index] = shown
                rec, prev = self._record("prediction", i, 0, lo, hi, pred, prev, stats, None)
                yield rec
                x[mask_index] = x0.clone()
            else:
                kind = {"llada": "p", "margin": "margin", "entropy": "neg_entropy"}[alg]
                confidence, x0 = dream_sample_tokens(mask_logits, s, self.gen, kind)
                num_mask_token = mask_index.sum() / mask_index.shape[0]
                n_transfer = int(num_mask_token * (1 - s_ / t)) if i < steps - 1 else int(num_mask_token)
                full_confidence = torch.full_like(x, -torch.inf, dtype=logits.dtype)
                full_confidence[mask_index] = confidence
                pred = x.clone()
                pred[mask_index] = x0
                rec, prev = self._record("prediction", i, 0, lo, hi, pred, prev, stats, full_confidence)
                yield rec
                if n_transfer > 0:
                    if not s.alg_temp:
                        _, transfer_index = torch.topk(full_confidence, n_transfer)
                    else:
                        weights = F.softmax(full_confidence / s.alg_temp, dim=-1)
                        transfer_index = torch.multinomial(weights, num_samples=n_transfer, generator=self.gen)
                    x_ = torch.zeros_like(x, dtype=torch.long) + mask_id
                    x_[mask_index] = x0.clone()
                    rows = torch.arange(x.size(0), device=self.dev).unsqueeze(1).expand_as(transfer_index)
                    x[rows, transfer_index] = x_[rows, transfer_index]
            kind = "final" if i == steps - 1 else "remask"
            left = int((x == mask_id).sum())
            rec, prev = self._record(kind, i, 0, lo, hi, x, prev, stats, full_confidence, left)
            yield rec

    def run(self) -> Iterator[StepRecord]:
        with torch.inference_mode():
            yield from (self.llada() if self.s.sampler == "llada" else self.dream())
