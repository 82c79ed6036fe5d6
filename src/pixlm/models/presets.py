"""Size presets for the masked generator, as small functions (gpt-fast style), plus analytic size and FLOPs.

==========  ==========  =====  ======  ======  =====  ==================================================
preset      params      grid   dim     layers  heads  for
==========  ==========  =====  ======  ======  =====  ==================================================
``tiny``    ~0.05 M     8×8    32      1       2      tests (seconds on a CPU)
``small``   ~3.1 M      8×8    192     4       4      the bundled CPU model: 64×64 images, 1000 codes
``base``    ~295 M      16×16  1024    18      16     GPUs: 256×256 images at 16× downsampling, 8000 codes
==========  ==========  =====  ======  ======  =====  ==================================================

All take the MiniLM text encoder's 384-d states. ``base`` is a generator size only: pixlm's VQ tokenizer
downsamples 8×, so a 16×16 grid pairs with it at 128×128 pixels; 256×256 needs a 16× tokenizer (not
built yet). Random weights are enough to measure speed, which does not depend on weight values.
"""

from __future__ import annotations

from typing import Callable

import torch

from pixlm.models.masked import MaskedConfig, MaskedTransformer


def tiny() -> MaskedConfig:
    """Test-sized generator (about 0.05 M parameters)."""
    return MaskedConfig(vocab_size=64, grid=8, dim=32, layers=1, heads=2, text_dim=384)


def small() -> MaskedConfig:
    """The bundled CPU model's configuration (about 3.1 M parameters)."""
    return MaskedConfig(vocab_size=1000, grid=8, dim=192, layers=4, heads=4, text_dim=384)


def base() -> MaskedConfig:
    """A GPU-sized generator of about 295 M parameters over a 16×16 token grid (8000 FSQ codes)."""
    return MaskedConfig(vocab_size=8000, grid=16, dim=1024, layers=18, heads=16, text_dim=384)


PRESETS: dict[str, Callable[[], MaskedConfig]] = {"tiny": tiny, "small": small, "base": base}
# The parameter range each preset promises (checked by the tests).
PARAM_RANGES: dict[str, tuple[float, float]] = {"tiny": (0.03e6, 0.1e6), "small": (2.9e6, 3.3e6),
                                                "base": (280e6, 320e6)}


def get_preset(name: str) -> MaskedConfig:
    """The config of preset ``name`` (one of ``PRESETS``)."""
    if name not in PRESETS:
        raise ValueError(f"preset {name!r} is not one of {sorted(PRESETS)}")
    return PRESETS[name]()


def build(name_or_config: str | MaskedConfig, device: str | torch.device = "cpu", seed: int = 0) -> MaskedTransformer:
    """A randomly initialised ``MaskedTransformer`` of a preset (by name) or config, in eval mode."""
    config = get_preset(name_or_config) if isinstance(name_or_config, str) else name_or_config
    torch.manual_seed(seed)
    with torch.device(device):
        return MaskedTransformer(config).eval()


def param_count(config: MaskedConfig) -> int:
    """Exact parameter count of ``MaskedTransformer(config)``, computed without building it."""
    c = config
    d, h = c.dim, int(c.dim * c.mlp_ratio)
    ln = 2 * d
    block = ln + 4 * d * d + ln + (2 * d * h + h + d)  # norm1 + self-attn (q, kv, out), norm3 + MLP
    if c.conditioning == "cross":
        block += ln + 2 * d * d + 2 * c.text_dim * d  # norm2 + cross-attn (q, out, kv from text)
    total = (c.vocab_size + 1) * d + c.num_tokens * d + c.layers * block + ln + d * c.vocab_size + c.vocab_size
    if c.conditioning == "prefix":
        total += c.text_dim * d + d + d  # text_proj (weight, bias) + text_pos
    return total


def forward_flops(config: MaskedConfig, rows: int, text_len: int) -> dict[str, int]:
    """Analytic FLOPs (2 per multiply-add; matmuls and attention only) for ``rows`` sequences.

    ``step``: one ``forward`` with text prepared (what each sampling step costs). ``prepare``: the
    per-call ``prepare_text`` (cross-attention K/V or the prefix projection). Norms, GELU, softmax and
    embeddings are left out: they are a few percent of the total at these sizes.
    """
    c = config
    d, h, n, t, v = c.dim, int(c.dim * c.mlp_ratio), c.num_tokens, text_len, c.vocab_size
    if c.conditioning == "cross":
        per_token = c.layers * (4 * d * d + 2 * d * h + 2 * n * d  # self-attn projections, MLP, QK^T and AV
                                + 2 * d * d + 2 * t * d)  # cross-attn q and out, QK^T and AV over the text
        step = rows * n * (per_token + d * v)
        prepare = rows * t * c.layers * 2 * c.text_dim * d
    else:
        s = n + t
        step = rows * (s * c.layers * (4 * d * d + 2 * d * h + 2 * s * d) + n * d * v)
        prepare = rows * t * c.text_dim * d
    return {"step": 2 * step, "prepare": 2 * prepare}


__all__ = ["tiny", "small", "base", "PRESETS", "PARAM_RANGES", "get_preset", "build", "param_count",
           "forward_flops"]
