"""The HTTP app: an OpenAI-compatible Images API, health/metrics endpoints and the web UI.

``build_app(pipeline)`` assembles the app from one router per feature (``pixlm.serve.routes``), vLLM-style: the
pipeline is passed in and everything the routes share lives on ``app.state``. Generation requests go through an
:class:`~pixlm.serve.engine.Engine`, whose batcher merges concurrent requests into one forward.
"""

from __future__ import annotations

import os

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from pixlm.serve.engine import Engine
from pixlm.serve.errors import install_handlers
from pixlm.serve.images import ImageStore
from pixlm.serve.middleware import Guard
from pixlm.serve.routes import editing, files, generation, service
from pixlm.serve.schemas import Limits, Settings


def build_app(pipeline, *, max_batch: int = 16, batch_window_ms: float = 5.0, max_queue: int = 64,
              request_timeout_s: float = 60.0, output_dir: str | os.PathLike | None = None,
              url_ttl_s: float = 3600.0, limits: Limits | None = None, model_name: str = "pixlm",
              public_url: str | None = None, ready_ttl_s: float = 30.0) -> FastAPI:
    """The FastAPI app serving ``pipeline`` (a TextToImagePipeline, or anything with its ``generate``,
    ``sampling_settings`` and ``defaults``).

    max_batch: most images in one forward. batch_window_ms: how long the first request of a batch waits for
    companions (only while other generation requests are still being read). max_queue: requests waiting before
    429. request_timeout_s: queue wait + work, else 504. output_dir: where ``response_format=url`` PNGs live (a
    temporary folder when None); they expire after url_ttl_s. limits: upload, body, header and timeout caps
    (:class:`~pixlm.serve.schemas.Limits`; prompt, steps and guidance caps are the pipeline's). public_url: base
    of returned URLs (default: the address the server is bound to, never the request's Host header).
    ready_ttl_s: how long a passing ``/ready`` forward is trusted.
    """
    limits = limits or Limits()
    settings = Settings(model_name=model_name, public_url=public_url, url_ttl_s=url_ttl_s, ready_ttl_s=ready_ttl_s)
    engine = Engine(pipeline, max_batch=max_batch, batch_window_ms=batch_window_ms, max_queue=max_queue,
                    request_timeout_s=request_timeout_s)
    store = ImageStore(output_dir, url_ttl_s)

    async def lifespan(app: FastAPI):
        await engine.batcher.start()
        yield
        await engine.batcher.stop()
        store.close()

    app = FastAPI(title="pixlm", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None, redirect_slashes=False)  # a slash redirect would echo the Host header
    app.state.engine = engine
    app.state.pipeline = pipeline
    app.state.batcher = engine.batcher
    app.state.metrics = engine.metrics
    app.state.store = store
    app.state.limits = limits
    app.state.settings = settings
    app.state.ready_at = None  # when /ready last passed
    install_handlers(app)
    for feature in (service, generation, editing, files):
        app.include_router(feature.router)
    app.mount("/static", StaticFiles(directory=files.static_dir()), name="static")
    # Caps, request metrics and the last-resort 500, outside the routes and their handlers to see every status.
    app.add_middleware(Guard, metrics=engine.metrics, limits=limits)
    return app
