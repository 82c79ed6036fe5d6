"""What every pipeline shares: output type, argument checks and limits, seeds, image ↔ token conversion, and the
registry of bundled model folders. Below ``text_to_image``, ``editing`` and ``rerank``; imports no pipeline."""

from __future__ import annotations

import math
import os
import secrets
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

from pixlm.checkpoint import CheckpointError

MAX_PROMPT_CHARS = 1000
MAX_IMAGES_PER_PROMPT = 64
MAX_STEPS = 64
MAX_GUIDANCE = 50.0
BUNDLED = "shapes-masked"
# Names that ``load_pipeline`` (and ``--model`` on the command line) resolves to bundled model folders.
# A distilled few-step student is the default; its ``teacher/`` variant folder keeps the model it was distilled from.
MODEL_NAMES = {"shapes": BUNDLED, "emoji": "emoji-masked",
               "shapes-teacher": f"{BUNDLED}/teacher", "emoji-teacher": "emoji-masked/teacher"}
_RECIPES = {BUNDLED: "python -m pixlm.train.bundle",
            "emoji-masked": "python -m pixlm.train.emoji --work runs/emoji --out src/pixlm/assets/emoji-masked"}
VARIANT_BASE = "base"  # model_index.json key of a variant folder: where the components it lacks are

PreviewCallback = Callable[[int, int, torch.Tensor], None]


@dataclass
class PipelineOutput:
    images: list[Image.Image]
    prompts: list[str]  # the prompt each image was generated from (after expansion, if any)
    tokens: torch.Tensor  # (N, h, w) image tokens
    timings_ms: dict[str, float] = field(default_factory=dict)
    revised_prompts: list[str] = field(default_factory=list)  # ``prompts`` when any prompt was rewritten, else []


def bundled_model_path(name: str = BUNDLED) -> Path:
    """Folder of a model shipped inside the package."""
    path = Path(str(resources.files("pixlm") / "assets" / name))
    if not (path / "model_index.json").is_file():
        raise CheckpointError(f"bundled model {name!r} is not installed at {path}; rebuild it with "
                              f"`{_RECIPES.get(name, 'python -m pixlm.train.bundle')}` (see README)")
    return path


def component_finder(root: Path, index: dict) -> Callable[[str], Path]:
    """Where a model folder's component lives: ``root/name``, or, for a *variant folder* (its
    ``model_index.json`` names a ``"base"`` folder, relative to it) that lacks the component, ``base/name``.

    A variant holds only what differs from its base, e.g. a distilled model's ``teacher/`` variant: its own
    ``generator/`` and defaults, with the tokenizer, text encoder, captioner and index of the folder above."""
    base = index.get(VARIANT_BASE)
    if base is None:
        return lambda name: root / name
    if not isinstance(base, str) or not (root / base / "model_index.json").is_file():
        raise CheckpointError(f"{root}/model_index.json: base={base!r} must name a model folder relative to it")
    return lambda name: root / name if (root / name).exists() else root / base / name


def model_folder(model: str | os.PathLike | None) -> Path:
    """The folder of a model given by a bundled model's name (``MODEL_NAMES``) or a path; None: the bundled one."""
    if model is None:
        return bundled_model_path()
    if isinstance(model, str) and model in MODEL_NAMES:
        return bundled_model_path(MODEL_NAMES[model])
    return Path(model)


def check_prompts(prompt: str | list[str], name: str = "prompt") -> list[str]:
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, (list, tuple)) or not prompts:
        raise ValueError(f"{name} must be a non-empty string or a non-empty list of strings, got {prompt!r}")
    for p in prompts:
        if not isinstance(p, str) or not p.strip():
            raise ValueError(f"{name} entries must be non-empty strings, got {p!r}")
        if len(p) > MAX_PROMPT_CHARS:
            raise ValueError(f"{name} has {len(p)} characters; at most {MAX_PROMPT_CHARS} are allowed")
    return [p.strip() for p in prompts]


def check_number(value, name: str, lo: float, hi: float, integer: bool) -> None:
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type or not math.isfinite(float(value)) or not lo <= value <= hi:
        kind = "an integer" if integer else "a finite number"
        raise ValueError(f"{name}={value!r} must be {kind} in [{lo}, {hi}]")


MAX_SEED = 2**63 - 1


def check_sampling_args(num_images: int, steps: int | None, guidance: float | None,
                        images_name: str = "num_images_per_prompt") -> None:
    """The pipelines' limits on image count, steps and guidance (None: the model's default, not checked here)."""
    check_number(num_images, images_name, 1, MAX_IMAGES_PER_PROMPT, integer=True)
    if steps is not None:
        check_number(steps, "num_inference_steps", 1, MAX_STEPS, integer=True)
    if guidance is not None:
        check_number(guidance, "guidance_scale", 0.0, MAX_GUIDANCE, integer=False)


def check_generation_args(prompt: str | list[str], num_images: int = 1, steps: int | None = None,
                          guidance: float | None = None, seed: int | None = None) -> list[str]:
    """Every argument of a generation call checked before anything is loaded (the CLI calls this first)."""
    prompts = check_prompts(prompt)
    check_sampling_args(num_images, steps, guidance)
    if seed is not None:
        check_number(seed, "seed", 0, MAX_SEED - len(prompts) * num_images + 1, integer=True)
    return prompts


def make_generator(seed: int | None, device: torch.device | str = "cpu") -> tuple[torch.Generator, int]:
    """A seeded ``torch.Generator`` (a random seed when None) and the seed used."""
    if seed is None:
        seed = secrets.randbits(62)
    check_number(seed, "seed", 0, MAX_SEED, integer=True)
    return torch.Generator(device=device).manual_seed(seed), seed


def make_generators(seed: int | list[int] | None, n: int,
                    device: torch.device | str = "cpu") -> tuple[list[torch.Generator], list[int]]:
    """One seeded ``torch.Generator`` per output image, and the seeds used.

    An int ``s`` gives image ``i`` the seed ``s + i``, so image ``i`` of a call is the picture a one-image call with
    seed ``s + i`` draws, whatever the batch holds (the samplers draw each row's randomness from its own generator).
    A list gives each image its own seed (``n`` of them); None draws a random ``s``.
    """
    if isinstance(seed, (list, tuple)):
        if len(seed) != n:
            raise ValueError(f"seed is a list of {len(seed)} seeds for {n} images; give one per image or one int")
        seeds = list(seed)
    else:
        if seed is None:
            seed = secrets.randbits(62)
        check_number(seed, "seed", 0, MAX_SEED - n + 1, integer=True)
        seeds = [seed + i for i in range(n)]
    for s in seeds:
        check_number(s, "seed", 0, MAX_SEED, integer=True)
    return [torch.Generator(device=device).manual_seed(s) for s in seeds], seeds


def tokens_to_images(vq: Any, tokens: torch.Tensor) -> list[Image.Image]:
    """(B, h, w) tokens → PIL images; refuses NaN/Inf instead of writing black pictures."""
    with torch.no_grad():
        x = vq.decode(tokens)
    if not torch.isfinite(x).all():
        raise FloatingPointError("the VQ decoder produced NaN/Inf pixels; the model weights are corrupt")
    arr = ((x + 1) * 127.5).round().clamp(0, 255).byte().permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a) for a in arr]


def contact_sheet(images: list[Image.Image], cols: int | None = None) -> Image.Image:
    """Tile images into one picture (for N > 1 outputs)."""
    cols = cols or min(len(images), 8)
    rows = (len(images) + cols - 1) // cols
    w, h = images[0].size
    sheet = Image.new("RGB", (cols * w, rows * h), (255, 255, 255))
    for i, im in enumerate(images):
        sheet.paste(im, ((i % cols) * w, (i // cols) * h))
    return sheet



# ---------------------------------------------------------------------------------------------- pictures
def square_crop(image: Image.Image) -> Image.Image:
    """Centre crop to a square (the model draws square pictures)."""
    w, h = image.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    return image if w == h else image.crop((left, top, left + s, top + s))


def has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info


def prepare_image(image: Image.Image, size: int) -> Image.Image:
    """RGB ``size``×``size``: transparent pixels shown over white, centre-cropped, resized."""
    if not isinstance(image, Image.Image):
        raise TypeError(f"expected a PIL image, got {type(image).__name__}")
    rgba = square_crop(image).convert("RGBA")
    rgb = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return rgb if rgb.size == (size, size) else rgb.resize((size, size), Image.LANCZOS)


def image_to_tensor(image: Image.Image, size: int) -> torch.Tensor:
    """(1, 3, size, size) in [-1, 1] (see :func:`prepare_image`)."""
    arr = torch.from_numpy(np.asarray(prepare_image(image, size), dtype=np.float32).copy())  # (H, W, 3)
    return (arr / 127.5 - 1).permute(2, 0, 1)[None]


def encode_images(pipe: Any, images: Image.Image | list[Image.Image]) -> torch.Tensor:
    """Pictures → (B, h, w) tokens of the pipeline's tokenizer."""
    images = [images] if isinstance(images, Image.Image) else list(images)
    if not images:
        raise ValueError("no images given")
    size = pipe.vq.config.image_size
    with torch.inference_mode():
        x = torch.cat([image_to_tensor(im, size) for im in images]).to(pipe.device)
        return pipe.vq.encode(x)


def open_image(path: str | os.PathLike) -> Image.Image:
    """Read a picture file fully (so the file can close); a clear error for a missing or unreadable file."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"image file {str(path)!r} does not exist")
    try:
        with Image.open(path) as im:
            im.load()
            return im.copy()
    except (OSError, SyntaxError) as e:
        raise ValueError(f"cannot read image {str(path)!r}: {e}") from None


