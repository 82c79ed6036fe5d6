"""API errors in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``, and the app's handlers."""

from __future__ import annotations

import asyncio
from typing import Any

# HTTP status → OpenAI-style error type.
ERROR_TYPES = {400: "invalid_request_error", 404: "invalid_request_error", 405: "invalid_request_error",
               408: "invalid_request_error", 413: "invalid_request_error", 415: "invalid_request_error",
               422: "invalid_request_error", 429: "rate_limit_error", 431: "invalid_request_error",
               499: "client_closed_request", 500: "server_error", 501: "not_implemented_error",
               503: "service_unavailable", 504: "timeout_error"}
SHOWN_CHARS = 80  # how much of a client's value an error message quotes
CLOSE = {"Connection": "close"}  # on answers given before the body was read to its end


class APIError(Exception):
    """An error the server reports to the client as JSON with an HTTP status."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The JSON body OpenAI clients expect."""
        return error_body(self.status, self.message, self.param, self.code)


class ClientDisconnected(Exception):
    """The client went away before its result was ready."""


def _text(s: str | None) -> str | None:
    # Client text quoted in a message may hold lone surrogates, which UTF-8 cannot encode: escape them.
    return None if s is None else s.encode("utf-8", "backslashreplace").decode("utf-8")


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """``{"error": {...}}`` for an HTTP status and a message."""
    kind = ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    return {"error": {"message": _text(message), "type": kind, "param": _text(param), "code": code}}


def shown(value: Any) -> str:
    """``repr(value)`` cut to a readable length, for quoting a client's value in a message."""
    text = repr(value)
    return text if len(text) <= SHOWN_CHARS else f"{text[:SHOWN_CHARS]}... ({len(text)} characters)"


def bad_request(message: str, param: str | None = None, code: str = "invalid_value") -> APIError:
    """A 400 naming the offending parameter."""
    return APIError(400, message, param, code)


def checked(param: str, check, *args, **kwargs):
    """Run a pipeline-level check (which raises ValueError) and report a failure as a 400 naming ``param``."""
    try:
        return check(*args, **kwargs)
    except ValueError as e:
        raise bad_request(str(e), param) from None


def as_api_error(e: BaseException) -> APIError:
    """What a failed job tells its client."""
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


def install_handlers(app) -> None:
    """Every error the routes raise, and FastAPI's own, answered in OpenAI's shape."""
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response
    from starlette.exceptions import HTTPException
    from starlette.requests import ClientDisconnect

    @app.exception_handler(APIError)
    async def _api_error(request, e: APIError) -> JSONResponse:
        return JSONResponse(e.body(), e.status, headers=e.headers)

    @app.exception_handler(ClientDisconnected)
    @app.exception_handler(ClientDisconnect)
    async def _gone(request, e: Exception) -> Response:
        return Response(status_code=499)  # nobody reads it; the request metrics count it as a cancellation

    @app.exception_handler(HTTPException)
    async def _http_error(request, e: HTTPException) -> JSONResponse:
        message = str(e.detail)
        if e.status_code == 404 and message == "Not Found":
            message = f"no such endpoint: {request.method} {shown(request.url.path)}"
        elif e.status_code == 405:
            message = f"{request.method} is not allowed on {shown(request.url.path)}"
        return JSONResponse(error_body(e.status_code, message), e.status_code, headers=getattr(e, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request, e: RequestValidationError) -> JSONResponse:
        err = e.errors()[0] if e.errors() else {"loc": (), "msg": "invalid request"}
        param = ".".join(str(p) for p in err["loc"][1:]) or None
        return JSONResponse(error_body(400, f"{param}: {err['msg']}", param), 400)
