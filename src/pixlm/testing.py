"""Tiny random-weight components for tests and examples (diffusers-style): seconds on a CPU, no downloads."""

from __future__ import annotations

import torch

from pixlm.models.masked import MaskedConfig, MaskedTransformer
from pixlm.models.vq import VQConfig, VQModel
from pixlm.pipeline import TextToImagePipeline
from pixlm.text.encoder import TextEncoder, TextEncoderConfig


def tiny_pipeline(seed: int = 0, conditioning: str = "cross") -> TextToImagePipeline:
    """A randomly initialised pipeline (8-channel VQ with 64 codes, 1-layer generator, tiny text encoder)."""
    torch.manual_seed(seed)
    vq = VQModel(VQConfig(levels=(4, 4, 4), channels=(8, 8, 16, 16)))
    text = TextEncoder(TextEncoderConfig(type="tiny", dim=16, vocab_size=256))
    gen = MaskedTransformer(MaskedConfig(vocab_size=vq.vocab_size, dim=32, layers=1, heads=2, text_dim=16,
                                         conditioning=conditioning))
    return TextToImagePipeline(vq, text, gen)
