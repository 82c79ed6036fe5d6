"""Service endpoints: liveness, readiness, Prometheus metrics and the model list."""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from pixlm.serve.errors import shown
from pixlm.serve.images import not_found

router = APIRouter()


@router.get("/health")
async def health() -> dict:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/ready")
async def ready(request: Request) -> JSONResponse:
    """Readiness: the model is loaded and a one-step forward gives finite pixels (cached ``ready_ttl_s``)."""
    state = request.app.state
    engine, name = state.engine, state.settings.model_name
    ok_at = state.ready_at
    if ok_at is not None and time.monotonic() - ok_at < state.settings.ready_ttl_s:
        return JSONResponse({"status": "ready", "model": name})
    loop = asyncio.get_running_loop()
    try:
        fut = loop.run_in_executor(engine.batcher.executor, lambda: engine.pipeline.generate(
            "a red circle", num_inference_steps=1, guidance_scale=1.0, seed=0))
        out = await asyncio.wait_for(fut, timeout=min(30.0, engine.request_timeout_s))
        if not out.images:
            raise RuntimeError("the pipeline returned no image")
    except Exception as e:  # noqa: BLE001 - any failure means not ready
        state.ready_at = None
        return JSONResponse({"status": "not ready", "model": name, "reason": f"{type(e).__name__}: {e}"}, 503)
    state.ready_at = time.monotonic()
    return JSONResponse({"status": "ready", "model": name})


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    """Prometheus text format (OpenMetrics when the scraper asks for it)."""
    body, content_type = request.app.state.engine.metrics.exposition(request.headers.get("accept"))
    return Response(body, media_type=content_type)


def _model(name: str) -> dict:
    return {"id": name, "object": "model", "created": 0, "owned_by": "pixlm"}


@router.get("/v1/models")
async def models(request: Request) -> dict:
    """The one model this server runs (OpenAI's list shape)."""
    return {"object": "list", "data": [_model(request.app.state.settings.model_name)]}


@router.get("/v1/models/{model_id}")
async def model_info(request: Request, model_id: str) -> dict:
    """One model by id."""
    name = request.app.state.settings.model_name
    if model_id != name:
        raise not_found(f"model {shown(model_id)} does not exist; this server runs {name!r}")
    return _model(name)
