"""The prefix KV cache (engine.model, Fast-dLLM): exact where it must be, recorded, refused where it cannot run."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_engine import VOCAB, make_checkpoint

from dpgviz.core.settings import GenerationSettings, SettingsError
from dpgviz.engine.adapter import GPTAdapter, check_prefix_cache
from dpgviz.engine.checkpoint import load_model
from dpgviz.engine.model import DiffusionGPT, ModelConfig
from dpgviz.engine.sampler import Sampler

ROOT = Path(__file__).resolve().parents[1]
BLOCK_SIZE = 64  # the tiny model's window: blocks of 16 see 48 tokens of context


def _model(use_rope: bool = True) -> DiffusionGPT:
    torch.manual_seed(0)
    cfg = ModelConfig(n_layer=2, n_head=2, n_embd=32, block_size=BLOCK_SIZE, vocab_size=VOCAB.size + 1, use_rope=use_rope)
    model = DiffusionGPT(cfg).eval()
    with torch.no_grad():  # larger weights and non-trivial norms, so every layer's K/V matter
        for name, p in model.named_parameters():
            p.add_(torch.randn_like(p) * 0.1) if "ln" in name else p.mul_(4.0)
    return model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("prefix_cache") / "out", block_size=BLOCK_SIZE)


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, str(ROOT / "main.py"), *args], capture_output=True, text=True, timeout=120, env=env, cwd=ROOT
    )


# -- the model ------------------------------------------------------------------------------------
@pytest.mark.parametrize("use_rope", [True, False])
@torch.inference_mode()
def test_cached_forward_equals_the_plain_forward_on_the_window_it_was_filled_from(use_rope: bool) -> None:
    model = _model(use_rope)
    idx = torch.randint(0, VOCAB.size + 1, (2, 40), generator=torch.Generator().manual_seed(1))  # (B, T)
    full = model(idx)  # (B, T, V)
    filled, cache = model.forward_filling_cache(idx, 28)
    assert torch.equal(filled, full)  # filling the cache is the plain forward
    block = model.forward_with_cache(idx[:, 28:], cache)  # (B, 12, V): the block alone, at positions 28..39
    torch.testing.assert_close(block, full[:, 28:], rtol=1e-5, atol=1e-5)


@torch.inference_mode()
def test_the_block_is_rotated_at_its_absolute_positions() -> None:
    model = _model()
    idx = torch.randint(0, VOCAB.size, (1, 40), generator=torch.Generator().manual_seed(2))
    full = model(idx)
    _, cache = model.forward_filling_cache(idx, 28)
    cache.length = 0  # the same keys, but the block's queries placed at the window's start
    shifted = model.forward_with_cache(idx[:, 28:], cache)
    assert (shifted - full[:, 28:]).abs().max() > 1e-2


@torch.inference_mode()
def test_a_changed_block_makes_the_cache_an_approximation() -> None:
    model = _model()
    idx = torch.full((1, 40), VOCAB.mask_id)
    idx[0, :28] = torch.randint(0, VOCAB.size, (28,), generator=torch.Generator().manual_seed(3))
    _, cache = model.forward_filling_cache(idx, 28)  # the context's K/V computed with the block all masked
    changed = idx.clone()
    changed[0, 28:34] = torch.arange(6)
    exact = model(changed)[:, 28:]
    cached = model.forward_with_cache(changed[:, 28:], cache)
    assert (cached - exact).abs().max() > 1e-2  # stale context K/V: not equal ...
    torch.testing.assert_close(cached, exact, rtol=0.0, atol=1.0)  # ... but close


# -- the sampler ----------------------------------------------------------------------------------
def _run(sampler: Sampler, settings: GenerationSettings) -> np.ndarray:
    return np.stack([r.tokens.copy() for r in sampler.run(settings)])  # (records, L)


def test_refreshing_every_iteration_gives_the_uncached_run(tiny: Path) -> None:
    loaded = load_model(tiny, device="cpu")
    sampler = Sampler(loaded.adapter, loaded.vocab, "cpu")
    base = GenerationSettings(length=80, block_length=16, steps=5, strategy="llada", seed=3)
    plain = _run(sampler, base)
    assert np.array_equal(_run(sampler, dataclasses.replace(base, cache="prefix", cache_refresh=1)), plain)
    cached = _run(sampler, dataclasses.replace(base, cache="prefix"))
    assert cached.shape == plain.shape and not (cached == VOCAB.mask_id)[-1].any()


class CountingAdapter(GPTAdapter):
    """GPTAdapter counting whole-window and block-only passes."""

    def __init__(self, model: torch.nn.Module, vocab) -> None:
        super().__init__(model, vocab)
        self.passes: list[tuple[str, int]] = []

    def logits(self, ids):
        self.passes.append(("window", ids.shape[1]))
        return super().logits(ids)

    def logits_filling_cache(self, ids, prefix_len):
        self.passes.append(("fill", ids.shape[1]))
        return super().logits_filling_cache(ids, prefix_len)

    def logits_with_cache(self, ids, cache):
        self.passes.append(("cached", ids.shape[1]))
        return super().logits_with_cache(ids, cache)


@pytest.mark.parametrize(("refresh", "fills_per_block"), [(0, 1), (2, 3)])
def test_each_block_runs_the_window_once_then_the_block_alone(tiny: Path, refresh: int, fills_per_block: int) -> None:
    loaded = load_model(tiny, device="cpu")
    adapter = CountingAdapter(loaded.model, loaded.vocab)
    settings = GenerationSettings(length=48, block_length=16, steps=5, strategy="llada", cache="prefix", cache_refresh=refresh)
    list(Sampler(adapter, loaded.vocab, "cpu").run(settings))
    # block 0 has no context: 5 plain passes over its 16 tokens; blocks 1 and 2 fill the cache
    # from their whole window (32, 48 tokens) at iterations 0 (, 2, 4) and run 16 tokens otherwise
    assert adapter.passes[:5] == [("window", 16)] * 5
    for b, window in ((1, 32), (2, 48)):
        passes = adapter.passes[5 * b : 5 * b + 5]
        assert passes.count(("fill", window)) == fills_per_block
        assert passes.count(("cached", 16)) == 5 - fills_per_block
        assert passes[0] == ("fill", window)


def test_a_model_without_the_cached_forward_is_refused_in_one_line(tiny: Path) -> None:
    class Plain(torch.nn.Module):  # a nanoGPT-style module without forward_with_cache
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner, self.config = inner, inner.config

        def forward(self, idx: torch.Tensor) -> torch.Tensor:
            return self.inner(idx)

    loaded = load_model(tiny, device="cpu")
    sampler = Sampler(Plain(loaded.model), loaded.vocab, "cpu")
    with pytest.raises(SettingsError, match="prefix cache") as info:
        next(sampler.run(GenerationSettings(length=32, block_length=16, steps=2, cache="prefix")))
    assert "\n" not in str(info.value)
    check_prefix_cache(loaded.adapter)  # the GPT itself can


# -- settings ---------------------------------------------------------------------------------------
def test_the_cache_is_recorded_only_when_on() -> None:
    plain = GenerationSettings(length=64)
    assert "cache" not in plain.to_dict() and "cache_refresh" not in plain.to_dict()
    on = dataclasses.replace(plain, cache="prefix", cache_refresh=4)
    assert on.to_dict()["cache"] == "prefix" and on.to_dict()["cache_refresh"] == 4
    assert GenerationSettings.from_dict(on.to_dict()) == on
    assert GenerationSettings.from_dict(plain.to_dict()) == plain


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"cache": "suffix"}, "cache must be one of none, prefix"),
        ({"cache": "prefix", "cache_refresh": -1}, "cache refresh must be 0"),
        ({"cache_refresh": 2}, "needs the prefix cache"),
    ],
)
def test_bad_cache_settings_are_refused(changes: dict, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        GenerationSettings(**changes).validate()


# -- the command line -------------------------------------------------------------------------------
@pytest.mark.slow
def test_generate_records_the_cache_in_the_session(tiny: Path, tmp_path: Path) -> None:
    from dpgviz.store.session_open import open_session

    out = tmp_path / "cached.dpgviz"
    args = ["generate", "--model", str(tiny), "--length", "48", "--block-length", "16", "--steps", "3", "--device", "cpu"]
    done = _cli(*args, "--cache", "prefix", "--cache-refresh", "2", "--out", str(out))
    assert done.returncode == 0, done.stderr
    with open_session(out) as session:
        assert session.settings["cache"] == "prefix" and session.settings["cache_refresh"] == 2
        root = session.store.branch_order[0]
        assert session.store.branches[root].settings["cache"] == "prefix"


@pytest.mark.slow
def test_a_hugging_face_model_refuses_the_cache_in_one_line(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    folder = tmp_path / "tiny-bert"
    folder.mkdir()
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "on", "mat", ".", "a"]
    (folder / "vocab.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
    tok = transformers.BertTokenizerFast.from_pretrained(folder, local_files_only=True)
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=len(words), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=64,
    )
    transformers.BertForMaskedLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    done = _cli("generate", "--model", str(folder), "--length", "16", "--steps", "2", "--device", "cpu", "--cache", "prefix")
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if "prefix cache" in line]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "HFMaskedLMAdapter" in lines[0]


# -- the benchmark ----------------------------------------------------------------------------------
def test_the_cache_benchmark_reports_time_kl_and_word_validity(tiny: Path, tmp_path: Path) -> None:
    from dpgviz.bench.sampler import measure_cache

    words = tmp_path / "words.txt"
    words.write_text("the king and the queen shall go to the sea\n", encoding="utf-8")
    r = measure_cache(64, 16, 4, "llada", 2, 0, str(tiny), None, "cpu", str(words))
    assert {"uncached_s", "cached_s", "speedup", "mean_kl", "word_validity"} <= set(r)
    assert len(r["uncached_runs_s"]) == len(r["cached_runs_s"]) == 2
    assert r["speedup"] == pytest.approx(r["uncached_s"] / r["cached_s"], rel=0.05, abs=0.01)
    # blocks 1..3 have context: 3 iterations each reuse the cache, 1 fills it; block 0 runs 4 plain passes
    assert r["kl_steps"] == {"reused_cache": 9, "whole_window": 7}
    assert 0.0 < r["mean_kl"] < 1.0 and 0.0 < r["mean_kl_context_alone"]
    assert all(0.0 <= r["word_validity"][k] <= 1.0 for k in ("uncached", "cached"))
