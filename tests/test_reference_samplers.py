"""Reference-exact LLaDA and Dream sampling (engine.dllm_sampling) against plain transcriptions.

The stand-in has LLaDA's interface (an AutoModel whose forward(input_ids, attention_mask=None)
returns `.logits`) and LLaDA's real id layout: a tokenizer of 126,349 ids with <|endoftext|>
at 126081, <|mdm_mask|> at 126336 and <|eot_id|> at 126348, and logits of 126,464 columns,
wider than the tokenizer. A position embedding makes positions differ, and a bias that grows
along the sequence makes the tail prefer the end of text, as instruct models do.

The transcriptions below (`llada_generate`, `dream_sample`) are written plainly from the
published algorithms (LLaDA generate.py; Dream's generation_utils `_sample`), with the global
RNG as the references use it; dpgviz's sampler uses its own seeded generator, so equal ids at
temperature > 0 also show the random draws come in the reference's order.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from dpgviz.core.reference import to_model_ids  # noqa: E402
from dpgviz.core.settings import GenerationSettings  # noqa: E402
from dpgviz.engine.checkpoint import load_model  # noqa: E402
from dpgviz.engine.sampler import Sampler  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
N_TOK, N_ROWS = 126_349, 126_464  # LLaDA's tokenizer ids and logit columns
BOS, EOS, MASK, EOT = 126_080, 126_081, 126_336, 126_348
SPECIALS = {BOS: "<|startoftext|>", EOS: "<|endoftext|>", MASK: "<|mdm_mask|>", EOT: "<|eot_id|>"}
CONFIGURATION = '''
from transformers import PretrainedConfig


class StandInConfig(PretrainedConfig):
    model_type = "{model_type}"

    def __init__(self, vocab_size=126464, d_model=8, max_sequence_length=160, max_position_embeddings=160,
                 eos_bias=0.0, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size, self.d_model, self.eos_bias = vocab_size, d_model, eos_bias
        self.max_sequence_length, self.max_position_embeddings = max_sequence_length, max_position_embeddings
'''
MODELING = '''
import torch
from transformers import PreTrainedModel
from transformers.modeling_outputs import MaskedLMOutput

from .configuration_standin import StandInConfig


class StandInLM(PreTrainedModel):
    config_class = StandInConfig

    def __init__(self, config):
        super().__init__(config)
        self.emb = torch.nn.Embedding(config.vocab_size, config.d_model)
        self.pos = torch.nn.Embedding(config.max_sequence_length, config.d_model)
        self.mix = torch.nn.Linear(config.d_model, config.d_model)
        self.head = torch.nn.Linear(config.d_model, config.vocab_size)
        self.post_init()

    def forward(self, input_ids, attention_mask=None, position_ids=None, **kwargs):
        T = input_ids.shape[1]
        h = self.emb(input_ids) + self.pos(torch.arange(T, device=input_ids.device))  # (B, T, C)
        h = h + self.mix(h.mean(dim=1, keepdim=True))  # every position sees the whole sequence
        logits = self.head(h)
        ramp = torch.linspace(0, 1, T, device=input_ids.device) ** 2 * self.config.eos_bias
        logits[..., {eos}] = logits[..., {eos}] + ramp  # the tail prefers the end of text
        return MaskedLMOutput(logits=logits)
'''


def _tokenizer() -> transformers.PreTrainedTokenizerFast:
    alphabet = sorted(tokenizers.pre_tokenizers.ByteLevel.alphabet())  # 256 byte-level characters
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    for word in ("the", "cat", "sat", "on", "mat"):
        vocab["\u0120" + word] = len(vocab)
    vocab.update({f"w{i}": i for i in range(len(vocab), N_TOK) if i not in SPECIALS})
    vocab.update({name: i for i, name in SPECIALS.items()})
    tk = tokenizers.Tokenizer(tokenizers.models.BPE(vocab=vocab, merges=[]))
    tk.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = tokenizers.decoders.ByteLevel()
    tk.add_special_tokens(list(SPECIALS.values()))
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token=SPECIALS[BOS], eos_token=SPECIALS[EOS], pad_token=SPECIALS[EOS],
    )


def make_folder(folder: Path, kind: str, eos_bias: float = 0.0) -> Path:
    """A LLaDA-like ("llada") or Dream-like ("dream") folder: the stand-in code, random weights."""
    folder.mkdir(parents=True)
    model_type = "llada" if kind == "llada" else "Dream"
    (folder / "configuration_standin.py").write_text(CONFIGURATION.replace("{model_type}", model_type))
    (folder / "modeling_standin.py").write_text(MODELING.replace("{eos}", str(EOS)))
    config = {
        "model_type": model_type, "architectures": ["StandInLM"], "vocab_size": N_ROWS, "d_model": 8,
        "auto_map": {"AutoConfig": "configuration_standin.StandInConfig", "AutoModel": "modeling_standin.StandInLM"},
        "max_sequence_length": 160, "max_position_embeddings": 160, "eos_token_id": EOS, "eos_bias": eos_bias,
    }
    tok = _tokenizer()
    if kind == "llada":
        config["mask_token_id"] = MASK
    else:
        tok.add_special_tokens({"mask_token": SPECIALS[MASK]})
    (folder / "config.json").write_text(json.dumps(config))
    cfg = transformers.AutoConfig.from_pretrained(folder, trust_remote_code=True, local_files_only=True)
    torch.manual_seed(0)
    model = transformers.AutoModel.from_config(cfg, trust_remote_code=True)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("reference")
    make_folder(root / "llada", "llada", eos_bias=0.0)
    make_folder(root / "dream", "dream", eos_bias=0.0)
    return root


@pytest.fixture(scope="module")
def llada(folders: Path):
    return load_model(f"llada:{folders / 'llada'}", device="cpu")


@pytest.fixture(scope="module")
def dream(folders: Path):
    return load_model(f"dream:{folders / 'dream'}", device="cpu")


# -- plain transcriptions of the references ----------------------------------------------------
def llada_generate(model, prompt, steps, gen_length, block_length, temperature, remasking="low_confidence",
                   cfg_scale=0.0, logits_eos_inf=False, confidence_eos_eot_inf=False, mask_id=MASK):
    """LLaDA's generate() as published; returns x after every step."""
    history = []
    x = torch.full((1, prompt.shape[1] + gen_length), mask_id, dtype=torch.long)
    x[:, : prompt.shape[1]] = prompt.clone()
    prompt_index = x != mask_id
    num_blocks = gen_length // block_length
    steps = steps // num_blocks
    for num_block in range(num_blocks):
        block_mask_index = x[:, prompt.shape[1] + num_block * block_length : prompt.shape[1] + (num_block + 1) * block_length] == mask_id
        mask_num = block_mask_index.sum(dim=1, keepdim=True)
        num_transfer_tokens = torch.zeros(1, steps, dtype=torch.int64) + mask_num // steps
        num_transfer_tokens[0, : (mask_num % steps)[0]] += 1
        for i in range(steps):
            mask_index = x == mask_id
            if cfg_scale > 0.0:
                un_x = x.clone()
                un_x[prompt_index] = mask_id
                logits = model(torch.cat([x, un_x], dim=0)).logits
                logits, un_logits = torch.chunk(logits, 2, dim=0)
                logits = un_logits + (cfg_scale + 1) * (logits - un_logits)
            else:
                logits = model(x, attention_mask=None).logits
            if logits_eos_inf:
                logits[:, :, 126081] = -torch.inf
            if temperature == 0:
                logits_with_noise = logits
            else:
                noise = torch.rand_like(logits.to(torch.float64), dtype=torch.float64)
                logits_with_noise = logits.to(torch.float64).exp() / (-torch.log(noise)) ** temperature
            x0 = torch.argmax(logits_with_noise, dim=-1)
            if confidence_eos_eot_inf:
                logits_with_noise[:, :, 126081] = logits[:, :, 126348] = -torch.inf
            if remasking == "low_confidence":
                p = F.softmax(logits, dim=-1)
                x0_p = torch.squeeze(torch.gather(p, dim=-1, index=torch.unsqueeze(x0, -1)), -1)
            else:
                x0_p = torch.rand((x0.shape[0], x0.shape[1]))
            x0_p[:, prompt.shape[1] + (num_block + 1) * block_length :] = -np.inf
            x0 = torch.where(mask_index, x0, x)
            confidence = torch.where(mask_index, x0_p, -np.inf)
            transfer_index = torch.zeros_like(x0, dtype=torch.bool)
            _, select_index = torch.topk(confidence[0], k=num_transfer_tokens[0, i])
            transfer_index[0, select_index] = True
            x[transfer_index] = x0[transfer_index]
            history.append(x.clone())
    return history


def _dream_tokens(logits, temperature, top_p, top_k, margin=False, neg_entropy=False):
    if temperature > 0:
        logits = logits / temperature
    if top_p is not None and top_p < 1:
        sorted_logits, sorted_indices = torch.sort(logits, descending=True)
        cum = torch.cumsum(F.softmax(sorted_logits, dim=-1), dim=-1)
        remove = cum > top_p
        remove[..., 1:] = remove[..., :-1].clone()
        remove[..., 0] = 0
        mask = torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, sorted_indices, remove)
        logits = logits.masked_fill(mask, torch.finfo(logits.dtype).min)
    if top_k is not None:
        remove = logits < torch.topk(logits, min(top_k, logits.size(-1)))[0][..., -1, None]
        logits = logits.masked_fill(remove, torch.finfo(logits.dtype).min)
    probs = torch.softmax(logits, dim=-1)
    if temperature > 0:
        x0 = torch.distributions.Categorical(probs=probs).sample()
        confidence = torch.gather(probs, -1, x0.unsqueeze(-1)).squeeze(-1)
    else:
        confidence, x0 = probs.max(dim=-1)
    if margin:
        sorted_probs, _ = torch.sort(probs, dim=-1, descending=True)
        confidence = sorted_probs[:, 0] - sorted_probs[:, 1]
    if neg_entropy:
        confidence = torch.sum(probs * torch.log(probs + 1e-10), dim=-1)
    return confidence, x0


def dream_sample(model, input_ids, max_length, steps, alg, temperature=0.0, top_p=None, top_k=None,
                 alg_temp=None, eps=1e-3, mask_token_id=MASK):
    """Dream's _sample as published (no padding: attention_mask "full"); returns x after every step."""
    history = []
    x = F.pad(input_ids, (0, max_length - input_ids.shape[1]), value=mask_token_id)
    timesteps = torch.linspace(1, eps, steps + 1)
    for i in range(steps):
        mask_index = x == mask_token_id
        logits = model(x, "full", None).logits
        logits = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)
        mask_logits = logits[mask_index]
        t, s = timesteps[i], timesteps[i + 1]
        if alg == "origin":
            p_transfer = 1 - s / t if i < steps - 1 else 1
            x0 = torch.zeros_like(x[mask_index], dtype=torch.long) + mask_token_id
            transfer_index_t_s = torch.rand(*x0.shape) < p_transfer
            _, x0[transfer_index_t_s] = _dream_tokens(mask_logits[transfer_index_t_s], temperature, top_p, top_k)
            x[mask_index] = x0.clone()
        else:
            confidence, x0 = _dream_tokens(mask_logits, temperature, top_p, top_k, margin=alg == "topk_margin",
                                           neg_entropy=alg == "entropy")
            num_mask_token = mask_index.sum() / mask_index.shape[0]
            number_transfer_tokens = int(num_mask_token * (1 - s / t)) if i < steps - 1 else int(num_mask_token)
            full_confidence = torch.full_like(x, -torch.inf, dtype=logits.dtype)
            full_confidence[mask_index] = confidence
            if number_transfer_tokens > 0:
                if alg_temp is None or alg_temp == 0:
                    _, transfer_index = torch.topk(full_confidence, number_transfer_tokens)
                else:
                    full_confidence = F.softmax(full_confidence / alg_temp, dim=-1)
                    transfer_index = torch.multinomial(full_confidence, num_samples=number_transfer_tokens)
                x_ = torch.zeros_like(x, dtype=torch.long) + mask_token_id
                x_[mask_index] = x0.clone()
                row_indices = torch.arange(x.size(0)).unsqueeze(1).expand_as(transfer_index)
                x[row_indices, transfer_index] = x_[row_indices, transfer_index]
        history.append(x.clone())
    return history


# -- dpgviz's runs, step by step -------------------------------------------------------------
def ours(loaded, settings: GenerationSettings) -> tuple[list[np.ndarray], list]:
    """x (model ids, the whole sequence) after every step of dpgviz's run, and its records."""
    records = list(Sampler(loaded.adapter, loaded.vocab, "cpu").run(settings))
    vocab = loaded.vocab
    mask_model = int(loaded.adapter.model_mask_id)
    prompt = np.asarray(settings.prompt_ids, dtype=np.int64)
    seq = np.concatenate([prompt, np.full(settings.length, vocab.mask_id)])
    steps = []
    for rec in records:
        if rec.kind in ("remask", "final"):
            n = min(len(rec.tokens), len(seq) - rec.offset)
            seq[rec.offset : rec.offset + n] = rec.tokens[:n]
            steps.append(to_model_ids(seq, vocab.mask_id, mask_model))
    return steps, records


def _prompt(tok, text: str, mask: int = MASK) -> tuple[torch.Tensor, tuple[int, ...]]:
    ids = tok(text).input_ids
    return torch.tensor([ids]), tuple(i - (i > mask) for i in ids)


@pytest.mark.parametrize(
    "temperature, remasking, blocks, extra",
    [
        (0.0, "low_confidence", 16, {}),
        (0.0, "low_confidence", 32, {"cfg_scale": 1.5}),
        (0.0, "random", 8, {}),
        (0.0, "low_confidence", 16, {"logits_eos_inf": True, "confidence_eos_eot_inf": True}),
        (1.0, "low_confidence", 16, {}),
        (0.7, "random", 16, {"confidence_eos_eot_inf": True}),
    ],
)
def test_llada_every_step_equals_the_reference(llada, folders, temperature, remasking, blocks, extra) -> None:
    tok = transformers.AutoTokenizer.from_pretrained(folders / "llada", local_files_only=True)
    prompt, internal = _prompt(tok, "the cat")
    model = llada.adapter.model
    torch.manual_seed(7)
    with torch.inference_mode():
        want = llada_generate(model, prompt, 8, 32, blocks, temperature, remasking, **extra)
    settings = GenerationSettings(
        sampler="llada", prompt="the cat", prompt_ids=internal, length=32, block_length=blocks if blocks != 32 else 0,
        steps=8, temperature=temperature, strategy="llada" if remasking == "low_confidence" else "random", seed=7, **extra,
    ).validate()
    got, records = ours(llada, settings)
    assert len(got) == len(want) == 8
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        assert a.tolist() == b[0].tolist(), f"step {i}"
    assert len(set(want[-1][0, prompt.shape[1]:].tolist())) > 1  # not a degenerate run


ALGS = ["origin", "maskgit_plus", "topk_margin", "entropy"]


@pytest.mark.parametrize(
    "alg, temperature, top_p, top_k, alg_temp",
    [*((a, 0.0, None, None, None) for a in ALGS), *((a, 0.8, 0.9, 50, None) for a in ALGS), ("entropy", 0.5, None, None, 0.3)],
)
def test_dream_every_step_equals_the_reference(dream, folders, alg, temperature, top_p, top_k, alg_temp) -> None:
    tok = transformers.AutoTokenizer.from_pretrained(folders / "dream", local_files_only=True)
    prompt, internal = _prompt(tok, "the cat")
    model = dream.adapter.model
    torch.manual_seed(3)
    with torch.inference_mode():
        want = dream_sample(model, prompt, prompt.shape[1] + 24, 6, alg, temperature, top_p, top_k, alg_temp)
    strategy = {"origin": "origin", "maskgit_plus": "llada", "topk_margin": "margin", "entropy": "entropy"}[alg]
    settings = GenerationSettings(
        sampler="dream", prompt="the cat", prompt_ids=internal, length=24, steps=6, temperature=temperature,
        top_p=top_p or 1.0, sample_top_k=top_k or 0, alg_temp=alg_temp or 0.0, strategy=strategy, seed=3,
    ).validate()
    got, _ = ours(dream, settings)
    assert len(got) == len(want) == 6
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        assert a.tolist() == b[0].tolist(), f"step {i}"
    assert (want[-1] != MASK).all()


def test_the_vocabulary_covers_every_logit_column_and_samples_them(llada) -> None:
    vocab = llada.vocab
    assert vocab.n_ids == N_ROWS and vocab.size == N_ROWS - 1  # every column but the mask, then the mask
    internal_126400 = 126_400 - 1
    assert vocab.itos[internal_126400] == "<126400>"  # past the tokenizer: named by its id
    assert to_model_ids(np.array([vocab.mask_id, internal_126400, EOS]), vocab.mask_id, MASK).tolist() == [MASK, 126_400, EOS]
    assert llada.info().model_mask_id == MASK


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, str(ROOT / "main.py"), *args], capture_output=True, text=True, timeout=300, env=env, cwd=ROOT
    )


def test_generate_runs_llada_as_generate_does(folders: Path) -> None:
    """The issue's 'done when': 16 iterations (8 per block), 4 tokens committed at each, the
    prompt's ids the tokenizer's."""
    proc = _cli("generate", "--model", f"llada:{folders / 'llada'}", "--prompt", "Hello", "--length", "64",
                "--block-length", "32", "--steps", "16", "--temperature", "0", "--json", "--ids", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    records = json.loads(proc.stdout)["records"]
    tok = transformers.AutoTokenizer.from_pretrained(folders / "llada", local_files_only=True)
    want = tok("Hello").input_ids
    assert want == [39, 68, 75, 75, 78]
    assert all(r["ids"][: len(want)] == want for r in records)
    predictions = [r for r in records if r["kind"] == "prediction"]
    assert len(predictions) == 16 and [r["block"] for r in predictions] == [0] * 8 + [1] * 8
    after = [r for r in records if r["kind"] in ("remask", "final")]
    masks = [sum(i == MASK for i in r["ids"]) for r in after]
    assert masks == list(range(60, -1, -4)), masks  # 4 committed at every step
    assert records[0]["ids"][len(want):] == [MASK] * 64


def test_a_byte_level_prompt_with_any_character_runs(folders: Path) -> None:
    proc = _cli("generate", "--model", f"llada:{folders / 'llada'}", "--prompt", "café 5€", "--length", "8",
                "--steps", "8", "--json", "--ids", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    tok = transformers.AutoTokenizer.from_pretrained(folders / "llada", local_files_only=True)
    want = tok("café 5€").input_ids
    assert doc["records"][-1]["ids"][: len(want)] == want and len(want) == len("café 5€".encode())
    assert tok.decode(doc["records"][-1]["ids"][: len(want)]) == "café 5€"


def test_a_character_the_tokenizer_cannot_encode_is_refused_before_the_model_loads(folders: Path, tmp_path: Path) -> None:
    """A non-byte-level tokenizer with an unknown token: each such character named with its code
    point, and the weights (broken here) never read."""
    import shutil

    folder = tmp_path / "llada-wordlevel"
    shutil.copytree(folders / "llada", folder)
    (folder / "model.safetensors").write_bytes(b"not weights")
    vocab = {"<unk>": 0, **{ch: i + 1 for i, ch in enumerate("abcdefghijklmnopqrstuvwxyz ")}}
    vocab.update({f"w{i}": i for i in range(len(vocab), N_TOK) if i not in SPECIALS})
    vocab.update({name: i for i, name in SPECIALS.items()})
    tk = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = tokenizers.pre_tokenizers.Split("", "isolated")
    tk.add_special_tokens(list(SPECIALS.values()))
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (folder / name).unlink(missing_ok=True)
    transformers.PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", eos_token=SPECIALS[EOS]).save_pretrained(folder)
    proc = _cli("generate", "--model", f"llada:{folder}", "--prompt", "café 5€ ok", "--length", "8", "--device", "cpu")
    assert proc.returncode == 2, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert "U+00E9" in line and "U+0035" in line and "U+20AC" in line and "3 character" in line, line
    assert "weights" not in line and "cannot load" not in line
