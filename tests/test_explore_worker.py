"""The explorer through a real worker process: a sample on two models, a batch with progress,
Stop, and 'Generate from here' starting a run from the corrupted tokens. No window."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from model_data import tiny_checkpoint

from dpgviz.app.explore import explore_key, find_corpus
from dpgviz.app.workspace import Workspace
from dpgviz.core.corruption import CorruptionSettings
from dpgviz.core.discovery import ModelEntry
from dpgviz.core.settings import GenerationSettings

TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n" * 40


def until(ws: Workspace, condition: Callable[[], bool], timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out; last notices: {ws.take_notices()[-5:]}"
        ws.update(0.01)
        time.sleep(0.005)
    ws.update(0.01)


@pytest.fixture(scope="module")
def entries(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelEntry, ModelEntry]:
    root = tmp_path_factory.mktemp("xw")
    a, b = tiny_checkpoint(root / "a"), tiny_checkpoint(root / "b", block_size=64)
    return ModelEntry("a", a, a.with_name("meta.pkl")), ModelEntry("b", b, b.with_name("meta.pkl"))


@pytest.fixture(scope="module")
def ws(entries):
    workspace = Workspace(device="cpu")
    workspace.runs.load_model(entries[0])
    until(workspace, lambda: workspace.model_info is not None)
    workspace.explore.set_source(TEXT, "test text")
    yield workspace
    workspace.close()


def test_sample_on_two_models_gives_aligned_predictions_and_metrics(ws: Workspace, entries) -> None:
    models = [explore_key(e) for e in entries]
    assert ws.explore.run_sample(CorruptionSettings("span", 0.3, seed=4), models, length=48, offset=10)
    sample = ws.explore.sample
    assert sample.offset == 10 and int(sample.corruption.is_corrupted.sum()) == round(0.3 * 48)
    until(ws, lambda: ws.explore.sample.is_done)
    assert len(sample.predictions) == 2 and len(sample.names) == 2 and sample.names[0] != sample.names[1]
    for pred, m in zip(sample.predictions, sample.metrics, strict=True):
        assert pred["predicted"].shape == (48,) and pred["top_ids"].shape == (48, 8)
        assert m.n == 14 and 0 <= m.accuracy <= 1 and m.ce > 0


def test_batch_reports_progress_and_rows(ws: Workspace, entries) -> None:
    models = [explore_key(entries[0])]
    assert ws.explore.run_batch(CorruptionSettings("random"), models, [0.2, 0.6], samples=3, length=32, held_out=False)
    until(ws, lambda: not ws.explore.batch.is_running)
    batch = ws.explore.batch
    assert not batch.is_stopped and [r["ratio"] for r in batch.rows] == [0.2, 0.6]
    assert batch.done == batch.total == 2 and ws.explore.batch_fraction() == 1.0


def test_batch_stops(ws: Workspace, entries, tmp_path: Path) -> None:
    models = [explore_key(e) for e in entries]
    assert ws.explore.run_batch(CorruptionSettings("random"), models, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9],
                        samples=64, length=48, held_out=False)
    ws.explore.stop_batch()
    until(ws, lambda: not ws.explore.batch.is_running)
    assert ws.explore.batch.is_stopped and len(ws.explore.batch.rows) < 18
    assert not ws.explore.run_batch(CorruptionSettings(), [], [0.5], samples=1, length=8)  # no model ticked


def test_csv_export(ws: Workspace, entries, tmp_path: Path) -> None:
    ws.explore.run_batch(CorruptionSettings("mix"), [explore_key(entries[0])], [0.5], samples=2, length=32, held_out=False)
    until(ws, lambda: not ws.explore.batch.is_running)
    assert ws.explore.export_batch_csv(tmp_path / "b.csv")
    lines = (tmp_path / "b.csv").read_text().splitlines()
    assert lines[0].startswith("model,ratio,accuracy,accuracy_std") and len(lines) == 2


def test_generate_from_here_runs_from_the_corrupted_tokens(ws: Workspace, entries) -> None:
    assert ws.explore.run_sample(CorruptionSettings("random", 0.5, seed=1), [explore_key(entries[0])], length=40)
    until(ws, lambda: ws.explore.sample.is_done)
    corruption = ws.explore.sample.corruption
    assert ws.explore.generate_from_sample(GenerationSettings(steps=4, seed=0))
    until(ws, lambda: not ws.is_running)
    first = ws.store.get("tokens", int(ws.rows()[0]))
    assert (first == corruption.ids).all()  # the run's first record is the corrupted sample
    last = ws.store.get("tokens", ws.current_row())
    assert not (last == ws.vocab.mask_id).any()  # repaired to the end


def test_corpus_found_beside_meta(tmp_path: Path) -> None:
    folder = tmp_path / "data" / "shakespeare_char"
    folder.mkdir(parents=True)
    (folder / "meta.pkl").write_bytes(b"")
    assert find_corpus(folder / "meta.pkl") is None
    (folder / "input.txt").write_text("hi")
    assert find_corpus(folder / "meta.pkl") == folder / "input.txt"
