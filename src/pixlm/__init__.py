"""pixlm: fast text → image, image → text and text + image → image with discrete image tokens.

    import pixlm
    pipe = pixlm.load_pipeline()                    # the bundled shapes model; "emoji" for the emoji model
    image = pipe("two red circles above a blue square", seed=0)[0]
    ref = pixlm.load_pipeline(precision="reference")  # plain float32 (the default is the fastest measured path)

Names are resolved on first use, so ``import pixlm`` stays cheap (it does not import torch).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

# public name → module that defines it
_EXPORTS = {
    "load_pipeline": "pixlm.pipelines.text_to_image",
    "TextToImagePipeline": "pixlm.pipelines.text_to_image",
    "PipelineOutput": "pixlm.pipelines.common",
    "bundled_model_path": "pixlm.pipelines.common",
    "contact_sheet": "pixlm.pipelines.common",
    "EditOutput": "pixlm.pipelines.editing",
    "RerankOutput": "pixlm.pipelines.rerank",
    "generate_reranked": "pixlm.pipelines.rerank",
    "optimize": "pixlm.inference",
    "PRECISIONS": "pixlm.inference",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            value = version("pixlm")
        except PackageNotFoundError:  # running from a source tree that was never installed
            value = "0+unknown"
    elif name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), name)
    else:
        raise AttributeError(f"module 'pixlm' has no attribute {name!r}")
    globals()[name] = value  # resolved once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
