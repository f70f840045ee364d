"""dpgviz.Recorder: a run logged from the caller's own loop reads back as a session (show, export, branch),
batches are sibling branches, tokenizers map as the hf adapter maps them, a SIGKILL loses at most
the last record, a listening workspace takes the stream, and the LLaDA example runs on a tiny BERT."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from dpgviz.record import Recorder
from dpgviz.store.session_open import open_session

ROOT = Path(__file__).resolve().parents[1]
VOCAB = [*"abcdefghijklmnopqrstuvwxyz", " ", "."]
MASK = len(VOCAB)


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(ROOT / "main.py"), *args], capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def toy_run(path: Path, length: int = 48, n_records: int = 20, B: int = 1, seed: int = 0) -> dict:
    """Log `n_records` records of a toy sampler (random logits); every 6th step puts 2 positions back.
    Returns what was logged: xs (n, B, L), logits (n, B, L, V) (None for the first)."""
    rng = np.random.default_rng(seed)
    x = np.full((B, length), MASK)
    xs, logits_all = [x.copy()], [None]
    with Recorder(VOCAB, MASK, length, path=path, model="toy", settings={"steps": n_records - 1}) as rec:
        rec.log(x if B > 1 else x[0])
        for step in range(1, n_records):
            logits = 3 * rng.normal(size=(B, length, len(VOCAB)))
            for b in range(B):
                masked = np.flatnonzero(x[b] == MASK)
                if step % 6 == 0:  # a remask: two visible positions back to mask
                    visible = np.flatnonzero(x[b] != MASK)
                    x[b, rng.choice(visible, 2, replace=False)] = MASK
                    continue
                left = n_records - 1 - step
                k = len(masked) if left == 0 else max(1, len(masked) // (left + 1))
                fill = rng.choice(masked, k, replace=False)
                x[b, fill] = logits[b, fill].argmax(-1)
            rec.log(x if B > 1 else x[0], logits=logits if B > 1 else logits[0])
            xs.append(x.copy())
            logits_all.append(logits)
    return {"xs": np.stack(xs), "logits": logits_all}


def expected_kinds(xs: np.ndarray, row: int = 0) -> list[str]:
    kinds = ["initial"]
    for prev, cur in zip(xs[:-1, row], xs[1:, row], strict=True):
        n, before = int((cur == MASK).sum()), int((prev == MASK).sum())
        kinds.append("final" if n == 0 else "remask" if n > before else "prediction")
    return kinds


def text(ids: np.ndarray) -> str:
    return "".join("\u2588" if i == MASK else VOCAB[i] for i in ids)


def test_a_char_run_reads_back_with_its_texts_kinds_probabilities_and_candidates(tmp_path: Path) -> None:
    path = tmp_path / "run.dpgviz"
    logged = toy_run(path)
    xs = logged["xs"]
    doc = json.loads(cli("show", str(path), "--json").stdout)
    records = doc["records"]
    assert len(records) == 20
    assert [r["text"] for r in records] == [text(x[0]) for x in xs]
    kinds = [r["kind"] for r in records]
    assert kinds == expected_kinds(xs) and {"initial", "prediction", "remask", "final"} <= set(kinds)
    assert doc["branches"][0]["settings"]["steps"] == 19

    # A position filled at some record: p(token) = softmax(logits)[token], candidates in the logits' order.
    filled_at = {int(np.flatnonzero(xs[i - 1, 0] == MASK)[0]): i for i in range(1, 19)
                 if (xs[i - 1, 0] == MASK).any() and (xs[i, 0] != MASK)[np.flatnonzero(xs[i - 1, 0] == MASK)[0]]}
    pos, rec_i = next(iter(filled_at.items()))
    history = json.loads(cli("show", str(path), "--position", str(pos), "--json").stdout)["history"]
    entry = history[rec_i]
    probs = softmax(logged["logits"][rec_i][0, pos])
    token = int(xs[rec_i, 0, pos])
    assert entry["token"] == VOCAB[token]
    assert abs(entry["p"] - probs[token]) < 1e-3
    order = np.argsort(-logged["logits"][rec_i][0, pos])[:8]
    assert [t for t, _ in entry["top"]] == [VOCAB[i] for i in order]
    assert [p for _, p in entry["top"]] == pytest.approx(probs[order], abs=1e-3)
    entropy = -(probs * np.log(probs)).sum()
    assert entry["entropy"] == pytest.approx(entropy, abs=5e-3)
    assert history[0]["p"] is None and history[0]["top"] == []  # the initial record: ids only


def test_a_batch_of_three_rows_is_three_sibling_branches(tmp_path: Path) -> None:
    path = tmp_path / "batch.dpgviz"
    logged = toy_run(path, B=3, n_records=8)
    with open_session(path) as session:
        store = session.store
        assert len(store.branch_order) == 3
        assert all(store.branches[b].parent is None for b in store.branch_order)
        for row, branch in enumerate(store.branch_order):
            rows = session.rows(branch)
            assert len(rows) == 8
            tokens = np.stack([store.get("tokens", int(r)) for r in rows]).astype(np.int64)
            assert np.array_equal(tokens, logged["xs"][:, row])
            assert [store.kind(int(r)) for r in rows] == expected_kinds(logged["xs"], row)


def test_a_hugging_face_tokenizer_maps_ids_and_never_offers_special_tokens(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    folder = tmp_path / "tok"
    folder.mkdir()
    words = ["[PAD]", "[UNK]", "[CLS]", "the", "cat", "sat", "[SEP]", "on", "mat", "[MASK]", "dog", "##s", "a", "."]
    (folder / "vocab.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
    tok = transformers.BertTokenizerFast.from_pretrained(folder, local_files_only=True)
    mask, V, L = tok.mask_token_id, len(words), 6
    specials = [tok.convert_tokens_to_ids(t) for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")]
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(L, V)).astype(np.float32)
    logits[:, specials] += 4.0  # the specials are the most probable: only the recorder keeps them out
    x = np.array([tok.convert_tokens_to_ids("the"), mask, mask, tok.convert_tokens_to_ids("cat"), mask, mask])
    path = tmp_path / "hf.dpgviz"
    with Recorder(tok, mask, L, path=path, model="tiny-bert") as rec:
        rec.log(x)
        x2 = x.copy()
        x2[1] = tok.convert_tokens_to_ids("sat")
        rec.log(x2, logits=logits)
    with open_session(path) as session:
        vocab, store = session.vocab, session.store
        assert vocab.decode(store.get("tokens", 1)) == " the sat\u2588 cat\u2588\u2588"
        assert store.kind(1) == "prediction"
        ids, probs = store.top_k(1)
        shown = {vocab.itos[i] for i in ids[probs.astype(np.float32) > 0]}
        assert shown and not shown & {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"}
        p = softmax(logits.astype(np.float64))  # p(token) is of the whole distribution given
        assert float(store.get("confidence", 1)[1]) == pytest.approx(p[1, x2[1]], abs=1e-3)


def test_numpy_only_logging_never_imports_torch(tmp_path: Path) -> None:
    code = (
        "import sys, numpy as np, dpgviz\n"
        "rec = dpgviz.Recorder(list('ab'), 2, 4, path=sys.argv[1])\n"
        "rec.log(np.array([2, 2, 2, 2])); rec.log(np.array([0, 2, 1, 2]), logits=np.zeros((4, 3)))\n"
        "rec.close()\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "np.dpgviz")], check=True, timeout=60)
    with open_session(tmp_path / "np.dpgviz") as session:
        assert len(session.store) == 2


def test_a_recorder_killed_mid_run_leaves_every_record_but_at_most_the_last(tmp_path: Path) -> None:
    path = tmp_path / "killed.dpgviz"
    code = (
        "import sys, numpy as np, dpgviz\n"
        "L = 512; rng = np.random.default_rng(0)\n"
        "rec = dpgviz.Recorder([chr(97 + i) for i in range(26)], 26, L, path=sys.argv[1])\n"
        "x = np.full(L, 26)\n"
        "for i in range(100000):\n"
        "    x[rng.integers(L)] = rng.integers(26)\n"
        "    rec.log(x, logits=rng.normal(size=(L, 27)))\n"
        "    print(i + 1, flush=True)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True)
    logged = 0
    while logged < 40:
        logged = int(proc.stdout.readline())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    logged = max([logged, *(int(s) for s in proc.stdout.read().split())])  # what it printed before dying
    with open_session(path) as session:
        n = len(session.store)
        assert logged <= n <= logged + 1  # printed ones are all there; one more may have been written
        assert session.store.kind(0) == "initial" and len(session.rows()) == n
        assert session.damage is not None and session.damage.records_recovered == n  # no end entry: said partial
    proc = subprocess.run([sys.executable, str(ROOT / "main.py"), "show", str(path)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 3 and f"partial: {n} records recovered" in proc.stderr, proc.stderr[-3000:]
    cli("show", str(path), "--allow-partial")


def test_export_and_branch_read_a_recorded_file(tmp_path: Path) -> None:
    from dpgviz.core.discovery import default_model_entry
    from dpgviz.core.vocab import Vocabulary

    entry = default_model_entry()
    vocab = Vocabulary.load(entry.meta)
    path, L = tmp_path / "default.dpgviz", 64
    rng = np.random.default_rng(2)
    x = np.full(L, vocab.mask_id)
    with Recorder(list(vocab.itos), vocab.mask_id, L, path=path, model=str(entry.path), settings={"steps": 8}) as rec:
        rec.log(x)
        for step in range(8):
            masked = np.flatnonzero(x == vocab.mask_id)
            x[rng.choice(masked, len(masked) // (8 - step), replace=False)] = rng.integers(vocab.size)
            rec.log(x, logits=rng.normal(size=(L, vocab.size)))
    cli("export", str(path), "--format", "html", "--out", str(tmp_path / "run.html"))
    assert (tmp_path / "run.html").stat().st_size > 1000
    child = cli("branch", str(path), "--record", "3", "--mask", "0:8", "--steps", "8", "--device", "cpu").stdout.strip()
    with open_session(path) as session:  # now a session file with the fork beside the recorded run
        assert child in session.store.branches and session.store.branches[child].parent == "0"
        assert session.store.kind(int(session.rows(child)[-1])) == "final"


def test_a_listening_workspace_takes_the_stream_and_a_recorder_without_a_viewer_writes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("zmq")
    from dpgviz.app.workspace import Workspace
    from dpgviz.record import stream

    with Workspace() as ws:
        assert ws.live.listen("127.0.0.1:0")  # any free port; its connection file holds the key
        address = ws.live.address
        with Recorder(VOCAB, MASK, 16, path=tmp_path / "live.dpgviz", model="toy", connect=address) as rec:
            assert rec.is_streaming
            x = np.full((2, 16), MASK)
            rec.log(x)
            for i in range(16):
                x[:, i] = i % len(VOCAB)
                rec.log(x, logits=np.zeros((2, 16, len(VOCAB))))
        deadline = time.monotonic() + 20
        while (ws.store is None or len(ws.store) < 34) and time.monotonic() < deadline:
            ws.update(0.01)
            time.sleep(0.01)
        ws.update(0.01)
        store = ws.store
        assert store is not None and len(store) == 34 and len(store.branch_order) == 2
        assert ws.vocab.decode(store.get("tokens", int(store.rows(store.branch_order[1])[-1]))) == "abcdefghijklmnop"
        assert not ws.live.is_live  # RunClosed came

    # Nothing listens here now: one warning, and the file is still written.
    monkeypatch.setattr(stream, "CONNECT_WAIT_S", 0.5)
    with caplog.at_level(logging.WARNING, logger="dpgviz.record"):
        with Recorder(VOCAB, MASK, 4, path=tmp_path / "alone.dpgviz", connect=address, key="k" * 16) as rec:
            assert not rec.is_streaming
            for _ in range(3):
                rec.log(np.array([MASK, 0, 1, MASK]))
    warnings = [r for r in caplog.records if "no dpgviz window answered" in r.getMessage()]
    assert len(warnings) == 1 and "logging to" in warnings[0].getMessage()
    with open_session(tmp_path / "alone.dpgviz") as session:
        assert len(session.store) == 3


def test_deleting_a_branch_of_a_live_recording_keeps_the_others_streaming(tmp_path: Path) -> None:
    pytest.importorskip("zmq")
    from dpgviz.app.workspace import Workspace

    def frames(ws: Workspace, condition) -> None:
        deadline = time.monotonic() + 20
        while not condition() and time.monotonic() < deadline:
            ws.update(0.01)
            time.sleep(0.01)
        assert condition()

    with Workspace() as ws:
        assert ws.live.listen("127.0.0.1:0")
        with Recorder(VOCAB, MASK, 16, path=tmp_path / "live.dpgviz", model="toy", connect=ws.live.address) as rec:
            x = np.full((2, 16), MASK)
            rec.log(x)
            frames(ws, lambda: ws.store is not None and len(ws.store) == 2)
            first, second = ws.store.branch_order
            assert ws.edits.delete_branch(second)  # while its recorder goes on logging both rows
            for i in range(16):
                x[:, i] = i % len(VOCAB)
                rec.log(x)
        frames(ws, lambda: not ws.live.is_live)
        store = ws.store
        assert list(store.branches) == [first] and len(store.rows(first)) == 17
        assert ws.vocab.decode(store.get("tokens", int(store.rows(first)[-1]))) == "abcdefghijklmnop"


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    transformers = pytest.importorskip("transformers")
    import torch

    folder = tmp_path_factory.mktemp("hf") / "tiny-bert"
    folder.mkdir()
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "on", "mat", "dog", "ran", "a", "."]
    (folder / "vocab.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
    tok = transformers.BertTokenizerFast.from_pretrained(folder, local_files_only=True)
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=len(words), hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=64,
    )
    transformers.BertForMaskedLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("flags", [
    ["--remasking", "low_confidence"],
    ["--remasking", "random", "--cfg-scale", "1.5", "--temperature", "0.7", "--batch", "2"],
])
def test_the_llada_example_runs_on_a_tiny_bert(tiny_bert: Path, tmp_path: Path, flags: list[str]) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("llada_generate", ROOT / "examples" / "llada_generate.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)  # in this process: transformers is loaded once for both cases
    out = tmp_path / "llada.dpgviz"
    args = [str(tiny_bert), "--prompt", "the cat", "--gen-length", "16", "--block-length", "8", "--steps", "8",
            "--out", str(out), *flags]
    assert example.main(args) == 0
    with open_session(out) as session:
        store, vocab = session.store, session.vocab
        assert len(store.branch_order) == (2 if "--batch" in flags else 1)
        for branch in store.branch_order:
            rows = session.rows(branch)
            assert len(rows) == 9  # initial + 8 steps
            kinds = [store.kind(int(r)) for r in rows]
            assert kinds == ["initial", *["prediction"] * 7, "final"]
            masked = [int(store.get("n_masked", int(r))) for r in rows]
            assert masked == [16, 14, 12, 10, 8, 6, 4, 2, 0]  # 2 a step: the schedule's counts
            first = store.get("tokens", int(rows[0]))
            assert vocab.decode(first[:4]) == "[CLS] the cat[SEP]"  # the prompt, kept to the end
            assert np.array_equal(store.get("tokens", int(rows[-1]))[:4], first[:4])
            # blocks left to right: nothing after the first block is filled during its 4 steps
            assert (store.get("tokens", int(rows[4]))[12:] == vocab.mask_id).all()


def test_the_device_path_and_the_numpy_path_give_the_same_statistics() -> None:
    torch = pytest.importorskip("torch")
    from dpgviz.record.stats import _numpy_stats, _torch_stats

    rng = np.random.default_rng(3)
    logits = 3 * rng.normal(size=(64, 40)).astype(np.float32)
    logits[0, 5] = -np.inf  # a forbidden id: no NaN may come of it
    tokens = rng.integers(0, 40, 64)
    for excluded in (np.zeros(0, np.int64), np.array([1, 7, 30]), np.arange(0, 38, 2)):  # none, selection, copy
        k = min(8, 38 - len(excluded))
        a = _numpy_stats(logits, tokens, False, k, excluded, 38)
        b = _torch_stats(torch.from_numpy(logits), torch.from_numpy(tokens), False, k, excluded, 38)
        assert np.allclose(a.p_token, b.p_token, atol=1e-6) and np.allclose(a.entropy, b.entropy, atol=1e-5)
        assert np.array_equal(a.top_ids, b.top_ids) and np.allclose(a.top_probs, b.top_probs, atol=1e-6)
        assert not np.isin(a.top_ids, excluded).any() and (a.top_ids < 38).all()
