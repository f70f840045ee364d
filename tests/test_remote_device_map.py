"""`--device-map auto`: a Hugging Face model placed by accelerate gives the logits of the model loaded whole.

A tiny random BERT built offline (as tests/test_hf.py builds its own), loaded with a CPU
budget so small that every layer goes to disk, then through `python main.py worker
--device-map auto --max-memory cpu=1KB` and `generate --connect`, against a plain local
`generate`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from dpgviz.engine.checkpoint import CheckpointError, load_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "the", "cat", "sat", "on", "[MASK]", "mat", "dog", "ran", ".", "##s"]


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("hf") / "tiny-bert"
    folder.mkdir()
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    tok = transformers.BertTokenizerFast.from_pretrained(folder, local_files_only=True)
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=len(VOCAB), hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=64,
    )
    transformers.BertForMaskedLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def test_disk_offload_gives_the_logits_of_the_whole_model(bert_dir: Path) -> None:
    whole = load_model(bert_dir, device="cpu")
    placed = load_model(bert_dir, device="cpu", device_map="auto", max_memory={"cpu": "1KB"})
    assert "disk" in set(placed.model.hf_device_map.values())  # the budget forced every layer out to disk
    assert placed.device == torch.device("cpu")  # inputs go where the first layers run
    ids = torch.as_tensor(np.random.default_rng(0).integers(0, whole.vocab.n_ids, (2, 20)))  # masks included
    with torch.inference_mode():
        expected = whole.adapter.logits(ids)
        got = placed.adapter.logits(ids.to(placed.device))
    assert got.device == ids.device and got.shape == expected.shape
    assert torch.equal(got, expected)


def test_a_device_map_other_than_auto_is_refused_in_one_line(bert_dir: Path) -> None:
    with pytest.raises(CheckpointError, match="only 'auto'"):
        load_model(bert_dir, device="cpu", device_map="balanced")


@pytest.mark.slow
def test_a_remote_worker_with_a_device_map_generates_what_a_whole_local_load_does(
    bert_dir: Path, tmp_path: Path
) -> None:
    path = tmp_path / "worker.json"
    log = open(tmp_path / "worker.log", "w")  # closed below
    server = subprocess.Popen(
        [sys.executable, "main.py", "worker", "--listen", "127.0.0.1:0", "--connection-file", str(path),
         "--model", str(bert_dir), "--device-map", "auto", "--max-memory", "cpu=1KB"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log,
    )
    try:
        deadline = time.monotonic() + 60
        while not path.is_file():
            assert server.poll() is None and time.monotonic() < deadline, (tmp_path / "worker.log").read_text()
            time.sleep(0.05)
        args = ["--length", "24", "--steps", "4", "--seed", "3", "--json"]
        remote = subprocess.run([sys.executable, "main.py", "generate", "--connect", str(path), *args], cwd=ROOT,
                                capture_output=True, text=True, timeout=300)
        local = subprocess.run([sys.executable, "main.py", "generate", "--model", str(bert_dir), "--device", "cpu",
                                *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert remote.returncode == 0, remote.stderr
        assert local.returncode == 0, local.stderr
        assert json.loads(remote.stdout) == json.loads(local.stdout)
        assert "placed by device map" in (tmp_path / "worker.log").read_text()
    finally:
        server.terminate()
        server.wait(30)
        log.close()
