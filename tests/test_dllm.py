"""`llada:FOLDER` and `dream:FOLDER` (engine.dllm) on stand-in models built here.

Each folder is what a LLaDA or Dream download looks like to dpgviz: config.json with an
`auto_map` naming the folder's own modelling code, weights, and a tokenizer with the family's
special tokens and a chat template. The code is a stand-in written by the test (an embedding,
a mean over positions so every position sees the others, a head), never the published one;
it notes each import in a marker file, so the test can tell whether it ran.
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

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from dpgviz.core.discovery import find_checkpoints, model_file  # noqa: E402
from dpgviz.core.prompt import padding_after_eos  # noqa: E402
from dpgviz.core.settings import GenerationSettings  # noqa: E402
from dpgviz.core.vocab import MASK_GLYPH  # noqa: E402
from dpgviz.engine.checkpoint import CheckpointError, load_model  # noqa: E402
from dpgviz.engine.sampler import Sampler  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WORDS = ["the", "cat", "sat", "on", "mat", "dog", "ran", "and"]
N_ROWS = 320  # the model's rows: more than the tokenizer's ids, as LLaDA's 126,464 are
BOS, EOS, MASK, HEADER, HEADER_END, EOT = 280, 281, 290, 291, 292, 293
RESERVED = [*range(282, 290), 294, 295]
SPECIALS = {BOS: "<|startoftext|>", EOS: "<|endoftext|>", MASK: "<|mdm_mask|>", HEADER: "<|start_header_id|>",
            HEADER_END: "<|end_header_id|>", EOT: "<|eot_id|>"} | {i: f"<|reserved_token_{i}|>" for i in RESERVED}
CHAT = (
    "{% for message in messages %}{% if loop.index0 == 0 %}{{ bos_token }}{% endif %}"
    "<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n{{ message['content'] | trim }}<|eot_id|>"
    "{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
CONFIGURATION = '''
import os
from transformers import PretrainedConfig

with open(os.environ.get("DPGVIZ_STANDIN_MARKER", os.devnull), "a") as marker:
    marker.write("imported\\n")


class StandInConfig(PretrainedConfig):
    model_type = "{model_type}"

    def __init__(self, vocab_size=320, d_model=16, max_sequence_length=96, max_position_embeddings=96, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size, self.d_model = vocab_size, d_model
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
        self.mix = torch.nn.Linear(config.d_model, config.d_model)
        self.head = torch.nn.Linear(config.d_model, config.vocab_size)
        self.last_attention_mask = None
        self.post_init()

    def forward(self, input_ids, attention_mask=None, **kwargs):
        self.last_attention_mask = attention_mask
        h = self.emb(input_ids)  # (B, T, C)
        h = h + self.mix(h.mean(dim=1, keepdim=True))  # every position sees the whole window
        return MaskedLMOutput(logits=self.head(h))
'''


def _tokenizer(chat: bool) -> transformers.PreTrainedTokenizerFast:
    alphabet = sorted(tokenizers.pre_tokenizers.ByteLevel.alphabet())  # 256 byte-level characters
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    for word in WORDS:
        vocab["\u0120" + word] = len(vocab)  # " the", " cat", ...: byte-level word starts
    while len(vocab) < BOS:
        vocab[f"\u0120w{len(vocab)}"] = len(vocab)
    for i in range(BOS, 296):
        vocab[SPECIALS[i]] = i
    tk = tokenizers.Tokenizer(tokenizers.models.BPE(vocab=vocab, merges=[]))
    tk.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = tokenizers.decoders.ByteLevel()
    tk.add_special_tokens([SPECIALS[i] for i in sorted(SPECIALS)])
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token=SPECIALS[BOS], eos_token=SPECIALS[EOS], pad_token=SPECIALS[EOS],
        chat_template=CHAT if chat else None,
    )


def _standin_folder(folder: Path, kind: str, *, chat: bool = True, bias: dict[int, float] | None = None) -> Path:
    """A LLaDA-like ("llada") or Dream-like ("dream") folder with the stand-in code and random weights."""
    folder.mkdir(parents=True)
    model_type = "llada" if kind == "llada" else "Dream"
    (folder / "configuration_standin.py").write_text(CONFIGURATION.replace("{model_type}", model_type))
    (folder / "modeling_standin.py").write_text(MODELING)
    config = {
        "model_type": model_type, "architectures": ["StandInLM"], "vocab_size": N_ROWS, "d_model": 16,
        "auto_map": {"AutoConfig": "configuration_standin.StandInConfig", "AutoModel": "modeling_standin.StandInLM"},
        "max_sequence_length": 96, "max_position_embeddings": 80, "eos_token_id": EOS,
    }
    tok = _tokenizer(chat)
    if kind == "llada":
        config["mask_token_id"] = MASK  # LLaDA's config names its mask; Dream's tokenizer does
    else:
        tok.add_special_tokens({"mask_token": SPECIALS[MASK]})
    (folder / "config.json").write_text(json.dumps(config))
    cfg = transformers.AutoConfig.from_pretrained(folder, trust_remote_code=True, local_files_only=True)
    torch.manual_seed(0)
    model = transformers.AutoModel.from_config(cfg, trust_remote_code=True)
    with torch.no_grad():
        for i, b in (bias or {}).items():
            model.head.bias[i] += b
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    (folder / "config.json").write_text(json.dumps(config))  # as written above: save_pretrained rewrote it
    return folder


# Specials the model strongly prefers (only never_sample keeps them out) and an end of text
# it likes well enough to write it, so the padding after it shows.
FAVOURED = {i: 30.0 for i in (BOS, HEADER, HEADER_END, EOT, *RESERVED)} | {EOS: 6.0}


@pytest.fixture(scope="module")
def marker(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("marker") / "imports.txt"
    os.environ["DPGVIZ_STANDIN_MARKER"] = str(path)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, marker: Path) -> Path:
    root = tmp_path_factory.mktemp("dllm")
    _standin_folder(root / "llada-standin", "llada", bias=FAVOURED)
    _standin_folder(root / "dream-standin", "dream", chat=False, bias=FAVOURED)
    return root


@pytest.fixture(scope="module")
def llada(models: Path):
    return load_model(f"llada:{models / 'llada-standin'}", device="cpu")


def test_a_llada_folder_loads_through_its_own_code_with_the_prefix(llada, models: Path) -> None:
    vocab, adapter = llada.vocab, llada.adapter
    assert llada.name == "llada:llada-standin" and str(llada.path) == f"llada:{models / 'llada-standin'}"
    assert vocab.size == N_ROWS - 1 and adapter.to_model_ids[vocab.mask_id] == MASK  # every logit column but the mask
    assert llada.block_size == 96  # config.max_sequence_length, not a constant
    never = {int(adapter.to_model_ids[i]) for i in vocab.never_sample}
    assert {BOS, HEADER, HEADER_END, EOT, *RESERVED} <= never and EOS not in never
    assert int(adapter.to_model_ids[vocab.eos_id]) == EOS
    info = llada.info()
    assert info.eos_id == vocab.eos_id and info.chat_wrap is not None and info.dtype == "float32"


def test_dtype_is_the_one_asked_for(models: Path) -> None:
    loaded = load_model(f"llada:{models / 'llada-standin'}", device="cpu", dtype="bfloat16")
    assert next(loaded.adapter.model.parameters()).dtype == torch.bfloat16 and loaded.info().dtype == "bfloat16"
    assert loaded.adapter.logits(torch.zeros(1, 4, dtype=torch.long)).dtype == torch.bfloat16


def test_specials_are_never_sampled_and_the_end_of_text_pads(llada) -> None:
    sampler = Sampler(llada.adapter, llada.vocab, "cpu")
    records = list(sampler.run(GenerationSettings(prompt=" the cat", length=24, steps=4, strategy="llada", seed=1)))
    never = set(llada.vocab.never_sample)
    assert not any(int(t) in never for r in records for t in r.tokens if t != llada.vocab.mask_id)
    final = records[-1]
    assert (final.tokens == llada.vocab.eos_id).any()  # favoured, and allowed: the model ends its text
    padding = padding_after_eos(final.tokens, final.flags, llada.vocab.eos_id)
    first = int(np.argmax(final.tokens == llada.vocab.eos_id))
    assert padding[first:].all() and not padding[:first].any()


def test_chat_wraps_the_prompt_in_the_tokenizers_template(llada, models: Path) -> None:
    # The message's own text is split by dpgviz's longest match (core.vocab), the template's by the
    # tokenizer; "thecat" splits the same both ways with this merge-free stand-in tokenizer.
    tok = transformers.AutoTokenizer.from_pretrained(models / "llada-standin", local_files_only=True, trust_remote_code=True)
    text = tok.apply_chat_template([{"role": "user", "content": "thecat"}], add_generation_prompt=True, tokenize=False)
    want = tok(text, add_special_tokens=False)["input_ids"]  # what LLaDA's chat.py feeds its model
    sampler = Sampler(llada.adapter, llada.vocab, "cpu")
    first = next(sampler.run(GenerationSettings(prompt="thecat", chat=True, length=8, steps=2)))
    got = llada.adapter.to_model_ids[torch.as_tensor(first.tokens[: len(want)].astype(np.int64))].tolist()
    assert got == want and (first.tokens[len(want) :] == llada.vocab.mask_id).all()
    assert llada.vocab.decode(first.tokens).startswith("<|startoftext|><|start_header_id|>user")


def test_dream_shifts_its_logits_by_one_and_asks_for_full_attention(models: Path) -> None:
    dream = load_model(f"dream:{models / 'dream-standin'}", device="cpu")
    adapter = dream.adapter
    assert adapter.to_model_ids[dream.vocab.mask_id] == MASK and dream.block_size == 80  # max_position_embeddings
    ids = torch.randint(0, dream.vocab.n_ids, (2, 10), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        got = adapter.logits(ids)
        own = adapter.model(adapter.to_model_ids[ids]).logits[..., adapter.to_model_ids[: dream.vocab.size]]
    torch.testing.assert_close(got[:, 1:], own[:, :-1], rtol=0, atol=0)  # token i from position i - 1
    torch.testing.assert_close(got[:, :1], own[:, :1], rtol=0, atol=0)
    assert adapter.model.last_attention_mask is None  # the reference call above passed none...
    adapter.logits(ids)
    assert adapter.model.last_attention_mask == "full"  # ...the adapter passes Dream's "no padding"
    assert dream.info().chat_wrap is None  # this folder's tokenizer has no template


def test_without_the_prefix_the_folders_code_never_runs(models: Path, marker: Path) -> None:
    before = marker.read_text() if marker.exists() else ""
    with pytest.raises(CheckpointError, match=r"need an adapter|not a model transformers knows"):
        load_model(models / "llada-standin", device="cpu")
    assert (marker.read_text() if marker.exists() else "") == before


def test_a_scan_lists_the_folder_under_its_prefix_without_running_it(models: Path, marker: Path) -> None:
    before = marker.read_text() if marker.exists() else ""
    entries = {e.name: e for e in find_checkpoints(models)}
    entry = entries[f"llada:{models.name}/llada-standin"]
    assert str(entry.path) == f"llada:{models / 'llada-standin'}"
    assert model_file(entry.path) == models / "llada-standin" / "model.safetensors"
    assert f"dream:{models.name}/dream-standin" in entries
    assert (marker.read_text() if marker.exists() else "") == before


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, str(ROOT / "main.py"), *args], capture_output=True, text=True, timeout=240, env=env, cwd=ROOT
    )


def test_generate_runs_a_llada_folder_with_a_chat_prompt(models: Path) -> None:
    proc = _cli("generate", "--model", f"llada:{models / 'llada-standin'}", "--prompt", "the cat", "--chat",
                "--length", "16", "--steps", "4", "--json", "--sampler", "dpgviz")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    head = "<|startoftext|><|start_header_id|>user<|end_header_id|>\n\nthe cat<|eot_id|>"
    assert all(r["text"].startswith(head) for r in doc["records"]) and MASK_GLYPH not in doc["final_text"]
    generated = doc["final_text"].split("assistant<|end_header_id|>\n\n", 1)[1]
    assert "<|eot_id|>" not in generated and "<|reserved" not in generated and "<|start" not in generated
    assert doc["prompt"]["chat"] is True


def test_chat_on_a_folder_without_a_template_is_refused(models: Path) -> None:
    proc = _cli("generate", "--model", f"dream:{models / 'dream-standin'}", "--prompt", "the", "--chat",
                "--length", "8", "--steps", "2")
    assert proc.returncode == 2 and "has no chat template" in proc.stderr
