"""A tiny word-level causal language model that rewrites a loose prompt as a canonical shapes caption.

A training sequence is ``<loose words> <sep> <canonical words> <eos>``; the loss covers only what follows
``<sep>``. The vocabulary lives in the config (``config.json``), so a checkpoint carries its own tokenizer.
Decoding is greedy with a KV cache: one prefill over the prompt, then one position per step.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from pixlm.checkpoint import Pretrained
from pixlm.models.layers import Block, init_weights

PAD, UNK, SEP, EOS = "<pad>", "<unk>", "<sep>", "<eos>"
SPECIALS = (PAD, UNK, SEP, EOS)
_WORD = re.compile(r"[a-z]+|[0-9]+|[^\sa-z0-9]")


def split_words(text: str) -> list[str]:
    """Lower-case words, numbers and single punctuation marks: "Top-left!" → ["top", "-", "left", "!"]."""
    return _WORD.findall(text.lower())


def join_words(words: list[str]) -> str:
    """Inverse of ``split_words`` for canonical captions: words joined by spaces, no space before punctuation."""
    return re.sub(r" (?=[,.!?;:])", "", " ".join(words))


def build_vocab(phrases: set[str] | list[str]) -> tuple[str, ...]:
    """Special tokens, then every word of ``phrases`` in sorted order (deterministic)."""
    words = sorted({w for p in phrases for w in split_words(p)} - set(SPECIALS))
    return (*SPECIALS, *words)


def caption_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of (B, T, V) logits against (B, T) targets, skipping -100 (prompt and padding)."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=-100)


@dataclass
class ExpanderConfig:
    vocab: tuple[str, ...] = SPECIALS  # token id = index; the first four are SPECIALS
    dim: int = 128
    layers: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    max_len: int = 112  # prompt + <sep> + caption + <eos>
    max_new_tokens: int = 48

    def __post_init__(self) -> None:
        if tuple(self.vocab[:4]) != SPECIALS:
            raise ValueError(f"vocab must start with {SPECIALS}, got {tuple(self.vocab[:4])}")
        if len(set(self.vocab)) != len(self.vocab):
            raise ValueError("vocab has duplicate words")
        if self.max_new_tokens >= self.max_len:
            raise ValueError(f"max_new_tokens={self.max_new_tokens} must be < max_len={self.max_len}")


class ExpanderLM(nn.Module, Pretrained):
    """GPT-style decoder: token + position embeddings, pre-norm causal blocks, head tied to the embeddings."""

    config_class = ExpanderConfig
    kind = "expander_lm"

    def __init__(self, config: ExpanderConfig) -> None:
        super().__init__()
        self.config = config
        self.index = {w: i for i, w in enumerate(config.vocab)}
        self.pad_id, self.unk_id, self.sep_id, self.eos_id = (self.index[s] for s in SPECIALS)
        self.tok_emb = nn.Embedding(len(config.vocab), config.dim)
        self.pos_emb = nn.Parameter(torch.zeros(config.max_len, config.dim))
        self.blocks = nn.ModuleList(Block(config.dim, config.heads, config.mlp_ratio, None)
                                    for _ in range(config.layers))
        self.norm = nn.LayerNorm(config.dim)
        self.apply(init_weights)
        for name, p in self.named_parameters():  # residual projections shrink with depth (GPT-2)
            if name.endswith(("attn.out.weight", "mlp.fc2.weight")):
                nn.init.normal_(p, std=0.02 / (2 * config.layers) ** 0.5)
        nn.init.normal_(self.pos_emb, std=0.02)

    # ------------------------------------------------------------------ text ↔ ids
    def encode(self, text: str) -> list[int]:
        """Word ids of ``text``; unknown words become ``<unk>``."""
        return [self.index.get(w, self.unk_id) for w in split_words(text)]

    def decode(self, ids: list[int]) -> str:
        """Text of ``ids`` up to the first ``<eos>``, special tokens dropped."""
        words = []
        for i in ids:
            if i == self.eos_id:
                break
            if i >= len(SPECIALS):
                words.append(self.config.vocab[i])
        return join_words(words)

    def example(self, loose: str, canonical: str) -> tuple[list[int], int]:
        """Ids of ``loose <sep> canonical <eos>`` (loose part cut to fit) and the index of ``<sep>``."""
        target = self.encode(canonical) + [self.eos_id]
        room = self.config.max_len - len(target) - 1
        if room < 1:
            raise ValueError(f"caption {canonical!r} has {len(target) - 1} words; at most "
                             f"{self.config.max_len - 2} fit in max_len={self.config.max_len}")
        src = self.encode(loose)[:room]
        return src + [self.sep_id] + target, len(src)

    def batch(self, pairs: list[tuple[str, str]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded inputs (B, T) and targets (B, T) with -100 wherever no loss is taken."""
        seqs = [self.example(a, b) for a, b in pairs]
        t = max(len(s) for s, _ in seqs) - 1
        x = torch.full((len(seqs), t), self.pad_id, dtype=torch.long)
        y = torch.full((len(seqs), t), -100, dtype=torch.long)
        for i, (s, sep) in enumerate(seqs):
            ids = torch.tensor(s)
            x[i, : len(s) - 1] = ids[:-1]
            y[i, sep: len(s) - 1] = ids[sep + 1:]  # predict the caption and <eos> from <sep> on
        return x, y

    def packed_batch(self, pairs: list[tuple[str, str]]) -> dict[str, torch.Tensor]:
        """Examples packed end to end into rows of ``max_len`` (about 3× fewer padded positions than ``batch``).

        Returns ``idx``, ``targets`` (-100 = no loss), ``positions`` (restarting at 0 for each example) and
        ``segments`` (example number within its row; -1 for padding), each (R, max_len); ``forward`` with
        positions and segments keeps every example blind to the others, so the loss equals ``batch``'s.
        """
        length = self.config.max_len
        rows: list[list[tuple[list[int], int]]] = [[]]
        used = 0
        for a, b in pairs:
            seq, sep = self.example(a, b)
            if used + len(seq) - 1 > length:
                rows.append([])
                used = 0
            rows[-1].append((seq, sep))
            used += len(seq) - 1
        out = {"idx": torch.full((len(rows), length), self.pad_id, dtype=torch.long),
               "targets": torch.full((len(rows), length), -100, dtype=torch.long),
               "positions": torch.zeros((len(rows), length), dtype=torch.long),
               "segments": torch.full((len(rows), length), -1, dtype=torch.long)}
        for r, row in enumerate(rows):
            at = 0
            for n, (seq, sep) in enumerate(row):
                ids, k = torch.tensor(seq), len(seq) - 1
                out["idx"][r, at:at + k] = ids[:-1]
                out["targets"][r, at + sep:at + k] = ids[sep + 1:]
                out["positions"][r, at:at + k] = torch.arange(k)
                out["segments"][r, at:at + k] = n
                at += k
        return out

    # ------------------------------------------------------------------ network
    def forward(self, idx: torch.Tensor, positions: torch.Tensor | None = None,
                segments: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T) ids → (B, T, V) next-token logits (causal; within each segment when ``segments`` is given)."""
        t = idx.shape[1]
        if t > self.config.max_len:
            raise ValueError(f"sequence of {t} tokens exceeds max_len={self.config.max_len}")
        if segments is None:
            x = self.tok_emb(idx) + self.pos_emb[:t]  # (B, T, C)
            for block in self.blocks:
                x = block(x, is_causal=True)
        else:
            x = self.tok_emb(idx) + self.pos_emb[positions]  # (B, T, C)
            causal = torch.ones(t, t, dtype=torch.bool, device=idx.device).tril()
            mask = ((segments[:, :, None] == segments[:, None, :]) & causal)[:, None]  # (B, 1, T, T)
            for block in self.blocks:
                x, _ = self._block(block, x, attn_mask=mask)
        return F.linear(self.norm(x), self.tok_emb.weight)  # (B, T, V)

    @staticmethod
    def _block(block: Block, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False,
               past: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, tuple]:
        """``block``'s computation with a full attention mask and/or cached keys; returns x and this step's (k, v)."""
        attn = block.attn
        b, t, _ = x.shape
        h = block.norm1(x)
        q = attn.q(h).view(b, t, attn.heads, -1).transpose(1, 2)  # (B, H, t, Dh)
        k, v = attn.project_kv(h)  # (B, H, t, Dh) each
        if past is not None:
            k, v = torch.cat([past[0], k], 2), torch.cat([past[1], v], 2)  # (B, H, S, Dh)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal)
        x = x + attn.out(y.transpose(1, 2).reshape(b, t, -1))
        return x + block.mlp(block.norm3(x)), (k, v)

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy over the caption positions of a ``batch``."""
        return caption_loss(self(x), y)

    # ------------------------------------------------------------------ decoding
    def _step(self, idx: torch.Tensor, start: int, cache: list) -> torch.Tensor:
        """Run ``idx`` (B, t) at positions ``start…`` through the blocks, extending ``cache``; last logits (B, V)."""
        b, t = idx.shape
        if start > 0 and t != 1:
            raise ValueError(f"after the prefill, decode one token at a time (got {t})")
        x = self.tok_emb(idx) + self.pos_emb[start:start + t]  # (B, t, C)
        for n, block in enumerate(self.blocks):
            # Prefill is causal; a single new token may see every cached position.
            x, cache[n] = self._block(block, x, is_causal=start == 0 and t > 1, past=cache[n])
        return F.linear(self.norm(x[:, -1]), self.tok_emb.weight)  # (B, V)

    @torch.no_grad()
    def generate_ids(self, prompts: list[list[int]], max_new_tokens: int | None = None,
                     use_cache: bool = True) -> list[list[int]]:
        """Greedy continuation of each id list (which should end with ``<sep>``), stopping at ``<eos>``.

        Prompts of equal length share a batch, so no padding is ever attended to.
        """
        n_new = self.config.max_new_tokens if max_new_tokens is None else max_new_tokens
        out: list[list[int]] = [[] for _ in prompts]
        by_len: dict[int, list[int]] = defaultdict(list)
        for i, p in enumerate(prompts):
            if not 1 <= len(p) < self.config.max_len:
                raise ValueError(f"prompt {i} has {len(p)} tokens; must be in [1, {self.config.max_len - 1}]")
            by_len[len(p)].append(i)
        device = self.pos_emb.device
        for length, rows in by_len.items():
            seq = torch.tensor([prompts[i] for i in rows], device=device)  # (B, L)
            done = torch.zeros(len(rows), dtype=torch.bool, device=device)
            cache: list = [None] * len(self.blocks)
            logits = self._step(seq, 0, cache) if use_cache else self(seq)[:, -1]
            for _ in range(min(n_new, self.config.max_len - length)):
                nxt = logits.argmax(-1)  # (B,)
                nxt = torch.where(done, torch.full_like(nxt, self.eos_id), nxt)
                seq = torch.cat([seq, nxt[:, None]], 1)
                done |= nxt == self.eos_id
                if done.all() or seq.shape[1] >= self.config.max_len:
                    break
                logits = self._step(nxt[:, None], seq.shape[1] - 1, cache) if use_cache else self(seq)[:, -1]
            for r, i in enumerate(rows):
                out[i] = seq[r, length:].tolist()
        return out

    def rewrite(self, texts: list[str], max_new_tokens: int | None = None) -> list[str]:
        """Greedy canonical caption for each loose text (the raw model output; no validation)."""
        limit = self.config.max_len - self.config.max_new_tokens - 1
        prompts = []
        for t in texts:
            ids = self.encode(t)
            if not ids:
                raise ValueError(f"prompt {t!r} has no words")
            if len(ids) > limit:
                raise ValueError(f"prompt {t[:60]!r}… has {len(ids)} words; the expander reads at most {limit}")
            prompts.append(ids + [self.sep_id])
        return [self.decode(ids) for ids in self.generate_ids(prompts, max_new_tokens)]

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
