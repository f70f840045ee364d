"""`python main.py explore`: the exact JSON form, one row per model x ratio, repeatable, CSV,
one-line refusals; and the engine's batch on a tiny model."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from model_data import tiny_checkpoint

ROOT = Path(__file__).resolve().parents[1]
CORPUS = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n" * 60


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "main.py"), "explore", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    folder = tmp_path_factory.mktemp("explore")
    data = folder / "input.txt"
    data.write_text(CORPUS, encoding="utf-8")
    return data, tiny_checkpoint(folder / "a"), tiny_checkpoint(folder / "b", block_size=64)


def test_json_has_one_row_per_model_and_ratio(files, tmp_path: Path) -> None:
    data, a, b = files
    out = run("--data", str(data), "--model", str(a), "--model", str(b), "--samples", "5", "--ratios", "0.1,0.5,0.9",
              "--strategy", "span", "--length", "48", "--seed", "1", "--json", "--device", "cpu",
              "--csv", str(tmp_path / "t.csv"))
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert set(doc) == {"results"}
    rows = doc["results"]
    assert len(rows) == 2 * 3
    for row in rows:
        assert set(row) == {"model", "ratio", "accuracy", "true_prob", "ce", "n"}
        assert 0 <= row["accuracy"] <= 1 and 0 < row["true_prob"] < 1 and row["ce"] > 0 and row["n"] == 5
    assert [r["ratio"] for r in rows] == [0.1, 0.5, 0.9] * 2
    assert len({r["model"] for r in rows}) == 2  # two checkpoints both named ckpt.pt stay apart
    with open(tmp_path / "t.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 6 and {"accuracy_std", "ce_std", "true_prob_std"} <= set(table[0])


def test_same_seed_same_table_and_text_form(files) -> None:
    data, a, _ = files
    args = ("--data", str(data), "--model", str(a), "--samples", "3", "--ratios", "0.3", "--length", "32",
            "--strategy", "mix", "--device", "cpu")
    first, second = run(*args, "--json"), run(*args, "--json")
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    text = run(*args)
    assert text.returncode == 0 and "accuracy" in text.stdout.splitlines()[0] and len(text.stdout.splitlines()) == 2


@pytest.mark.parametrize(
    ("extra", "message"),
    [(("--ratios", "0.5,2"), "--ratios"), (("--strategy", "blur"), "invalid choice"), (("--samples", "0"), "--samples")],
)
def test_bad_input_is_one_line(files, extra: tuple[str, ...], message: str) -> None:
    data, a, _ = files
    out = run("--data", str(data), "--model", str(a), "--device", "cpu", *extra)
    assert out.returncode == 2 and message in out.stderr


def test_missing_data_file_is_refused(files, tmp_path: Path) -> None:
    out = run("--data", str(tmp_path / "none.txt"), "--model", str(files[1]))
    assert out.returncode == 2 and "cannot read" in out.stderr


def test_batch_stops_when_asked_and_reports_progress(files) -> None:
    from dpgviz.core.corruption import CorruptionSettings
    from dpgviz.engine.checkpoint import load_model
    from dpgviz.engine.explore import explore_batch, source_ids

    data, a, _ = files
    loaded = load_model(a, device="cpu")
    ids = source_ids(data.read_text(), loaded.vocab)
    seen: list[tuple[int, int]] = []
    rows = explore_batch([("a", loaded)], ids, [0.2, 0.4], CorruptionSettings(), samples=3, length=32,
                         progress=lambda d, t: seen.append((d, t)))
    assert [r.ratio for r in rows] == [0.2, 0.4] and seen[-1] == (2, 2)
    assert all(r.positions == 3 * round(r.ratio * 32) for r in rows)
    stopped = explore_batch([("a", loaded)], ids, [0.2, 0.4], CorruptionSettings(), samples=3, length=32,
                            should_stop=lambda: len(seen) >= 3, progress=lambda d, t: seen.append((d, t)))
    assert len(stopped) == 1


def test_predict_gives_probabilities_of_the_true_token(files) -> None:
    from dpgviz.engine.checkpoint import load_model
    from dpgviz.engine.explore import predict

    loaded = load_model(files[1], device="cpu")
    target = loaded.vocab.encode("hear me speak")[None]
    ids = target.copy()
    ids[0, 3:6] = loaded.vocab.mask_id
    pred = predict(loaded, ids, target, top_k=4)
    assert pred.top_ids.shape == (1, 13, 4) and (pred.predicted == pred.top_ids[..., 0]).all()
    assert (np.diff(pred.top_probs, axis=-1) <= 0).all() and (pred.log_p_true <= 0).all()
    assert (pred.entropy > 0).all()
