"""Autoregressive image-token transformer (LlamaGen / DALL-E style): writes the 8×8 grid one token at a time.

The h×w tokens are read in raster order. Position ``i`` sees a start token (``bos_id``) at ``i = 0`` or the
previous image token otherwise, attends causally to everything before it, cross-attends to the text
encoder's per-token states, and predicts token ``i``. Generation runs ``prefill`` once (the start token and
any given prefix) and then ``decode_one_token`` per position over a static KV cache (gpt-fast style): the
cache is allocated once per generation, so each step projects keys/values for one new position only.
The sampling loop (temperature, top-k/top-p, CFG) lives in ``pixlm.sampling.autoregressive``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from pixlm.checkpoint import Pretrained
from pixlm.models.layers import MLP, Attention, init_weights, resolve_prepared


@dataclass
class AutoregressiveConfig:
    vocab_size: int = 1000  # image codes; the start token is ``vocab_size``
    grid: int = 8
    dim: int = 192
    layers: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    text_dim: int = 384

    def __post_init__(self) -> None:
        if self.dim % self.heads:
            raise ValueError(f"dim={self.dim} must be divisible by heads={self.heads}")
        for name in ("vocab_size", "grid", "layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")

    @property
    def num_tokens(self) -> int:
        return self.grid * self.grid

    @property
    def bos_id(self) -> int:
        return self.vocab_size


class KVCache:
    """Static per-layer key/value buffers (B, H, N, Dh), filled position by position."""

    def __init__(self, layers: int, batch: int, heads: int, length: int, head_dim: int,
                 device: torch.device, dtype: torch.dtype) -> None:
        shape = (batch, heads, length, head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(layers)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(layers)]
        self.length = length
        self.filled = 0  # positions written so far

    @property
    def batch(self) -> int:
        return self.k[0].shape[0]


class CausalBlock(nn.Module):
    """Pre-norm block: causal self-attention (optionally through a KV cache), cross-attention to text, MLP."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, text_dim: int) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim, heads)
        self.norm2, self.cross_attn = nn.LayerNorm(dim), Attention(dim, heads, context_dim=text_dim)
        self.norm3, self.mlp = nn.LayerNorm(dim), MLP(dim, mlp_ratio)

    def forward(self, x: torch.Tensor, text_kv: tuple[torch.Tensor, torch.Tensor], text_mask: torch.Tensor,
                cache: KVCache | None = None, layer: int = 0, pos: int = 0) -> torch.Tensor:
        h = self.norm1(x)  # (B, T, C)
        if cache is None:
            x = x + self.attn(h, is_causal=True)
        else:
            t = x.shape[1]
            k, v = self.attn.project_kv(h)  # (B, H, T, Dh) for the new positions only
            cache.k[layer][:, :, pos:pos + t] = k
            cache.v[layer][:, :, pos:pos + t] = v
            kv = (cache.k[layer][:, :, :pos + t], cache.v[layer][:, :, :pos + t])
            # t > 1 only in prefill, which starts at 0, so SDPA's top-left causal mask is the right one;
            # a single new token attends to every cached position.
            x = x + self.attn(h, kv=kv, is_causal=t > 1)
        x = x + self.cross_attn(self.norm2(x), mask=text_mask, kv=text_kv)
        return x + self.mlp(self.norm3(x))


class AutoregressiveTransformer(nn.Module, Pretrained):
    config_class = AutoregressiveConfig
    kind = "autoregressive"

    def __init__(self, config: AutoregressiveConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.tok_emb = nn.Embedding(c.vocab_size + 1, c.dim)  # + the start token
        self.pos_emb = nn.Parameter(torch.randn(c.num_tokens, c.dim) * 0.02)
        self.blocks = nn.ModuleList(CausalBlock(c.dim, c.heads, c.mlp_ratio, c.text_dim) for _ in range(c.layers))
        self.norm = nn.LayerNorm(c.dim)
        self.head = nn.Linear(c.dim, c.vocab_size)
        self.apply(init_weights)

    def prepare_text(self, text: torch.Tensor, text_mask: torch.Tensor) -> dict:
        """Per-layer cross-attention keys/values of the prompt, computed once per generation."""
        return {"kv": [blk.cross_attn.prepare_context(text) for blk in self.blocks], "mask": text_mask}

    def _inputs(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T) image tokens → (B, T) inputs: the start token, then the tokens shifted right by one."""
        bos = tokens.new_full((tokens.shape[0], 1), self.config.bos_id)
        return torch.cat([bos, tokens[:, :-1]], dim=1)

    def _run(self, inputs: torch.Tensor, prepared: dict, cache: KVCache | None, pos: int) -> torch.Tensor:
        t = inputs.shape[1]
        x = self.tok_emb(inputs) + self.pos_emb[pos:pos + t]  # (B, T, C)
        for i, (blk, kv) in enumerate(zip(self.blocks, prepared["kv"])):
            x = blk(x, kv, prepared["mask"], cache=cache, layer=i, pos=pos)
        return self.head(self.norm(x))  # (B, T, V)

    def forward(self, tokens: torch.Tensor, text: torch.Tensor | None = None, text_mask: torch.Tensor | None = None,
                prepared: dict | None = None) -> torch.Tensor:
        """Teacher forcing: tokens (B, T ≤ N) → logits (B, T, vocab_size); row ``i`` predicts token ``i``."""
        prepared = resolve_prepared(self, text, text_mask, prepared)
        if not 1 <= tokens.shape[1] <= self.config.num_tokens:
            raise ValueError(f"got {tokens.shape[1]} tokens; the model writes 1..{self.config.num_tokens}")
        return self._run(self._inputs(tokens), prepared, None, 0)

    def new_cache(self, batch: int) -> KVCache:
        """An empty static KV cache for ``batch`` rows and all N positions."""
        c = self.config
        p = self.pos_emb
        return KVCache(c.layers, batch, c.heads, c.num_tokens, c.dim // c.heads, p.device, p.dtype)

    def prefill(self, prepared: dict, cache: KVCache, prefix: torch.Tensor | None = None) -> torch.Tensor:
        """Fill the cache with the start token and an optional prefix (B, P < N) → logits (B, V) for token P."""
        b = cache.batch
        if cache.filled:
            raise ValueError(f"prefill needs an empty cache; this one holds {cache.filled} positions")
        start = torch.full((b, 1), self.config.bos_id, dtype=torch.long, device=self.pos_emb.device)
        if prefix is not None:
            if prefix.shape[0] != b or prefix.shape[1] >= self.config.num_tokens:
                raise ValueError(f"prefix shape {tuple(prefix.shape)} must be ({b}, < {self.config.num_tokens})")
            start = torch.cat([start, prefix.long()], dim=1)
        logits = self._run(start, prepared, cache, 0)
        cache.filled = start.shape[1]
        return logits[:, -1]

    def decode_one_token(self, token: torch.Tensor, prepared: dict, cache: KVCache) -> torch.Tensor:
        """Feed the token just chosen for position ``cache.filled - 1`` → logits (B, V) for the next position."""
        pos = cache.filled
        if not 1 <= pos < self.config.num_tokens:
            raise ValueError(f"cache holds {pos} positions; decoding needs 1..{self.config.num_tokens - 1}")
        logits = self._run(token.view(-1, 1).long(), prepared, cache, pos)
        cache.filled = pos + 1
        return logits[:, -1]


def autoregressive_loss(model: AutoregressiveTransformer, tokens: torch.Tensor, text: torch.Tensor,
                        text_mask: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Next-token cross-entropy over all N positions (teacher forcing)."""
    logits = model(tokens, text, text_mask)  # (B, N, V)
    return F.cross_entropy(logits.flatten(0, 1), tokens.flatten(), label_smoothing=label_smoothing)
