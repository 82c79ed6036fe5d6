"""Inference fast paths: ``optimize(pipe, ...)`` turns a loaded pipeline into a faster one, in place.

CPU path (default): inference only (no autograd state anywhere), a thread count, and optional dynamic int8
quantisation of the generator's ``nn.Linear`` layers (weights int8, activations quantised per call; uses
VNNI where the CPU has it), and ``channels_last`` convolutions in the VQ decoder (oneDNN's fast layout;
pixels may differ from the default layout by float rounding, about 1e-5). Without those flags nothing
changes: same seed, same tokens, same images.

GPU path (opt-in flags, also runnable on CPU where that makes sense):

* ``bf16``: the text encoder, the generator and the VQ decoder compute in bfloat16 (generator on CUDA:
  weights cast once; otherwise autocast; each hands float32 on). On CUDA this is also what lets PyTorch's SDPA pick the flash / memory-efficient
  attention kernels. On CPUs with AVX512-BF16 or AMX it is faster too; elsewhere it can be slower.
  With ``int8`` the generator stays int8 (its layers take fp32 activations); the rest is bf16.

With ``int8`` or ``bf16`` (paths whose numbers already differ from fp32) the generator's MLPs also switch
from the tanh-approximated GELU to the exact erf GELU (at most 5e-4 apart; the erf kernel is vectorised on
CPU and measured ~3x faster than the tanh one here), and on CPU its attention layers compute attention with
two plain matmuls instead of the fused SDPA kernels (faster at 64 tokens; equal to float rounding).
* ``fixed_loop``: the K-step MaskGIT loop as one fixed-shape, sync-free function (``fixed_maskgit_loop``):
  no ``.item()``/``bool()`` on device tensors, and all randomness drawn up front on the host from the
  pipeline's seeded generator (pinned memory, copied without blocking) and fed in as tensors. Token values
  are drawn by inverse-CDF sampling and commit order by Gumbel noise: the same distributions as
  ``MaskGITSampler`` but different random draws, so the same seed gives a different (equally likely) image
  than the reference loop. ``compile`` and ``cuda_graphs`` imply it.
* ``compile``: ``torch.compile`` over that whole K-step loop (``mode="reduce-overhead"`` on CUDA, i.e.
  CUDA graphs through Inductor; the default mode on CPU). One compilation per (batch, text length) shape.
* ``cuda_graphs``: capture the whole K-step loop once per shape with ``torch.cuda.CUDAGraph`` and replay it;
  CUDA only. Text lengths are padded up to a multiple of ``TEXT_BUCKET`` so few graphs are needed.

Calls with a preview ``callback`` or with ``init_tokens`` (editing) always take the reference sampler.
An optimised pipeline is for inference: saving its generator raises; save before optimising.
"""

from __future__ import annotations

import copy
import math
import warnings
from typing import Any, Callable

import torch
import torch.nn as nn

from pixlm.models.layers import resolve_prepared
from pixlm.sampling.cfg import PAIR_TEXT_DIMS, concat_prepared, map_tensors, pad_pairs, pad_to
from pixlm.sampling.maskgit import commit_step

TEXT_BUCKET = 16  # fixed-loop text lengths are padded up to a multiple of this (fewer graphs / compilations)


# ---------------------------------------------------------------------------------------------- the loop
def fixed_maskgit_loop(model: Callable[..., torch.Tensor], prepared: dict, tokens: torch.Tensor,
                       u_token: torch.Tensor, u_choice: torch.Tensor, *, mask_id: int, steps: int,
                       guidance_scale: float, use_cfg: bool, temperature: float,
                       choice_temperature: float, revise_margin: float | None = None,
                       first_uncond: torch.Tensor | None = None) -> torch.Tensor:
    """MaskGIT decoding with fixed shapes and no host syncs: (B, N) start tokens → (B, N) tokens.

    ``prepared`` is ``model.prepare_text`` output (conditional rows then unconditional ones when
    ``use_cfg``); ``u_token`` and ``u_choice`` are (steps, B, N) uniforms in (0, 1) that replace the
    sampler's random draws. Schedule, guidance, temperatures and the commit rule (``commit_step``) follow
    ``MaskGITSampler``. ``first_uncond``: the unconditional rows' step-0 logits, (1 or B, N, V), when the
    caller already has them (see ``FastGenerator``; (1 or B, N, C) hidden states for a model that
    ``splits_head``); step 0 then runs the conditional rows only.
    """
    # A model that splits its head off (``splits_head``: ``hidden`` then ``head_logits``) gets guidance on its
    # final hidden states and the head once on the result: exact, as the head is affine and lerp's weights sum
    # to 1, and the unconditional rows skip the vocabulary-sized output. ``first_uncond`` is then hidden states.
    split = getattr(model, "splits_head", False)
    run = model.hidden if split else model
    to_fill = (tokens == mask_id).sum(1).float()  # (B,)
    # all steps' commit noise in one op (per-step ops cost more in launches than in arithmetic at these sizes)
    gumbels = -torch.log(-torch.log(u_choice)) if choice_temperature > 0 else None  # (steps, B, N)
    inv_t = 1.0 / max(temperature, 1e-4)
    for i in range(steps):
        if use_cfg and i == 0 and first_uncond is not None:
            c = run(tokens, prepared=take_rows(prepared, 0, tokens.shape[0])).float()
            out = torch.lerp(first_uncond.expand_as(c), c, guidance_scale)
        elif use_cfg:
            c, u = run(torch.cat([tokens, tokens]), prepared=prepared).float().chunk(2)  # (B, N, ·) each
            out = torch.lerp(u, c, guidance_scale)  # u + scale · (c − u), one new tensor
        else:
            out = run(tokens, prepared=prepared).float()  # may be the model's own state: not changed in place
        if split:
            logits = model.head_logits(out).float().mul_(inv_t)  # a new tensor either way
        else:
            logits = out.mul_(inv_t) if use_cfg else out * inv_t
        probs = torch.softmax(logits, dim=-1)  # (B, N, V)
        cdf = probs.cumsum(-1)
        target = (u_token[i] * cdf[..., -1]).unsqueeze(-1)  # (B, N, 1), scaled so rounding cannot overrun
        sampled = torch.searchsorted(cdf, target).squeeze(-1).clamp_max(probs.shape[-1] - 1)  # (B, N)
        gumbel = gumbels[i] if gumbels is not None else None
        n_next = (to_fill * math.cos(math.pi / 2 * (i + 1) / steps)).floor().long()  # (B,)
        tokens = commit_step(tokens, sampled, probs, gumbel, i, steps, n_next, mask_id=mask_id,
                             choice_temperature=choice_temperature, revise_margin=revise_margin)
    return tokens


def draw_uniforms(steps: int, batch: int, n: int, generator: torch.Generator | None,
                  pin: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Two (steps, batch, n) float32 tensors of uniforms in (0, 1) from ``generator`` on the host."""
    u = torch.rand((2, steps, batch, n), generator=generator).clamp_(1e-7, 1 - 1e-7)
    if pin:
        u = u.pin_memory()
    return u[0], u[1]


def take_rows(prepared: dict, start: int, stop: int) -> dict:
    """Rows ``start:stop`` of ``prepare_text`` output (views; every tensor in it is batch-first)."""
    return map_tensors(lambda t: t[start:stop], prepared)


def pad_prepared(prepared: dict, length: int) -> dict:
    """Right-pad ``prepare_text`` output to ``length`` text positions (padding masked out)."""
    mask = prepared["mask"]
    if length < mask.shape[1]:
        raise ValueError(f"cannot pad text of length {mask.shape[1]} down to {length}")
    out = {"mask": pad_to(mask, 1, length)}
    for key, dims in PAIR_TEXT_DIMS.items():
        if key in prepared:
            out[key] = pad_pairs(prepared[key], dims, length)
    if "prefix" in prepared:
        out["prefix"] = pad_to(prepared["prefix"], 1, length)
    return out


# ---------------------------------------------------------------------------------------------- wrapper
class FastGenerator(nn.Module):
    """A masked generator behind the same interface (``config``, ``kind``, ``prepare_text``, ``forward``),
    computing in ``dtype`` and, when ``fixed_loop``, offering ``sample_fixed`` to ``MaskGITSampler``."""

    def __init__(self, model: nn.Module, *, bf16: bool = False, fixed_loop: bool = False, compile: bool = False,
                 cuda_graphs: bool = False) -> None:
        super().__init__()
        self.inner = model
        self.config = model.config
        self.kind = model.kind
        self.device_type = model.pos_emb.device.type
        self.bf16 = bf16
        self.cast_weights = bf16 and self.device_type == "cuda"  # CPU: autocast (keeps LayerNorm etc. in fp32)
        if self.cast_weights:
            model.to(torch.bfloat16)
        self.fixed_loop = fixed_loop or compile or cuda_graphs
        self.compile = compile
        self.cuda_graphs = cuda_graphs
        self._loops: dict[tuple, Any] = {}  # shape key → compiled loop or captured graph
        self._first_uncond: dict[tuple, tuple[list[torch.Tensor], torch.Tensor]] = {}  # see first_uncond_logits

    @property
    def pos_emb(self) -> torch.Tensor:  # the sampler reads the device from here
        return self.inner.pos_emb

    def _autocast(self) -> Any:
        return torch.autocast(self.device_type, dtype=torch.bfloat16, enabled=self.bf16 and not self.cast_weights)

    def prepare_text(self, text: torch.Tensor, text_mask: torch.Tensor) -> dict:
        """The wrapped model's ``prepare_text`` in the compute dtype."""
        if self.cast_weights:
            text = text.to(torch.bfloat16)
        with self._autocast():
            return self.inner.prepare_text(text, text_mask)

    def forward(self, tokens: torch.Tensor, text: torch.Tensor | None = None, text_mask: torch.Tensor | None = None,
                prepared: dict | None = None) -> torch.Tensor:
        prepared = resolve_prepared(self, text, text_mask, prepared)
        with self._autocast():
            return self.inner(tokens, prepared=prepared)

    @property
    def splits_head(self) -> bool:  # see fixed_maskgit_loop
        return getattr(self.inner, "splits_head", False)

    def hidden(self, tokens: torch.Tensor, prepared: dict) -> torch.Tensor:
        """The wrapped model's final hidden states, computed in the compute dtype."""
        with self._autocast():
            return self.inner.hidden(tokens, prepared=prepared)

    def head_logits(self, h: torch.Tensor) -> torch.Tensor:
        """The wrapped model's head on hidden states ``h`` (e.g. guided ones, in float32)."""
        if self.cast_weights:  # weights in bf16 and no autocast
            h = h.to(torch.bfloat16)
        with self._autocast():
            return self.inner.head_logits(h)

    def save_pretrained(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("this generator was optimised for inference (pixlm.fast.optimize); save the pipeline "
                           "before optimising it")

    # ------------------------------------------------------------------ fixed-shape loop
    def sample_fixed(self, sampler: Any, cond: dict, uncond: dict | None, batch: int,
                     generator: torch.Generator | None = None) -> torch.Tensor:
        """``MaskGITSampler.sample`` for a fresh, fully masked batch through ``fixed_maskgit_loop``."""
        cfg = self.config
        device = self.pos_emb.device
        use_cfg = uncond is not None and sampler.guidance_scale != 1.0
        prepared = concat_prepared(cond, uncond) if use_cfg else cond
        t = prepared["mask"].shape[1]
        prepared = pad_prepared(prepared, -(-t // TEXT_BUCKET) * TEXT_BUCKET)
        steps, n = sampler.num_inference_steps, cfg.num_tokens
        u_tok, u_choice = draw_uniforms(steps, batch, n, generator, pin=device.type == "cuda")
        tokens = torch.full((batch, n), cfg.mask_id, dtype=torch.long, device=device)
        args = (prepared, tokens, u_tok.to(device, non_blocking=True), u_choice.to(device, non_blocking=True))
        opts = dict(mask_id=cfg.mask_id, steps=steps, guidance_scale=float(sampler.guidance_scale), use_cfg=use_cfg,
                    temperature=float(sampler.temperature), choice_temperature=float(sampler.choice_temperature),
                    revise_margin=sampler.revise_margin)
        key = (batch, prepared["mask"].shape[1], tuple(sorted(opts.items())))
        if self.cuda_graphs:
            return self._graph(key, args, opts)
        if self.compile:  # (the compiled loop and the graphs keep one fixed shape per step: no step-0 shortcut)
            if key not in self._loops:
                mode = "reduce-overhead" if device.type == "cuda" else None
                self._loops[key] = torch.compile(self._run_loop, mode=mode, dynamic=False)
            return self._loops[key](*args, **opts).clone()
        first = self.first_uncond_outputs(take_rows(prepared, batch, 2 * batch), cfg.mask_id) if use_cfg else None
        return self._run_loop(*args, **opts, first_uncond=first)

    def first_uncond_outputs(self, uncond: dict, mask_id: int) -> torch.Tensor | None:
        """The unconditional rows' step-0 outputs in float32 — final hidden states (1, N, C) when the model
        ``splits_head``, else logits (1, N, V) — kept for the latest negative prompt (per text length bucket).

        At step 0 every position is masked, so those rows see the same input on every call with the same
        negative prompt (usually the empty one): half of step 0's work can be reused instead of recomputed.
        None when the rows differ from each other (a negative prompt per image). Exact: the same network on
        the same input (up to the rounding of a smaller batch).
        """
        leaves = _tensors({k: v for k, v in uncond.items() if k != "cross"})  # (cross is computed from kv)
        if any(not bool((t == t[:1]).all()) for t in leaves):
            return None
        rows = [t[:1] for t in leaves]
        key = tuple(tuple(t.shape) for t in rows)
        hit = self._first_uncond.get(key)
        if hit is not None and all(torch.equal(a, b) for a, b in zip(hit[0], rows)):
            return hit[1]
        tokens = torch.full((1, self.config.num_tokens), mask_id, dtype=torch.long, device=rows[0].device)
        run = self.hidden if self.splits_head else self
        out = run(tokens, prepared=take_rows(uncond, 0, 1)).float()
        if key not in self._first_uncond and len(self._first_uncond) >= 8:  # bounded: drop the oldest bucket
            self._first_uncond.pop(next(iter(self._first_uncond)))
        self._first_uncond[key] = ([t.clone() for t in rows], out)
        return out

    def _run_loop(self, prepared: dict, tokens: torch.Tensor, u_tok: torch.Tensor, u_choice: torch.Tensor,
                  **opts: Any) -> torch.Tensor:
        return fixed_maskgit_loop(self, prepared, tokens, u_tok, u_choice, **opts)

    def _graph(self, key: tuple, args: tuple, opts: dict) -> torch.Tensor:
        """Replay (capturing on first use) a CUDA graph of the whole loop for this shape."""
        if key not in self._loops:
            static = _clone_tree(args)
            loop = self._run_loop
            if self.compile:  # Inductor kernels inside our own graph: no nested cudagraphs
                loop = torch.compile(self._run_loop, mode="max-autotune-no-cudagraphs", dynamic=False)
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(2):  # warm-up: allocator pools, cuBLAS handles, autotuning
                    loop(*static, **opts)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                out = loop(*static, **opts)
            self._loops[key] = (graph, static, out)
        graph, static, out = self._loops[key]
        _copy_tree(static, args)
        graph.replay()
        return out.clone()


def _tensors(x: Any) -> list[torch.Tensor]:
    """Every tensor in nested dicts, lists and tuples, in order."""
    out: list[torch.Tensor] = []
    map_tensors(out.append, x)
    return out


def _clone_tree(x: Any) -> Any:
    return map_tensors(torch.Tensor.clone, x)


def _copy_tree(dst: Any, src: Any) -> None:
    if isinstance(dst, torch.Tensor):
        dst.copy_(src, non_blocking=True)
    elif isinstance(dst, dict):
        for k in dst:
            _copy_tree(dst[k], src[k])
    elif isinstance(dst, (list, tuple)):
        for d, s in zip(dst, src, strict=True):
            _copy_tree(d, s)


class Autocast(nn.Module):
    """Run ``module`` under bfloat16 autocast and hand back float32 tensors (the VQ decoder, the text encoder).

    ``cast_weights`` also keeps a bfloat16 copy of the module's weights, made once: autocast does not
    cache its casts for weights that need no gradient, so otherwise every call copies every weight (for
    MiniLM's 22M parameters that was most of the text encoder's time at batch 1). ``packed`` (CPU) runs a
    copy in ``dtype`` (bfloat16, or float32 on CPUs without bf16) made by :func:`pixlm.packed.pack_module`
    instead, without autocast (a fused :class:`~pixlm.packed.PackedBertModel` for BERT encoders, else packed
    linears in place). Other attributes read through to ``module`` (e.g. a Hugging Face model's ``config``).
    """

    def __init__(self, module: nn.Module, device_type: str, cast_weights: bool = False, packed: bool = False,
                 dtype: torch.dtype = torch.bfloat16) -> None:
        super().__init__()
        # a copy: the float32 module may be shared (another pipeline, a cache), so it is never changed
        if packed:  # a copy with oneDNN-packed linears (pixlm.packed); all in one dtype, so no autocast is needed
            from pixlm.packed import pack_module

            self.module = pack_module(module, dtype)
        else:
            self.module = copy.deepcopy(module).to(torch.bfloat16) if cast_weights else module
        self.device_type = device_type
        self.packed = packed
        self.dtype = dtype

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self.packed:  # a packed network takes inputs in its dtype (token ids pass unchanged)
            args = tuple(a.to(self.dtype) if isinstance(a, torch.Tensor) and a.is_floating_point() else a
                         for a in args)
        with torch.autocast(self.device_type, dtype=torch.bfloat16, enabled=not self.packed):
            out = self.module(*args, **kwargs)
        if isinstance(out, torch.Tensor):
            return out.float() if out.is_floating_point() else out
        if isinstance(out, dict):  # transformers' ModelOutput is a dict subclass
            for k, v in list(out.items()):
                if isinstance(v, torch.Tensor) and v.is_floating_point():
                    out[k] = v.float()
        return out

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["module"], name)


def _mlp_erf_forward(mlp: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return mlp.fc2(torch.nn.functional.gelu(mlp.fc1(x)))


def use_erf_gelu(model: nn.Module) -> int:
    """Switch every ``layers.MLP`` in ``model`` from tanh-approximated GELU to the exact (erf) GELU, in place.

    The two differ by at most 5e-4; the erf kernel is vectorised on CPU, the tanh one ran ~3x slower in our
    measurements. Returns how many MLPs were switched.
    """
    import functools

    from pixlm.models.layers import MLP

    n = 0
    for m in model.modules():
        if isinstance(m, MLP):
            m.forward = functools.partial(_mlp_erf_forward, m)
            n += 1
    return n


def use_matmul_attention(model: nn.Module) -> int:
    """Switch every ``layers.Attention`` in ``model`` to :func:`pixlm.models.layers.matmul_attention`, in place.

    For CPU: at pixlm's sizes two plain matmuls beat the fused SDPA kernels (see there); the results agree to
    float rounding. Returns how many attention layers were switched.
    """
    from pixlm.models.layers import Attention

    layers = [m for m in model.modules() if isinstance(m, Attention)]
    for m in layers:
        m.matmul = True
    return len(layers)


# ---------------------------------------------------------------------------------------------- entry point
def _refuse_save(*args: Any, **kwargs: Any) -> None:
    raise RuntimeError("this generator was quantised for inference (pixlm.fast.optimize(int8=True)); save the "
                       "pipeline before optimising it")


def quantize_int8(model: nn.Module, skip: tuple[str, ...] = ()) -> nn.Module:
    """A copy of ``model`` with every ``nn.Linear`` (except names in ``skip``) dynamically quantised to int8."""
    names = {n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n not in skip}
    if not names:
        raise ValueError(f"{type(model).__name__} has no nn.Linear layers to quantise")
    with warnings.catch_warnings():  # torch.ao.quantization's deprecation notice points at torchao
        warnings.simplefilter("ignore")
        q = torch.ao.quantization.quantize_dynamic(model, names, dtype=torch.qint8)
    q.save_pretrained = _refuse_save  # instance attribute: packed int8 weights are not a checkpoint
    return q


def optimize(pipe: Any, *, threads: int | None = None, int8: bool = False, bf16: bool = False,
             compile: bool = False, cuda_graphs: bool = False, fixed_loop: bool = False,
             channels_last: bool = False, int8_skip: tuple[str, ...] = (), packed: bool | None = None) -> Any:
    """Make ``pipe`` (a ``TextToImagePipeline``) faster for inference, in place; returns it.

    threads: ``torch.set_num_threads`` (None: leave as is). int8: dynamic int8 Linear layers in the
    generator (CPU only; ``int8_skip`` names layers to keep in fp32, e.g. ``("head",)``). channels_last:
    the VQ decoder's convolutions in NHWC layout. bf16: text encoder, generator and decoder in bfloat16.
    fixed_loop, compile, cuda_graphs: see the module docstring (masked generators only; cuda_graphs
    needs CUDA). packed (CPU): run the generator and the text encoder as fused copies (``pixlm.packed``; the
    generator only when it is a cross-conditioned masked transformer, and not with int8) — with ``bf16`` in
    bfloat16 on oneDNN-packed weights, the VQ decoder's convolutions packed too (instead of autocast), else
    in float32 (for CPUs without bf16 arithmetic: same numerics up to float rounding and the erf GELU). None (default): packed bfloat16 where oneDNN supports it when ``bf16``, otherwise off.
    """
    for name, flag in (("int8", int8), ("bf16", bf16), ("compile", compile), ("cuda_graphs", cuda_graphs),
                       ("fixed_loop", fixed_loop), ("channels_last", channels_last)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name}={flag!r} must be True or False")
    if packed is not None and not isinstance(packed, bool):
        raise TypeError(f"packed={packed!r} must be True, False or None (automatic)")
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads={threads!r} must be a positive integer (or None to leave it)")
        torch.set_num_threads(threads)
    gen = pipe.generator
    if isinstance(gen, FastGenerator) or getattr(gen, "save_pretrained", None) is _refuse_save:
        raise ValueError("this pipeline is already optimised; load a fresh one to change the settings")
    device = next(gen.parameters()).device
    if int8 and device.type != "cpu":
        raise ValueError(f"int8=True is a CPU path (dynamic quantisation); the generator is on {device}")
    if cuda_graphs and device.type != "cuda":
        raise ValueError(f"cuda_graphs=True needs the generator on a CUDA device; it is on {device}")
    if (bf16 and not int8) or compile or cuda_graphs or fixed_loop:
        if gen.kind != "masked":
            raise ValueError(f"bf16/fixed_loop/compile/cuda_graphs support masked generators; this one is {gen.kind!r}")

    for module in (gen, pipe.vq, getattr(pipe.text_encoder, "model", None)):
        if isinstance(module, nn.Module):
            module.eval().requires_grad_(False)
    from pixlm import packed as packing

    if bf16 and device.type == "cpu" and not packing.packing_supported(torch.bfloat16):
        warnings.warn("bf16=True on a CPU without bf16 arithmetic (no AVX512-BF16 or AMX): PyTorch emulates it, "
                      "measured 4-6x slower than float32 end to end; optimize_recommended() or packed=True "
                      "(float32) are faster here", RuntimeWarning, stacklevel=2)
    pack_dtype = torch.bfloat16 if bf16 else torch.float32
    can_pack = device.type == "cpu" and packing.packing_supported(pack_dtype)
    gen_packable = not int8 and gen.kind == "masked" and getattr(gen.config, "conditioning", None) == "cross"
    if packed and not can_pack:
        raise ValueError(f"packed=True is a CPU path: it needs the generator on the CPU (it is on {device}) and "
                         f"oneDNN support for {pack_dtype} (pixlm.packed.packing_supported; bf16={bf16})")
    if packed and not (int8 or gen_packable):
        raise ValueError(f"packed=True packs cross-conditioned masked generators; this one is {gen.kind!r}")
    pack_cpu = (bf16 and can_pack) if packed is None else packed
    pack_gen = pack_cpu and gen_packable  # with int8 the generator stays int8 and packing covers the rest
    wants_wrapper = (bf16 and not int8) or compile or cuda_graphs or fixed_loop or pack_gen
    if int8:
        gen = quantize_int8(gen, int8_skip)
    if pack_gen:  # a copy with fused, packed linears; erf GELU inside (see pixlm.packed)
        gen = packing.PackedMaskedTransformer(gen, pack_dtype)
    elif int8 or bf16:  # numerics already change on these paths; the erf GELU is a faster kernel (see use_erf_gelu)
        use_erf_gelu(gen)
        if device.type == "cpu":  # and so is attention by plain matmuls at these sizes (see use_matmul_attention)
            use_matmul_attention(gen)
    if wants_wrapper:
        # dynamic int8 layers take fp32 activations: with int8, bf16 applies to the other components
        gen = FastGenerator(gen, bf16=bf16 and not int8 and not pack_gen, fixed_loop=fixed_loop, compile=compile,
                            cuda_graphs=cuda_graphs)
    pipe.generator = gen
    if channels_last:
        pipe.vq.to(memory_format=torch.channels_last)
    if bf16:  # (a float32 packed decoder would keep its nn.Conv2d layers: nothing to gain, see pixlm.packed)
        pipe.vq.decoder = Autocast(pipe.vq.decoder, next(pipe.vq.parameters()).device.type, packed=pack_cpu)
    if bf16 or pack_cpu:
        text = pipe.text_encoder
        if isinstance(getattr(text, "model", None), nn.Module):
            text.model = Autocast(text.model, text.device.type, cast_weights=True, packed=pack_cpu, dtype=pack_dtype)
            text._cache.clear()  # states cached by the float32 network would mix with the new network's
    pipe.fast_settings = {"threads": torch.get_num_threads(), "int8": int8, "bf16": bf16, "compile": compile,
                          "cuda_graphs": cuda_graphs, "fixed_loop": wants_wrapper and gen.fixed_loop,
                          "channels_last": channels_last, "packed_dtype": str(pack_dtype).removeprefix("torch.")
                          if pack_cpu else None, "packed_generator": pack_gen, "packed_decoder": pack_cpu and bf16,
                          "packed_text_encoder": pack_cpu and isinstance(getattr(pipe.text_encoder, "model", None), nn.Module)}
    return pipe


def optimize_recommended(pipe: Any, threads: int | None = None) -> Any:
    """``optimize`` with the settings measured fastest for the pipeline's device (``--fast`` in the CLI).

    Masked generators: the fixed-shape loop, and bf16 on CUDA and on CPUs with bf16 arithmetic (there
    oneDNN-packed), with channels_last decoding on CPU; their accuracy cost is within noise (docs/speed.md).
    CPUs without bf16 arithmetic (AVX2 only, e.g. AMD Zen 3) emulate it, 4-6x slower than float32 end to
    end there, so they get the packed network in float32 instead. Other generator families: inference mode only.
    """
    if pipe.generator.kind != "masked":
        return optimize(pipe, threads=threads)
    if next(pipe.generator.parameters()).device.type != "cpu":
        return optimize(pipe, threads=threads, bf16=True, fixed_loop=True)
    from pixlm.packed import packing_supported

    return optimize(pipe, threads=threads, bf16=packing_supported(torch.bfloat16),
                    packed=packing_supported(torch.float32) or None, fixed_loop=True, channels_last=True)


__all__ = ["optimize", "optimize_recommended", "FastGenerator", "Autocast", "fixed_maskgit_loop", "quantize_int8", "draw_uniforms",
           "pad_prepared", "use_erf_gelu", "use_matmul_attention"]
