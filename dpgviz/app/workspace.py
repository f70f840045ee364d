"""The app's state without a window: its parts, put together, and the frame loop's side.

    RunSource.poll -> StepStore  (the records of every branch)
    Workspace.update(dt): poll the source, hand each event to the part it concerns,
                          finish background jobs, keep the view inside what is shown
    Workspace.take_notices() -> what happened, for the window to show

The workspace holds parts; each owns its state and is handed, explicitly, what it uses:

    ws.doc       Document: the store, vocabulary, session file and view (what is shown)
    ws.runs      Runs: the run source (app.source), the model, the run in progress
    ws.edits     Edits: edit the step shown, restart it, rename and delete branches
    ws.compare   Compare: two branches side by side, strategy comparisons
    ws.inspect   Inspection: the record as drawn, token info, re-sample previews
    ws.find      Find: find text in the record shown, go to a position
    ws.explore   Explorer: the model explorer (corrupt text, see what models repair)
    ws.jobs      Jobs: saves and exports on a background thread
    ws.live      LiveRuns: runs a dpgviz.Recorder streams in (--listen-runs, app.live)
    ws.files     Files: open, save, export
    ws.models    ModelTools: compare models, score a branch with another model, verify a branch
    ws.recovery  Recovery: the journal of unsaved work, and a dead process's offered back (or None)
    ws.notices   Notices: what every part reports, drained by the window once a frame

No part reads another's private attributes; parts that act on another are handed it
(`Edits(doc, runs, compare, notices)`). The workspace never calls the UI. Tests drive it
without a window:

    ws = Workspace(); ws.runs.load_model(entry); ws.update(dt) ...; ws.runs.start(settings)

Imports numpy, dpgviz.core/ipc/store and app/; never dearpygui, torch, dpgviz.engine or
dpgviz.gui (the worker process owns the model; tests/test_layering.py checks).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from dpgviz.app.compare import Compare
from dpgviz.app.document import Document
from dpgviz.app.edits import Edits
from dpgviz.app.explore import Explorer
from dpgviz.app.files import Files
from dpgviz.app.find import Find
from dpgviz.app.inspect import Inspection
from dpgviz.app.jobs import Jobs
from dpgviz.app.live import LiveRuns
from dpgviz.app.models import ModelTools
from dpgviz.app.notices import Notice, Notices
from dpgviz.app.recovery import Recovery
from dpgviz.app.runs import Runs
from dpgviz.app.source import RunSource
from dpgviz.app.view_state import ViewState
from dpgviz.core.model_info import ModelInfo
from dpgviz.core.vocab import Vocabulary
from dpgviz.store.step_store import StepStore

log = logging.getLogger(__name__)


class Workspace:
    """Everything the window shows and does, minus the window (see the module docstring)."""

    def __init__(
        self, *, device: str = "auto", dtype: str = "auto", source_factory: Callable[[], RunSource] | None = None,
        journal: Path | None = None,
    ) -> None:
        """`journal`: where unsaved work is journaled (the window passes core.paths.recovery_path());
        None journals nothing (tests, scripts)."""
        self.notices = Notices()
        self.doc = Document(self.notices)
        self.runs = Runs(self.doc, self.notices, source_factory, device=device, dtype=dtype)
        self.local_source = self.runs.source_factory  # this machine's worker: use_local_model goes back to it
        self.jobs = Jobs(self.notices)
        self.live = LiveRuns(self.doc, self.runs, self.notices)  # records a recorder streams in
        self.compare = Compare(self.doc, self.runs, self.notices)
        self.edits = Edits(self.doc, self.runs, self.compare, self.notices)
        self.inspect = Inspection(self.doc, self.runs, self.notices)
        self.find = Find(self.doc, self.inspect, self.notices)  # Ctrl+F / Ctrl+G (app.find)
        self.explore = Explorer(self.doc, self.runs, self.notices)
        self.files = Files(self.doc, self.runs, self.jobs, self.compare, self.notices)
        self.models = ModelTools(self.doc, self.runs, self.jobs, self.files, self.notices)
        self.recovery = (
            Recovery(self.doc, self.runs, self.files, self.notices, journal) if journal is not None else None
        )

    # -- what is shown (the document's, for the many readers) ----------------------------------
    @property
    def view(self) -> ViewState:
        return self.doc.view

    @property
    def store(self) -> StepStore | None:
        return self.doc.store

    @property
    def vocab(self) -> Vocabulary | None:
        return self.doc.vocab

    @property
    def model_info(self) -> ModelInfo | None:
        return self.runs.model_info

    @property
    def is_running(self) -> bool:
        return self.runs.is_running

    def rows(self, branch: str | None = None) -> np.ndarray:
        return self.doc.rows(branch)

    def n_records(self) -> int:
        return self.doc.n_records()

    def current_row(self) -> int | None:
        return self.doc.current_row()

    def select_branch(self, branch: str) -> None:
        """Show `branch` at its last record, following it when the run in progress is its."""
        self.doc.select_branch(branch, self.runs.live_branch)

    def say(self, text: str, is_error: bool = False) -> None:
        self.notices.say(text, is_error)

    def take_notices(self) -> list[Notice]:
        """What happened since the last call, oldest first."""
        return self.notices.take()

    def progress(self) -> tuple[float, str]:
        """(fraction, label) for the status bar: a job, the run, loading, or idle."""
        job = self.jobs.job
        if job is not None:
            return job.progress.fraction(), job.progress.label
        return self.runs.progress() or ((1.0 if self.doc.n_records() else 0.0), "idle")

    def use_local_model(self) -> bool:
        """Back to this machine's worker with the default model (after a Connect to a worker elsewhere
        that failed, or to leave one); the records shown stay."""
        from dpgviz.core.discovery import default_model_entry

        if not self.runs.use_source(self.local_source, "the local worker"):
            return False
        self.runs.load_model(default_model_entry())
        return True

    # -- the frame loop's side -------------------------------------------------------------
    def update(self, dt_s: float) -> None:
        """Once a frame: poll the source into the store, finish jobs, keep the view in range, advance playback."""
        self.live.update()  # a recorder's records (app.live): what arrived since the last frame
        for event in self.runs.poll():
            self.handle_event(event)
        self.jobs.poll()
        self.files.poll()
        self.doc.settle()
        self.compare.settle()
        self.inspect.settle()
        self.doc.view.advance(self.doc.n_records(), dt_s)
        if self.recovery is not None:
            self.recovery.sync()  # hands over what changed; the journal writes on its own thread

    def handle_event(self, event: object) -> None:
        """One event from the source, to the part it concerns."""
        if self.explore.handle(event):
            return
        outcome = self.runs.handle(event)
        if outcome is not None:
            if self.recovery is not None:
                self.recovery.run_ended()  # at the end of each run, on disk at once
            self.compare.run_ended(outcome)

    def wait_for_job(self, timeout_s: float = 60.0) -> None:
        """Block until the job in progress and a model check end, and their messages are queued (tests, closing)."""
        self.jobs.wait(timeout_s)
        self.files.wait(timeout_s)
        self.jobs.poll()
        self.files.poll()

    # -- lifetime ----------------------------------------------------------------------------
    def close(self) -> None:
        """Let a running save or export finish (its file is written atomically), stop the worker;
        a normal close clears the recovery journal."""
        self.models.close()  # a compare, score or verify command still running ends here
        self.live.close()
        self.jobs.close()
        if self.recovery is not None:
            self.recovery.close()
        self.runs.close()
        self.doc.store = None
        self.doc.close_session()

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
