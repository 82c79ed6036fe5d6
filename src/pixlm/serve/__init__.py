"""OpenAI-compatible Images API server with dynamic batching and a browser UI.

``build_app(pipeline)`` makes the FastAPI app; ``run_server(...)`` loads a model and serves it with uvicorn.
FastAPI and uvicorn are imported only when one of these is used (``pip install 'pixlm[serve]'``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI


def build_app(pipeline, **kwargs: Any) -> "FastAPI":
    """The FastAPI app serving ``pipeline``; see :func:`pixlm.serve.app.build_app` for the options."""
    from pixlm.serve.app import build_app as _build

    return _build(pipeline, **kwargs)


def run_server(model: str | os.PathLike | None = None, host: str = "127.0.0.1", port: int = 8000,
               log_level: str = "info", precision: str = "auto", **kwargs: Any) -> None:
    """Load a model folder (None: the bundled model) at ``precision`` (``load_pipeline``'s: the fast path
    ``"auto"`` by default, ``"reference"`` for plain float32) and serve it until interrupted. ``kwargs`` go to
    :func:`build_app`
    (``limits`` may be a dict of :class:`~pixlm.serve.schemas.Limits` fields to change)."""
    try:
        import uvicorn
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ValueError("serving needs the serve extra: pip install 'pixlm[serve]'") from e
    from pathlib import Path

    from PIL import Image

    from pixlm.pipelines.common import BUNDLED
    from pixlm.pipelines.text_to_image import load_pipeline
    from pixlm.serve.http import server_config
    from pixlm.serve.schemas import Limits, check_public_url

    limits = kwargs.get("limits")
    limits = kwargs["limits"] = Limits(**limits) if isinstance(limits, dict) else limits or Limits()
    if kwargs.get("public_url"):
        check_public_url(kwargs["public_url"])  # before the model loads
    # A second line of defence behind the header check in decode_upload: PIL itself refuses anything over 2× this.
    Image.MAX_IMAGE_PIXELS = limits.max_image_pixels
    pipeline = load_pipeline(model, precision=precision)
    name = Path(model).resolve().name if model is not None else BUNDLED
    app = build_app(pipeline, model_name=kwargs.pop("model_name", None) or name, **kwargs)
    uvicorn.Server(server_config(app, host, port, log_level)).run()


@contextlib.contextmanager
def serve_in_thread(app: Any, host: str = "127.0.0.1", port: int = 0, timeout_s: float = 20.0,
                    sock: Any = None) -> Iterator[str]:
    """Run ``app`` as ``pixlm serve`` does (:func:`pixlm.serve.http.server_config`) in a background thread
    (tests, benchmarks); yields its base URL. ``port=0`` picks a free port; ``sock``, an already bound socket,
    replaces host and port. The server stops when the block exits.
    """
    import socket
    import threading
    import time

    import uvicorn

    from pixlm.serve.http import server_config

    if sock is None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    host, port = sock.getsockname()[:2]
    server = uvicorn.Server(server_config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="pixlm-uvicorn")
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout_s)
        sock.close()


__all__ = ["build_app", "run_server", "serve_in_thread"]
