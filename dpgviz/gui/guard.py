"""The frame loop's boundaries: an exception in a panel, a callback, a key or a notice stops there.

    guard = Guard(say, log_path)
    guard.call("Inspector", panel.refresh, reset=...)   # what it returns, or None if it raised
    guard.run_callbacks(dpg.get_callback_queue())       # each callback inside the boundary

A bug in one panel must not close the window and lose every record not yet saved. At a
boundary the exception is logged with its traceback (the log file, `app.logfile`), said in
one line in the status bar ("Inspector failed: IndexError ...; details in LOG"), and the
part is reset to its empty state (`reset`). A part that fails MAX_FAILURES times in a row
is disabled (not called, said once), so a bug that fires every frame costs a few frames,
not the CPU forever. A success clears the count.

A disabled part comes back when what it shows changes: the frame loop hands
`revive_on_change` the run, the record and the layout each frame, and when one differs
from the last frame's the disabled parts are tried again, with a line in the status bar.
A bug tied to one record or one layout then costs that record, not the session.

Log lines of caught exceptions start with BOUNDARY_TAG, so soak runs can count them
(bench.soak). dearpygui only through the callback queue's tuples; no dpgviz.engine, no torch.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

log = logging.getLogger(__name__)

BOUNDARY_TAG = "[boundary]"
MAX_FAILURES = 3  # failures in a row before a part is disabled

T = TypeVar("T")


class Guard:
    """Catches, logs, reports and resets at the frame loop's boundaries (see the module docstring)."""

    def __init__(self, say: Callable[[str, bool], None], log_path: Path | str | None = None) -> None:
        self.say = say
        self.log_path = str(log_path) if log_path else "the log"
        self.failures: dict[str, int] = {}  # part -> failures in a row
        self.disabled: set[str] = set()
        self.caught = 0  # exceptions caught since start (tests, soak)
        self.revived = 0  # times disabled parts were brought back (tests, soak)
        self._watched: dict[str, object] = {}  # what revive_on_change saw last frame

    def call(
        self, name: str, fn: Callable[..., T], *args: object, reset: Callable[[], None] | None = None,
        can_disable: bool = True,
    ) -> T | None:
        """`fn(*args)` inside the boundary named `name`; None when it raised or `name` is disabled.
        `can_disable=False` for what runs only on input (a callback): it is never switched off."""
        if name in self.disabled:
            return None
        try:
            result = fn(*args)
        except Exception as exc:  # the boundary: anything a bug raises, never BaseException (Ctrl+C, exit)
            self._failed(name, exc, reset, can_disable)
            return None
        if self.failures.get(name):
            self.failures[name] = 0
        return result

    def revive_on_change(self, **watched: object) -> list[str]:
        """Bring the disabled parts back when a watched value (run=, record=, layout=: plain,
        comparable values) differs from the last call's; returns the parts brought back."""
        changed = [name for name, value in watched.items() if name in self._watched and self._watched[name] != value]
        self._watched = watched
        if not changed or not self.disabled:
            return []
        parts = sorted(self.disabled)
        self.disabled.clear()
        for name in parts:
            self.failures[name] = 0
        self.revived += 1
        what = " and ".join(changed)
        log.info("back on after the %s changed: %s", what, ", ".join(parts))  # no BOUNDARY_TAG: soak counts those as catches
        self.say(f"{', '.join(parts)} back on (the {what} changed); if it fails again, details in {self.log_path}", False)
        return parts

    def run_callbacks(self, jobs: list | None) -> None:
        """Dear PyGui's queued callbacks (as dpg.run_callbacks runs them), each inside its own boundary."""
        for job in jobs or ():
            callback = job[0]
            if callback is None:
                continue
            try:
                n_args = len(inspect.signature(callback).parameters)
            except (TypeError, ValueError):
                n_args = 0
            name = f"callback {getattr(callback, '__qualname__', callback)!s}"
            self.call(name, callback, *job[1 : 1 + n_args], can_disable=False)

    def _failed(self, name: str, exc: Exception, reset: Callable[[], None] | None, can_disable: bool) -> None:
        self.caught += 1
        count = self.failures.get(name, 0) + 1
        self.failures[name] = count
        log.error("%s %s failed (%d in a row)", BOUNDARY_TAG, name, count, exc_info=exc)
        what = f"{type(exc).__name__}: {exc}".splitlines()[0][:160]
        if reset is not None:
            try:
                reset()
            except Exception:  # a reset that fails too: the part is disabled below
                log.exception("%s resetting %s failed", BOUNDARY_TAG, name)
                count = self.failures[name] = MAX_FAILURES
        if can_disable and count >= MAX_FAILURES:
            self.disabled.add(name)
            self.say(f"{name} failed {count} times in a row and is off until the run, record or layout changes: {what}; "
                     f"details in {self.log_path}", True)
        else:
            self.say(f"{name} failed: {what}; details in {self.log_path}", True)
