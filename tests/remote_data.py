"""A `python main.py worker` on 127.0.0.1 for the remote tests, and a bounded wait on a client's events."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from dpgviz.ipc import wire
from dpgviz.ipc.messages import Disconnected, WorkerError
from dpgviz.ipc.remote import RemoteClient
from dpgviz.store.step_store import StepStore

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 60.0
EVENT_TIMEOUT_S = 60.0


class Server:
    """`python main.py worker --listen 127.0.0.1:0` in its own process, its stderr in a file."""

    def __init__(self, folder: Path, *args: str, name: str = "worker.json") -> None:
        self.path = folder / name
        self.path.unlink(missing_ok=True)
        self.log = folder / f"{name}.log"
        self._log = open(self.log, "w")  # closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "main.py", "worker", "--listen", "127.0.0.1:0", "--connection-file", str(self.path), *args],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=self._log, text=True,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.path.is_file():
            assert self.proc.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, "the worker did not write its connection file"
            time.sleep(0.05)
        self.command = self.proc.stdout.readline().strip()
        self.target = wire.read_target(str(self.path))

    def client(self, **kwargs) -> RemoteClient:
        return RemoteClient(wire.read_target(str(self.path)), **kwargs).start()

    def children(self) -> list[int]:
        """Pids of the server's worker processes (not multiprocessing's resource tracker)."""
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                    cmdline = (entry / "cmdline").read_bytes()
                except OSError:
                    continue
                alive = fields[0] not in ("Z", "X")  # a worker that already ended is not one to kill
                if int(fields[1]) == self.proc.pid and alive and b"resource_tracker" not in cmdline:
                    pids.append(int(entry.name))
        return pids

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc.stdout.close()
        self._log.close()


def wait_event(client: RemoteClient, kinds: tuple[type, ...], store: StepStore | None = None,
               timeout_s: float = EVENT_TIMEOUT_S, seen: list | None = None):
    """Poll until an event of `kinds` comes (Disconnected and WorkerError fail the test unless asked for)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for event in client.poll(store):
            if seen is not None:
                seen.append(event)
            if isinstance(event, kinds):
                return event
            assert not isinstance(event, (Disconnected, WorkerError)), event
        time.sleep(0.005)
    raise AssertionError(f"no {kinds} within {timeout_s} s")


