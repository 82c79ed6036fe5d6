"""Speed as swaps on the same modules, chosen by what the machine supports: ``optimize(pipe, precision)``.

See :mod:`pixlm.inference.precision` for the precisions, :mod:`pixlm.inference.linear` (packed/fused linears
and convolutions) and :mod:`pixlm.inference.attention` (attention processors) for the swaps.
"""

from pixlm.inference.precision import PRECISIONS, optimize, optimize_generator, recommended_precision

__all__ = ["PRECISIONS", "optimize", "optimize_generator", "recommended_precision"]
