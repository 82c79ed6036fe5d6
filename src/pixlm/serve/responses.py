"""The images response every image endpoint returns, and the base of its ``url`` items."""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

from PIL import Image
from starlette.requests import Request

from pixlm.serve.images import png_bytes
from pixlm.serve.schemas import Params


def base_url(request: Request) -> str:
    """``--public-url`` when set, else the address the server is bound to; never the request's Host header."""
    public = request.app.state.settings.public_url
    if public:
        return public
    server = request.scope.get("server")
    if not server:  # a Unix socket: no address to name, so URLs are relative
        return ""
    host, port = server[0], server[1]
    host = f"[{host}]" if ":" in host else host
    scheme = "https" if request.scope.get("scheme") == "https" else "http"
    return f"{scheme}://{host}" + ("" if port in (None, 80 if scheme == "http" else 443) else f":{port}")


async def images_response(request: Request, images: list[Image.Image], prompts: list[str], params: Params,
                          endpoint: str) -> dict[str, Any]:
    """OpenAI's images body: ``{"created", "data": [{"b64_json" | "url", "revised_prompt"?}], ...}``."""
    state = request.app.state
    pngs = await asyncio.to_thread(lambda: [png_bytes(im, params.side) for im in images])
    data = []
    for png, revised in zip(pngs, prompts):
        if params.response_format == "url":
            image_id = await asyncio.to_thread(state.store.put, png)
            item: dict[str, Any] = {"url": f"{base_url(request)}/v1/images/files/{image_id}.png"}
        else:
            item = {"b64_json": base64.b64encode(png).decode("ascii")}
        if params.prompt is not None and revised and revised != params.prompt:
            item["revised_prompt"] = revised
        data.append(item)
    state.engine.metrics.images.labels(endpoint).inc(len(data))
    return {"created": int(time.time()), "data": data, "output_format": "png", "size": f"{params.side}x{params.side}"}
