"""The text-to-image pipeline on ONNX Runtime: ``load_onnx_pipeline(DIR)`` for a ``pixlm export onnx`` folder.

The components are ``pixlm.inference.onnx`` sessions that quack like the torch modules, composed into the same
``TextToImagePipeline``, so generation runs the same sampler loop (``pixlm.sampling.maskgit``) and the same
checks; only the networks' arithmetic moves to ONNX Runtime.
"""

from __future__ import annotations

import os

from pixlm.checkpoint import load_config
from pixlm.inference.onnx import OnnxTextModel, load_onnx_components
from pixlm.pipelines.text_to_image import TextToImagePipeline
from pixlm.text.encoder import TextEncoder, TextEncoderConfig


def load_onnx_pipeline(path: str | os.PathLike, threads: int | None = None) -> TextToImagePipeline:
    """A ``TextToImagePipeline`` whose text encoder network, generator and VQ run as ONNX Runtime sessions
    (``threads`` intra-op threads each; default: ``torch.get_num_threads()``)."""
    parts = load_onnx_components(path, threads)
    text = TextEncoder(load_config(parts.text_encoder_dir, TextEncoderConfig, "text_encoder"))
    text.model = OnnxTextModel(parts.text_model, replaces=text.model)  # tokenizer and prompt cache stay
    return TextToImagePipeline(parts.vq, text, parts.generator, parts.defaults)


__all__ = ["load_onnx_pipeline"]
