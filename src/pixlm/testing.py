"""Tiny random-weight components for tests and examples (diffusers-style): seconds on a CPU, no downloads."""

from __future__ import annotations

import torch

from pixlm.models.masked import MaskedConfig, MaskedTransformer
from pixlm.models.vq import VQConfig, VQModel
from pixlm.pipelines.text_to_image import TextToImagePipeline
from pixlm.text.encoder import TextEncoder, TextEncoderConfig


def tiny_pipeline(seed: int = 0, conditioning: str = "cross") -> TextToImagePipeline:
    """A randomly initialised pipeline (8-channel VQ with 64 codes, 1-layer generator, tiny text encoder)."""
    torch.manual_seed(seed)
    vq = VQModel(VQConfig(levels=(4, 4, 4), channels=(8, 8, 16, 16)))
    text = TextEncoder(TextEncoderConfig(type="tiny", dim=16, vocab_size=256))
    gen = MaskedTransformer(MaskedConfig(vocab_size=vq.vocab_size, dim=32, layers=1, heads=2, text_dim=16,
                                         conditioning=conditioning))
    return TextToImagePipeline(vq, text, gen)


TINY_GENERATOR_KINDS = ("masked", "autoregressive", "gan", "vae", "diffusion")


def tiny_generator(kind: str, vocab_levels: tuple[int, ...] = (4, 4, 4), text_dim: int = 16) -> torch.nn.Module:
    """A randomly initialised generator of family ``kind`` sized for tests (a second or less per call)."""
    import math

    vocab = math.prod(vocab_levels)
    if kind == "masked":
        return MaskedTransformer(MaskedConfig(vocab_size=vocab, dim=32, layers=1, heads=2, text_dim=text_dim))
    if kind == "autoregressive":
        from pixlm.models.autoregressive import AutoregressiveConfig, AutoregressiveTransformer

        return AutoregressiveTransformer(AutoregressiveConfig(vocab_size=vocab, dim=32, layers=2, heads=2,
                                                              text_dim=text_dim))
    if kind == "gan":
        from pixlm.models.gan import GANConfig, GANGenerator

        return GANGenerator(GANConfig(levels=vocab_levels, text_dim=text_dim, z_dim=8, dim=16, cond_dim=16))
    if kind == "vae":
        from pixlm.models.vae import ConditionalVAE, VAEConfig

        return ConditionalVAE(VAEConfig(levels=vocab_levels, text_dim=text_dim, z_dim=8, dim=16, cond_dim=16))
    if kind == "diffusion":
        from pixlm.models.diffusion import DiffusionConfig, LatentDiffusion

        return LatentDiffusion(DiffusionConfig(levels=vocab_levels, text_dim=text_dim, channels=(16, 32), heads=2,
                                               num_train_timesteps=100))
    raise ValueError(f"kind={kind!r} is not one of {TINY_GENERATOR_KINDS}")


def tiny_pipeline_for(kind: str, seed: int = 0) -> TextToImagePipeline:
    """Like :func:`tiny_pipeline` with a generator of any family (``masked``, ``autoregressive``, ``gan``...).

    Defaults follow the family: one forward and no guidance for the GAN/VAE, N steps for autoregressive.
    """
    torch.manual_seed(seed)
    vq = VQModel(VQConfig(levels=(4, 4, 4), channels=(8, 8, 16, 16)))
    text = TextEncoder(TextEncoderConfig(type="tiny", dim=16, vocab_size=256))
    gen = tiny_generator(kind, (4, 4, 4), 16)
    defaults = {"masked": {}, "autoregressive": {"num_inference_steps": gen.config.num_tokens},
                "gan": {"num_inference_steps": 1, "guidance_scale": 1.0},
                "vae": {"num_inference_steps": 1, "guidance_scale": 1.0},
                "diffusion": {"num_inference_steps": 4}}[kind]
    return TextToImagePipeline(vq, text, gen, defaults)
