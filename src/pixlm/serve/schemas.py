"""Request schemas and limits: pydantic models for the wire format, checked into plain parameter objects.

JSON bodies are validated strictly (``"n": "3"`` is a type error); multipart forms carry only strings, so
their fields are converted leniently ("3" → 3) and then range-checked by the same code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, ValidationError

from pixlm.serve.errors import APIError, bad_request

NATIVE_SIZE = 64
# Square output sides a request may ask for; anything but 64 is the 64×64 picture resampled (nearest neighbour).
SIZES = (64, 128, 256, 512, 1024)


@dataclass(frozen=True)
class Limits:
    """Caps that protect the server; every one is reported by name and value when a request exceeds it."""

    max_prompt_chars: int = 1000
    max_n: int = 10
    max_steps: int = 64
    max_guidance: float = 50.0
    max_upload_bytes: int = 4 * 2**20  # per uploaded file
    max_image_pixels: int = 2048 * 2048  # width × height of an upload, checked before decoding

    @property
    def max_body_bytes(self) -> int:
        """A whole request body: an image and a mask at the per-file cap, plus room for the form fields."""
        return 2 * self.max_upload_bytes + 64 * 1024


class _OpenAIFields(BaseModel):
    """Fields OpenAI's clients may send that change nothing here (accepted so clients work unchanged)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    model: Optional[str] = None
    user: Optional[str] = None
    quality: Optional[str] = None
    style: Optional[str] = None
    background: Optional[str] = None
    moderation: Optional[str] = None
    output_compression: Optional[int] = None
    output_format: Optional[str] = None
    safety_identifier: Optional[str] = None
    partial_images: Optional[int] = None
    input_fidelity: Optional[str] = None
    stream: Optional[bool] = None
    n: Optional[int] = None
    size: Optional[str] = None
    response_format: Optional[str] = None
    seed: Optional[int] = None
    steps: Optional[int] = None
    guidance_scale: Optional[float] = None


class GenerationRequest(_OpenAIFields):
    """``POST /v1/images/generations`` body."""

    prompt: str
    negative_prompt: Optional[str] = None
    expand: Optional[bool] = None


class EditRequest(_OpenAIFields):
    """``POST /v1/images/edits`` form fields (files travel separately)."""

    prompt: str
    negative_prompt: Optional[str] = None


class VariationRequest(_OpenAIFields):
    """``POST /v1/images/variations`` form fields. ``prompt`` (optional) steers the resampled tokens."""

    prompt: Optional[str] = None
    strength: Optional[float] = None


@dataclass
class Params:
    """A request's checked parameters (``None`` = the pipeline's default)."""

    prompt: str | None
    n: int
    side: int
    response_format: str
    seed: int | None
    steps: int | None
    guidance_scale: float | None
    negative_prompt: str | None
    strength: float = 0.5
    expand: bool = False


def validate_model(cls: type[BaseModel], data: Any, strict: bool = True) -> BaseModel:
    """Build a request model, turning pydantic's first complaint into a 400 that names the parameter."""
    if not isinstance(data, dict):
        raise bad_request(f"the request body must be a JSON object, got {type(data).__name__}", code="invalid_json")
    try:
        return cls.model_validate(data, strict=strict)
    except ValidationError as e:
        err = e.errors()[0]
        name = ".".join(str(p) for p in err["loc"]) or None
        if err["type"] == "extra_forbidden":
            allowed = ", ".join(sorted(cls.model_fields))
            raise bad_request(f"unknown parameter {name!r}; allowed: {allowed}", name, "unknown_parameter") from None
        if err["type"] == "missing":
            raise bad_request(f"{name} is required", name, "missing_parameter") from None
        raise bad_request(f"{name}={err.get('input')!r}: {err['msg'].lower()}", name, "invalid_type") from None


def check_int(name: str, value: int, lo: int, hi: int) -> int:
    """``value`` if it is an integer in [lo, hi], else a 400 naming it and the range."""
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise bad_request(f"{name}={value!r} must be an integer in [{lo}, {hi}]", name)
    return value


def check_float(name: str, value: float, lo: float, hi: float, open_lo: bool = False) -> float:
    """``value`` if it is a finite number in [lo, hi] (or (lo, hi]), else a 400 naming it and the range."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not (lo < value if open_lo else lo <= value) or value > hi:
        rng = f"({lo}, {hi}]" if open_lo else f"[{lo}, {hi}]"
        raise bad_request(f"{name}={value!r} must be a finite number in {rng}", name)
    return float(value)


def check_prompt(name: str, value: str | None, limits: Limits, required: bool = True) -> str | None:
    """A stripped, non-empty prompt within the length cap."""
    if value is None:
        if required:
            raise bad_request(f"{name} is required", name, "missing_parameter")
        return None
    text = value.strip()
    if not text:
        raise bad_request(f"{name} must not be empty", name)
    if len(text) > limits.max_prompt_chars:
        raise bad_request(f"{name} has {len(text)} characters; at most {limits.max_prompt_chars} are allowed", name,
                          "prompt_too_long")
    return text


def parse_size(value: str | None) -> int:
    """Output side in pixels from OpenAI's ``size`` ("64x64"; "auto" and None mean the native 64)."""
    if value is None or value == "auto":
        return NATIVE_SIZE
    allowed = ", ".join(f"{s}x{s}" for s in SIZES)
    parts = value.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() for p in parts) or parts[0] != parts[1] or int(parts[0]) not in SIZES:
        raise bad_request(f"size={value!r} is not supported; use one of {allowed} or 'auto' (the model draws "
                          f"{NATIVE_SIZE}x{NATIVE_SIZE}; larger sizes are that picture upscaled)", "size")
    return int(parts[0])


def common_params(req: _OpenAIFields, limits: Limits, prompt: str | None, negative: str | None) -> Params:
    """Check the fields shared by generations, edits and variations."""
    if req.stream:
        raise bad_request("stream=true is not supported here; use POST /v1/images/generations/stream for "
                          "server-sent progress events", "stream")
    if req.output_format not in (None, "png"):
        raise bad_request(f"output_format={req.output_format!r} is not supported; only 'png'", "output_format")
    fmt = req.response_format or "b64_json"
    if fmt not in ("b64_json", "url"):
        raise bad_request(f"response_format={fmt!r} must be 'b64_json' or 'url'", "response_format")
    return Params(
        prompt=prompt,
        n=check_int("n", 1 if req.n is None else req.n, 1, limits.max_n),
        side=parse_size(req.size),
        response_format=fmt,
        seed=None if req.seed is None else check_int("seed", req.seed, 0, 2**63 - 1),
        steps=None if req.steps is None else check_int("steps", req.steps, 1, limits.max_steps),
        guidance_scale=None if req.guidance_scale is None
        else check_float("guidance_scale", req.guidance_scale, 0.0, limits.max_guidance),
        negative_prompt=negative,
    )


def generation_params(req: GenerationRequest, limits: Limits, can_expand: bool = False) -> Params:
    """Checked parameters of a generation request; ``expand=true`` is a 501 when the model has no expander."""
    if req.expand and not can_expand:
        raise APIError(501, "expand=true is not available: this model has no prompt expander; "
                       "send expand=false or leave it out", "expand", "not_implemented")
    p = common_params(req, limits, check_prompt("prompt", req.prompt, limits),
                      check_prompt("negative_prompt", req.negative_prompt, limits, required=False))
    p.expand = bool(req.expand)
    return p


def edit_params(req: EditRequest, limits: Limits) -> Params:
    """Checked parameters of an edit request."""
    return common_params(req, limits, check_prompt("prompt", req.prompt, limits),
                         check_prompt("negative_prompt", req.negative_prompt, limits, required=False))


def variation_params(req: VariationRequest, limits: Limits) -> Params:
    """Checked parameters of a variation request (``strength`` in (0, 1], default 0.5)."""
    p = common_params(req, limits, check_prompt("prompt", req.prompt, limits, required=False), None)
    if req.strength is not None:
        p.strength = check_float("strength", req.strength, 0.0, 1.0, open_lo=True)
    return p
