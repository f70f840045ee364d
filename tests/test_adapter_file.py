"""Your own model as an adapter file (`--model my_model.py`): the CLI, a real worker, refusals.

The adapter here is a word-level model whose logits are a fixed table per position, as a
user's `load_adapter(device, dtype)` would return their own model behind the interface.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from dpgviz.app.workspace import Workspace
from dpgviz.core.discovery import given_model_entry
from dpgviz.core.settings import GenerationSettings

ROOT = Path(__file__).resolve().parents[1]
WORDS = (" the", " cat", " sat", " on", " mat", ".", "\n")

ADAPTER = textwrap.dedent(
    f'''
    import torch
    from dpgviz.core.vocab import Vocabulary

    class TableAdapter:
        """Position-only logits: a stand-in for LLaDA, Dream or any masked-diffusion model."""

        def __init__(self, device, dtype):
            self.vocab = Vocabulary(itos={WORDS!r})
            self.block_size = 64
            g = torch.Generator().manual_seed(0)
            self.table = (torch.randn(64, self.vocab.size + 1, generator=g) * 3).to(device=device, dtype=dtype)

        def logits(self, ids):
            return self.table[None, : ids.shape[1]].expand(ids.shape[0], -1, -1)

    def load_adapter(device, dtype):
        return TableAdapter(device, dtype)
    '''
)


def main_py(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "main.py"), *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def adapter_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("adapter") / "my_model.py"
    path.write_text(ADAPTER, encoding="utf-8")
    return path


def test_generate_and_compare_run_on_an_adapter_file(adapter_file: Path) -> None:
    out = main_py("generate", "--model", str(adapter_file), "--length", "20", "--steps", "4", "--device", "cpu", "--json")
    assert out.returncode == 0, out.stderr
    text = json.loads(out.stdout)["final_text"]
    assert text and set(text.replace("the", "").replace("cat", "").replace("sat", "").replace("on", "")
                        .replace("mat", "")) <= set(" .\n")  # only the adapter's words
    out = main_py("compare", "--model", str(adapter_file), "--strategies", "llada,margin", "--length", "20",
                  "--steps", "4", "--device", "cpu", "--json")
    assert out.returncode == 0, out.stderr
    assert [r["strategy"] for r in json.loads(out.stdout)["results"]] == ["llada", "margin"]


@pytest.mark.parametrize(
    "source,message",
    [
        ("x = 1\n", "has no load_adapter(device, dtype) function"),
        ("raise RuntimeError('no weights here')\n", "failed to import (RuntimeError: no weights here)"),
        ("def load_adapter(device, dtype):\n    return object()\n", "without vocab, block_size, logits"),
        ("def load_adapter(device, dtype):\n    raise OSError('weights not found')\n", "load_adapter failed"),
    ],
)
def test_a_bad_adapter_file_is_refused_in_one_line(tmp_path: Path, source: str, message: str) -> None:
    path = tmp_path / "bad.py"
    path.write_text(source, encoding="utf-8")
    out = main_py("generate", "--model", str(path), "--length", "8", "--steps", "2", "--device", "cpu")
    assert out.returncode == 2 and message in out.stderr, out.stderr
    assert "Traceback" not in out.stderr and out.stderr.count("\n") == 1


def test_the_window_loads_an_adapter_given_with_model(adapter_file: Path) -> None:
    """`python main.py --model my_model.py`: the app's workspace loads it in its worker and runs it."""
    with Workspace(device="cpu") as ws:
        ws.runs.load_model(given_model_entry(adapter_file))
        deadline = time.monotonic() + 60
        while ws.model_info is None:
            assert time.monotonic() < deadline, ws.take_notices()[-3:]
            ws.update(0.01)
            time.sleep(0.005)
        assert ws.model_info.itos == WORDS and ws.model_info.tokenizer == "TableAdapter"
        assert ws.runs.start(GenerationSettings(length=30, steps=3))
        while ws.is_running:
            assert time.monotonic() < deadline + 60
            ws.update(0.01)
            time.sleep(0.005)
        final = ws.store.get("tokens", int(ws.rows()[-1]))
        assert ws.store.kind(int(ws.rows()[-1])) == "final" and (final < len(WORDS)).all()
