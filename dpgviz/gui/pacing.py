"""Frame pacing: render while something moves, sleep until input or a worker event when idle.

Dear PyGui renders every frame as fast as it can; under Xvfb with Mesa's software OpenGL
an idle window costs about 1.5 cores (NOTES-dpg.md), on a laptop a fan and a battery.
`configure_app(wait_for_input=True)` makes `render_dearpygui_frame` block in glfwWaitEvents
until input, but nothing else wakes it (DearPyGui issues #1832, #1525). So:

    busy  (playback, a save, the frames just after input or a redraw)
          -> wait_for_input off, frames capped at MAX_FPS
    idle  -> wait_for_input on; a waker thread calls GLFW's glfwPostEmptyEvent (documented
          thread-safe) when the worker's pipe turns readable, and every HEARTBEAT_S anyway,
          so a worker event or its death is seen at once and the loop never sleeps for good.

A run in progress is not "busy": the loop wakes when a record arrives, draws it, and
sleeps again, so the window does not take a core from the worker to redraw a picture
that has not changed (on this 2-core machine a free-running window made a 1024-token
run 1.4x slower than the same worker without a window).

Input reaches the app's callbacks one frame after the frame that saw it (the render call
reads input, the next update runs the callbacks), and ImGui feeds queued input one event
per frame (a click's press and release land in two frames). So a frame woken by input
rather than by the waker keeps the loop busy for LINGER_S: the click completes, its change
is drawn, the tooltip follows the mouse, a zoom settles.
glfwPostEmptyEvent comes from the dearpygui extension module itself (GLFW is linked into
it and exports its symbols); where it cannot be found, idle frames are paced by sleeping
instead (IDLE_FPS), which is cheaper than free-running but not free.

dearpygui, ctypes and the standard library; no torch.
"""

from __future__ import annotations

import ctypes
import logging
import select
import threading
import time
from collections.abc import Callable

import dearpygui.dearpygui as dpg

log = logging.getLogger(__name__)

MAX_FPS = 60  # while busy: no point drawing faster than a display
IDLE_FPS = 4  # idle frames where the loop cannot sleep until input
HEARTBEAT_S = 2.0  # idle: wake this often anyway (a slow heartbeat: a dead worker is seen within it)
LINGER_S = 0.25  # stay busy this long after input


def _post_empty_event() -> Callable[[], None] | None:
    """GLFW's glfwPostEmptyEvent from the dearpygui extension, or None where it is not exported."""
    try:
        import dearpygui._dearpygui as ext

        fn = ctypes.CDLL(ext.__file__).glfwPostEmptyEvent
    except (OSError, AttributeError) as exc:
        log.info("glfwPostEmptyEvent not available (%s): idle frames are paced by sleeping", exc)
        return None
    fn.restype, fn.argtypes = None, []
    return fn


class FramePacer:
    """Decides, frame by frame, whether the loop may sleep until input, and wakes it when needed."""

    def __init__(self, wait_fds: Callable[[], tuple[int, ...]] = tuple) -> None:
        self.wait_fds = wait_fds  # fds that mean "the worker has something" (WorkerClient.wait_fds)
        self.is_waiting = False  # wait_for_input is on: the next render sleeps until an event
        self.idle_frames = 0  # frames rendered while idle (tests, benchmarks)
        self._post = _post_empty_event()
        self._busy_until = 0.0
        self._owed = 0  # frames to render before waiting again (see owe)
        self._waker_posted = False  # the waker, not input, ended the last wait
        self._last_frame = time.perf_counter()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def can_sleep(self) -> bool:
        return self._post is not None

    def start(self) -> None:
        if self._post is not None and self._thread is None:
            self._thread = threading.Thread(target=self._wake_loop, name="dpgviz-waker", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._post is not None:
            self._post()  # a loop asleep in glfwWaitEvents returns
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None

    def touch(self) -> None:
        """Input happened: keep rendering for LINGER_S."""
        self._busy_until = time.perf_counter() + LINGER_S

    def owe(self, frames: int = 2) -> None:
        """Render at least `frames` more frames without waiting (a change that needs to settle)."""
        self._owed = max(self._owed, int(frames))

    def before_render(self, is_busy: bool) -> None:
        """Call just before render_dearpygui_frame: set wait_for_input, cap the frame rate."""
        now = time.perf_counter()
        idle = not is_busy and now >= self._busy_until and self._owed <= 0
        self._owed -= 1
        if idle and not self.can_sleep:  # no way to be woken: sleep a paced interval instead
            time.sleep(max(0.0, 1.0 / IDLE_FPS - (now - self._last_frame)))
        elif not idle:
            time.sleep(max(0.0, 1.0 / MAX_FPS - (now - self._last_frame)))
        should_wait = idle and self.can_sleep
        if should_wait != self.is_waiting:
            log.debug("wait for input: %s", should_wait)
            dpg.configure_app(wait_for_input=should_wait)
            self.is_waiting = should_wait
        if idle:
            self.idle_frames += 1
        self._last_frame = time.perf_counter()

    def after_render(self) -> None:
        """Call just after render_dearpygui_frame: a wait that input ended makes the loop busy."""
        if self.is_waiting and not self._waker_posted:
            log.debug("woken by input: busy for %.2f s", LINGER_S)
            self.touch()
        self._waker_posted = False

    def _wake_loop(self) -> None:
        """Waker thread: while the loop waits for input, post an empty event when the worker
        has something, or every HEARTBEAT_S."""
        while not self._stop.is_set():
            if not self.is_waiting:
                self._stop.wait(0.02)
                continue
            fds = self.wait_fds()
            if fds:
                poller = select.poll()
                for fd in fds:
                    poller.register(fd, select.POLLIN)
                ready = poller.poll(HEARTBEAT_S * 1000)
            else:
                ready = []
                self._stop.wait(HEARTBEAT_S)
            if self._stop.is_set():
                break
            self._waker_posted = True
            self._post()
            if ready:  # the loop reads it on its next frame; do not spin on the same data
                self._stop.wait(0.05)
