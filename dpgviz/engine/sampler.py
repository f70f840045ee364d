"""The denoising sampler: one generator that yields a StepRecord per substep.

The GUI (through the worker) and the CLI drive this same generator; visualisation never
gets its own copy of the algorithm. One loop runs every strategy: each iteration one
forward pass gives p = softmax(logits / T) at every position, `strategies.propose` fills
each masked position (sampled, top-k / top-p filtered, or greedy), and the strategy
(`engine.strategies`) picks which positions go back to mask: a score per position plus a
count rule (usually the schedule's `core.schedule.target_masks`). The model is reached
only through an adapter (`engine.adapter`): tokenizer, logits, block size.

Each iteration yields a 'prediction' record (every masked position filled) and, except
after the last iteration, a 'remask' record; runs open with 'initial' and close with
'final'. A strategy that finishes early ('threshold') closes with 'final' as soon as
nothing is masked, so its runs have fewer records than `steps` allows. Top-k candidates are stored only in the 'prediction' that computed them
('remask' and 'final' carry zeros; store.inspect.sampled_at finds them). A record leaves
the device once per substep; nothing per-token runs in Python.

Semi-autoregressive runs (settings.block_length = L > 0) generate blocks of L tokens one
after another, each with the whole schedule above; the model sees the last
(block_size - L) finished tokens before the block (fixed, never recorded) followed by the
block. A block's records hold only its positions (RecordLayout.seq_len = L, `offset` and
`block` scalars); a shorter last block is padded to L (token 0, NaN, no flags).
store.blocks composes the full sequence at any record. Without blocks the run is one block
with no context, exactly as before blocks existed.

A prompt or template (settings.prompt, core.prompt) fixes positions: the sampler encodes it
itself (`encode_prompt`, with the adapter's chat wrap), so the same settings start the same
sequence here and in the process that laid the run out. Fixed positions are protected and
flagged FLAG_PROMPT; the schedule counts only the positions a run may change. Blocks cover
the generated part only: block b starts at len(prompt) + b*L, and the prompt is context.

With settings.cache = "prefix" (engine.model's prefix KV cache, Fast-dLLM) a block's first
iteration runs the whole window [context ; block] once, exactly as without the cache, and
keeps the context's keys and values; later iterations run only the block's n positions
against them (refreshed by another whole-window pass at each iteration that is a multiple
of settings.cache_refresh = K; 0 = once per block; a run resumed mid-block starts with one). The context's K/V are thus computed with the block as it
was at the refresh (all masked at a block's start), as Fast-dLLM does: the model attends
both ways, so they go stale as the block fills in, which is the approximation
(`bench sampler --cache prefix` measures it). A block without context (the first, without
a prompt) runs as without the cache.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from dpgviz.core.prompt import EncodedPrompt, check_fits, encode_prompt, layout_for, sequence_length
from dpgviz.core.records import FLAG_EDITED, RecordLayout, StepRecord, step_flags
from dpgviz.core.schedule import target_masks
from dpgviz.core.settings import GenerationSettings, SettingsError
from dpgviz.core.vocab import Vocabulary
from dpgviz.engine.adapter import ModelAdapter, as_adapter, check_prefix_cache
from dpgviz.engine.strategies import STRATEGIES, Step, propose


class _ContextCache:
    """One block's prefix cache: the context's keys and values, and whether the next pass refreshes them."""

    def __init__(self, adapter: ModelAdapter, context: torch.Tensor) -> None:
        self.adapter, self.context = adapter, context
        self.cache: object | None = None
        self.refresh = True  # the next pass runs the whole window and keeps the context's K/V

    def logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """(n,) block ids -> (n, V') logits, the whole window when refreshing, else the block only."""
        if self.refresh or self.cache is None:
            window = torch.cat([self.context, tokens])  # (C + n,)
            logits, self.cache = self.adapter.logits_filling_cache(window[None], len(self.context))
            self.refresh = False
            return logits[0, len(self.context) :]  # (n, V')
        return self.adapter.logits_with_cache(tokens[None], self.cache)[0]  # (n, V')


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

    def __init__(
        self, model: torch.nn.Module | ModelAdapter, vocab: Vocabulary, device: torch.device | str = "cpu"
    ) -> None:
        self.adapter = as_adapter(model, vocab)
        self.vocab = vocab
        self.device = torch.device(device)
        self.block_size = int(self.adapter.block_size)
        never = [i for i in vocab.never_sample if 0 <= i < vocab.size]
        self._never = torch.as_tensor(never, dtype=torch.long, device=self.device) if never else None
        # The tokenizer's chat template around a message (core.prompt.ChatWrap), when the adapter has one.
        self.chat_wrap = getattr(self.adapter, "chat_wrap", None)

    def prompt(self, settings: GenerationSettings) -> EncodedPrompt | None:
        """The prompt or template of `settings`, encoded (core.prompt); None without one."""
        return encode_prompt(settings, self.vocab, self.chat_wrap)

    def layout(self, settings: GenerationSettings) -> RecordLayout:
        """Records hold one block (settings.block_tokens) of the generated part, or the whole sequence."""
        return layout_for(settings, self.vocab.n_ids, self.prompt(settings))

    @torch.inference_mode()
    def _probs(
        self, tokens: torch.Tensor, temperature: float, context: torch.Tensor, cache: _ContextCache | None = None
    ) -> torch.Tensor:
        """softmax(logits / T) over the real vocabulary at the positions of `tokens`: (n, V).

        The model sees `context` (fixed text before the block; may be empty) followed by
        `tokens`; the context's own predictions are dropped. With `cache`, the context is
        the cache's (its keys and values reused unless it refreshes).
        """
        if cache is not None:
            logits = cache.logits(tokens)[:, : self.vocab.size].float()  # (n, V)
        else:
            window = torch.cat([context, tokens]) if len(context) else tokens  # (C + n,)
            logits = self.adapter.logits(window[None])[0, len(context) :, : self.vocab.size].float()  # (n, V)
        if self._never is not None:  # special tokens ([CLS], [PAD], ...) are never proposed
            logits[:, self._never] = -float("inf")
        return torch.softmax(logits / temperature, dim=-1)

    def _start_tensors(
        self, settings: GenerationSettings, start: StartState, encoded: EncodedPrompt | None
    ) -> tuple[torch.Tensor, np.ndarray, np.ndarray | None]:
        """The whole sequence's start tokens (total_len,), protected and edited masks, validated.
        The prompt's positions are protected."""
        n, mask_id, dev = sequence_length(settings, encoded), self.vocab.mask_id, self.device
        if start.tokens is None and encoded is not None:
            tokens = torch.as_tensor(encoded.tokens, device=dev)
        elif start.tokens is None:
            tokens = torch.full((n,), mask_id, dtype=torch.long, device=dev)
        else:
            init = np.asarray(start.tokens)
            if init.shape != (n,):
                raise SettingsError(f"start tokens have shape {init.shape}, expected ({n},)")
            if ((init < 0) | (init > mask_id) | ((init >= self.vocab.size) & (init != mask_id))).any():
                raise SettingsError("start tokens hold ids outside the vocabulary")
            tokens = torch.as_tensor(init.astype(np.int64), device=dev)
        protected = np.zeros(n, dtype=bool)
        if start.protected is not None:
            protected = np.asarray(start.protected, dtype=bool)
            if protected.shape != (n,):
                raise SettingsError(f"protected has shape {protected.shape}, expected ({n},)")
            if bool((torch.as_tensor(protected, device=dev) & (tokens == mask_id)).any()):
                raise SettingsError("a protected position is masked; protect only visible tokens")
        if encoded is not None:
            protected = protected | encoded.fixed
        edited = None if start.edited is None else np.asarray(start.edited, dtype=bool)
        return tokens, protected, edited

    def run(self, settings: GenerationSettings, start: StartState | None = None) -> Iterator[StepRecord]:
        """Yield, for each block in order: 'initial' (unless start.emit_initial is False for
        the first block run), ('prediction', 'remask') per iteration, then 'final'.

        Blocks (settings.block_length > 0): block b covers positions [P + b*L, min(P + (b+1)*L, N)),
        P the prompt's length (0 without one: layout.block_offset);
        its records hold only those positions (offset = P + b*L), padded to L in a shorter last
        block. The model sees the last (block_size - L) tokens before the block, fixed, then
        the block. A start state holds the whole sequence; the run starts at its first block
        that has a mask (the blocks before are context), at start.iteration; later blocks
        start at iteration 0. Protected positions never change.
        """
        settings.validate(self.block_size)
        if settings.sampler:  # the reference's own algorithm, step for step (engine.dllm_sampling)
            yield from self._reference(settings, start)
            return
        if settings.cache == "prefix":
            check_prefix_cache(self.adapter)
        start = start or StartState()
        open_ended = STRATEGIES[settings.strategy].finishes_early  # runs until nothing is masked
        if start.iteration < 0 or (start.iteration >= settings.steps and not open_ended):
            raise SettingsError(f"start iteration {start.iteration} is outside 0..{settings.steps - 1}")
        encoded = self.prompt(settings)  # core.prompt.PromptError (a ValueError) for a bad prompt
        check_fits(settings, encoded, self.block_size)
        layout = layout_for(settings, self.vocab.n_ids, encoded)
        seq, protected, edited = self._start_tensors(settings, start, encoded)  # (N,) the whole sequence
        prompt = encoded.fixed if encoded is not None else None  # (N,) flagged FLAG_PROMPT
        L, P, mask_id = layout.seq_len, layout.prefix_len, self.vocab.mask_id
        masked_blocks = np.flatnonzero(
            np.add.reduceat((seq[P:] == mask_id).cpu().numpy(), np.arange(0, layout.total_len - P, L))
        )
        first = int(masked_blocks[0]) if len(masked_blocks) else layout.n_blocks - 1
        context_len = self.block_size - L  # fixed tokens the model sees before each block

        gen = torch.Generator(device=self.device)
        gen.manual_seed(int(settings.seed))
        passes = [0]  # model calls so far, across blocks
        for b in range(first, layout.n_blocks):
            off = layout.block_offset(b)
            n = layout.span(off)
            # (C,) fixed text before the block: the prompt and the blocks already written; a
            # prompt longer than the window keeps its last part (core.prompt.context_note)
            context = seq[max(0, off - context_len) : off]
            is_first = b == first
            block = self._block(
                settings, layout, gen, passes, b, seq[off : off + n].clone(), context,
                protected[off : off + n],
                prompt[off : off + n] if prompt is not None else None,
                edited[off : off + n] if is_first and edited is not None else None,
                start.iteration if is_first else 0,
                start.emit_initial or not is_first,
            )
            seq[off : off + n] = yield from block

    def _reference(self, settings: GenerationSettings, start: StartState | None) -> Iterator[StepRecord]:
        """A run of LLaDA's or Dream's sampler (settings.sampler) on a folder of that family."""
        from dpgviz.engine.dllm_sampling import ReferenceRun

        family = getattr(getattr(self.adapter, "family", None), "name", None)
        if family != settings.sampler or not hasattr(self.adapter, "forward_model"):
            raise SettingsError(f"the {settings.sampler} sampler runs a {settings.sampler}: folder; this model is not one")
        if start is not None and (start.tokens is not None or start.iteration or not start.emit_initial):
            raise SettingsError(f"the {settings.sampler} sampler starts from its prompt only (no edits or resumes)")
        encoded = self.prompt(settings)
        n = sequence_length(settings, encoded)
        if n > self.block_size:
            raise SettingsError(f"the {settings.sampler} sampler runs the whole sequence ({n} tokens) at once; the model takes {self.block_size}")
        yield from ReferenceRun(self.adapter, settings, encoded, self.vocab.n_ids).run()

    def _block(
        self,
        settings: GenerationSettings,
        layout: RecordLayout,
        gen: torch.Generator,
        passes: list[int],
        block: int,
        tokens: torch.Tensor,
        context: torch.Tensor,
        protected_np: np.ndarray,
        prompt_np: np.ndarray | None,
        edited_np: np.ndarray | None,
        start_iteration: int,
        emit_initial: bool,
    ) -> Generator[StepRecord, None, torch.Tensor]:
        """The denoising loop on one block's n positions; returns the block's final tokens (n,)."""
        n, k, mask_id = len(tokens), min(settings.top_k, self.vocab.size), self.vocab.mask_id
        offset, dev = layout.block_offset(block), self.device
        protected = torch.as_tensor(protected_np, device=dev)
        n_free = n - int(protected_np.sum())  # the schedule counts only positions the run may change
        prev_np: np.ndarray | None = None
        nan = torch.full((n,), float("nan"), device=dev)

        def emit(kind: str, iteration: int, target: int, conf, score, entropy, top_p, top_i) -> StepRecord:
            nonlocal prev_np
            # One device -> host copy per dtype: ids (tokens | top-k ids) and values
            # (confidence | score | entropy | top-k probs), instead of one sync per field.
            # Candidates go only into the record that computed them (the 'prediction').
            cols = [nan if x is None else x.float() for x in (conf, score, entropy)]
            values = torch.stack(cols, dim=1)  # (n, 3)
            if top_p is not None:
                values = torch.cat([values, top_p.float()], dim=1)  # (n, 3 + k)
            values_np = values.cpu().numpy()
            ids = tokens[:, None] if top_i is None else torch.cat([tokens[:, None], top_i], dim=1)
            ids_np = ids.cpu().numpy()  # (n, 1) or (n, 1 + k)
            toks_np = ids_np[:, 0]
            flags = step_flags(prev_np, toks_np, mask_id, protected_np, prompt_np)
            if kind == "initial" and edited_np is not None:
                flags |= edited_np.astype(np.uint8) * FLAG_EDITED
            prev_np = toks_np
            rec = layout.empty()  # (L,) arrays: a shorter last block leaves the tail as padding
            rec.tokens[:n] = toks_np
            rec.flags[:n] = flags
            rec.confidence[:n] = values_np[:, 0]
            rec.score[:n] = values_np[:, 1]
            rec.entropy[:n] = values_np[:, 2]
            if top_p is not None:
                rec.top_probs[:n, :k] = values_np[:, 3:]
                rec.top_ids[:n, :k] = ids_np[:, 1:]
            rec.iteration, rec.kind, rec.target_masks = iteration, kind, target
            rec.n_masked = int((toks_np == mask_id).sum())
            rec.forward_passes = passes[0]
            rec.offset, rec.block = offset, block
            return rec

        if emit_initial:
            yield emit("initial", start_iteration, int((tokens == mask_id).sum()), None, None, None, None, None)
        else:  # the start record exists already: flag the first prediction against it
            prev_np = tokens.cpu().numpy()

        strategy = STRATEGIES[settings.strategy]
        # A schedule strategy runs `steps` iterations and the last fills every mask; one that
        # finishes early ('threshold') commits at least one position per iteration and runs
        # until nothing is masked, however many iterations that takes (at most the masks left).
        last = settings.steps - 1 if not strategy.finishes_early else start_iteration + max(0, int((tokens == mask_id).sum()) - 1)
        cache = _ContextCache(self.adapter, context) if settings.cache == "prefix" and len(context) else None
        for it in range(start_iteration, last + 1):
            is_masked = tokens == mask_id  # (n,)
            if cache is not None:  # a whole-window pass where the block starts (or resumes) and every K-th iteration
                every = settings.cache_refresh
                cache.refresh = it == start_iteration or (every > 0 and it % every == 0)
            probs = self._probs(tokens, settings.temperature, context, cache)  # (n, V)
            passes[0] += 1
            tokens = torch.where(is_masked, propose(probs, settings, gen), tokens)
            p_token = probs.gather(1, tokens[:, None])[:, 0]  # (n,) p of what each position now holds
            entropy_all = -(probs * torch.log(probs.clamp_min(1e-12))).sum(-1)  # (n,)
            top_p, top_i = probs.topk(k, dim=-1)  # (n, k)
            belief_mask = is_masked[:, None]
            top_p = torch.where(belief_mask, top_p, 0.0)
            top_i = torch.where(belief_mask, top_i, 0)
            entropy = torch.where(is_masked, entropy_all, nan)
            target = target_masks(n_free, it, settings.steps, settings.start_ratio, settings.end_ratio, settings.schedule)
            yield emit("prediction", it, target, p_token, None, entropy, top_p, top_i)
            if it == last:
                break

            def second_pass(filled: torch.Tensor = tokens) -> torch.Tensor:
                passes[0] += 1
                return self._probs(filled, settings.temperature, context, cache).gather(1, filled[:, None])[:, 0]

            step = Step(
                settings, probs, tokens, is_masked, p_token, entropy_all, protected,
                torch.rand(n, generator=gen, device=dev), target, second_pass,
            )  # fmt: skip
            decision = strategy.decide(step)
            if decision.confidence is not None:
                p_token = decision.confidence
            if decision.count > 0:
                ranked = torch.where(decision.candidates, decision.score, -float("inf"))
                tokens = tokens.clone()
                tokens[ranked.topk(decision.count).indices] = mask_id
            if strategy.finishes_early or not strategy.follows_schedule:  # one more device sync, only for these
                n_left = int((tokens == mask_id).sum())
                if strategy.finishes_early and n_left == 0:
                    last = it  # nothing left to predict: the run is done early
                    break
                target = n_left  # the strategy set its own count
            conf = torch.where(tokens == mask_id, nan, p_token)
            score = torch.where(decision.candidates, decision.score, nan)
            yield emit("remask", it, target, conf, score, entropy, None, None)

        # The finished text, with the confidence and entropy of the last prediction that
        # produced it; its candidates stay in that prediction record.
        yield emit("final", last, 0, p_token, None, entropy, None, None)
        return tokens
