"""Image-token captioner: a small transformer decoder that writes a caption, word by word, about a VQ token grid.

The 8×8 image tokens are embedded (plus a learned position per token) and mixed by a few bidirectional
self-attention blocks; a causal decoder over caption words cross-attends to them. The first input word is a
control token that picks the kind of caption: ``<free>`` for the varied captions of the dataset, ``<detailed>``
for the canonical full description (:func:`pixlm.data.detailed.detailed_caption`).

The vocabulary is word level, built from the training captions and saved in the config; unknown words map to
``<unk>``. The decoding loops (greedy, beam search, sampling) live in :mod:`pixlm.sampling.captioning`; the
network offers ``forward`` for training and ``start`` + ``step`` (a KV cache) for decoding.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from pixlm.checkpoint import CheckpointError, Pretrained
from pixlm.models.layers import Block, init_weights

SPECIALS = ("<pad>", "<unk>", "<eos>", "<free>", "<detailed>")
PAD, UNK, EOS, FREE, DETAILED = range(len(SPECIALS))
_WORD = re.compile(r"[a-z0-9]+|,")


class NoCaptionerError(CheckpointError):
    """The model folder has no ``captioner/``, so it cannot describe pictures."""


def split_words(text: str) -> list[str]:
    """Lower-cased words, with commas as words of their own ("a, b" → ["a", ",", "b"]); other punctuation dropped."""
    return _WORD.findall(text.lower())


def join_words(words: list[str]) -> str:
    """Inverse of :func:`split_words` for captions: words joined by spaces, no space before a comma."""
    return " ".join(words).replace(" ,", ",")


def build_vocab(captions: list[str], min_count: int = 1) -> tuple[str, ...]:
    """The special tokens followed by every word seen at least ``min_count`` times, sorted."""
    counts: dict[str, int] = {}
    for c in captions:
        for w in split_words(c):
            counts[w] = counts.get(w, 0) + 1
    return SPECIALS + tuple(sorted(w for w, n in counts.items() if n >= min_count and w not in SPECIALS))


def tokenizer_fingerprint(vq: nn.Module) -> str:
    """A short hash of the VQ encoder's weights (as float16, so a float16 copy of the model matches too)."""
    h = hashlib.sha256()
    for name, t in sorted(vq.encoder.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().to(torch.float16 if t.is_floating_point() else t.dtype).contiguous().numpy()
                 .tobytes())
    return h.hexdigest()[:16]


@dataclass
class CaptionerConfig:
    vocab: tuple[str, ...] = field(default_factory=lambda: SPECIALS)  # word list; SPECIALS come first
    image_vocab_size: int = 1000  # the VQ tokenizer's codes
    grid: int = 8
    dim: int = 128
    encoder_layers: int = 2
    decoder_layers: int = 3
    heads: int = 4
    mlp_ratio: float = 3.0
    max_length: int = 48  # caption words, counting the control token and <eos>
    tokenizer_id: str = ""  # tokenizer_fingerprint of the VQ model whose tokens it reads ("" = unchecked)

    def __post_init__(self) -> None:
        self.vocab = tuple(self.vocab)
        if self.vocab[: len(SPECIALS)] != SPECIALS:
            raise ValueError(f"vocab must start with the special tokens {SPECIALS}, got {self.vocab[:len(SPECIALS)]}")
        if len(set(self.vocab)) != len(self.vocab):
            raise ValueError("vocab has repeated words")
        if self.dim % self.heads:
            raise ValueError(f"dim={self.dim} must be divisible by heads={self.heads}")
        if self.max_length < 3:
            raise ValueError(f"max_length={self.max_length} must be >= 3")

    @property
    def num_tokens(self) -> int:
        return self.grid * self.grid


@dataclass
class DecodeState:
    """What ``step`` needs between calls: the image's cross-attention keys/values and the words' self-attention cache."""

    memory_kv: list[tuple[torch.Tensor, torch.Tensor]]  # per decoder layer, each (B, H, N, Dh)
    self_kv: list[tuple[torch.Tensor, torch.Tensor]]  # per decoder layer, each (B, H, T, Dh)
    length: int = 0

    def select(self, index: torch.Tensor) -> "DecodeState":
        """Keep/reorder batch rows (beam search)."""
        pick = lambda kv: (kv[0].index_select(0, index), kv[1].index_select(0, index))  # noqa: E731
        return DecodeState([pick(kv) for kv in self.memory_kv], [pick(kv) for kv in self.self_kv], self.length)


class Captioner(nn.Module, Pretrained):
    config_class = CaptionerConfig
    kind = "captioner"

    def __init__(self, config: CaptionerConfig) -> None:
        super().__init__()
        self.config = c = config
        self.word_index = {w: i for i, w in enumerate(c.vocab)}
        self.img_emb = nn.Embedding(c.image_vocab_size, c.dim)
        self.img_pos = nn.Parameter(torch.randn(c.num_tokens, c.dim) * 0.02)
        self.encoder = nn.ModuleList(Block(c.dim, c.heads, c.mlp_ratio, None) for _ in range(c.encoder_layers))
        self.enc_norm = nn.LayerNorm(c.dim)
        self.word_emb = nn.Embedding(len(c.vocab), c.dim)
        self.word_pos = nn.Parameter(torch.randn(c.max_length, c.dim) * 0.02)
        self.decoder = nn.ModuleList(Block(c.dim, c.heads, c.mlp_ratio, c.dim) for _ in range(c.decoder_layers))
        self.norm = nn.LayerNorm(c.dim)
        self.head = nn.Linear(c.dim, len(c.vocab))
        self.apply(init_weights)

    # ------------------------------------------------------------------ words
    def encode_text(self, text: str, detailed: bool = False) -> list[int]:
        """Caption text → ids: control token, words (unknown → <unk>), <eos>; cut to ``max_length``."""
        ids = [DETAILED if detailed else FREE] + [self.word_index.get(w, UNK) for w in split_words(text)] + [EOS]
        return ids[: self.config.max_length]

    def decode_ids(self, ids: list[int]) -> str:
        """Ids → text, stopping at <eos>; control and padding tokens are dropped."""
        words = []
        for i in ids:
            if i == EOS:
                break
            if i in (PAD, FREE, DETAILED):
                continue
            words.append(self.config.vocab[i])
        return join_words(words)

    # ------------------------------------------------------------------ network
    def encode_image(self, image_tokens: torch.Tensor) -> torch.Tensor:
        """(B, h, w) or (B, N) VQ tokens → memory (B, N, C)."""
        t = image_tokens.reshape(image_tokens.shape[0], -1).long()
        if t.shape[1] != self.config.num_tokens:
            raise ValueError(f"expected {self.config.num_tokens} image tokens per picture, got {t.shape[1]}")
        if int(t.max()) >= self.config.image_vocab_size or int(t.min()) < 0:
            raise ValueError(f"image tokens must be in [0, {self.config.image_vocab_size}), got "
                             f"[{int(t.min())}, {int(t.max())}]")
        x = self.img_emb(t) + self.img_pos  # (B, N, C)
        for blk in self.encoder:
            x = blk(x)
        return self.enc_norm(x)

    def forward(self, image_tokens: torch.Tensor, words: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: words (B, T) starting with the control token → next-word logits (B, T, V)."""
        t = words.shape[1]
        if t > self.config.max_length:
            raise ValueError(f"{t} words exceed max_length={self.config.max_length}")
        mem = self.encode_image(image_tokens)
        x = self.word_emb(words) + self.word_pos[:t]  # (B, T, C)
        for blk in self.decoder:
            x = blk(x, text_kv=blk.cross_attn.project_kv(mem), is_causal=True)
        return self.head(self.norm(x))

    def start(self, image_tokens: torch.Tensor) -> DecodeState:
        """Encode the pictures once and return an empty cache for :meth:`step`."""
        mem = self.encode_image(image_tokens)
        b, _, c = mem.shape
        h = self.config.heads
        empty = mem.new_zeros(b, h, 0, c // h)
        return DecodeState([blk.cross_attn.project_kv(mem) for blk in self.decoder],
                           [(empty, empty) for _ in self.decoder])

    def step(self, state: DecodeState, words: torch.Tensor) -> tuple[torch.Tensor, DecodeState]:
        """Feed one word per row (B,) → logits for the next word (B, V) and the extended cache.

        Computes exactly what ``forward`` computes at that position (the same Block modules, with the keys and
        values of earlier words taken from the cache instead of recomputed).
        """
        pos = state.length
        if pos >= self.config.max_length:
            raise ValueError(f"caption longer than max_length={self.config.max_length}")
        x = (self.word_emb(words) + self.word_pos[pos])[:, None]  # (B, 1, C)
        new_self = []
        for blk, mem_kv, (ck, cv) in zip(self.decoder, state.memory_kv, state.self_kv):
            h = blk.norm1(x)
            k, v = blk.attn.project_kv(h)  # (B, H, 1, Dh)
            k, v = torch.cat([ck, k], dim=2), torch.cat([cv, v], dim=2)
            new_self.append((k, v))
            x = x + blk.attn(h, kv=(k, v))  # the new word sees every earlier word: causal by construction
            x = x + blk.cross_attn(blk.norm2(x), kv=mem_kv)
            x = x + blk.mlp(blk.norm3(x))
        logits = self.head(self.norm(x))[:, 0]  # (B, V)
        return logits, DecodeState(state.memory_kv, new_self, pos + 1)


def pad_ids(rows: list[list[int]]) -> torch.Tensor:
    """Right-pad id lists with <pad> into a (B, T) long tensor."""
    t = max(len(r) for r in rows)
    out = torch.full((len(rows), t), PAD, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return out


def caption_loss(model: Captioner, image_tokens: torch.Tensor, words: torch.Tensor,
                 label_smoothing: float = 0.0) -> torch.Tensor:
    """Next-word cross-entropy over a padded batch of id rows (B, T) (each: control, words, <eos>, pads)."""
    logits = model(image_tokens, words[:, :-1])  # (B, T-1, V)
    target = words[:, 1:]
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=PAD,
                           label_smoothing=label_smoothing)


__all__ = ["Captioner", "NoCaptionerError", "CaptionerConfig", "DecodeState", "build_vocab", "caption_loss", "pad_ids", "split_words",
           "join_words", "tokenizer_fingerprint", "SPECIALS", "PAD", "UNK", "EOS", "FREE", "DETAILED"]
