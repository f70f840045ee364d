"""`dpgviz bench sampler`: per-iteration cost of each strategy against one bare forward pass.

`python main.py bench sampler [--length N] [--steps S] [--rounds R] [--model CKPT] [--json]`,
in-process, no worker. Without --model it times a freshly initialised 6-layer, 384-wide,
6-head model (the seed's usual size); the weights do not change the cost. Strategies are
interleaved round by round so a noisy machine slows all of them alike; medians are reported.

Imports torch at module level: only `dpgviz.bench.main` imports this module, when the
benchmark runs; the GUI never does.
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import torch

from dpgviz.core.settings import STRATEGIES, GenerationSettings
from dpgviz.core.vocab import Vocabulary
from dpgviz.engine.adapter import GPTAdapter, ModelAdapter
from dpgviz.engine.model import DiffusionGPT, ModelConfig
from dpgviz.engine.sampler import Sampler


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
