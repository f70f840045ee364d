"""The workspace's inspection half: the record shown as the canvas draws it, and what the
model believed about a token.

    shown()            the record shown, composed across blocks in a block run (ShownRecord)
    cell_extras(mode)  per-position arrays a colour mode or the remask glyphs need
    token_info(pos)    the tooltip's and the inspector's numbers and candidates
    preview_resample   another temperature / top-p drawn from the stored top-k (no forward pass)

`Inspection` is handed the `Document` (the store, view and vocabulary it reads), the `Runs`
(a live run refreshes the decoding order less often) and the `Notices`; it keeps the
preview shown and its caches. numpy and dpgviz.core/store only; no dearpygui, no torch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from dpgviz.app.document import Document
from dpgviz.app.notices import Notices
from dpgviz.app.runs import Runs
from dpgviz.core import color_modes
from dpgviz.core.prompt import padding_after_eos
from dpgviz.core.records import FLAG_MASKED, FLAG_NEW, FLAG_PADDING, FLAG_PROMPT
from dpgviz.core.settings import planned_steps
from dpgviz.core.vocab import Vocabulary
from dpgviz.store.step_store import StepStore

ORDER_REFRESH_S = 0.5  # how often the decoding-order mode is recomputed while a run appends


@dataclass(frozen=True)
class CellExtras:
    """Per-position arrays for the record shown that it does not store (derived from the
    branch's history): a derived colour mode's values under its name, 'ghost' = the tokens
    of the record before (what a remasked cell held). `key` says what they are, so a canvas
    redraws only when it changes."""

    key: tuple = ()
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    label: str = ""  # said above the canvas (a preview says it is one)


NO_EXTRAS = CellExtras()


@dataclass(frozen=True)
class ShownRecord:
    """One record as the canvas draws it: full-length arrays, and what the info line says.

    For a run in one block `get(name)` is the store row itself; for a semi-autoregressive
    run (records hold one block each) it is the whole sequence composed at that record
    (store.blocks: finished blocks, the record's block, masks for blocks to come).
    `key` names the record, so a canvas redraws only when it changes.
    """

    key: tuple
    row: int  # the store row of the record (its own block's, in a block run)
    seq_len: int  # positions drawn: the whole sequence
    kind: str
    iteration: int
    n_masked: int
    steps: int | None  # iterations the run is planned for ("iteration i of S"); None: its strategy decides
    block: str  # "" for a one-block run, else "block b of B"
    get: Callable[[str], np.ndarray]

    @classmethod
    def of_row(cls, store: StepStore, row: int, branch: str | None = None) -> ShownRecord:
        """A store row as it is (no composition): the compare view's panes."""
        settings = store.branches[branch].settings if branch in store.branches else {}
        return cls(
            (id(store), row), row, store.layout.seq_len, store.kind(row), int(store.columns["iteration"][row]),
            int(store.columns["n_masked"][row]), planned_steps(settings), "",
            lambda name: store.get(name, row),
        )


@dataclass(frozen=True)
class TokenInfo:
    """What the tooltip and the inspector say about one position of the record shown."""

    pos: int
    record: int  # index in the branch's timeline
    token: str | None  # None where masked
    token_id: int
    state: str  # core.palette STATE_NAMES
    p: float | None  # p(token) under the model at this record
    entropy: float | None
    score: float | None
    rank: int | None  # 1 = the most probable candidate; None when not among the stored ones
    candidates: tuple[tuple[int, str, float], ...]  # (id, text, probability), most probable first
    sampled_record: int | None  # the record the candidates come from (the step that last sampled it)
    sampled_label: str  # e.g. "this step" or "record 7 (iteration 3, prediction)"


@dataclass(frozen=True)
class Preview:
    """A re-sample of one record from its stored top-k at another temperature / top-p (no forward pass)."""

    row: int
    temperature: float
    top_p: float
    seed: int
    tokens: np.ndarray  # (N,) ids drawn; -1 where the record stored no candidates

    @property
    def label(self) -> str:
        return f"PREVIEW: re-sampled from the stored top-k at T={self.temperature:g}, top-p={self.top_p:g}"


class Inspection:
    """What the canvas draws and what the model believed (see the module docstring)."""

    def __init__(self, doc: Document, runs: Runs, notices: Notices) -> None:
        self.doc, self.runs, self.notices = doc, runs, notices
        self.preview: Preview | None = None  # a re-sample preview of one record, if shown
        self._preview_changes: tuple[Preview, np.ndarray] | None = None
        self._preview_store: object | None = None  # the store the preview was drawn from
        self._order_cache: tuple | None = None  # (key, version, time, decoding order)
        self._composer: tuple | None = None  # (key, store.blocks.Composer) of the shown branch
        self._block_extras_cache: tuple | None = None
        self._block_starts_cache: tuple | None = None
        self._derived_cache: tuple | None = None  # (key, values) of a derived colour mode
        self._marks_cache: tuple | None = None  # (key, arrays) of a record's block starts and padding

    def shown(self) -> ShownRecord | None:
        """The record shown, as the canvas draws it (composed across blocks in a block run)."""
        row = self.doc.current_row()
        store = self.doc.store
        if row is None or store is None:
            return None
        if not store.layout.is_blocks:
            return ShownRecord.of_row(store, row, self.doc.view.branch)
        from dpgviz.store.blocks import Composer

        rows, record = self.doc.rows(), min(max(0, self.doc.view.record), self.doc.n_records() - 1)
        key = (id(store), id(rows), self.doc.vocab.mask_id if self.doc.vocab is not None else 0)
        if self._composer is None or self._composer[0] != key:
            self._composer = (key, Composer(store, rows, key[2]))
        composer = self._composer[1]
        tokens = composer.field("tokens", record)
        layout = store.layout
        n_masked = int((composer.field("flags", record) & FLAG_MASKED != 0).sum())
        settings = store.branches[self.doc.view.branch].settings
        return ShownRecord(
            (id(store), row, "blocks", record), row, layout.total_len, store.kind(row),
            int(store.columns["iteration"][row]), n_masked, planned_steps(settings),
            f"block {int(store.columns['block'][row]) + 1} of {layout.n_blocks}",
            lambda name: tokens if name == "tokens" else composer.field(name, record),
        )

    def cell_extras(self, mode: str) -> CellExtras:
        """What the canvas needs beyond the record shown, for colour mode `mode` (cached): a derived
        mode's values (core.color_modes: `values` over this record's `RecordCells`), the ghosts."""
        spec = color_modes.get(mode)
        rows, record = self.doc.rows(), self.doc.view.record
        if self.doc.store is None or not len(rows):
            return NO_EXTRAS
        record = min(max(0, record), len(rows) - 1)
        row, prev = int(rows[record]), int(rows[record - 1]) if record > 0 else None
        if self.doc.store.layout.is_blocks:
            return self._block_extras(spec, rows, record)
        tokens = self.doc.store.column("tokens")
        key: tuple = (row, prev, self.doc.view.hide_after_eos)
        arrays = dict(self._marks(rows, row))
        if prev is not None:
            arrays["ghost"] = tokens[prev]
        if spec.derived:
            arrays[spec.name], derived_key = self._derived(spec, rows, record)
            key += derived_key
        preview, label = self.preview, ""
        if preview is not None and preview.row == row:
            arrays["preview"] = preview.tokens
            key += (id(preview),)
            label = preview.label
        return CellExtras((spec.name, *key), arrays, label)

    def _marks(self, rows: np.ndarray, row: int) -> dict[str, np.ndarray]:
        """A record's block starts and padding / hidden cells (computed once per record, not per frame)."""
        store = self.doc.store
        key = (id(store), self.doc.view.branch, len(rows), int(rows[0]), row, self.doc.view.hide_after_eos, id(self.doc.vocab))
        if self._marks_cache is not None and self._marks_cache[0] == key:
            return self._marks_cache[1]
        arrays: dict[str, np.ndarray] = {}
        starts = self._block_starts(rows)  # a recorded run's block= boundaries
        if starts is not None:
            arrays["block_start"] = starts
        self._add_padding(arrays, store.column("tokens")[row], store.column("flags")[row])
        self._marks_cache = (key, arrays)
        return arrays

    def _derived(self, spec: color_modes.ColorMode, rows: np.ndarray, record: int) -> tuple[np.ndarray, tuple]:
        """(values, what they depend on) of a derived mode at `record`: computed once per key."""
        store, branch = self.doc.store, self.doc.view.branch
        from dpgviz.store.layers import layer_of

        commit = self._order_cache[3] if self._order_cache is not None else None  # a new decoding order: anew
        key = (spec.name, id(store), branch, record, len(rows), id(commit), id(layer_of(store, branch)))
        if self._derived_cache is not None and self._derived_cache[0] == key:
            return self._derived_cache[1], key
        cells = RecordCells(store, rows, record, self.doc.vocab, branch, self.decoding_commit)
        values = spec.cell_values(cells)[0]
        self._derived_cache = (key, values)
        return values, key

    def _add_padding(self, arrays: dict[str, np.ndarray], tokens: np.ndarray, flags: np.ndarray) -> None:
        """'padding': what a model that pads (LLaDA, Dream) wrote after its end of text, and a batch
        row's left padding (FLAG_PADDING, a Recorder's attention_mask), drawn dimmed. 'hidden': with
        View > Hide tokens after the first EOS, every position after the first end token the run wrote."""
        vocab = self.doc.vocab
        eos = vocab.eos_id if vocab is not None else None
        left = (np.asarray(flags) & FLAG_PADDING) != 0
        given = np.asarray(flags) | (left.astype(np.uint8) * FLAG_PROMPT)  # left padding: given, not written
        padding = padding_after_eos(tokens, given, eos)
        if left.any():
            padding = left if padding is None else padding | left
        if padding is not None and padding.any():
            arrays["padding"] = padding
        if self.doc.view.hide_after_eos and vocab is not None and vocab.eos_ids:
            is_end = np.isin(tokens, vocab.eos_ids) & ((given & FLAG_PROMPT) == 0)
            if is_end.any():
                hidden = np.zeros(len(is_end), dtype=bool)
                hidden[int(np.argmax(is_end)) + 1 :] = True
                arrays["hidden"] = hidden

    def _block_starts(self, rows: np.ndarray) -> np.ndarray | None:
        """(N,) bool: where each block of a one-block-layout run begins (a Recorder's block=): the
        first position committed (FLAG_NEW) in a record of that block; None when it has one block."""
        store = self.doc.store
        blocks = store.column("block")[rows]
        if not len(rows) or int(blocks.max()) == 0:
            return None
        key = (id(store), len(rows), int(rows[-1]))
        if self._block_starts_cache is not None and self._block_starts_cache[0] == key:
            return self._block_starts_cache[1]
        is_new = (store.column("flags")[rows] & FLAG_NEW) != 0  # (R, N)
        starts = np.zeros(is_new.shape[1], dtype=bool)
        for b in np.unique(blocks).tolist():  # a few blocks
            hit = is_new[blocks == b].any(axis=0)
            if hit.any():
                starts[int(np.argmax(hit))] = True
        starts[0] = False  # the sequence's start is no boundary
        self._block_starts_cache = (key, starts)
        return starts

    def _block_extras(self, spec: color_modes.ColorMode, rows: np.ndarray, record: int) -> CellExtras:
        """cell_extras of a block run: the record before composed whole, so positions line up."""
        from dpgviz.store.blocks import compose

        mask_id = self.doc.vocab.mask_id if self.doc.vocab is not None else 0
        key = (id(self.doc.store), id(rows), record, id(self.preview), self.doc.view.hide_after_eos)  # a new preview draws anew
        if self._block_extras_cache is not None and self._block_extras_cache[0] == (spec.name, *key):
            return self._block_extras_cache[1]
        arrays: dict[str, np.ndarray] = {}
        if record > 0:
            arrays["ghost"] = compose(self.doc.store, rows, record - 1, "tokens", mask_id).copy()
        label = ""
        if spec.derived:
            arrays[spec.name], _ = self._derived(spec, rows, record)
        if self.doc.vocab is not None and self.doc.vocab.eos_id is not None:
            self._add_padding(
                arrays, compose(self.doc.store, rows, record, "tokens", mask_id),
                compose(self.doc.store, rows, record, "flags", mask_id),
            )
        preview = self.preview  # a re-sample preview of this record (whole-sequence tokens, -1 elsewhere)
        if preview is not None and preview.row == int(rows[record]):
            arrays["preview"] = preview.tokens
            label = label or preview.label
        extras = CellExtras((spec.name, *key), arrays, label)
        self._block_extras_cache = ((spec.name, *key), extras)
        return extras

    def preview_changes(self) -> np.ndarray | None:
        """Positions where the preview shown draws another token than the record (for a tint)."""
        preview, row = self.preview, self.doc.current_row()
        if preview is None or row is None or preview.row != row or self.doc.store is None:
            return None
        if self._preview_changes is None or self._preview_changes[0] is not preview:
            tokens = self._shown_tokens(row)
            self._preview_changes = (preview, (preview.tokens >= 0) & (preview.tokens != tokens))
        return self._preview_changes[1]

    def token_info(self, pos: int, record: int | None = None) -> TokenInfo | None:
        """Position `pos` at a record of the shown branch (default: the one shown), or None."""
        from dpgviz.core.palette import STATE_NAMES, mask_states
        from dpgviz.store.inspect import sampled_at

        store, rows, vocab = self.doc.store, self.doc.rows(), self.doc.vocab
        if store is None or vocab is None or not len(rows) or not 0 <= pos < store.layout.total_len:
            return None
        record = min(max(0, self.doc.view.record if record is None else record), len(rows) - 1)
        global_pos = pos
        if store.layout.is_blocks:  # the block holding pos, at its last record so far (store.blocks)
            from dpgviz.store.blocks import Composer

            block, pos = store.layout.block_of(pos)
            if block < 0:  # the prompt before the first block: fixed, no record predicted it
                token_id = int(store.layout.prefix[pos])
                return TokenInfo(global_pos, record, str(vocab.strings()[token_id]), token_id, "prompt", None, None,
                                 None, None, (), None, "the prompt: fixed, never predicted")
            source = int(Composer(store, rows, vocab.mask_id).sources(record)[block])
            if source < 0:  # that block has not started: masked, nothing proposed yet
                return TokenInfo(global_pos, record, None, vocab.mask_id, "masked", None, None, None, None, (),
                                 None, f"block {block + 1} has not started at this step")
            in_block = np.flatnonzero(store.column("block")[rows] == block)  # that block's records, in order
            record = int(np.searchsorted(in_block, source))
            rows = rows[in_block]
        row = int(rows[record])
        token_id = int(store.columns["tokens"][row, pos])
        flags = int(store.columns["flags"][row, pos])
        state = STATE_NAMES[int(mask_states(np.array([flags]))[0])]

        def number(name: str) -> float | None:
            value = float(store.columns[name][row, pos])
            return value if np.isfinite(value) else None

        sampled = sampled_at(store, rows, pos, record)
        candidates: tuple[tuple[int, str, float], ...] = ()
        label = "no candidates stored up to this step"
        if sampled is not None:
            src = int(rows[sampled])
            ids, probs = store.candidates_at(src, pos)  # sampled_at found them, so not None
            probs = probs.astype(np.float32)
            order = np.argsort(-probs, kind="stable")
            strings = vocab.strings()
            candidates = tuple(
                (int(ids[k]), str(strings[int(ids[k])]), float(probs[k])) for k in order if probs[k] > 0
            )
            kind = store.kind(src)
            iteration = int(store.columns["iteration"][src]) + 1
            label = "this step" if sampled == record else f"record {sampled + 1} (iteration {iteration}, {kind})"
        is_masked = token_id == vocab.mask_id
        rank = next((k + 1 for k, (cid, _, _) in enumerate(candidates) if cid == token_id), None)
        return TokenInfo(
            global_pos, record, None if is_masked else str(vocab.strings()[token_id]), token_id, state,
            number("confidence"), number("entropy"), number("score"), None if is_masked else rank,
            candidates, sampled, label,
        )

    def preview_resample(self, temperature: float, top_p: float, seed: int = 0) -> bool:
        """Show what the record shown would have drawn at `temperature` / `top_p`, from its stored top-k."""
        from dpgviz.store.resample import resample_preview

        row = self.doc.current_row()
        if row is None or self.doc.store is None:
            self.notices.say("Nothing to re-sample: generate a run or open a session.", is_error=True)
            return False
        if not temperature > 0 or not 0 < top_p <= 1:
            self.notices.say(f"temperature must be > 0 and top-p in (0, 1]; got {temperature:g}, {top_p:g}", is_error=True)
            return False
        store = self.doc.store
        drawn = resample_preview(*store.top_k(row), temperature, top_p, seed)
        if not (drawn >= 0).any():
            self.notices.say("This step stored no candidates (only steps that predicted masked tokens do).", is_error=True)
            return False
        if store.layout.is_blocks:  # the record's block, placed in the whole sequence the canvas draws
            off = int(store.columns["offset"][row])
            n = store.layout.span(off)
            drawn, block = np.full(store.layout.total_len, -1, dtype=drawn.dtype), drawn
            drawn[off : off + n] = block[:n]
        self.preview = Preview(row, float(temperature), float(top_p), int(seed), drawn)
        self._preview_store = store
        changed = int(((drawn >= 0) & (drawn != self._shown_tokens(row))).sum())
        self.notices.say(f"Preview: {changed} of {int((drawn >= 0).sum())} sampled tokens differ at T={temperature:g}, "
                 f"top-p={top_p:g}. Nothing ran; Run from here makes it real.")
        return True

    def _shown_tokens(self, row: int) -> np.ndarray:
        """Tokens of the record shown (store row `row`): the row, or the whole sequence composed in a block run."""
        if not self.doc.store.layout.is_blocks:
            return self.doc.store.columns["tokens"][row]
        return self.shown().get("tokens")

    def clear_preview(self) -> None:
        self.preview = None
        self._preview_store = None

    def settle(self) -> None:
        """Drop a preview drawn from another store (a session opened or a run replaced it): its row
        would name another record."""
        if self.preview is not None and self._preview_store is not self.doc.store:
            self.clear_preview()

    def decoding_order(self) -> np.ndarray:
        """Per position, when in the shown branch's timeline its final token was committed for
        good, as a fraction of the run (0 = first record, 1 = last; NaN = never)."""
        commit = self.decoding_commit().astype(np.float32)
        return np.where(commit >= 0, commit / max(1, self.doc.n_records() - 1), np.nan).astype(np.float32)

    def decoding_commit(self) -> np.ndarray:
        """Per position, the history record from which the shown branch holds its final token for
        good (-1 never: store.inspect.commit_records). Cached per branch and store version; during
        a live run at most every ORDER_REFRESH_S."""
        from dpgviz.store.inspect import commit_records

        key = (id(self.doc.store), self.doc.view.branch)
        now = time.perf_counter()
        cached = self._order_cache
        if cached is not None and cached[0] == key and (
            cached[1] == self.doc.store.version or (self.runs.is_running and now - cached[2] < ORDER_REFRESH_S)
        ):
            return cached[3]
        commit = commit_records(self.doc.store, self.doc.rows())
        self._order_cache = (key, self.doc.store.version, now, commit)
        return commit


class RecordCells:
    """core.color_modes.Cells of one record of a branch, every position (or `positions`): what a
    derived mode reads for the canvas (app.inspect) and the compare view's panes. A block run's
    arrays are composed over the whole sequence (store.blocks.compose)."""

    def __init__(
        self, store: StepStore, rows: np.ndarray, record: int, vocab: Vocabulary | None, branch: str,
        commit: Callable[[], np.ndarray], positions: np.ndarray | slice | None = None,
    ) -> None:
        self.store, self.rows, self.branch, self._commit = store, rows, branch, commit
        self.records = np.array([record])
        self.n_records = len(rows)
        self.vocab_size = vocab.size if vocab is not None else 0
        self.mask_id = vocab.mask_id if vocab is not None else 0
        self._at = slice(None) if positions is None else positions
        self.positions = np.arange(store.layout.total_len)[self._at]

    def _row(self, name: str, k: int) -> np.ndarray:
        if not self.store.layout.is_blocks:
            return self.store.column(name)[int(self.rows[k])]
        from dpgviz.store.blocks import compose

        return compose(self.store, self.rows, k, name, self.mask_id)

    def field(self, name: str) -> np.ndarray:
        return self._row(name, int(self.records[0]))[self._at][None]

    def changed(self) -> np.ndarray:
        """Another token than at the record before (a remask too); none at the first record."""
        k = int(self.records[0])
        if k == 0:
            return np.zeros((1, len(self.positions)), dtype=bool)
        return (self._row("tokens", k) != self._row("tokens", k - 1))[self._at][None]

    def commit(self) -> np.ndarray:
        return self._commit()[self._at]

    def disagreement(self) -> np.ndarray:
        from dpgviz.store.layers import disagreement_at

        js = disagreement_at(self.store, self.branch, self.rows, int(self.records[0]), self.vocab_size, scaled=True)
        return js[self._at][None]
