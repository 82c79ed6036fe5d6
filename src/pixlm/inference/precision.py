"""``optimize(pipe, precision)``: make a loaded pipeline fast for inference by swaps on its own modules, in place.

The network definitions stay the only ones (``pixlm.models``, ``pixlm.text.bert``); speed comes from what is
swapped into them at load time, chosen by what the machine supports:

=============  ==========================================================================================
precision      what runs
=============  ==========================================================================================
``reference``  plain float32 as defined: eval mode, no autograd state. For bit-exact comparisons.
``fp32``       float32 with the fused structure: the generator's self-attention q/k/v as one linear (1/√d
               folded in), its cross-attention folded per prompt into two batched matmuls, the MLP's GELU
               (exact erf form) and every residual add fused into the linear before it, the attention kernel
               chosen by batch; MiniLM's q/k/v as one linear; the VQ decoder channels-last (CPU), each nearest-2×
               upsampling + 3×3 convolution computed at the low resolution (``UpsampleConv2d``, exact).
``bf16``       the same structure in bfloat16: on a CPU with bf16 arithmetic (AVX512-BF16, AMX) on weights
               packed once for oneDNN, decoder convolutions too; on CUDA plain bf16 layers. Inputs and outputs
               of each network stay float32.
``int8``       (CPU) the generator's linears dynamically quantised to int8, exact GELU, attention by batched
               matmuls; the text encoder as ``fp32``; the decoder channels-last.
``auto``       the fastest of these whose dev-set accuracy was measured within 1 point of float32, for this
               machine: ``bf16`` on CUDA and on CPUs with bf16 arithmetic, ``fp32`` on other CPUs (bf16 is
               emulated there, measured 4–6× slower than float32); ``reference`` for generator families other
               than ``masked`` (their fast paths are unmeasured).
=============  ==========================================================================================

``compile=True`` also compiles each generator block with ``torch.compile`` (``mode="reduce-overhead"``, i.e.
CUDA graphs, on CUDA). The MaskGIT loop itself (``pixlm.sampling.maskgit``) is the same at every precision.
Numbers: ``reference`` is the network as trained; the others agree with it to float rounding (``fp32``, plus
the erf GELU: at most 5e-4 from the tanh form), bf16 rounding or int8 quantisation (``benchmarks/fast_accuracy.py``).
An optimised generator or tokenizer refuses ``save_pretrained``: save the pipeline before optimising it.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn as nn

from pixlm.inference.attention import (FoldedCrossAttnProcessor, FusedBertSelfAttention, FusedSelfAttnProcessor,
                                       MatmulAttnProcessor)
from pixlm.inference.linear import (PackedAddNorm, PackedLinear, cast_io, fuse_upsample_convs, packing_supported,
                                    swap_layers)

PRECISIONS = ("auto", "reference", "fp32", "bf16", "int8")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def recommended_precision(pipe: Any) -> str:
    """What ``precision="auto"`` picks for ``pipe`` on this machine (see the module docstring)."""
    if pipe.generator.kind != "masked":
        return "reference"
    if _device(pipe.generator).type == "cuda":
        return "bf16"
    return "bf16" if packing_supported(torch.bfloat16) else "fp32"


def optimize(pipe: Any, precision: str = "auto", *, threads: int | None = None, compile: bool = False) -> Any:
    """Make ``pipe`` (a ``TextToImagePipeline``) fast for inference at ``precision`` (one of ``PRECISIONS``),
    in place; returns it. ``threads``: ``torch.set_num_threads`` (None: leave as is). The choice is recorded in
    ``pipe.inference_settings``."""
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is not one of {PRECISIONS}")
    if not isinstance(compile, bool):
        raise TypeError(f"compile={compile!r} must be True or False")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads={threads!r} must be a positive integer (or None to leave it)")
    done = getattr(pipe, "inference_settings", None)
    if done is not None and done["precision"] != "reference":
        raise ValueError(f"this pipeline is already optimised (precision={done['precision']!r}); load a fresh one "
                         "to change the settings")
    gen = pipe.generator
    device = _device(gen)
    chosen = recommended_precision(pipe) if precision == "auto" else precision
    if chosen in DTYPES and gen.kind != "masked":
        raise ValueError(f"precision={chosen!r} swaps the masked generator's layers; this generator is {gen.kind!r} "
                         "(use 'reference' or 'int8')")
    if chosen == "int8" and device.type != "cpu":
        raise ValueError(f"precision='int8' is a CPU path (dynamic quantisation); the generator is on {device}")
    if chosen == "bf16" and device.type == "cpu" and not packing_supported(torch.bfloat16):
        warnings.warn("precision='bf16' on a CPU without bf16 arithmetic (no AVX512-BF16 or AMX): PyTorch emulates "
                      "it, measured 4-6x slower than float32 end to end; 'auto' picks 'fp32' here",
                      RuntimeWarning, stacklevel=2)
    if threads is not None:
        torch.set_num_threads(threads)
    text_model = getattr(pipe.text_encoder, "model", None)
    for module in (gen, pipe.vq, text_model):
        if isinstance(module, nn.Module):
            module.eval().requires_grad_(False)

    optimize_generator(gen, chosen, compile=compile)
    if chosen != "reference":
        text_dtype = DTYPES.get(chosen, torch.float32)
        if isinstance(text_model, nn.Module) and swap_text_encoder(text_model, text_dtype):
            pipe.text_encoder._cache.clear()  # states cached by the float32 network would mix with the new ones
        _swap_decoder(pipe.vq, chosen, device)
        for module in (gen, pipe.vq):
            module.save_pretrained = _refuse_save  # swapped layers and dtypes are not a checkpoint
    pipe.inference_settings = {"precision": chosen, "requested": precision, "threads": torch.get_num_threads(),
                               "compile": compile, "device": str(device)}
    return pipe


def optimize_generator(gen: nn.Module, precision: str, compile: bool = False) -> nn.Module:
    """The generator part of :func:`optimize`, in place, for an explicit ``precision`` (not ``"auto"``): swaps for
    ``fp32``/``bf16``, quantisation for ``int8``, nothing for ``reference``; ``compile`` compiles each block
    (``mode="reduce-overhead"``, i.e. CUDA graphs, on CUDA) and keeps the swapped weights dense (Inductor packs
    them itself; it cannot lower oneDNN's opaque packed weights). Returns ``gen``."""
    if precision not in PRECISIONS or precision == "auto":
        raise ValueError(f"precision={precision!r} is not one of {PRECISIONS[1:]}")
    gen.eval().requires_grad_(False)
    if precision in DTYPES:
        set_fused_processors(gen, DTYPES[precision], prepack=not compile)
        swap_layers(gen, DTYPES[precision], prepack=not compile)
    elif precision == "int8":
        quantize_int8(gen)
    if compile:
        mode = "reduce-overhead" if _device(gen).type == "cuda" else None
        for block in getattr(gen, "blocks", ()):
            block.compile(mode=mode)
    if precision != "reference" and getattr(gen, "kind", None) == "masked":
        from pixlm.sampling.maskgit import Step0Cache

        gen.step0_cache = Step0Cache()  # its weights no longer change: step 0's unconditional row is kept
    return gen


def set_fused_processors(model: nn.Module, dtype: torch.dtype, prepack: bool = True) -> int:
    """Give every ``layers.Attention`` in ``model`` a fused processor in ``dtype``: self-attention q/k/v as one
    linear, cross-attention folded per prompt (``prepack``: see ``PackedLinear``). Call before
    :func:`~pixlm.inference.linear.swap_layers` (the processors are built from the float weights). Returns how
    many were set."""
    from pixlm.models.layers import Block

    n = 0
    for blk in model.modules():
        if isinstance(blk, Block):
            blk.attn.set_processor(FusedSelfAttnProcessor(blk.attn, dtype, prepack))
            n += 1
            if blk.cross:
                blk.cross_attn.set_processor(FoldedCrossAttnProcessor(blk.cross_attn, dtype, prepack))
                n += 1
    return n


def quantize_int8(model: nn.Module) -> nn.Module:
    """In place: every ``nn.Linear`` in ``model`` dynamically quantised to int8 (weights int8, activations
    quantised per call; VNNI where the CPU has it), the MLPs' GELU in its exact erf form (a vectorised kernel,
    measured ~3× faster than the tanh one), attention by batched matmuls."""
    from pixlm.models.layers import MLP, Attention

    names = {n for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    if not names:
        raise ValueError(f"{type(model).__name__} has no nn.Linear layers to quantise")
    with warnings.catch_warnings():  # torch.ao.quantization's deprecation notice points at torchao
        warnings.simplefilter("ignore")
        torch.ao.quantization.quantize_dynamic(model, names, dtype=torch.qint8, inplace=True)
    for m in model.modules():
        if isinstance(m, MLP):
            m.act = nn.GELU()
        elif isinstance(m, Attention):
            m.set_processor(MatmulAttnProcessor())
    return model


def swap_text_encoder(model: nn.Module, dtype: torch.dtype) -> bool:
    """In place: pixlm's BERT (``pixlm.text.bert``) with q/k/v fused into one linear per layer, the GELU and the
    residual adds fused into their linears, every linear packed in ``dtype``, float32 in and out. Other encoders (a Hugging Face folder, the tiny test encoder) are
    left as they are. Returns whether ``model`` was swapped."""
    swaps = {"BertSelfAttention": lambda m: FusedBertSelfAttention(m, dtype),  # q, k, v as one linear
             "BertIntermediate": lambda m: PackedLinear.from_linear(m.dense, activation="gelu", dtype=dtype),
             "BertSelfOutput": lambda m: PackedAddNorm(m, dtype), "BertOutput": lambda m: PackedAddNorm(m, dtype)}
    found = [(parent, name, child) for parent in model.modules() for name, child in parent.named_children()
             if type(child).__name__ in swaps and _is_pixlm_module(child)]
    if not found:
        return False
    for parent, name, child in found:
        setattr(parent, name, swaps[type(child).__name__](child))
    swap_layers(model, dtype)
    if dtype != torch.float32:
        cast_io(model, dtype)
    return True


def _swap_decoder(vq: nn.Module, precision: str, device: torch.device) -> None:
    decoder = vq.decoder
    if isinstance(decoder, nn.Sequential):
        fuse_upsample_convs(decoder)  # each upsampling convolution at the low resolution: about half its FLOPs
    if precision == "bf16":
        native = device.type == "cpu" and packing_supported(torch.bfloat16)
        if native:  # convolutions on weights packed once for oneDNN (channels-last output)
            swap_layers(decoder, torch.bfloat16, convs=True)
        else:
            decoder.to(torch.bfloat16)
        cast_io(decoder, torch.bfloat16)
    elif device.type == "cpu":  # oneDNN's fast layout; pixels within float rounding
        decoder.to(memory_format=torch.channels_last)


def _is_pixlm_module(model: nn.Module) -> bool:
    """Whether ``model`` is one of pixlm's own networks (a Hugging Face encoder's modules differ in call shape)."""
    return type(model).__module__.startswith("pixlm.")


def _device(module: Any) -> torch.device:
    return next(module.parameters()).device


def _refuse_save(*args: Any, **kwargs: Any) -> None:
    raise RuntimeError("this network was optimised for inference (pixlm.inference.optimize); save the pipeline "
                       "before optimising it")
