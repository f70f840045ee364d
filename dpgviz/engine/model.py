"""The seed's bidirectional GPT (nanoGPT layout), so users' diffusion checkpoints load as-is.

Parameter names match nanoGPT exactly (`transformer.wte`, `transformer.h.{i}.attn.c_attn`,
...), the token embedding is tied to `lm_head`, attention is bidirectional and positions
come from RoPE (rotate-half layout, base 10000) or from learned `wpe` when use_rope is off.

Prefix KV cache (Fast-dLLM, Wu et al. 2025, "prefix KV cache"): a semi-autoregressive run
denoises one block at the end of a window whose first C positions (the context) are fixed.
`forward_filling_cache(idx, C)` is the plain forward over the whole window that also keeps
every layer's keys and values of its first C positions (RoPE already applied, so they keep
their absolute positions); `forward_with_cache(block, cache)` then runs only the block's n
positions as queries against [cached K/V ; the block's own K/V], rotated at positions
C..C+n-1. Attention is bidirectional, so the context's K/V depend on the block they were
computed with; reusing them after the block changed is Fast-dLLM's approximation. Fed the
block the cache was filled with, the cached forward equals the plain forward's last n rows
(tests/test_prefix_cache.py).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

import torch
import torch.nn as nn
from torch.nn import functional as F


@dataclass
class ModelConfig:
    block_size: int = 1024  # longest sequence; RoPE tables and wpe are this long
    vocab_size: int = 66  # embedding rows: real tokens + mask (+ reserved ids)
    n_layer: int = 6
    n_head: int = 6
    n_embd: int = 384
    dropout: float = 0.0  # training only; sampling runs in eval mode
    bias: bool = False  # nanoGPT: no bias is slightly better and faster
    attention_type: str = "bidirectional"  # 'causal' checkpoints are not diffusion models
    use_rope: bool = True

    @classmethod
    def from_model_args(cls, model_args: dict) -> ModelConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in model_args.items() if k in names})

    def to_model_args(self) -> dict:
        return asdict(self)


class LayerNorm(nn.Module):
    """LayerNorm with an optional bias (PyTorch's has no bias=False before 2.1)."""

    def __init__(self, ndim: int, bias: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


def rope_tables(seq_len: int, head_dim: int, device: torch.device, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of shape (T, hs) in rotate-half layout: the first and second halves share angles."""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim))
    angles = torch.outer(torch.arange(seq_len, device=device, dtype=torch.float32), inv_freq)  # (T, hs/2)
    angles = torch.cat([angles, angles], dim=-1)  # (T, hs)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (B, nh, T, hs) by position: x*cos + rotate_half(x)*sin."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


@dataclass
class LayerKV:
    """One layer's part of a PrefixCache: keys and values of the window's first `keep` positions.

    Filling (`keys` is None): `attend` keeps this pass's keys and values and attends over them.
    Using: `attend` writes the block's keys and values after the kept ones, in place when the
    block is as long as the one filled with (the usual case: no copy of the prefix per pass),
    else into a new tensor. In-place writes need the cache used in the grad mode it was
    filled in (the sampler fills and uses it under torch.inference_mode).
    """

    keep: int
    keys: torch.Tensor | None = None  # (B, nh, keep + room, hs), RoPE applied; [keep:] scratch
    values: torch.Tensor | None = None  # (B, nh, keep + room, hs)

    def attend(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.keys is None:  # filling: this pass is the whole window
            self.keys, self.values = k, v.contiguous()
            return k, v
        T = k.size(2)
        if self.keys.size(2) == self.keep + T:
            self.keys[:, :, self.keep :].copy_(k)
            self.values[:, :, self.keep :].copy_(v)
            return self.keys, self.values  # (B, nh, keep + T, hs)
        keys, values = self.keys[:, :, : self.keep], self.values[:, :, : self.keep]
        return torch.cat([keys, k], dim=2), torch.cat([values, v], dim=2)  # (B, nh, keep + T, hs)

    @property
    def is_filled(self) -> bool:
        return self.keys is not None


@dataclass
class PrefixCache:
    """Every layer's keys and values of a window's first `length` positions (the context)."""

    length: int
    layers: list[LayerKV] = field(default_factory=list)


class SelfAttention(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        assert config.n_embd % config.n_head == 0, (config.n_embd, config.n_head)
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.attn_dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.use_rope = config.use_rope

    def forward(
        self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None, kv: LayerKV | None = None
    ) -> torch.Tensor:
        B, T, C = x.size()
        if kv is not None and kv.is_filled and rope is not None:
            return self._attend_cached(x, rope, kv)
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        if kv is not None:
            k, v = kv.attend(k, v)  # (B, nh, P + T, hs) with a cached prefix of P positions
        dropout = self.attn_dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=False)  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))

    def _attend_cached(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], kv: LayerKV) -> torch.Tensor:
        """forward() for a block after a filled prefix cache: the same arithmetic, with q and k
        rotated in one call (half the small element-wise ops: this pass is short, so they count)."""
        B, T, C = x.size()
        nh, hs = self.n_head, C // self.n_head
        qkv = self.c_attn(x).view(B, T, 3 * nh, hs).transpose(1, 2)  # (B, 3nh, T, hs)
        qk = apply_rope(qkv[:, : 2 * nh], *rope)  # (B, 2nh, T, hs)
        k, v = kv.attend(qk[:, nh:], qkv[:, 2 * nh :])  # (B, nh, keep + T, hs)
        y = F.scaled_dot_product_attention(qk[:, :nh], k, v, is_causal=False)  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU()  # exact (erf) GELU, as nanoGPT
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.ln_1 = LayerNorm(config.n_embd, bias=config.bias)
        self.attn = SelfAttention(config)
        self.ln_2 = LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(
        self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None, kv: LayerKV | None = None
    ) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), rope, kv)
        return x + self.mlp(self.ln_2(x))


class DiffusionGPT(nn.Module):
    """Bidirectional transformer that predicts every position's token (logits for all T)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        layers = dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=LayerNorm(config.n_embd, bias=config.bias),
        )
        if not config.use_rope:
            layers["wpe"] = nn.Embedding(config.block_size, config.n_embd)
        self.transformer = nn.ModuleDict(layers)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # weight tying, as nanoGPT
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):  # GPT-2 scaled init of residual projections
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))
        self._rope_cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def _rope(self, T: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        # Tables in the weights' dtype: float32 tables would promote bfloat16/float16 q and k
        # to float32, and scaled_dot_product_attention refuses mixed dtypes.
        key = (T, device, dtype)
        if key not in self._rope_cache:
            cos, sin = rope_tables(T, self.config.n_embd // self.config.n_head, device)
            self._rope_cache[key] = (cos.to(dtype), sin.to(dtype))
        return self._rope_cache[key]

    def forward_filling_cache(self, idx: torch.Tensor, prefix_len: int) -> tuple[torch.Tensor, PrefixCache]:
        """The plain forward's logits (B, T, vocab_size) and the K/V of idx's first `prefix_len`
        positions (all T of them: a cache of the context alone, computed without the block)."""
        assert 0 < prefix_len <= idx.size(1), (prefix_len, idx.shape)
        cache = PrefixCache(prefix_len, [LayerKV(prefix_len) for _ in self.transformer.h])
        return self._layers(idx, 0, cache.layers), cache

    def forward_with_cache(self, idx: torch.Tensor, cache: PrefixCache) -> torch.Tensor:
        """Logits (B, n, vocab_size) of n positions that follow the cached prefix: idx (B, n)
        sits at window positions cache.length .. cache.length + n - 1."""
        assert len(cache.layers) == len(self.transformer.h), (len(cache.layers), len(self.transformer.h))
        return self._layers(idx, cache.length, cache.layers)

    def _layers(self, idx: torch.Tensor, start: int, kvs: list[LayerKV]) -> torch.Tensor:
        """Logits (B, T, vocab_size) of ids (B, T) at window positions start .. start + T - 1,
        each layer's attention through its LayerKV (filling or using a prefix cache)."""
        B, T = idx.size()
        end = start + T
        assert end <= self.config.block_size, (start, T, self.config.block_size)
        x = self.transformer.wte(idx)  # (B, T, C)
        rope = None
        if self.config.use_rope:
            cos, sin = self._rope(end, idx.device, x.dtype)
            rope = (cos[start:], sin[start:])  # (T, hs): the block's absolute positions
        else:
            x = x + self.transformer.wpe(torch.arange(start, end, device=idx.device))
        x = self.transformer.drop(x)
        for block, kv in zip(self.transformer.h, kvs, strict=True):
            x = block(x, rope, kv)
        return self.lm_head(self.transformer.ln_f(x))  # (B, T, vocab_size)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Logits (B, T, vocab_size) for token ids (B, T)."""
        B, T = idx.size()
        assert T <= self.config.block_size, (T, self.config.block_size)
        x = self.transformer.wte(idx)  # (B, T, C)
        rope = None
        if self.config.use_rope:
            rope = self._rope(T, idx.device, x.dtype)
        else:
            x = x + self.transformer.wpe(torch.arange(T, device=idx.device))
        x = self.transformer.drop(x)
        for block in self.transformer.h:
            x = block(x, rope)
        return self.lm_head(self.transformer.ln_f(x))  # (B, T, vocab_size)
