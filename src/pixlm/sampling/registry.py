"""Which sampler drives which generator family (``model_index.json`` names the family as ``"generator"``)."""

from __future__ import annotations

from typing import Any

SAMPLED_KINDS = ("masked", "autoregressive", "diffusion", "gan", "vae")


def make_sampler(kind: str, steps: int, guidance_scale: float, temperature: float, defaults: dict) -> Any:
    """The sampler for generator ``kind`` with the pipeline's settings.

    ``steps`` applies to masked (parallel decoding steps) and diffusion (denoising steps) generators; an
    autoregressive generator always takes one step per token and the GAN/VAE one forward, so they ignore
    it. ``guidance_scale`` applies to masked, autoregressive and diffusion generators. ``temperature`` is
    the token softmax temperature (masked, autoregressive) or the latent noise scale (GAN, VAE). Extra
    knobs come from the model's ``defaults``: ``choice_temperature`` and ``revise_margin`` (masked),
    ``top_k``/``top_p`` (autoregressive), ``scheduler`` (diffusion: "ddim" or "dpmsolver").
    """
    if kind == "masked":
        from pixlm.sampling.maskgit import MaskGITSampler

        return MaskGITSampler(steps, guidance_scale, temperature, defaults.get("choice_temperature", 4.5),
                              defaults.get("revise_margin"))
    if kind == "autoregressive":
        from pixlm.sampling.autoregressive import AutoregressiveSampler

        return AutoregressiveSampler(guidance_scale, temperature, int(defaults.get("top_k", 0)),
                                     float(defaults.get("top_p", 1.0)))
    if kind == "diffusion":
        from pixlm.sampling.diffusion import DiffusionSampler

        return DiffusionSampler(steps, guidance_scale, defaults.get("scheduler", "ddim"))
    if kind in ("gan", "vae"):
        from pixlm.sampling.oneshot import OneShotSampler

        return OneShotSampler(temperature)
    raise ValueError(f"generator kind {kind!r} has no sampler; known: {SAMPLED_KINDS}")
