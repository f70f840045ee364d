"""Live recorded runs: records a `dpgviz.Recorder` streams into the window, shown as they come.

    listen("5560")     start an ipc.listen.RunListener (--listen-runs, File > Listen for recorded runs...)
    update()           once a frame: take what arrived and put it in the store (never blocks)
    wait_fds()         the listener's wake pipe, for the frame pacer
    close()

A recorder's RunOpened makes its branches: B new root branches (one per row of its x) in the
store shown when that store has the same layout and vocabulary, else in a new store that
replaces it (as a new run of another length does, app.runs). The view follows the first of
them while records come. Each RecordsLogged appends one record per branch (StepStore.append:
the same path the worker's records take). While a run of the window's own model is in
progress, what recorders send waits (the store may change under that run); it is shown once
the run ends.

`LiveRuns` is handed the Document, the Runs (only to ask whether a run is in progress) and
the Notices; the listener is made by `listener_factory` (tests pass their own).

numpy and dpgviz.core/ipc/store only; no dearpygui, no torch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from dpgviz.app.document import Document
from dpgviz.app.notices import Notices, StoreShown
from dpgviz.app.runs import Runs
from dpgviz.core.records import KINDS, RecordLayout
from dpgviz.core.vocab import Vocabulary

if TYPE_CHECKING:  # the listener and its messages load when the window first listens, not at start
    from dpgviz.ipc.listen import Received, RecordsLogged, RunListener, RunOpened
from dpgviz.store.step_store import StepStore

log = logging.getLogger(__name__)


@dataclass
class _LiveRun:
    """One recorder's run in the store."""

    who: str
    store: StepStore
    branches: list[str]
    n_records: int = 0
    is_open: bool = True
    fields: dict = field(default_factory=dict)  # RecordLayout.token_fields(): what a record must look like


class LiveRuns:
    """Recorded runs arriving over the network (see the module docstring)."""

    def __init__(self, doc: Document, runs: Runs, notices: Notices,
                 listener_factory: Callable[[str, int], RunListener] | None = None) -> None:
        self.doc, self.runs, self.notices = doc, runs, notices
        self.listener_factory = listener_factory or _start_listener
        self.listener: RunListener | None = None
        self.allow_remote = False  # --allow-remote: listen on an address other machines reach
        self.runs_by_client: dict[str, _LiveRun] = {}
        self._waiting: list[Received] = []  # held while the window's own run goes on

    # -- listening ------------------------------------------------------------------------------
    @property
    def address(self) -> str | None:
        return self.listener.address if self.listener is not None else None

    def listen(self, where: str | int) -> bool:
        """Listen on `where` ('PORT' or 'HOST:PORT'; 127.0.0.1 by default); False and a message when it cannot."""
        try:
            from dpgviz.ipc.listen import parse_listen
            from dpgviz.ipc.wire import check_listen_host

            host, port = parse_listen(where)
            check_listen_host(host, self.allow_remote)  # as `worker --listen`: another machine's address needs consent
            listener = self.listener_factory(host, port)
        except (ValueError, OSError) as exc:
            self.notices.say(f"Cannot listen for recorded runs: {exc}", is_error=True)
            return False
        self.close()
        self.listener = listener
        where_key = f"; key in {listener.connection_file}" if listener.connection_file else ""
        self.notices.say(f"Listening for recorded runs on {listener.address}{where_key}.")
        return True

    def wait_fds(self) -> tuple[int, ...]:
        return self.listener.wait_fds() if self.listener is not None else ()

    @property
    def is_live(self) -> bool:
        """A recorder's run is streaming in now."""
        return any(run.is_open for run in self.runs_by_client.values())

    # -- the frame loop's side --------------------------------------------------------------------
    def update(self) -> None:
        """Put what arrived into the store; records wait while the window's own run goes on."""
        if self.listener is None:
            return
        self._waiting.extend(self.listener.take())
        if not self._waiting or self.runs.is_running:
            return
        items, self._waiting = self._waiting, []
        from dpgviz.ipc.listen import RecordsLogged, RunClosed, RunOpened
        from dpgviz.ipc.wire import Bye

        for item in items:
            msg = item.message
            if isinstance(msg, RunOpened):
                self._open(item.client, item.who, msg)
            elif isinstance(msg, RecordsLogged):
                self._append(item.client, msg)
            elif isinstance(msg, (RunClosed, Bye)):
                self._end(item.client, msg)

    def _open(self, client: str, who: str, msg: RunOpened) -> None:
        try:
            layout, vocab = RecordLayout.from_dict(msg.layout), Vocabulary.from_dict(msg.vocab)
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("recorded run from %s with a bad layout or vocabulary: %s", who, exc)
            self.notices.say(f"A recorded run from {who} cannot be shown: {exc}", is_error=True)
            return
        doc = self.doc
        store = doc.store
        if store is None or store.layout != layout or doc.vocab != vocab:
            store = doc.new_store(layout, vocab)
        name = msg.model or "recorded"
        branches = [
            store.new_branch(dict(msg.settings), label=name if msg.n_branches == 1 else f"{name} row {b}").id
            for b in range(max(1, msg.n_branches))
        ]
        self.runs_by_client[client] = _LiveRun(who, store, branches, fields=layout.token_fields())
        view = doc.view
        view.branch, view.record, view.follow_live, view.playing = branches[0], 0, True, False
        view.top_row = 0
        self.notices.post(StoreShown(vocab, layout.total_len))
        file = f", also written to {msg.path}" if msg.path else ""
        self.notices.say(f"Recording {name} from {who}: {len(branches)} branch(es) of {layout.seq_len} tokens{file}.")

    def _append(self, client: str, msg: RecordsLogged) -> None:
        run = self.runs_by_client.get(client)
        if run is None or run.store is not self.doc.store:
            return  # its RunOpened was refused, or another store replaced its own
        problem = _check(run, msg)
        if problem is not None:
            log.warning("recorded run from %s: %s; its records are no longer shown", run.who, problem)
            self.notices.say(f"Records from {run.who} do not fit their run ({problem}); stopped showing them.", True)
            run.is_open = False
            self.runs_by_client.pop(client, None)
            return
        for b, branch in enumerate(run.branches):  # B rows: the run's sibling branches
            if branch in run.store.branches:  # one the user deleted while it records takes no more
                run.store.append(msg.scalars[b], {name: arr[b] for name, arr in msg.arrays.items()}, branch)
        run.n_records += 1

    def _end(self, client: str, msg: object) -> None:
        run = self.runs_by_client.get(client)
        if run is None:
            return
        run.is_open = False
        from dpgviz.ipc.listen import RunClosed

        how = "closed" if isinstance(msg, RunClosed) else "went away"
        self.notices.say(f"The recorder {run.who} {how}: {run.n_records} records.")

    def close(self) -> None:
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        for run in self.runs_by_client.values():
            run.is_open = False


def _start_listener(host: str, port: int) -> RunListener:
    from dpgviz.ipc.listen import RunListener

    return RunListener(host, port, allow_remote=True).start()  # LiveRuns.listen asked for consent


def _check(run: _LiveRun, msg: RecordsLogged) -> str | None:
    """Why `msg` cannot be appended to `run` (None: it fits, in order)."""
    if msg.seq != run.n_records:
        return f"record {msg.seq} came where {run.n_records} was due"
    B = len(run.branches)
    if len(msg.scalars) != B or not all(isinstance(s, dict) for s in msg.scalars):
        return f"{len(msg.scalars)} rows of scalars for {B} branches"
    if not all(type(v) is int for s in msg.scalars for v in s.values()) or not all(
        0 <= s.get("kind", 0) < len(KINDS) for s in msg.scalars
    ):
        return "scalars that are not integers, or an unknown kind"
    if set(msg.arrays) != set(run.fields):
        return f"arrays {sorted(msg.arrays)}"
    for name, (shape, dtype) in run.fields.items():
        arr = msg.arrays[name]
        if not isinstance(arr, np.ndarray) or arr.shape != (B, *shape) or arr.dtype != dtype:
            return f"{name} is {getattr(arr, 'shape', '?')} {getattr(arr, 'dtype', '?')}, expected {(B, *shape)} {dtype}"
    return None
