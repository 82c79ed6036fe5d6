"""Reading request bodies with bounds: JSON (type, size, depth, number length, valid text), multipart forms
(type, field count and size, valid text) and uploaded pictures. Every refusal is an :class:`APIError` that
names the field; nothing a client sends reaches the pipeline unchecked."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any, get_args

from PIL import Image
from pydantic import BaseModel
from starlette.datastructures import UploadFile
from starlette.requests import ClientDisconnect, Request

from pixlm.serve.errors import CLOSE, APIError, bad_request, shown
from pixlm.serve.images import decode_upload
from pixlm.serve.schemas import Limits, validate_model

_SURROGATE = re.compile("[\ud800-\udfff]")
MAX_FORM_FIELDS = 64
MAX_FORM_FILES = 4
FORM_PART_BYTES = 16 * 1024  # one text field of a form (a prompt at the pipeline's cap is 4 kB of UTF-8 at most)


class _LongNumber:
    """A JSON number literal over the length cap, kept as text so that the check can name its field."""

    def __init__(self, text: str) -> None:
        self.text = text


def media_type(request: Request) -> str:
    """The request's Content-Type without parameters, lower case ('' when absent)."""
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def check_text(name: str, value: str) -> str:
    """``value`` unless it holds an unpaired UTF-16 surrogate (JSON's ``"\\ud800"``), which no text encoder takes."""
    bad = _SURROGATE.search(value)
    if bad:
        raise bad_request(f"{name} holds an unpaired surrogate U+{ord(bad.group()):04X} at character {bad.start()}; "
                          "send valid Unicode text", name, "invalid_text")
    return value


def _check_tree(data: Any, limits: Limits) -> None:
    """Walk parsed JSON (iteratively): bounded depth, valid text in keys and strings, numbers within the cap."""
    stack: list[tuple[str, Any, int]] = [("", data, 0)]
    while stack:
        path, value, depth = stack.pop()
        name = path or "body"
        if isinstance(value, _LongNumber):
            raise bad_request(f"{name} is a number of {len(value.text)} characters; at most {limits.max_number_chars} "
                              "are allowed", name, "number_too_long")
        if isinstance(value, str):
            check_text(name, value)
        elif isinstance(value, (dict, list)):
            if depth >= limits.max_json_depth:
                raise bad_request(f"{name} is nested more than {limits.max_json_depth} levels deep", name,
                                  "too_deep")
            if isinstance(value, dict):
                for key, item in value.items():
                    check_text(f"{path}.{key}" if path else key, key)
                    stack.append((f"{path}.{key}" if path else key, item, depth + 1))
            else:
                stack.extend((f"{path}[{i}]", item, depth + 1) for i, item in enumerate(value))


async def read_json(request: Request, limits: Limits) -> Any:
    """The JSON body of an ``application/json`` request, parsed within ``limits``."""
    ctype = media_type(request)
    if ctype != "application/json":
        raise APIError(415, f"this endpoint takes a JSON body (Content-Type: application/json), got "
                       f"{shown(ctype) if ctype else 'no Content-Type'}", code="unsupported_media_type")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limits.max_json_bytes:
            raise APIError(413, f"the JSON body passed max_json_bytes={limits.max_json_bytes}", code="body_too_large",
                           headers=CLOSE)
    if not body.strip():
        raise bad_request("the request body is empty; send a JSON object such as {\"prompt\": \"...\"}",
                          code="invalid_json")
    cap = limits.max_number_chars

    def number(kind):
        return lambda text: kind(text) if len(text) <= cap else _LongNumber(text)

    try:
        data = json.loads(body.decode("utf-8"), parse_int=number(int), parse_float=number(float))
    except UnicodeDecodeError as e:
        raise bad_request(f"the JSON body is not UTF-8: {e}", code="invalid_json") from None
    except json.JSONDecodeError as e:
        raise bad_request(f"malformed JSON body: {e}", code="invalid_json") from None
    except RecursionError:
        raise bad_request(f"the JSON body is nested more than {limits.max_json_depth} levels deep",
                          code="too_deep") from None
    _check_tree(data, limits)
    return data


async def read_form(request: Request, file_fields: tuple[str, ...],
                    limits: Limits) -> tuple[dict[str, str], dict[str, bytes]]:
    """Text fields and file bytes of a ``multipart/form-data`` request (OpenAI's upload endpoints)."""
    ctype = request.headers.get("content-type", "")
    if media_type(request) != "multipart/form-data":
        raise APIError(415, f"this endpoint takes multipart/form-data (as OpenAI's API), got "
                       f"{shown(ctype) if ctype else 'no Content-Type'}", code="unsupported_media_type")
    charset = re.search(r";\s*charset=\"?([^\";]*)", ctype, re.I)
    if charset and charset.group(1).strip().lower() not in ("utf-8", "utf8"):
        raise APIError(415, f"multipart fields must be UTF-8, got charset={shown(charset.group(1))}",
                       code="unsupported_media_type")
    try:
        form = await request.form(max_files=MAX_FORM_FILES, max_fields=MAX_FORM_FIELDS, max_part_size=FORM_PART_BYTES)
    except (APIError, ClientDisconnect):  # a body over the cap or too slow, or the client gone
        raise
    except Exception as e:  # noqa: BLE001 - starlette reports malformed multipart in several ways
        detail = getattr(e, "detail", None) or str(e) or type(e).__name__
        raise bad_request(f"malformed multipart body: {detail}", code="invalid_multipart") from None
    fields: dict[str, str] = {}
    files: dict[str, bytes] = {}
    try:
        for key, value in form.multi_items():
            check_text("field name", key)
            name = key[:-2] if key.endswith("[]") else key
            if isinstance(value, UploadFile):
                if name not in file_fields:
                    raise bad_request(f"unexpected file field {shown(key)}; files accepted here: "
                                      f"{', '.join(file_fields)}", key)
                if name in files:
                    raise bad_request(f"only one {name!r} file is accepted per request", name)
                data = await value.read(limits.max_upload_bytes + 1)
                if len(data) > limits.max_upload_bytes:
                    raise APIError(413, f"{name} is larger than max_upload_bytes={limits.max_upload_bytes}", name,
                                   "upload_too_large")
                files[name] = data
            else:
                if name in file_fields:
                    raise bad_request(f"{name} must be a file upload, not a text field", name)
                if name in fields:
                    raise bad_request(f"{name} was given more than once", name)
                fields[name] = check_text(name, value)
    finally:
        await form.close()
    return fields, files


def form_model(cls: type[BaseModel], fields: dict[str, str], limits: Limits) -> BaseModel:
    """A request model from form fields (strings, converted leniently); a numeric field holds a short number."""
    for name, value in fields.items():
        field = cls.model_fields.get(name)
        numeric = field is not None and {int, float} & {field.annotation, *get_args(field.annotation)}
        if numeric and len(value) > limits.max_number_chars:
            raise bad_request(f"{name} is a number of {len(value)} characters; at most {limits.max_number_chars} "
                              "are allowed", name, "number_too_long")
    return validate_model(cls, fields, strict=False)


async def read_image(files: dict[str, bytes], name: str, limits: Limits, required: bool = True) -> Image.Image | None:
    """Decode the uploaded file ``name`` (in a thread: decoding is CPU work), refusing non-images and bombs."""
    if name not in files:
        if required:
            raise bad_request(f"{name} is required (a PNG/JPEG/WebP file in the multipart body)", name,
                              "missing_parameter")
        return None
    return await asyncio.to_thread(decode_upload, files[name], name, limits.max_image_pixels)
