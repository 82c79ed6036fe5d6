"""The HTTP app: an OpenAI-compatible Images API, health/metrics endpoints and the web UI.

``build_app(pipeline)`` returns a FastAPI app with the pipeline passed in (vLLM/TGI style). Generation requests
go through a :class:`~pixlm.serve.batcher.Batcher`, which merges concurrent requests into one forward.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from PIL import Image
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from pixlm.pipelines.editing import edit_image, repaint_grid, vary_image
from pixlm.serve.batcher import Batcher, Job, QueueFull
from pixlm.serve.errors import APIError, bad_request, error_body
from pixlm.serve.images import ImageStore, decode_upload, not_found, png_bytes
from pixlm.serve.metrics import BATCH_BUCKETS, LATENCY_BUCKETS, Counter, Gauge, Histogram, Registry
from pixlm.serve.schemas import (
    EditRequest,
    GenerationRequest,
    Limits,
    Params,
    VariationRequest,
    edit_params,
    generation_params,
    validate_model,
    variation_params,
)

ENDPOINTS = ("/", "/health", "/ready", "/metrics", "/v1/models", "/v1/images/generations",
             "/v1/images/generations/stream", "/v1/images/edits", "/v1/images/variations", "/v1/captions")
UI_CSP = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
          "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")


class ClientDisconnected(Exception):
    """The client went away before its result was ready."""


class BodyTooLarge(Exception):
    """The request body passed the server's byte cap while it was being read."""


@dataclass
class GenPayload:
    """A text-to-image job: its checked parameters and an optional per-step hook (called in the worker)."""

    params: Params
    on_step: Callable[[int, int, Any], None] | None = None


@dataclass
class CallPayload:
    """Any other job (edit, variation, caption): a function run alone in the worker thread."""

    fn: Callable[[], Any]


def static_dir() -> Path:
    """Folder of the web UI's files."""
    return Path(str(resources.files("pixlm.serve") / "static"))


def _endpoint_label(path: str) -> str:
    if path.startswith("/v1/images/files/"):
        return "/v1/images/files"
    if path.startswith("/static/"):
        return "/static"
    return path if path in ENDPOINTS else "other"


class _Instrument:
    """Pure ASGI middleware: caps request bodies and records requests by status and latency."""

    def __init__(self, app, metrics: "ServerMetrics", max_body: int) -> None:
        self.app, self.metrics, self.max_body = app, metrics, max_body

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [500]

        async def send_wrapper(message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        endpoint = _endpoint_label(scope["path"])
        try:
            length = dict(scope["headers"]).get(b"content-length")
            if length is not None and (not length.isdigit() or int(length) > self.max_body):
                msg = f"the request body has {length.decode(errors='replace')} bytes; at most {self.max_body} " \
                      "are allowed"
                await JSONResponse(error_body(413, msg, code="body_too_large"), 413)(scope, receive, send_wrapper)
                return
            seen = [0]

            async def limited_receive():
                message = await receive()
                if message["type"] == "http.request":
                    seen[0] += len(message.get("body", b""))
                    if seen[0] > self.max_body:
                        raise BodyTooLarge(f"the request body passed {self.max_body} bytes, the most allowed")
                return message

            await self.app(scope, limited_receive, send_wrapper)
        finally:
            self.metrics.requests.inc(endpoint, str(status[0]))
            self.metrics.latency.observe(time.perf_counter() - start, endpoint)


class ServerMetrics:
    """Everything ``/metrics`` reports."""

    def __init__(self, batcher: Batcher) -> None:
        r = self.registry = Registry()
        self.requests = r.add(Counter("pixlm_requests_total", "HTTP requests by endpoint and status.",
                                      ("endpoint", "status")))
        self.latency = r.add(Histogram("pixlm_request_duration_seconds", "HTTP request latency by endpoint.",
                                       LATENCY_BUCKETS, ("endpoint",)))
        r.add(Gauge("pixlm_queue_depth", "Requests waiting for the model.", lambda: batcher.depth))
        r.add(Gauge("pixlm_queue_images", "Images waiting to be made.", lambda: batcher.queued_rows))
        r.add(Gauge("pixlm_running_requests", "Requests in the forward now running.", lambda: len(batcher.running)))
        self.batch_size = r.add(Histogram("pixlm_batch_size_images", "Images per model forward (dynamic batching).",
                                          BATCH_BUCKETS))
        self.batch_requests = r.add(Histogram("pixlm_batch_size_requests", "Requests merged into one forward.",
                                              BATCH_BUCKETS))
        self.batch_seconds = r.add(Histogram("pixlm_batch_duration_seconds", "Time of one model forward.",
                                             LATENCY_BUCKETS))
        self.images = r.add(Counter("pixlm_images_total", "Images returned, by endpoint.", ("endpoint",)))
        self.cancelled = r.add(Counter("pixlm_jobs_cancelled_total", "Jobs dropped before finishing, by reason.",
                                       ("reason",)))
        self.rejected = r.add(Counter("pixlm_queue_rejections_total", "Requests refused with 429 (queue full)."))

    def on_batch(self, jobs: list[Job], seconds: float) -> None:
        """Record one finished forward."""
        self.batch_size.observe(sum(j.rows for j in jobs))
        self.batch_requests.observe(len(jobs))
        self.batch_seconds.observe(seconds)


def build_app(pipeline, *, max_batch: int = 16, batch_window_ms: float = 5.0, max_queue: int = 64,
              request_timeout_s: float = 60.0, output_dir: str | os.PathLike | None = None,
              url_ttl_s: float = 3600.0, limits: Limits | None = None, model_name: str = "pixlm",
              public_url: str | None = None, ready_ttl_s: float = 30.0) -> FastAPI:
    """The FastAPI app serving ``pipeline`` (a TextToImagePipeline, or anything with the same ``generate``).

    max_batch: most images in one forward. batch_window_ms: how long the first request of a batch waits for
    companions (only while other generation requests are still being read). max_queue: requests waiting before 429. request_timeout_s: queue wait + work, else 504.
    output_dir: where ``response_format=url`` PNGs live (a temporary folder when None); they expire after
    url_ttl_s. limits: prompt/n/steps/upload/pixel caps. public_url: base of returned URLs (default: the
    request's own). ready_ttl_s: how long a passing ``/ready`` forward is trusted.
    """
    if request_timeout_s <= 0:
        raise ValueError(f"request_timeout_s={request_timeout_s} must be > 0")
    limits = limits or Limits()
    store = ImageStore(output_dir, url_ttl_s)

    def run_batch(jobs: list[Job]) -> list[Any]:
        """Worker thread: one merged text-to-image forward, or one call job."""
        if isinstance(jobs[0].payload, CallPayload):
            return [jobs[0].payload.fn()]
        rows: list[str] = []
        negatives: list[str] = []
        offsets: list[int] = []
        for job in jobs:
            p = job.payload.params
            offsets.append(len(rows))
            rows += [p.prompt] * p.n
            negatives += [p.negative_prompt or ""] * p.n
        first = jobs[0].payload.params
        extra = {"expand": True} if first.expand else {}  # only pipelines with an expander take the argument
        callback = None
        if any(j.payload.on_step is not None for j in jobs):
            def callback(step: int, total: int, tokens) -> None:
                for job, off in zip(jobs, offsets):
                    if job.payload.on_step is not None and job.state != "cancelled":
                        job.payload.on_step(step, total, tokens[off:off + job.payload.params.n])
        out = pipeline.generate(rows, num_images_per_prompt=1, num_inference_steps=first.steps,
                                guidance_scale=first.guidance_scale,
                                negative_prompt=negatives if first.negative_prompt else None, seed=first.seed,
                                callback=callback, **extra)
        return [(out.images[o:o + j.payload.params.n], out.prompts[o:o + j.payload.params.n])
                for j, o in zip(jobs, offsets)]

    arriving = [0]  # generation requests being read and checked, not yet queued: they may join a batch
    batcher = Batcher(run_batch, max_batch=max_batch, window_s=batch_window_ms / 1000, max_queue=max_queue,
                      arriving=lambda: arriving[0])
    metrics = ServerMetrics(batcher)
    batcher.on_batch = metrics.on_batch
    ready_state: dict[str, Any] = {"ok_at": None}

    async def lifespan(app: FastAPI):
        await batcher.start()
        yield
        await batcher.stop()
        store.close()

    app = FastAPI(title="pixlm", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.pipeline = pipeline
    app.state.batcher = batcher
    app.state.store = store
    app.state.metrics = metrics
    app.state.limits = limits

    # ------------------------------------------------------------------ errors
    @app.exception_handler(APIError)
    async def _api_error(request: Request, e: APIError) -> JSONResponse:
        return JSONResponse(e.body(), e.status, headers=e.headers)

    @app.exception_handler(BodyTooLarge)
    async def _too_large(request: Request, e: BodyTooLarge) -> JSONResponse:
        return JSONResponse(error_body(413, str(e), code="body_too_large"), 413)

    @app.exception_handler(ClientDisconnected)
    async def _gone(request: Request, e: ClientDisconnected) -> Response:
        return Response(status_code=499)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        message = str(e.detail)
        if e.status_code == 404 and message == "Not Found":
            message = f"no such endpoint: {request.method} {request.url.path}"
        elif e.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        return JSONResponse(error_body(e.status_code, message), e.status_code, headers=getattr(e, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, e: RequestValidationError) -> JSONResponse:
        err = e.errors()[0] if e.errors() else {"loc": (), "msg": "invalid request"}
        param = ".".join(str(p) for p in err["loc"][1:]) or None
        return JSONResponse(error_body(400, f"{param}: {err['msg']}", param), 400)

    @app.exception_handler(Exception)
    async def _internal(request: Request, e: Exception) -> JSONResponse:
        return JSONResponse(error_body(500, f"internal error ({type(e).__name__}); see the server log"), 500)

    # ------------------------------------------------------------------ helpers
    def as_api_error(e: BaseException) -> APIError:
        if isinstance(e, APIError):
            return e
        if isinstance(e, FloatingPointError):
            return APIError(500, f"the model produced non-finite values (NaN/Inf), so no image was returned: {e}",
                            code="non_finite_output")
        if isinstance(e, NotImplementedError):
            return APIError(501, str(e), code="not_implemented")
        if isinstance(e, ValueError):
            return APIError(400, str(e), code="invalid_value")
        if isinstance(e, asyncio.CancelledError):
            return APIError(503, "the server is shutting down", code="shutting_down")
        return APIError(500, f"internal error ({type(e).__name__}): {e}", code="internal_error")

    def can_expand() -> bool:
        """Whether the pipeline has a prompt expander (``generate(expand=True)``)."""
        return callable(getattr(pipeline, "get_expander", None)) and (
            getattr(pipeline, "expander", None) is not None or getattr(pipeline, "expander_path", None) is not None)

    def check_editable() -> None:
        kind = getattr(getattr(pipeline, "generator", None), "kind", None)
        if kind != "masked":
            raise APIError(501, f"editing and variations need a masked-token generator; this model's is {kind!r}",
                           code="not_implemented")

    def submit(job: Job) -> Job:
        try:
            return batcher.submit(job)
        except QueueFull as e:
            metrics.rejected.inc()
            raise APIError(429, str(e), code="queue_full", headers={"Retry-After": str(e.retry_after_s)}) from None

    async def wait_disconnect(request: Request) -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                return

    async def run_job(request: Request, job: Job) -> Any:
        """Queue ``job`` and wait for it (see ``wait_job``)."""
        return await wait_job(request, submit(job))

    async def read_generation(request: Request, on_step=None) -> tuple[Params, Job]:
        """Parse, check and queue a generation request, counted in ``arriving`` meanwhile."""
        arriving[0] += 1
        try:
            params = generation_params(validate_model(GenerationRequest, await read_json(request)), limits,
                                       can_expand())
            return params, submit(gen_job(params, on_step))
        finally:
            arriving[0] -= 1

    async def wait_job(request: Request, job: Job) -> Any:
        """Wait for a queued ``job``, cancelling it on client disconnect or timeout."""
        assert job.future is not None
        watcher = asyncio.ensure_future(wait_disconnect(request))
        try:
            done, _ = await asyncio.wait({job.future, watcher}, timeout=request_timeout_s,
                                         return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # some servers cancel the handler when the client goes away
            batcher.cancel(job, "disconnect")
            metrics.cancelled.inc("disconnect")
            raise
        finally:
            watcher.cancel()
        if job.future.done():
            try:
                return job.future.result()
            except BaseException as e:  # noqa: BLE001
                raise as_api_error(e) from None
        if watcher in done:
            batcher.cancel(job, "disconnect")
            metrics.cancelled.inc("disconnect")
            raise ClientDisconnected()
        batcher.cancel(job, "timeout")
        metrics.cancelled.inc("timeout")
        raise APIError(504, f"the request did not finish within request_timeout_s={request_timeout_s:g} s "
                       f"(queue depth now {batcher.depth})", code="timeout")

    def gen_job(params: Params, on_step=None) -> Job:
        d = pipeline.defaults
        steps = d["num_inference_steps"] if params.steps is None else params.steps
        scale = d["guidance_scale"] if params.guidance_scale is None else params.guidance_scale
        params.steps, params.guidance_scale = steps, scale
        # Seeded requests run alone so that the same seed gives the same pictures as `pixlm generate --seed`.
        key = None if params.seed is not None else ("generate", steps, scale, params.negative_prompt is not None,
                                                     params.expand)
        return Job(GenPayload(params, on_step), rows=params.n, key=key)

    async def read_json(request: Request) -> Any:
        if request.headers.get("content-type", "").startswith("multipart/"):
            raise APIError(415, "this endpoint takes a JSON body (Content-Type: application/json), not multipart",
                           code="unsupported_media_type")
        body = await request.body()
        if not body:
            raise bad_request("the request body is empty; send a JSON object such as {\"prompt\": \"...\"}",
                              code="invalid_json")
        try:
            return json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise bad_request(f"malformed JSON body: {e}", code="invalid_json") from None

    async def read_form(request: Request, file_fields: tuple[str, ...]) -> tuple[dict[str, str], dict[str, bytes]]:
        ctype = request.headers.get("content-type", "")
        if not ctype.startswith("multipart/form-data"):
            raise APIError(415, f"this endpoint takes multipart/form-data (as OpenAI's API), got "
                           f"{ctype or 'no Content-Type'!r}", code="unsupported_media_type")
        try:
            form = await request.form(max_files=4, max_fields=64, max_part_size=limits.max_prompt_chars * 4 + 1024)
        except BodyTooLarge:
            raise
        except Exception as e:  # noqa: BLE001 - starlette reports malformed multipart in several ways
            detail = getattr(e, "detail", None) or str(e) or type(e).__name__
            raise bad_request(f"malformed multipart body: {detail}", code="invalid_multipart") from None
        fields: dict[str, str] = {}
        files: dict[str, bytes] = {}
        try:
            for key, value in form.multi_items():
                name = key[:-2] if key.endswith("[]") else key
                if isinstance(value, UploadFile):
                    if name not in file_fields:
                        raise bad_request(f"unexpected file field {key!r}; files accepted here: "
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
                    fields[name] = value
        finally:
            await form.close()
        return fields, files

    async def decode(files: dict[str, bytes], name: str, required: bool = True) -> Image.Image | None:
        if name not in files:
            if required:
                raise bad_request(f"{name} is required (a PNG/JPEG/WebP file in the multipart body)", name,
                                  "missing_parameter")
            return None
        return await asyncio.to_thread(decode_upload, files[name], name, limits.max_image_pixels)

    async def images_response(request: Request, images: list[Image.Image], prompts: list[str], params: Params,
                              endpoint: str) -> dict:
        pngs = await asyncio.to_thread(lambda: [png_bytes(im, params.side) for im in images])
        base = (public_url or str(request.base_url)).rstrip("/")
        data = []
        for png, revised in zip(pngs, prompts):
            if params.response_format == "url":
                image_id = await asyncio.to_thread(store.put, png)
                item: dict[str, Any] = {"url": f"{base}/v1/images/files/{image_id}.png"}
            else:
                item = {"b64_json": base64.b64encode(png).decode("ascii")}
            if params.prompt is not None and revised and revised != params.prompt:
                item["revised_prompt"] = revised
            data.append(item)
        metrics.images.inc(endpoint, by=len(data))
        return {"created": int(time.time()), "data": data, "output_format": "png",
                "size": f"{params.side}x{params.side}"}

    def sse(event: str, data: dict) -> bytes:
        return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()

    # ------------------------------------------------------------------ service endpoints
    @app.get("/health")
    async def health() -> dict:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/ready")
    async def ready() -> JSONResponse:
        """Readiness: the model is loaded and a one-step forward gives finite pixels (cached ready_ttl_s)."""
        ok_at = ready_state["ok_at"]
        if ok_at is not None and time.monotonic() - ok_at < ready_ttl_s:
            return JSONResponse({"status": "ready", "model": model_name})
        loop = asyncio.get_running_loop()
        try:
            fut = loop.run_in_executor(batcher.executor, lambda: pipeline.generate(
                "a red circle", num_inference_steps=1, guidance_scale=1.0, seed=0))
            out = await asyncio.wait_for(fut, timeout=min(30.0, request_timeout_s))
            if not out.images:
                raise RuntimeError("the pipeline returned no image")
        except Exception as e:  # noqa: BLE001 - any failure means not ready
            ready_state["ok_at"] = None
            return JSONResponse({"status": "not ready", "model": model_name,
                                 "reason": f"{type(e).__name__}: {e}"}, 503)
        ready_state["ok_at"] = time.monotonic()
        return JSONResponse({"status": "ready", "model": model_name})

    @app.get("/metrics")
    async def metrics_endpoint() -> PlainTextResponse:
        """Prometheus text format."""
        return PlainTextResponse(metrics.registry.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def models() -> dict:
        """The one model this server runs (OpenAI's list shape)."""
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": 0, "owned_by": "pixlm"}]}

    @app.get("/v1/models/{model_id}")
    async def model_info(model_id: str) -> dict:
        """One model by id."""
        if model_id != model_name:
            raise not_found(f"model {model_id!r} does not exist; this server runs {model_name!r}")
        return {"id": model_name, "object": "model", "created": 0, "owned_by": "pixlm"}

    # ------------------------------------------------------------------ images
    @app.post("/v1/images/generations")
    async def generations(request: Request) -> dict:
        """Text → images (OpenAI's create-image)."""
        params, job = await read_generation(request)
        images, prompts = await wait_job(request, job)
        return await images_response(request, images, prompts, params, "/v1/images/generations")

    @app.post("/v1/images/generations/stream")
    async def generations_stream(request: Request) -> StreamingResponse:
        """Like /v1/images/generations but as server-sent events: ``queued``, ``progress`` (per-step preview
        PNGs as base64), then ``result`` (the usual response body) or ``error`` (the usual error body)."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()

        def on_step(step: int, total: int, tokens) -> None:  # worker thread
            previews = [base64.b64encode(png_bytes(im)).decode("ascii") for im in pipeline.decode_preview(tokens)]
            loop.call_soon_threadsafe(events.put_nowait, {"step": step + 1, "total": total, "previews": previews})

        params, job = await read_generation(request, on_step)
        assert job.future is not None

        async def stream():
            deadline = time.monotonic() + request_timeout_s
            try:
                yield sse("queued", {"queue_depth": batcher.depth, "steps": params.steps, "n": params.n})
                while not job.future.done():
                    getter = asyncio.ensure_future(events.get())
                    done, _ = await asyncio.wait({getter, job.future}, timeout=max(0.0, deadline - time.monotonic()),
                                                 return_when=asyncio.FIRST_COMPLETED)
                    if getter in done:
                        yield sse("progress", getter.result())
                        continue
                    getter.cancel()
                    if not done:
                        batcher.cancel(job, "timeout")
                        metrics.cancelled.inc("timeout")
                        err = APIError(504, f"the request did not finish within request_timeout_s="
                                       f"{request_timeout_s:g} s", code="timeout")
                        yield sse("error", err.body())
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
                    batcher.cancel(job, "disconnect")
                    metrics.cancelled.inc("disconnect")

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.post("/v1/images/edits")
    async def edits(request: Request) -> dict:
        """Inpainting (OpenAI's create-image-edit): transparent pixels of ``mask`` (or of ``image``) are redrawn."""
        check_editable()
        fields, files = await read_form(request, ("image", "mask"))
        params = edit_params(validate_model(EditRequest, fields, strict=False), limits)
        image = await decode(files, "image")
        mask = await decode(files, "mask", required=False)
        try:  # check the mask now, so a bad one is a 400 before queueing
            await asyncio.to_thread(repaint_grid, image, mask, pipeline.generator.config.grid, True)
        except ValueError as e:
            raise bad_request(str(e), "mask" if mask is not None else "image", "invalid_mask") from None
        job = Job(CallPayload(lambda: edit_image(
            pipeline, image, params.prompt, mask, params.n, params.steps, params.guidance_scale,
            params.negative_prompt, params.seed)), rows=params.n)
        out = await run_job(request, job)
        return await images_response(request, out.images, out.prompts, params, "/v1/images/edits")

    @app.post("/v1/images/variations")
    async def variations(request: Request) -> dict:
        """Variations of an uploaded picture (OpenAI's create-image-variation); extras: strength, prompt, seed."""
        check_editable()
        fields, files = await read_form(request, ("image",))
        params = variation_params(validate_model(VariationRequest, fields, strict=False), limits)
        image = await decode(files, "image")
        job = Job(CallPayload(lambda: vary_image(
            pipeline, image, params.n, params.strength, params.prompt, params.steps, params.guidance_scale,
            params.seed)), rows=params.n)
        out = await run_job(request, job)
        return await images_response(request, out.images, out.prompts, params, "/v1/images/variations")

    @app.post("/v1/captions")
    async def captions(request: Request) -> dict:
        """Image → text when the pipeline has a captioner (``pipeline.caption(image)`` → str or [str])."""
        caption = getattr(pipeline, "caption", None)
        has = getattr(pipeline, "has_captioner", None)
        if not callable(caption) or (callable(has) and not has()):
            raise APIError(501, "captioning is not available: this model has no captioner", code="not_implemented")
        fields, files = await read_form(request, ("image",))
        unknown = sorted(set(fields) - {"model", "user"})
        if unknown:
            raise bad_request(f"unknown parameter {unknown[0]!r}; allowed: image, model, user", unknown[0],
                              "unknown_parameter")
        image = await decode(files, "image")
        text = await run_job(request, Job(CallPayload(lambda: caption(image)), rows=1))
        if isinstance(text, (list, tuple)):
            text = text[0]
        return {"text": str(text)}

    @app.get("/v1/images/files/{name}")
    async def image_file(name: str) -> FileResponse:
        """A PNG from a ``response_format=url`` response, until it expires."""
        path = store.path(name)
        if path is None:
            raise not_found(f"image {name!r} does not exist or has expired (images are kept {url_ttl_s:g} s)")
        return FileResponse(path, media_type="image/png", headers={"Cache-Control": "private, max-age=3600",
                                                                   "X-Content-Type-Options": "nosniff"})

    # ------------------------------------------------------------------ web UI
    ui = static_dir()

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(ui / "index.html", media_type="text/html",
                            headers={"Content-Security-Policy": UI_CSP, "X-Content-Type-Options": "nosniff"})

    app.mount("/static", StaticFiles(directory=ui), name="static")
    # Body cap and request metrics, outside the routes and their exception handlers so it sees every status.
    app.add_middleware(_Instrument, metrics=metrics, max_body=limits.max_body_bytes)
    return app
