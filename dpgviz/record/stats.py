"""What a recorder keeps of a forward pass: p(token), entropy and the top-K candidates.

    token_stats(scores, tokens, is_probs, k, excluded, n_cols) -> TokenStats (numpy, host)

`scores` are the caller's logits or probabilities over its own ids, (R, V), as a numpy array
or a torch tensor on any device; `tokens` (R,) the ids the positions hold. The definitions
are the sampler's (engine.sampler), so a recorded run reads like one of dpgviz's own:

    p(token)    softmax(logits)[token] (probabilities as given)
    entropy     -sum p log p, in nats
    candidates  the K most probable ids, most probable first

p(token) and the entropy are of the caller's whole distribution, as given. Candidates are
picked among ids 0..n_cols-1 except `excluded` (the mask, special tokens: never shown as
candidates, as the sampler never proposes them). With E excluded ids, the top K+E are
taken and the first K allowed kept (E <= EXCLUDE_BY_SELECTION); past that the excluded
columns are pushed to -1 in a copy first.

On a CUDA tensor everything runs on the device (the (R, V) logits never leave it): one
(R, 2 + K) float block and one (R, K) id block are copied to the host. A CPU tensor is read
as a numpy array (no copy for float32) and takes the numpy path. torch is imported only
here, and only for a tensor on a device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

# At most this many excluded ids are handled by asking top-k for K+E and dropping them;
# more (LLaDA's hundreds of reserved tokens) costs a masked copy of the scores instead.
EXCLUDE_BY_SELECTION = 16


@dataclass
class TokenStats:
    """Per position (R rows): p of its token, entropy, and the top-K (caller's ids, probabilities)."""

    p_token: np.ndarray  # (R,) float32
    entropy: np.ndarray  # (R,) float32, nats
    top_ids: np.ndarray  # (R, K) int64, the caller's ids
    top_probs: np.ndarray  # (R, K) float32


def is_torch(x: Any) -> bool:
    """A torch tensor, told without importing torch (a numpy-only caller never loads it)."""
    return type(x).__module__.startswith("torch") and hasattr(x, "detach")


def token_stats(
    scores: Any, tokens: Any, is_probs: bool, k: int, excluded: np.ndarray, n_cols: int
) -> TokenStats:
    """See the module docstring; `scores` (R, V), `tokens` (R,) in the caller's ids, k <= n_cols - len(excluded)."""
    if is_torch(scores):
        if scores.device.type != "cpu":
            return _torch_stats(scores, tokens, is_probs, k, excluded, n_cols)
        # On the CPU numpy's single-threaded kernels: a (1024, V) block gains nothing from
        # torch's thread pool, which stalls for milliseconds when other processes hold the cores.
        scores = scores.detach().float().numpy()
    if is_torch(tokens):
        tokens = tokens.detach().cpu().numpy()
    return _numpy_stats(np.asarray(scores), np.asarray(tokens), is_probs, k, excluded, n_cols)


def _numpy_stats(
    scores: np.ndarray, tokens: np.ndarray, is_probs: bool, k: int, excluded: np.ndarray, n_cols: int
) -> TokenStats:
    x = scores.astype(np.float32, copy=False)  # (R, V)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if is_probs:
            p = x
            entropy = -(p * np.log(p)).sum(axis=-1)  # (R,); a zero probability gives NaN here: redone below
        else:
            z = x - x.max(axis=-1, keepdims=True)  # (R, V) <= 0
            e = np.exp(z)
            total = e.sum(axis=-1, keepdims=True)  # (R, 1)
            p = e / total
            # -sum p log p with log p = z - log(total): log(total) - sum p z, one pass
            entropy = np.log(total[:, 0]) - (p * z).sum(axis=-1)
        bad = np.isnan(entropy)
        if bad.any():  # -inf logits or zero probabilities: 0 * -inf left out, as it should be
            rows = p[bad]
            entropy[bad] = -np.nansum(rows * np.log(rows), axis=-1)
    tok = np.clip(tokens.astype(np.int64), 0, x.shape[-1] - 1)[:, None]  # (R, 1)
    p_token = np.take_along_axis(p, tok, axis=1)[:, 0]
    cand = p[:, :n_cols]
    if len(excluded):
        cand = cand.copy()
        cand[:, excluded] = -1.0
    part = np.argpartition(cand, n_cols - k, axis=1)[:, n_cols - k :]  # (R, K) the largest, unordered
    vals = np.take_along_axis(cand, part, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")
    return TokenStats(
        p_token.astype(np.float32), entropy.astype(np.float32),
        np.take_along_axis(part, order, axis=1).astype(np.int64), np.take_along_axis(vals, order, axis=1),
    )


def _torch_stats(scores: Any, tokens: Any, is_probs: bool, k: int, excluded: np.ndarray, n_cols: int) -> TokenStats:
    import torch

    with torch.no_grad():
        x = scores.detach()
        dev = x.device
        if is_probs:
            p = x.float()  # (R, V)
            logp = torch.log(p)
        else:
            logp = torch.log_softmax(x.float(), dim=-1)  # (R, V)
            p = logp.exp()
        entropy = -torch.nansum(p * logp, dim=-1)  # (R,) 0 * -inf is NaN: a zero probability adds nothing
        tok = torch.as_tensor(tokens, device=dev).long().clamp(0, x.shape[-1] - 1)[:, None]  # (R, 1)
        p_token = p.gather(1, tok)[:, 0]  # (R,)
        cand = p[:, :n_cols]
        n_ex = len(excluded)
        if n_ex == 0:
            vals, ids = cand.topk(k, dim=-1)  # (R, K)
        elif n_ex <= EXCLUDE_BY_SELECTION:
            ex = torch.as_tensor(excluded, device=dev)
            vals, ids = cand.topk(min(k + n_ex, n_cols), dim=-1)  # (R, K + E)
            is_out = torch.isin(ids, ex).to(torch.int8)
            first = torch.sort(is_out, dim=-1, stable=True).indices[:, :k]  # the first K allowed, in order
            vals, ids = vals.gather(1, first), ids.gather(1, first)
        else:
            cand = cand.clone()
            cand[:, torch.as_tensor(excluded, device=dev)] = -1.0
            vals, ids = cand.topk(k, dim=-1)
        values = torch.cat([p_token[:, None], entropy[:, None], vals], dim=1).cpu().numpy()  # (R, 2 + K): one copy
        ids_np = ids.cpu().numpy()  # (R, K): the other
    return TokenStats(values[:, 0], values[:, 1], ids_np.astype(np.int64), values[:, 2:])
