"""Speed of pixlm's masked decoding vs diffusers' AmusedPipeline vs bare transformers, in ONE run, one machine.

    python benchmarks/speed.py --threads 2                      # CPU (what docs/speed.md reports)
    python benchmarks/speed.py --device cuda --batches 1,8 --throughput-batch 64,1024   # GPU

Systems, all with the same steps (8), the same guidance scale (CFG on: conditional and unconditional rows
in one batch for every system), the same token grid (8×8) and 64×64 output images. A distilled student (the
bundled default since issue 25; ``model_index.json`` holds ``distilled_steps``) runs at its own settings (its
distilled step count, guidance built in: one row) against the others at the teacher's 8 steps and guidance;
``--model shapes-teacher`` times the teacher itself:

* ``pixlm <variant>``: ``TextToImagePipeline`` (MiniLM text encoder, masked transformer, FSQ decoder),
  passed through ``pixlm.inference.optimize`` with the variant's precision (``auto`` is what ``load_pipeline()``
  and ``pixlm generate`` run by default; ``reference`` is plain float32). Weights: the bundled model when it is
  installed (``--model bundled``), otherwise random weights of the same config (speed does not depend on
  weight values).
* ``amused``: diffusers' ``AmusedPipeline`` built from random weights: a ``UVit2DModel`` whose parameter
  count is within ±10% of pixlm's generator (same width, depth and heads; the MLP width is solved for),
  a 6-layer 384-wide ``CLIPTextModelWithProjection`` (MiniLM's shape) with a byte-level ``CLIPTokenizer``
  written locally, and a diffusers ``VQModel`` with pixlm's decoder channel widths.
* ``bare pixlm network``: ``MaskedTransformer.forward`` × K on prepared text, nothing else (the floor for
  pixlm's network), and ``bare torch transformer``: ``nn.TransformerDecoder`` of the same width/depth/heads
  + embedding + head × K steps (no sampling, no text encoder, no decoder).

Latency: median wall time of one call (prompts never seen before, so pixlm's text cache only helps with the
empty unconditional prompt, which it encodes once). Throughput: images / median wall time of a large batch.
FLOPs: pixlm's network analytically (``pixlm.models.presets.forward_flops``); every component of both pipelines
also by ``torch.utils.flop_counter`` on one batch-1 call (attention through the math kernel so it counts).
MFU = model FLOPs per second / the device's peak, an estimate stated in the output. Not a test.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn

CPU_VARIANTS = {  # name → pixlm.inference.optimize() arguments
    "reference": {"precision": "reference"},  # plain float32 (`pixlm generate --reference`)
    "auto": {"precision": "auto"},  # the default: bf16 where the CPU computes it natively, else fp32
    "fp32": {"precision": "fp32"},
    "bf16": {"precision": "bf16"},
    "int8": {"precision": "int8"},
    "fp32 compiled": {"precision": "fp32", "compile": True},
}
GPU_VARIANTS = {
    "reference": {"precision": "reference"},
    "auto": {"precision": "auto"},  # bf16
    "bf16 compiled": {"precision": "bf16", "compile": True},  # torch.compile, mode="reduce-overhead" (CUDA graphs)
}
DEFAULT_CPU_VARIANTS = "reference,auto,int8"


# ---------------------------------------------------------------------------------------------- prompts
def prompt_stream() -> Callable[[int], list[str]]:
    """A function giving ``n`` prompts never returned before (4,096 in all), so no call hits a text cache."""
    from itertools import product

    colors = ["red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink"]
    shapes = ["circle", "square", "triangle", "diamond"]
    rels = ["above", "below", "to the left of", "to the right of"]
    it = iter(f"a {c1} {s1} {r} a {c2} {s2}" for r, c1, s1, c2, s2 in product(rels, colors, shapes, colors, shapes))

    def take(n: int) -> list[str]:
        out = [next(it, None) for _ in range(n)]
        if None in out:
            raise RuntimeError("ran out of distinct prompts; lower --repeats")
        return out  # type: ignore[return-value]

    return take


# ---------------------------------------------------------------------------------------------- hardware
def cpu_peak(ghz: float | None = None) -> dict[str, Any]:
    """Estimated fp32 peak of this machine's CPUs from ``lscpu`` (FMA units × lanes × 2 × clock × cores)."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        text = ""
    info = dict(re.findall(r"^([^:\n]+):\s*(.*)$", text, flags=re.M))
    flags = set(info.get("Flags", "").split())
    vendor, family = info.get("Vendor ID", ""), int(info.get("CPU family", "0") or 0)
    cores = torch.get_num_threads()
    if vendor == "AuthenticAMD" and family == 25:  # Zen 3/4: two 256-bit FMA pipes (AVX-512 double-pumped)
        per_cycle, basis = 32, "AMD Zen 3/4: 2 x 256-bit FMA pipes = 16 fp32 FMA/cycle"
    elif vendor == "AuthenticAMD" and family >= 26:
        per_cycle, basis = 64, "AMD Zen 5: 2 x 512-bit FMA pipes"
    elif "avx512f" in flags:
        per_cycle, basis = 64, "AVX-512 with 2 FMA units assumed"
    elif "fma" in flags:
        per_cycle, basis = 32, "AVX2: 2 x 256-bit FMA units assumed"
    else:
        per_cycle, basis = 8, "SSE assumed"
    tsc = float(info["BogoMIPS"]) / 2e3 if info.get("BogoMIPS") else None
    if ghz:
        clock = "given on the command line"
    elif info.get("CPU max MHz"):
        ghz, clock = float(info["CPU max MHz"]) / 1e3, "lscpu max MHz"
    elif vendor == "AuthenticAMD" and family == 25 and "avx512f" in flags:
        ghz, clock = 3.7, (f"assumed 3.7 GHz, the max boost of most EPYC Genoa parts (lscpu gives no max clock; "
                           f"the TSC runs at {tsc} GHz)")
    elif tsc:
        ghz, clock = tsc, "BogoMIPS / 2 (the TSC/base clock; boost may be higher)"
    else:
        ghz, clock = 2.0, "unknown, 2 GHz assumed"
    return {"cpu": info.get("Model name", platform.processor()), "vendor": vendor, "family": family,
            "model": info.get("Model"), "cores_used": cores, "fp32_flops_per_cycle": per_cycle,
            "ghz": ghz, "peak_fp32_gflops": per_cycle * ghz * cores, "basis": f"{basis}; clock {clock}",
            "bf16_note": "avx512_bf16 present: bf16 dot products at up to 2x the fp32 rate" if "avx512_bf16" in flags
            else "no avx512_bf16", "int8_note": "avx512_vnni present: int8 dot products at up to 4x the fp32 rate"
            if "avx512_vnni" in flags else "no avx512_vnni", "flags_avx512": sorted(f for f in flags if "avx512" in f)}


GPU_PEAKS_TFLOPS = {"H200": {"bf16": 989.0, "fp32": 67.0}, "H100": {"bf16": 989.0, "fp32": 67.0},
                    "A100": {"bf16": 312.0, "fp32": 19.5}, "L4": {"bf16": 121.0, "fp32": 30.3}}


def gpu_peak() -> dict[str, Any]:
    """Dense peak of the CUDA device from a small table of datasheet figures (an estimate)."""
    name = torch.cuda.get_device_name()
    for key, peaks in GPU_PEAKS_TFLOPS.items():
        if key in name:
            return {"gpu": name, "peak_bf16_tflops": peaks["bf16"], "peak_fp32_tflops": peaks["fp32"],
                    "basis": "datasheet dense peak (no sparsity)"}
    return {"gpu": name, "peak_bf16_tflops": None, "peak_fp32_tflops": None, "basis": "unknown GPU: pass --peak-tflops"}


def gemm_ceiling(device: str, dtype: torch.dtype, n: int = 1024, seconds: float = 1.0) -> float:
    """Measured GFLOP/s of a large square matmul: what this machine attains in practice (a second ceiling)."""
    x = torch.randn(n, n, device=device).to(dtype)
    y = torch.randn(n, n, device=device).to(dtype)
    x @ y
    _sync(device)
    calls, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        x @ y
        calls += 1
    _sync(device)
    return round(2 * n**3 * calls / (time.perf_counter() - t0) / 1e9, 1)


# ---------------------------------------------------------------------------------------------- builders
def byte_level_clip_tokenizer(directory: str | Path, model_max_length: int = 77) -> Any:
    """A ``CLIPTokenizer`` over single bytes only (no merges), written to ``directory`` as vocab.json + merges.txt."""
    from transformers import CLIPTokenizer

    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    for b in range(256):  # GPT-2's byte → printable character map
        if b not in bs:
            bs.append(b)
            cs.append(256 + len(cs) - 188)  # 188 printable bytes map to themselves; the rest to 256, 257, ...
    chars = [chr(c) for c in cs]
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in chars + [c + "</w>" for c in chars]:
        vocab.setdefault(c, len(vocab))
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    (d / "vocab.json").write_text(json.dumps(vocab))
    (d / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer.from_pretrained(str(d), model_max_length=model_max_length)


def _uvit_kwargs(config: Any, text_dim: int, intermediate: int) -> dict[str, Any]:
    ch = max(16, (config.dim // 3) // 16 * 16)  # conv-block width (aMUSEd: 768 at hidden 1024)
    return dict(hidden_size=config.dim, use_bias=False, cond_embed_dim=text_dim, micro_cond_encode_dim=16,
                micro_cond_embed_dim=80, encoder_hidden_size=text_dim, vocab_size=config.vocab_size + 1,
                codebook_size=config.vocab_size, in_channels=ch, block_out_channels=ch, num_res_blocks=1,
                downsample=False, upsample=False, block_num_heads=config.heads, num_hidden_layers=config.layers,
                num_attention_heads=config.heads, intermediate_size=intermediate, sample_size=config.grid)


def amused_transformer_kwargs(config: Any, text_dim: int, target_params: int, tolerance: float = 0.10) -> dict:
    """``UVit2DModel`` arguments with pixlm's width/depth/heads/grid/vocab and an MLP width chosen so the
    parameter count is closest to ``target_params``; raises if nothing lands within ``tolerance``."""
    from diffusers import UVit2DModel

    best: tuple[float, dict] | None = None
    for inter in range(32, 8 * config.dim + 1, 32):
        kw = _uvit_kwargs(config, text_dim, inter)
        with torch.device("meta"):
            n = sum(p.numel() for p in UVit2DModel(**kw).parameters())
        err = abs(n - target_params) / target_params
        if best is None or err < best[0]:
            best = (err, {**kw, "_params": n})
    assert best is not None
    if best[0] > tolerance:
        raise ValueError(f"no UVit2DModel within ±{tolerance:.0%} of {target_params:,} parameters "
                         f"(closest: {best[1]['_params']:,})")
    return best[1]


def build_amused(config: Any, target_params: int, *, text_layers: int = 6, text_dim: int = 384, text_heads: int = 12,
                 vq_channels: tuple[int, ...] = (32, 64, 128, 128), device: str = "cpu", seed: int = 0,
                 tokenizer_dir: str | Path | None = None) -> tuple[Any, dict[str, Any]]:
    """A random-weight ``AmusedPipeline`` matched to pixlm's generator ``config`` (see the module docstring)."""
    import logging

    from diffusers import AmusedPipeline, AmusedScheduler, UVit2DModel, VQModel
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    logging.getLogger("diffusers").setLevel(logging.ERROR)  # the "deprecated pipeline" notice
    tok = byte_level_clip_tokenizer(tokenizer_dir or tempfile.mkdtemp(prefix="clip-bytes-"))
    torch.manual_seed(seed)
    text = CLIPTextModelWithProjection(CLIPTextConfig(
        vocab_size=len(tok), hidden_size=text_dim, intermediate_size=4 * text_dim, num_hidden_layers=text_layers,
        num_attention_heads=text_heads, max_position_embeddings=77, projection_dim=text_dim, bos_token_id=0,
        eos_token_id=1, pad_token_id=1))
    kw = amused_transformer_kwargs(config, text_dim, target_params)
    params = kw.pop("_params")
    transformer = UVit2DModel(**kw)
    blocks = len(vq_channels)
    vq = VQModel(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * blocks,
                 up_block_types=["UpDecoderBlock2D"] * blocks, block_out_channels=list(vq_channels),
                 layers_per_block=1, latent_channels=4, vq_embed_dim=4, norm_num_groups=8,
                 num_vq_embeddings=config.vocab_size, sample_size=config.grid * 2 ** (blocks - 1),
                 mid_block_add_attention=False, lookup_from_codebook=True)
    pipe = AmusedPipeline(vqvae=vq, tokenizer=tok, text_encoder=text, transformer=transformer,
                          scheduler=AmusedScheduler(mask_token_id=config.vocab_size))
    pipe.set_progress_bar_config(disable=True)
    pipe.to(device)
    for m in (text, transformer, vq):
        m.eval().requires_grad_(False)
    dec = sum(p.numel() for n, p in vq.named_parameters() if not n.startswith(("encoder", "quant_conv")))
    info = {"transformer_params": params, "transformer_config": {k: v for k, v in kw.items()},
            "text_encoder_params": sum(p.numel() for p in text.parameters()), "decoder_params": dec,
            "text_tokens": tok.model_max_length}
    return pipe, info


def build_pixlm(model: str, device: str = "cpu", seed: int = 0) -> tuple[Any, str]:
    """The bundled pipeline (``bundled``), a model folder, or random weights of the small preset (``random``)."""
    from pixlm.pipelines.text_to_image import TextToImagePipeline, load_pipeline

    if model == "bundled":
        try:
            return load_pipeline(None, device=device, precision="reference"), "bundled shapes-masked"
        except Exception as e:  # not installed yet: fall back to random weights of the same config
            print(f"bundled model not available ({e}); using random weights", file=sys.stderr)
            model = "random"
    if model != "random":
        return load_pipeline(model, device=device, precision="reference"), model
    from pixlm.models.masked import MaskedTransformer
    from pixlm.models.vq import VQConfig, VQModel
    from pixlm.models.presets import small
    from pixlm.text.encoder import TextEncoder, TextEncoderConfig

    torch.manual_seed(seed)
    pipe = TextToImagePipeline(VQModel(VQConfig()).to(device), TextEncoder(TextEncoderConfig(), device=device),
                               MaskedTransformer(small()).to(device), device=device)
    return pipe, "random weights, small preset"


def teacher_guidance(model: str) -> float:
    """The guidance scale of the 8-step model a distilled student came from (its folder's ``teacher/`` variant)."""
    from pixlm.pipelines.common import model_folder

    index = model_folder(None if model == "bundled" else model) / "teacher" / "model_index.json"
    if not index.is_file():
        raise SystemExit(f"{model} is a distilled student without a teacher/ variant; pass --guidance for Amused")
    return float(json.loads(index.read_text())["defaults"]["guidance_scale"])


def build_autoregressive(pipe: Any, device: str) -> Any:
    """A pipeline of ``pipe``'s tokenizer and text encoder with an autoregressive generator of its generator's width,
    depth and heads (random weights: speed does not depend on them), at the AR trainer's defaults (64 steps, CFG
    3), through ``load_pipeline``'s default ``optimize`` (float32 for this family)."""
    from pixlm.inference import optimize
    from pixlm.models.autoregressive import AutoregressiveConfig, AutoregressiveTransformer
    from pixlm.pipelines.text_to_image import TextToImagePipeline
    from pixlm.train.autoregressive import ARTrainConfig

    c = pipe.generator.config
    gen = AutoregressiveTransformer(AutoregressiveConfig(vocab_size=c.vocab_size, grid=c.grid, dim=c.dim,
                                                         layers=c.layers, heads=c.heads, text_dim=c.text_dim))
    train = ARTrainConfig()
    defaults = {"num_inference_steps": c.grid * c.grid, "guidance_scale": train.guidance_scale, "temperature": 1.0,
                "top_k": train.top_k, "top_p": train.top_p}
    src = clone_pipeline(pipe)
    return optimize(TextToImagePipeline(src.vq, src.text_encoder, gen.to(device).eval(), defaults, device=device))


def clone_pipeline(pipe: Any) -> Any:
    """A copy with its own generator, VQ model, text encoder network and cache (optimize() swaps layers in place)."""
    from collections import OrderedDict

    from pixlm.pipelines.text_to_image import TextToImagePipeline

    text = copy.copy(pipe.text_encoder)
    text._cache = OrderedDict()
    text.model = copy.deepcopy(pipe.text_encoder.model)
    return TextToImagePipeline(copy.deepcopy(pipe.vq), text, copy.deepcopy(pipe.generator), dict(pipe.defaults),
                               device=str(pipe.device))


class BareTransformer(nn.Module):
    """A plain ``nn.TransformerDecoder`` of pixlm's width/depth/heads with token embedding and output head."""

    def __init__(self, config: Any, text_dim: int) -> None:
        super().__init__()
        c = config
        self.emb = nn.Embedding(c.vocab_size + 1, c.dim)
        self.pos = nn.Parameter(torch.zeros(c.num_tokens, c.dim))
        self.text_proj = nn.Linear(text_dim, c.dim)
        layer = nn.TransformerDecoderLayer(c.dim, c.heads, int(c.dim * c.mlp_ratio), dropout=0.0,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.decoder = nn.TransformerDecoder(layer, c.layers)
        self.head = nn.Linear(c.dim, c.vocab_size)

    def forward(self, tokens: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        return self.head(self.decoder(self.emb(tokens) + self.pos, memory))


# ---------------------------------------------------------------------------------------------- timing
def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_ms(fn: Callable[[], Any], repeats: int, warmup: int, device: str) -> list[float]:
    """Wall times (ms) of ``repeats`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    _sync(device)
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        _sync(device)
        out.append((time.perf_counter() - t) * 1e3)
    return out


def count_flops(fn: Callable[[], Any]) -> dict[str, int]:
    """FLOPs of one call by module (``torch.utils.flop_counter``; attention via the math kernel)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fc:
        fn()
    counts = fc.get_flop_counts()
    out = {"total": int(fc.get_total_flops())}
    for name, ops in counts.items():
        if name != "Global" and "." not in name:  # top-level modules only
            out[name] = int(sum(ops.values()))
    return out


def paired_ratios(pipe: Any, amused_call: Callable[[int], Any], take: Callable[[int], list[str]],
                  batches: list[int], rounds: int, steps: int, guidance: float, device: str) -> dict[str, Any]:
    """Amused time ÷ pixlm time over ``rounds`` back-to-back pairs per batch size.

    Each system is otherwise timed in its own block, so on a shared machine a change of load between
    blocks moves the ratio; pairs measured seconds apart see the same load. Reports the median ratio and
    the range of the middle 80% of rounds.
    """
    def pixlm_call(b: int) -> None:
        pipe.generate(take(b), num_inference_steps=steps, guidance_scale=guidance, seed=0)

    out: dict[str, Any] = {"rounds": rounds}
    for b in batches:
        ratios = []
        for _ in range(2):  # warm-up
            pixlm_call(b)
            amused_call(b)
        for _ in range(rounds):
            p_ms = time_ms(lambda: pixlm_call(b), 1, 0, device)[0]
            a_ms = time_ms(lambda: amused_call(b), 1, 0, device)[0]
            ratios.append(a_ms / p_ms)
        ratios.sort()
        lo, hi = ratios[len(ratios) // 10], ratios[-1 - len(ratios) // 10]
        out[f"bs{b}"] = {"median_ratio": round(statistics.median(ratios), 2), "p10_p90": [round(lo, 2), round(hi, 2)]}
    return out


def summarize(ms: list[float], batch: int) -> dict[str, float]:
    med = statistics.median(ms)
    return {"batch": batch, "calls": len(ms), "median_ms": round(med, 2), "min_ms": round(min(ms), 2),
            "images_per_s": round(batch * 1e3 / med, 3)}


# ---------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default="bundled", help="bundled | random | a model folder")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--guidance", type=float, default=None, help="default: the pixlm model's own (a distilled "
                    "student's: its teacher's, from the model folder's teacher/ variant)")
    ap.add_argument("--pixlm-steps", type=int, default=None, help="pixlm's own steps; default: --steps, or a "
                    "distilled student's step count")
    ap.add_argument("--pixlm-guidance", type=float, default=None, help="pixlm's own guidance; default: --guidance, "
                    "or a distilled student's (1: guidance is built in)")
    ap.add_argument("--repeats", type=int, default=20, help="timed batch-1 calls per system")
    ap.add_argument("--batch-repeats", type=int, default=5, help="timed calls at the other latency batches")
    ap.add_argument("--throughput-repeats", type=int, default=2)
    ap.add_argument("--batches", default="1,8", help="latency batch sizes")
    ap.add_argument("--throughput-batch", default="64", help="comma-separated throughput batch sizes")
    ap.add_argument("--variants", default=None, help="comma-separated pixlm variants (see CPU_VARIANTS)")
    ap.add_argument("--no-amused", action="store_true")
    ap.add_argument("--no-autoregressive", action="store_true", help="skip the same-size autoregressive pipeline")
    ap.add_argument("--paired-rounds", type=int, default=10,
                    help="rounds of back-to-back pixlm / Amused calls per latency batch (0: off)")
    ap.add_argument("--paired-variant", default=None, help="pixlm variant for the paired rounds "
                    "(default: auto, the path load_pipeline() and pixlm generate run)")
    ap.add_argument("--base-batches", default="1,256", help="GPU only: base-preset loop batch sizes")
    ap.add_argument("--peak-gflops", type=float, default=None, help="override the estimated fp32 peak")
    ap.add_argument("--cpu-ghz", type=float, default=None, help="clock for the CPU peak estimate")
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--tag", default="speed", help="output file stem")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    dev = a.device
    cuda = dev.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        raise SystemExit("--device cuda but torch.cuda.is_available() is False")
    variants_all = GPU_VARIANTS if cuda else CPU_VARIANTS
    names = (a.variants or (",".join(GPU_VARIANTS) if cuda else DEFAULT_CPU_VARIANTS)).split(",")
    unknown = [n for n in names if n not in variants_all]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; choose from {list(variants_all)}")
    a.paired_variant = a.paired_variant or "auto"
    if a.paired_variant not in variants_all:
        raise SystemExit(f"unknown --paired-variant {a.paired_variant!r}; choose from {list(variants_all)}")
    lat_batches = [int(b) for b in a.batches.split(",") if b]
    tp_batches = [int(b) for b in a.throughput_batch.split(",") if b]

    def repeats(b: int) -> int:
        """Timed calls at batch ``b``: latency at batch 1, the other latency batches, or throughput."""
        return a.repeats if b == 1 else a.batch_repeats if b in lat_batches else a.throughput_repeats
    take = prompt_stream()
    t_start = time.perf_counter()

    from pixlm.inference import optimize
    from pixlm.models.presets import forward_flops

    base_pipe, model_desc = build_pixlm(a.model, dev)
    cfg = base_pipe.generator.config
    steps = a.steps
    student = "distilled_steps" in base_pipe.defaults  # draws in its own steps with guidance built in
    guidance = a.guidance if a.guidance is not None else teacher_guidance(a.model) if student else \
        base_pipe.defaults["guidance_scale"]
    p_steps = a.pixlm_steps or (base_pipe.defaults["num_inference_steps"] if student else steps)
    p_guidance = a.pixlm_guidance if a.pixlm_guidance is not None else \
        base_pipe.defaults["guidance_scale"] if student else guidance
    gen_params = sum(p.numel() for p in base_pipe.generator.parameters())
    hw = gpu_peak() if cuda else cpu_peak(a.cpu_ghz)
    if a.peak_gflops:
        hw["peak_fp32_gflops"], hw["basis"] = a.peak_gflops, "given on the command line"
    peak = (hw.get("peak_bf16_tflops") or 0) * 1e12 if cuda else hw["peak_fp32_gflops"] * 1e9
    hw["measured_gemm_gflops"] = {"fp32": gemm_ceiling(dev, torch.float32), "bf16": gemm_ceiling(dev, torch.bfloat16)}
    result: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": dev, "hardware": hw, "torch": torch.__version__, "threads": torch.get_num_threads(),
        "python": platform.python_version(), "model": model_desc, "steps": steps, "guidance_scale": guidance,
        "pixlm_steps": p_steps, "pixlm_guidance_scale": p_guidance,
        "grid": cfg.grid, "generator_params": gen_params, "systems": {}, "notes": [
            "Every timed call uses prompts never seen before. pixlm caches text states per prompt, so its empty "
            "unconditional prompt is encoded once per pipeline; AmusedPipeline encodes the prompt and the empty "
            "negative prompt on every call, padded to 77 tokens (CLIPTokenizer.model_max_length) as it always does.",
            "AmusedPipeline's UVit2DModel has pixlm's width, depth, heads, grid and codebook; its MLP width is solved "
            "so the parameter count is within 10% of pixlm's generator.",
            "Every variant runs the same MaskGIT loop (pixlm.sampling.maskgit); fp32/bf16/int8 swap layers and "
            "attention processors into the same network, which changes numerics by float/bf16 rounding or int8 "
            "quantisation (see benchmarks/fast_accuracy.py for their accuracy cost)."]}
    import diffusers

    result["diffusers"] = diffusers.__version__

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)

    def record(name: str, row: dict[str, Any]) -> None:  # written as we go, so a cut-short run keeps its rows
        result["systems"][name] = row
        print(json.dumps({name: row}), flush=True)
        (out / f"{a.tag}.partial.json").write_text(json.dumps(result, indent=2) + "\n")

    # --- FLOPs of pixlm's pipeline at batch 1 (fp32 reference, counted once)
    probe = clone_pipeline(base_pipe)
    pixlm_flops = count_flops(lambda: probe.generate(take(1)[0], num_inference_steps=p_steps,
                                                     guidance_scale=p_guidance, seed=0))
    text_len = probe.text_encoder.encode([take(1)[0]])[1].shape[1]
    ff = forward_flops(cfg, 2 if p_guidance != 1.0 else 1, text_len)
    analytic_gen = p_steps * ff["step"] + ff["prepare"]

    def mfu(flops_per_image: float, images_per_s: float) -> float:
        return round(flops_per_image * images_per_s / peak, 4) if peak else float("nan")

    # --- pixlm variants
    for name in names:
        flags = variants_all[name]
        pipe = optimize(clone_pipeline(base_pipe), **flags)
        row: dict[str, Any] = {"flags": flags}
        t0 = time.perf_counter()
        pipe.generate(take(1)[0], num_inference_steps=p_steps, guidance_scale=p_guidance, seed=0)  # compile/capture
        row["first_call_s"] = round(time.perf_counter() - t0, 2)
        for b in lat_batches + tp_batches:
            reps = repeats(b)
            parts: list[dict[str, float]] = []

            def call(b: int = b, parts: list = parts, pipe: Any = pipe) -> None:
                parts.append(pipe.generate(take(b), num_inference_steps=p_steps, guidance_scale=p_guidance,
                                           seed=len(parts)).timings_ms)

            ms = time_ms(call, reps, 1 if b > 1 else 3, dev)
            s = summarize(ms, b)
            s["mfu_generator"] = mfu(analytic_gen, s["images_per_s"])
            s["mfu_pipeline"] = mfu(pixlm_flops["total"], s["images_per_s"])
            timed = parts[-reps:]
            s["median_parts_ms"] = {k: round(statistics.median(p.get(k, 0.0) for p in timed), 2)
                                    for k in dict.fromkeys(k for p in timed for k in p)}  # expand_ms: rewrites only
            row[f"bs{b}"] = s
        record(f"pixlm {name}", row)

    # --- AmusedPipeline of the same size
    amused_flops: dict[str, int] = {}
    if not a.no_amused:
        amused, info = build_amused(cfg, gen_params, text_dim=base_pipe.text_encoder.dim, device=dev)
        gen_cpu = torch.Generator().manual_seed(0)

        def amused_call(b: int) -> Any:
            return amused(take(b), num_inference_steps=steps, guidance_scale=guidance, generator=gen_cpu).images

        with torch.inference_mode():
            amused_flops = count_flops(lambda: amused_call(1))
            row = {"build": info, "flops_per_image": amused_flops}
            for b in lat_batches + tp_batches:
                reps = repeats(b)
                s = summarize(time_ms(lambda b=b: amused_call(b), reps, 1 if b > 1 else 3, dev), b)
                s["mfu_generator"] = mfu(amused_flops.get("UVit2DModel", 0), s["images_per_s"])
                s["mfu_pipeline"] = mfu(amused_flops["total"], s["images_per_s"])
                row[f"bs{b}"] = s
            if a.paired_rounds and a.paired_variant:
                row["paired"] = paired_ratios(optimize(clone_pipeline(base_pipe), **variants_all[a.paired_variant]),
                                              amused_call, take, lat_batches, a.paired_rounds, p_steps, p_guidance,
                                              dev)
                row["paired"]["variant"] = f"pixlm {a.paired_variant}"
        record("amused", row)

    # --- pixlm's own autoregressive generator of the same width and depth (random weights; 64 KV-cached steps)
    if not a.no_autoregressive:
        ar = build_autoregressive(base_pipe, dev)
        row = {"params": sum(p.numel() for p in ar.generator.parameters()), "defaults": ar.defaults}
        ar.generate(take(1)[0], seed=0)
        for b in lat_batches + tp_batches:
            reps = repeats(b)
            row[f"bs{b}"] = summarize(time_ms(lambda b=b: ar.generate(take(b), seed=0), reps, 1 if b > 1 else 3,
                                              dev), b)
        record("pixlm autoregressive", row)

    # --- bare references (network only, pixlm's K steps and rows per image)
    gen = copy.deepcopy(base_pipe.generator).eval().requires_grad_(False)
    bare = BareTransformer(cfg, base_pipe.text_encoder.dim).to(dev).eval().requires_grad_(False)
    bare_flops = {}
    rows_per_image = 2 if p_guidance != 1.0 else 1
    with torch.inference_mode():
        for label, net in (("bare pixlm network", gen), ("bare torch transformer", bare)):
            row = {}
            for b in lat_batches + tp_batches:
                r = rows_per_image * b
                text = torch.randn(r, text_len, base_pipe.text_encoder.dim, device=dev)
                mask = torch.ones(r, text_len, dtype=torch.bool, device=dev)
                tokens = torch.full((r, cfg.num_tokens), cfg.mask_id, device=dev)
                if net is gen:
                    def fn(tokens: torch.Tensor = tokens, text: torch.Tensor = text, mask: torch.Tensor = mask) -> None:
                        prepared = gen.prepare_text(text, mask)
                        for _ in range(p_steps):
                            gen(tokens, prepared=prepared)
                else:
                    def fn(tokens: torch.Tensor = tokens, text: torch.Tensor = text, mask: torch.Tensor = mask) -> None:
                        memory = bare.text_proj(text)
                        for _ in range(p_steps):
                            bare(tokens, memory)
                if b == 1:
                    bare_flops[label] = count_flops(fn)["total"]
                reps = repeats(b)
                s = summarize(time_ms(fn, reps, 2, dev), b)
                s["mfu_generator"] = mfu(bare_flops[label], s["images_per_s"])
                row[f"bs{b}"] = s
            row["flops_per_image"] = bare_flops[label]
            record(label, row)

    # --- base preset (GPU only): the MaskGIT loop with random text states, no decoder
    if cuda:
        from pixlm.inference import optimize_generator
        from pixlm.models.presets import base, build
        from pixlm.sampling.maskgit import MaskGITSampler

        bcfg = base()
        big = optimize_generator(build(bcfg, dev).eval(), "bf16", compile=True)
        sampler = MaskGITSampler(steps, guidance)
        bff = forward_flops(bcfg, 2, text_len)
        row = {"params": sum(p.numel() for p in big.parameters()),
               "flops_per_image": steps * bff["step"] + bff["prepare"]}
        with torch.inference_mode():
            for b in [int(x) for x in a.base_batches.split(",") if x]:
                text = torch.randn(b, text_len, 384, device=dev)
                mask = torch.ones(b, text_len, dtype=torch.bool, device=dev)
                cond, unc = big.prepare_text(text, mask), big.prepare_text(text, mask)
                g = torch.Generator().manual_seed(0)
                def loop(cond: dict = cond, unc: dict = unc, b: int = b, g: torch.Generator = g) -> Any:
                    return sampler.sample(big, cond, unc, b, generator=g)

                s = summarize(time_ms(loop, 10, 3, dev), b)
                s["mfu_generator"] = mfu(row["flops_per_image"], s["images_per_s"])
                row[f"bs{b}"] = s
        record("pixlm base preset loop (bf16, compiled with CUDA graphs)", row)

    # --- summary
    result["flops_per_image"] = {"pixlm_pipeline_counted": pixlm_flops, "pixlm_generator_analytic": analytic_gen,
                                 "amused_pipeline_counted": amused_flops, "text_len_pixlm": text_len}
    if "amused" in result["systems"]:
        am = result["systems"]["amused"]
        speedups = {}
        for name, row in result["systems"].items():
            if name.startswith("pixlm") and "flags" in row:
                speedups[name] = {f"bs{b}": round(row[f"bs{b}"]["images_per_s"] / am[f"bs{b}"]["images_per_s"], 2)
                                  for b in lat_batches + tp_batches}
        result["speedup_vs_amused"] = speedups
        best = {f"bs{b}": max(v[f"bs{b}"] for v in speedups.values()) for b in lat_batches + tp_batches}
        result["best_speedup_vs_amused"] = best
        result["target_5x_met"] = {k: v >= 5.0 for k, v in best.items() if k in ("bs1", "bs8")}  # issue 21's
        result["target_10x_met"] = {k: v >= 10.0 for k, v in best.items() if k in ("bs1", "bs8")}  # issue 25's
    if "pixlm autoregressive" in result["systems"]:
        ar = result["systems"]["pixlm autoregressive"]
        result["speedup_vs_autoregressive"] = {
            name: {f"bs{b}": round(row[f"bs{b}"]["images_per_s"] / ar[f"bs{b}"]["images_per_s"], 2)
                   for b in lat_batches + tp_batches}
            for name, row in result["systems"].items() if name.startswith("pixlm") and "flags" in row}
    result["wall_s"] = round(time.perf_counter() - t_start, 1)
    (out / f"{a.tag}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / f"{a.tag}.partial.json").unlink(missing_ok=True)
    (out / f"{a.tag}.md").write_text(to_markdown(result, lat_batches + tp_batches))
    print(f"wrote {out / (a.tag + '.json')} and .md in {result['wall_s']} s", file=sys.stderr)
    return result


def to_markdown(r: dict[str, Any], batches: list[int]) -> str:
    """The results as a markdown page: machine, table, FLOPs and speed-ups."""
    hw = r["hardware"]
    lines = [f"# Speed: pixlm vs AmusedPipeline vs bare transformers ({r['device']})", "",
             f"- date: {r['date']}; torch {r['torch']}, diffusers {r.get('diffusers', '?')}, threads {r['threads']}",
             f"- hardware: {json.dumps({k: v for k, v in hw.items() if k != 'flags_avx512'})}",
             f"- model: {r['model']}; generator {r['generator_params']:,} params; {r['grid']}×{r['grid']} tokens; "
             f"{r['steps']} steps; guidance {r['guidance_scale']} (CFG on for every system)"
             + (f"; pixlm at its own {r['pixlm_steps']} steps, guidance {r['pixlm_guidance_scale']}"
                if (r.get("pixlm_steps", r["steps"]), r.get("pixlm_guidance_scale", r["guidance_scale"]))
                != (r["steps"], r["guidance_scale"]) else ""), ""]
    head = "| system | " + " | ".join(f"bs{b} ms | bs{b} img/s | bs{b} MFU gen/pipe" for b in batches) + " |"
    lines += [head, "|" + "---|" * (1 + 3 * len(batches))]
    for name, row in r["systems"].items():
        cells = []
        for b in batches:
            s = row.get(f"bs{b}")
            if s is None:
                cells += ["–", "–", "–"]
                continue
            mf = f"{s.get('mfu_generator', float('nan')):.1%}"
            if "mfu_pipeline" in s:
                mf += f" / {s['mfu_pipeline']:.1%}"
            cells += [f"{s['median_ms']:.1f}", f"{s['images_per_s']:.2f}", mf]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
    for name, row in r["systems"].items():
        parts = row.get("bs1", {}).get("median_parts_ms")
        if parts:
            lines.append(f"- {name}, batch 1 parts (median ms): {parts}")
    f = r["flops_per_image"]
    lines += ["", "FLOPs per image at batch 1 (counted by torch.utils.flop_counter unless noted):",
              f"- pixlm: {json.dumps(f['pixlm_pipeline_counted'])}; "
              f"generator analytic {f['pixlm_generator_analytic']:,}",
              f"- amused: {json.dumps(f['amused_pipeline_counted'])}", ""]
    if "speedup_vs_amused" in r:
        lines.append("Speed-up in images/s over AmusedPipeline (same size and grid; steps and guidance above):")
        for name, s in r["speedup_vs_amused"].items():
            lines.append(f"- {name}: {s}")
        lines.append(f"- best: {r['best_speedup_vs_amused']}; 5× target met: {r['target_5x_met']}; 10× target met: "
                     f"{r.get('target_10x_met')}")
        paired = r["systems"].get("amused", {}).get("paired")
        if paired:
            lines.append(f"- paired rounds ({paired['rounds']} back-to-back pixlm / Amused calls per batch, "
                         f"{paired['variant']}): Amused time ÷ pixlm time, median (p10–p90): " + ", ".join(
                             f"{k} {v['median_ratio']}× ({v['p10_p90'][0]}–{v['p10_p90'][1]})"
                             for k, v in paired.items() if k.startswith("bs")))
    if "speedup_vs_autoregressive" in r:
        lines.append("Speed-up in images/s over pixlm's autoregressive generator of the same size (64 steps):")
        lines += [f"- {name}: {s}" for name, s in r["speedup_vs_autoregressive"].items()]
    lines += [""] + [f"- {n}" for n in r.get("notes", [])]
    lines += ["", "MFU = model FLOPs/s ÷ estimated fp32 peak (" + hw.get("basis", "") + "); gen = generator "
              "network FLOPs, pipe = whole pipeline (text encoder + generator + decoder). The peak is an estimate, "
              "not a vendor figure; int8 and bf16 rows do the same model FLOPs on units with 4× / 2× the fp32 "
              "rate, so their fp32-relative MFU can pass 100%. Measured large-matmul rates (1024², same run): "
              f"{hw.get('measured_gemm_gflops')} GFLOP/s.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
