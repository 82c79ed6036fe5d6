"""Text → images: OpenAI's create-image, and the same as server-sent events with per-step previews."""

from __future__ import annotations

import asyncio
import base64
import json
import time

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from pixlm.serve.batcher import Job
from pixlm.serve.bodies import read_json
from pixlm.serve.errors import as_api_error
from pixlm.serve.images import png_bytes
from pixlm.serve.responses import images_response
from pixlm.serve.schemas import GenerationRequest, Params, generation_params, validate_model

router = APIRouter()


async def read_generation(request: Request, on_step=None) -> tuple[Params, Job]:
    """Parse, check and queue a generation request (counted as arriving meanwhile, so a batch may wait for it)."""
    state = request.app.state
    engine = state.engine
    with engine.reading():
        body = validate_model(GenerationRequest, await read_json(request, state.limits))
        params = generation_params(body, state.limits, engine.can_expand())
        return params, engine.submit(engine.generation_job(params, on_step))


@router.post("/v1/images/generations")
async def generations(request: Request) -> dict:
    """Text → images (OpenAI's create-image)."""
    params, job = await read_generation(request)
    images, prompts = await request.app.state.engine.wait(request, job)
    return await images_response(request, images, prompts, params, "/v1/images/generations")


def sse(event: str, data: dict) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


@router.post("/v1/images/generations/stream")
async def generations_stream(request: Request) -> StreamingResponse:
    """Like /v1/images/generations but as server-sent events: ``queued``, ``progress`` (per-step preview PNGs as
    base64), then ``result`` (the usual response body) or ``error`` (the usual error body)."""
    engine = request.app.state.engine
    loop = asyncio.get_running_loop()
    events: asyncio.Queue = asyncio.Queue()

    def on_step(step: int, total: int, tokens) -> None:  # worker thread
        previews = [base64.b64encode(png_bytes(im)).decode("ascii") for im in engine.pipeline.decode_preview(tokens)]
        loop.call_soon_threadsafe(events.put_nowait, {"step": step + 1, "total": total, "previews": previews})

    params, job = await read_generation(request, on_step)
    assert job.future is not None

    async def stream():
        deadline = time.monotonic() + engine.request_timeout_s
        try:
            yield sse("queued", {"queue_depth": engine.batcher.depth, "steps": params.steps, "n": params.n})
            while not job.future.done():
                getter = asyncio.ensure_future(events.get())
                done, _ = await asyncio.wait({getter, job.future}, timeout=max(0.0, deadline - time.monotonic()),
                                             return_when=asyncio.FIRST_COMPLETED)
                if getter in done:
                    yield sse("progress", getter.result())
                    continue
                getter.cancel()
                if not done:
                    engine.batcher.cancel(job, "timeout")
                    yield sse("error", engine.timeout_error().body())
                    return
            while not events.empty():
                yield sse("progress", events.get_nowait())
            try:
                images, prompts = job.future.result()
                body = await images_response(request, images, prompts, params, "/v1/images/generations/stream")
            except BaseException as e:  # noqa: BLE001
                yield sse("error", as_api_error(e).body())
                return
            yield sse("result", body)
        finally:
            if job.state in ("queued", "running"):
                engine.batcher.cancel(job, "disconnect")

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
