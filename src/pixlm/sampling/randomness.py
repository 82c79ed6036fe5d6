"""Per-row randomness for the samplers: row i of a batch draws only from generator i.

Every sampler takes ``generator`` as one ``torch.Generator``, a list of them (one per output row), or None
(PyTorch's global generator). With a list, row i's numbers come from generator i alone, so a row's picture
does not depend on the other rows of the batch (how many there are, which prompts they hold): the pipelines
give image i of a call with seed s the generator seeded s + i, the picture of a one-image call with seed s + i.
One generator fills the rows one after the other, so a one-row batch draws the same numbers either way.
"""

from __future__ import annotations

from typing import Callable, Sequence, Union

import torch

Generators = Union[torch.Generator, Sequence[torch.Generator], None]


def check_generators(generator: Generators, batch: int) -> None:
    """Refuse a list of generators whose length is not the batch size, or entries that are not generators."""
    if generator is None or isinstance(generator, torch.Generator):
        return
    if not isinstance(generator, (list, tuple)):
        raise TypeError(f"generator must be a torch.Generator, a list of them (one per row) or None; "
                        f"got {type(generator).__name__}")
    if len(generator) != batch:
        raise ValueError(f"got {len(generator)} generators for {batch} rows; pass one per row (or one generator)")
    if not all(isinstance(g, torch.Generator) for g in generator):
        raise TypeError("every entry of the generator list must be a torch.Generator")


def _draw(fn: Callable[..., torch.Tensor], generator: Generators, batch: int, shape: tuple[int, ...],
          device: torch.device | str) -> torch.Tensor:
    check_generators(generator, batch)
    if isinstance(generator, (list, tuple)):
        out = torch.stack([fn(shape, generator=g, device=g.device) for g in generator])
    else:
        # draw where the generator lives (a CPU generator cannot drive CUDA kernels), then move the result
        out = fn((batch, *shape), generator=generator, device=generator.device if generator is not None else device)
    return out.to(device, non_blocking=True)


def rand_rows(generator: Generators, batch: int, shape: tuple[int, ...],
              device: torch.device | str = "cpu") -> torch.Tensor:
    """(batch, *shape) float32 uniforms in [0, 1); row i from ``generator[i]`` when a list is given."""
    return _draw(torch.rand, generator, batch, tuple(shape), device)


def randn_rows(generator: Generators, batch: int, shape: tuple[int, ...],
               device: torch.device | str = "cpu") -> torch.Tensor:
    """(batch, *shape) float32 standard normals; row i from ``generator[i]`` when a list is given."""
    return _draw(torch.randn, generator, batch, tuple(shape), device)


def inverse_cdf_sample(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Indices drawn from ``probs`` (..., V) with uniforms ``u`` (...) in [0, 1): the first index whose
    cumulative probability exceeds ``u`` — exactly the categorical distribution, with no host sync and the
    randomness supplied by the caller (so each row can use its own generator)."""
    cdf = probs.cumsum(-1)
    target = (u * cdf[..., -1]).unsqueeze(-1)  # scaled by the total, so rounding in the sum cannot overrun
    return torch.searchsorted(cdf, target, right=True).squeeze(-1).clamp_max(probs.shape[-1] - 1)
