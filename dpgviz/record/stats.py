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

A torch tensor is worked on where it is (the (R, V) logits never leave a GPU): one (R, 2 + K)
float block and one (R, K) id block are copied to the host. The logits are read about once,
as one softmax reads them: no probability array is made (p(token) and the candidates' p are
exp(logit - logsumexp), the entropy is logsumexp - sum p * logit, one dot product per row),
the top-K is taken on the logits, and on the CPU rows go in cache-sized chunks. A numpy
array takes the numpy path. torch is imported only here, and only for a tensor.
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
    scores: Any, tokens: Any, is_probs: bool, k: int, excluded: np.ndarray, n_cols: int,
    needed: np.ndarray | None = None,
) -> TokenStats:
    """See the module docstring; `scores` (R, V), `tokens` (R,) in the caller's ids, k <= n_cols - len(excluded).

    `needed` (R,) bool, for a torch tensor: the rows whose entropy and candidates are kept (the
    positions a pass predicted); the others get p(token) alone (one softmax, no top-k, no dot
    product), entropy NaN and no candidates. None: every row."""
    if is_torch(scores):
        return _torch_stats(scores, tokens, is_probs, k, excluded, n_cols, needed)
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


# Rows per chunk on the CPU: a chunk of float32 logits (64 x 126,464 = 32 MB) stays in the
# last-level cache between the passes over it (max, exp, sums, top-k), so the logits are read
# from memory about once, as one softmax reads them.
CPU_CHUNK_ROWS = 64


def _torch_stats(scores: Any, tokens: Any, is_probs: bool, k: int, excluded: np.ndarray, n_cols: int,
                 needed: np.ndarray | None = None) -> TokenStats:
    import torch

    with torch.no_grad():
        x = scores.detach()
        if x.dtype not in (torch.float32, torch.float64):
            x = x.float()
        dev = x.device
        tok = torch.as_tensor(tokens, device=dev).long().clamp(0, x.shape[-1] - 1)[:, None]  # (R, 1)
        ex = torch.as_tensor(excluded, device=dev) if len(excluded) else None
        R = x.shape[0]
        step = R if dev.type != "cpu" else CPU_CHUNK_ROWS
        out_vals, out_ids = [], []
        for r0 in range(0, R, step):  # on a GPU one chunk: the whole block
            chunk, chunk_tok = x[r0 : r0 + step], tok[r0 : r0 + step]
            need = None if needed is None else np.asarray(needed[r0 : r0 + step], dtype=bool)
            if need is None or need.all():
                v, i = _chunk(chunk, chunk_tok, is_probs, k, ex, n_cols)
            else:
                v, i = _split_chunk(chunk, chunk_tok, need, is_probs, k, ex, n_cols)
            out_vals.append(v)
            out_ids.append(i)
        values = torch.cat(out_vals).cpu().numpy()  # (R, 2 + K): one copy to the host
        ids_np = torch.cat(out_ids).cpu().numpy()  # (R, K): the other
    return TokenStats(values[:, 0], values[:, 1], ids_np.astype(np.int64), values[:, 2:])


GROUP = 128  # columns per group in _top


def _top(cand: Any, kk: int) -> tuple[Any, Any]:
    """cand.topk(kk) (values, ids; largest first) in about one cheap pass: the kk largest values lie
    in the kk groups of GROUP columns with the largest maxima (each such value is some group's
    member and at most its maximum), so a max per group, a top-kk of the groups and a top-kk of
    their kk * GROUP columns give them; a full topk over 126k columns costs several times more."""
    import torch

    r, n = cand.shape
    n_groups = n // GROUP
    if n_groups < 4 * kk:
        return cand.topk(kk, dim=-1)
    body = cand[:, : n_groups * GROUP].unflatten(1, (n_groups, GROUP))  # a view: no copy
    _, groups = body.amax(dim=-1).topk(kk, dim=-1)  # (r, kk)
    cols = (groups[:, :, None] * GROUP + torch.arange(GROUP, device=cand.device)).flatten(1)  # (r, kk * GROUP)
    if n > n_groups * GROUP:  # the columns past the last whole group are candidates too
        tail = torch.arange(n_groups * GROUP, n, device=cand.device).expand(r, -1)
        cols = torch.cat([cols, tail], dim=1)
    vals, at = cand.gather(1, cols).topk(kk, dim=-1)
    return vals, cols.gather(1, at)


def _split_chunk(x: Any, tok: Any, need: np.ndarray, is_probs: bool, k: int, ex: Any, n_cols: int) -> tuple[Any, Any]:
    """_chunk's result where only the `need` rows get entropy and candidates (p(token) for all)."""
    import torch

    v = torch.zeros((len(x), 2 + k), dtype=torch.float32, device=x.device)
    v[:, 1] = float("nan")
    i = torch.zeros((len(x), k), dtype=torch.long, device=x.device)
    rest = torch.as_tensor(np.flatnonzero(~need), device=x.device)
    xr = x[rest]  # advanced indexing: a row-wise copy (index_select is far slower on the CPU)
    pr = xr if is_probs else torch.softmax(xr, dim=-1)
    v[rest, 0] = pr.gather(1, tok[rest])[:, 0].float()
    if need.any():
        sel = torch.as_tensor(np.flatnonzero(need), device=x.device)
        v[sel], i[sel] = _chunk(x[sel], tok[sel], is_probs, k, ex, n_cols)
    return v, i


def _chunk(x: Any, tok: Any, is_probs: bool, k: int, ex: Any, n_cols: int) -> tuple[Any, Any]:
    """(rows, 2 + K) float32 [p(token), entropy, top-K p] and (rows, K) ids of a chunk of scores."""
    import torch

    cand = x[:, :n_cols]  # logits rank as their probabilities do
    n_ex = 0 if ex is None else len(ex)
    is_whole = n_cols == x.shape[1] and n_ex <= EXCLUDE_BY_SELECTION  # the raw top-1 is the row's largest
    if n_ex > EXCLUDE_BY_SELECTION:
        cand = cand.clone()
        cand[:, ex] = -1.0 if is_probs else -torch.inf
        n_ex = 0
    top_vals, top_ids = _top(cand, min(k + n_ex, n_cols))  # (r, K + E), most probable first
    if is_probs:
        p = x
        entropy = -torch.nansum(x * torch.log(x), dim=-1)  # a zero probability adds nothing
    else:
        p = torch.softmax(x, dim=-1)  # (r, V): one fused pass; the chunk stays in cache for the rest
        # log-sum-exp from the row's largest logit m and its probability p_max = exp(m - lse)
        if is_whole:
            m, at_m = top_vals[:, 0], top_ids[:, :1]
        else:
            m, at_m = x.max(dim=-1)
            at_m = at_m[:, None]
        lse = m - torch.log(p.gather(1, at_m)[:, 0])  # (r,)
        entropy = lse - (p * x).sum(dim=-1)  # -sum p log p = lse - sum p x (vecdot is 3x slower on the CPU)
        bad = ~torch.isfinite(entropy)
        if bad.any():  # -inf logits: 0 * -inf left out, as it should be
            logp = torch.log_softmax(x[bad], dim=-1)
            entropy[bad] = -torch.nansum(logp.exp() * logp, dim=-1)
    p_token = p.gather(1, tok)[:, 0]
    ids = top_ids
    if n_ex:
        is_out = torch.isin(top_ids, ex).to(torch.int8)
        first = torch.sort(is_out, dim=-1, stable=True).indices[:, :k]  # the first K allowed, in order
        ids = top_ids.gather(1, first)
    ids = ids[:, :k]
    return torch.cat([p_token[:, None], entropy[:, None], p.gather(1, ids)], dim=1).float(), ids
