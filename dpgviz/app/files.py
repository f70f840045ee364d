"""Session files: open, save and export the records shown, on the job thread.

    open(path)        a session file, without a model; its recorded model is hashed in the
                      background and offered when it is there unchanged
    adopt(session)    show a Session that came from elsewhere (a recovered journal) as opened
    save(path)        every branch, atomically (store.session_save.save_session)
    export(fmt, path) the shown branch (text and PNG: the record shown)

`Files` is handed the `Document`, the `Runs` (the model that made the records), the `Jobs`
thread, the `Compare` part (a `compare --out` file opens side by side) and the `Notices`.

numpy and dpgviz.core/store only; no dearpygui, no torch. Pillow comes in only when exporting.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path

from dpgviz.app.compare import Compare, sibling_runs
from dpgviz.app.document import Document
from dpgviz.app.jobs import Jobs
from dpgviz.app.notices import CompareShown, ModelOffered, Notices, SettingsRestored, counted
from dpgviz.app.runs import Runs
from dpgviz.core.discovery import model_file
from dpgviz.core.settings import GenerationSettings
from dpgviz.store.session import Progress, Session, SessionError, checkpoint_sha256
from dpgviz.store.session_open import open_session
from dpgviz.store.session_save import save_session

log = logging.getLogger(__name__)

# Export formats that take one record (the one shown); the rest take the whole branch.
PER_RECORD_FORMATS = ("text", "png")


def damaged(session: Session) -> str:
    """'; the file is damaged after record K (why, M records were written)' for a partial read, else ''."""
    d = session.damage
    if d is None:
        return ""
    written = "" if d.records_written is None else f"; {d.records_written} records were written"
    # The timeline counts records from 1 ("record 19 of 19"): the last one read is record N.
    return f"; the file is damaged after record {d.records_recovered} ({d.reason}{written})"


def is_same_file(a: str | Path | None, b: str | Path | None) -> bool:
    """Whether two recorded paths name the same file (False when either is missing)."""
    if not a or not b:
        return False
    try:
        return Path(a).resolve() == Path(b).resolve()
    except (OSError, RuntimeError):
        return str(a) == str(b)


class Files:
    """Open, save and export (see the module docstring)."""

    def __init__(self, doc: Document, runs: Runs, jobs: Jobs, compare: Compare, notices: Notices) -> None:
        self.doc, self.runs, self.jobs, self.compare, self.notices = doc, runs, jobs, compare, notices
        # Told of every save that finished (path, store version saved) and every session opened:
        # the recovery journal clears (app.recovery).
        self.on_saved: list[Callable[[Path, int], None]] = []
        self.on_opened: list[Callable[[Session], None]] = []
        self._model_check: tuple[Session, Future] | None = None

    @property
    def is_checking(self) -> bool:
        """An opened session's recorded model is being hashed in the background."""
        return self._model_check is not None

    # -- open ------------------------------------------------------------------------------
    def open(self, path: str | Path) -> bool:
        """Open a session file, without a model; what was shown stays if it fails."""
        if not self._can_replace("opening a session"):
            return False
        try:
            session = open_session(path)
        except (SessionError, OSError) as exc:
            self.notices.say(f"Cannot open {path}: {exc}", is_error=True)
            return False
        # A damaged file (a partial read) is not saved over: Save asks where, and its unread bytes stay.
        self.adopt(session, Path(path) if session.damage is None else None)
        for hook in self.on_opened:
            hook(session)
        store = session.store
        self.notices.say(
            f"Opened {Path(path).name}: {counted(len(store), 'record')} in {counted(len(store.branch_order), 'branch')}"
            f"{damaged(session)}. Checking the recorded model...", is_error=session.damage is not None,
        )
        return True

    def adopt(self, session: Session, path: Path | None) -> None:
        """Show `session` as the opened one (Save writes to `path`; None: Save asks where)."""
        doc = self.doc
        previous, doc.session = doc.session, session  # the session's mapping backs the store's arrays
        doc.show_store(session.store, session.vocab)
        if previous is not None:
            previous.close()
        doc.path = path
        if session.settings:  # restart or continue with what the file was made with
            try:
                self.notices.post(SettingsRestored(GenerationSettings.from_dict(session.settings)))
            except (TypeError, ValueError) as exc:
                log.warning("session settings not shown: %s", exc)
        siblings = sibling_runs(session.store)
        if siblings is not None and self.compare.start(*siblings):  # `compare --out`: runs side by side
            self.notices.post(CompareShown())
        self._model_check = (session, self.jobs.submit(session.model_status))

    def _can_replace(self, what: str) -> bool:
        if self.runs.is_running:
            self.notices.say(f"Stop the run before {what}.", is_error=True)
            return False
        if self.jobs.job is not None:
            self.notices.say(f"Wait for {self.jobs.job.progress.label} to finish before {what}.", is_error=True)
            return False
        return True

    def poll(self) -> None:
        """Once a frame: offer the opened session's model once its hash is known."""
        if self._model_check is not None and self._model_check[1].done():
            session, future = self._model_check
            self._model_check = None
            if session is self.doc.session:
                self._offer_model(session, future)

    def wait(self, timeout_s: float) -> None:
        if self._model_check is not None:
            self._model_check[1].exception(timeout=timeout_s)

    def _offer_model(self, session: Session, future: Future) -> None:
        """Offer the session's recorded checkpoint when it is there unchanged, or say why not."""
        exc = future.exception()
        status = "unreadable" if exc is not None else str(future.result())
        name = Path(session.model_path).name if session.model_path else ""
        info = self.runs.model_info  # the model loaded already is the session's: nothing to press
        offer = "is loaded" if info is not None and is_same_file(info.path, session.model_path) else (
            "is picked: press Load to continue or restart")
        records = f"{counted(len(session.store), 'record')} in {counted(len(session.store.branch_order), 'branch')}{damaged(session)}"
        if status == "ok":
            self.notices.post(ModelOffered(str(session.model_path)))
            self.notices.say(f"Opened {records}. Its model {name} {offer}.",
                             is_error=session.damage is not None)
        elif status == "unrecorded":
            self.notices.say(f"Opened {records}. No model was recorded: load one to continue or restart.",
                             is_error=session.damage is not None)
        else:
            why = {"missing": "is not there", "changed": "has changed since (sha256 differs)"}.get(
                status, f"cannot be read ({exc})"
            )
            self.notices.say(
                f"Opened {records}. Its model {session.model_path} {why}: load a model to continue or restart.",
                is_error=status != "missing" or session.damage is not None,
            )

    # -- save and export ----------------------------------------------------------------------
    def snapshot(self, quiet: bool = False) -> Session | None:
        """The shown store as a Session a job thread may read while a run goes on (None: said why,
        unless `quiet`)."""
        doc = self.doc
        store = doc.store
        if store is None or len(store) == 0:
            if not quiet:
                self.notices.say("Nothing to save or export yet: generate a run or open a session.", is_error=True)
            return None
        opened, info = doc.session, self.runs.model_info
        from_file = opened is not None and opened.store is store
        if doc.vocab is None:
            if not quiet:
                self.notices.say("These records have no vocabulary to save with: load a model first.", is_error=True)
            return None
        frozen = store.view(len(store))  # shares the arrays: rows and pool entries are never rewritten
        branch = store.branches.get(doc.view.branch)
        settings = dict(branch.settings) if branch is not None else {}
        if from_file and opened.model_path:  # the records' provenance: the model the file recorded
            model_path, sha, model_info = opened.model_path, opened.model_sha256, dict(opened.model_info)
        elif info is not None:
            model_path, sha, model_info = info.path, None, info.to_dict(with_itos=False)
        else:
            model_path, sha, model_info = None, None, {}
        return Session(
            store=frozen, vocab=doc.vocab, settings=settings, model_path=model_path, model_sha256=sha,
            model_info=model_info,
        )

    def save(self, path: str | Path | None = None) -> bool:
        """Save every branch to `path` (default: the last path) on the job thread; False if it cannot start."""
        path = Path(path) if path is not None else self.doc.path
        if path is None:
            self.notices.say("Choose where to save first.", is_error=True)
            return False
        if not self.jobs.is_free():
            return False
        snapshot = self.snapshot()
        if snapshot is None:
            return False
        model_path, sha = snapshot.model_path, snapshot.model_sha256
        version = self.doc.store.version  # what the snapshot holds: later records are not in the file

        def work(progress: Progress) -> Path:
            digest = sha
            weights = model_file(model_path)
            if weights is not None and digest is None:
                digest = checkpoint_sha256(weights)  # cached: once per model file
            return save_session(
                path, snapshot.store, snapshot.vocab, settings=snapshot.settings, model_path=model_path,
                model_sha256=digest, model_info=snapshot.model_info, progress=progress,
            )

        def done(written: object) -> str:
            self.doc.path = Path(str(written))
            for hook in self.on_saved:
                hook(self.doc.path, version)
            return f"Saved {counted(len(snapshot.store), 'record')} in {counted(len(snapshot.store.branch_order), 'branch')} to {written}."

        self.jobs.start(f"saving {path.name}", work, done)
        return True

    def export(self, fmt: str, path: str | Path, *, mode: str = "state", columns: int = 64, frame_ms: int = 120) -> bool:
        """Export the shown branch (text and PNG: the record shown) on the job thread."""
        path = Path(path)
        if not self.jobs.is_free():
            return False
        snapshot = self.snapshot()
        if snapshot is None:
            return False
        view = self.doc.view
        branch, record = view.branch, view.record if fmt in PER_RECORD_FORMATS else None

        def work(progress: Progress) -> Path:
            from dpgviz.export import export_session  # Pillow: only when exporting

            return export_session(
                snapshot, fmt, path, branch=branch, record=record, frame_ms=frame_ms, mode=mode,
                columns=columns, progress=progress,
            )

        self.jobs.start(f"exporting {path.name}", work, lambda written: f"Exported {fmt.upper()} to {written}.")
        return True
