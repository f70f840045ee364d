"""The step record: what the sampler produces for every substep, in fixed shapes and dtypes.

A record is one moment of a denoising run. `RecordLayout` fixes, per run, the arrays
every record carries; the shared-memory ring, the step store and session files all lay
their buffers out from it, so a field added here travels everywhere.

Per token (N = seq_len, K = top_k), with ids stored in the smallest dtype the id space
fits (`id_dtype_for`: uint8 up to 256 ids, as the 65-character default model has, else
uint16, else int32):

    field        shape    dtype     meaning
    tokens       (N,)     ids       token id at each position (mask_id where masked)
    confidence   (N,)     float16   p(current token) under the model; NaN where masked
    score        (N,)     float16   remask score where one was computed, else NaN
    entropy      (N,)     float16   entropy (nats) of the predictive distribution at
                                     positions that were masked before this iteration
    top_ids      (N, K)   ids       top-K candidate ids at those positions (else 0)
    top_probs    (N, K)   float16   their probabilities (else 0)
    flags        (N,)     uint8     FLAG_* bits below

A record as the sampler and the ring carry it is dense: 1+2+2+2+1 + K*(1+2) = 32 bytes
per token with uint8 ids and K=8. The step store keeps the first five fields dense
(8 bytes per token-step) and the candidates sparse: only where top_probs is non-zero,
and a record repeating the previous record's candidates shares them
(store.step_store). Per record scalars: SCALAR_FIELDS.

Kinds: 'initial' (a run's start state), 'prediction' (every masked position filled),
'remask' (the schedule's masks put back), 'final' (the finished text) and 'edit' (made
by hand: the first record of a branch forked with `StepStore.fork`).

numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from dpgviz.core.settings import GenerationSettings

# New kinds go at the END: a kind is stored as its index here, so reordering would change
# the meaning of every saved session. 'edit' is a record the user made by hand (a fork's
# first record); its `iteration` is the iteration a restart from it begins at.
KINDS = ("initial", "prediction", "remask", "final", "edit")
KIND_CODE = {name: code for code, name in enumerate(KINDS)}

# Flag bits: what happened at a position in this record, for the canvas's mask-state mode.
FLAG_MASKED = 1  # position holds the mask token
FLAG_NEW = 2  # position was masked in the previous record and is visible now
FLAG_PROTECTED = 4  # the user fixed this position; the sampler never changes it
FLAG_REMASKED = 8  # position was visible in the previous record and is masked now
FLAG_EDITED = 16  # the user changed this position by hand (edited record)
# The prompt or infilling template fixed this position (core.prompt). Always set together
# with FLAG_PROTECTED, so everything that keeps protected positions keeps the prompt's;
# this bit only says why (the canvas's "prompt" colour, the branch panel's prompt).
FLAG_PROMPT = 32
# Left padding of a batch row (a recorder's attention_mask 0): no token of the run, drawn dimmed
# and never as prompt (app.inspect adds it to the canvas's 'padding').
FLAG_PADDING = 64
# Left padding of a batch row (a recorder's attention_mask 0): no token of the run, drawn dimmed
# and never as prompt (app.inspect adds it to the canvas's 'padding').
FLAG_PADDING = 64

SCALAR_FIELDS: dict[str, np.dtype] = {
    "iteration": np.dtype(np.int32),
    "kind": np.dtype(np.uint8),  # KIND_CODE
    "target_masks": np.dtype(np.int32),  # masks the schedule asked for after this iteration
    "n_masked": np.dtype(np.int32),  # masks actually present in `tokens`
    "forward_passes": np.dtype(np.int32),  # model calls so far in this run
    # Semi-autoregressive runs (settings.block_length > 0): a record holds one block of
    # RecordLayout.seq_len tokens starting at position `offset` of the full sequence
    # (RecordLayout.total_len tokens). Both are 0 for a run in one block.
    "offset": np.dtype(np.int32),  # first position of the record's block
    "block": np.dtype(np.int32),  # the block's index: (offset - RecordLayout.prefix_len) // seq_len
}


def record_count(steps: int, start_iteration: int = 0) -> int:
    """Records a run of `steps` iterations yields from `start_iteration`.

    'initial', then 'prediction' + 'remask' for every iteration but the last, then the
    last iteration's 'prediction' and 'final': 2 * (steps - start_iteration) + 1.
    """
    return 2 * (steps - start_iteration) + 1


def run_record_count(settings: GenerationSettings, start_iteration: int = 0, start_block: int = 0) -> int:
    """Records a run of `settings` yields from block `start_block` at `start_iteration`.

    Every block is a full run of its own (record_count(steps) records) except the first,
    which starts at `start_iteration`; one block of the whole length when blocks are off.
    """
    rest = settings.n_blocks - start_block - 1
    steps = settings.steps // settings.n_blocks if settings.sampler == "llada" else settings.steps  # LLaDA: the total
    return record_count(steps, start_iteration) + rest * record_count(steps)


def continue_point(kind: str, iteration: int) -> int:
    """Iteration a continued run starts at from a record of `kind` at `iteration`.

    'initial' holds the state before its iteration, and an 'edit' record stores the
    iteration a restart from it begins at; every other record holds the state after its
    iteration (a 'prediction' record's tokens, all filled, are kept as they are).
    """
    return iteration if kind in ("initial", "edit") else iteration + 1


def id_dtype_for(n_ids: int) -> np.dtype:
    """Smallest dtype holding every id (mask and reserved ids included): uint8, uint16 or int32.

    The id space is the vocabulary plus the mask plus reserved ids (`RecordLayout.n_ids`),
    so a 256-id space still fits uint8 (ids 0..255).
    """
    if n_ids <= np.iinfo(np.uint8).max + 1:
        return np.dtype(np.uint8)
    if n_ids <= np.iinfo(np.uint16).max + 1:
        return np.dtype(np.uint16)
    return np.dtype(np.int32)


@dataclass(frozen=True)
class RecordLayout:
    """Shapes and dtypes of every record of one run."""

    seq_len: int
    top_k: int = 8
    n_ids: int = 66  # ids a token can take (real vocabulary + mask + reserved)
    # Length of the whole sequence; seq_len is the length of one block record. 0 (the
    # default, and what files written before blocks existed hold) means seq_len.
    total_len: int = 0
    # A block run after a prompt (core.prompt): the prompt's token ids, fixed, before the
    # first block. Blocks cover the generated part only: block b starts at position
    # len(prefix) + b * seq_len. No record holds these positions, so the layout carries
    # them (to sessions, the journal and the ring's RunStarted) for store.blocks to compose.
    # Empty for every other run (a prompt run in one block holds its prompt in its records).
    prefix: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.total_len == 0:
            object.__setattr__(self, "total_len", self.seq_len)  # frozen: set once, here
        if not isinstance(self.prefix, tuple):  # a list from JSON: hashable and comparable as a tuple
            object.__setattr__(self, "prefix", tuple(int(i) for i in self.prefix))
        if self.total_len - len(self.prefix) < self.seq_len:
            raise ValueError(
                f"total_len {self.total_len} is shorter than seq_len {self.seq_len} after a prefix of {len(self.prefix)}"
            )

    @property
    def is_blocks(self) -> bool:
        """True for a semi-autoregressive run: records hold blocks of a longer sequence."""
        return self.total_len != self.seq_len

    @property
    def prefix_len(self) -> int:
        """Fixed positions before the first block (a prompt before a block run); 0 otherwise."""
        return len(self.prefix)

    @property
    def n_blocks(self) -> int:
        return -(-(self.total_len - self.prefix_len) // self.seq_len)

    def block_offset(self, block: int) -> int:
        """First position of block `block` in the whole sequence."""
        return self.prefix_len + block * self.seq_len

    def block_of(self, pos: int) -> tuple[int, int]:
        """(block, position within it) of sequence position `pos`; block -1 for a prefix position."""
        if pos < self.prefix_len:
            return -1, pos
        return divmod(pos - self.prefix_len, self.seq_len)

    def span(self, offset: int) -> int:
        """Real tokens of the block at `offset`: seq_len, less for a shorter last block
        (whose record positions from there on are padding: token 0, NaN, no flags)."""
        return min(self.seq_len, self.total_len - offset)

    @property
    def id_dtype(self) -> np.dtype:
        return id_dtype_for(self.n_ids)

    def token_fields(self) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """name -> (shape, dtype) of every per-token array."""
        n, k, ids, f16 = self.seq_len, self.top_k, self.id_dtype, np.dtype(np.float16)
        return {
            "tokens": ((n,), ids),
            "confidence": ((n,), f16),
            "score": ((n,), f16),
            "entropy": ((n,), f16),
            "top_ids": ((n, k), ids),
            "top_probs": ((n, k), f16),
            "flags": ((n,), np.dtype(np.uint8)),
        }

    @property
    def bytes_per_record(self) -> int:
        return sum(int(np.prod(s)) * d.itemsize for s, d in self.token_fields().values())

    def empty(self) -> StepRecord:
        arrays = {name: np.zeros(shape, dtype) for name, (shape, dtype) in self.token_fields().items()}
        for name in ("confidence", "score", "entropy"):
            arrays[name].fill(np.nan)
        return StepRecord(iteration=0, kind="initial", target_masks=0, n_masked=0, forward_passes=0, **arrays)

    def to_dict(self) -> dict:
        out = {"seq_len": self.seq_len, "top_k": self.top_k, "n_ids": self.n_ids, "total_len": self.total_len}
        if self.prefix:  # only block runs after a prompt: other layouts read as before
            out["prefix"] = list(self.prefix)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> RecordLayout:
        """Inverse of to_dict; a dict without total_len (an older file) gets seq_len."""
        return cls(
            seq_len=int(data["seq_len"]),
            top_k=int(data.get("top_k", 8)),
            n_ids=int(data.get("n_ids", 66)),
            total_len=int(data.get("total_len", 0)),
            prefix=tuple(int(i) for i in data.get("prefix", ())),
        )


@dataclass
class StepRecord:
    """One substep of a run: scalars plus the per-token arrays of `RecordLayout`."""

    iteration: int
    kind: str
    target_masks: int
    n_masked: int
    forward_passes: int
    tokens: np.ndarray
    confidence: np.ndarray
    score: np.ndarray
    entropy: np.ndarray
    top_ids: np.ndarray
    top_probs: np.ndarray
    flags: np.ndarray
    offset: int = 0  # first position of the record's block (SCALAR_FIELDS)
    block: int = 0  # the block's index
    extra: dict = field(default_factory=dict)  # timings etc.; not part of the layout

    @property
    def kind_code(self) -> int:
        return KIND_CODE[self.kind]

    @property
    def is_masked(self) -> np.ndarray:
        return (self.flags & FLAG_MASKED).astype(bool)

    def scalars(self) -> dict[str, int]:
        return {
            "iteration": int(self.iteration),
            "kind": self.kind_code,
            "target_masks": int(self.target_masks),
            "n_masked": int(self.n_masked),
            "forward_passes": int(self.forward_passes),
            "offset": int(self.offset),
            "block": int(self.block),
        }

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "tokens": self.tokens,
            "confidence": self.confidence,
            "score": self.score,
            "entropy": self.entropy,
            "top_ids": self.top_ids,
            "top_probs": self.top_probs,
            "flags": self.flags,
        }

    @classmethod
    def from_parts(cls, scalars: dict, arrays: dict[str, np.ndarray]) -> StepRecord:
        kind = scalars["kind"]
        return cls(
            iteration=int(scalars["iteration"]),
            kind=KINDS[int(kind)] if not isinstance(kind, str) else kind,
            target_masks=int(scalars["target_masks"]),
            n_masked=int(scalars["n_masked"]),
            forward_passes=int(scalars["forward_passes"]),
            offset=int(scalars.get("offset", 0)),
            block=int(scalars.get("block", 0)),
            **arrays,
        )


def step_flags(
    prev_tokens: np.ndarray | None,
    tokens: np.ndarray,
    mask_id: int,
    protected: np.ndarray | None,
    prompt: np.ndarray | None = None,
) -> np.ndarray:
    """FLAG_* bits of `tokens` relative to the previous record's tokens (vectorised);
    `prompt` positions get FLAG_PROMPT | FLAG_PROTECTED."""
    is_masked = tokens == mask_id
    flags = is_masked.astype(np.uint8) * FLAG_MASKED
    if prev_tokens is not None:
        was_masked = prev_tokens == mask_id
        flags |= (was_masked & ~is_masked).astype(np.uint8) * FLAG_NEW
        flags |= (~was_masked & is_masked).astype(np.uint8) * FLAG_REMASKED
    if protected is not None:
        flags |= protected.astype(np.uint8) * FLAG_PROTECTED
    if prompt is not None:
        flags |= prompt.astype(np.uint8) * (FLAG_PROMPT | FLAG_PROTECTED)
    return flags
