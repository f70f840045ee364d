"""Engine: the seed-compatible model, checkpoint refusals, the sampler's invariants."""

from __future__ import annotations

import math
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from dpgviz.core.records import FLAG_MASKED, FLAG_PROTECTED
from dpgviz.core.schedule import target_masks
from dpgviz.core.settings import GenerationSettings, SettingsError
from dpgviz.core.vocab import VocabError, Vocabulary, safe_load_meta
from dpgviz.engine.checkpoint import CheckpointError, load_model
from dpgviz.engine.model import DiffusionGPT, ModelConfig
from dpgviz.engine.sampler import Sampler, StartState

CORPUS = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n"
VOCAB = Vocabulary.from_text(CORPUS)


def make_checkpoint(folder: Path, *, use_rope: bool = True, bias: bool = False, compiled: bool = False,
                    block_size: int = 64, extra_ids: int = 0, **model_args) -> Path:
    torch.manual_seed(0)
    cfg = ModelConfig(n_layer=2, n_head=2, n_embd=32, block_size=block_size, vocab_size=VOCAB.size + 1 + extra_ids,
                      use_rope=use_rope, bias=bias)
    model = DiffusionGPT(cfg)
    with torch.no_grad():  # non-trivial layer norms and biases, so the reference check means something
        for name, p in model.named_parameters():
            if "ln" in name or name.endswith(".bias"):
                p.add_(torch.randn_like(p) * 0.1)
    state = model.state_dict()
    if compiled:
        state = {f"_orig_mod.{k}": v for k, v in state.items()}
    args = {**cfg.to_model_args(), **model_args}
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"model_args": args, "model": state}, folder / "ckpt.pt")
    with open(folder / "meta.pkl", "wb") as fh:
        pickle.dump(VOCAB.to_meta(), fh)
    return folder / "ckpt.pt"


def reference_logits(state: dict, args: dict, idx: torch.Tensor) -> torch.Tensor:
    """An independent float64 re-implementation of the seed's forward pass from the raw state dict."""
    s = {k.removeprefix("_orig_mod."): v.double() for k, v in state.items()}
    T = idx.shape[0]
    C, nh = args["n_embd"], args["n_head"]
    hs = C // nh

    def ln(x, prefix):
        mu = x.mean(-1, keepdim=True)
        var = ((x - mu) ** 2).mean(-1, keepdim=True)
        y = (x - mu) / torch.sqrt(var + 1e-5) * s[prefix + ".weight"]
        return y + s[prefix + ".bias"] if prefix + ".bias" in s else y

    def lin(x, prefix):
        y = x @ s[prefix + ".weight"].T
        return y + s[prefix + ".bias"] if prefix + ".bias" in s else y

    def rope(x):  # x (nh, T, hs); rotate-half: pair dimension j with j + hs/2
        half = hs // 2
        out = torch.empty_like(x)
        for j in range(half):
            theta = torch.arange(T, dtype=torch.float64) * (10000.0 ** (-2 * j / hs))
            a, b = x[..., j], x[..., j + half]
            out[..., j] = a * torch.cos(theta) - b * torch.sin(theta)
            out[..., j + half] = b * torch.cos(theta) + a * torch.sin(theta)
        return out

    x = s["transformer.wte.weight"][idx]
    if not args["use_rope"]:
        x = x + s["transformer.wpe.weight"][:T]
    for i in range(args["n_layer"]):
        p = f"transformer.h.{i}"
        h = ln(x, p + ".ln_1")
        q, k, v = lin(h, p + ".attn.c_attn").split(C, dim=-1)
        q, k, v = (t.view(T, nh, hs).transpose(0, 1) for t in (q, k, v))
        if args["use_rope"]:
            q, k = rope(q), rope(k)
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hs), dim=-1)  # no causal mask
        y = (att @ v).transpose(0, 1).reshape(T, C)
        x = x + lin(y, p + ".attn.c_proj")
        h = ln(x, p + ".ln_2")
        h = lin(h, p + ".mlp.c_fc")
        h = 0.5 * h * (1 + torch.erf(h / math.sqrt(2)))  # exact GELU
        x = x + lin(h, p + ".mlp.c_proj")
    x = ln(x, "transformer.ln_f")
    return x @ s["transformer.wte.weight"].T  # tied lm_head


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("tiny") / "out")


@pytest.fixture(scope="module")
def sampler(tiny) -> Sampler:
    loaded = load_model(tiny, device="cpu")
    return Sampler(loaded.model, loaded.vocab, "cpu")


# -- model --------------------------------------------------------------------------------
@pytest.mark.parametrize("use_rope,bias,compiled", [(True, False, False), (False, True, False), (True, True, True)])
def test_logits_match_independent_reference(tmp_path, use_rope, bias, compiled):
    path = make_checkpoint(tmp_path, use_rope=use_rope, bias=bias, compiled=compiled)
    ckpt = torch.load(path, weights_only=True)
    loaded = load_model(path, device="cpu")
    idx = torch.as_tensor(VOCAB.encode("Speak, speak.\nAll:\u2588\u2588 me"), dtype=torch.long)
    with torch.no_grad():
        got = loaded.model(idx[None])[0].double()
    want = reference_logits(ckpt["model"], ckpt["model_args"], idx)
    assert got.shape == (len(idx), VOCAB.size + 1)
    assert torch.allclose(got, want, atol=2e-5, rtol=1e-5), (got - want).abs().max()


def test_attention_is_bidirectional(sampler):
    ids = torch.as_tensor(VOCAB.encode("hear me speak"))
    changed = ids.clone()
    changed[-1] = VOCAB.mask_id
    with torch.no_grad():
        a = sampler.adapter.logits(ids[None])[0, 0]
        b = sampler.adapter.logits(changed[None])[0, 0]
    assert not torch.allclose(a, b), "position 0 must see later positions"


# -- refusals -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args,message",
    [
        ({"attention_type": "causal"}, "causal"),
        ({"attention_type": None}, "attention_type"),
        ({"binary_classification": True}, "binary_classification"),
    ],
)
def test_refuses_non_diffusion_checkpoints(tmp_path, args, message):
    path = make_checkpoint(tmp_path, **args)
    if args.get("attention_type", "x") is None:
        ckpt = torch.load(path, weights_only=True)
        del ckpt["model_args"]["attention_type"]
        torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match=message):
        load_model(path, device="cpu")


def test_refuses_truncated_and_foreign_files(tmp_path):
    path = make_checkpoint(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"cut short|not a checkpoint"):
        load_model(path, device="cpu")
    path.write_text("hello, not a checkpoint")
    with pytest.raises(CheckpointError):
        load_model(path, device="cpu")
    torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError, match="nanoGPT-style"):
        load_model(path, device="cpu")


def test_refuses_missing_or_foreign_vocabulary(tmp_path):
    path = make_checkpoint(tmp_path / "a" / "out")
    (path.parent / "meta.pkl").unlink()
    with pytest.raises(CheckpointError, match="no vocabulary"):
        load_model(path, device="cpu")
    big = Vocabulary.from_text(CORPUS + "QXZ#@")  # more tokens than the model has ids
    with open(path.parent / "meta.pkl", "wb") as fh:
        pickle.dump(big.to_meta(), fh)
    with pytest.raises(CheckpointError, match="vocabulary"):
        load_model(path, device="cpu")
    with open(path.parent / "meta.pkl", "wb") as fh:
        pickle.dump({"stoi": {}}, fh)
    with pytest.raises(CheckpointError, match="vocab_size"):
        load_model(path, device="cpu")


def test_meta_found_in_nanogpt_data_folder(tmp_path):
    path = make_checkpoint(tmp_path / "out")
    data = tmp_path / "data" / "shakespeare_char"
    data.mkdir(parents=True)
    (path.parent / "meta.pkl").rename(data / "meta.pkl")
    loaded = load_model(path, device="cpu")
    assert loaded.meta_path == data / "meta.pkl"
    assert loaded.vocab.mask_id == VOCAB.size


def test_reserved_ids_are_never_sampled(tmp_path):
    path = make_checkpoint(tmp_path, extra_ids=6)  # model vocab 6 larger than meta's + mask
    loaded = load_model(path, device="cpu")
    assert loaded.vocab.mask_id == VOCAB.size and loaded.config.vocab_size == VOCAB.size + 7
    records = list(Sampler(loaded.model, loaded.vocab).run(GenerationSettings(length=48, steps=4, temperature=2.0)))
    assert records[-1].tokens.max() < VOCAB.size


class _Boom:
    def __reduce__(self):
        return (os.system, ("touch /tmp/dpgviz-pwned",))


def test_malicious_meta_pickle_is_refused_and_runs_nothing(tmp_path):
    marker = Path("/tmp/dpgviz-pwned")
    marker.unlink(missing_ok=True)
    payload = pickle.dumps({"vocab_size": 3, "itos": _Boom(), "stoi": {}})
    with pytest.raises(VocabError, match="refusing"):
        safe_load_meta(payload)
    path = make_checkpoint(tmp_path)
    (path.parent / "meta.pkl").write_bytes(payload)
    with pytest.raises(CheckpointError, match="refusing"):
        load_model(path, device="cpu")
    assert not marker.exists()


def test_malicious_checkpoint_is_refused_by_weights_only(tmp_path):
    marker = Path("/tmp/dpgviz-pwned")
    marker.unlink(missing_ok=True)
    path = tmp_path / "ckpt.pt"
    torch.save({"model_args": {}, "model": {}, "evil": _Boom()}, path)
    with pytest.raises(CheckpointError, match=r"weights_only|not a loadable"):
        load_model(path, device="cpu")
    assert not marker.exists()


# -- settings -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "change,message",
    [
        ({"temperature": 0}, "temperature"),
        ({"steps": 0}, "steps"),
        ({"start_ratio": 0.2, "end_ratio": 0.5}, "ratios"),
        ({"end_ratio": -0.1}, "ratios"),
        ({"start_ratio": 1.5}, "ratios"),
        ({"randomness": 1.2}, "randomness"),
        ({"length": 0}, "length"),
        ({"strategy": "greedy"}, "strategy"),
    ],
)
def test_bad_settings_are_refused(change, message):
    with pytest.raises(SettingsError, match=message):
        GenerationSettings(**change).validate()


def test_length_beyond_block_size_is_refused(sampler):
    with pytest.raises(SettingsError, match="block size"):
        list(sampler.run(GenerationSettings(length=65)))


# -- sampler invariants --------------------------------------------------------------------
@pytest.mark.parametrize("strategy", ["seed", "random", "llada"])
def test_mask_counts_follow_the_schedule(sampler, strategy):
    s = GenerationSettings(length=60, steps=7, strategy=strategy, start_ratio=0.9, end_ratio=0.1)
    records = list(sampler.run(s))
    kinds = [r.kind for r in records]
    assert kinds == ["initial"] + ["prediction", "remask"] * 6 + ["prediction", "final"]
    for r in records:
        assert r.n_masked == int((r.tokens == VOCAB.mask_id).sum()) == int((r.flags & FLAG_MASKED).astype(bool).sum())
        if r.kind == "prediction":
            assert r.n_masked == 0
        if r.kind == "remask":
            assert r.n_masked == target_masks(60, r.iteration, 7, 0.9, 0.1) == r.target_masks
    final = records[-1]
    assert final.n_masked == 0 and (final.tokens < VOCAB.size).all()
    passes = {"seed": 2 * 7 - 1, "random": 7, "llada": 7}[strategy]
    assert final.forward_passes == passes


def test_records_are_arrays_with_the_layout(sampler):
    s = GenerationSettings(length=40, steps=3, top_k=5)
    layout = sampler.layout(s)
    for r in sampler.run(s):
        for name, (shape, dtype) in layout.token_fields().items():
            arr = getattr(r, name)
            assert isinstance(arr, np.ndarray) and arr.shape == shape and arr.dtype == dtype, name
    pred = next(r for r in sampler.run(s) if r.kind == "prediction")
    top = pred.top_probs.astype(np.float32)
    # Five of a distribution's probabilities: each in (0, 1], together at most 1 (float16 rounding aside).
    assert (top > 0).all() and (top <= 1).all() and (top.sum(1) <= 1 + 5e-3).all()
    assert (np.diff(pred.top_probs.astype(np.float32), axis=1) <= 1e-3).all(), "top-k sorted by probability"
    assert np.isfinite(pred.entropy).all() and (pred.entropy >= 0).all()  # every position was masked at the start


def _reference_probs(tiny: Path, tokens: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(logits / T) over the real vocabulary, from the float64 re-implementation of the model."""
    ckpt = torch.load(tiny, weights_only=True)
    logits = reference_logits(ckpt["model"], ckpt["model_args"], torch.as_tensor(tokens.astype(np.int64)))
    return torch.softmax(logits[:, : VOCAB.size] / temperature, dim=-1).numpy()


def test_prediction_beliefs_match_the_reference_model(sampler, tiny):
    """top_ids / top_probs / confidence / entropy of each prediction, from the logits of the tokens it saw."""
    k, temperature = 5, 0.3  # a cool softmax: the tiny random model's near-uniform beliefs spread apart
    records = list(sampler.run(GenerationSettings(length=40, steps=4, top_k=k, temperature=temperature, seed=2)))
    predictions = [i for i, r in enumerate(records) if r.kind == "prediction"]
    assert len(predictions) == 4
    for i in predictions:
        before, pred = records[i - 1], records[i]
        masked = before.tokens == VOCAB.mask_id
        assert masked.any()
        ref = _reference_probs(tiny, before.tokens, temperature)[masked]  # (M, V)
        want_ids = np.argsort(-ref, axis=1, kind="stable")[:, :k]
        want_probs = np.take_along_axis(ref, want_ids, axis=1)
        got_ids, got_probs = pred.top_ids[masked].astype(np.int64), pred.top_probs[masked].astype(np.float64)
        # The recorded probabilities are the k largest, in order (float16: ~1e-3 relative).
        np.testing.assert_allclose(got_probs, want_probs, rtol=2e-3, atol=1e-4)
        # ...and belong to the ids recorded beside them (ids may swap only where probabilities tie).
        np.testing.assert_allclose(np.take_along_axis(ref, got_ids, axis=1), got_probs, rtol=2e-3, atol=1e-4)
        # Rows whose top-k are apart by more than float32-vs-float64 error must order ids exactly.
        clear = np.abs(np.diff(want_probs, axis=1)).min(axis=1) > 1e-5
        assert clear.sum() >= masked.sum() // 2
        assert (got_ids[clear] == want_ids[clear]).all()
        # Beliefs exist only where the prediction sampled: visible positions carry none.
        assert (pred.top_probs[~masked] == 0).all() and (pred.top_ids[~masked] == 0).all()
        held = pred.tokens[masked].astype(np.int64)
        np.testing.assert_allclose(pred.confidence[masked], ref[np.arange(len(held)), held], rtol=2e-3, atol=1e-4)
        entropy = -(ref * np.log(ref)).sum(1)
        np.testing.assert_allclose(pred.entropy[masked], entropy, rtol=2e-3, atol=1e-3)
        assert np.isnan(pred.entropy[~masked]).all()


@pytest.mark.parametrize("randomness", [0.0, 0.6])
def test_seed_remask_score_is_one_minus_p_from_a_second_pass(sampler, tiny, randomness):
    """seed strategy: score = r*U + (1-r)*(1-p), p of each current token in a pass over the predicted text."""
    temperature = 1.3
    records = list(sampler.run(GenerationSettings(length=40, steps=4, temperature=temperature, seed=5,
                                                  strategy="seed", randomness=randomness)))
    remasks = [i for i, r in enumerate(records) if r.kind == "remask"]
    assert len(remasks) == 3
    for i in remasks:
        pred, remask = records[i - 1], records[i]
        assert pred.kind == "prediction" and (pred.tokens < VOCAB.size).all()
        p = _reference_probs(tiny, pred.tokens, temperature)[np.arange(40), pred.tokens.astype(np.int64)]
        deterministic = (1 - randomness) * (1 - p)
        score = remask.score.astype(np.float64)
        if randomness == 0.0:
            np.testing.assert_allclose(score, deterministic, rtol=2e-3, atol=2e-4)
        else:  # the uniform part lies in [0, r) and is not the same everywhere
            noise = score - deterministic
            assert (noise > -2e-3).all() and (noise < randomness + 2e-3).all()
            assert noise.std() > 0.05
        # The positions remasked are the highest-scoring ones.
        chosen = remask.tokens == VOCAB.mask_id
        if chosen.any() and (~chosen).any():
            assert score[chosen].min() >= score[~chosen].max() - 2e-3


def test_llada_never_changes_committed_tokens(sampler):
    records = list(sampler.run(GenerationSettings(length=60, steps=8, strategy="llada")))
    committed = np.zeros(60, dtype=bool)
    values = np.zeros(60, dtype=np.int64)
    for r in records:
        visible = r.tokens != VOCAB.mask_id
        assert (r.tokens[committed] == values[committed]).all()
        if r.kind in ("remask", "final"):
            values[visible & ~committed] = r.tokens[visible & ~committed]
            committed |= visible


def test_protected_positions_never_change(sampler):
    start = np.full(50, VOCAB.mask_id)
    start[:10] = VOCAB.encode("hear me sp")
    protected = np.zeros(50, dtype=bool)
    protected[:10] = True
    for strategy in ("seed", "random", "llada"):
        records = list(sampler.run(GenerationSettings(length=50, steps=6, strategy=strategy, randomness=1.0),
                                   StartState(tokens=start, iteration=0, protected=protected)))
        for r in records:
            assert (r.tokens[:10] == start[:10]).all(), strategy
            assert (r.flags[:10] & FLAG_PROTECTED).all()


def test_restart_from_tokens_and_iteration(sampler):
    s = GenerationSettings(length=50, steps=10)
    first = list(sampler.run(s))
    mid = first[10]  # initial, then (prediction, remask) per iteration: remask of iteration 4
    assert mid.kind == "remask" and mid.iteration == 4
    again = list(sampler.run(s, StartState(tokens=mid.tokens, iteration=5)))
    assert again[0].kind == "initial" and again[0].iteration == 5
    assert (again[0].tokens == mid.tokens).all()
    assert [r.iteration for r in again if r.kind == "prediction"] == list(range(5, 10))
    assert again[-1].n_masked == 0


def test_same_seed_same_records(sampler):
    s = GenerationSettings(length=50, steps=5, seed=7)
    a, b = list(sampler.run(s)), list(sampler.run(s))
    for x, y in zip(a, b, strict=True):
        for name, arr in x.arrays().items():
            np.testing.assert_array_equal(arr, y.arrays()[name], err_msg=name)
    c = list(sampler.run(GenerationSettings(length=50, steps=5, seed=8)))
    assert not (a[-1].tokens == c[-1].tokens).all()


def test_temperature_sharpens_distribution(sampler):
    cold = list(sampler.run(GenerationSettings(length=50, steps=2, temperature=0.1)))[1]
    hot = list(sampler.run(GenerationSettings(length=50, steps=2, temperature=2.0)))[1]
    assert np.nanmean(cold.entropy.astype(np.float32)) < np.nanmean(hot.entropy.astype(np.float32))


def test_every_dtype_the_settings_offer_is_one_the_loader_knows():
    from dpgviz.core.settings import DTYPES
    from dpgviz.engine import checkpoint

    assert set(DTYPES) - {"auto"} == set(checkpoint.DTYPES)
    with pytest.raises(checkpoint.CheckpointError, match="dtype"):
        checkpoint.resolve_dtype("float8", torch.device("cpu"))
