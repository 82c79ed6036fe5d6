"""Size presets: exact parameter counts and FLOPs (against PyTorch's counters), a buildable small preset."""

from __future__ import annotations

import pytest
import torch

from pixlm.models.masked import MaskedConfig, MaskedTransformer
from pixlm.models.presets import PARAM_RANGES, PRESETS, build, forward_flops, get_preset, param_count


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_param_counts(name):
    cfg = get_preset(name)
    with torch.device("meta"):
        model = MaskedTransformer(cfg)
    n = sum(p.numel() for p in model.parameters())
    assert n == param_count(cfg)
    lo, hi = PARAM_RANGES[name]
    assert lo <= n <= hi
    if name == "base":
        assert cfg.grid == 16 and cfg.dim % cfg.heads == 0
    with pytest.raises(ValueError, match="not one of"):
        get_preset("huge")


def test_build_small_preset_runs():
    model = build("small")
    assert sum(p.numel() for p in model.parameters()) == param_count(get_preset("small"))
    assert model.config.grid == 8 and model.config.vocab_size == 1000 and model.config.text_dim == 384


@pytest.mark.parametrize("conditioning", ["cross", "prefix"])
def test_forward_flops_match_the_flop_counter(conditioning):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    cfg = MaskedConfig(vocab_size=64, dim=32, layers=2, heads=2, text_dim=16, conditioning=conditioning)
    model = build(cfg)
    text, mask = torch.randn(3, 5, 16), torch.ones(3, 5, dtype=torch.bool)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        with FlopCounterMode(display=False) as fc:
            prep = model.prepare_text(text, mask)
        prepare = fc.get_total_flops()
        with FlopCounterMode(display=False) as fc:
            model(torch.randint(0, 64, (3, 64)), prepared=prep)
    assert forward_flops(cfg, 3, 5) == {"step": fc.get_total_flops(), "prepare": prepare}
