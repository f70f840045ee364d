"""The benchmark package: one CLI entry, light imports, the shared synthetic-run generator.

Runs no benchmark that needs torch or a display; the session benchmark runs at a tiny size.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from dpgviz.bench.synthetic import fork_point, synthetic_store, synthetic_vocab
from dpgviz.cli import build_parser
from dpgviz.core.records import KIND_CODE, record_count


def test_bench_parser_imports_neither_torch_nor_dearpygui() -> None:
    code = (
        "import sys\n"
        "import dpgviz.bench, dpgviz.bench.synthetic, dpgviz.bench.session, dpgviz.bench.gui\n"
        "from dpgviz.cli import build_parser\n"
        "build_parser()\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'dearpygui') or m.startswith('dpgviz.engine')]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["bench", "worker", "--length", "64", "--steps", "3"], {"length": 64, "steps": 3, "json": False}),
        (["bench", "sampler", "--rounds", "1", "--json"], {"length": 256, "steps": 10, "rounds": 1, "json": True}),
        (["bench", "gui", "--switch-sizes", "64,128"], {"tokens": 1024, "switch_sizes": (64, 128)}),
        (["bench", "session", "--records", "20"], {"tokens": 16384, "records": 20, "keep": False}),
    ],
)
def test_bench_forms_parse(argv: list[str], expected: dict) -> None:
    args = build_parser().parse_args(argv)
    assert args.command == "bench" and args.bench == argv[1]
    assert {key: getattr(args, key) for key in expected} == expected


def test_synthetic_store_has_a_runs_shape() -> None:
    vocab = synthetic_vocab()
    store = synthetic_store(50, 4, vocab=vocab, forks=1)
    fork_record, start = fork_point(4)
    root, child = (store.branches[b] for b in store.branch_order)
    assert len(root.rows) == record_count(4) and len(child.rows) == record_count(4, start)
    assert (child.parent, child.fork_record) == (root.id, fork_record)
    kinds = store.column("kind")[root.rows]
    assert kinds[0] == KIND_CODE["initial"] and kinds[-1] == KIND_CODE["final"]
    n_masked = store.column("n_masked")[root.rows]
    assert n_masked[0] == 50 and n_masked[-1] == 0
    first_child = store.get("tokens", child.rows[0])
    assert np.array_equal(first_child, store.get("tokens", root.rows[fork_record]))
    assert np.array_equal(store.get("tokens", synthetic_store(50, 4, vocab=vocab).branches["0"].rows[-1]), store.get("tokens", root.rows[-1]))


def test_session_benchmark_runs_small(tmp_path) -> None:
    from dpgviz.cli import main

    code = main(["bench", "session", "--tokens", "64", "--records", "20", "--dir", str(tmp_path), "--json"])
    assert code == 0
    assert list(tmp_path.iterdir()) == []  # the file is deleted unless --keep


def test_session_benchmark_json(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    from dpgviz.bench.session import main

    main(64, 20, str(tmp_path), keep=False, as_json=True)
    result = json.loads(capsys.readouterr().out)
    assert result["tokens"] == 64 and 17 <= result["records"] <= 23
    assert result["root_stats_rows"] == result["records"] - (2 * (6 - fork_point(6)[1]) + 1)
