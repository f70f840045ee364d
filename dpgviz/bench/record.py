"""`python main.py bench record`: what `Recorder.log` with logits costs, against the forward pass that made them.

    python main.py bench record [--length 1024] [--repeats 30] [--device auto] [--json]
    python main.py bench record --vocab 126464 [--length 1024] [--repeats 30] [--device auto] [--json]

On the embedded default model: `forward_ms` is the median of `repeats` forward passes at
`length` tokens (the model's logits, (1, length, V)); `log_ms` the median of as many
`rec.log(x, logits=logits)` calls with those logits (a torch tensor where the model ran)
into a file in a temporary folder, the run's masks going from all to none as a sampler's
do; `ratio` = log_ms / forward_ms (the goal in issue 21: at most 0.05). Forward passes and
logs alternate, so a noisy machine slows both alike; one untimed round first warms up.

With `--vocab V` (issue 31: a LLaDA-sized vocabulary is 126,464): random float32 logits
(length, V) instead of a model's, and `softmax_ms` the median of as many `torch.softmax` over
the same logits (the floor: they must be read once); `ratio` = log_ms / softmax_ms (the goal:
at most 2.0). The logs and the softmaxes alternate, as above.

Imports torch inside `main`; only `dpgviz.bench.main` imports this module.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path


def measure(length: int, repeats: int, device: str) -> dict:
    import numpy as np
    import torch

    from dpgviz.engine.checkpoint import load_model
    from dpgviz.record import Recorder

    loaded = load_model(None, device=device)
    adapter, vocab, dev = loaded.adapter, loaded.vocab, loaded.device
    mask = vocab.mask_id
    gen = torch.Generator().manual_seed(0)
    full = torch.randint(0, vocab.size, (length,), generator=gen)
    order = torch.randperm(length, generator=gen)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    forward_ms, log_ms = [], []
    with tempfile.TemporaryDirectory(prefix="dpgviz-bench-record-") as folder, torch.inference_mode():
        rec = Recorder(list(vocab.itos), mask, length, path=Path(folder) / "run.dpgviz", model=loaded.name)
        x = torch.full((length,), mask, dtype=torch.long)
        rec.log(x.to(dev))  # 'initial', untimed
        for i in range(repeats + 1):  # round 0 warms up
            done = order[: (i + 1) * length // (repeats + 1)]
            x[done] = full[done]
            xd = x.to(dev)
            sync()
            t0 = time.perf_counter()
            logits = adapter.logits(xd[None])[0]  # (length, V)
            sync()
            t1 = time.perf_counter()
            rec.log(xd, logits=logits)
            sync()
            t2 = time.perf_counter()
            if i:
                forward_ms.append((t1 - t0) * 1e3)
                log_ms.append((t2 - t1) * 1e3)
        rec.close()
    fwd, lg = statistics.median(forward_ms), statistics.median(log_ms)
    return {
        "forward_ms": round(fwd, 3), "log_ms": round(lg, 3), "ratio": round(lg / fwd, 4),
        "_info": {"model": loaded.name, "device": str(dev), "length": length, "repeats": repeats,
                  "threads": torch.get_num_threads(), "log_ms_p90": round(float(np.percentile(log_ms, 90)), 3)},
    }


def measure_vocab(vocab_size: int, length: int, repeats: int, device: str) -> dict:
    """`--vocab`: Recorder.log with (length, vocab_size) logits against one torch.softmax over them."""
    import numpy as np
    import torch

    from dpgviz.record import Recorder

    dev = torch.device("cuda" if device == "cuda" or (device == "auto" and torch.cuda.is_available()) else "cpu")
    mask = vocab_size - 1
    gen = torch.Generator().manual_seed(0)
    full = torch.randint(0, mask, (length,), generator=gen)
    order = torch.randperm(length, generator=gen)
    logits = (3 * torch.randn(length, vocab_size, generator=gen)).to(dev)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    softmax_ms, log_ms = [], []
    with tempfile.TemporaryDirectory(prefix="dpgviz-bench-record-") as folder, torch.inference_mode():
        rec = Recorder([f"t{i}" for i in range(mask)], mask, length, path=Path(folder) / "run.dpgviz", model="bench")
        x = torch.full((length,), mask, dtype=torch.long)
        rec.log(x.to(dev))  # 'initial', untimed
        for i in range(repeats + 1):  # round 0 warms up
            done = order[: (i + 1) * length // (repeats + 1)]
            x[done] = full[done]
            xd = x.to(dev)
            sync()
            t0 = time.perf_counter()
            torch.softmax(logits, dim=-1)
            sync()
            t1 = time.perf_counter()
            rec.log(xd, logits=logits)
            sync()
            t2 = time.perf_counter()
            if i:
                softmax_ms.append((t1 - t0) * 1e3)
                log_ms.append((t2 - t1) * 1e3)
        rec.close()
    sm, lg = statistics.median(softmax_ms), statistics.median(log_ms)
    return {
        "log_ms": round(lg, 3), "softmax_ms": round(sm, 3), "ratio": round(lg / sm, 4),
        "_info": {"device": str(dev), "length": length, "vocab": vocab_size, "repeats": repeats,
                  "threads": torch.get_num_threads(), "log_ms_p90": round(float(np.percentile(log_ms, 90)), 3)},
    }


def main(length: int, repeats: int, device: str, as_json: bool, vocab: int | None = None) -> None:
    if vocab is not None:
        result = measure_vocab(vocab, length, repeats, device)
        info = result.pop("_info")
        if as_json:
            json.dump(result, sys.stdout)
            sys.stdout.write("\n")
            return
        sys.stdout.write(
            f"random logits ({info['length']}, {info['vocab']}) on {info['device']}, {info['repeats']} logs, "
            f"{info['threads']} threads (medians)\n"
            f"  torch.softmax          {result['softmax_ms']:8.2f} ms\n"
            f"  rec.log(x, logits)     {result['log_ms']:8.2f} ms   (p90 {info['log_ms_p90']:.2f} ms)\n"
            f"  ratio                  {result['ratio']:8.4f}   (goal <= 2.0)\n"
        )
        return
    result = measure(length, repeats, device)
    info = result.pop("_info")
    if as_json:
        json.dump(result, sys.stdout)
        sys.stdout.write("\n")
        return
    sys.stdout.write(
        f"{info['model']} on {info['device']}, {info['length']} tokens, {info['repeats']} steps, "
        f"{info['threads']} threads (medians)\n"
        f"  forward pass           {result['forward_ms']:8.2f} ms\n"
        f"  rec.log(x, logits)     {result['log_ms']:8.2f} ms   (p90 {info['log_ms_p90']:.2f} ms)\n"
        f"  ratio                  {result['ratio']:8.4f}   (goal <= 0.05)\n"
    )


def add_arguments(bench: object) -> None:
    """`bench record`'s parser (bench/__init__.py adds it with this one call)."""
    b = bench.add_parser("record", help="Recorder.log with logits vs one forward pass of the default model")
    b.add_argument("--length", type=int, default=1024)
    b.add_argument("--repeats", type=int, default=30, help="timed forward passes and logs (medians)")
    b.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    b.add_argument("--json", action="store_true")
    b.add_argument("--vocab", type=int, default=None, metavar="V",
                   help="random (length, V) logits against one torch.softmax instead of the default model")
