"""A second model on one branch's trajectory: teacher-forced, no sampling (`python main.py score`).

At every 'prediction' record of the branch's history the branch's own model saw one input:
the record before it (masks where it then predicted), after the fixed context a block run
shows it (the last `block_size - L` tokens before the block, its own model's block size).
`score_branch` gives model B exactly that input, once per record, through the sampler's own
forward pass (`Sampler._probs`: softmax(logits / T) over the real vocabulary, special tokens
left out, at the temperature of the branch that made the record), and keeps what a run
would have stored there: p of the token the record holds, the entropy and top-K where the
input was masked. Nothing is sampled, so B's values sit beside the record's own, position
for position (store.layers.ScoreLayer); scoring a branch with its own model gives the same
numbers bit for bit on the CPU (JS 0).

torch; worker-side or CLI-side only (never the GUI process).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from dpgviz.engine.sampler import Sampler
from dpgviz.store.blocks import compose
from dpgviz.store.layers import ScoreLayer
from dpgviz.store.step_store import StepStore

Progress = Callable[[int, int], None]


def prediction_indices(store: StepStore, rows: np.ndarray) -> list[int]:
    """Indices into `rows` (a branch's history) of its 'prediction' records that have an input before them."""
    kinds = store.column("kind")[rows]
    from dpgviz.core.records import KIND_CODE

    return [k for k in np.flatnonzero(kinds == KIND_CODE["prediction"]).tolist() if k > 0]


def row_owners(store: StepStore) -> dict[int, str]:
    """Store row -> the branch that holds it as one of its own records."""
    return {int(r): bid for bid in store.branch_order for r in store.branches[bid].rows}


def score_branch(
    sampler: Sampler,
    store: StepStore,
    branch: str,
    model: dict,
    source_block_size: int | None,
    progress: Progress | None = None,
    info: dict | None = None,
) -> ScoreLayer:
    """Model B (`sampler`) on every 'prediction' of `branch`'s history (see the module docstring).

    `source_block_size` is the block size of the model that made the records: a block run's
    context was its last `source_block_size - L` tokens. ValueError when B's window is shorter.
    """
    layout, vocab = store.layout, sampler.vocab
    mask_id, size, seq_len = vocab.mask_id, vocab.size, layout.seq_len
    rows = store.history(branch)
    picked = prediction_indices(store, rows)
    if not picked:
        raise ValueError(f"branch {branch!r} has no prediction records to score")
    owners = row_owners(store)
    k_top = min(layout.top_k, size)
    window = source_block_size or sampler.block_size
    context_len = max(0, window - seq_len) if layout.is_blocks else 0
    out: dict[str, list] = {"rows": [], "confidence": [], "entropy": [], "ids": [], "probs": []}
    dev = sampler.device
    for done, k in enumerate(picked):
        row, before = int(rows[k]), int(rows[k - 1])
        offset = int(store.columns["offset"][row])
        n = layout.span(offset) if layout.is_blocks else seq_len
        inputs = store.get("tokens", before)[:n].astype(np.int64)  # (n,) what the model saw
        held = store.get("tokens", row)[:n].astype(np.int64)  # (n,) what the record holds after predicting
        context = np.zeros(0, dtype=np.int64)
        if context_len:
            whole = compose(store, rows, k - 1, "tokens", mask_id)  # finished blocks before this one
            context = np.asarray(whole[max(0, offset - context_len) : offset], dtype=np.int64)
        if len(context) + n > sampler.block_size:
            raise ValueError(
                f"the branch's model saw {len(context) + n} tokens at a step; the scoring model takes {sampler.block_size}"
            )
        settings = store.branches[owners.get(row, branch)].settings or {}
        temperature = float(settings.get("temperature", 1.0))
        tok = torch.as_tensor(inputs, device=dev)
        with torch.inference_mode():
            probs = sampler._probs(tok, temperature, torch.as_tensor(context, device=dev))  # (n, V), as a run computes
            is_masked = tok == mask_id
            safe = torch.as_tensor(np.minimum(held, size - 1), device=dev)
            p_token = probs.gather(1, safe[:, None])[:, 0]
            p_token = torch.where(torch.as_tensor(held < size, device=dev), p_token, float("nan"))
            entropy_all = -(probs * torch.log(probs.clamp_min(1e-12))).sum(-1)  # (n,)
            top_p, top_i = probs.topk(k_top, dim=-1)  # (n, k)
            top_p = torch.where(is_masked[:, None], top_p, 0.0)
            top_i = torch.where(is_masked[:, None], top_i, 0)
            entropy = torch.where(is_masked, entropy_all, float("nan"))
        conf_row = np.full(seq_len, np.nan, np.float32)
        ent_row = np.full(seq_len, np.nan, np.float32)
        ids_row = np.zeros((seq_len, layout.top_k), layout.id_dtype)
        probs_row = np.zeros((seq_len, layout.top_k), np.float32)
        conf_row[:n] = p_token.float().cpu().numpy()
        ent_row[:n] = entropy.float().cpu().numpy()
        ids_row[:n, :k_top] = top_i.cpu().numpy()
        probs_row[:n, :k_top] = top_p.float().cpu().numpy()
        out["rows"].append(row)
        out["confidence"].append(conf_row)
        out["entropy"].append(ent_row)
        out["ids"].append(ids_row)
        out["probs"].append(probs_row)
        if progress is not None:
            progress(done + 1, len(picked))
    return ScoreLayer.build(
        branch, model, out["rows"], out["confidence"], out["entropy"], out["ids"], out["probs"],
        layout.id_dtype, info=info,
    )
