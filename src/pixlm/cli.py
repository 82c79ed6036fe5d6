"""The ``pixlm`` command line.

One small function per command; each imports what it needs inside the function, so ``pixlm --help`` stays
fast. To add a command, write a function under the right Typer app (``app`` for top-level commands such as
``generate``; a sub-app such as ``data_app`` for a family) and keep the work itself in the library.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(name="pixlm", help="Text → image with discrete image tokens: data, training, generation, "
                  "evaluation.", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
data_app = typer.Typer(help="Make and check datasets and prompt sets.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Report a ValueError (bad input: a malformed file, an out-of-range option) as one line and exit 1."""
    try:
        yield
    except ValueError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from None


# ---------------------------------------------------------------------------------------------- data
@data_app.command("shapes")
def data_shapes(
    n: Annotated[int, typer.Option("--n", min=1, help="Number of scenes to write.")],
    out: Annotated[Path, typer.Option(help="Output folder (created if missing).")],
    seed: Annotated[int, typer.Option(help="Random seed; same seed, same files.")] = 0,
    size: Annotated[int, typer.Option(min=3, help="Canvas side in pixels.")] = 64,
    overwrite: Annotated[bool, typer.Option(help="Write into a folder that already has metadata.jsonl.")] = False,
) -> None:
    """Write N captioned shapes scenes as an imagefolder: 00000.png… plus metadata.jsonl."""
    from pixlm.data.folder import write_imagefolder
    from pixlm.data.shapes import iter_scenes

    items = ((img, text, scene.to_dicts()) for img, text, scene in iter_scenes(seed, n, size))
    start = time.perf_counter()
    with user_errors():
        count = write_imagefolder(out, items, overwrite=overwrite, digits=max(5, len(str(n - 1))))
    secs = time.perf_counter() - start
    typer.echo(f"wrote {count} images ({size}×{size}) and metadata.jsonl to {out} "
               f"in {secs:.1f} s ({count / max(secs, 1e-9):.0f} scenes/s)")


@data_app.command("specs")
def data_specs(
    out: Annotated[Path, typer.Option(help="Output JSONL file.")],
    n_per_category: Annotated[int, typer.Option(min=1, help="Prompts per category.")] = 50,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Write a GenEval-like prompt-spec set (the shipped dev set is --n-per-category 50 --seed 0)."""
    from pixlm.data.specs import CATEGORIES, make_dev_set, write_specs

    rows = make_dev_set(seed, n_per_category)
    write_specs(rows, out)
    typer.echo(f"wrote {len(rows)} prompt specs ({n_per_category} × {len(CATEGORIES)} categories) to {out}")


@data_app.command("check")
def data_check(
    folder: Annotated[Path, typer.Argument(help="Folder holding metadata.jsonl and the images.")],
) -> None:
    """Validate an imagefolder: every metadata row and every image; exit 1 naming the first bad row."""
    from collections import Counter

    from pixlm.data.folder import ImageFolder

    with user_errors():
        ds = ImageFolder(folder)
        sizes: Counter[tuple[int, int]] = Counter(ds.load_image(i).size for i in range(len(ds)))
    with_objects = sum(r.objects is not None for r in ds.rows)
    summary = ", ".join(f"{n} at {w}×{h}" for (w, h), n in sizes.most_common(5))
    typer.echo(f"{folder}: {len(ds)} images OK ({summary}); {with_objects} with scene objects")


@data_app.command("emoji")
def data_emoji(
    out: Annotated[Path, typer.Option(help="Output folder: train/, test_emoji/, test_variant/ (STYLE/HEXCODE.png), "
                                      "splits.json, catalog.jsonl, LICENSE-*.txt, ATTRIBUTION.md.")],
    node_modules: Annotated[Path, typer.Option(help="node_modules folder of `npm install --prefix DIR "
                                               "@iconify-json/noto @iconify-json/twemoji @iconify-json/openmoji "
                                               "@iconify-json/fluent-emoji-flat openmoji emoji-datasource-google`.")]
    = Path("node_modules"),
    styles: Annotated[str, typer.Option(help="Comma-separated emoji styles: noto, twemoji, openmoji, fluent.")]
    = "noto,twemoji,openmoji,fluent",
    names: Annotated[str, typer.Option(help="Comma-separated npm name data: openmoji, emoji-datasource; auto = "
                                       "those installed; none = the icon sets' own names.")] = "auto",
    size: Annotated[int, typer.Option(min=8, help="Picture side in pixels.")] = 64,
    seed: Annotated[int, typer.Option(help="Split seed; same packages and seed, same files.")] = 0,
    max_bases: Annotated[int, typer.Option(min=0, help="Keep N base emoji drawn by the seed (0 = all).")] = 0,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing dataset in OUT.")] = False,
) -> None:
    """Build the emoji image+caption dataset: four art styles rendered from npm's emoji SVG sets, CLDR names."""
    from pixlm.data.emoji import NPM_INSTALL, EmojiDataConfig, build_emoji_dataset, npm_sources

    with user_errors():
        if names == "auto":
            chosen = npm_sources(node_modules)
            if len(chosen) < 2:
                typer.echo(f"note: without OpenMoji / emoji-datasource data the names and keywords come from the "
                           f"icon sets only; `{NPM_INSTALL}` adds CLDR tags and categories", err=True)
        else:
            chosen = tuple(s.strip() for s in names.split(",") if s.strip() and s.strip() != "none")
        summary = build_emoji_dataset(EmojiDataConfig(
            out=str(out), node_modules=str(node_modules), styles=tuple(s.strip() for s in styles.split(",")),
            name_sources=chosen, size=size, seed=seed, max_bases=max_bases, overwrite=overwrite))
    counts = ", ".join(f"{k} {v}" for k, v in summary["counts"].items())
    pictures = sum(n for per_style in summary["pictures"].values() for n in per_style.values())
    typer.echo(f"wrote {sum(summary['counts'].values())} emoji, {pictures} pictures ({counts}; styles "
               f"{', '.join(summary['styles'])}; names {', '.join(chosen) or 'icon sets'}) to {out}")


@data_app.command("shard")
def data_shard(
    folder: Annotated[Path, typer.Argument(help="Imagefolder (images + metadata.jsonl) to convert.")],
    out: Annotated[Path, typer.Option(help="Output folder for NAME-000000.tar … and index.json.")],
    shard_size: Annotated[int, typer.Option(min=1, help="Samples per shard.")] = 1000,
    prefix: Annotated[str, typer.Option(help="Shard file name prefix.")] = "shard",
    tokenizer: Annotated[Optional[str], typer.Option(help="Tokenizer folder: write pre-encoded image tokens "
                                                     "(tokens.npy) instead of the pictures.")] = None,
    size: Annotated[int, typer.Option(min=8, help="With --tokenizer: picture side fed to the tokenizer.")] = 64,
) -> None:
    """Convert an imagefolder into webdataset tar shards (.png/.txt/.json per sample, or .tokens.npy)."""
    from pixlm.data.shards import shard_imagefolder

    start = time.perf_counter()
    with user_errors():
        paths = shard_imagefolder(folder, out, shard_size, prefix, tokenizer, size)
    last = paths[-1].name if paths else ""
    typer.echo(f"wrote {len(paths)} shard(s) {paths[0].name}…{last} and index.json to {out} "
               f"in {time.perf_counter() - start:.1f} s")


# ---------------------------------------------------------------------------------------------- generate
@app.command("generate")
def generate(
    prompt: Annotated[str, typer.Argument(help="What to draw, e.g. \"two red circles above a blue square\".")],
    out: Annotated[Path, typer.Option(help="Output folder for the PNGs.")] = Path("out"),
    model: Annotated[Optional[str], typer.Option(help="Model folder, or a bundled model: shapes (the default), "
                                                 "emoji, or shapes-teacher / emoji-teacher (the 8-step models the "
                                                 "bundled ones were distilled from).")] = None,
    num_images: Annotated[int, typer.Option("--num-images", "-n", help="Images to make.")] = 1,
    steps: Annotated[Optional[int], typer.Option(help="Parallel decoding steps (default: the model's; a distilled "
                                                 "model draws only in its own).")] = None,
    guidance: Annotated[Optional[float], typer.Option(help="Classifier-free guidance scale.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed; same seed, same images.")] = None,
    negative_prompt: Annotated[Optional[str], typer.Option(help="What to steer away from.")] = None,
    expand: Annotated[Optional[bool], typer.Option("--expand/--no-expand", help="--expand: rewrite PROMPT with the "
                      "model's expander first; --no-expand: use PROMPT word for word. Default: a model with a scene "
                      "grammar (shapes) reads free wording into its caption grammar.")] = None,
    retrieve: Annotated[Optional[bool], typer.Option("--retrieve/--no-retrieve", help="A model with a retrieval "
                        "index (emoji) redraws part of a training picture the prompt finds (the default); "
                        "--no-retrieve draws from the prompt alone.")] = None,
    rerank: Annotated[int, typer.Option(min=1, max=16, help="Draw N candidates per image and keep the one that "
                                        "best matches the prompt (geometric reading + detailed caption).")] = 1,
    reference: Annotated[bool, typer.Option(help="Plain float32 inference (bit-exact comparisons) instead of the "
                                            "default fast path (packed weights, bf16 where the CPU computes it "
                                            "natively; same dev-set accuracy, docs/speed.md).")] = False,
) -> None:
    """Draw images for PROMPT; prints the path of each PNG (plus a contact sheet when N > 1).

    Image i of ``--seed S`` is the picture that ``-n 1 --seed S+i`` draws."""
    from pixlm.pipelines.common import check_generation_args, contact_sheet

    with user_errors():
        check_generation_args(prompt, num_images, steps, guidance, seed)  # before loading anything
        from pixlm.pipelines.text_to_image import load_pipeline

        pipe = load_pipeline(model, precision="reference" if reference else "auto")
        if rerank > 1:
            from pixlm.pipelines.rerank import generate_reranked

            result = generate_reranked(pipe, prompt, rerank, num_images, seed=seed, num_inference_steps=steps,
                                       guidance_scale=guidance, negative_prompt=negative_prompt, expand=expand)
        else:
            result = pipe.generate(prompt, num_images_per_prompt=num_images, num_inference_steps=steps,
                                   guidance_scale=guidance, negative_prompt=negative_prompt, seed=seed, expand=expand,
                                   retrieve=retrieve)
    if result.revised_prompts and result.revised_prompts[0] != prompt:
        typer.echo(f"revised prompt: {result.revised_prompts[0]}", err=True)
    out.mkdir(parents=True, exist_ok=True)
    stem = "".join(c if c.isalnum() else "_" for c in prompt.lower())[:40].strip("_") or "image"
    for i, im in enumerate(result.images):
        path = out / f"{stem}-{i:02d}.png"
        im.save(path)
        typer.echo(str(path))
    if len(result.images) > 1:
        path = out / f"{stem}-sheet.png"
        contact_sheet(result.images).save(path)
        typer.echo(str(path))
    t = result.timings_ms
    typer.echo(f"{len(result.images)} image(s) in {sum(t.values()):.0f} ms (text {t['text_ms']:.0f}, "
               f"sampling {t['sample_ms']:.0f}, decoding {t['decode_ms']:.0f})", err=True)


# ---------------------------------------------------------------------------------------------- caption, edit
@app.command("caption")
def caption_cmd(
    images: Annotated[list[Path], typer.Argument(help="Pictures to describe.")],
    model: Annotated[Optional[str], typer.Option(help="Model folder with a captioner/; default: the bundled one.")] = None,
    detailed: Annotated[bool, typer.Option(help="Name every object: size, colour, shape and position.")] = False,
    method: Annotated[str, typer.Option(help="greedy, beam or sample.")] = "greedy",
    beams: Annotated[int, typer.Option(min=1, max=64, help="Beam width (--method beam).")] = 4,
    temperature: Annotated[float, typer.Option(help="Softmax temperature (--method sample).")] = 1.0,
    seed: Annotated[Optional[int], typer.Option(help="Random seed (--method sample).")] = None,
) -> None:
    """Print one caption per IMAGE, in order."""
    from pixlm.pipelines.common import open_image
    from pixlm.pipelines.text_to_image import load_pipeline

    with user_errors():
        pics = [open_image(p) for p in images]
        pipe = load_pipeline(model)
        options = {"num_beams": beams} if method == "beam" else {"temperature": temperature} if method == "sample" else {}
        for text in pipe.caption(pics, detailed=detailed, method=method, seed=seed, **options):
            typer.echo(text)


def edit_files(image: str | os.PathLike, prompt: str, out: str | os.PathLike, mode: str = "inpaint",
               mask: str | os.PathLike | None = None, strength: float | None = None, extend: str | None = None,
               shift: bool = False, model: str | None = None, num_images: int = 1, steps: int | None = None,
               seed: int | None = None, guided: bool | None = None, candidates: int | None = None) -> list[Path]:
    """What ``pixlm edit`` does: read the files, edit, write ``OUT/<stem>-<mode>-NN.png``; returns the paths."""
    from pixlm.pipelines.common import open_image
    from pixlm.pipelines.editing import MODES, parse_sides
    from pixlm.pipelines.text_to_image import load_pipeline

    if mode not in MODES:
        raise ValueError(f"--mode {mode!r} is not one of {MODES}")
    if (extend is not None or shift) and mode != "outpaint":
        raise ValueError("--extend/--shift only apply to --mode outpaint")
    pic = open_image(image)
    options: dict = {"num_images": num_images, "num_inference_steps": steps}
    if guided is not None or candidates is not None:
        if mode not in ("inpaint", "outpaint"):
            raise ValueError("--guided/--no-guided and --candidates only apply to --mode inpaint or outpaint")
        options.update(guided=guided, candidates=candidates)
    if mode == "outpaint":
        if extend is None:
            raise ValueError("--mode outpaint needs --extend, e.g. --extend right=16")
        options.update(parse_sides(extend), extend=not shift)
    pipe = load_pipeline(model)
    result = pipe.edit(pic, prompt, mode=mode, mask=open_image(mask) if mask is not None else None,
                       strength=strength, seed=seed, **options)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, im in enumerate(result.images):
        path = out / f"{Path(image).stem}-{mode}-{i:02d}.png"
        im.save(path)
        paths.append(path)
    return paths


@app.command("edit")
def edit_cmd(
    image: Annotated[Path, typer.Argument(help="Picture to edit.")],
    prompt: Annotated[str, typer.Argument(help="What the result should show; in instruct mode the instruction, "
                                          "e.g. \"make the circle blue\".")],
    out: Annotated[Path, typer.Option(help="Output folder for the PNGs.")],
    mode: Annotated[str, typer.Option(help="inpaint, outpaint, variation or instruct.")] = "inpaint",
    mask: Annotated[Optional[Path], typer.Option(help="inpaint: white (or transparent) = repaint.")] = None,
    strength: Annotated[Optional[float], typer.Option(help="variation: fraction of tokens to resample (0.5).")] = None,
    extend: Annotated[Optional[str], typer.Option(help="outpaint: pixels per side, e.g. \"right=16,top=8\" "
                                                  "(multiples of 8).")] = None,
    shift: Annotated[bool, typer.Option(help="outpaint: keep the size and shift the content instead of "
                                        "growing the canvas.")] = False,
    model: Annotated[Optional[str], typer.Option(help="Model folder; default: the bundled shapes model.")] = None,
    num_images: Annotated[int, typer.Option("--num-images", "-n", min=1, help="Results to make.")] = 1,
    steps: Annotated[Optional[int], typer.Option(help="Parallel decoding steps.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed; same seed, same result.")] = None,
    guided: Annotated[Optional[bool], typer.Option(help="inpaint/outpaint: read the picture so PROMPT may name only "
                                                   "the new content (default: on for the shapes model).")] = None,
    candidates: Annotated[Optional[int], typer.Option(min=1, max=16, help="inpaint/outpaint: samples per result "
                                                      "when guided, the first that shows the plan wins (4).")] = None,
) -> None:
    """Edit IMAGE: repaint a masked area, grow the canvas, vary it, or follow an instruction; prints the PNG paths."""
    with user_errors():
        for path in edit_files(image, prompt, out, mode, mask, strength, extend, shift, model, num_images, steps, seed,
                               guided, candidates):
            typer.echo(str(path))


# ---------------------------------------------------------------------------------------------- expand
@app.command("expand")
def expand_cmd(
    prompt: Annotated[str, typer.Argument(help="A loose prompt, e.g. \"red ball up left\".")],
    backend: Annotated[str, typer.Option(help="builtin, hf or openai.")] = "builtin",
    model: Annotated[Optional[str], typer.Option(help="builtin: expander folder (default: the bundled one); "
                                                 "hf: a local causal-LM folder; openai: the model name.")] = None,
    base_url: Annotated[Optional[str], typer.Option(help="openai: server URL ending in /v1 "
                                                    "(default: $OPENAI_BASE_URL or http://localhost:8080/v1).")] = None,
    api_key_env: Annotated[str, typer.Option(help="openai: environment variable holding the key.")] = "OPENAI_API_KEY",
    timeout: Annotated[float, typer.Option(min=0.1, help="Seconds before giving up (hf, openai).")] = 10.0,
    validate: Annotated[Optional[bool], typer.Option(help="Keep the original unless the rewrite parses as a shapes "
                                                     "caption (default: on for builtin only).")] = None,
) -> None:
    """Print PROMPT rewritten as a precise caption (the original, with a warning, if expansion fails)."""
    from pixlm.text.expander import make_expander

    with user_errors():
        expander = make_expander(backend, model, base_url=base_url, api_key_env=api_key_env, timeout_s=timeout,
                                 validate=validate)
        typer.echo(expander.expand(prompt))


# ---------------------------------------------------------------------------------------------- export
export_app = typer.Typer(help="Export a model for other runtimes.", no_args_is_help=True)
app.add_typer(export_app, name="export")


@export_app.command("onnx")
def export_onnx_cmd(
    out: Annotated[Path, typer.Option(help="Output folder (an earlier export there is replaced).")],
    model: Annotated[Optional[str], typer.Option(help="Model folder, or a bundled model: shapes (the default), "
                                                 "emoji, or shapes-teacher / emoji-teacher (the 8-step models the "
                                                 "bundled ones were distilled from).")] = None,
) -> None:
    """Write the text encoder, one generator step and the VQ decoder as ONNX graphs, plus the sampler settings;
    run them with `pixlm.load_pipeline(OUT, backend="onnxruntime")` (ONNX Runtime: `pip install 'pixlm[onnx]'`)."""
    from pixlm.inference.onnx import export_onnx
    from pixlm.pipelines.text_to_image import load_pipeline

    start = time.perf_counter()
    with user_errors():
        path = export_onnx(load_pipeline(model, precision="reference"), out)  # the plain float32 modules
    typer.echo(f"wrote ONNX graphs and onnx_index.json to {path} in {time.perf_counter() - start:.1f} s")


# ---------------------------------------------------------------------------------------------- serve
@app.command("serve")
def serve(
    model: Annotated[Optional[str], typer.Option(help="Model folder; default: the bundled shapes model.")] = None,
    host: Annotated[str, typer.Option(help="Address to listen on (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535)] = 8000,
    max_batch: Annotated[int, typer.Option(min=1, help="Most images in one model forward.")] = 16,
    batch_window_ms: Annotated[float, typer.Option(min=0, help="How long a batch waits for companions.")] = 5.0,
    max_queue: Annotated[int, typer.Option(min=1, help="Requests waiting before 429.")] = 64,
    timeout: Annotated[float, typer.Option(min=0.1, help="Per-request timeout in seconds (504 after).")] = 60.0,
    output_dir: Annotated[Optional[Path], typer.Option(help="Folder for response_format=url images.")] = None,
    url_ttl: Annotated[float, typer.Option(min=1, help="Seconds a url image stays available.")] = 3600.0,
    reference: Annotated[bool, typer.Option(help="Serve plain float32 inference instead of the default fast path "
                                            "(see `pixlm generate --reference`).")] = False,
    public_url: Annotated[Optional[str], typer.Option(envvar="PIXLM_PUBLIC_URL", help="Base of the URLs in "
                                                      "response_format=url answers, e.g. https://img.example.org "
                                                      "behind a proxy; default: the bound address (never the "
                                                      "request's Host header).")] = None,
    header_timeout: Annotated[Optional[float], typer.Option(min=0.1, help="Seconds a client has to send a request's "
                                                            "headers (408 and close after; README: limits).")] = None,
    body_timeout: Annotated[Optional[float], typer.Option(min=0.1, help="Seconds a client has to send a request's "
                                                          "body after its headers (408 and close after).")] = None,
    keep_alive: Annotated[Optional[float], typer.Option(min=0.1, help="Seconds an idle keep-alive connection stays "
                                                        "open.")] = None,
) -> None:
    """Serve the OpenAI-compatible Images API (/v1) and the web UI (/) with dynamic batching."""
    from pixlm.serve import run_server

    with user_errors():
        caps = {"header_timeout_s": header_timeout, "body_timeout_s": body_timeout, "keep_alive_s": keep_alive}
        run_server(model, host=host, port=port, max_batch=max_batch, batch_window_ms=batch_window_ms,
                   max_queue=max_queue, request_timeout_s=timeout, output_dir=output_dir, url_ttl_s=url_ttl,
                   precision="reference" if reference else "auto", public_url=public_url, limits={k: v for k, v in caps.items() if v is not None})


# ---------------------------------------------------------------------------------------------- train
train_app = typer.Typer(help="Train components (one Accelerate loop each; `--num-processes N`, or "
                        "`accelerate launch -m pixlm.train ...` for several GPUs or machines).", no_args_is_help=True)
app.add_typer(train_app, name="train")
NUM_PROCESSES_HELP = ("Train on N local processes (one per GPU; gloo on CPU); for several machines use "
                      "`accelerate launch` (docs/distributed.md).")


def _maybe_relaunch(num_processes: int) -> None:
    """With N > 1 and not yet inside a launcher: run this command as N processes, then exit with their code."""
    from pixlm.train.distributed import launched, relaunch

    if num_processes > 1 and not launched():
        raise typer.Exit(relaunch(num_processes))


def _echo_main(text: str) -> None:
    """Print from the main process only (every process of a multi-process run returns the same path)."""
    import os

    if os.environ.get("RANK", "0") == "0":
        typer.echo(text)


@train_app.command("tokenizer")
def train_tokenizer_cmd(
    out: Annotated[Path, typer.Option(help="Run folder: checkpoints, log.jsonl, loss.png, samples.png, model/.")],
    steps: Annotated[int, typer.Option(min=1)] = 1000,
    batch_size: Annotated[int, typer.Option(min=1)] = 24,
    lr: Annotated[float, typer.Option()] = 2e-3,
    seed: Annotated[int, typer.Option()] = 0,
    resume: Annotated[bool, typer.Option(help="Continue from the newest complete checkpoint in OUT.")] = False,
    init_from: Annotated[Optional[str], typer.Option(help="Start from a trained tokenizer folder.")] = None,
    freeze_encoder: Annotated[bool, typer.Option(help="Train the decoder only; tokens stay fixed.")] = False,
    data: Annotated[Optional[str], typer.Option(help="Tar shards of pictures (DIR, 'DIR/shard-{000000..000009}.tar' "
                                                "or a glob; see `pixlm data shard`); default: shapes.")] = None,
    shuffle_buffer: Annotated[int, typer.Option(min=0, help="Shards: samples held for shuffling.")] = 1000,
    grad_accum: Annotated[int, typer.Option(min=1, help="Micro-batches per optimizer step.")] = 1,
    mixed_precision: Annotated[str, typer.Option(help="no, bf16 or fp16 (GPU only).")] = "no",
    num_processes: Annotated[int, typer.Option(min=1, help=NUM_PROCESSES_HELP)] = 1,
) -> None:
    """Train the FSQ image tokenizer on shapes scenes made on the fly, or on pictures from tar shards."""
    from pixlm.train.tokenizer import TokenizerTrainConfig, train_tokenizer

    _maybe_relaunch(num_processes)
    with user_errors():
        path = train_tokenizer(TokenizerTrainConfig(out=str(out), steps=steps, batch_size=batch_size, lr=lr, seed=seed,
                                                    resume=resume, init_from=init_from or "",
                                                    freeze_encoder=freeze_encoder, grad_accum=grad_accum,
                                                    mixed_precision=mixed_precision, data=data or "",
                                                    shuffle_buffer=shuffle_buffer))
    _echo_main(str(path))


@train_app.command("generator")
def train_generator_cmd(
    out: Annotated[Path, typer.Option(help="Run folder; the finished pipeline is written to OUT/pipeline.")],
    tokenizer: Annotated[str, typer.Option(help="Trained tokenizer folder (its model/ subfolder).")],
    data: Annotated[Optional[str], typer.Option(help="Imagefolder with metadata.jsonl, or tar shards "
                                                "(DIR, 'DIR/shard-{000000..000009}.tar' or a glob); default: shapes.")]
    = None,
    text_encoder: Annotated[str, typer.Option(help="minilm, tiny, or a local Hugging Face encoder folder.")] = "minilm",
    steps: Annotated[int, typer.Option(min=1)] = 3000,
    batch_size: Annotated[int, typer.Option(min=1)] = 64,
    pool: Annotated[int, typer.Option(min=1, help="Shapes scenes to pre-encode.")] = 40_000,
    conditioning: Annotated[str, typer.Option(help="cross or prefix.")] = "cross",
    dim: Annotated[int, typer.Option(min=8)] = 192,
    layers: Annotated[int, typer.Option(min=1)] = 4,
    seed: Annotated[int, typer.Option()] = 0,
    resume: Annotated[bool, typer.Option(help="Continue from the newest complete checkpoint in OUT.")] = False,
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 1e-3,
    warmup: Annotated[int, typer.Option(min=0, help="Linear warmup steps before the cosine decay.")] = 200,
    grad_accum: Annotated[int, typer.Option(min=1, help="Micro-batches per optimizer step.")] = 1,
    mixed_precision: Annotated[str, typer.Option(help="no, bf16 or fp16 (GPU only).")] = "no",
    shuffle_buffer: Annotated[int, typer.Option(min=0, help="Shards: samples held for shuffling.")] = 1000,
    ckpt_every: Annotated[int, typer.Option(min=1, help="Steps between checkpoints.")] = 250,
    log_every: Annotated[int, typer.Option(min=1, help="Steps between log lines.")] = 25,
    num_processes: Annotated[int, typer.Option(min=1, help=NUM_PROCESSES_HELP)] = 1,
) -> None:
    """Train the masked token generator on pre-encoded image tokens and text states."""
    from pixlm.train.generator import GeneratorTrainConfig, train_generator

    _maybe_relaunch(num_processes)
    with user_errors():
        path = train_generator(GeneratorTrainConfig(out=str(out), tokenizer=tokenizer, data=data or "",
                                                    text_encoder=text_encoder, steps=steps, batch_size=batch_size,
                                                    pool=pool, conditioning=conditioning, dim=dim, layers=layers,
                                                    seed=seed, resume=resume, grad_accum=grad_accum,
                                                    mixed_precision=mixed_precision, shuffle_buffer=shuffle_buffer,
                                                    ckpt_every=ckpt_every, log_every=log_every, lr=lr,
                                                    warmup=warmup))
    _echo_main(str(path))


@train_app.command("captioner")
def train_captioner_cmd(
    out: Annotated[Path, typer.Option(help="Run folder; the finished captioner is written to OUT/model.")],
    tokenizer: Annotated[str, typer.Option(help="Trained tokenizer folder (its model/ subfolder).")],
    steps: Annotated[int, typer.Option(min=1)] = 1500,
    batch_size: Annotated[int, typer.Option(min=1)] = 64,
    pool: Annotated[int, typer.Option(min=1, help="Shapes scenes to pre-encode.")] = 12_000,
    data: Annotated[Optional[str], typer.Option(help="Train on this imagefolder (its pictures and metadata.jsonl "
                                                "captions) instead of shapes scenes.")] = None,
    eval_data: Annotated[Optional[str], typer.Option(help="With --data: held-out imagefolders (comma-separated) "
                                                     "whose loss, BLEU-4 and CIDEr are logged.")] = None,
    attach: Annotated[Optional[str], typer.Option(help="Model folder that receives it as captioner/ (float16).")] = None,
    seed: Annotated[int, typer.Option()] = 0,
    resume: Annotated[bool, typer.Option(help="Continue from the newest complete checkpoint in OUT.")] = False,
    max_minutes: Annotated[float, typer.Option(min=0, help="Stop (and still write the model) after this long; "
                                               "0 = no limit.")] = 0.0,
) -> None:
    """Train the image-token captioner on shapes scenes (free and detailed captions) or an imagefolder (free)."""
    from pixlm.train.captioner import CaptionerTrainConfig, train_captioner

    with user_errors():
        path = train_captioner(CaptionerTrainConfig(out=str(out), tokenizer=tokenizer, steps=steps,
                                                    batch_size=batch_size, pool=pool, data=data or "",
                                                    eval_data=eval_data or "", attach=attach or "", seed=seed,
                                                    resume=resume, max_minutes=max_minutes))
    typer.echo(str(path))


@train_app.command("expander")
def train_expander_cmd(
    out: Annotated[Path, typer.Option(help="Run folder; the finished expander is written to OUT/model.")],
    steps: Annotated[int, typer.Option(min=1)] = 3000,
    batch_size: Annotated[int, typer.Option(min=1)] = 64,
    lr: Annotated[float, typer.Option()] = 2e-3,
    dim: Annotated[int, typer.Option(min=8)] = 128,
    layers: Annotated[int, typer.Option(min=1)] = 4,
    seed: Annotated[int, typer.Option()] = 0,
    resume: Annotated[bool, typer.Option(help="Continue from the newest complete checkpoint in OUT.")] = False,
) -> None:
    """Train the built-in prompt expander on (loose prompt → canonical caption) pairs made on the fly."""
    from pixlm.train.expander import ExpanderTrainConfig, train_expander

    with user_errors():
        path = train_expander(ExpanderTrainConfig(out=str(out), steps=steps, batch_size=batch_size, lr=lr, dim=dim,
                                                  layers=layers, seed=seed, resume=resume))
    typer.echo(str(path))


# ---------------------------------------------------------------------------------------------- eval
@app.command("eval")
def eval_cmd(
    out: Annotated[Path, typer.Option(help="Report folder: report.json, report.md, failures.png (shapes) or "
                                      "sheet.png (--emoji-data), images/.")],
    model: Annotated[Optional[str], typer.Option(help="Model folder; default: the bundled shapes model (with "
                                                 "--emoji-data: the bundled emoji model).")] = None,
    prompts: Annotated[Optional[str], typer.Option(help="Prompt-spec JSONL (several: comma-separated); "
                                                   "default: the shipped dev set.")] = None,
    images_per_prompt: Annotated[int, typer.Option(min=1, help="Images generated per prompt (shapes).")] = 4,
    images: Annotated[Optional[Path], typer.Option("--images", help="Score this folder (images + metadata.jsonl "
                                                   "of prompt-spec rows with file_name; with --emoji-data: rows "
                                                   "with file_name and prompt or text) instead of generating.")]
    = None,
    seed: Annotated[int, typer.Option(help="Random seed for generation and reference renders (and, with "
                                      "--emoji-data, for drawing the names).")] = 0,
    steps: Annotated[Optional[int], typer.Option(help="Decoding steps (default: the model's).")] = None,
    guidance: Annotated[Optional[float], typer.Option(help="Guidance scale (default: the model's).")] = None,
    emoji_data: Annotated[Optional[Path], typer.Option(help="Emoji recognition instead of the shapes judge: rank "
                                                       "each picture among the real pictures of its style in this "
                                                       "`pixlm data emoji` folder by nearest neighbour; report "
                                                       "top-1/top-5.")] = None,
    names: Annotated[int, typer.Option(min=1, help="With --emoji-data: prompts \"NAME, STYLE style\" drawn at "
                                       "random (seeded) from --split, one picture each.")] = 200,
    split: Annotated[str, typer.Option(help="With --emoji-data: the split the names are drawn from.")] = "train",
    styles: Annotated[Optional[str], typer.Option(help="With --emoji-data: styles to draw prompts in, "
                                                  "comma-separated (default: every style of the data).")] = None,
) -> None:
    """Judge generated (or given) images against prompt specs; write scores with 95% CIs, FID and failures.

    With --emoji-data: how often each emoji picture's nearest real pictures (same style) include the right emoji.
    """
    if emoji_data is not None:
        return _eval_emoji(out, model, prompts, images, seed, steps, guidance, emoji_data, names, split, styles)
    from pixlm.eval.report import run_eval

    with user_errors():
        report = run_eval(model, prompts, images_per_prompt, str(out), images_dir=str(images) if images else None,
                          seed=seed, steps=steps, guidance=guidance)
    lo, hi = report["overall_ci95"]
    fid = "n/a" if report["fid"] is None else f"{report['fid']:.2f}"
    typer.echo(f"overall {report['overall']:.3f} (95% CI {lo:.3f}–{hi:.3f}) on {report['n_images']} images; "
               f"FID {fid}; report in {out / 'report.md'}")


def _eval_emoji(out: Path, model: str | None, prompts: str | None, images: Path | None, seed: int,
                steps: int | None, guidance: float | None, data: Path, names: int, split: str,
                styles: str | None) -> None:
    """``pixlm eval --emoji-data``: nearest-neighbour recognition (pixlm.eval.nearest)."""
    from pixlm.eval.nearest import run_nearest_eval

    with user_errors():
        if prompts is not None:
            raise ValueError(f"--prompts={prompts!r} is for the shapes judge; with --emoji-data the prompts are "
                             "drawn from the data (--names, --split, --styles) or read from --images")
        style_list = [s.strip() for s in styles.split(",") if s.strip()] if styles is not None else None
        options = {k: v for k, v in (("num_inference_steps", steps), ("guidance_scale", guidance)) if v is not None}
        report = run_nearest_eval(data, out, model=model or "emoji", images_dir=images, n=names, split=split,
                                  styles=style_list, seed=seed, options=options)
    s = report["summary"]
    per_style = ", ".join(f"{k} {v['top5']:.3f}" for k, v in s["per_style"].items())
    typer.echo(f"top-1 {s['top1']:.3f}, top-5 {s['top5']:.3f} on {s['n']} pictures (top-5 by style: {per_style}); "
               f"report in {out / 'report.md'}")


# ---------------------------------------------------------------------------------------------- bench
def _int_list(value: str, name: str) -> tuple[int, ...]:
    try:
        steps = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise ValueError(f"{name}={value!r} must be comma-separated integers, e.g. 4,8,12") from None
    if not steps or any(v < 1 for v in steps):
        raise ValueError(f"{name}={value!r} must list step counts >= 1")
    return steps


@app.command("bench")
def bench_cmd(
    models: Annotated[list[str], typer.Option("--models", help="Model folders (DIR or LABEL=DIR; `bundled` = the "
                                              "shipped model). `--models A B C` and `--models A --models B` both "
                                              "work.")],
    more_models: Annotated[Optional[list[str]], typer.Argument(metavar="[DIR]...", help="More model folders.",
                                                               show_default=False)] = None,
    prompts: Annotated[Optional[str], typer.Option(help="Prompt-spec JSONL; default: the shipped dev set.")] = None,
    out: Annotated[Path, typer.Option(help="Output folder: bench.json, bench.md, bench.png, eval/.")] = Path("bench"),
    masked_steps: Annotated[str, typer.Option(help="Step counts for masked generators.")] = "4,8,12",
    diffusion_steps: Annotated[str, typer.Option(help="Step counts for diffusion generators.")] = "10,25,50",
    repeats: Annotated[int, typer.Option(min=20, help="Timed batch-1 calls (median reported).")] = 20,
    images_per_prompt: Annotated[int, typer.Option(min=1, help="Images per prompt for accuracy/FID.")] = 1,
    threads: Annotated[int, typer.Option(min=0, help="torch threads for the run (0: leave as is).")] = 0,
    memory: Annotated[str, typer.Option(help="Peak memory: subprocess (fresh process per row), inprocess, off.")]
    = "subprocess",
    quality: Annotated[bool, typer.Option(help="Measure accuracy and FID (--no-quality: speed only).")] = True,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Latency (bs 1), throughput (bs 64), peak memory, accuracy and FID of several models in one run."""
    from pixlm.eval.bench import BenchConfig, run_bench

    with user_errors():
        cfg = BenchConfig(repeats=repeats, images_per_prompt=images_per_prompt, threads=threads, memory=memory,
                          quality=quality, seed=seed, steps={"masked": _int_list(masked_steps, "--masked-steps"),
                                                             "diffusion": _int_list(diffusion_steps, "--diffusion-steps")})
        names = [m for arg in [*models, *(more_models or [])] for m in arg.split(",") if m]
        run_bench(names, prompts, out, cfg)
    typer.echo(f"wrote {out / 'bench.json'}, {out / 'bench.md'}, {out / 'bench.png'}")


if __name__ == "__main__":
    app()
