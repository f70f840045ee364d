"""Unsaved work survives the process: the records shown are journaled as they arrive, and offered back.

    Recovery(doc, runs, files, notices, path)   finds a journal a dead process left (`pending`)
    accept() / decline()                        open it like a session / delete it
    sync()                                      once a frame: hand what changed to the journal
                                                (store.journal writes on its own thread)
    run_ended()                                 the end of a run is flushed and fsynced at once
    close()                                     a normal close: the journal is no longer offered at start;
                                                unsaved work in it is kept as the last closed work
    last_closed() / reopen_last_closed()        File > Reopen unsaved work: that journal's branches, added

A normal close with unsaved records moves the journal aside (`closed_path`, replacing the
one an earlier window left) instead of deleting it: the next start asks nothing, and a
window closed by mistake still loses nothing.

Recovered or reopened records are added to what the window shows, as more branches
(`graft`), never in its place: the records shown are unsaved work too, and the journal this
window writes (and moves aside at its close) must hold both. Only an empty window takes
them as they are; records of another layout or vocabulary beside unsaved ones are refused
in one line (save those first), so nothing is dropped either way.

Several windows at once: each holds a lock (flock, on JOURNAL.lock) on the journal it
writes for as long as it runs. A window that finds the journal locked writes its own
(recovery-PID.dpgjournal) and offers nothing a live window is writing: at start it offers
the newest journal no live window holds. (Without fcntl, as on Windows, one journal.)

Nothing is journaled while a found journal waits for an answer (the new one would
overwrite it); records that arrive meanwhile are journaled once it is answered. A save
clears the journal as of the saved snapshot (`Files.on_saved`); opening a session clears
it too (the file on disk holds those records).

numpy and dpgviz.core/store only; no dearpygui, no torch.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from dpgviz.app.document import Document
from dpgviz.app.files import Files, damaged
from dpgviz.app.notices import Notices, counted
from dpgviz.app.runs import Runs
from dpgviz.store.journal import Journal
from dpgviz.store.journal_reader import RecoveryInfo, discard_recovery, find_recovery, recover
from dpgviz.store.session import Session, SessionError
from dpgviz.store.step_store import StepStore

log = logging.getLogger(__name__)


class Recovery:
    """The recovery journal of the records shown (see the module docstring)."""

    def __init__(self, doc: Document, runs: Runs, files: Files, notices: Notices, path: Path) -> None:
        self.doc, self.runs, self.files, self.notices = doc, runs, files, notices
        base = Path(path)
        self.closed_path = base.with_name(base.stem + "-closed" + base.suffix)
        self._lock = _claim(base) or _claim(base.with_name(f"{base.stem}-{os.getpid()}{base.suffix}"), required=True)
        self.path = self._lock.path
        self.pending: RecoveryInfo | None = None
        for candidate in _unheld_journals(base, self.path):
            try:
                self.pending = find_recovery(candidate)
            except (SessionError, OSError) as exc:  # not a journal of ours: leave it, say so, journal elsewhere
                log.warning("recovery journal %s unreadable: %s", candidate, exc)
                self.notices.say(f"A recovery journal at {candidate} cannot be read ({exc}); it is left as it is.", True)
                if candidate == self.path:
                    self._lock.release()
                    self._lock = _claim(base.with_name(base.stem + "-new" + base.suffix), required=True)
                    self.path = self._lock.path
                continue
            if self.pending is not None:
                break
        self.journal = Journal(self.path)
        self._is_closed = False
        self._meta_key: tuple | None = None
        self._meta: dict = {}
        self._reopened: tuple[int, int] | None = None  # the closed journal reopened here (_file_key): not twice
        self._saved: tuple[int, int] | None = None  # (id, version) of the store as last saved or opened
        self._damaged = ""  # app.files.damaged of the journal opened last ('': it read whole)
        files.on_saved.append(self._on_saved)
        files.on_opened.append(self._on_opened)

    def _on_saved(self, path: Path, version: int) -> None:
        self.journal.clear(version=version)
        if self.doc.store is not None:
            self._saved = (id(self.doc.store), version)

    def _on_opened(self, session: Session) -> None:
        self.journal.clear(session.store)
        self._saved = (id(session.store), session.store.version)

    @property
    def is_shown_saved(self) -> bool:
        """Nothing is shown, or what is shown is in a file as it is (saved or opened, unchanged since)."""
        store = self.doc.store
        return store is None or len(store) == 0 or self._saved == (id(store), store.version)

    # -- the prompt ------------------------------------------------------------------------------
    def accept(self) -> bool:
        """Open the journal a dead process left, like a session (Save asks where to write it)."""
        info, self.pending = self.pending, None
        if info is None:
            return False
        store = self._open_journal(info, "recover")
        if store is None:
            return False
        if info.path != self.path:  # another window's: this window journals what it recovered from now on
            _forget(info.path)
        self.notices.say(
            f"Recovered {counted(len(store), 'record')} in {counted(len(store.branch_order), 'branch')} from {info.mtime:%Y-%m-%d %H:%M}"
            f"{self._damaged}. Save them to keep them.", is_error=bool(self._damaged),
        )
        return True

    def _open_journal(self, info: RecoveryInfo, verb: str) -> StepStore | None:
        """Show the records of the journal `info` names: as an unsaved session in an empty window,
        else added to the records shown as more branches. Returns the journal's own store (what it
        held); None (said why) if it cannot."""
        try:
            session = recover(info.path)
        except (SessionError, OSError) as exc:
            self.notices.say(f"Cannot {verb} {info.path}: {exc}", is_error=True)
            return None
        self._damaged = damaged(session)  # a journal damaged mid-way: its records before the damage, said so
        doc, found = self.doc, session.store
        fits = doc.store is not None and doc.store.layout == found.layout and doc.vocab == session.vocab
        if doc.store is None or len(doc.store) == 0 or (not fits and self.is_shown_saved):
            self.files.adopt(session, None)  # nothing unsaved is shown: the journal's records take its place
            return found
        if not fits:
            session.close()
            self.notices.say(
                f"Cannot {verb} {info.path} beside the records shown: its runs are of another length or model "
                f"({found.layout.total_len} tokens, shown: {doc.store.layout.total_len}). Save these first.",
                is_error=True,
            )
            return None
        added = graft(doc.store, found)
        session.close()
        if added:
            doc.select_branch(added[0])
        return found

    def decline(self) -> None:
        """Delete the journal a dead process left."""
        info, self.pending = self.pending, None
        if info is not None:
            if info.path == self.path:
                discard_recovery(info.path)
            else:
                _forget(info.path)
            self.notices.say("The unsaved work was discarded.")

    # -- the frame loop's side ---------------------------------------------------------------------
    def sync(self) -> None:
        if self.pending is not None:
            return
        doc = self.doc
        self.journal.sync(doc.store, doc.vocab, self._session_meta())

    def run_ended(self) -> None:
        self.sync()
        self.journal.flush()

    def _session_meta(self) -> dict:
        """What a session records beside the store (as Files.snapshot): rebuilt when its sources change."""
        doc, info = self.doc, self.runs.model_info
        branch = doc.store.branches.get(doc.view.branch) if doc.store is not None else None
        opened = doc.session if doc.session is not None and doc.session.store is doc.store else None
        key = (id(info), id(opened), id(branch.settings) if branch is not None else 0)
        if key != self._meta_key:
            self._meta_key = key
            settings = dict(branch.settings) if branch is not None else {}
            if opened is not None and opened.model_path:
                self._meta = {"settings": settings, "model_path": opened.model_path,
                              "model_sha256": opened.model_sha256, "model_info": dict(opened.model_info)}
            elif info is not None:
                self._meta = {"settings": settings, "model_path": info.path, "model_sha256": None,
                              "model_info": info.to_dict(with_itos=False)}
            else:
                self._meta = {"settings": settings, "model_path": None, "model_sha256": None, "model_info": {}}
        return self._meta

    def close(self, delete: bool = True) -> None:
        """A normal close: the journal is moved aside when it holds unsaved records, else deleted
        (`delete=False` keeps it in place, as a crash would; so does a journal still waiting for an answer)."""
        if self._is_closed:
            return
        self._is_closed = True
        try:
            self._close_journal(delete)
        finally:
            self._lock.release()

    def _close_journal(self, delete: bool) -> None:
        if not delete or (self.pending is not None and self.pending.path == self.path):
            self.journal.close(delete=False)
            return
        self.sync()  # what changed since the last frame (a reopen just now) goes into the file it keeps
        self.journal.close(delete=False)
        store = self.doc.store
        try:
            if store is not None and len(store) and self.path.stat().st_size > 0:
                os.replace(self.path, self.closed_path)
                log.info("unsaved work kept at %s (File > Reopen unsaved work)", self.closed_path)
            else:
                self.path.unlink()
        except FileNotFoundError:
            pass  # saved or opened since its last change: nothing unsaved
        except OSError as exc:
            log.warning("cannot keep the unsaved work of %s: %s", self.path, exc.strerror or exc)

    # -- the work of the last window closed without saving ------------------------------------------
    def last_closed(self) -> RecoveryInfo | None:
        """What the last window closed without saving left (None: nothing)."""
        try:
            return find_recovery(self.closed_path)
        except (SessionError, OSError) as exc:
            log.warning("the unsaved work at %s is unreadable: %s", self.closed_path, exc)
            return None

    def reopen_last_closed(self) -> bool:
        """Open the unsaved work the last window closed with, like a session (Save asks where)."""
        if self.runs.is_running:
            self.notices.say("Stop the run before reopening other records.", is_error=True)
            return False
        info = self.last_closed()
        if info is None:
            self.notices.say("No window was closed with unsaved work.")
            return False
        key = _file_key(info.path)
        if key is not None and key == self._reopened:
            self.notices.say("The unsaved work of the last window is open already (its branches are in the list).")
            return False
        store = self._open_journal(info, "reopen")
        if store is None:
            return False
        self._reopened = key
        self.notices.say(
            f"Reopened {counted(len(store), 'unsaved record')} in {counted(len(store.branch_order), 'branch')}, closed "
            f"{info.mtime:%Y-%m-%d %H:%M}{self._damaged}. Save them to keep them.", is_error=bool(self._damaged),
        )
        return True


def graft(store: StepStore, other: StepStore) -> list[str]:
    """Add every branch of `other` (same layout) to `store` as new branches, parents before
    children, with their records, settings, labels, edits and provenance; returns the new ids
    in `other`'s order. `other` is only read. (Score layers stay behind: a journal holds none.)"""
    assert store.layout == other.layout, (store.layout, other.layout)
    ids: dict[str, str] = {}
    todo = [b for b in other.branch_order if b in other.branches]
    store.reserve(sum(len(other.branches[b].rows) for b in todo))
    while todo:
        ready = [b for b in todo if other.branches[b].parent is None or other.branches[b].parent in ids
                 or other.branches[b].parent not in other.branches]
        if not ready:  # a cycle cannot come from a store; stop rather than loop
            log.warning("graft: branches %s have no reachable parent; left out", todo)
            break
        for bid in ready:
            b = other.branches[bid]
            parent = ids.get(b.parent) if b.parent is not None else None
            new = store.new_branch(b.settings, parent=parent, fork_record=b.fork_record if parent else None, label=b.label)
            new.edits, new.provenance = [dict(e) for e in b.edits], dict(b.provenance)
            for row in b.rows:
                store.append_record(other.record(row), new.id)
            ids[bid] = new.id
        todo = [b for b in todo if b not in ids]
    return [ids[b] for b in other.branch_order if b in ids]


def _file_key(path: Path) -> tuple[int, int] | None:
    """(mtime_ns, size) of `path`: the same file unchanged since (None: not there)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


class _Lock:
    """An exclusive flock on JOURNAL.lock, held while this window writes JOURNAL."""

    def __init__(self, path: Path, fd: int | None) -> None:
        self.path, self._fd = path, fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        if self.path.stem.rsplit("-", 1)[-1] == str(os.getpid()):
            _lock_file(self.path).unlink(missing_ok=True)  # this process's own name: nobody else waits on it
        os.close(fd)  # releases the flock


def _lock_file(journal: Path) -> Path:
    return journal.with_name(journal.name + ".lock")


def _claim(journal: Path, required: bool = False) -> _Lock | None:
    """The lock of `journal` for this window; None when a live window holds it (`required`: take it unlocked)."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): one journal, as before locks
        return _Lock(journal, None)
    try:
        journal.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(_lock_file(journal), os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        log.warning("cannot lock the recovery journal %s: %s", journal, exc.strerror or exc)
        return _Lock(journal, None) if required else None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        if required:
            log.warning("the recovery journal %s is held by another window; writing it anyway", journal)
            return _Lock(journal, None)
        return None
    return _Lock(journal, fd)


def _forget(journal: Path) -> None:
    """Delete a journal a gone window left, and its lock file."""
    discard_recovery(journal)
    _lock_file(journal).unlink(missing_ok=True)


def _is_held(journal: Path) -> bool:
    """True when a live window holds `journal`'s lock."""
    if not _lock_file(journal).exists():
        return False
    lock = _claim(journal)
    if lock is None:
        return True
    lock.release()
    return False


def _unheld_journals(base: Path, own: Path) -> list[Path]:
    """Journals a window that is gone left beside `base` (this window's own first, then the newest)."""
    others = [
        p for p in base.parent.glob(f"{base.stem}*{base.suffix}")
        if p != own and p.name != base.stem + "-closed" + base.suffix and not _is_held(p)
    ]
    others.sort(key=lambda p: p.stat().st_mtime if p.exists() else 0.0, reverse=True)
    return [own, *others]
