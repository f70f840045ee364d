"""`dpgviz.Recorder`: log a run of your own sampler, to a session file and, live, into a window.

    rec = dpgviz.Recorder(vocab, mask_id, length, path="run.dpgviz", model="my-model", settings=None,
                          spawn=False, connect=None, names=None, n_ids=None)
    rec.log(x, logits=None, probs=None, score=None, kind=None, block=None, attention_mask=None)
    rec.close()                                        # also: with dpgviz.Recorder(...) as rec:

`names` labels the B rows (branches) of a batch, one string each (default "MODEL row b").
`score` (length,) or (B, length): the number that decided each commit (a remask's
confidence), shown in the tooltip and the remask-score colour mode. `block`: the block this
record works on, an index or a (start, end) range of positions; the canvas draws a boundary
where each block's committed positions begin. `attention_mask` (length,) or (B, length), 0
at left padding: those positions are flagged FLAG_PADDING (drawn dimmed, never as prompt);
it holds for later records until another is given.

Ids. Every id below the model's width is accepted: the width is the largest of the
vocabulary's length, `n_ids`, and the last dimension of the first logits or probabilities
logged (the file's vocabulary is written with the first record that has them, or with the
second record, whichever comes first). Ids no token names draw as `<id>`.

What a log becomes. `x` (length,) or (B, length) ids in the caller's id space, a numpy array
or a torch tensor on any device, is mapped to dpgviz's ids (`IdMap`: every id but the mask in
order, then the mask, as engine.hf maps a model's ids). With logits or probabilities
((length, V) or (B, length, V)) it stores what the sampler stores (record.stats): p(token) at
visible positions, and the entropy and top-8 candidates at positions that are masked now or
were masked in the previous record (the ones this forward pass predicted), so the tooltip,
inspector, plots and colour modes work as for dpgviz's own runs. Without them only the ids
(confidence and entropy NaN, no candidates).

Kinds. `kind=None` is inferred per row from its masks: the first record is 'initial'; then
'final' when nothing is masked, 'remask' when more positions are masked than in the previous
record, else 'prediction'. `iteration` counts the predictions (as the sampler's does: a
prediction and the remask after it share one), `forward_passes` the logs that came with
logits or probabilities, `target_masks` is the mask count itself (no schedule is known).
Positions visible in a row's first record, when it has masks, are its prompt (FLAG_PROMPT and
FLAG_PROTECTED, for as long as they keep that token).

Where it goes. The file (record.file) is the recovery journal's append-only format, which
store.session_open.open_session reads like a session: `show`, `export`, `branch` and File > Open
take it; a killed recorder's file holds every record but at most the last. Live viewing
(record.stream): `spawn=True` starts a window listening on a free port, `connect="HOST:PORT"`
streams to one already listening (`python main.py --listen-runs PORT`); when no window
answers, the recorder says so once (a logging warning) and goes on writing the file.

numpy only at import; torch is imported when the caller passes torch tensors, transformers
and engine.hf when `vocab` is a Hugging Face tokenizer, zmq when a stream opens.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from dpgviz.core.records import FLAG_PADDING, KIND_CODE, KINDS, RecordLayout, step_flags
from dpgviz.core.vocab import Vocabulary, end_ids
from dpgviz.record.file import RecordFile, rows_of
from dpgviz.record.stats import is_torch, token_stats

log = logging.getLogger("dpgviz.record")

TOP_K = 8  # candidates per position, as the sampler's default (GenerationSettings.top_k)
LOGGED_KINDS = KINDS[:4]  # initial, prediction, remask, final ('edit' is made by hand in dpgviz)


@dataclass(frozen=True)
class IdMap:
    """The caller's ids -> dpgviz's: real tokens 0..V-1, the mask at V (core.vocab)."""

    vocab: Vocabulary
    to_internal: np.ndarray  # (n_caller,) int64: dpgviz id of each caller id; -1: not a token
    excluded: np.ndarray  # caller ids never shown as candidates: the mask, special tokens
    mask_caller: int

    @property
    def n_caller(self) -> int:
        return len(self.to_internal)

    @classmethod
    def of(cls, vocab: Any, mask_id: int) -> IdMap:
        """A list of display strings (one per id) or a Hugging Face tokenizer, and the mask's id in it."""
        mask_id = int(mask_id)
        if mask_id < 0:
            raise ValueError(f"mask_id must be >= 0, got {mask_id}")
        if isinstance(vocab, (list, tuple)):
            strings = [str(s) for s in vocab]
            kept = [i for i in range(len(strings)) if i != mask_id]  # once per recorder
            itos = tuple(strings[i] for i in kept)
            voc = Vocabulary(itos=itos, eos_ids=end_ids(itos, range(len(itos))))  # "</s>", "<|eot_id|>", ...
            to_caller = [*kept, mask_id]
            n_caller = max(len(strings), mask_id + 1)
        elif hasattr(vocab, "convert_ids_to_tokens"):
            from dpgviz.record.tokenizer import model_width, tokenizer_vocab  # cached per tokenizer

            voc, to_caller = tokenizer_vocab(vocab, mask_id)
            n_caller = len(to_caller)
            width = model_width(vocab)
            if width is not None and width > voc.n_ids:  # the model's ids, from its config.json
                voc = replace(voc, model_vocab_size=width)
        else:
            raise TypeError(f"vocab must be a list of strings or a Hugging Face tokenizer, not {type(vocab).__name__}")
        to_internal = np.full(n_caller, -1, dtype=np.int64)
        to_internal[np.asarray(to_caller, dtype=np.int64)] = np.arange(len(to_caller))
        never = np.asarray(to_caller, dtype=np.int64)[list(voc.never_sample)] if voc.never_sample else np.zeros(0, np.int64)
        excluded = np.unique(np.concatenate([never, [mask_id]])).astype(np.int64)
        if mask_id != n_caller - 1:  # internal ids skip the mask: say where the model has it
            voc = replace(voc, model_mask_id=mask_id)
        return cls(voc, to_internal, excluded, mask_id)

    def internal(self, ids: np.ndarray) -> np.ndarray:
        """dpgviz ids of caller ids (>= 0): ids past the vocabulary are their own (the mask is last)."""
        inside = ids < self.n_caller
        return np.where(inside, self.to_internal[np.where(inside, ids, 0)], ids)

    def widened(self, n_ids: int) -> IdMap:
        """The same map, its vocabulary covering ids 0..n_ids-1 (drawn as `<id>` past its tokens)."""
        if n_ids <= self.vocab.n_ids:
            return self
        return replace(self, vocab=replace(self.vocab, model_vocab_size=int(n_ids)))


def _host_ids(x: Any) -> np.ndarray:
    """(B, L) int64 ids on the host from a torch tensor (any device) or anything numpy takes."""
    ids = x.detach().cpu().numpy() if is_torch(x) else np.asarray(x)
    if ids.dtype.kind not in "iu":
        raise TypeError(f"x must hold integer ids, got {ids.dtype}")
    return ids.astype(np.int64, copy=False).reshape((1, -1) if ids.ndim == 1 else ids.shape)


class Recorder:
    """Records a run of any sampler (see the module docstring). One thread; not for a process pool."""

    def __init__(
        self,
        vocab: Any,
        mask_id: int,
        length: int,
        path: str | Path | None = "run.dpgviz",
        model: str = "",
        settings: dict | None = None,
        spawn: bool = False,
        connect: str | None = None,
        *,
        key: str | None = None,
        names: list[str] | None = None,
        n_ids: int | None = None,
    ) -> None:
        """`key`: the listening window's key for `connect` when neither $DPGVIZ_KEY nor its connection file
        gives it. `names`: one label per row of the batch. `n_ids`: the model's ids (its logits' width)."""
        if int(length) < 1:
            raise ValueError(f"length must be >= 1, got {length}")
        self.ids = IdMap.of(vocab, mask_id)
        if n_ids is not None:
            self.ids = self.ids.widened(int(n_ids))
        self.vocab = self.ids.vocab
        self.length = int(length)
        self.model = str(model or "")
        self.settings = dict(settings or {})
        self.names = None if names is None else [str(n) for n in names]
        self.path = Path(path) if path is not None else None
        self.n_records = 0  # log calls so far
        model_path = self.model if self.model and Path(self.model).expanduser().exists() else None
        self._meta = {
            "settings": self.settings,
            "model_path": model_path,
            "model_sha256": None,
            "model_info": {"name": self.model or "recorded", "recorded_by": "dpgviz.Recorder"},
        }
        self._file: RecordFile | None = None  # opened with the first record written (the vocabulary's width is known)
        self._held: list[tuple[int, list[dict], dict]] = []  # records logged before the width was fixed (at most one)
        # The vocabulary and layout are written. Until then (a tokenizer whose model's width is not
        # known: no n_ids, no config.json beside it) records wait for the first logits' width.
        self._is_opened = False  # the header (vocabulary, layout) is written: the first record put
        self._is_fixed = n_ids is not None or isinstance(vocab, (list, tuple)) or self.vocab.n_ids > len(self.ids.to_internal)
        self._padding: np.ndarray | None = None  # (B, L) bool: the last attention_mask's zeros
        self._blocks: dict[tuple[int, int], int] = {}  # (start, end) ranges logged -> block index
        self._stream = None
        self._is_warned = False
        self._is_closed = False
        self._rows = 0  # B, fixed by the first log
        self._prev: np.ndarray | None = None  # (B, L) dpgviz ids of the previous record
        self._prev_masked = np.zeros(0, np.int64)  # (B,)
        self._prompt: np.ndarray | None = None  # (B, L) bool: FLAG_PROMPT positions
        self._prompt_tokens: np.ndarray | None = None  # (B, L) what they hold
        self._iteration = np.zeros(0, np.int64)  # (B,) predictions so far - 1
        self._passes = 0
        if spawn or connect:
            self._open_stream(spawn, connect, key)

    # -- the live link --------------------------------------------------------------------------
    def _open_stream(self, spawn: bool, connect: str | None, key: str | None) -> None:
        try:
            from dpgviz.record.stream import RecordStream

            self._stream = RecordStream.spawn() if spawn else RecordStream.connect(str(connect), key)
        except (ValueError, OSError, ImportError) as exc:  # no pyzmq, no key, a bad connection file
            self._warn(str(exc))
            return
        if not self._stream.is_open:
            self._warn(self._stream.reason)
            self._stream = None

    def _warn(self, reason: str) -> None:
        if self._is_warned:
            return
        self._is_warned = True
        where = f"logging to {self.path} only" if self.path is not None else "nothing is kept (path=None)"
        log.warning("dpgviz.Recorder: %s; %s", reason, where)

    def _stream_send(self, message: object) -> None:
        if self._stream is not None and not self._stream.send(message):
            self._warn(self._stream.reason)
            self._stream = None

    @property
    def branch_settings(self) -> dict:
        """Each branch's settings: the recorder's, with the length (`branch` checks a fork's against the records)."""
        return {"length": self.length, **self.settings}

    @property
    def is_streaming(self) -> bool:
        """A window takes the records as they are logged."""
        return self._stream is not None and self._stream.is_open

    # -- logging --------------------------------------------------------------------------------
    @property
    def layout(self) -> RecordLayout:
        return RecordLayout(seq_len=self.length, top_k=TOP_K, n_ids=self.vocab.n_ids)

    def log(self, x: Any, logits: Any = None, probs: Any = None, score: Any = None, kind: str | None = None,
            block: int | tuple[int, int] | None = None, attention_mask: Any = None) -> None:
        """One record: `x` (length,) or (B, length) ids; `logits` or `probs` (length, V) or (B, length, V);
        `score`, `attention_mask` (length,) or (B, length); `block` an index or a (start, end) range."""
        if self._is_closed:
            raise ValueError("this Recorder is closed")
        if logits is not None and probs is not None:
            raise ValueError("pass logits or probs, not both")
        if kind is not None and kind not in LOGGED_KINDS:
            raise ValueError(f"kind must be one of {', '.join(LOGGED_KINDS)} or None, got {kind!r}")
        ids = _host_ids(x)
        if ids.ndim != 2 or ids.shape[1] != self.length:
            raise ValueError(f"x has shape {tuple(ids.shape)}; expected ({self.length},) or (B, {self.length})")
        B = ids.shape[0]
        is_first = self._rows == 0
        if is_first:
            self._start(B)
        elif B != self._rows:
            raise ValueError(f"x has {B} rows; this run logs {self._rows} (B is fixed by the first record)")
        scores = logits if logits is not None else probs
        if scores is not None and not self._is_fixed:  # the logits' width: every id the model can produce
            self.ids = self.ids.widened(int(scores.shape[-1]))
            self.vocab = self.ids.vocab
        width = self.vocab.n_ids
        if ids.min() < 0 or ids.max() >= width:
            raise ValueError(
                f"x holds ids outside 0..{width - 1} (the vocabulary and the first logits' width; pass n_ids= for more)"
            )
        tokens = self.ids.internal(ids)  # (B, L)
        if (tokens < 0).any():
            raise ValueError("x holds ids that are neither a token of the vocabulary nor the mask")
        block_index = self._block_index(block)
        if attention_mask is not None:
            self._padding = self._per_row(attention_mask, "attention_mask", B) == 0
        mask = self.vocab.mask_id
        is_masked = tokens == mask
        n_masked = is_masked.sum(axis=1)  # (B,)
        arrays = self._arrays(tokens, is_masked, x, ids, scores, probs is not None)
        if score is not None:
            arrays["score"] = self._per_row(score, "score", B).astype(np.float16)
        if is_first:  # what a row's first record shows beside masks is given: its prompt
            self._prompt, self._prompt_tokens = ~is_masked & is_masked.any(axis=1, keepdims=True), tokens.copy()
        elif self._prompt is not None:
            self._prompt &= tokens == self._prompt_tokens  # a prompt position that changes is no longer one
        prompt = self._prompt if self._padding is None or self._prompt is None else self._prompt & ~self._padding
        flags = step_flags(self._prev, tokens, mask, None, prompt)
        if self._padding is not None:
            flags |= self._padding.astype(np.uint8) * FLAG_PADDING
            for name in ("confidence", "score"):  # padding is no token of the run: no numbers drawn there
                arrays[name] = np.where(self._padding, np.float16(np.nan), arrays[name])
        arrays["flags"] = flags
        arrays["tokens"] = tokens.astype(self.layout.id_dtype)
        if scores is not None:
            self._passes += 1
        scalars = [self._scalars(b, kind, is_first, int(n_masked[b])) for b in range(B)]  # B rows, not tokens
        for s in scalars:
            s["block"] = block_index
        self._write(scalars, arrays, fix=self._is_fixed or scores is not None or not is_first)
        self._prev, self._prev_masked = tokens, n_masked
        self.n_records += 1

    def _start(self, B: int) -> None:
        if self.names is not None and len(self.names) != B:
            raise ValueError(f"names has {len(self.names)} labels; x has {B} rows")
        self._rows = B
        self._iteration = np.full(B, -1, np.int64)

    def _per_row(self, values: Any, what: str, B: int) -> np.ndarray:
        """(B, L) host array of a per-position argument given as (L,) or (B, L)."""
        arr = values.detach().float().cpu().numpy() if is_torch(values) else np.asarray(values)
        if arr.shape == (self.length,) and B == 1:
            arr = arr[None]
        if arr.shape != (B, self.length):
            raise ValueError(f"{what} has shape {tuple(arr.shape)}; expected ({self.length},) or ({B}, {self.length})")
        return arr

    def _block_index(self, block: int | tuple[int, int] | None) -> int:
        """The record's block: an index as given, a (start, end) range numbered in the order first logged."""
        if block is None:
            return 0
        if isinstance(block, (tuple, list)):
            if len(block) != 2 or not 0 <= int(block[0]) < int(block[1]) <= self.length:
                raise ValueError(f"block {tuple(block)!r} is not a (start, end) range of positions in 0..{self.length}")
            return self._blocks.setdefault((int(block[0]), int(block[1])), len(self._blocks))
        if int(block) < 0:
            raise ValueError(f"block must be an index >= 0 or a (start, end) range, got {block!r}")
        return int(block)

    def _arrays(self, tokens: np.ndarray, is_masked: np.ndarray, x: Any, ids: np.ndarray, scores: Any,
                is_probs: bool) -> dict:
        """Dense record fields (B, L, ...) from the ids and the scores (record.stats)."""
        B, L, K = tokens.shape[0], self.length, self.layout.top_k
        nan = np.float16(np.nan)
        conf = np.full((B, L), nan, np.float16)
        entropy = np.full((B, L), nan, np.float16)
        top_ids = np.zeros((B, L, K), self.layout.id_dtype)
        top_probs = np.zeros((B, L, K), np.float16)
        if scores is not None:
            shape = tuple(scores.shape)
            if shape[:-1] not in ((B, L), (L,) if B == 1 else None):
                raise ValueError(f"{'probs' if is_probs else 'logits'} have shape {shape}; expected ({B}, {L}, V)")
            V = shape[-1]
            n_cols = min(self.vocab.n_ids, V)
            excluded = self.ids.excluded[self.ids.excluded < n_cols]
            k = min(K, n_cols - len(excluded))
            same_place = is_torch(x) and is_torch(scores) and x.device == scores.device
            flat_ids = x.reshape(-1) if same_place else ids.reshape(-1)  # the gather's ids where the scores are
            was_masked = is_masked if self._prev is None else (self._prev == self.vocab.mask_id)
            predicted = was_masked | is_masked  # (B, L) positions this pass predicted
            st = token_stats(scores.reshape(B * L, V), flat_ids, is_probs, k, excluded, n_cols, predicted.reshape(-1))
            conf[:] = np.where(is_masked, np.nan, st.p_token.reshape(B, L))
            entropy[:] = np.where(predicted, st.entropy.reshape(B, L), np.nan)
            cand_ids = self.ids.internal(st.top_ids).reshape(B, L, k)
            top_ids[..., :k] = np.where(predicted[..., None], cand_ids, 0)
            top_probs[..., :k] = np.where(predicted[..., None], st.top_probs.reshape(B, L, k), 0)
        score = np.full((B, L), nan, np.float16)
        return {"confidence": conf, "score": score, "entropy": entropy, "top_ids": top_ids, "top_probs": top_probs}

    def _scalars(self, b: int, kind: str | None, is_first: bool, n_masked: int) -> dict:
        if kind is None:
            if is_first:
                kind = "initial"
            elif n_masked == 0:
                kind = "final"
            else:
                kind = "remask" if n_masked > int(self._prev_masked[b]) else "prediction"
        if kind == "prediction" or (kind == "final" and not is_first and int(self._prev_masked[b]) > 0):
            self._iteration[b] += 1  # the pass that filled the last masks is an iteration too
        return {
            "iteration": int(max(0, self._iteration[b])), "kind": KIND_CODE[kind], "target_masks": n_masked,
            "n_masked": n_masked, "forward_passes": self._passes, "offset": 0, "block": 0,
        }

    def _write(self, scalars: list[dict], arrays: dict, fix: bool) -> None:
        """Write a record, or hold it until the vocabulary's width is fixed (`fix`: now)."""
        self._held.append((self.n_records, scalars, arrays))
        if fix:
            self._flush()

    def _flush(self) -> None:
        held, self._held = self._held, []
        for index, sc, ar in held:
            self._put(index, sc, ar, is_first=not self._is_opened)
            self._is_opened = True
        self._is_fixed = True

    def _put(self, index: int, scalars: list[dict], arrays: dict, is_first: bool) -> None:
        B = self._rows
        arrays["tokens"] = arrays["tokens"].astype(self.layout.id_dtype)
        arrays["top_ids"] = arrays["top_ids"].astype(self.layout.id_dtype)
        if is_first and self.path is not None:
            self._file = RecordFile(self.path, self.layout, self.vocab, self._meta)
        if self._file is not None:
            tree = self._tree() if is_first else None
            rows, pool = rows_of(self.layout, scalars, arrays, list(range(B)), self._file.n_pool)
            self._file.append(rows, pool, tree, B)
        if self._stream is not None:
            from dpgviz.ipc.listen import RecordsLogged, RunOpened

            if is_first:
                self._stream_send(RunOpened(
                    self.layout.to_dict(), self.vocab.to_dict(), self.branch_settings, self.model,
                    str(self.path or ""), B,
                ))
            self._stream_send(RecordsLogged(index, scalars, arrays))

    def _tree(self) -> list[dict]:
        """B root branches, one per row, each holding its row of the first record."""
        name = self.model or "recorded"
        return [
            {"id": str(b), "parent": None, "fork_record": None, "settings": self.branch_settings,
             "label": self.names[b] if self.names else name if self._rows == 1 else f"{name} row {b}",
             "edits": [], "rows": [b]}
            for b in range(self._rows)
        ]

    # -- lifetime -------------------------------------------------------------------------------
    def close(self) -> None:
        """Finish the file (fsync) and tell a live window the run is complete. A second call does nothing."""
        if self._is_closed:
            return
        if self._held:  # a run of one record: its width is the vocabulary's
            self._flush()
        if not self._is_opened and self.path is not None:  # nothing logged: a file of the header alone
            self._file = RecordFile(self.path, self.layout, self.vocab, self._meta)
        self._is_closed = True
        if self._stream is not None:
            from dpgviz.ipc.listen import RunClosed

            self._stream.close(RunClosed(f"{self.n_records} records"))
            self._stream = None
        if self._file is not None:
            self._file.close()

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

