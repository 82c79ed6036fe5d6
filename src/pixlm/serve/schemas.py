"""Request schemas and limits: pydantic models for the wire format, checked into plain parameter objects.

JSON bodies are validated strictly (``"n": "3"`` is a type error); multipart forms carry only strings, so
their fields are converted leniently ("3" → 3) and then range-checked by the same code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, ValidationError

from pixlm.pipelines.common import MAX_GUIDANCE, MAX_SEED, MAX_STEPS, check_number, check_prompts
from pixlm.serve.errors import APIError, bad_request, checked, shown

NATIVE_SIZE = 64
RESPONSE_FORMATS = ("b64_json", "url")
# Square output sides a request may ask for; anything but 64 is the 64×64 picture resampled (nearest neighbour).
SIZES = (64, 128, 256, 512, 1024)


@dataclass(frozen=True)
class Limits:
    """Caps that protect the server; every one is reported by name and value when a request exceeds it.

    Prompt length, steps and guidance are the pipeline's own caps (``pixlm.pipelines.common``), not repeated here.
    The HTTP-level caps (header size, count and timeouts, keep-alive) are enforced by ``pixlm serve``'s HTTP
    protocol (:mod:`pixlm.serve.http`); the body caps and the body timeout by the app itself.
    """

    max_n: int = 10  # images per request (OpenAI's cap)
    max_upload_bytes: int = 4 * 2**20  # per uploaded file
    max_image_pixels: int = 2048 * 2048  # width × height of an upload, checked before decoding
    max_json_bytes: int = 64 * 1024  # a JSON body
    max_json_depth: int = 8  # nesting of arrays and objects in a JSON body
    max_number_chars: int = 32  # characters of one number in a JSON body (a 63-bit seed has 19 digits)
    max_header_bytes: int = 16 * 1024  # request line and headers together
    max_headers: int = 64  # header fields in one request
    header_timeout_s: float = 10.0  # from a connection's (or a request's) first byte to the end of its headers
    body_timeout_s: float = 30.0  # from the end of the headers to the end of the body
    keep_alive_s: float = 5.0  # an idle keep-alive connection is closed after this long
    send_timeout_s: float = 30.0  # a client that takes no part of the answer for this long is dropped

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"Limits.{name}={value!r} must be a positive number")

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
    strength: float | None = None
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
            raise bad_request(f"unknown parameter {shown(name)}; allowed: {allowed}", name,
                              "unknown_parameter") from None
        if err["type"] == "missing":
            raise bad_request(f"{name} is required", name, "missing_parameter") from None
        raise bad_request(f"{name}={shown(err.get('input'))}: {err['msg'].lower()}", name, "invalid_type") from None


def check_prompt(name: str, value: str | None, required: bool = True) -> str | None:
    """A stripped, non-empty prompt within the pipeline's length cap."""
    if value is None:
        if required:
            raise bad_request(f"{name} is required", name, "missing_parameter")
        return None
    return checked(name, check_prompts, value, name)[0]


def parse_size(value: str | None) -> int:
    """Output side in pixels from OpenAI's ``size`` ("64x64"; "auto" and None mean the native 64)."""
    if value is None or value == "auto":
        return NATIVE_SIZE
    allowed = ", ".join(f"{s}x{s}" for s in SIZES)
    parts = value.lower().split("x")
    if len(parts) != 2 or not all(p.isascii() and p.isdigit() and len(p) <= 5 for p in parts) or \
            parts[0] != parts[1] or int(parts[0]) not in SIZES:
        raise bad_request(f"size={shown(value)} is not supported; use one of {allowed} or 'auto' (the model draws "
                          f"{NATIVE_SIZE}x{NATIVE_SIZE}; larger sizes are that picture upscaled)", "size")
    return int(parts[0])


def common_params(req: _OpenAIFields, limits: Limits, prompt: str | None, negative: str | None) -> Params:
    """Check the fields shared by generations, edits and variations (ranges: the pipeline's caps)."""
    if req.stream:
        raise bad_request("stream=true is not supported here; use POST /v1/images/generations/stream for "
                          "server-sent progress events", "stream")
    if req.output_format not in (None, "png"):
        raise bad_request(f"output_format={shown(req.output_format)} is not supported; only 'png'", "output_format")
    if req.response_format not in (None, *RESPONSE_FORMATS):
        raise bad_request(f"response_format={shown(req.response_format)} must be 'b64_json' (the default) or 'url'",
                          "response_format")
    n = 1 if req.n is None else req.n
    checked("n", check_number, n, "n", 1, limits.max_n, integer=True)
    if req.seed is not None:  # image i gets seed + i, so the last one must still be a valid seed
        checked("seed", check_number, req.seed, "seed", 0, MAX_SEED - n + 1, integer=True)
    if req.steps is not None:
        checked("steps", check_number, req.steps, "steps", 1, MAX_STEPS, integer=True)
    if req.guidance_scale is not None:
        checked("guidance_scale", check_number, req.guidance_scale, "guidance_scale", 0.0, MAX_GUIDANCE,
                integer=False)
    return Params(prompt=prompt, n=n, side=parse_size(req.size), response_format=req.response_format or "b64_json",
                  seed=req.seed, steps=req.steps, guidance_scale=req.guidance_scale, negative_prompt=negative)


def generation_params(req: GenerationRequest, limits: Limits, can_expand: bool = False) -> Params:
    """Checked parameters of a generation request; ``expand=true`` is a 501 when the model has no expander."""
    if req.expand and not can_expand:
        raise APIError(501, "expand=true is not available: this model has no prompt expander; "
                       "send expand=false or leave it out", "expand", "not_implemented")
    p = common_params(req, limits, check_prompt("prompt", req.prompt),
                      check_prompt("negative_prompt", req.negative_prompt, required=False))
    p.expand = bool(req.expand)
    return p


def edit_params(req: EditRequest, limits: Limits) -> Params:
    """Checked parameters of an edit request."""
    return common_params(req, limits, check_prompt("prompt", req.prompt),
                         check_prompt("negative_prompt", req.negative_prompt, required=False))


def variation_params(req: VariationRequest, limits: Limits) -> Params:
    """Checked parameters of a variation request (``strength``: the pipeline's default when None)."""
    p = common_params(req, limits, check_prompt("prompt", req.prompt, required=False), None)
    if req.strength is not None:  # the range is the pipeline's (pixlm.pipelines.editing.variation)
        checked("strength", check_number, req.strength, "strength", 1e-9, 1.0, integer=False)
        p.strength = req.strength
    return p


@dataclass(frozen=True)
class Settings:
    """How the app presents itself: its model's name, the base of ``url`` responses and how long they live,
    and how long a passing ``/ready`` check is trusted."""

    model_name: str = "pixlm"
    public_url: str | None = None  # None: the address the server is bound to (never the request's Host header)
    url_ttl_s: float = 3600.0
    ready_ttl_s: float = 30.0

    def __post_init__(self) -> None:
        if self.public_url is not None:
            object.__setattr__(self, "public_url", check_public_url(self.public_url))


def check_public_url(url: str) -> str:
    """``http(s)://host[:port][/path]`` without a trailing slash, query or fragment; else a ValueError."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as e:
        raise ValueError(f"public_url={url!r} is not a URL: {e}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment or \
            parts.username or parts.password or any(c.isspace() for c in url):
        raise ValueError(f"public_url={url!r} must look like http(s)://host[:port][/path], with no query, fragment "
                         "or credentials")
    return url.rstrip("/")
