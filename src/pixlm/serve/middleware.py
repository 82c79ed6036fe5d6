"""The app's outermost layer (pure ASGI): request caps that hold under any ASGI server, request metrics, and a
last-resort error answer so that nothing reaches the server as an unhandled exception.

- at most ``max_headers`` header fields and ``max_header_bytes`` of request line and headers (431);
- a body of at most ``max_body_bytes``, declared or streamed (413), read within ``body_timeout_s`` of the
  request's start (408); both close the connection, whose unread rest would otherwise be waited for;
- an answer the client does not take within ``send_timeout_s`` (a client that never reads) drops the
  connection;
- every request counted by endpoint and status (``499``: the client went away), with its latency;
- an exception no handler took becomes a JSON 500 (or, after the response started, a log line), and the
  connection stays usable.
"""

from __future__ import annotations

import asyncio
import logging
import time

from starlette.responses import JSONResponse

from pixlm.serve.errors import CLOSE, APIError, error_body
from pixlm.serve.metrics import ServerMetrics
from pixlm.serve.schemas import Limits

ENDPOINTS = ("/", "/health", "/ready", "/metrics", "/v1/models", "/v1/images/generations",
             "/v1/images/generations/stream", "/v1/images/edits", "/v1/images/variations", "/v1/captions")
log = logging.getLogger("pixlm.serve")


def endpoint_label(path: str) -> str:
    """The ``endpoint`` label of a path: one of a fixed set, so clients cannot grow the metric's series."""
    for prefix, label in (("/v1/images/files/", "/v1/images/files"), ("/v1/models/", "/v1/models"),
                          ("/static/", "/static")):
        if path.startswith(prefix):
            return label
    return path if path in ENDPOINTS else "other"


class SlowReader(Exception):
    """The client took no part of the answer within ``send_timeout_s``."""


class Guard:
    """See the module docstring."""

    def __init__(self, app, metrics: ServerMetrics, limits: Limits) -> None:
        self.app, self.metrics, self.limits = app, metrics, limits

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.monotonic()
        state = {"status": None, "gone": False, "body_done": False, "seen": 0}
        limits = self.limits
        cap = limits.max_body_bytes

        async def send_wrapper(message) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
            try:  # the server waits while the client does not read: a client that never reads is dropped
                await asyncio.wait_for(send(message), limits.send_timeout_s)
            except asyncio.TimeoutError:
                state["gone"] = True
                raise SlowReader() from None

        async def guarded_receive():
            if state["body_done"]:  # the body is in: later reads only wait for a disconnect
                message = await receive()
            else:
                left = start + limits.body_timeout_s - time.monotonic()
                try:
                    message = await asyncio.wait_for(receive(), max(left, 0.0))
                except asyncio.TimeoutError:
                    raise APIError(408, f"the request body did not arrive within body_timeout_s="
                                   f"{limits.body_timeout_s:g} s", code="body_timeout", headers=CLOSE) from None
            if message["type"] == "http.request":
                state["seen"] += len(message.get("body", b""))
                if state["seen"] > cap:
                    raise APIError(413, f"the request body passed {cap} bytes, the most allowed",
                                   code="body_too_large", headers=CLOSE)
                state["body_done"] = not message.get("more_body", False)
            elif message["type"] == "http.disconnect":
                state["gone"] = True
            return message

        try:
            refusal = self._refusal(scope)
            if refusal is not None:
                await JSONResponse(refusal.body(), refusal.status, headers=refusal.headers)(scope, receive,
                                                                                            send_wrapper)
            else:
                await self.app(scope, guarded_receive, send_wrapper)
        except SlowReader:  # returning without finishing the answer makes the server close the connection
            state["status"] = 499
            log.warning("dropped a client that read nothing for send_timeout_s=%g s (%s %s)", limits.send_timeout_s,
                        scope.get("method"), scope.get("path"))
        except Exception as e:  # noqa: BLE001 - the last line of defence: log it, answer in the API's shape
            log.error("unhandled error on %s %s", scope.get("method"), scope.get("path"), exc_info=e)
            if state["status"] is None and not state["gone"]:
                body = error_body(500, f"internal error ({type(e).__name__})", code="internal_error")
                await JSONResponse(body, 500)(scope, receive, send_wrapper)
        finally:
            status = state["status"] or (499 if state["gone"] else 500)
            self.metrics.on_request(endpoint_label(scope["path"]), status, time.monotonic() - start)

    def _refusal(self, scope) -> APIError | None:
        """A request refused on its headers alone: too many of them, or a declared body over the cap."""
        headers, limits = scope["headers"], self.limits
        if len(headers) > limits.max_headers:
            return APIError(431, f"the request has {len(headers)} header fields; at most {limits.max_headers} "
                            "are allowed", code="headers_too_large", headers=CLOSE)
        # The server's parser bounds headers still arriving; a block that came whole is measured here.
        size = len(scope.get("raw_path") or scope["path"]) + len(scope.get("query_string", b"")) + \
            sum(len(k) + len(v) + 4 for k, v in headers)
        if size > limits.max_header_bytes:
            return APIError(431, f"the request line and headers are over max_header_bytes={limits.max_header_bytes}",
                            code="headers_too_large", headers=CLOSE)
        lengths = [v for k, v in headers if k == b"content-length"]
        if lengths:
            length = lengths[0]
            if len(lengths) > 1 or not length.isdigit():
                return APIError(400, "the Content-Length header must be one decimal number", "content-length",
                                "invalid_header", CLOSE)
            cap = self.limits.max_body_bytes
            if len(length) > len(str(cap)) or int(length) > cap:
                return APIError(413, f"the request body has {length[:40].decode()} bytes; at most {cap} are allowed",
                                code="body_too_large", headers=CLOSE)
        return None
