"""The denoising sampler: one generator that yields a StepRecord per substep.

The GUI (through the worker) and the CLI drive this same generator; visualisation never
gets its own copy of the algorithm. A strategy is a remask score per position plus the
shared count rule of `core.schedule.target_masks`:

    seed    score = r*U(0,1) + (1-r)*(1 - p(current token)), p from a second forward pass
            over the filled sequence; any visible unprotected position may be remasked.
    random  score = U(0,1); no second pass.
    llada   one pass per iteration; only tokens sampled in this iteration may be remasked,
            lowest confidence first, so committed tokens never change (LLaDA, low-confidence
            remasking).

Each iteration yields a 'prediction' record (every masked position filled) and, except
after the last iteration, a 'remask' record; runs open with 'initial' and close with
'final'. A record leaves the device once per substep; nothing per-token runs in Python.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from dpgviz.core.records import FLAG_EDITED, RecordLayout, StepRecord, step_flags
from dpgviz.core.schedule import target_masks
from dpgviz.core.settings import GenerationSettings, SettingsError
from dpgviz.core.vocab import Vocabulary


@dataclass
class StartState:
    """Where a run starts: the tokens (mask_id where masked), the iteration, fixed positions."""

    tokens: np.ndarray | None = None  # (N,) ids; None = all masked
    iteration: int = 0
    protected: np.ndarray | None = None  # (N,) bool
    edited: np.ndarray | None = None  # (N,) bool: positions changed by hand (for flags only)
    # False when the start state is already a record (a fork's 'edit' record): the run then
    # opens with its first 'prediction', flagged relative to these tokens, with no 'initial'.
    emit_initial: bool = True


class Sampler:
    """Runs a model's denoising loop. Holds the model, vocabulary and device; no GUI state."""

    def __init__(self, model: torch.nn.Module, vocab: Vocabulary, device: torch.device | str = "cpu") -> None:
        self.model = model.eval()
        self.vocab = vocab
        self.device = torch.device(device)
        self.block_size = int(model.config.block_size)

    def layout(self, settings: GenerationSettings) -> RecordLayout:
        return RecordLayout(seq_len=settings.length, top_k=settings.top_k, n_ids=self.vocab.n_ids)

    @torch.inference_mode()
    def _probs(self, tokens: torch.Tensor, temperature: float) -> torch.Tensor:
        """softmax(logits / T) over the real vocabulary only: (N, V)."""
        logits = self.model(tokens[None])[0, :, : self.vocab.size].float()  # (N, V)
        return torch.softmax(logits / temperature, dim=-1)

    def run(self, settings: GenerationSettings, start: StartState | None = None) -> Iterator[StepRecord]:
        """Yield 'initial' (unless start.emit_initial is False), then ('prediction', 'remask')
        per iteration, then 'final'. Protected positions never change."""
        settings.validate(self.block_size)
        start = start or StartState()
        n, k, mask_id = settings.length, min(settings.top_k, self.vocab.size), self.vocab.mask_id
        layout = self.layout(settings)
        dev = self.device
        if not 0 <= start.iteration < settings.steps:
            raise SettingsError(f"start iteration {start.iteration} is outside 0..{settings.steps - 1}")

        if start.tokens is None:
            tokens = torch.full((n,), mask_id, dtype=torch.long, device=dev)
        else:
            init = np.asarray(start.tokens)
            if init.shape != (n,):
                raise SettingsError(f"start tokens have shape {init.shape}, expected ({n},)")
            if ((init < 0) | (init > mask_id) | ((init >= self.vocab.size) & (init != mask_id))).any():
                raise SettingsError("start tokens hold ids outside the vocabulary")
            tokens = torch.as_tensor(init.astype(np.int64), device=dev)
        protected = torch.zeros(n, dtype=torch.bool, device=dev)
        if start.protected is not None:
            protected = torch.as_tensor(np.asarray(start.protected, dtype=bool), device=dev)
            if bool((protected & (tokens == mask_id)).any()):
                raise SettingsError("a protected position is masked; protect only visible tokens")
        protected_np = protected.cpu().numpy()
        edited_np = None if start.edited is None else np.asarray(start.edited, dtype=bool)

        gen = torch.Generator(device=dev)
        gen.manual_seed(int(settings.seed))
        passes = 0
        prev_np: np.ndarray | None = None

        def emit(kind: str, iteration: int, target: int, conf, score, entropy, top_p, top_i) -> StepRecord:
            nonlocal prev_np
            # One device -> host copy per dtype: ids (tokens | top-k ids) and values
            # (confidence | score | entropy | top-k probs), instead of one sync per field.
            nan_col = nan[:, None]
            values = torch.cat(
                [
                    nan_col if conf is None else conf[:, None].float(),
                    nan_col if score is None else score[:, None].float(),
                    nan_col if entropy is None else entropy[:, None].float(),
                    torch.zeros(n, k, device=dev) if top_p is None else top_p.float(),
                ],
                dim=1,
            ).cpu().numpy()  # (N, 3 + k)
            ids = tokens[:, None] if top_i is None else torch.cat([tokens[:, None], top_i], dim=1)
            ids_np = ids.cpu().numpy()  # (N, 1) or (N, 1 + k)
            toks_np = ids_np[:, 0]
            flags = step_flags(prev_np, toks_np, mask_id, protected_np)
            if kind == "initial" and edited_np is not None:
                flags |= edited_np.astype(np.uint8) * FLAG_EDITED
            prev_np = toks_np
            rec = layout.empty()
            rec.tokens[:] = toks_np
            rec.flags[:] = flags
            rec.confidence[:] = values[:, 0]
            rec.score[:] = values[:, 1]
            rec.entropy[:] = values[:, 2]
            if top_p is not None:
                rec.top_probs[:, :k] = values[:, 3:]
                rec.top_ids[:, :k] = ids_np[:, 1:]
            rec.iteration, rec.kind, rec.target_masks = iteration, kind, target
            rec.n_masked = int((toks_np == mask_id).sum())
            rec.forward_passes = passes
            return rec

        nan = torch.full((n,), float("nan"), device=dev)
        if start.emit_initial:
            yield emit("initial", start.iteration, int((tokens == mask_id).sum()), None, None, None, None, None)
        else:  # the start record exists already: flag the first prediction against it
            prev_np = tokens.cpu().numpy()

        for it in range(start.iteration, settings.steps):
            is_masked = tokens == mask_id  # (N,)
            probs = self._probs(tokens, settings.temperature)  # (N, V)
            passes += 1
            sampled = torch.multinomial(probs, 1, generator=gen)[:, 0]  # (N,)
            tokens = torch.where(is_masked, sampled, tokens)
            p_token = probs.gather(1, tokens[:, None])[:, 0]  # (N,) p of what each position now holds
            entropy = -(probs * torch.log(probs.clamp_min(1e-12))).sum(-1)  # (N,)
            top_p, top_i = probs.topk(k, dim=-1)  # (N, k)
            belief_mask = is_masked[:, None]
            top_p = torch.where(belief_mask, top_p, 0.0)
            top_i = torch.where(belief_mask, top_i, 0)
            entropy = torch.where(is_masked, entropy, nan)
            target = target_masks(n, it, settings.steps, settings.start_ratio, settings.end_ratio)
            yield emit("prediction", it, target, p_token, None, entropy, top_p, top_i)
            if it == settings.steps - 1:
                break

            uniform = torch.rand(n, generator=gen, device=dev)
            if settings.strategy == "seed":
                p_second = self._probs(tokens, settings.temperature).gather(1, tokens[:, None])[:, 0]
                passes += 1
                r = settings.randomness
                score = r * uniform + (1 - r) * (1 - p_second)
                candidates = ~protected
                p_token = p_second
            elif settings.strategy == "random":
                score = uniform
                candidates = ~protected
            else:  # llada: only this iteration's samples may go back
                score = 1 - p_token
                candidates = is_masked & ~protected
            n_remask = min(max(0, target - int((tokens == mask_id).sum())), int(candidates.sum()))
            ranked = torch.where(candidates, score, -float("inf"))
            if n_remask > 0:
                chosen = ranked.topk(n_remask).indices
                tokens = tokens.clone()
                tokens[chosen] = mask_id
            conf = torch.where(tokens == mask_id, nan, p_token)
            yield emit("remask", it, target, conf, torch.where(candidates, score, nan), entropy, top_p, top_i)

        # The finished text, with the beliefs of the last prediction that produced it.
        yield emit("final", settings.steps - 1, 0, p_token, None, entropy, top_p, top_i)
