"""`dpgviz bench sampler`: per-iteration cost of each strategy against one bare forward pass.

`python main.py bench sampler [--length N] [--steps S] [--rounds R] [--model CKPT] [--json]`,
in-process, no worker. Without --model it times a freshly initialised 6-layer, 384-wide,
6-head model (the seed's usual size); the weights do not change the cost. Strategies are
interleaved round by round so a noisy machine slows all of them alike; medians are reported.

With `--cache prefix` it compares a block run with and without the prefix KV cache
(engine.model, Fast-dLLM) instead: `--runs` seeded runs of `--length` tokens in blocks of
`--block-length` each way, interleaved (the order alternates per seed), timed whole; the
model is the embedded default (or --model), since the cache's error depends on real
weights. Printed: the median seconds per run each way and their ratio; `mean_kl`, the KL
divergence KL(uncached || cached) of softmax(logits / T) at the block's masked positions,
averaged per step over the steps of one more cached run (seed 0, untimed) that reused the
cache, each compared with a whole-window pass on the same input (`mean_kl_all_steps` also
counts the whole-window passes, exact by construction, and `mean_kl_context_alone` gives
the same steps with a cache computed from the context without the block, the alternative
design); and the word validity (engine.compare.word_validity against `--words`) of the
final texts, averaged over the runs.

Imports torch at module level: only `dpgviz.bench.main` imports this module, when the
benchmark runs; the GUI never does.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from dpgviz.core.settings import STRATEGIES, GenerationSettings
from dpgviz.core.vocab import Vocabulary
from dpgviz.engine.adapter import GPTAdapter, ModelAdapter, check_prefix_cache
from dpgviz.engine.model import DiffusionGPT, ModelConfig
from dpgviz.engine.sampler import Sampler

log = logging.getLogger(__name__)


def _model(path: str | None, meta: str | None, device: str) -> tuple[ModelAdapter, str]:
    if path is not None:
        from dpgviz.engine.checkpoint import load_model

        loaded = load_model(path, meta, device)
        return loaded.adapter, loaded.name
    torch.manual_seed(0)
    vocab = Vocabulary(itos=tuple(chr(32 + i) for i in range(65)))
    model = DiffusionGPT(ModelConfig(n_layer=6, n_head=6, n_embd=384, block_size=1024, vocab_size=66)).eval()
    return GPTAdapter(model, vocab), "random 6x384 (10.6M params)"


def measure(length: int, steps: int, rounds: int, model_path: str | None, meta: str | None, device: str) -> dict:
    adapter, name = _model(model_path, meta, device if device != "auto" else "cpu")
    vocab = adapter.vocab
    dev = next(adapter.model.parameters()).device
    sampler = Sampler(adapter, vocab, dev)
    idx = torch.randint(0, vocab.size, (1, length), device=dev)
    times: dict[str, list[float]] = {"bare_forward": [], **{s: [] for s in STRATEGIES}}
    with torch.inference_mode():
        adapter.logits(idx)  # warm-up
    for _ in range(rounds):
        with torch.inference_mode():
            t0 = time.perf_counter()
            for _ in range(steps):
                adapter.logits(idx)
            times["bare_forward"].append((time.perf_counter() - t0) / steps)
        for strategy in STRATEGIES:
            settings = GenerationSettings(length=length, steps=steps, strategy=strategy)
            t0 = time.perf_counter()
            iterations = 0
            for record in sampler.run(settings):  # an open-ended strategy (threshold) is cut at `steps`
                iterations += record.kind == "prediction"
                if iterations == steps and record.kind != "prediction":
                    break
            times[strategy].append((time.perf_counter() - t0) / iterations)
    result = {"model": name, "length": length, "steps": steps, "rounds": rounds, "threads": torch.get_num_threads()}
    for key, values in times.items():
        result[f"{key}_ms"] = round(1000 * statistics.median(values), 2)
    bare = result["bare_forward_ms"]
    for strategy in STRATEGIES:
        result[f"{strategy}_per_forward"] = round(result[f"{strategy}_ms"] / bare, 2)
    return result


def main(length: int, steps: int, rounds: int, model_path: str | None, meta: str | None, device: str, as_json: bool) -> None:
    result = measure(length, steps, rounds, model_path, meta, device)
    if as_json:
        json.dump(result, sys.stdout)
        sys.stdout.write("\n")
        return
    sys.stdout.write(f"{result['model']}, N={length}, {steps} iterations x {rounds} rounds, {result['threads']} threads (medians)\n")
    sys.stdout.write(f"  one bare forward pass    {result['bare_forward_ms']:8.1f} ms\n")
    for strategy in STRATEGIES:
        sys.stdout.write(f"  {strategy:9s} per iteration  {result[f'{strategy}_ms']:8.1f} ms  ({result[f'{strategy}_per_forward']:.2f} x bare)\n")


DEFAULT_WORDS = Path(__file__).resolve().parents[3] / "shared" / "data" / "tinyshakespeare.txt"


class _KLProbe:
    """A caching adapter that also runs each cached step's whole window, uncached, and keeps
    KL(uncached || cached) per step (and the same for a cache built from the context alone)."""

    supports_prefix_cache = True

    def __init__(self, inner: ModelAdapter, temperature: float) -> None:
        self.inner, self.vocab, self.block_size = inner, inner.vocab, inner.block_size
        self.temperature = temperature
        allowed = [i for i in range(self.vocab.size) if i not in set(self.vocab.never_sample)]
        self._allowed = torch.as_tensor(allowed, dtype=torch.long)
        self._context: torch.Tensor | None = None
        self._alone: object | None = None  # a cache of the context alone, for the other design
        self.reused: list[tuple[float, float, float]] = []  # per cached step: (masked, all positions, alone)
        self.exact_steps = 0  # whole-window passes (no cache reused: KL 0 by construction)

    def logits(self, ids: torch.Tensor) -> torch.Tensor:
        self.exact_steps += 1
        return self.inner.logits(ids)

    def logits_filling_cache(self, ids: torch.Tensor, prefix_len: int) -> tuple[torch.Tensor, object]:
        self.exact_steps += 1
        self._context = ids[:, :prefix_len]
        _, self._alone = self.inner.logits_filling_cache(self._context, prefix_len)
        return self.inner.logits_filling_cache(ids, prefix_len)

    def _logp(self, logits: torch.Tensor) -> torch.Tensor:
        chosen = logits[..., self._allowed.to(logits.device)].double() / self.temperature
        return torch.log_softmax(chosen, dim=-1)  # (n, V allowed)

    def logits_with_cache(self, ids: torch.Tensor, cache: object) -> torch.Tensor:
        cached = self.inner.logits_with_cache(ids, cache)
        assert self._context is not None
        full = self.inner.logits(torch.cat([self._context, ids], dim=1))[:, self._context.shape[1] :]
        alone = self.inner.logits_with_cache(ids, self._alone)
        p_log = self._logp(full[0])
        kl = (p_log.exp() * (p_log - self._logp(cached[0]))).sum(-1)  # (n,)
        kl_alone = (p_log.exp() * (p_log - self._logp(alone[0]))).sum(-1)  # (n,)
        is_masked = ids[0] == self.vocab.mask_id
        if bool(is_masked.any()):
            self.reused.append(
                (float(kl[is_masked].mean()), float(kl.mean()), float(kl_alone[is_masked].mean()))
            )
        return cached


def _sig(x: float) -> float:
    """`x` to 4 significant digits (KL divergences span orders of magnitude)."""
    return float(f"{float(x):.4g}")


def _final_text(sampler: Sampler, settings: GenerationSettings) -> tuple[str, float]:
    """Run `settings` to the end; the composed final text and the run's seconds."""
    layout = sampler.layout(settings)
    tokens = np.zeros(layout.total_len, dtype=np.int64)
    t0 = time.perf_counter()
    for record in sampler.run(settings):
        if record.kind == "final":
            n = layout.span(record.offset)
            tokens[record.offset : record.offset + n] = record.tokens[:n]
    seconds = time.perf_counter() - t0
    return sampler.vocab.decode(tokens), seconds


def measure_cache(
    length: int, block_length: int, steps: int, strategy: str, runs: int, refresh: int,
    model_path: str | None, meta: str | None, device: str, words: str | None,
) -> dict:
    """Uncached vs prefix-cached block runs of the same settings: time, KL, word validity (see the module doc)."""
    from dpgviz.engine.checkpoint import load_model
    from dpgviz.engine.compare import known_words, word_validity

    started = time.perf_counter()
    loaded = load_model(model_path, meta, device)
    sampler = Sampler(loaded.adapter, loaded.vocab, loaded.device)
    base = GenerationSettings(length=length, block_length=block_length, steps=steps, strategy=strategy)
    base = base.validate(sampler.block_size)
    cached = dataclasses.replace(base, cache="prefix", cache_refresh=refresh)
    check_prefix_cache(sampler.adapter)
    words_path = Path(words) if words else DEFAULT_WORDS
    known = known_words(words_path.read_text(encoding="utf-8")) if words_path.is_file() else None
    if known is None:
        log.warning("no word list at %s: word validity is not measured (pass --words)", words_path)

    warm = dataclasses.replace(base, length=min(length, 2 * block_length), steps=2)  # first-call costs
    for s in (warm, dataclasses.replace(warm, cache="prefix")):
        _final_text(sampler, s)
    times: dict[str, list[float]] = {"uncached": [], "cached": []}
    validity: dict[str, list[float]] = {"uncached": [], "cached": []}
    for seed in range(runs):
        ways = [("uncached", base), ("cached", cached)]
        for name, s in ways if seed % 2 == 0 else ways[::-1]:  # alternate the order: neither always goes first
            text, seconds = _final_text(sampler, dataclasses.replace(s, seed=seed))
            times[name].append(seconds)
            if known is not None:
                validity[name].append(word_validity(text, known))
            log.info("seed %d %-8s %.2f s", seed, name, seconds)

    probe = _KLProbe(sampler.adapter, base.temperature)
    for _ in Sampler(probe, loaded.vocab, loaded.device).run(cached):
        pass
    reused = np.array(probe.reused).reshape(-1, 3)
    n_steps = len(reused) + probe.exact_steps
    uncached_s, cached_s = statistics.median(times["uncached"]), statistics.median(times["cached"])

    def mean(values: list[float]) -> float | None:
        return round(float(np.mean(values)), 4) if values else None

    return {
        "model": loaded.name,
        "length": length,
        "block_length": block_length,
        "steps": steps,
        "strategy": strategy,
        "cache_refresh": refresh,
        "runs": runs,
        "threads": torch.get_num_threads(),
        "uncached_s": round(uncached_s, 3),
        "cached_s": round(cached_s, 3),
        "speedup": round(uncached_s / cached_s, 2),
        "mean_kl": _sig(reused[:, 0].mean()) if len(reused) else 0.0,
        "mean_kl_all_steps": _sig(reused[:, 0].sum() / max(1, n_steps)),
        "mean_kl_all_positions": _sig(reused[:, 1].mean()) if len(reused) else 0.0,
        "mean_kl_context_alone": _sig(reused[:, 2].mean()) if len(reused) else 0.0,
        "kl_steps": {"reused_cache": len(reused), "whole_window": probe.exact_steps},
        "word_validity": {"uncached": mean(validity["uncached"]), "cached": mean(validity["cached"])},
        "uncached_runs_s": [round(t, 3) for t in times["uncached"]],
        "cached_runs_s": [round(t, 3) for t in times["cached"]],
        "bench_s": round(time.perf_counter() - started, 1),
    }


def main_cache(
    length: int, block_length: int, steps: int, strategy: str, runs: int, refresh: int,
    model_path: str | None, meta: str | None, device: str, words: str | None, as_json: bool,
) -> None:
    """`bench sampler --cache prefix`: print measure_cache's numbers (one JSON object with --json)."""
    r = measure_cache(length, block_length, steps, strategy, runs, refresh, model_path, meta, device, words)
    if as_json:
        json.dump(r, sys.stdout)
        sys.stdout.write("\n")
        return
    wv = r["word_validity"]
    pct = {k: "n/a" if v is None else f"{100 * v:.1f}%" for k, v in wv.items()}
    sys.stdout.write(
        f"{r['model']}, N={length} in blocks of {block_length}, {steps} steps, {strategy}, "
        f"refresh {refresh or 'once per block'}, {runs} runs each way, {r['threads']} threads (medians)\n"
        f"  uncached   {r['uncached_s']:8.2f} s per run   words {pct['uncached']}\n"
        f"  cached     {r['cached_s']:8.2f} s per run   words {pct['cached']}\n"
        f"  speedup    {r['speedup']:8.2f} x\n"
        f"  mean KL(uncached || cached) per step {r['mean_kl']:.4f} nats at masked positions "
        f"({r['mean_kl_context_alone']:.4f} with a cache of the context alone)\n"
    )
