"""The model explorer's state and operations, without a window: the second mode beside generation.

    set_source(text, name)       the text samples come from (a file's contents or typed text)
    run_sample(...)              corrupt one window (here, numpy) and ask the worker for every
                                 chosen model's forward pass -> ExploreSampleDone -> `explore.sample`
    run_batch(...) / stop_batch  samples x ratios x models in the worker, with progress and Stop
    generate_from_sample(...)    the corrupted sample starts a generation run (a new branch)

`Explorer` is handed the `Document` (a generation from a sample replaces the store), the
`Runs` (the source its commands go to, the model loaded) and the `Notices`; it holds the
explorer's own state (source text, sample, batch). The corruption is drawn GUI-side
(`core.corruption`, numpy), so what the views show is exactly what the models saw, and a
sample needs only one small message per model back. The worker answers with
`ipc.messages.Explore*` events, which `handle_explore_event` takes.

numpy and dpgviz.core/ipc only; no dearpygui, no torch.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dpgviz.app.document import Document
from dpgviz.app.notices import Notices
from dpgviz.app.runs import Runs
from dpgviz.core.corruption import Corruption, CorruptionSettings, RepairMetrics, corrupt, repair_metrics
from dpgviz.core.discovery import ModelEntry
from dpgviz.core.settings import GenerationSettings
from dpgviz.ipc.messages import (
    Command,
    ExploreBatch,
    ExploreBatchDone,
    ExploreFailed,
    ExploreProgress,
    ExploreSample,
    ExploreSampleDone,
    StopExplore,
)

log = logging.getLogger(__name__)

EXPLORE_TOP_K = 8  # candidates kept per position for the hover (as the generation canvas stores)
CSV_COLUMNS = ("model", "ratio", "accuracy", "accuracy_std", "true_prob", "true_prob_std", "ce", "ce_std", "n", "positions")


def explore_key(entry: ModelEntry) -> tuple[str | None, str | None]:
    """(path, meta) as the worker knows a model: what Workspace.load_model sends for `entry`."""
    if entry.is_default:
        return (None, None)
    return (str(entry.path), None if entry.meta is None else str(entry.meta))


def find_corpus(meta: str | Path | None, ckpt: str | Path | None = None) -> Path | None:
    """The text a model was trained on, when the nanoGPT layout shows it: `input.txt` beside its
    `meta.pkl` (data/<name>/input.txt), else beside the checkpoint; None when neither is there."""
    for folder in (Path(meta).parent if meta else None, Path(ckpt).parent if ckpt else None):
        if folder is not None and (folder / "input.txt").is_file():
            return folder / "input.txt"
    return None


@dataclass
class ExploredSample:
    """One corrupted window and, once the worker answered, each model's belief about it."""

    job_id: int
    offset: int  # where the window starts in the source text
    target: np.ndarray  # (N,) true ids
    corruption: Corruption
    settings: CorruptionSettings
    models: list[tuple[str | None, str | None]]
    names: list[str] = field(default_factory=list)  # filled with the answer
    predictions: list[dict[str, np.ndarray]] = field(default_factory=list)  # engine.explore.Prediction fields
    metrics: list[RepairMetrics] = field(default_factory=list)

    @property
    def is_done(self) -> bool:
        return bool(self.predictions)


@dataclass
class BatchJob:
    job_id: int
    models: list[tuple[str | None, str | None]]
    ratios: list[float]
    done: int = 0
    total: int = 0
    message: str = ""
    rows: list[dict] = field(default_factory=list)  # engine.explore.BatchRow.to_dict()
    is_running: bool = True
    is_stopped: bool = False
    elapsed_s: float = 0.0


class Explorer:
    """The model explorer's state and operations (see the module docstring)."""

    def __init__(self, doc: Document, runs: Runs, notices: Notices) -> None:
        self.doc, self.runs, self.notices = doc, runs, notices
        self.source_text = ""
        self.source_name = ""  # a file path or "typed text"
        self.sample: ExploredSample | None = None
        self.batch: BatchJob | None = None
        self.error = ""  # the last failure, one line
        self.version = 0  # bumped whenever anything shown changes (panels redraw on a change)
        self.next_job = 1

    def _explore_changed(self) -> None:
        self.version += 1

    # -- source ---------------------------------------------------------------------------
    def set_source(self, text: str, name: str = "typed text") -> bool:
        """Samples come from `text` from now on (its characters are checked per window, when used)."""
        self.source_text, self.source_name = text, name
        self._explore_changed()
        return True

    def load_source(self, path: str | Path) -> bool:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            self.notices.say(f"Cannot read {path}: {exc}", is_error=True)
            return False
        return self.set_source(text, str(path))

    def window_offset(self, length: int, offset: int | None, seed: int) -> int:
        """The window's start: `offset` clamped to the text, or a seeded random one when None."""
        n = len(self.source_text)
        top = max(0, n - length)
        if offset is None:
            return int(np.random.default_rng(seed).integers(0, top + 1))
        return int(min(max(0, offset), top))

    # -- single sample ------------------------------------------------------------------------
    def run_sample(
        self, settings: CorruptionSettings, models: list[tuple[str | None, str | None]], length: int,
        offset: int | None = None,
    ) -> bool:
        """Corrupt one window of the source and ask the worker for each model's prediction."""
        if not self._explore_ready(models):
            return False
        length = min(length, self.runs.model_info.block_size)
        text = self.source_text
        start = self.window_offset(length, offset, settings.seed)
        window = text[start : start + length]
        if not window:
            self.notices.say("The text is empty: pick a file or type some text.", is_error=True)
            return False
        try:
            settings.validate()
            vocab = self.runs.model_info.vocab()
            target = vocab.encode(window)
            choices = np.setdiff1d(np.arange(vocab.size), np.asarray(vocab.never_sample, dtype=np.int64))
            source = vocab.encode(text) if settings.strategy in ("fragment", "mix") and len(text) < 200_000 else target
            corruption = corrupt(target, settings, vocab.mask_id, choices, source=source)
        except ValueError as exc:
            self.notices.say(str(exc), is_error=True)
            return False
        job = self._next_job()
        if not self._send_explore(ExploreSample(job, list(models), corruption.ids, target, EXPLORE_TOP_K, self.runs.device)):
            return False
        self.sample = ExploredSample(job, start, target, corruption, settings, list(models))
        self.error = ""
        self._explore_changed()
        return True

    # -- batch ----------------------------------------------------------------------------------
    def run_batch(
        self, settings: CorruptionSettings, models: list[tuple[str | None, str | None]], ratios: list[float],
        samples: int, length: int, seed: int = 0, held_out: bool = True,
    ) -> bool:
        if self.batch is not None and self.batch.is_running:
            self.notices.say("A batch is running: Stop it first.", is_error=True)
            return False
        if not self._explore_ready(models):
            return False
        if not ratios or any(not 0.0 < r <= 1.0 for r in ratios) or samples < 1:
            self.notices.say("Ratios must be in (0, 1] and samples at least 1.", is_error=True)
            return False
        job = self._next_job()
        if not self._send_explore(ExploreBatch(job, list(models), self.source_text, list(ratios), settings.to_dict(),
                                               samples, length, seed, held_out, self.runs.device)):
            return False
        self.batch = BatchJob(job, list(models), list(ratios))
        self.error = ""
        self._explore_changed()
        self.notices.say(f"Exploring {samples} samples x {len(ratios)} ratios x {len(models)} models...")
        return True

    def stop_batch(self) -> None:
        batch = self.batch
        if batch is not None and batch.is_running and self.runs.source is not None:
            self._send_explore(StopExplore(batch.job_id))
            batch.message = "stopping..."
            self._explore_changed()

    def batch_fraction(self) -> float:
        batch = self.batch
        if batch is None:
            return 0.0
        if not batch.is_running:
            return 1.0 if not batch.is_stopped else batch.done / max(1, batch.total)
        return batch.done / batch.total if batch.total else 0.0

    def export_batch_csv(self, path: str | Path) -> bool:
        batch = self.batch
        if batch is None or not batch.rows:
            self.notices.say("Nothing to export: run a batch first.", is_error=True)
            return False
        try:
            with open(path, "w", newline="", encoding="utf-8") as f:
                writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
                writer.writeheader()
                writer.writerows(batch.rows)
        except OSError as exc:
            self.notices.say(f"Cannot write {path}: {exc}", is_error=True)
            return False
        self.notices.say(f"Exported {len(batch.rows)} rows to {path}.")
        return True

    # -- generate from here -----------------------------------------------------------------
    def generate_from_sample(self, settings: GenerationSettings) -> bool:
        """Start a generation run from the corrupted sample: its masks are the run's masks, replaced
        text stays as text (the strategy may remask it); a new root branch, with the schedule
        starting at the sample's masked share."""
        sample = self.sample
        if sample is None:
            self.notices.say("Run a sample first.", is_error=True)
            return False
        if not self.runs.has_model():
            return False
        info = self.runs.model_info
        tokens = sample.corruption.ids.astype(np.int64)
        n = len(tokens)
        masked = float(sample.corruption.is_masked.mean())
        start_ratio = max(masked, min(settings.end_ratio, masked))
        settings = dataclasses.replace(  # the sample is the start: no prompt from the settings panel
            settings, length=n, block_length=0, start_ratio=start_ratio, end_ratio=min(settings.end_ratio, start_ratio),
            prompt="", template=False, chat=False,
        ).validate(info.block_size)
        from dpgviz.ipc.client import run_layout

        layout = run_layout(settings, info)
        store = self.doc.store
        if store is None or store.layout != layout:
            store = self.doc.new_store(layout, info.vocab())
        branch = store.new_branch(
            settings.to_dict(), label=f"repair of {sample.settings.strategy} {sample.settings.ratio:.0%} @ {sample.offset}"
        )
        return self.runs.launch(settings, branch.id, tokens=tokens)

    # -- worker events -------------------------------------------------------------------------
    def handle(self, event: object) -> bool:
        """Take an explorer event; False for any other event."""
        if isinstance(event, ExploreSampleDone):
            sample = self.sample
            if sample is None or sample.job_id != event.job_id:
                return True  # an answer to a sample since replaced
            sample.names, sample.predictions = list(event.names), list(event.predictions)
            sample.metrics = [
                repair_metrics(p["log_p_true"], p["predicted"], sample.target, sample.corruption.is_corrupted)
                for p in sample.predictions
            ]
            self._explore_changed()
        elif isinstance(event, ExploreProgress):
            batch = self.batch
            if batch is not None and batch.job_id == event.job_id:
                if event.total:
                    batch.done, batch.total = event.done, event.total
                batch.message = event.message or f"{event.done} / {event.total} forward passes"
                self._explore_changed()
            elif event.message:
                self.notices.say(event.message.capitalize() + "...")
        elif isinstance(event, ExploreBatchDone):
            batch = self.batch
            if batch is None or batch.job_id != event.job_id:
                return True
            batch.rows, batch.is_running, batch.is_stopped = list(event.rows), False, event.is_stopped
            batch.elapsed_s = event.elapsed_s
            batch.message = ("stopped: " if event.is_stopped else "done: ") + f"{len(event.rows)} rows in {event.elapsed_s:.1f} s"
            self._explore_changed()
            self.notices.say(f"Explore batch {batch.message}.")
        elif isinstance(event, ExploreFailed):
            log.warning("explore job %d failed: %s\n%s", event.job_id, event.message, event.traceback)
            batch = self.batch
            if batch is not None and batch.job_id == event.job_id:
                batch.is_running, batch.message = False, f"failed: {event.message}"
            self.error = event.message
            self._explore_changed()
            self.notices.say(event.message, is_error=True)
        else:
            return False
        return True

    # -- helpers -------------------------------------------------------------------------------
    def _explore_ready(self, models: list) -> bool:
        if not self.runs.has_model():
            return False
        if not models:
            self.notices.say("Tick at least one model to explore.", is_error=True)
            return False
        if not self.source_text:
            self.notices.say("Pick a text file or type some text first.", is_error=True)
            return False
        return True

    def _send_explore(self, command: Command) -> bool:
        """Send an explorer command to the source; False (and a message) when it is gone."""
        return self.runs.send(command)

    def _next_job(self) -> int:
        job = self.next_job
        self.next_job += 1
        return job
