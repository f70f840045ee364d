"""Training end to end on a tiny text, resuming, evaluation, and the packaged default model."""

from __future__ import annotations

import json
import math
import pickle
import subprocess
import sys
from pathlib import Path

import torch

from dpgviz.core.discovery import default_model_entry
from dpgviz.core.vocab import safe_load_meta
from dpgviz.engine.checkpoint import load_model
from dpgviz.engine.evaluate import evaluate
from dpgviz.engine.train import TrainConfig, lr_at, train

ROOT = Path(__file__).resolve().parents[1]
TEXT = ("ROMEO:\nBut soft, what light through yonder window breaks?\nIt is the east, and Juliet is the sun.\n\n" * 40)


def tiny_config(tmp_path: Path, **kw) -> TrainConfig:
    data = tmp_path / "corpus.txt"
    data.write_text(TEXT, encoding="utf-8")
    base = dict(data=str(data), out=str(tmp_path / "out"), n_layer=1, n_head=2, n_embd=32, block_size=64,
                batch_size=4, iters=20, warmup=5, eval_interval=10, eval_batches=1, log_interval=5, device="cpu")
    base.update(kw)
    return TrainConfig(**base)


def test_train_writes_seed_format_and_resumes(tmp_path):
    summary = train(tiny_config(tmp_path))
    out = tmp_path / "out"
    assert summary["iters"] == 20 and math.isfinite(summary["best_val_ce"])
    ckpt = torch.load(out / "ckpt.pt", weights_only=True)
    assert ckpt["model_args"]["attention_type"] == "bidirectional" and ckpt["model_args"]["use_rope"] is True
    meta = safe_load_meta((out / "meta.pkl").read_bytes())
    assert meta["vocab_size"] == len(set(TEXT)) and ckpt["model_args"]["vocab_size"] == meta["vocab_size"] + 1
    assert "transformer.wte.weight" in ckpt["model"] and "lm_head.weight" in ckpt["model"]
    log_lines = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [e["iter"] for e in log_lines] == [10, 20]
    resumed = train(tiny_config(tmp_path, iters=30, resume=True))
    assert resumed["iters"] == 30
    assert [e["iter"] for e in resumed["history"]] == [10, 20, 30]
    assert torch.load(out / "last.pt", weights_only=True)["iter_num"] == 30
    loaded = load_model(out / "ckpt.pt", device="cpu")  # dpgviz reads its own output like any user checkpoint
    assert loaded.vocab.size == meta["vocab_size"]


def test_learning_rate_warms_up_then_decays():
    cfg = TrainConfig(lr=1e-3, warmup=10, iters=100, min_lr_ratio=0.1)
    assert lr_at(0, cfg) < lr_at(9, cfg) == cfg.lr
    assert lr_at(50, cfg) < cfg.lr and abs(lr_at(100, cfg) - 1e-4) < 1e-9
    assert abs(lr_at(20, cfg, time_fraction=1.0) - 1e-4) < 1e-9  # a time limit ends the decay too


def test_evaluate_reports_sane_numbers(tmp_path):
    train(tiny_config(tmp_path, iters=10))
    loaded = load_model(tmp_path / "out" / "ckpt.pt", device="cpu")
    result = evaluate(loaded, TEXT, samples=2)
    n_chars = len(set(TEXT))
    assert 0 < result["masked_ce"] < 1.5 * math.log(n_chars)  # near or below uniform after a few steps
    assert set(result["masked_ce_by_ratio"]) == {"0.1", "0.3", "0.5", "0.7", "0.9"}
    assert 0.0 <= result["word_share"] <= 1.0 and len(result["samples"]) == 2


def test_train_cli_refuses_missing_data(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "main.py"), "train", "--data", str(tmp_path / "nope.txt"), "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "no such data file" in out.stderr


def test_packaged_default_model_is_seed_format():
    entry = default_model_entry()
    assert entry.path.is_file() and entry.meta.is_file()
    assert entry.path.stat().st_size <= 12 * 1024 * 1024
    ckpt = torch.load(entry.path, weights_only=True)
    args = ckpt["model_args"]
    assert args["attention_type"] == "bidirectional" and args["block_size"] == 1024
    with open(entry.meta, "rb") as fh:
        meta = pickle.load(fh)  # our own file, and plain data: also readable by the seed's tools
    assert meta["vocab_size"] == 65 and len(meta["itos"]) == 65 and meta["stoi"]["\n"] == 0
    loaded = load_model(None, device="cpu")
    assert loaded.vocab.mask_id == 65 and loaded.config.vocab_size >= 66


def test_heldout_ce_is_the_mean_log_loss_of_the_masked_tokens():
    """The shared masked-CE loop against a hand computation with the same mask draws."""
    from dpgviz.engine.evaluate import heldout_ce
    from dpgviz.engine.train import EVAL_RATIOS, split_corpus

    loaded = load_model(None, device="cpu")
    text = TEXT * 4  # a held-out tenth a little over one 1024-token window
    got = heldout_ce(loaded, text, max_windows=1, seed=7)
    ids = torch.as_tensor(loaded.vocab.encode(split_corpus(text)[1]))
    block = min(loaded.config.block_size, len(ids))
    x0 = ids[:block][None]
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for ratio in EVAL_RATIOS:
            is_masked = torch.rand(x0.shape, generator=gen) < ratio
            logits = loaded.model(torch.where(is_masked, loaded.vocab.mask_id, x0))[..., : loaded.vocab.size]
            nll = -torch.log_softmax(logits.double(), dim=-1).gather(-1, x0[..., None])[..., 0]
            want = float(nll[is_masked].mean())
            assert math.isclose(got[ratio], want, rel_tol=1e-4), (ratio, got[ratio], want)
    assert got[0.9] > got[0.1]  # more context hidden, harder to guess
