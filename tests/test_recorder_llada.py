"""Issue 31's recorder: LLaDA-sized ids up to the logits' width, score=, block=, attention_mask=,
names=, end tokens as glyphs and candidates, `show --json --ids` and p at float32 precision.
Each test logs with a real Recorder into a real file and reads it back (open_session, `show`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dpgviz.core.records import FLAG_PADDING, FLAG_PROMPT
from dpgviz.core.vocab import EOS_GLYPH, EOT_GLYPH
from dpgviz.record import Recorder
from dpgviz.store.session_open import open_session

ROOT = Path(__file__).resolve().parents[1]
VOCAB = [*"abcdefghijklmnopqrstuvwxyz", " ", "."]
MASK = len(VOCAB)


def show(*args: str) -> dict:
    proc = subprocess.run([sys.executable, str(ROOT / "main.py"), "show", *args, "--json"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def llada_tok():
    pytest.importorskip("transformers")
    pytest.importorskip("tokenizers")
    from recorder_data import llada_like_tokenizer

    return llada_like_tokenizer()


def test_a_llada_run_logs_ids_up_to_the_logits_width(llada_tok, tmp_path: Path) -> None:
    from recorder_data import LLADA_EOS, LLADA_EOT, LLADA_MASK, LLADA_WIDTH

    L = 8
    path = tmp_path / "llada.dpgviz"
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(L, LLADA_WIDTH)).astype(np.float32)
    logits[:, LLADA_EOS] += 16.0  # the end of text is the favourite: it is a candidate, not hidden
    logits[:, 126400] += 10.0  # an id past the tokenizer's 126,349: LLaDA's argmax can give it
    x = np.full(L, LLADA_MASK)
    x[0] = llada_tok.convert_tokens_to_ids("\u0120the")
    with Recorder(llada_tok, LLADA_MASK, L, path=path, model="llada-like") as rec:
        rec.log(x)  # no logits: the width is not known yet (no config.json beside this tokenizer)
        x2 = x.copy()
        x2[1], x2[2], x2[3] = 126400, LLADA_EOS, LLADA_EOT
        rec.log(x2, logits=logits)
    doc = show(str(path), "--ids")
    assert [r["ids"] for r in doc["records"]] == [x.tolist(), x2.tolist()]  # the model's own ids, mask 126336
    assert doc["records"][1]["text"] == f" the<126400>{EOS_GLYPH}{EOT_GLYPH}" + "\u2588" * 4
    with open_session(path) as session:
        vocab, store = session.vocab, session.store
        assert vocab.n_ids == LLADA_WIDTH
        ids, probs = store.top_k(1)
        assert vocab.model_ids(ids[1, :2]).tolist() == [LLADA_EOS, 126400]  # the two favourites, in order


def test_n_ids_fixes_the_width_up_front_and_wider_ids_say_so(tmp_path: Path) -> None:
    with Recorder(VOCAB, MASK, 4, path=tmp_path / "w.dpgviz", n_ids=40) as rec:
        rec.log(np.array([MASK] * 4))
        rec.log(np.array([39, MASK, MASK, MASK]))  # past the vocabulary, within n_ids: drawn as <39>
        with pytest.raises(ValueError, match=r"outside 0\.\.39"):
            rec.log(np.array([40, MASK, MASK, MASK]))
    assert show(str(tmp_path / "w.dpgviz"))["records"][1]["text"].startswith("<39>")


def test_score_block_attention_mask_and_names_read_back(tmp_path: Path) -> None:
    path = tmp_path / "batch.dpgviz"
    B, L = 2, 12
    x = np.full((B, L), MASK)
    x[0, 2:4] = [0, 1]  # row 0: two pads, then a 2-token prompt
    x[1, 0:4] = [2, 3, 4, 5]  # row 1: a 4-token prompt
    pad = np.ones((B, L), np.int64)
    pad[0, :2] = 0
    x[0, :2] = 26  # the pad id (" "), as a tokenizer pads
    rng = np.random.default_rng(3)
    scores = []
    with Recorder(VOCAB, MASK, L, path=path, model="toy", names=["short prompt", "long prompt"]) as rec:
        rec.log(x, attention_mask=pad, block=(4, 8))
        for lo, hi in [(4, 8), (4, 8), (8, 12), (8, 12)]:
            masked = np.flatnonzero(x[0, lo:hi] == MASK) + lo
            x[:, masked[:2]] = 7
            score = rng.random((B, L)).astype(np.float32)
            scores.append(score)
            rec.log(x, logits=rng.normal(size=(B, L, len(VOCAB))), score=score, block=(lo, hi))
    with open_session(path) as session:
        store = session.store
        assert [store.branches[b].label for b in store.branch_order] == ["short prompt", "long prompt"]
        rows0 = session.rows(store.branch_order[0])
        assert store.column("block")[rows0].tolist() == [0, 0, 0, 1, 1]  # ranges numbered as first logged
        for k in range(1, 5):
            stored = store.get("score", int(rows0[k])).astype(np.float32)
            assert np.allclose(stored[2:], scores[k - 1][0, 2:], atol=1e-3)
            assert np.isnan(stored[:2]).all()  # the padding has no score drawn
        for row in rows0:
            flags = store.get("flags", int(row))
            assert ((flags[:2] & FLAG_PADDING) != 0).all() and ((flags[:2] & FLAG_PROMPT) == 0).all()
            assert ((flags[2:4] & FLAG_PROMPT) != 0).all() and ((flags[2:] & FLAG_PADDING) == 0).all()
        rows1 = session.rows(store.branch_order[1])
        assert ((store.get("flags", int(rows1[0])) & FLAG_PADDING) == 0).all()
    doc = show(str(path), "--position", "5")
    assert doc["history"][1]["score"] == pytest.approx(float(scores[0][0, 5]), abs=1e-3)


def test_p_prints_at_float32_precision(tmp_path: Path) -> None:
    path = tmp_path / "p.dpgviz"
    probs = np.full((2, len(VOCAB)), (1 - 1e-5) / (len(VOCAB) - 1), np.float32)
    probs[:, 0] = 1e-5
    with Recorder(VOCAB, MASK, 2, path=path) as rec:
        rec.log(np.array([MASK, MASK]))
        rec.log(np.array([0, MASK]), probs=probs)
    p = show(str(path), "--position", "0")["history"][1]["p"]
    stored = np.float16(1e-5).astype(np.float32)  # p is kept as float16: 1.0013580e-05
    assert np.float32(p) == stored and p == float(str(stored))  # read back exactly, shortest; 6 places gave 1e-05


def _byte_level_tokenizer():
    import tokenizers
    import transformers

    alphabet = sorted(tokenizers.pre_tokenizers.ByteLevel.alphabet())
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    # single bytes (those >= 0x80 are partial UTF-8: U+FFFD), then whole words with multi-byte characters
    for word in ("the", "caf\u00e9", "5\u20ac", "\n\n"):
        pieces = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False).pre_tokenize_str(" " + word)
        vocab.setdefault("".join(p for p, _ in pieces), len(vocab))
    vocab["<|mdm_mask|>"], vocab["<|endoftext|>"] = len(vocab), len(vocab) + 1
    tk = tokenizers.Tokenizer(tokenizers.models.BPE(vocab=vocab, merges=[]))
    tk.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = tokenizers.decoders.ByteLevel()
    tk.add_special_tokens(["<|mdm_mask|>", "<|endoftext|>"])
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|endoftext|>",
                                                mask_token="<|mdm_mask|>")


def test_the_fast_vocabulary_matches_the_hf_adapters(tmp_path: Path) -> None:
    """record.tokenizer's strings equal engine.hf.vocab_from_tokenizer's (the batched decode), for a
    byte-level tokenizer with partial UTF-8 bytes, multi-byte words and newlines, and for WordPiece."""
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("tokenizers")
    from dpgviz.engine.hf import vocab_from_tokenizer
    from dpgviz.record.tokenizer import tokenizer_vocab

    folder = tmp_path / "bert"
    folder.mkdir()
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "##s", "a", ".", "caf\u00e9"]
    (folder / "vocab.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
    bert = transformers.BertTokenizerFast.from_pretrained(folder, local_files_only=True)
    for tok in (_byte_level_tokenizer(), bert):
        fast, to_caller = tokenizer_vocab(tok, tok.mask_token_id)
        slow, to_model = vocab_from_tokenizer(tok, len(tok), tok.mask_token_id)
        assert to_caller == to_model
        assert fast.itos == slow.itos
        assert tokenizer_vocab(tok, tok.mask_token_id)[0] is fast  # cached per tokenizer


def test_the_fast_stats_equal_a_plain_softmax_on_the_rows_kept() -> None:
    """record.stats' torch path (chunks, grouped top-k, rows not needed get p(token) alone) against
    torch.softmax / topk / -sum p log p on LLaDA-wide logits, with an excluded id and a -inf logit."""
    torch = pytest.importorskip("torch")
    from dpgviz.record.stats import token_stats

    gen = torch.Generator().manual_seed(0)
    R, V = 150, 126464
    x = 3 * torch.randn(R, V, generator=gen)
    x[:, 126400] += 12.0  # a favourite past the tokenizer's ids
    x[3, 5] = -torch.inf
    tokens = torch.randint(0, V, (R,), generator=gen)
    needed = np.random.default_rng(0).random(R) < 0.5
    st = token_stats(x, tokens, False, 8, np.array([V - 1]), V, needed)
    p = torch.softmax(x.double(), dim=-1)
    assert np.allclose(st.p_token, p.gather(1, tokens[:, None])[:, 0].numpy(), rtol=1e-4, atol=1e-9)
    logp = torch.log_softmax(x.double(), dim=-1)
    entropy = -torch.nansum(p * logp, dim=-1).numpy()
    assert np.allclose(st.entropy[needed], entropy[needed], atol=2e-3) and np.isnan(st.entropy[~needed]).all()
    p[:, V - 1] = -1.0  # the excluded id is never a candidate
    vals, ids = p.topk(8, dim=-1)
    assert (st.top_ids[needed] == ids.numpy()[needed]).all() and (st.top_probs[~needed] == 0).all()
    assert np.allclose(st.top_probs[needed], vals.numpy()[needed], rtol=1e-4)
