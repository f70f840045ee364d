"""The local worker exits as soon as Shutdown's cleanup is done, however long its model takes to free.

`generate --model llada:...` (16 GB of tensors freed one by one, then the CUDA context) ended
2 runs in 3 with "worker N did not exit; terminate" on stderr: freeing a big model took longer
than WorkerClient.close waits (JOIN_TIMEOUT_S). The model here is an adapter file whose teardown
takes far longer than that wait, as a big model's does; a real worker, a real `generate`.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dpgviz.ipc.client import JOIN_TIMEOUT_S

ROOT = Path(__file__).resolve().parents[1]
TEARDOWN_S = 6 * JOIN_TIMEOUT_S  # what freeing this model takes: longer than close() waits, by far

ADAPTER = textwrap.dedent(
    f'''
    import time

    import torch
    from dpgviz.core.vocab import Vocabulary


    class SlowToFreeAdapter:
        """Fixed logits; freeing it takes as long as freeing a big model's tensors one by one."""

        def __init__(self, device, dtype):
            self.vocab = Vocabulary(itos=(" a", " b", " c", "."))
            self.block_size = 32
            self.table = torch.zeros(32, self.vocab.size + 1, device=device, dtype=dtype)

        def logits(self, ids):
            return self.table[None, : ids.shape[1]].expand(ids.shape[0], -1, -1)

        def __del__(self):
            time.sleep({TEARDOWN_S})


    def load_adapter(device, dtype):
        return SlowToFreeAdapter(device, dtype)
    '''
)


@pytest.mark.slow
def test_generate_ends_without_terminating_a_worker_whose_model_is_slow_to_free(tmp_path: Path) -> None:
    adapter = tmp_path / "slow_to_free.py"
    adapter.write_text(ADAPTER, encoding="utf-8")
    out = subprocess.run(
        [sys.executable, "main.py", "generate", "--model", str(adapter), "--length", "16", "--steps", "2",
         "--device", "cpu", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=TEARDOWN_S + 120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert '"final_text"' in out.stdout
    assert "did not exit" not in out.stderr, out.stderr[-3000:]  # before: "worker N did not exit; terminate", then kill
