"""Score layers: a second model's beliefs along one branch's trajectory, and where two models disagree.

`python main.py score FILE --branch ID --model B` (engine.score) runs model B, teacher-forced,
on exactly the inputs the branch's own model saw at each of its 'prediction' records and
keeps what B believed there as a `ScoreLayer` of that branch:

    rows        (R,)        store rows scored: the branch's 'prediction' records, history order
    confidence  (R, N) f16  B's p of the token the record holds, at every position (as the
                            record's own confidence column)
    entropy     (R, N) f16  B's entropy where the input was masked, NaN elsewhere
    cand_bits   (R, N/8)    which positions have candidates (the input's masked ones)
    cand_start  (R,)        first pool entry of each row; a row's entries follow in position order
    cand_ids    (M, K)      B's top-K ids, one pool entry per set bit
    cand_probs  (M, K) f16  their probabilities

A store holds its layers in `StepStore.layers` (one per branch: scoring a branch again
replaces its layer); a session file saves them as columns named `layer<i>/<field>` with a
header entry per layer (`layer_header`), so files without layers are byte-for-byte what
they were.

Disagreement is the Jensen-Shannon divergence, in bits (0 = the same beliefs, 1 = disjoint),
between the two models' distributions at a position, computed from what both stored: the
top-K of each (`js_bits`). Beyond its top-K a model's remaining mass 1 - sum(top-K) is
spread evenly over the V - K tokens it did not list (a uniform tail): a token only the other
model listed gets that share, and every token neither listed is one bucket holding both
tails' shares. That is the exact JS between the two "top-K plus uniform tail" distributions:
0 when both stored the same numbers, at most 1 bit, and large when the top-K sets are
disjoint (a lumped "rest" bucket alone would call two disjoint top-8s equal).

numpy only; no torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dpgviz.store.step_store import StepStore

LAYER_FIELDS = ("rows", "confidence", "entropy", "cand_bits", "cand_start", "cand_ids", "cand_probs")
POOL_LAYER_FIELDS = ("cand_ids", "cand_probs")  # M entries; the rest have R rows
COLUMN_PREFIX = "layer"


@dataclass(frozen=True, eq=False)
class ScoreLayer:
    """Model B's values on the 'prediction' records of one branch (see the module docstring)."""

    branch: str
    model: dict  # {"name", "path", "sha256"} of model B
    rows: np.ndarray  # (R,) int64
    confidence: np.ndarray  # (R, N) float16
    entropy: np.ndarray  # (R, N) float16
    cand_bits: np.ndarray  # (R, ceil(N/8)) uint8
    cand_start: np.ndarray  # (R,) int64
    cand_ids: np.ndarray  # (M, K)
    cand_probs: np.ndarray  # (M, K) float16
    info: dict = field(default_factory=dict)  # free-form: temperature, runtime of the scoring run
    _index: dict = field(default_factory=dict, repr=False)  # row -> layer index, built once
    _js: dict = field(default_factory=dict, repr=False)  # (i, V) -> js_at, computed once (rows never change)

    def __post_init__(self) -> None:
        self._index.update({int(r): i for i, r in enumerate(self.rows)})

    @property
    def name(self) -> str:
        return str(self.model.get("name") or self.model.get("path") or "second model")

    def fits(self, count: int) -> bool:
        """Every row it scored exists in a store of `count` rows."""
        return not len(self.rows) or int(self.rows.max()) < count

    def index(self, row: int) -> int | None:
        """Index of store row `row` among the scored ones, or None."""
        return self._index.get(int(row))

    def candidate_mask(self, i: int) -> np.ndarray:
        n = self.confidence.shape[1]
        return np.unpackbits(self.cand_bits[i], count=n).astype(bool)

    def top_k(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids (N, K), probs (N, K) float16) of scored row `i`, zeros where none (fresh arrays)."""
        mask = self.candidate_mask(i)
        n, k = self.confidence.shape[1], self.cand_ids.shape[1]
        ids = np.zeros((n, k), self.cand_ids.dtype)
        probs = np.zeros((n, k), np.float16)
        start = int(self.cand_start[i])
        m = int(mask.sum())
        ids[mask], probs[mask] = self.cand_ids[start : start + m], self.cand_probs[start : start + m]
        return ids, probs

    def candidates_at(self, i: int, pos: int) -> tuple[np.ndarray, np.ndarray] | None:
        """(ids (K,), probs (K,)) B stored at (scored row `i`, `pos`); None where none."""
        mask = self.candidate_mask(i)
        if not mask[pos]:
            return None
        entry = int(self.cand_start[i]) + int(mask[:pos].sum())
        return self.cand_ids[entry].copy(), self.cand_probs[entry].copy()

    # -- building -----------------------------------------------------------------------
    @classmethod
    def build(
        cls, branch: str, model: dict, rows: list[int], confidence: list[np.ndarray], entropy: list[np.ndarray],
        top_ids: list[np.ndarray], top_probs: list[np.ndarray], id_dtype: np.dtype, info: dict | None = None,
    ) -> ScoreLayer:
        """From per-row arrays: confidence/entropy (N,), top_ids/top_probs (N, K) with zero
        probabilities where a position has no candidates."""
        n = confidence[0].shape[0] if confidence else 0
        k = top_ids[0].shape[1] if top_ids else 0
        bits, starts, ids, probs, at = [], [], [], [], 0
        for t_ids, t_probs in zip(top_ids, top_probs, strict=True):
            has = (np.asarray(t_probs) > 0).any(axis=1)
            bits.append(np.packbits(has))
            starts.append(at)
            ids.append(np.asarray(t_ids)[has].astype(id_dtype))
            probs.append(np.asarray(t_probs)[has].astype(np.float16))
            at += int(has.sum())
        return cls(
            branch=str(branch), model=dict(model), rows=np.asarray(rows, dtype=np.int64),
            confidence=np.asarray(confidence, dtype=np.float16).reshape(len(rows), n),
            entropy=np.asarray(entropy, dtype=np.float16).reshape(len(rows), n),
            cand_bits=np.asarray(bits, dtype=np.uint8).reshape(len(rows), -(-n // 8)),
            cand_start=np.asarray(starts, dtype=np.int64),
            cand_ids=np.concatenate(ids) if ids else np.zeros((0, k), id_dtype),
            cand_probs=np.concatenate(probs) if probs else np.zeros((0, k), np.float16),
            info=dict(info or {}),
        )

    # -- disagreement -------------------------------------------------------------------
    def js_at(self, store: StepStore, i: int, vocab_size: int) -> np.ndarray:
        """(N,) float32 JS divergence in bits between the branch's model and B at scored row
        `i`; NaN where either stored no candidates. Cached: the canvas asks every frame."""
        key = (int(i), int(vocab_size), id(store))
        if key not in self._js:
            ids_a, probs_a = store.top_k(int(self.rows[i]))
            ids_b, probs_b = self.top_k(i)
            self._js[key] = js_bits(ids_a, probs_a, ids_b, probs_b, vocab_size)
        return self._js[key]

    def mean_js_by_step(self, store: StepStore, vocab_size: int) -> np.ndarray:
        """(R,) mean JS over the positions scored at each row (NaN for a row with none)."""
        out = np.full(len(self.rows), np.nan)
        for i in range(len(self.rows)):  # one vectorised (N, K) computation per record
            js = self.js_at(store, i, vocab_size)
            if np.isfinite(js).any():
                out[i] = float(np.nanmean(js))
        return out


def js_bits(ids_a: np.ndarray, probs_a: np.ndarray, ids_b: np.ndarray, probs_b: np.ndarray, vocab_size: int) -> np.ndarray:
    """Jensen-Shannon divergence (bits) per position between two top-K lists, (..., K) each.

    Each side is its top-K plus a uniform tail (see the module docstring). Positions where
    either side has no candidates (all probabilities 0) are NaN.
    """
    pa = np.asarray(probs_a, dtype=np.float64)
    pb = np.asarray(probs_b, dtype=np.float64)
    ia, ib = np.asarray(ids_a), np.asarray(ids_b)
    listed_a, listed_b = pa > 0, pb > 0
    valid = listed_a.any(-1) & listed_b.any(-1)
    k_a, k_b = listed_a.sum(-1), listed_b.sum(-1)  # (...,) entries each listed (K, or fewer when V < K)
    tail_a = np.clip(1.0 - pa.sum(-1), 0.0, None)  # mass beyond the top-K (float16 sums may pass 1)
    tail_b = np.clip(1.0 - pb.sum(-1), 0.0, None)
    unlisted_a = np.maximum(vocab_size - k_a, 1)  # tokens sharing each tail
    unlisted_b = np.maximum(vocab_size - k_b, 1)
    each_a, each_b = tail_a / unlisted_a, tail_b / unlisted_b  # per unlisted token
    same = (ia[..., :, None] == ib[..., None, :]) & listed_a[..., :, None] & listed_b[..., None, :]  # (..., K, K)
    in_b = same.any(-1)  # a's entry also listed by b
    in_a = same.any(-2)  # b's entry also listed by a
    # a's entries: p from a, q from b's matching entry, else b's tail share
    q_for_a = np.where(in_b, (same * pb[..., None, :]).sum(-1), each_b[..., None])
    # b's entries a did not list: q from b, p = a's tail share
    only_b = listed_b & ~in_a
    p_for_b = np.broadcast_to(each_a[..., None], pb.shape)
    # tokens neither listed: one bucket holding both tails' shares
    n_union = k_a + only_b.sum(-1)
    rest = np.maximum(vocab_size - n_union, 0)
    terms = (
        np.where(listed_a, _js_term(pa, q_for_a), 0.0).sum(-1)
        + np.where(only_b, _js_term(p_for_b, pb), 0.0).sum(-1)
        + _js_term(rest * each_a, rest * each_b)
    )
    total_p = pa.sum(-1) + np.where(only_b, p_for_b, 0.0).sum(-1) + rest * each_a
    total_q = np.where(listed_a, q_for_a, 0.0).sum(-1) + np.where(only_b, pb, 0.0).sum(-1) + rest * each_b
    # Both sides were normalised by their own totals (float16 top-K rarely sum to exactly 1):
    # JS of the normalised pair, from the unnormalised terms, is what follows only when the
    # totals agree; they do to float16 precision, so divide by their mean.
    norm = np.maximum(0.5 * (total_p + total_q), 1e-12)
    out = np.clip(terms / norm, 0.0, 1.0)
    return np.where(valid, out, np.nan).astype(np.float32)


def _js_term(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """One outcome's share of JS(P, Q) in bits: (p log2(2p/(p+q)) + q log2(2q/(p+q))) / 2, 0 log 0 = 0."""
    p, q = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    m = p + q
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(p > 0, p * np.log2(np.where(p > 0, 2 * p / np.where(m > 0, m, 1), 1)), 0.0)
        b = np.where(q > 0, q * np.log2(np.where(q > 0, 2 * q / np.where(m > 0, m, 1), 1)), 0.0)
    return 0.5 * (a + b)


def layer_of(store: StepStore, branch: str) -> ScoreLayer | None:
    """The layer scoring `branch`, if any."""
    return next((layer for layer in store.layers if layer.branch == branch), None)


def put_layer(store: StepStore, layer: ScoreLayer) -> None:
    """Add `layer`, replacing the one that scored the same branch."""
    store.layers = [old for old in store.layers if old.branch != layer.branch] + [layer]
    store.version += 1


# -- session files -------------------------------------------------------------------------
def layer_columns(layer: ScoreLayer, index: int) -> dict[str, np.ndarray]:
    """The columns a session file saves for layer `index`: `layer<index>/<field>`."""
    return {f"{COLUMN_PREFIX}{index}/{name}": getattr(layer, name) for name in LAYER_FIELDS}


def layer_header(layer: ScoreLayer) -> dict:
    """The header entry of one saved layer (the columns are found by position in the list)."""
    return {
        "branch": layer.branch, "model": dict(layer.model), "info": dict(layer.info),
        "count": len(layer.rows), "pool_count": len(layer.cand_ids),
    }


def is_layer_column(name: str) -> bool:
    return name.startswith(COLUMN_PREFIX) and "/" in name


def layer_column_rows(header: dict, name: str) -> int | None:
    """Rows a `layer<i>/<field>` column must have per the header; None for any other column
    (or a layer the header does not list: then the column is refused as corrupt by its caller)."""
    if not is_layer_column(name):
        return None
    index, _, field_name = name[len(COLUMN_PREFIX) :].partition("/")
    entries = header.get("layers") or []
    try:
        entry = entries[int(index)]
        return int(entry["pool_count"] if field_name in POOL_LAYER_FIELDS else entry["count"])
    except (ValueError, IndexError, KeyError, TypeError):
        return -1  # no such layer: no row count can match


def layers_from_columns(header: dict, columns: dict[str, np.ndarray]) -> list[ScoreLayer]:
    """The layers a session file holds (its header's `layers`, their columns)."""
    out = []
    for i, entry in enumerate(header.get("layers") or []):
        arrays = {name: columns[f"{COLUMN_PREFIX}{i}/{name}"] for name in LAYER_FIELDS}
        out.append(ScoreLayer(branch=str(entry["branch"]), model=dict(entry.get("model") or {}),
                              info=dict(entry.get("info") or {}), **arrays))
    return out


def _number(x: float) -> float | None:
    return round(float(x), 6) if np.isfinite(x) else None


def position_entries(store: StepStore, layer: ScoreLayer, rows: np.ndarray, pos: int, vocab) -> list[dict | None]:
    """The second model's values at `pos` for each record of `rows` (`show --position --json`):

        {"p", "entropy", "top": [[token, prob], ...], "js"}   at a scored record
        None                                                  at any other

    p is the second model's probability of the token the record holds; js the divergence
    (bits) between the two models' top-K there, null where either stored none.
    """
    table = vocab.strings()
    out: list[dict | None] = []
    for row in np.asarray(rows, dtype=np.int64):  # one entry per record of one position
        i = layer.index(int(row))
        if i is None:
            out.append(None)
            continue
        top: list = []
        found = layer.candidates_at(i, pos)
        js = None
        if found is not None:
            ids, probs = found[0].astype(np.int64), found[1].astype(np.float32)
            order = np.argsort(-probs, kind="stable")
            top = [[str(table[ids[k]]), round(float(probs[k]), 6)] for k in order if probs[k] > 0]
            own = store.candidates_at(int(row), pos)
            if own is not None:
                js = _number(js_bits(own[0][None], own[1][None], found[0][None], found[1][None], vocab.size)[0])
        out.append({"p": _number(layer.confidence[i, pos]), "entropy": _number(layer.entropy[i, pos]), "top": top, "js": js})
    return out


def scored_at(store: StepStore, layer: ScoreLayer, rows: np.ndarray, record: int) -> int | None:
    """Index into `layer` of the last scored record at or before history record `record`
    (in a block run: of the same block), or None."""
    rows = np.asarray(rows, dtype=np.int64)
    if not len(rows):
        return None
    record = min(max(0, int(record)), len(rows) - 1)
    block = int(store.columns["block"][int(rows[record])])
    for k in range(record, -1, -1):  # a few records back at most: every iteration has a prediction
        row = int(rows[k])
        if int(store.columns["block"][row]) != block:
            return None
        i = layer.index(row)
        if i is not None:
            return i
    return None


SCALE_TOPS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)  # bits: 1-2-5 steps up to JS's maximum


def scale_top(store: StepStore, layer: ScoreLayer, vocab_size: int) -> float:
    """The top of the disagreement colour scale for a layer: the smallest of SCALE_TOPS at or
    above its 99.5th percentile JS, so checkpoints that differ by 0.01 bit still show where
    (a fixed 0..1 scale would paint them all one colour). One scale per layer, so steps compare."""
    key = ("top", int(vocab_size), id(store))
    if key not in layer._js:
        values = [layer.js_at(store, i, vocab_size) for i in range(len(layer.rows))]
        flat = np.concatenate(values) if values else np.zeros(0, np.float32)
        flat = flat[np.isfinite(flat)]
        high = float(np.percentile(flat, 99.5)) if len(flat) else 0.0
        layer._js[key] = next((t for t in SCALE_TOPS if t >= high), 1.0)
    return layer._js[key]


def disagreement_at(
    store: StepStore, branch: str, rows: np.ndarray, record: int, vocab_size: int, scaled: bool = False
) -> np.ndarray:
    """(total_len,) float32 JS (bits) per position at history record `record` of `branch`, from
    its layer's last scored record at or before it (the canvas's "disagreement" mode); NaN
    where nothing was scored (no layer, a position the model did not predict there).
    `scaled`: divided by the layer's `scale_top` (the canvas's 0..1 colour scale)."""
    out = np.full(store.layout.total_len, np.nan, dtype=np.float32)
    layer = layer_of(store, branch)
    if layer is None:
        return out
    i = scored_at(store, layer, rows, record)
    if i is None:
        return out
    js = layer.js_at(store, i, vocab_size)
    if scaled:
        js = js / scale_top(store, layer, vocab_size)
    offset = int(store.columns["offset"][int(layer.rows[i])]) if store.layout.is_blocks else 0
    span = min(len(js), store.layout.total_len - offset)
    out[offset : offset + span] = js[:span]
    return out


def js_summary(store: StepStore, layer: ScoreLayer, vocab_size: int) -> dict:
    """What `score --json` prints: {"mean_js", "mean_js_by_step"} plus, for the text form,
    where the two models disagree most ("worst": record index, position, js)."""
    rows = store.history(layer.branch)
    where = {int(r): k for k, r in enumerate(rows)}
    by_step, total, count = [], 0.0, 0
    worst = (-1.0, -1, -1)
    for i in range(len(layer.rows)):
        js = layer.js_at(store, i, vocab_size)
        finite = np.isfinite(js)
        by_step.append(float(js[finite].mean()) if finite.any() else None)
        total += float(js[finite].sum())
        count += int(finite.sum())
        if finite.any():
            pos = int(np.nanargmax(js))
            if js[pos] > worst[0]:  # a block run's record holds its block: the position in the whole sequence
                start = int(store.column("offset")[layer.rows[i]]) if store.layout.is_blocks else 0
                worst = (float(js[pos]), where.get(int(layer.rows[i]), -1), start + pos)
    return {
        "mean_js": total / count if count else 0.0,
        "mean_js_by_step": by_step,
        "worst": {"js": worst[0], "record": worst[1], "position": worst[2]} if worst[1] >= 0 else None,
    }
