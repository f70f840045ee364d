"""Background jobs: saves, exports and checkpoint hashes on one thread, so the frame loop never waits.

    jobs.start(label, work, on_done)   work(progress) runs on the job thread; on_done(result)
                                       runs on the frame thread and returns the message
    jobs.submit(fn)                    a plain Future on the same thread (a model check)
    jobs.poll()                        once a frame: finish the job that ended, say how it went

One job at a time (`is_free` says why not). A job reads a snapshot taken on the frame
thread (store.StepStore.view: rows are never rewritten and growing copies into new
arrays, so a live run may keep appending meanwhile).

stdlib only; no dearpygui, no torch.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from dpgviz.app.notices import Notices
from dpgviz.store.session import Progress, SessionError

log = logging.getLogger(__name__)


@dataclass
class JobProgress:
    """How far a background job got: written by its thread, read by the frame loop."""

    label: str
    done: int = 0
    total: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def report(self, done: int, total: int) -> None:
        """The job's `progress(done, total)` callback."""
        with self._lock:
            self.done, self.total = int(done), int(total)

    def read(self) -> tuple[int, int]:
        with self._lock:
            return self.done, self.total

    def fraction(self) -> float:
        done, total = self.read()
        return done / total if total > 0 else 0.0


@dataclass
class Job:
    progress: JobProgress
    future: Future
    on_done: Callable[[object], str]  # runs on the frame thread with the job's result; returns the message


class Jobs:
    """The job thread and the job in progress (see the module docstring)."""

    def __init__(self, notices: Notices) -> None:
        self.notices = notices
        self.job: Job | None = None  # the save or export in progress
        self.finished: JobProgress | None = None  # the last job's final progress
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dpgviz-jobs")

    def is_free(self) -> bool:
        """No job in progress; otherwise says to wait."""
        if self.job is not None:
            self.notices.say(f"Wait for {self.job.progress.label} to finish.", is_error=True)
            return False
        return True

    def start(self, label: str, work: Callable[[Progress], object], on_done: Callable[[object], str]) -> None:
        progress = JobProgress(label)
        self.job = Job(progress, self._pool.submit(work, progress.report), on_done)
        self.notices.say(f"{label.capitalize()}...")

    def submit(self, fn: Callable[[], object]) -> Future:
        """Run `fn` on the job thread (after the job in progress); its Future is the caller's to poll."""
        return self._pool.submit(fn)

    def poll(self) -> None:
        """Once a frame: if the job ended, say how (its message, or why it failed)."""
        job = self.job
        if job is None or not job.future.done():
            return
        self.job, self.finished = None, job.progress
        exc = job.future.exception()
        label = job.progress.label.capitalize()
        if exc is None:
            self.notices.say(job.on_done(job.future.result()))
        elif isinstance(exc, (SessionError, OSError, ValueError)):
            self.notices.say(f"{label} failed: {exc}", is_error=True)
        else:  # a bug, not a user error: keep the traceback in the log
            log.error("%s failed", job.progress.label, exc_info=exc)
            self.notices.say(f"{label} failed: {type(exc).__name__}: {exc}", is_error=True)

    def wait(self, timeout_s: float = 60.0) -> None:
        """Block until the job in progress ends (tests, closing)."""
        if self.job is not None:
            self.job.future.exception(timeout=timeout_s)

    def close(self) -> None:
        """Let a running save or export finish (its file is written atomically); drop what waits."""
        self._pool.shutdown(wait=True, cancel_futures=True)
