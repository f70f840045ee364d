"""What produces records: one protocol for the local worker, a remote worker, a recorder's stream.

The workspace talks to whatever produces its records through `RunSource` only: it sends
commands (`ipc.messages.Command`), starts runs whose records land on a branch, polls the
events (StepReady records are appended to the store inside `poll`), sleeps on the source's
file descriptors when idle, and closes it. `ipc.client.WorkerClient` (a spawned worker on
this machine, records through shared memory) is the first implementation; a new source
implements these methods and is handed to the workspace as its `source_factory`.

No implementation here, no imports beyond typing: a protocol, not a base class.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np

    from dpgviz.core.settings import GenerationSettings
    from dpgviz.ipc.messages import Command, Event
    from dpgviz.store.step_store import StepStore


@runtime_checkable
class RunSource(Protocol):
    """Anything that produces records for the workspace (see the module docstring)."""

    @property
    def is_alive(self) -> bool:
        """It can take commands (a worker process that died, a dropped connection: False)."""
        ...

    def send(self, command: Command) -> None:
        """Send one command (load a model, stop a run, an explorer job); raises
        `ipc.client.WorkerGoneError` (a RuntimeError) when the source is gone."""
        ...

    def start_run(
        self,
        settings: GenerationSettings,
        branch: str,
        tokens: np.ndarray | None = None,
        iteration: int = 0,
        protected: np.ndarray | None = None,
        edited: np.ndarray | None = None,
        emit_initial: bool = True,
    ) -> int:
        """Start a run whose records `poll` appends to `branch`; returns its run id."""
        ...

    def poll(self, store: StepStore | None = None) -> list[Event]:
        """Every event that arrived, without blocking; StepReady records are appended to `store`.
        A source that stopped for good ends with a `WorkerDied` event."""
        ...

    def wait_fds(self) -> tuple[int, ...]:
        """File descriptors that turn readable when `poll` has something: an idle frame loop sleeps on them."""
        ...

    def close(self) -> None:
        """Stop producing and free everything held (processes, shared memory, sockets)."""
        ...
