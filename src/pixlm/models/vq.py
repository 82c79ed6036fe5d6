"""Image tokenizer: a convolutional autoencoder with finite scalar quantisation (FSQ).

64×64 RGB ↔ a grid of integer tokens: 8×8 with four channel entries (three halvings), 16×16 with three. FSQ
(Mentzer et al., 2023) rounds each of a few bounded latent channels to a fixed number of levels; the token is the
mixed-radix number of those levels. It has no codebook to collapse and needs no commitment loss, which keeps
training a single reconstruction loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from pixlm.checkpoint import Pretrained


@dataclass
class VQConfig:
    image_size: int = 64
    levels: tuple[int, ...] = (8, 5, 5, 5)  # 1000 codes
    channels: tuple[int, ...] = (32, 64, 128, 128)  # per resolution, full size first, halved between entries
    res_blocks: int = 1

    def __post_init__(self) -> None:
        self.levels = tuple(int(v) for v in self.levels)
        self.channels = tuple(int(v) for v in self.channels)
        if any(v < 2 for v in self.levels):
            raise ValueError(f"levels={self.levels}: every FSQ level must be >= 2")
        if not 2 <= len(self.channels) <= 5:
            raise ValueError(f"channels={self.channels}: need 2 to 5 entries, one per resolution from full size down "
                             f"(4 entries: 64, 32, 16, 8 px, an 8x8 token grid; 3 entries: a 16x16 grid)")
        if self.image_size % 2 ** (len(self.channels) - 1):
            raise ValueError(f"image_size={self.image_size} is not divisible by 2**{len(self.channels) - 1} "
                             f"(channels={self.channels})")
        if any(v < 8 or v % 8 for v in self.channels):
            raise ValueError(f"channels={self.channels}: each must be a positive multiple of 8 (GroupNorm groups)")

    @property
    def vocab_size(self) -> int:
        return math.prod(self.levels)

    @property
    def grid(self) -> int:
        return self.image_size // 2 ** (len(self.channels) - 1)


class ResBlock(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(8, ch), nn.Conv2d(ch, ch, 3, padding=1)
        self.norm2, self.conv2 = nn.GroupNorm(8, ch), nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        return x + self.conv2(F.silu(self.norm2(h)))


class FSQ(nn.Module):
    """Bound each channel with tanh, round it to its levels (straight-through), and map codes ↔ indices."""

    def __init__(self, levels: tuple[int, ...]) -> None:
        super().__init__()
        lv = torch.tensor(levels, dtype=torch.float32)
        basis = torch.cumprod(torch.tensor((1,) + levels[:-1]), 0)
        self.register_buffer("levels", lv, persistent=False)
        self.register_buffer("basis", basis, persistent=False)

    def quantize(self, z: torch.Tensor) -> torch.Tensor:
        """(B, d, H, W) unbounded → (B, d, H, W) codes in [-1, 1], gradients passed straight through.

        Always in float32: under bf16 autocast a bounded value near a rounding boundary could land on either side."""
        z = z.float()
        lv = self.levels.view(1, -1, 1, 1)
        half_l = (lv - 1) * (1 + 1e-3) / 2
        offset = torch.where(lv % 2 == 0, 0.5, 0.0)
        shift = torch.atanh(offset / half_l)
        bounded = torch.tanh(z + shift) * half_l - offset
        rounded = bounded + (bounded.round() - bounded).detach()
        return rounded / (lv // 2)

    def codes_to_indices(self, codes: torch.Tensor) -> torch.Tensor:
        half = (self.levels // 2).view(1, -1, 1, 1)
        digits = (codes * half + half).round().long()  # (B, d, H, W) in [0, level)
        return (digits * self.basis.view(1, -1, 1, 1)).sum(1)  # (B, H, W)

    def indices_to_codes(self, idx: torch.Tensor) -> torch.Tensor:
        lv = self.levels.long().view(1, -1, 1, 1)
        digits = (idx.unsqueeze(1) // self.basis.view(1, -1, 1, 1)) % lv  # (B, d, H, W)
        half = (self.levels // 2).view(1, -1, 1, 1)
        return (digits.float() - half) / half


class VQModel(nn.Module, Pretrained):
    """``encode`` images in [-1, 1] (B, 3, 64, 64) to tokens (B, g, g); ``decode`` tokens back to images."""

    config_class = VQConfig
    kind = "vq"

    def __init__(self, config: VQConfig) -> None:
        super().__init__()
        self.config = config
        c = config.channels
        d, last = len(config.levels), len(c) - 1
        enc: list[nn.Module] = [nn.Conv2d(3, c[0], 3, padding=1)]
        for i in range(last):  # halve: 64 → 32 → 16 (→ 8)
            enc += [nn.Conv2d(c[i], c[i + 1], 4, stride=2, padding=1)]
            enc += [ResBlock(c[i + 1]) for _ in range(config.res_blocks)]
        enc += [nn.GroupNorm(8, c[last]), nn.SiLU(), nn.Conv2d(c[last], d, 1)]
        self.encoder = nn.Sequential(*enc)
        dec: list[nn.Module] = [nn.Conv2d(d, c[last], 3, padding=1)]
        dec += [ResBlock(c[last]) for _ in range(config.res_blocks + 1)]
        for i in range(last, 0, -1):  # double: (8 →) 16 → 32 → 64
            dec += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c[i], c[i - 1], 3, padding=1)]
            dec += [ResBlock(c[i - 1]) for _ in range(config.res_blocks)]
        dec += [nn.GroupNorm(8, c[0]), nn.SiLU(), nn.Conv2d(c[0], 3, 3, padding=1)]
        self.decoder = nn.Sequential(*dec)
        self.fsq = FSQ(config.levels)

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reconstruction (B, 3, H, W) and token indices (B, h, w), for training."""
        codes = self.fsq.quantize(self.encoder(images))
        return self.decoder(codes), self.fsq.codes_to_indices(codes)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.fsq.codes_to_indices(self.fsq.quantize(self.encoder(images)))

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, h, w) long → (B, 3, H, W) float in [-1, 1] (clamped)."""
        return self.decoder(self.fsq.indices_to_codes(tokens)).clamp(-1, 1)

    def with_decoder_of(self, other: "VQModel") -> "VQModel":
        """``other`` (a decoder fine-tune of this tokenizer, ``freeze_encoder``), checked to encode exactly as this
        one does, so a generator trained on this tokenizer's tokens can use it."""
        mine, theirs = self.encoder.state_dict(), other.encoder.state_dict()
        if self.config.levels != other.config.levels or mine.keys() != theirs.keys() or any(
                not torch.equal(v, theirs[k].to(v.dtype)) for k, v in mine.items()):
            raise ValueError("the fine-tuned tokenizer's encoder differs from the one the generator was trained on")
        return other
