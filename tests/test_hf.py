"""Hugging Face masked LMs as diffusion models: tiny random BERT / RoBERTa folders built offline."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from dpgviz.core.discovery import find_checkpoints  # noqa: E402
from dpgviz.core.model_info import ModelInfo  # noqa: E402
from dpgviz.core.settings import GenerationSettings  # noqa: E402
from dpgviz.engine.checkpoint import CheckpointError, load_model  # noqa: E402
from dpgviz.engine.sampler import Sampler  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = ["the", "cat", "sat", "on", "mat", "dog", "ran", "a", "and", "##s", "##ing", "##ed", ".", ",", "!"]
# The mask in the middle of the vocabulary, as BERT's [MASK] = 103: the id mapping has to work.
BERT_VOCAB = [*SPECIALS[:3], *WORDS[:6], SPECIALS[3], *WORDS[6:], SPECIALS[4], "h", "##h", "e", "##e", "t", "##t"]
SPECIAL_BIAS = 30.0  # pushed onto the specials' logits, so only never_sample keeps them out of samples


def _save_bert(folder: Path, *, head: bool = True) -> Path:
    folder.mkdir(parents=True)
    (folder / "vocab.txt").write_text("\n".join(BERT_VOCAB) + "\n", encoding="utf-8")
    tok = transformers.BertTokenizerFast.from_pretrained(folder, local_files_only=True)
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=len(BERT_VOCAB), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=64,
    )
    if not head:
        transformers.BertModel(config).save_pretrained(folder)
    else:
        model = transformers.BertForMaskedLM(config)
        with torch.no_grad():
            for name in ("[PAD]", "[UNK]", "[CLS]", "[SEP]"):
                model.cls.predictions.bias[BERT_VOCAB.index(name)] += SPECIAL_BIAS
        model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _save_bert(tmp_path_factory.mktemp("hf") / "tiny-bert")


@pytest.fixture(scope="module")
def bert(bert_dir: Path):
    return load_model(bert_dir, device="cpu")


@pytest.fixture(scope="module")
def roberta_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("hf") / "tiny-roberta"
    folder.mkdir()
    bpe = tokenizers.ByteLevelBPETokenizer()
    text = ["the cat sat on the mat.", "the dog ran, and the cats ran!", "a café"] * 20
    bpe.train_from_iterator(text, vocab_size=300, min_frequency=1, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe.save_model(str(folder))  # vocab.json + merges.txt
    tok = transformers.RobertaTokenizerFast.from_pretrained(folder, local_files_only=True)
    torch.manual_seed(0)
    config = transformers.RobertaConfig(
        vocab_size=len(tok), hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=66, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    transformers.RobertaForMaskedLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, str(ROOT / "main.py"), *args], capture_output=True, text=True, timeout=240, env=env, cwd=ROOT
    )


# -- loading and the id mapping ---------------------------------------------------------------
def test_bert_folder_loads_with_mask_after_the_real_tokens(bert) -> None:
    assert bert.vocab.size == len(BERT_VOCAB) - 1  # every token but [MASK]
    assert bert.vocab.mask_id == bert.vocab.size
    assert bert.adapter.to_model_ids[bert.vocab.mask_id] == BERT_VOCAB.index("[MASK]")
    assert bert.block_size == 64 - 2  # [CLS] and [SEP] take two of the 64 positions
    info = bert.info()
    assert (info.tokenizer.startswith("BertTokenizer"), info.dtype, info.n_ids) == (True, "float32", len(BERT_VOCAB))


def test_adapter_logits_equal_the_models_own(bert) -> None:
    mask_model = BERT_VOCAB.index("[MASK]")
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, bert.vocab.n_ids, (3, 12), generator=gen)  # (B, T) internal ids, masks included
    model_ids = torch.where(ids >= mask_model, ids + 1, ids)  # internal ids skip the model's [MASK]...
    model_ids[ids == bert.vocab.mask_id] = mask_model  # ...and the internal mask is the model's
    cls, sep = BERT_VOCAB.index("[CLS]"), BERT_VOCAB.index("[SEP]")
    wrapped = torch.cat([torch.full((3, 1), cls), model_ids, torch.full((3, 1), sep)], dim=1)
    kept = [i for i in range(len(BERT_VOCAB)) if i != mask_model]
    with torch.inference_mode():
        expected = bert.model(input_ids=wrapped).logits[:, 1:-1][..., kept]  # (B, T, V)
        got = bert.adapter.logits(ids)
    assert got.shape == (3, 12, bert.vocab.size)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_special_ids_are_never_sampled(bert) -> None:
    specials = {bert.vocab.itos.index(s) for s in ("[PAD]", "[UNK]", "[CLS]", "[SEP]")}
    assert set(bert.vocab.never_sample) == specials
    with torch.inference_mode():  # the biased model prefers them everywhere...
        top = bert.adapter.logits(torch.full((1, 8), bert.vocab.mask_id)).argmax(-1)
    assert set(top.flatten().tolist()) <= specials
    sampler = Sampler(bert.adapter, bert.vocab, bert.device)  # ...and the sampler never proposes them
    for record in sampler.run(GenerationSettings(length=16, steps=4, seed=3)):
        assert not np.isin(record.tokens, list(specials)).any(), record.kind


def test_wordpiece_display_strings_carry_their_spacing(bert) -> None:
    shown = {tok: bert.vocab.itos[i] for i, tok in enumerate(t for t in BERT_VOCAB if t != "[MASK]")}
    assert shown["cat"] == " cat"  # a word start brings its space
    assert shown["##ing"] == "ing"  # a continuation joins the word
    assert shown["[CLS]"] == "[CLS]"
    ids = [bert.vocab.itos.index(s) for s in (" the", " cat", "s", " sat")]
    assert bert.vocab.decode(np.array(ids)) == " the cats sat"
    assert bert.vocab.encode(" the cats sat").tolist() == ids
    assert bert.vocab.display_widths()[ids].tolist() == [4, 4, 1, 4]


def test_bfloat16_weights_give_bfloat16_logits(bert_dir: Path) -> None:
    loaded = load_model(bert_dir, device="cpu", dtype="bfloat16")
    assert loaded.info().dtype == "bfloat16"
    with torch.inference_mode():
        assert loaded.adapter.logits(torch.zeros((1, 4), dtype=torch.long)).dtype == torch.bfloat16


def test_model_info_carries_never_sample_to_the_gui(bert) -> None:
    info = ModelInfo.from_dict(bert.info().to_dict())
    assert info.vocab() == bert.vocab
    assert info.vocab().never_sample == bert.vocab.never_sample


def test_models_dir_lists_hf_folders(bert_dir: Path) -> None:
    entries = find_checkpoints(bert_dir.parent)
    assert any(e.path == bert_dir and e.meta is None for e in entries)


# -- byte-level BPE ---------------------------------------------------------------------------
def test_roberta_byte_level_display_and_positions(roberta_dir: Path) -> None:
    loaded = load_model(roberta_dir, device="cpu")
    tok = transformers.AutoTokenizer.from_pretrained(roberta_dir, local_files_only=True)
    assert loaded.block_size == 66 - 2 - 2  # positions start at pad_token_id + 1; <s> and </s> take two
    text = " the cat sat on the mat."
    ids = loaded.vocab.encode(text)
    assert loaded.vocab.decode(ids) == text
    assert loaded.vocab.itos[int(ids[1])] == " cat"  # "Ġcat" shows its space
    model_ids = loaded.adapter.to_model_ids[torch.as_tensor(ids)].tolist()
    assert tok.decode(model_ids) == text  # the mapping lands on the model's own ids
    with torch.inference_mode():
        assert loaded.adapter.logits(torch.as_tensor(ids)[None]).shape[-1] >= loaded.vocab.size
    for record in Sampler(loaded.adapter, loaded.vocab).run(GenerationSettings(length=12, steps=3)):
        assert not np.isin(record.tokens, list(loaded.vocab.never_sample)).any()


# -- refusals, each in one line ---------------------------------------------------------------
def test_folder_without_weights_is_refused(tmp_path: Path, bert_dir: Path) -> None:
    folder = tmp_path / "no-weights"
    shutil.copytree(bert_dir, folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no weights"):
        load_model(folder, device="cpu")


def test_folder_without_tokenizer_is_refused(tmp_path: Path, bert_dir: Path) -> None:
    folder = tmp_path / "no-tokenizer"
    shutil.copytree(bert_dir, folder)
    for name in ("vocab.txt", "tokenizer.json"):
        (folder / name).unlink(missing_ok=True)
    with pytest.raises(CheckpointError, match="no tokenizer files"):
        load_model(folder, device="cpu")


def test_a_causal_lm_is_not_a_masked_lm(tmp_path: Path, bert_dir: Path) -> None:
    folder = tmp_path / "gpt2"
    config = transformers.GPT2Config(vocab_size=len(BERT_VOCAB), n_embd=16, n_layer=1, n_head=2, n_positions=32)
    transformers.GPT2LMHeadModel(config).save_pretrained(folder)
    shutil.copy(bert_dir / "vocab.txt", folder / "vocab.txt")
    with pytest.raises(CheckpointError, match="not an encoder masked language model"):
        load_model(folder, device="cpu")


def test_a_base_model_without_its_head_is_refused(tmp_path: Path) -> None:
    folder = _save_bert(tmp_path / "bert-base", head=False)
    with pytest.raises(CheckpointError, match="masked-LM head"):
        load_model(folder, device="cpu")


# -- the command line -------------------------------------------------------------------------
@pytest.mark.slow
def test_generate_runs_on_a_hf_folder(bert_dir: Path) -> None:
    done = _cli("generate", "--model", str(bert_dir), "--length", "16", "--steps", "4", "--device", "cpu")
    assert done.returncode == 0, done.stderr
    text = done.stdout.strip()
    assert text and "[CLS]" not in text and "\u2588" not in text


@pytest.mark.slow
def test_a_session_of_a_hf_folder_records_and_finds_its_model(bert_dir: Path, tmp_path: Path) -> None:
    from dpgviz.core.discovery import model_file
    from dpgviz.store.session import checkpoint_sha256
    from dpgviz.store.session_open import open_session

    out = tmp_path / "bert.dpgviz"
    done = _cli("generate", "--model", str(bert_dir), "--length", "16", "--steps", "3", "--device", "cpu", "--out", str(out))
    assert done.returncode == 0, done.stderr
    with open_session(out) as session:
        assert Path(session.model_path) == bert_dir
        assert session.model_sha256 == checkpoint_sha256(model_file(bert_dir))  # the weights, hashed
        assert session.model_status() == "ok"
    assert model_file(tmp_path) is None  # a folder that is no model


@pytest.mark.parametrize(("remove", "message"), [("model.safetensors", "no weights"), ("vocab.txt", "no tokenizer files")])
def test_generate_names_what_the_folder_lacks(tmp_path: Path, bert_dir: Path, remove: str, message: str) -> None:
    folder = tmp_path / "broken"
    shutil.copytree(bert_dir, folder)
    (folder / remove).unlink()
    (folder / "tokenizer.json").unlink()
    done = _cli("generate", "--model", str(folder), "--length", "8", "--steps", "2", "--device", "cpu")
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr


# -- sessions and the PNG export of a subword run ---------------------------------------------
@pytest.fixture(scope="module")
def bert_session(bert, tmp_path_factory: pytest.TempPathFactory):
    from dpgviz.store.session_open import open_session
    from dpgviz.store.session_save import save_session
    from dpgviz.store.step_store import StepStore

    settings = GenerationSettings(length=20, steps=3, seed=2)
    sampler = Sampler(bert.adapter, bert.vocab, bert.device)
    store = StepStore(sampler.layout(settings), capacity=8)
    branch = store.new_branch(settings.to_dict(), label="bert")
    for record in sampler.run(settings):
        store.append_record(record, branch.id)
    path = save_session(tmp_path_factory.mktemp("sess") / "bert.dpgviz", store, bert.vocab, settings=settings.to_dict(),
                        model_info=bert.info().to_dict(with_itos=False))
    return open_session(path)


def test_session_keeps_the_subword_vocabulary(bert, bert_session) -> None:
    assert bert_session.vocab == bert.vocab
    assert bert_session.vocab.never_sample == bert.vocab.never_sample


def test_png_gives_each_token_its_width(bert_session) -> None:
    from dpgviz.export.images import FramePainter, glyph_atlas, slot_width

    vocab = bert_session.vocab
    slot = slot_width(vocab)
    assert slot == max(len(s) for s in vocab.itos) == 5  # "[CLS]", " the", ...
    atlas = glyph_atlas(vocab)
    glyph_w = (atlas.shape[2] - 1) // slot
    inked = atlas.any(axis=1)  # (ids, cell_w): columns with ink
    for token in (" cat", "s", "ing"):
        cols = np.flatnonzero(inked[vocab.itos.index(token)])
        # ink only within the token's own cells, and in its last cell: not squeezed into one
        assert cols.max() < len(token) * glyph_w and cols.max() >= (len(token) - 1) * glyph_w, (token, cols)
    painter = FramePainter(bert_session, columns=60)
    assert painter.raster.columns == 60 // slot  # columns count glyph cells, as on the canvas
    assert painter.frame(len(painter) - 1).size == painter.size


def test_dtype_flag_reaches_every_model_command() -> None:
    from dpgviz.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["--dtype", "bfloat16"]).dtype == "bfloat16"  # the window's worker
    for command in ("generate", "inspect", "evaluate"):
        extra = ["--text", "a"] if command == "inspect" else ["--data", "x"] if command == "evaluate" else []
        assert parser.parse_args([command, "--dtype", "float16", *extra]).dtype == "float16"


@pytest.mark.slow
def test_worker_loads_a_hf_folder_in_the_dtype_asked(bert_dir: Path) -> None:
    from dpgviz.ipc.runner import run_via_worker

    info, store, branch, _ = run_via_worker(
        GenerationSettings(length=12, steps=2), bert_dir, None, "cpu", dtype="bfloat16"
    )
    specials = tuple(BERT_VOCAB.index(s) for s in ("[PAD]", "[UNK]", "[CLS]", "[SEP]"))  # all before [MASK]
    assert (info.dtype, info.never_sample, info.block_size) == ("bfloat16", specials, 62)
    final = store.get("tokens", int(store.rows(branch)[-1]))
    assert not np.isin(final, info.never_sample).any()


def test_the_explorer_never_predicts_special_tokens(bert) -> None:
    """The specials carry a +30 logit bias here: only never_sample keeps them out of the argmax."""
    from dpgviz.engine.explore import predict

    vocab = bert.vocab
    target = vocab.encode(" the cat sat on the mat.")[None]
    seen = target.copy()
    seen[0, ::2] = vocab.mask_id
    pred = predict(bert, seen, target, top_k=4)
    specials = list(vocab.never_sample)
    assert specials and not np.isin(pred.predicted, specials).any()
    assert not np.isin(pred.top_ids, specials).any()
