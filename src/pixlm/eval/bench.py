"""``pixlm bench``: speed and quality of several generators, measured side by side in one run on one machine.

For every model folder (and, for masked and diffusion generators, every requested step count) one row::

    {"model", "generator", "steps", "latency_ms_bs1", "images_per_s_bs64", "peak_mem_mb", "accuracy", "fid", ...}

* ``steps``: sequential generator forward passes per image — the masked/diffusion step count, N tokens for
  an autoregressive model, 1 for the GAN and VAE. A distilled student (``pixlm.train.distill``; its
  ``model_index.json`` defaults hold ``distilled_steps``) gets one row at that step count, whatever
  ``steps`` lists: ``pixlm bench --models bundled s1=K1/pipeline s2=K2/pipeline s4=K4/pipeline`` puts the
  teacher's rows (4, 8, 12 steps) beside the 1-, 2- and 4-step students'.
* ``latency_ms_bs1``: median wall time of ``pipeline(prompt)`` for one image (text encoding, sampling and VQ
  decoding; a prompt not seen before, so the text cache never hits) over ``repeats`` calls after warm-up.
* ``images_per_s_bs64``: 64 prompts in one call, 64 / median wall time of ``throughput_repeats`` calls.
* ``peak_mem_mb``: peak resident-set growth during one batch-64 call, in a fresh process (``/proc/self/statm``
  sampled every millisecond): activations and workspace, not weights (``weights_mb`` reports those).
  ``memory="inprocess"`` measures in the bench process instead (cheaper, less exact: freed memory the
  allocator keeps from earlier calls hides part of the growth).
* ``accuracy`` / ``fid``: ``pixlm.eval.report.run_eval`` on the prompt-spec file (judge-scored compositional
  accuracy over all images; FID-style distance on judge features, lower is better).

Outputs in ``out``: ``bench.json`` (the rows plus nothing else), ``bench.md`` (table and machine notes),
``bench.png`` (latency vs accuracy and vs FID), and ``eval/<row>/`` (each row's eval report and images).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

ROW_KEYS = ("model", "generator", "steps", "latency_ms_bs1", "images_per_s_bs64", "peak_mem_mb", "accuracy", "fid")
DEFAULT_STEPS = {"masked": (4, 8, 12), "diffusion": (10, 25, 50)}
MEMORY_MODES = ("subprocess", "inprocess", "off")


@dataclass
class BenchConfig:
    repeats: int = 20  # timed batch-1 calls (median reported)
    warmup: int = 3  # untimed batch-1 calls first
    throughput_batch: int = 64
    throughput_repeats: int = 3
    images_per_prompt: int = 1  # for accuracy/FID
    quality: bool = True  # run accuracy and FID
    memory: str = "subprocess"
    threads: int = 0  # torch.set_num_threads for the whole run; 0 = leave as is
    seed: int = 0
    steps: dict[str, tuple[int, ...]] = field(default_factory=lambda: dict(DEFAULT_STEPS))

    def __post_init__(self) -> None:
        if self.repeats < 20:
            raise ValueError(f"repeats={self.repeats}: the latency median needs at least 20 timed calls")
        for name in ("warmup", "throughput_batch", "throughput_repeats", "images_per_prompt"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if self.memory not in MEMORY_MODES:
            raise ValueError(f"memory={self.memory!r} is not one of {MEMORY_MODES}")
        if self.threads < 0:
            raise ValueError(f"threads={self.threads} must be >= 0 (0 = leave as is)")


# ---------------------------------------------------------------------------------------------- memory
def current_rss_bytes() -> int:
    """Resident set size of this process (Linux ``/proc/self/statm``; elsewhere the peak so far)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class PeakRSS:
    """Context manager sampling RSS in a thread; ``delta_mb`` = peak during the block minus RSS at entry."""

    def __init__(self, interval_s: float = 0.001) -> None:
        self.interval_s = interval_s
        self.delta_mb = 0.0

    def __enter__(self) -> "PeakRSS":
        self._base = self._peak = current_rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, current_rss_bytes())
            time.sleep(self.interval_s)

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self._peak = max(self._peak, current_rss_bytes())
        self.delta_mb = (self._peak - self._base) / 2**20


def _memory_child(path: str, prompts: list[str], steps: int | None, threads: int, queue) -> None:
    """Subprocess body: load the pipeline, warm up once at batch 1, then measure one batch call."""
    try:
        if threads:
            torch.set_num_threads(threads)
        from pixlm.pipelines.text_to_image import load_pipeline

        pipe = load_pipeline(None if path == "bundled" else path)
        pipe(prompts[0], **_steps_kw(steps), seed=0)
        with PeakRSS() as peak:
            pipe(prompts, **_steps_kw(steps), seed=1)
        queue.put(("ok", peak.delta_mb))
    except BaseException as e:  # report any failure to the parent instead of hanging it
        queue.put(("error", f"{type(e).__name__}: {e}"))


def measure_memory_subprocess(path: str, prompts: list[str], steps: int | None, threads: int,
                              timeout_s: float = 600.0) -> float:
    """Peak RSS growth (MB) of one generation call for ``prompts`` in a fresh spawned process."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_memory_child, args=(path, prompts, steps, threads, queue))
    proc.start()
    try:
        status, value = queue.get(timeout=timeout_s)
    finally:
        proc.join(timeout=30)
        if proc.is_alive():
            proc.kill()
    if status != "ok":
        raise RuntimeError(f"memory measurement of {path} failed: {value}")
    return float(value)


# ---------------------------------------------------------------------------------------------- timing
def _steps_kw(steps: int | None) -> dict:
    return {} if steps is None else {"num_inference_steps": steps}


def forward_passes(pipe: Any, steps: int | None) -> int:
    """Sequential generator forwards per image: the step count, N tokens (autoregressive) or 1 (GAN/VAE)."""
    kind = pipe.generator.kind
    if kind == "autoregressive":
        return int(pipe.generator.config.num_tokens)
    if kind in ("gan", "vae"):
        return 1
    return int(pipe.defaults["num_inference_steps"] if steps is None else steps)


def time_latency(pipe: Any, prompts: Sequence[str], steps: int | None, warmup: int, repeats: int) -> dict:
    """Median (and p10/p90) batch-1 latency over ``repeats`` distinct prompts after ``warmup`` calls."""
    if len(prompts) < warmup + repeats:
        raise ValueError(f"need {warmup + repeats} distinct prompts for latency, got {len(prompts)}")
    for p in prompts[:warmup]:
        pipe(p, **_steps_kw(steps), seed=0)
    wall, parts = [], {"text_ms": [], "sample_ms": [], "decode_ms": []}
    for i, p in enumerate(prompts[warmup:warmup + repeats]):
        t0 = time.perf_counter()
        out = pipe.generate(p, **_steps_kw(steps), seed=i)
        wall.append((time.perf_counter() - t0) * 1e3)
        for k in parts:
            parts[k].append(out.timings_ms[k])
    q = statistics.quantiles(wall, n=10)
    return {"latency_ms_bs1": statistics.median(wall), "latency_ms_bs1_p10": q[0], "latency_ms_bs1_p90": q[-1],
            **{f"{k}_bs1": statistics.median(v) for k, v in parts.items()}}


def time_throughput(pipe: Any, warm: Sequence[str], batches: Sequence[Sequence[str]], steps: int | None) -> float:
    """Images per second: one untimed call on ``warm``, then the median over ``batches`` (one call each,
    prompts not seen before, so text encoding is part of the cost as it is for new requests)."""
    pipe(list(warm), **_steps_kw(steps), seed=0)
    times = []
    for r, rows in enumerate(batches):
        t0 = time.perf_counter()
        pipe(list(rows), **_steps_kw(steps), seed=r + 1)
        times.append(time.perf_counter() - t0)
    return len(batches[0]) / statistics.median(times)


# ---------------------------------------------------------------------------------------------- bench
def parse_model_arg(arg: str) -> tuple[str, str]:
    """``LABEL=DIR`` or ``DIR`` (label: the folder name; ``pipeline`` folders take their parent's name)."""
    if "=" in arg:
        label, path = arg.split("=", 1)
        if not label or not path:
            raise ValueError(f"--models entry {arg!r}: expected LABEL=DIR or DIR")
        return label, path
    if arg == "bundled":
        return "bundled", arg
    p = Path(arg.rstrip("/"))
    return (p.parent.name if p.name == "pipeline" else p.name) or arg, arg


def _machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(), "device": "cpu",
            "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())}


def run_bench(models: Sequence[str], prompts: str | None, out: str | os.PathLike,
              config: BenchConfig | None = None) -> list[dict]:
    """Benchmark every model (``DIR`` or ``LABEL=DIR``; ``bundled`` = the shipped model) and write
    ``bench.json``, ``bench.md`` and ``bench.png`` to ``out``. Returns the rows."""
    from pixlm.eval.report import load_prompt_rows, run_eval
    from pixlm.pipelines.text_to_image import load_pipeline

    cfg = config or BenchConfig()
    if not models:
        raise ValueError("no models to benchmark: pass at least one model folder")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    spec_rows = load_prompt_rows(prompts)
    texts = list(dict.fromkeys(r["prompt"] for r in spec_rows))  # distinct prompts, file order
    n_lat, b = cfg.warmup + cfg.repeats, cfg.throughput_batch
    need = n_lat + cfg.throughput_repeats * b
    if len(texts) < need:
        raise ValueError(f"prompts file has {len(texts)} distinct prompts; with repeats={cfg.repeats}, "
                         f"warmup={cfg.warmup} and {cfg.throughput_repeats} timed batches of {b} the bench needs "
                         f"{need}")
    # latency: texts[:n_lat]; timed throughput batches: the last ones (disjoint); warm-up batch: the first b
    timed_batches = [texts[len(texts) - (k + 1) * b:len(texts) - k * b] for k in range(cfg.throughput_repeats)]
    machine = _machine()
    rows: list[dict] = []
    for arg in models:
        label, path = parse_model_arg(arg)
        probe = load_pipeline(None if path == "bundled" else path)
        kind = probe.generator.kind
        # a distilled student (pixlm.train.distill) draws only in the step count it was distilled for
        step_counts = (None,) if "distilled_steps" in probe.defaults else cfg.steps.get(kind, (None,))
        for steps in step_counts:
            pipe = load_pipeline(None if path == "bundled" else path)  # fresh: empty text cache, no state carried
            name = label if steps is None else f"{label}@{steps}"
            row: dict = {"model": label, "generator": kind, "steps": forward_passes(pipe, steps)}
            row.update(time_latency(pipe, texts, steps, cfg.warmup, cfg.repeats))
            row["images_per_s_bs64"] = time_throughput(pipe, texts[:b], timed_batches, steps)
            if cfg.memory == "subprocess":
                row["peak_mem_mb"] = measure_memory_subprocess(path, timed_batches[0], steps, torch.get_num_threads())
            elif cfg.memory == "inprocess":
                with PeakRSS() as peak:
                    pipe(list(timed_batches[0]), **_steps_kw(steps), seed=99)
                row["peak_mem_mb"] = peak.delta_mb
            else:
                row["peak_mem_mb"] = None
            row["accuracy"] = row["fid"] = None
            if cfg.quality:
                report = run_eval(None, prompts, cfg.images_per_prompt, str(out_dir / "eval" / name.replace("@", "-")),
                                  seed=cfg.seed, steps=steps, pipeline=pipe)
                row["accuracy"], row["fid"] = report["overall"], report["fid"]
                row["accuracy_ci95"] = report["overall_ci95"]
                row["eval_images"] = report["n_images"]
            params = list(pipe.generator.parameters())
            row.update({"path": str(path), "guidance_scale": pipe.defaults.get("guidance_scale"),
                        "params_m": sum(p.numel() for p in params) / 1e6,
                        "weights_mb": sum(p.numel() * p.element_size() for p in params) / 2**20,
                        "threads": torch.get_num_threads()})
            rows.append(row)
            print(f"{name}: {row['latency_ms_bs1']:.1f} ms @bs1, {row['images_per_s_bs64']:.1f} img/s @bs{b}, "
                  f"accuracy {row['accuracy']}, fid {row['fid']}", flush=True)
    (out_dir / "bench.json").write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    write_markdown(rows, machine, cfg, prompts, out_dir / "bench.md")
    plot(rows, out_dir / "bench.png")
    return rows


# ---------------------------------------------------------------------------------------------- outputs
def _fmt(v: Any, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def write_markdown(rows: Sequence[dict], machine: dict, cfg: BenchConfig, prompts: str | None, path: Path) -> Path:
    """``bench.md``: the table, the machine, and how each number was measured."""
    lines = ["# pixlm bench", "",
             f"Machine: {machine['cpu']} ({machine['logical_cpus']} logical CPUs), torch {machine['torch']} with "
             f"{machine['torch_threads']} thread(s), Python {machine['python']}, {machine['date_utc']} UTC. "
             f"Prompts: `{prompts or 'dev set'}`.", "",
             "| model | generator | steps | latency ms (bs 1) | images/s (bs 64) | peak mem MB | accuracy | FID |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        acc = _fmt(r["accuracy"], ".3f")
        if r.get("accuracy_ci95"):
            acc += f" ({r['accuracy_ci95'][0]:.3f}–{r['accuracy_ci95'][1]:.3f})"
        lines.append(f"| {r['model']} | {r['generator']} | {r['steps']} | {r['latency_ms_bs1']:.1f} | "
                     f"{r['images_per_s_bs64']:.1f} | {_fmt(r['peak_mem_mb'], '.1f')} | {acc} | "
                     f"{_fmt(r['fid'], '.2f')} |")
    lines += ["", "- **steps**: sequential generator forwards per image (masked/diffusion steps; N tokens for "
              "autoregressive; 1 for GAN/VAE).",
              f"- **latency**: median of {cfg.repeats} batch-1 calls after {cfg.warmup} warm-up calls, end to end "
              "(text encoding + sampling + VQ decoding), each with a prompt not seen before.",
              f"- **throughput**: {cfg.throughput_batch} prompts in one call; median of {cfg.throughput_repeats} "
              "calls (each with prompts not seen before) after one warm-up call.",
              f"- **peak mem**: peak RSS growth during one batch-{cfg.throughput_batch} call "
              + {"subprocess": "in a fresh process (RSS sampled every 1 ms)", "inprocess": "in the bench process "
                 "(RSS sampled every 1 ms; allocator reuse can hide growth)", "off": "(not measured)"}[cfg.memory]
              + "; excludes weights.",
              f"- **accuracy**: judge-scored compositional accuracy over {cfg.images_per_prompt} image(s) per prompt "
              "(95% Wilson CI); **FID**: Fréchet distance on the shapes judge's features (lower is better).", ""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def plot(rows: Sequence[dict], path: Path) -> Path:
    """Speed-versus-quality scatter: latency (log x) against accuracy and against FID, one colour per family."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    families = sorted({r["generator"] for r in rows})
    colors = {f: plt.cm.tab10(i) for i, f in enumerate(families)}
    for ax, key, label in ((axes[0], "accuracy", "compositional accuracy (higher is better)"),
                           (axes[1], "fid", "FID on judge features (lower is better)")):
        for fam in families:
            pts = [r for r in rows if r["generator"] == fam and r[key] is not None]
            ax.scatter([r["latency_ms_bs1"] for r in pts], [r[key] for r in pts], color=colors[fam], label=fam, s=40)
            for r in pts:
                ax.annotate(f"{r['model']}·{r['steps']}", (r["latency_ms_bs1"], r[key]), fontsize=7,
                            xytext=(3, 3), textcoords="offset points")
        if all(r[key] is None for r in rows):
            ax.text(0.5, 0.5, f"{key} not measured", transform=ax.transAxes, ha="center")
            ax.set_xlim(min(r["latency_ms_bs1"] for r in rows) / 2, max(r["latency_ms_bs1"] for r in rows) * 2)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("latency at batch 1 (ms, log scale)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    if any(r["accuracy"] is not None for r in rows):
        axes[0].legend(fontsize=8)
    fig.suptitle("pixlm: speed vs quality")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
