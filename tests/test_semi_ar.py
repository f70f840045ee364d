"""Semi-autoregressive generation: blocks, their conditioning, records and composition (CPU, tiny model)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_engine import VOCAB, make_checkpoint

from dpgviz.core.records import FLAG_MASKED, FLAG_PROTECTED, RecordLayout, record_count, run_record_count
from dpgviz.core.settings import GenerationSettings, SettingsError
from dpgviz.engine.checkpoint import load_model
from dpgviz.engine.sampler import Sampler, StartState
from dpgviz.store.blocks import COMPOSED_FIELDS, Composer, compose, final_text_ids
from dpgviz.store.inspect import sampled_at
from dpgviz.store.step_store import StepStore

ROOT = Path(__file__).resolve().parents[1]
MASK = "\u2588"
BLOCK_SIZE = 64  # the tiny model's; blocks of 24 leave 40 tokens of context


class Spy(torch.nn.Module):
    """The model, recording every input window it is given."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.config = inner.config
        self.inputs: list[np.ndarray] = []

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        self.inputs.append(idx[0].cpu().numpy().copy())  # (T,)
        return self.inner(idx)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("semi_ar") / "out", block_size=BLOCK_SIZE)


@pytest.fixture(scope="module")
def sampler(tiny) -> Sampler:
    loaded = load_model(tiny, device="cpu")
    return Sampler(loaded.model, loaded.vocab, "cpu")


def spy_sampler(tiny: Path) -> tuple[Sampler, Spy]:
    loaded = load_model(tiny, device="cpu")
    spy = Spy(loaded.model)
    return Sampler(spy, loaded.vocab, "cpu"), spy


def to_store(sampler: Sampler, settings: GenerationSettings, start: StartState | None = None):
    records = list(sampler.run(settings, start))
    store = StepStore(sampler.layout(settings), capacity=len(records), mask_id=VOCAB.mask_id)
    branch = store.new_branch(settings.to_dict()).id
    for r in records:
        store.append_record(r, branch)
    return records, store, store.rows(branch)


def brute_force(records, layout: RecordLayout, field: str) -> list[np.ndarray]:
    """The whole sequence after each record, by replaying every record over the last."""
    fill = {"tokens": VOCAB.mask_id, "flags": FLAG_MASKED}.get(field, np.nan)
    state = np.full(layout.total_len, fill, dtype=getattr(records[0], field).dtype)
    out = []
    for r in records:
        span = layout.span(r.offset)
        state[r.offset : r.offset + span] = getattr(r, field)[:span]
        out.append(state.copy())
    return out


# -- settings -------------------------------------------------------------------------------
def test_block_length_settings_are_validated():
    with pytest.raises(SettingsError, match="--block-length"):
        GenerationSettings(length=2500).validate(1024)
    with pytest.raises(SettingsError, match="block length 2000 exceeds"):
        GenerationSettings(length=2500, block_length=2000).validate(1024)
    with pytest.raises(SettingsError, match="block length"):
        GenerationSettings(block_length=-1).validate()
    with pytest.raises(SettingsError, match="65536"):
        GenerationSettings(length=70_000, block_length=256).validate(1024)
    s = GenerationSettings(length=2500, block_length=256).validate(1024)
    assert (s.block_tokens, s.n_blocks) == (256, 10)
    assert GenerationSettings(length=100, block_length=256).block_tokens == 100  # one (shorter) block
    assert GenerationSettings(length=2500).with_default_blocks(1024).block_length == 256
    assert GenerationSettings(length=2500).with_default_blocks(128).block_length == 128
    assert GenerationSettings(length=500).with_default_blocks(1024).block_length == 0  # fits: unchanged
    assert run_record_count(s) == 10 * record_count(20)
    assert run_record_count(s, start_iteration=5, start_block=8) == record_count(20, 5) + record_count(20)


def test_layout_round_trips_and_old_layouts_load():
    layout = RecordLayout(seq_len=64, top_k=4, n_ids=66, total_len=300)
    assert RecordLayout.from_dict(layout.to_dict()) == layout and RecordLayout(**layout.to_dict()) == layout
    assert (layout.n_blocks, layout.span(256), layout.span(0), layout.is_blocks) == (5, 44, 64, True)
    old = RecordLayout.from_dict({"seq_len": 40, "top_k": 8, "n_ids": 66})
    assert old.total_len == 40 and not old.is_blocks


# -- the sampler ----------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", ["seed", "llada"])
def test_block_records_hold_only_their_block(sampler, strategy):
    s = GenerationSettings(length=100, block_length=24, steps=4, strategy=strategy, seed=1)
    layout = sampler.layout(s)
    assert (layout.seq_len, layout.total_len, layout.n_blocks) == (24, 100, 5)
    records = list(sampler.run(s))
    assert len(records) == run_record_count(s) == 5 * record_count(4)
    per_block = record_count(4)
    for b in range(5):
        mine = records[b * per_block : (b + 1) * per_block]
        assert [r.kind for r in mine] == ["initial"] + ["prediction", "remask"] * 3 + ["prediction", "final"]
        assert {(r.block, r.offset) for r in mine} == {(b, 24 * b)}
        span = layout.span(24 * b)
        assert span == (24 if b < 4 else 4)
        assert mine[0].n_masked == span and mine[-1].n_masked == 0  # masks only inside the block
        for r in mine:
            assert r.tokens.shape == (24,)
            assert r.n_masked == int((r.tokens[:span] == VOCAB.mask_id).sum())
            if span < 24:  # the last block's padding: token 0, no values, no flags
                assert (r.tokens[span:] == 0).all() and (r.flags[span:] == 0).all()
                assert np.isnan(r.confidence[span:]).all() and (r.top_probs[span:] == 0).all()
    passes = records[-1].forward_passes
    assert passes == 5 * {"seed": 2 * 4 - 1, "llada": 4}[strategy]  # counted across blocks


def test_each_block_is_conditioned_on_the_text_before_it(tiny):
    sampler, spy = spy_sampler(tiny)
    s = GenerationSettings(length=100, block_length=24, steps=3, strategy="random", seed=4)
    records = list(sampler.run(s))
    finals = {r.block: r for r in records if r.kind == "final"}
    full = np.concatenate([finals[b].tokens[: sampler.layout(s).span(24 * b)] for b in range(5)])  # (100,)
    assert len(spy.inputs) == 5 * 3  # one pass per iteration (random strategy), 3 per block
    context_len = BLOCK_SIZE - 24
    for i, window in enumerate(spy.inputs):
        b = i // 3
        off = 24 * b
        ctx = full[max(0, off - context_len) : off]
        n = min(24, 100 - off)
        assert len(window) == len(ctx) + n <= BLOCK_SIZE, (i, len(window))
        np.testing.assert_array_equal(window[: len(ctx)], ctx, err_msg=f"pass {i}: context of block {b}")
        if i % 3 == 0:  # a block's first pass: the block itself is all masked
            assert (window[len(ctx) :] == VOCAB.mask_id).all(), i
    # The context changes what the model predicts: the same block without context differs.
    first_pass_block1 = spy.inputs[3]
    with torch.no_grad():
        inner = spy.inner
        with_ctx = inner(torch.as_tensor(first_pass_block1)[None])[0, -24:]
        without = inner(torch.as_tensor(first_pass_block1[-24:])[None])[0]
    assert not torch.allclose(with_ctx, without)


def test_composed_final_text_has_no_masks_and_joins_the_blocks(sampler):
    s = GenerationSettings(length=100, block_length=24, steps=4, seed=2)
    records, store, rows = to_store(sampler, s)
    ids = final_text_ids(store, rows, VOCAB.mask_id)
    assert ids.shape == (100,) and (ids < VOCAB.size).all()
    finals = [r for r in records if r.kind == "final"]
    np.testing.assert_array_equal(ids, np.concatenate([r.tokens for r in finals])[:100])


def test_compose_equals_brute_force_for_every_record(sampler):
    s = GenerationSettings(length=100, block_length=24, steps=3, seed=3)
    records, store, rows = to_store(sampler, s)
    comp = Composer(store, rows, VOCAB.mask_id)
    order = list(range(len(rows)))
    rng = np.random.default_rng(0)
    order += list(rng.permutation(len(rows)))  # jumps back and forth through the cache
    for field in COMPOSED_FIELDS:
        want = brute_force(records, store.layout, field)
        for i in order:
            np.testing.assert_array_equal(comp.field(field, i), want[i], err_msg=f"{field} at record {i}")
        np.testing.assert_array_equal(compose(store, rows, 17, field, VOCAB.mask_id), want[17])
    # Before block 1 starts, everything after block 0 is masked with no values.
    at = comp.record(record_count(3) - 1)
    assert (at["tokens"][24:] == VOCAB.mask_id).all() and (at["flags"][24:] == FLAG_MASKED).all()
    assert np.isnan(at["confidence"][24:]).all()


def test_compose_of_a_one_block_run_is_the_row_itself(sampler):
    s = GenerationSettings(length=40, steps=3)
    _, store, rows = to_store(sampler, s)
    got = compose(store, rows, 3, "tokens", VOCAB.mask_id)
    assert np.shares_memory(got, store.column("tokens")) and (got == store.column("tokens")[rows[3]]).all()


def test_block_length_of_the_whole_length_is_a_plain_run(sampler):
    plain = list(sampler.run(GenerationSettings(length=40, steps=4, seed=6)))
    one_block = list(sampler.run(GenerationSettings(length=40, steps=4, seed=6, block_length=40)))
    for x, y in zip(plain, one_block, strict=True):
        for name, arr in x.arrays().items():
            np.testing.assert_array_equal(arr, y.arrays()[name], err_msg=name)


def test_protected_positions_hold_within_blocks(sampler):
    start = np.full(100, VOCAB.mask_id)
    protected = np.zeros(100, dtype=bool)
    start[30:40] = VOCAB.encode("hear me sp")  # inside block 1 (24..47)
    start[90:95] = VOCAB.encode("Speak")  # inside the short last block (96 is past it: 72..95)
    protected[30:40] = protected[90:95] = True
    s = GenerationSettings(length=100, block_length=24, steps=4, strategy="seed", randomness=1.0)
    records, store, rows = to_store(sampler, s, StartState(tokens=start, protected=protected))
    assert records[0].block == 0  # block 0 has masks: the run starts there
    for r in records:
        span = store.layout.span(r.offset)
        sl = slice(r.offset, r.offset + span)
        assert (r.tokens[:span][protected[sl]] == start[sl][protected[sl]]).all()
        assert (r.flags[:span][protected[sl]] & FLAG_PROTECTED).all()
    final = final_text_ids(store, rows, VOCAB.mask_id)
    assert (final[protected] == start[protected]).all() and (final < VOCAB.size).all()


def test_a_start_state_with_finished_blocks_starts_at_the_first_masked_block(tiny):
    sampler, spy = spy_sampler(tiny)
    s = GenerationSettings(length=100, block_length=24, steps=3, strategy="llada", seed=9)
    start = np.full(100, VOCAB.mask_id)
    start[:48] = np.resize(VOCAB.encode("First Citizen:\nBefore we proceed "), 48)  # blocks 0 and 1 done
    records = list(sampler.run(s, StartState(tokens=start, iteration=1)))
    assert records[0].block == 2 and records[0].kind == "initial" and records[0].iteration == 1
    assert len(records) == run_record_count(s, start_iteration=1, start_block=2)
    np.testing.assert_array_equal(spy.inputs[0][: BLOCK_SIZE - 24], start[48 - 40 : 48])


def test_candidates_are_stored_only_in_predictions(sampler):
    s = GenerationSettings(length=40, steps=4, seed=1)
    records, store, rows = to_store(sampler, s)
    for r in records:
        has = (r.top_probs != 0).any()
        assert has == (r.kind == "prediction"), r.kind
    # A settled token's candidates are found in the prediction that sampled it.
    final_index = len(records) - 1
    for pos in range(40):
        i = sampled_at(store, rows, pos, final_index)
        assert i is not None and records[i].kind == "prediction", pos


# -- the command line -------------------------------------------------------------------------
def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "main.py"), *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def tiny128(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("semi_ar_cli") / "out", block_size=128)


def test_cli_generates_past_the_block_size_in_blocks(tiny128, tmp_path):
    base = ("generate", "--model", str(tiny128), "--length", "300", "--steps", "3", "--seed", "2", "--device", "cpu")
    plain = cli(*base, "--block-length", "64")
    assert plain.returncode == 0, plain.stderr
    text = plain.stdout.rstrip("\n")
    assert len(text) == 300 and MASK not in text

    out = tmp_path / "run.dpgviz"
    js = cli(*base, "--block-length", "64", "--json", "--out", str(out))
    assert js.returncode == 0, js.stderr
    data = json.loads(js.stdout)
    records = data["records"]
    assert len(records) == 5 * record_count(3)
    assert data["final_text"] == records[-1]["full_text"] == text  # same seed, same text
    for r in records[:-1]:
        assert "full_text" not in r  # compact: each record its own block (--full-text adds the whole text)
    for r in records:
        assert r["offset"] == 64 * r["block"] and len(r["text"]) == min(64, 300 - r["offset"])
        assert r["text"].count(MASK) == r["block_masked"] <= r["masked"]

    shown = cli("show", str(out), "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["records"] == records  # the session composes the same way
    exported = cli("export", str(out), "--format", "text", "--out", str(tmp_path / "final.txt"))
    assert exported.returncode == 0, exported.stderr
    assert (tmp_path / "final.txt").read_text(encoding="utf-8") == text

    auto = cli("generate", "--model", str(tiny128), "--length", "300", "--steps", "2", "--device", "cpu")
    assert auto.returncode == 0, auto.stderr
    assert len(auto.stdout.rstrip("\n")) == 300 and "blocks of 128" in auto.stderr

    off = cli("generate", "--model", str(tiny128), "--length", "300", "--block-length", "0", "--device", "cpu")
    assert off.returncode != 0 and "--block-length" in off.stderr
