"""``pixlm serve``'s HTTP layer: uvicorn's h11 protocol with read timeouts and JSON errors, and its config.

uvicorn bounds the header size (``h11_max_incomplete_event_size``) and idle keep-alive connections, but it waits
forever for a request's headers or body. :class:`GuardedH11Protocol` adds:

- a header timeout: a connection that opens, or a request that starts, must finish its headers within
  ``Limits.header_timeout_s`` (else a 408 and the connection is closed);
- a body timeout as a backstop: a body still arriving ``body_timeout_s`` (plus a second) after its headers is cut
  off, even where the app is not reading it (the app's :class:`~pixlm.serve.middleware.Guard` answers 408 first
  when it is);
- a send timeout: a connection whose unsent answer has not shrunk for ``send_timeout_s`` (a client that stopped
  reading) is dropped, where uvicorn would keep it, and its buffered answer, for ever;
- errors in OpenAI's JSON shape where uvicorn answers in plain text: a malformed request (400) and headers over
  ``max_header_bytes`` (431).
"""

from __future__ import annotations

import asyncio
import http
import json
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from pixlm.serve.errors import error_body
from pixlm.serve.schemas import Limits

BODY_GRACE_S = 1.0  # the app's own body timeout answers first; this one catches bodies nobody reads


def error_response(status: int, message: str, code: str) -> bytes:
    """A whole HTTP/1.1 error response in the API's JSON shape, closing the connection."""
    body = json.dumps(error_body(status, message, code=code)).encode()
    head = (f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n")
    return head.encode("ascii") + body


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with header and body read timeouts and JSON error answers (see the module)."""

    limits: Limits = Limits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------------ asyncio.Protocol
    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer = self.loop.call_later(self.limits.header_timeout_s, self._headers_late)

    def data_received(self, data: bytes) -> None:
        if self._header_timer is None and self.conn.their_state is h11.IDLE:
            # The first bytes of the next request on a kept-alive connection: its headers are now on the clock.
            self._header_timer = self.loop.call_later(self.limits.header_timeout_s, self._headers_late)
        super().data_received(data)

    def handle_events(self) -> None:
        super().handle_events()
        state = self.conn.their_state
        if state is not h11.IDLE:
            self._cancel("_header_timer")
        if state is h11.SEND_BODY:
            if self._body_timer is None:
                self._body_timer = self.loop.call_later(self.limits.body_timeout_s + BODY_GRACE_S, self._body_late)
        else:
            self._cancel("_body_timer")

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel("_header_timer")
        self._cancel("_body_timer")
        super().connection_lost(exc)

    # ------------------------------------------------------------------ clients that do not read
    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.transport.is_closing():  # closing waits for the answer to be taken: bound that wait too
            self._watch_unsent(self.transport.get_write_buffer_size(), self.loop.time())

    def timeout_keep_alive_handler(self) -> None:
        if self.transport.get_write_buffer_size():  # idle only because the client is still taking the answer
            self._watch_unsent(self.transport.get_write_buffer_size(), self.loop.time())
        else:
            super().timeout_keep_alive_handler()

    def _watch_unsent(self, size: int, since: float) -> None:
        """Drop the connection once its unsent answer has not shrunk for ``send_timeout_s`` (a client that
        stopped reading); a client still reading, however slowly, keeps it."""
        left = self.transport.get_write_buffer_size()
        if left == 0:
            if not self.transport.is_closing():
                super().timeout_keep_alive_handler()
            return
        if left < size:
            size, since = left, self.loop.time()
        elif self.loop.time() - since >= self.limits.send_timeout_s:
            self.transport.abort()
            return
        self.timeout_keep_alive_task = self.loop.call_later(min(1.0, self.limits.send_timeout_s), self._watch_unsent,
                                                            size, since)

    # ------------------------------------------------------------------ answers
    def send_400_response(self, msg: str) -> None:
        if len(self.conn.trailing_data[0]) > self.limits.max_header_bytes:
            self._refuse(431, f"the request line and headers are over max_header_bytes={self.limits.max_header_bytes}",
                         "headers_too_large")
        else:
            self._refuse(400, f"malformed HTTP request ({msg.rstrip('.')})", "invalid_http")

    def _headers_late(self) -> None:
        self._header_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            started = bool(self.conn.trailing_data[0])
            self._refuse(408, f"the request headers did not arrive within header_timeout_s="
                         f"{self.limits.header_timeout_s:g} s", "header_timeout", answer=started)

    def _body_late(self) -> None:
        self._body_timer = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        answer = cycle is not None and not cycle.response_started
        if cycle is not None:  # the app, if still running, now reads a disconnect and its answers go nowhere
            cycle.disconnected = True
            cycle.message_event.set()
        self._refuse(408, f"the request body did not arrive within body_timeout_s={self.limits.body_timeout_s:g} s",
                     "body_timeout", answer=answer)

    def _refuse(self, status: int, message: str, code: str, answer: bool = True) -> None:
        if answer:
            self.transport.write(error_response(status, message, code))
        self.transport.close()
        if self.transport.get_write_buffer_size():  # a client that reads nothing must not keep it open
            self._watch_unsent(self.transport.get_write_buffer_size(), self.loop.time())

    def _cancel(self, name: str) -> None:
        timer = getattr(self, name)
        if timer is not None:
            timer.cancel()
            setattr(self, name, None)


def server_config(app, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> uvicorn.Config:
    """The uvicorn config ``pixlm serve`` runs ``app`` with: the guarded protocol and the caps of
    ``app.state.limits``; no proxy headers (URLs come from ``--public-url``), no WebSocket upgrades."""
    limits: Limits = app.state.limits
    protocol = type("PixlmH11Protocol", (GuardedH11Protocol,), {"limits": limits})
    return uvicorn.Config(app, host=host, port=port, log_level=log_level, http=protocol, ws="none", lifespan="on",
                          h11_max_incomplete_event_size=limits.max_header_bytes,
                          timeout_keep_alive=limits.keep_alive_s, proxy_headers=False, server_header=False)
