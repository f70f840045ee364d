"""`python main.py bench soak`: seeded random input on the real window, then a health report.

    python main.py bench soak --seconds 80 --seed 1,2,3 [--actions N] [--screenshot out.png]

`soak(seed, seconds)` starts a private virtual screen (Xvfb, with openbox as window
manager so the window closes the way a user's click closes it: see NOTES-dpg.md), opens
the app there (`python main.py`, its output to a log file), waits for the window and
the model, then sends seeded random input through xdotool until the time or the action
count runs out:

    left clicks, shift+clicks, right clicks, drags, wheel (plain and with ctrl), and the
    app's keys (KEYS), each followed by a short seeded pause

The same seed gives the same sequence of actions; what the app does with them still
depends on timing (frames, the worker), so a crash found with a seed may need a rerun or
two to come back. Several actions go to one xdotool call (it chains commands), so the
rate is set by the pauses, not by process starts. Between batches the harness notes the
/dev/shm entries that the app's processes map; every `CHECK_EVERY` actions it checks the
app still answers (process alive and its window still there).

At the end it takes an optional screenshot, closes the window through the window manager,
waits for the app to exit (killing it after `CLOSE_WAIT_S`), and reports in a `SoakResult`:
actions, alive at the end, exit status, tracebacks that reached the top (the app's
stdout/stderr; a traceback right after a line with "[boundary]" was caught and logged,
and is counted with those instead), exceptions caught at boundaries (lines with
"[boundary]" in the app's log `dpgviz.log` in DPGVIZ_CACHE_DIR, or in its output where
that file is absent), leak warnings of
multiprocessing's resource tracker, and /dev/shm entries left behind. Other processes on
the machine may create shared memory at the same time, so an entry counts as the app's
only when it is new, named like dpgviz's or multiprocessing's (SHM_PATTERNS) and was seen
mapped or open by one of the app's processes; other new entries of those names are listed
apart.

The app runs in a scratch folder (its working directory, its cache dir and its log), so a
random click on a file dialog's OK cannot write into the checkout: give paths in
`app_args` absolute. Every wait is bounded, and the screen, the window manager and any
process of the app still running are ended in a `finally`.

Needs: Xvfb, openbox, xdotool, wmctrl (Debian: xvfb openbox xdotool wmctrl); for
screenshots also xwd (x11-apps) and ImageMagick. Imports neither dearpygui nor torch: it
drives the app from outside, as a user would.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import random
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["KEYS", "SHM_PATTERNS", "SoakResult", "main", "missing_tools", "soak"]

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]  # the checkout: main.py lives here
SCREEN_PX = (1600, 1000)  # as the other GUI tools; the app's 1440x900 window under openbox's title bar ends
#                          ~20 px below it, so input is kept to the visible part (_geometry)
SCREEN = f"{SCREEN_PX[0]}x{SCREEN_PX[1]}x24"
EDGE_PX = 4  # input lands this far inside the window: a press on its last pixel row or column reaches the
#              window manager's frame, and a drag from there moves or resizes the window (seen with openbox)
TOOLS = ("Xvfb", "openbox", "xdotool", "wmctrl")
WINDOW_NAME = "^dpgviz"  # the viewport's title starts with this (gui.app.TITLE)
# The app's keys (gui.keys.SHORTCUTS and the menus), plus keys it should ignore. ctrl+o and
# ctrl+s are left out: they open file dialogs that would eat most of the following input.
KEYS = (
    "m", "u", "p", "shift+p", "ctrl+r", "Return", "Escape", "space", "Left", "Right", "Home", "End",
    "ctrl+Return", "i", "1", "2", "3", "8", "ctrl+a", "shift+Left", "shift+Right", "Tab", "a", "b", "z",
    "BackSpace", "Delete", "Up", "Down", "Page_Up", "Page_Down", "ctrl+z", "F1", "ctrl+f", "ctrl+g", "F3",
)  # fmt: skip
# (kind, weight): about the mix of gui-monkey (2 clicks : 1 right : 1 drag : 1 wheel : 2 keys).
ACTIONS = (("click", 2.0), ("shift_click", 0.3), ("right_click", 1.0), ("drag", 1.0),
           ("wheel", 1.0), ("ctrl_wheel", 0.3), ("key", 2.0))  # fmt: skip
SHM_PATTERNS = ("dpgviz*", "psm_*", "sem.mp-*")  # the ring's prefix, SharedMemory's default names, mp's semaphores
BATCH = 10  # actions per xdotool call; ~0.5 s of input, so the deadline is kept to about that
CHECK_EVERY = 50  # actions between two "does the app still answer" checks
PAUSE_S = (0.0, 0.08)  # seeded pause after each action (gui-monkey's 0.0x s)
CLICK = ("click", "--delay", "20")  # xdotool sleeps --delay (default 100 ms) after every click, even a single one
DRAG_STEP_S = 0.04  # between the points of a drag: at 20-50 ms a frame under Xvfb, the app sees the motion
WINDOW_WAIT_S = 60.0  # python start + dearpygui import + viewport; seconds under load on 2 cores
LOAD_WAIT_S = 5.0  # the default model loads in 2-3 s after the window appears (NOTES-dpg.md)
CLOSE_WAIT_S = 10.0  # from the window manager's close to the app's exit
CALL_TIMEOUT_S = 30.0  # any one X tool call
TRACKER_LEAK = re.compile(r"resource_tracker: There appear to be (\d+) leaked")
FIRST_TRACEBACK_LINES = 60


@dataclass
class SoakResult:
    """What one soak saw. `ok`: alive to the end, no traceback, exit 0, no shared memory left."""

    seed: int
    actions: int = 0
    seconds: float = 0.0
    alive_at_end: bool = False
    died_after: int | None = None  # actions sent when the app was found dead or without its window
    exit_code: int | None = None
    was_killed: bool = False  # still running CLOSE_WAIT_S after the window was closed
    tracebacks: int = 0  # that reached the top: printed, not caught and logged at a boundary
    first_traceback: str = ""
    boundary_exceptions: int = 0
    first_boundary: str = ""  # the first caught exception's log line and traceback (a catch is a bug too)
    tracker_leaks: int = 0  # objects multiprocessing's resource tracker had to clean up for the app
    shm_left: list[str] = field(default_factory=list)  # the app's, still in /dev/shm after it exited
    shm_other: list[str] = field(default_factory=list)  # new, named alike, never seen mapped by the app
    error: str = ""  # the harness could not run (no screen, no window); the rest is then partial
    app_log: Path | None = None
    screenshot: Path | None = None

    @property
    def ok(self) -> bool:
        return (
            not self.error
            and self.alive_at_end
            and self.tracebacks == 0
            and self.exit_code == 0
            and not self.shm_left
            and self.tracker_leaks == 0
        )

    def summary(self) -> str:
        """One line: "seed 3: 612 actions in 40.1 s, alive at end, 0 tracebacks, ..."."""
        if self.error:
            return f"seed {self.seed}: {self.error} (app output: {self.app_log})"
        alive = "alive at end" if self.alive_at_end else f"DIED after about {self.died_after} actions"
        parts = [
            f"seed {self.seed}: {self.actions} actions in {self.seconds:.1f} s",
            alive,
            f"{self.tracebacks} tracebacks",
            f"{self.boundary_exceptions} exceptions caught at boundaries",
            f"exit {self.exit_code}" + (" (killed: still running after its window closed)" if self.was_killed else ""),
            f"shm left {len(self.shm_left)}" + (f" {' '.join(self.shm_left)}" if self.shm_left else ""),
        ]
        if self.tracker_leaks:
            parts.append(f"{self.tracker_leaks} leaked objects cleaned up by the resource tracker")
        if self.shm_other:
            parts.append(f"{len(self.shm_other)} other new shm entries, not seen mapped by the app")
        line = ", ".join(parts)
        return line if self.ok else f"{line} (app output: {self.app_log})"


def missing_tools() -> list[str]:
    """The X tools `soak` needs that are not on PATH."""
    return [tool for tool in TOOLS if shutil.which(tool) is None]


# -- the private screen --------------------------------------------------------------------


def _start_xvfb() -> tuple[subprocess.Popen, str]:
    """A private Xvfb on a free display :N, N in 100..899 as the shell tools pick theirs.

    Display numbers whose lock file exists are skipped; Xvfb itself refuses one taken
    meanwhile (it exits), and then another is tried. Xvfb writes the number to -displayfd
    once it accepts connections, so no polling is needed."""
    pick = random.SystemRandom()  # not the soak's seeded generator: two harnesses must not agree
    for _ in range(10):
        number = pick.randrange(100, 900)
        if Path(f"/tmp/.X{number}-lock").exists() or Path(f"/tmp/.X11-unix/X{number}").exists():
            continue
        read_fd, write_fd = os.pipe()
        try:
            proc = subprocess.Popen(
                ["Xvfb", f":{number}", "-displayfd", str(write_fd), "-screen", "0", SCREEN, "-nolisten", "tcp"],
                pass_fds=(write_fd,),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            os.close(write_fd)
        try:
            if _read_line(read_fd, 15.0).strip() == str(number).encode():
                return proc, f":{number}"
        finally:
            os.close(read_fd)
        _end(proc)
    raise RuntimeError("Xvfb did not start on any of 10 display numbers")


def _read_line(fd: int, timeout_s: float) -> bytes:
    """What a child writes to `fd` up to its first newline, its exit (EOF) or the timeout."""
    text = b""
    deadline = time.monotonic() + timeout_s
    while not text.endswith(b"\n") and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            chunk = os.read(fd, 64)
            if not chunk:
                break
            text += chunk
    return text


def _x(display: str, *args: str, timeout: float = CALL_TIMEOUT_S) -> subprocess.CompletedProcess:
    """Run an X tool on `display`; never raises for a non-zero exit or a timeout (returncode -1)."""
    env = {**os.environ, "DISPLAY": display}
    try:
        return subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        log.warning("%s took over %.0f s", args[0], timeout)
        return subprocess.CompletedProcess(args, -1, "", "timeout")


def _start_wm(display: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        ["openbox"],
        env={**os.environ, "DISPLAY": display},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    for _ in range(100):  # up to ~10 s for openbox to take the screen
        if _x(display, "wmctrl", "-m", timeout=5).returncode == 0 or proc.poll() is not None:
            break
        time.sleep(0.1)
    return proc


def _end(proc: subprocess.Popen | None, wait_s: float = 5.0) -> None:
    """Terminate a process this module started, then kill it if it lingers."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(wait_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5.0)


# -- the app's processes and what they map ---------------------------------------------------


def _group_pids(pgid: int) -> list[int]:
    """Processes in the app's process group: the app, its worker, multiprocessing's resource tracker."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()  # after "pid (comm) ": state ppid pgrp ...
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
            pids.append(int(entry.name))
    return pids


def _mapped_shm(pgid: int) -> set[str]:
    """/dev/shm names the app's processes map (ring, semaphores) or hold open (SharedMemory's fd)."""
    names: set[str] = set()
    for pid in _group_pids(pgid):
        try:
            for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
                at = line.find("/dev/shm/")
                if at >= 0:
                    names.add(line[at + 9 :].removesuffix(" (deleted)"))
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("/dev/shm/"):
                    names.add(target[9:].removesuffix(" (deleted)"))
        except OSError:  # the process ended meanwhile
            continue
    return names


def _shm_listing() -> set[str]:
    try:
        return set(os.listdir("/dev/shm"))
    except OSError:
        return set()


def _is_app_like(name: str) -> bool:
    return any(fnmatch.fnmatch(name, pattern) for pattern in SHM_PATTERNS)


def _end_group(pgid: int) -> None:
    """After the app: give the rest of its group (worker, resource tracker) a moment, then end it."""
    for _ in range(50):
        if not _group_pids(pgid):
            return
        time.sleep(0.1)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)  # the group this module created for the app
        except ProcessLookupError:
            return
        for _ in range(30):
            if not _group_pids(pgid):
                return
            time.sleep(0.1)


# -- reading the app's output ----------------------------------------------------------------


def _tracebacks(text: str) -> tuple[int, str, int]:
    """(tracebacks that reached the top, the first one's text, tracebacks logged at a boundary).

    A traceback whose previous non-blank line holds "[boundary]" was logged by the app's
    boundary handler; any other "Traceback (most recent call last)" or faulthandler's
    "Fatal Python error" reached the top."""
    lines = text.splitlines()
    count, caught, first = 0, 0, ""
    previous = ""
    for i, line in enumerate(lines):
        starts = line.startswith("Traceback (most recent call last)") or line.startswith("Fatal Python error")
        if starts and "[boundary]" in previous:
            caught += 1
        elif starts:
            count += 1
            if not first:
                first = _one_traceback(lines, i)
        if line.strip():
            previous = line
    return count, first, caught


def _one_traceback(lines: list[str], start: int) -> str:
    """The traceback starting at `start`, up to its exception line (the first unindented line
    after the frames), without the ^^^ marker lines."""
    out = [lines[start]]
    for line in lines[start + 1 : start + 1 + 4 * FIRST_TRACEBACK_LINES]:
        if line.strip() and set(line.strip()) <= set("^~"):
            continue
        out.append(line)
        if line and not line[0].isspace() and not line.startswith(("Traceback", "Current thread", "Thread 0x")):
            break
        if len(out) >= FIRST_TRACEBACK_LINES:
            break
    return "\n".join(out)


def _boundary_lines(path: Path, offset: int) -> tuple[int, str]:
    """Lines with "[boundary]" in the log from `offset` on, and the first of them with the
    lines after it (its traceback, up to FIRST_TRACEBACK_LINES)."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            lines = f.read().decode("utf-8", errors="replace").splitlines()
    except OSError:
        return 0, ""
    hits = [i for i, line in enumerate(lines) if "[boundary]" in line]
    first = "\n".join(lines[hits[0] : hits[0] + FIRST_TRACEBACK_LINES]) if hits else ""
    return len(hits), first


# -- input -----------------------------------------------------------------------------------


def _action(rng: random.Random, geometry: tuple[int, int, int, int]) -> list[str]:
    """One random action as xdotool chain arguments, followed by a seeded pause."""
    x0, y0, width, height = geometry

    def point() -> list[str]:
        return [str(x0 + rng.randrange(width)), str(y0 + rng.randrange(height))]

    kind = rng.choices([k for k, _ in ACTIONS], weights=[w for _, w in ACTIONS])[0]
    if kind == "click":
        args = ["mousemove", *point(), *CLICK, "1"]
    elif kind == "shift_click":
        args = ["mousemove", *point(), "keydown", "shift", *CLICK, "1", "keyup", "shift"]
    elif kind == "right_click":
        args = ["mousemove", *point(), *CLICK, "3"]
    elif kind == "drag":
        args = ["mousemove", *point(), "mousedown", "1"]
        for _ in range(rng.randint(1, 3)):
            args += ["sleep", f"{DRAG_STEP_S}", "mousemove", *point()]
        args += ["sleep", f"{DRAG_STEP_S}", "mouseup", "1"]
    elif kind in ("wheel", "ctrl_wheel"):
        button = str(rng.choice((4, 5)))
        click = ["click", "--repeat", str(rng.randint(1, 3)), "--delay", "30", button]
        if kind == "ctrl_wheel":
            click = ["keydown", "ctrl", *click, "keyup", "ctrl"]
        args = ["mousemove", *point(), *click]
    else:
        args = ["key", rng.choice(KEYS)]
    return [*args, "sleep", f"{rng.uniform(*PAUSE_S):.3f}"]


def _geometry(display: str, window: str) -> tuple[int, int, int, int] | None:
    """(x, y, width, height) of the part of the window where input goes: on screen, EDGE_PX inside."""
    out = _x(display, "xdotool", "getwindowgeometry", "--shell", window, timeout=5)
    values = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
    try:
        x, y, width, height = int(values["X"]), int(values["Y"]), int(values["WIDTH"]), int(values["HEIGHT"])
    except (KeyError, ValueError):
        return None
    left, top = max(x, 0) + EDGE_PX, max(y, 0) + EDGE_PX
    right, bottom = min(x + width, SCREEN_PX[0]) - EDGE_PX, min(y + height, SCREEN_PX[1]) - EDGE_PX
    return (left, top, right - left, bottom - top) if right > left and bottom > top else None


def _window(display: str) -> str | None:
    out = _x(display, "xdotool", "search", "--name", WINDOW_NAME, timeout=5)
    ids = out.stdout.split()
    return ids[0] if out.returncode == 0 and ids else None


def _screenshot(display: str, path: Path) -> Path | None:
    """The whole screen as PNG through xwd and ImageMagick; None where either is missing."""
    convert = next((c for c in ("magick", "convert-im6.q16", "convert-im7.q16", "convert") if shutil.which(c)), None)
    if shutil.which("xwd") is None or convert is None:
        log.info("no screenshot: needs xwd (x11-apps) and ImageMagick")
        return None
    env = {**os.environ, "DISPLAY": display}
    try:
        xwd = subprocess.run(["xwd", "-root", "-silent"], env=env, capture_output=True, timeout=CALL_TIMEOUT_S)
        png = [convert, "xwd:-", f"png:{path}"]
        subprocess.run(png, input=xwd.stdout, capture_output=True, timeout=CALL_TIMEOUT_S, check=True)
    except (subprocess.SubprocessError, OSError) as exc:
        log.warning("screenshot failed: %s", exc)
        return None
    return path


# -- the soak --------------------------------------------------------------------------------


def soak(
    seed: int,
    seconds: float,
    *,
    max_actions: int | None = None,
    app_args: Sequence[str] = (),
    screenshot: Path | None = None,
    env: dict[str, str] | None = None,
    workdir: Path | None = None,
    load_wait_s: float = LOAD_WAIT_S,
) -> SoakResult:
    """Drive a fresh app with seeded random input for `seconds` (or `max_actions`) and report.

    `env` adds to the app's environment; DPGVIZ_CACHE_DIR is a fresh folder unless `env`
    names one. `workdir` holds the app's output (`app.log`), its cache dir and is its
    working directory (default: a new temp folder, kept for reading the log)."""
    if missing := missing_tools():
        raise RuntimeError(f"bench soak needs {', '.join(missing)} on PATH (Debian: xvfb openbox xdotool wmctrl)")
    workdir = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix=f"dpgviz-soak-{seed}-"))
    workdir.mkdir(parents=True, exist_ok=True)
    app_env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1", "PYTHONFAULTHANDLER": "1"}
    if not (env or {}).get("DPGVIZ_CACHE_DIR"):
        (workdir / "cache").mkdir(exist_ok=True)
        app_env["DPGVIZ_CACHE_DIR"] = str(workdir / "cache")
    app_log_path = Path(app_env["DPGVIZ_CACHE_DIR"]) / "dpgviz.log"
    log_offset = app_log_path.stat().st_size if app_log_path.exists() else 0

    result = SoakResult(seed=seed, app_log=workdir / "app.log")
    xvfb = wm = app = None
    try:
        xvfb, display = _start_xvfb()
        app_env["DISPLAY"] = display
        wm = _start_wm(display)
        shm_before = _shm_listing()
        seen_mapped: set[str] = set()
        with open(result.app_log, "wb") as out:
            app = subprocess.Popen(
                [sys.executable, str(ROOT / "main.py"), *app_args],
                cwd=workdir,
                env=app_env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own group: the worker and the tracker are found by pgid
            )
        pgid = app.pid
        log.info("seed %d: app pid %d on display %s, output in %s", seed, app.pid, display, result.app_log)

        window = None
        deadline = time.monotonic() + WINDOW_WAIT_S
        while window is None and app.poll() is None and time.monotonic() < deadline:
            window = _window(display)
            if window is None:
                time.sleep(0.1)
        geometry = _geometry(display, window) if window else None
        if window is None or geometry is None:
            code = app.poll()
            result.error = "no window appeared" if code is None else f"the app exited ({code}) before its window"
        else:
            time.sleep(load_wait_s)  # Start and the keys do nothing until the model has loaded
            _x(display, "xdotool", "windowactivate", "--sync", window, timeout=5)
            _drive(result, app, display, window, geometry, seed, seconds, max_actions, pgid, seen_mapped)
            seen_mapped |= _mapped_shm(pgid)
            result.alive_at_end = app.poll() is None and _window(display) is not None
            if not result.alive_at_end and result.died_after is None:  # in the last batch, after the last check
                result.died_after = result.actions
            if screenshot is not None:
                result.screenshot = _screenshot(display, Path(screenshot))
        _close(result, app, display)
        _end_group(pgid)

        text = result.app_log.read_text(errors="replace")
        result.tracebacks, result.first_traceback, _ = _tracebacks(text)
        if app_log_path.exists():
            result.boundary_exceptions, result.first_boundary = _boundary_lines(app_log_path, log_offset)
        else:  # no log file (yet): the same lines may have gone to stderr
            result.boundary_exceptions = sum(1 for line in text.splitlines() if "[boundary]" in line)
        result.tracker_leaks = sum(int(m.group(1)) for m in TRACKER_LEAK.finditer(text))
        new = sorted(name for name in _shm_listing() - shm_before if _is_app_like(name))
        result.shm_left = [name for name in new if name in seen_mapped]
        result.shm_other = [name for name in new if name not in seen_mapped]
        return result
    finally:
        if app is not None:  # after an exception above: leave neither the app nor its worker behind
            if app.poll() is None:
                app.kill()
                app.wait(5.0)
            _end_group(app.pid)
        _end(wm)
        _end(xvfb)


def _drive(
    result: SoakResult,
    app: subprocess.Popen,
    display: str,
    window: str,
    geometry: tuple[int, int, int, int],
    seed: int,
    seconds: float,
    max_actions: int | None,
    pgid: int,
    seen_mapped: set[str],
) -> None:
    """Send batches of random actions until the time or the count runs out, or the app stops answering."""
    rng = random.Random(seed)
    limit = max_actions if max_actions is not None else sys.maxsize
    t0 = time.monotonic()
    next_check = CHECK_EVERY
    while result.actions < limit and time.monotonic() - t0 < seconds:
        n = min(BATCH, limit - result.actions)
        chain: list[str] = []
        for _ in range(n):
            chain += _action(rng, geometry)
        sent = _x(display, "xdotool", *chain)
        result.actions += n
        seen_mapped |= _mapped_shm(pgid)
        if sent.returncode != 0:  # a chain stops at its first failure: let go of anything held
            _x(display, "xdotool", "keyup", "shift", "ctrl", "mouseup", "1", timeout=5)
        if result.actions >= next_check or sent.returncode != 0:
            next_check = result.actions + CHECK_EVERY
            if app.poll() is not None or _window(display) is None:
                result.died_after = result.actions
                log.warning("seed %d: the app stopped answering after about %d actions", seed, result.actions)
                break
            geometry = _geometry(display, window) or geometry  # the window manager may have moved it
    result.seconds = time.monotonic() - t0


def _close(result: SoakResult, app: subprocess.Popen, display: str) -> None:
    """Close every window of the app through the window manager, as a user would; kill it if it stays."""
    if app.poll() is None:
        ids = _x(display, "xdotool", "search", "--pid", str(app.pid), timeout=5).stdout.split()
        if not ids and (window := _window(display)):
            ids = [window]
        for window_id in ids:
            _x(display, "wmctrl", "-i", "-c", f"0x{int(window_id):x}", timeout=5)
        try:
            app.wait(CLOSE_WAIT_S)
        except subprocess.TimeoutExpired:
            result.was_killed = True
            log.warning("the app was still running %.0f s after its window was closed; killing it", CLOSE_WAIT_S)
            app.terminate()
            try:
                app.wait(5.0)
            except subprocess.TimeoutExpired:
                app.kill()
                app.wait(5.0)
    result.exit_code = app.returncode


# -- scripted input on the real window (tests) ------------------------------------------------


class RealWindow:
    """The app on a private screen with a window manager, driven by scripted xdotool input.

        with RealWindow(["--device", "cpu"], cache_dir=tmp) as w:
            w.wait_log("Loaded")            # the app's log file (core.paths), INFO and up
            w.click(155, 347); w.key("ctrl+a"); w.type("8192"); w.key("Return")
            w.kill()                        # SIGKILL, as a crash would (or w.close(): as a user)

    Coordinates are relative to the window's client area. Everything is ended on exit."""

    def __init__(self, app_args: Sequence[str] = (), *, cache_dir: Path, workdir: Path | None = None) -> None:
        self.app_args, self.cache_dir = list(app_args), Path(cache_dir)
        self.workdir = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="dpgviz-window-"))
        self.xvfb = self.wm = self.app = None
        self.display = self.window = ""
        self.origin = (0, 0)
        self.exit_code: int | None = None

    def __enter__(self) -> RealWindow:
        if missing := missing_tools():
            raise RuntimeError(f"needs {', '.join(missing)} on PATH")
        self.xvfb, self.display = _start_xvfb()
        self.wm = _start_wm(self.display)
        self.start()
        return self

    def start(self) -> None:
        """(Re)start the app and wait for its window."""
        env = {**os.environ, "DISPLAY": self.display, "DPGVIZ_CACHE_DIR": str(self.cache_dir),
               "PYTHONUNBUFFERED": "1", "PYTHONFAULTHANDLER": "1"}
        with open(self.workdir / "app.log", "ab") as out:
            self.app = subprocess.Popen(
                [sys.executable, str(ROOT / "main.py"), *self.app_args], cwd=self.workdir, env=env, stdout=out,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )
        deadline = time.monotonic() + WINDOW_WAIT_S
        window = None
        while window is None and self.app.poll() is None and time.monotonic() < deadline:
            window = _window(self.display)
            time.sleep(0.1)
        if window is None:
            raise RuntimeError(f"no window appeared; app output in {self.workdir / 'app.log'}")
        self.window = window
        _x(self.display, "xdotool", "windowactivate", "--sync", window, timeout=5)
        out = _x(self.display, "xdotool", "getwindowgeometry", "--shell", window, timeout=5)
        values = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
        self.origin = (int(values.get("X", 0)), int(values.get("Y", 0)))

    @property
    def log_text(self) -> str:
        path = self.cache_dir / "dpgviz.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_log(self, text: str, timeout_s: float = 60.0, after: int = 0) -> bool:
        """Wait until the app's log file holds `text` past character `after`; False on timeout or exit."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if text in self.log_text[after:]:
                return True
            if self.app.poll() is not None:
                return False
            time.sleep(0.1)
        return False

    def xdotool(self, *args: str) -> None:
        _x(self.display, "xdotool", *args)

    def click(self, x: int, y: int, button: int = 1) -> None:
        self.xdotool("mousemove", str(self.origin[0] + x), str(self.origin[1] + y), *CLICK, str(button))

    def key(self, *keys: str) -> None:
        self.xdotool("key", "--delay", "60", *keys)

    def type(self, text: str) -> None:
        self.xdotool("type", "--delay", "60", text)

    def screenshot(self, path: Path) -> Path | None:
        return _screenshot(self.display, Path(path))

    def kill(self) -> None:
        """SIGKILL the app (its worker notices its parent died and exits)."""
        if self.app is not None and self.app.poll() is None:
            self.app.kill()
            self.exit_code = self.app.wait(10)
        _end_group(self.app.pid)

    def close(self) -> int | None:
        """Close the window as a user would; the app's exit code."""
        result = SoakResult(seed=0, app_log=self.workdir / "app.log")
        if self.app is not None:
            _close(result, self.app, self.display)
            _end_group(self.app.pid)
        self.exit_code = result.exit_code
        return self.exit_code

    def __exit__(self, *exc: object) -> None:
        try:
            if self.app is not None and self.app.poll() is None:
                self.close()
        finally:
            _end(self.wm)
            _end(self.xvfb)


# -- the command -----------------------------------------------------------------------------


def parse_seeds(values: Sequence[str]) -> list[int]:
    """["1,2", "5"] -> [1, 2, 5]: --seed given several times or as a comma list."""
    try:
        return [int(s) for value in values for s in value.split(",") if s.strip()]
    except ValueError as exc:
        raise ValueError(f"--seed takes integers or comma lists of them, got {list(values)}") from exc


def main(seeds: Sequence[int], seconds: float, max_actions: int | None = None, screenshot: str | None = None) -> int:
    """`bench soak`: one soak per seed, one after another; prints each summary (and the first
    traceback); exit status 1 if any was not ok."""
    is_ok = True
    for seed in seeds:
        shot = None
        if screenshot:
            shot = Path(screenshot)
            if len(seeds) > 1:
                shot = shot.with_name(f"{shot.stem}-seed{seed}{shot.suffix or '.png'}")
        result = soak(seed, seconds, max_actions=max_actions, screenshot=shot)
        sys.stdout.write(result.summary() + "\n")
        if result.first_traceback:
            sys.stdout.write(result.first_traceback + "\n")
        if result.first_boundary:
            sys.stdout.write("first exception caught at a boundary:\n" + result.first_boundary + "\n")
        if result.shm_other:
            sys.stdout.write(f"  other new shm entries (not seen mapped by the app): {' '.join(result.shm_other)}\n")
        if result.screenshot:
            sys.stdout.write(f"  screenshot: {result.screenshot}\n")
        sys.stdout.flush()
        is_ok = is_ok and result.ok
    return 0 if is_ok else 1
