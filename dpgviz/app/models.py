"""Other models than the one loaded: compare models, score a branch with a model, verify a branch.

    compare_models(entries, settings)  the same settings on each model, as sibling branches of one
                                       all-masked start; the session opens with the first two side
                                       by side (as `main.py compare --models ... --out`)
    score(entry, branch)               a second model on the branch's exact inputs: its values become
                                       the branch's score layer (store.layers), drawn by the
                                       "disagreement" colour mode, plotted, and shown in the tooltip
    verify(branch)                     re-run the branch and compare every record (`main.py verify`)

Each runs the very command the CLI has, in a child process (`python -m dpgviz compare|score|
verify`) on the job thread, on a snapshot of the records saved to a temporary session file:
the worker keeps its one model and stays free for generation, this process never imports
torch, and the window gets exactly the numbers the command line prints. One job at a time
(app.jobs); closing the window ends a command still running.

`ModelTools` is handed the `Document`, the `Runs` (the device and dtype chosen), the `Jobs`
thread, the `Files` part (snapshots, and adopting a comparison's session) and the `Notices`.
numpy, the standard library and dpgviz.core/store only; no dearpygui, no torch.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from dpgviz.app.document import Document
from dpgviz.app.files import Files
from dpgviz.app.jobs import Jobs
from dpgviz.app.notices import Notices
from dpgviz.app.runs import Runs
from dpgviz.core.discovery import ModelEntry, model_file
from dpgviz.core.settings import GenerationSettings
from dpgviz.store.layers import ScoreLayer, js_bits, js_summary, layer_of, put_layer, scale_top
from dpgviz.store.session import Progress, SessionError, checkpoint_sha256
from dpgviz.store.session_open import open_session
from dpgviz.store.session_save import save_session
from dpgviz.store.step_store import StepStore

log = logging.getLogger(__name__)

# GenerationSettings field -> the flag `compare` reads it from (strategy: --strategies with one name)
SETTINGS_FLAGS = {
    "length": "--length", "steps": "--steps", "temperature": "--temperature", "start_ratio": "--start-ratio",
    "end_ratio": "--end-ratio", "randomness": "--randomness", "strategy": "--strategies",
    "schedule": "--schedule", "proposal": "--proposal", "sample_top_k": "--sample-top-k", "top_p": "--top-p",
    "threshold": "--threshold", "eta": "--eta", "seed": "--seed", "top_k": "--top-k",
    "block_length": "--block-length",
}


class CommandError(ValueError):
    """The command refused or failed; its one-line reason (Jobs says '<label> failed: <reason>')."""


def model_name(entry: ModelEntry) -> str:
    """How the command line names a model: `default` for the embedded one, else its path."""
    return "default" if entry.is_default else str(entry.path)


def settings_flags(settings: GenerationSettings) -> list[str]:
    data = settings.to_dict()
    return [part for name, flag in SETTINGS_FLAGS.items() for part in (flag, str(data[name]))]


@dataclasses.dataclass(frozen=True)
class SecondOpinion:
    """The second model's candidates at the record whose own candidates the tooltip shows."""

    name: str
    candidates: tuple[tuple[int, str, float], ...]  # (id, text, p), most probable first
    p: float | None  # its probability of the token the record holds
    js: float | None  # divergence (bits) from the record's own top-K


class ModelTools:
    """Compare models, score, verify (see the module docstring)."""

    def __init__(self, doc: Document, runs: Runs, jobs: Jobs, files: Files, notices: Notices) -> None:
        self.doc, self.runs, self.jobs, self.files, self.notices = doc, runs, jobs, files, notices
        self.models_dir: str | None = None  # searched by verify (the window's --models-dir)
        self.verified: dict[str, dict] = {}  # branch -> engine.replay.Outcome.to_dict() of its last verify
        self.scored = 0  # layers added so far: the window switches to the disagreement mode on a change
        self._proc: subprocess.Popen | None = None
        self._tmp: Path | None = None
        self._n_files = 0  # temporary files made, for their names
        self._series: tuple | None = None  # (key, x, y) of the mean-JS plot

    # -- the child process ---------------------------------------------------------------
    def _folder(self) -> Path:
        if self._tmp is None:
            self._tmp = Path(tempfile.mkdtemp(prefix="dpgviz-models-"))
        return self._tmp

    def _command(self, args: list[str]) -> tuple[int, str]:
        """Run `python -m dpgviz ARGS` (job thread); (exit code, stdout). CommandError for exit code 2+."""
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "dpgviz", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        self._proc = proc
        try:
            out, err = proc.communicate()
        finally:
            self._proc = None
        if proc.returncode not in (0, 1):
            lines = [line for line in err.splitlines() if line.strip()]
            reason = next((line.removeprefix("dpgviz: ") for line in reversed(lines) if line.startswith("dpgviz: ")),
                          lines[-1] if lines else f"exit code {proc.returncode}")
            raise CommandError(reason)
        return proc.returncode, out

    def _snapshot_file(self) -> tuple[Path, Callable[[], Path]] | None:
        """Save the records shown to a temporary session (job thread does the writing); None: said why."""
        snapshot = self.files.snapshot()
        if snapshot is None:
            return None
        self._n_files += 1
        path = self._folder() / f"snapshot-{self._n_files}.dpgviz"
        opened = self.doc.session
        runtime = dict(opened.runtime) if opened is not None and opened.store is self.doc.store else None

        def write() -> Path:
            digest = snapshot.model_sha256
            weights = model_file(snapshot.model_path)
            if weights is not None and digest is None:
                digest = checkpoint_sha256(weights)
            return save_session(
                path, snapshot.store, snapshot.vocab, settings=snapshot.settings, model_path=snapshot.model_path,
                model_sha256=digest, model_info=snapshot.model_info, runtime=runtime,
            )

        return path, write

    def _can_start(self) -> bool:
        if self.runs.is_running:
            self.notices.say("Stop the run first.", is_error=True)
            return False
        return self.jobs.is_free()

    # -- compare models --------------------------------------------------------------------
    def compare_models(self, entries: list[ModelEntry], settings: GenerationSettings) -> bool:
        """Run `settings` on every model of `entries` (at least two); the result opens side by side."""
        if len(entries) < 2:
            self.notices.say("Pick at least two models to compare.", is_error=True)
            return False
        if settings.has_prompt:
            self.notices.say("Models are compared from an all-masked start: clear the prompt first.", is_error=True)
            return False
        if not self._can_start():
            return False
        self._n_files += 1
        out = self._folder() / f"compare-{self._n_files}.dpgviz"
        args = ["compare", "--models", ",".join(model_name(e) for e in entries), *settings_flags(settings),
                "--device", self.runs.device, "--dtype", self.runs.dtype, "--out", str(out), "--json"]
        names = ", ".join(e.name for e in entries)

        def work(progress: Progress) -> dict:
            progress(0, 0)
            return json.loads(self._command(args)[1])

        def done(result: object) -> str:
            if self.runs.is_running:
                return f"Compared {names}; saved in {out} (stop the run to open it)."
            try:
                session = open_session(out)
            except SessionError as exc:
                return f"Compared {names}, but the result does not open: {exc}"
            self.files.adopt(session, None)  # Save asks where: the temporary file goes with the window
            for hook in self.files.on_opened:
                hook(session)
            texts = "; ".join(f"{r['model']}: {r['forward_passes']} passes, mean p {r['mean_confidence']:.3f}"
                              for r in result["results"])
            return f"Compared {len(entries)} models ({texts}); pick any two in the compare view."

        self.jobs.start(f"comparing {len(entries)} models", work, done)
        return True

    def _branch_job(self, verb: str, branch: str | None) -> tuple[str, StepStore, Path, Callable[[], Path]] | None:
        """(branch, store, snapshot path, its writer) for a command on `branch` (default: the one shown);
        None, with a message, when there is no such branch or another command is running."""
        branch = self.doc.view.branch if branch is None else branch
        store = self.doc.store
        if store is None or branch not in store.branches:
            self.notices.say(f"Nothing to {verb}: generate a run or open a session.", is_error=True)
            return None
        if not self._can_start():
            return None
        snap = self._snapshot_file()
        if snap is None:
            return None
        return (branch, store, *snap)

    # -- score -----------------------------------------------------------------------------
    def score(self, entry: ModelEntry, branch: str | None = None) -> bool:
        """Score `branch` (default: the one shown) with the model of `entry` (a layer of that branch)."""
        ready = self._branch_job("score", branch)
        if ready is None:
            return False
        branch, store, path, write = ready
        scored = path.with_name(path.stem + "-scored.dpgviz")
        vocab_size = self.doc.vocab.size if self.doc.vocab is not None else 0

        def work(progress: Progress) -> ScoreLayer:
            progress(0, 0)
            write()
            self._command(["score", str(path), "--branch", branch, "--model", model_name(entry), "--out", str(scored),
                           "--json"])
            with open_session(scored) as session:
                layer = layer_of(session.store, branch)
                if layer is None:
                    raise CommandError("the scored session holds no layer")
                arrays = {f.name: np.array(getattr(layer, f.name)) for f in dataclasses.fields(layer)
                          if isinstance(getattr(layer, f.name), np.ndarray)}  # copies: the file's map closes
                return ScoreLayer(branch=layer.branch, model=dict(layer.model), info=dict(layer.info), **arrays)

        def done(layer: object) -> str:
            if self.doc.store is not store or branch not in store.branches:
                return "The records shown changed meanwhile; score again."
            put_layer(store, layer)
            self.scored += 1
            summary = js_summary(store, layer, vocab_size)
            return (f"Scored branch {branch} with {entry.name}: mean JS {summary['mean_js']:.4f} bits over "
                    f"{len(layer.rows)} steps. Colour mode: disagreement.")

        self.jobs.start(f"scoring with {entry.name}", work, done)
        return True

    def layer(self, branch: str | None = None) -> ScoreLayer | None:
        """The score layer of `branch` (default: the one shown), if any."""
        store = self.doc.store
        branch = self.doc.view.branch if branch is None else branch
        return layer_of(store, branch) if store is not None and branch is not None else None

    def js_series(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(record indices, mean JS) of the shown branch's layer, for the plot; None without one."""
        layer, store = self.layer(), self.doc.store
        if layer is None or store is None:
            return None
        rows = self.doc.rows()
        key = (id(layer), id(store), id(rows))
        if self._series is None or self._series[0] != key:
            where = {int(r): k for k, r in enumerate(rows)}
            vocab_size = self.doc.vocab.size if self.doc.vocab is not None else 0
            summary = js_summary(store, layer, vocab_size)
            y = np.array([np.nan if v is None else v for v in summary["mean_js_by_step"]])
            x = np.array([where.get(int(r), -1) for r in layer.rows], dtype=np.float64)
            keep = x >= 0
            self._series = (key, x[keep], y[keep], summary["mean_js"])
        return self._series[1], self._series[2]

    def js_mean(self) -> float | None:
        """Mean JS over every position scored in the shown branch's layer (as `score` prints it)."""
        return self._series[3] if self.js_series() is not None else None

    def js_top(self) -> float:
        """Top (bits) of the disagreement colour scale of the shown branch's layer (1.0 without one)."""
        layer, store = self.layer(), self.doc.store
        if layer is None or store is None:
            return 1.0
        return scale_top(store, layer, self.doc.vocab.size if self.doc.vocab is not None else 0)

    def second_opinion(self, pos: int, sampled_record: int | None) -> SecondOpinion | None:
        """What the scoring model stored at `pos` of the record whose candidates the tooltip shows."""
        store, vocab, layer = self.doc.store, self.doc.vocab, self.layer()
        if layer is None or store is None or vocab is None or sampled_record is None or store.layout.is_blocks:
            return None
        rows = self.doc.rows()
        if not 0 <= sampled_record < len(rows) or not 0 <= pos < store.layout.seq_len:
            return None
        row = int(rows[sampled_record])
        i = layer.index(row)
        found = layer.candidates_at(i, pos) if i is not None else None
        if found is None:
            return None
        ids, probs = found[0].astype(np.int64), found[1].astype(np.float32)
        strings = vocab.strings()
        order = np.argsort(-probs, kind="stable")
        candidates = tuple((int(ids[k]), str(strings[ids[k]]), float(probs[k])) for k in order if probs[k] > 0)
        own = store.candidates_at(row, pos)
        js = None
        if own is not None:
            js = float(js_bits(own[0][None], own[1][None], found[0][None], found[1][None], vocab.size)[0])
        p = float(layer.confidence[i, pos])
        return SecondOpinion(layer.name, candidates, p if np.isfinite(p) else None, js)

    # -- verify ----------------------------------------------------------------------------
    def verify(self, branch: str | None = None) -> bool:
        """Re-run `branch` (default: the one shown) with the model that made it; say if it is identical."""
        ready = self._branch_job("verify", branch)
        if ready is None:
            return False
        branch, _, path, write = ready
        args = ["verify", str(path), "--branch", branch, "--json"]
        if self.models_dir:
            args += ["--models-dir", self.models_dir]

        def work(progress: Progress) -> dict:
            progress(0, 0)
            write()
            return json.loads(self._command(args)[1])

        def done(outcome: object) -> str:
            self.verified[branch] = dict(outcome)
            return f"Verify branch {branch}: {outcome['line']}."

        self.jobs.start(f"verifying branch {branch}", work, done)
        return True

    # -- lifetime ----------------------------------------------------------------------------
    def close(self) -> None:
        """End a command still running (its job then fails quietly) and remove the temporary files."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
        tmp, self._tmp = self._tmp, None
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)  # an opened comparison stays mapped until its session closes
