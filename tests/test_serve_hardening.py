"""Hostile input by class: bounded JSON and form parsing (depth, size, number length, text), media types, the
Host header, and on a live server the HTTP layer: read timeouts, header caps, keep-alive, protocol errors,
disconnects and unhandled errors. Every answer is 4xx in OpenAI's shape or a closed connection, never 5xx or a hang."""

from __future__ import annotations

import json
import random
import socket
import time

import pytest

pytest.importorskip("fastapi")
import httpx  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from pixlm.serve import build_app, serve_in_thread  # noqa: E402
from pixlm.serve.schemas import Limits  # noqa: E402
from pixlm.testing import tiny_pipeline  # noqa: E402
from serve_helpers import assert_error, png  # noqa: E402

GEN = "/v1/images/generations"
JSON = {"content-type": "application/json"}
FAST = {"steps": 1}  # requests that pass every check still run the model: keep them cheap
TIMEOUT_S = 0.75  # header, body and keep-alive timeouts of the live server


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline()


@pytest.fixture(scope="module")
def client(pipe):
    with TestClient(build_app(pipe)) as c:
        yield c


def post_raw(client, body: bytes | str, path: str = GEN, headers=JSON):
    return client.post(path, content=body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body,
                       headers=headers)


# ------------------------------------------------------------------------------------------ JSON bodies
@pytest.mark.parametrize("body, param, words", [
    ("[" * 30_000 + "]" * 30_000, None, "nested"),  # deeper than Python's recursion limit
    ('{"prompt": ' + "[" * 5_000 + "]" * 5_000 + "}", None, "nested"),
    ('{"prompt": "x", "user": {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": 1}}}}}}}}}', "user.a.b.c.d.e.f.g", "8 levels"),
    ('{"prompt": "x", "seed": ' + "9" * 5_000 + "}", "seed", "5000 characters"),
    ('{"prompt": "x", "n": ' + "1" * 40 + "}", "n", "at most 32"),
    ('{"prompt": "x", "guidance_scale": 1.' + "0" * 100 + "1}", "guidance_scale", "characters"),
    ('{"prompt": "x", "steps": 1e' + "9" * 40 + "}", "steps", "characters"),
    ('{"prompt": "x", "whatever": [' + "7" * 50 + "]}", "whatever[0]", "characters"),
    ('{"prompt": "\\ud800"}', "prompt", "surrogate"),
    ('{"prompt": "a red circle", "negative_prompt": "ok \\udfff"}', "negative_prompt", "surrogate"),
    ('{"prompt": "x", "\\ud83d": 1}', "\\ud83d", "surrogate"),
    ('{"prompt": "x", "user": "\\udc80"}', "user", "surrogate"),
    ('{"prompt": "x", "size": ""}', "size", "not supported"),
    ('{"prompt": "x", "response_format": ""}', "response_format", "b64_json"),
    ('{"prompt": "x", "output_format": ""}', "output_format", "png"),
    ('{"prompt": "x", "seed": 9223372036854775807, "n": 2}', "seed", "seed="),  # seed + 1 would overflow
    ('{"prompt": "x", "n": 1.5}', "n", "integer"),
    ('{"prompt": "x"} trailing', None, "malformed"),
    (b'{"prompt": "\xff\xfe"}', None, "UTF-8"),
    ('"just a string"', None, "JSON object"),
])
def test_json_bodies_are_bounded_and_checked(client, body, param, words) -> None:
    assert_error(post_raw(client, body), 400, param, words)


def test_json_body_over_its_cap_is_413(client) -> None:
    cap = client.app.state.limits.max_json_bytes
    body = json.dumps({"prompt": "x", "user": "u" * cap})
    assert_error(post_raw(client, body), 413, words="max_json_bytes")


@pytest.mark.parametrize("ctype", [None, "text/plain", "application/x-www-form-urlencoded", "application/jsonx",
                                   "application/json-patch+json", "multipart/form-data; boundary=zz"])
def test_json_endpoints_take_only_application_json(client, ctype) -> None:
    headers = {} if ctype is None else {"content-type": ctype}
    for path in (GEN, GEN + "/stream"):
        assert_error(client.post(path, content=b'{"prompt": "x"}', headers=headers), 415, words="application/json")


def test_application_json_with_parameters_is_accepted(client) -> None:
    r = client.post(GEN, content=json.dumps({"prompt": "a red circle", **FAST}).encode(),
                    headers={"content-type": "Application/JSON; charset=utf-8"})
    assert r.status_code == 200, r.text


def _random_value(rng: random.Random, depth: int = 0):
    kinds = ["int", "bigint", "float", "str", "surrogate", "control", "bool", "null", "list", "dict", "longstr"]
    kind = rng.choice(kinds if depth < 12 else kinds[:8])
    if kind == "int":
        return rng.randint(-(2**70), 2**70)
    if kind == "bigint":
        return int("9" * rng.randint(20, 4000))
    if kind == "float":
        return rng.choice([rng.uniform(-1e300, 1e300), 1e-320, -0.0, 3.5])
    if kind == "str":
        return rng.choice(["", " ", "a red circle", "64x64", "url", "b64_json", "auto", "png", "0", "-1"])
    if kind == "surrogate":
        return "a" + chr(rng.randint(0xD800, 0xDFFF)) + "b"
    if kind == "control":
        return "".join(chr(rng.randint(0, 31)) for _ in range(5)) + "\u202e\ufeff\U0010ffff"
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "null":
        return None
    if kind == "longstr":
        return "x" * rng.randint(1000, 20_000)
    if kind == "list":
        return [_random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {rng.choice(["prompt", "n", "k", "\ud800"]): _random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))}


def test_random_field_values_never_give_a_5xx(client) -> None:
    """A fuzz by class: every field gets values of every JSON type, size and text oddity."""
    rng = random.Random(0)
    fields = ["prompt", "negative_prompt", "n", "size", "response_format", "seed", "steps", "guidance_scale",
              "expand", "model", "user", "stream", "output_format", "quality", "unknown"]
    statuses = set()
    for _ in range(100):
        body = {"prompt": "a red circle", **FAST}
        for name in rng.sample(fields, rng.randint(1, 3)):
            body[name] = _random_value(rng)
        r = post_raw(client, json.dumps(body, ensure_ascii=rng.random() < 0.5))
        statuses.add(r.status_code)
        assert r.status_code < 500, (body, r.text)
        if r.status_code != 200:
            assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    assert {200, 400} <= statuses


# ------------------------------------------------------------------------------------------ forms
def upload() -> dict:
    from PIL import Image

    return {"image": ("i.png", png(Image.new("RGB", (64, 64), (200, 30, 30))), "image/png")}


@pytest.mark.parametrize("data, param, words", [
    ({"seed": "9" * 5_000}, "seed", "5000 characters"),
    ({"strength": "0." + "5" * 100}, "strength", "characters"),
    ({"n": "１２"}, "n", "integer"),  # full-width digits are not a number here
    ({"response_format": ""}, "response_format", "b64_json"),
    ({"size": "9" * 100 + "x" + "9" * 100}, "size", "not supported"),
])
def test_form_fields_are_bounded_and_checked(client, data, param, words) -> None:
    assert_error(client.post("/v1/images/variations", data=data, files=upload()), 400, param, words)


def test_form_charsets_other_than_utf8_are_refused(client) -> None:
    body = (b"--zz\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\n\\ud800\r\n--zz--\r\n")
    for charset in ("unicode_escape", "utf-7", "latin-1"):
        r = client.post("/v1/images/variations", content=body,
                        headers={"content-type": f"multipart/form-data; boundary=zz; charset={charset}"})
        assert_error(r, 415, words="UTF-8")


# ------------------------------------------------------------------------------------------ Host header
def test_host_header_is_never_echoed(pipe) -> None:
    evil = {"host": "evil.example:666"}
    with TestClient(build_app(pipe)) as c:
        r = c.post(GEN, json={"prompt": "a red circle", "response_format": "url", **FAST}, headers=evil)
        assert r.status_code == 200 and r.json()["data"][0]["url"].startswith("http://testserver/v1/images/files/")
        for method, path in [("GET", "/v1/models/"), ("GET", "/static"), ("GET", "/nope"), ("GET", GEN),
                             ("GET", "/v1/images/files/../x"), ("POST", "/health"), ("GET", "/v1/models/x/")]:
            r = c.request(method, path, headers=evil, follow_redirects=False)
            assert "evil" not in r.text and "evil" not in str(r.headers), (path, r.status_code, r.headers)
    with TestClient(build_app(pipe, public_url="https://images.example.org/pixlm/")) as c:
        r = c.post(GEN, json={"prompt": "a red circle", "response_format": "url", **FAST}, headers=evil)
        assert r.json()["data"][0]["url"].startswith("https://images.example.org/pixlm/v1/images/files/")


@pytest.mark.parametrize("url", ["ftp://x", "http://", "http://x?a=1", "http://u:p@x", "http://x:99999", "x.org"])
def test_bad_public_urls_are_refused(pipe, url) -> None:
    with pytest.raises(ValueError, match="public_url"):
        build_app(pipe, public_url=url)


def test_a_client_that_never_reads_is_dropped(pipe) -> None:
    """The answer's send is never taken up (the client reads nothing): the app gives up after send_timeout_s."""
    import asyncio

    app = build_app(pipe, limits=Limits(send_timeout_s=0.2))
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": "/health", "raw_path": b"/health", "query_string": b"", "headers": [(b"host", b"x")],
             "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 5000), "root_path": ""}
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)
        if message["type"] == "http.response.body":
            await asyncio.Event().wait()  # the socket never drains

    t0 = time.monotonic()
    asyncio.run(asyncio.wait_for(app(scope, receive, send), 10))
    assert time.monotonic() - t0 < 5 and [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert app.state.metrics.value("pixlm_requests_total", endpoint="/health", status="499") == 1


# ------------------------------------------------------------------------------------------ live HTTP layer
@pytest.fixture(scope="module")
def live(pipe):
    limits = Limits(header_timeout_s=TIMEOUT_S, body_timeout_s=TIMEOUT_S, keep_alive_s=TIMEOUT_S,
                    max_header_bytes=4096, max_headers=20)
    app = build_app(pipe, limits=limits)
    with serve_in_thread(app) as base:
        host, port = base.removeprefix("http://").split(":")
        yield base, (host, int(port)), app


def talk(addr, data: bytes, then_wait_s: float = 5.0, drip: list[bytes] | None = None) -> tuple[bytes, float]:
    """Send ``data`` (then each of ``drip`` 0.2 s apart), read until the server closes; (reply, seconds to close)."""
    with socket.create_connection(addr) as sock:
        sock.settimeout(then_wait_s)
        t0 = time.monotonic()
        if data:
            sock.sendall(data)
        for piece in drip or []:
            time.sleep(0.2)
            try:
                sock.sendall(piece)
            except OSError:
                break
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                raise AssertionError(f"the server neither answered nor closed within {then_wait_s} s") from None
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks), time.monotonic() - t0


def json_answer(reply: bytes, status: int) -> dict:
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status} ".encode()), reply[:200]
    assert b"content-type: application/json" in head.lower(), head
    err = json.loads(body)["error"]
    assert set(err) == {"message", "type", "param", "code"}
    return err


def test_stalled_body_is_answered_408_and_closed(live) -> None:
    _, addr, _ = live
    form = b'--zz\r\nContent-Disposition: form-data; name="prompt"\r\n\r\na red'
    for path, ctype, part in [(GEN, "application/json", b'{"prompt": "a red'),  # 17 bytes, then nothing
                              ("/v1/images/variations", "multipart/form-data; boundary=zz", form)]:
        head = (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\nContent-Length: 1000\r\n\r\n")
        reply, seconds = talk(addr, head.encode() + part)
        assert json_answer(reply, 408)["code"] == "body_timeout"
        assert seconds < TIMEOUT_S + 3


def test_a_body_nobody_reads_is_cut_off_too(live) -> None:
    """The app answers without reading the body; a client still dripping it (which keeps the keep-alive timer
    off) is cut off by the protocol's body timeout."""
    _, addr, _ = live
    with socket.create_connection(addr) as sock:
        sock.settimeout(0.2)
        t0 = time.monotonic()
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nabc")
        reply = b""
        while time.monotonic() - t0 < TIMEOUT_S + 5:
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                sock.sendall(b"x")
                continue
            except ConnectionResetError:
                break
            if not chunk:
                break
            reply += chunk
        seconds = time.monotonic() - t0
    assert reply.startswith(b"HTTP/1.1 200 ") and TIMEOUT_S < seconds < TIMEOUT_S + 3


def test_unfinished_headers_are_answered_408_and_closed(live) -> None:
    _, addr, _ = live
    reply, seconds = talk(addr, b"POST /v1/images/generations HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    assert json_answer(reply, 408)["code"] == "header_timeout" and seconds < TIMEOUT_S + 3
    # Dripping a byte at a time does not reset the clock.
    reply, seconds = talk(addr, b"GET /health HTTP/1.1\r\n", drip=[b"X"] * 15)
    assert json_answer(reply, 408)["code"] == "header_timeout" and seconds < TIMEOUT_S + 3.5
    # A connection that says nothing is closed without an answer.
    reply, seconds = talk(addr, b"")
    assert reply == b"" and seconds < TIMEOUT_S + 3


def test_idle_keep_alive_connections_are_closed(live) -> None:
    _, addr, _ = live
    reply, seconds = talk(addr, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 200 ") and reply.endswith(b'{"status":"ok"}')
    assert seconds < TIMEOUT_S + 3


def test_stalled_clients_do_not_hold_the_server(live) -> None:
    base, addr, _ = live
    stalled = [socket.create_connection(addr) for _ in range(4)]
    try:
        for s in stalled:
            s.sendall(b"POST /v1/images/generations HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        assert httpx.get(base + "/health", timeout=5).status_code == 200
    finally:
        for s in stalled:
            s.close()


@pytest.mark.parametrize("request_bytes, status, code", [
    (b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 5000 + b"\r\n\r\n", 431, "headers_too_large"),
    (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 431, "headers_too_large"),
    (b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(25)) + b"\r\n", 431,
     "headers_too_large"),
    (b"GARBAGE\r\n\r\n", 400, "invalid_http"),
    (b"POST /v1/images/generations HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", 400, "invalid_http"),
    (b"POST /v1/images/generations HTTP/1.1\r\nHost: x\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n", None, None),
    (b"POST /v1/images/generations HTTP/1.1\r\nHost: x\r\nContent-Length: " + b"9" * 3000 + b"\r\n\r\n", None, None),
    (b"POST /v1/images/generations HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n", None, None),
    (b"POST /v1/images/generations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
     b"Transfer-Encoding: chunked\r\n\r\nzz\r\n", 400, "invalid_http"),
    (b"GET /health HTTP/1.1\r\n\r\n", 400, "invalid_http"),  # HTTP/1.1 without Host
])
def test_http_layer_errors_are_json(live, request_bytes, status, code) -> None:
    _, addr, _ = live
    reply, _ = talk(addr, request_bytes)
    if status is None:  # an absurd Content-Length: refused one way or another, in the API's shape
        head = reply.split(b"\r\n", 1)[0]
        assert head[9:12] in (b"400", b"413", b"431"), reply[:200]
        json_answer(reply, int(head[9:12]))
        return
    assert json_answer(reply, status)["code"] == code


def test_disconnects_are_499_not_500(live) -> None:
    base, addr, app = live
    metrics = app.state.metrics
    # the live server is shared with the tests above, whose clients may hang up on it too: count from here
    before = metrics.value("pixlm_requests_total", endpoint=GEN, status="499")
    with socket.create_connection(addr) as sock:  # gone while its body is read
        sock.sendall(b"POST /v1/images/generations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{\"prompt\": ")
        time.sleep(0.2)
    deadline = time.monotonic() + 5
    while metrics.value("pixlm_requests_total", endpoint=GEN, status="499") < before + 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert metrics.value("pixlm_requests_total", endpoint=GEN, status="499") == before + 1
    assert metrics.value("pixlm_requests_total", endpoint=GEN, status="500") == 0


def test_unhandled_errors_are_json_500_and_keep_the_connection(live, monkeypatch) -> None:
    _, addr, app = live

    def broken(*args, **kwargs):
        raise KeyError("a bug")

    monkeypatch.setattr(app.state.engine, "generation_job", broken)
    body = b'{"prompt": "a red circle"}'
    first = (b"POST /v1/images/generations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
             b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    with socket.create_connection(addr) as sock:
        sock.settimeout(5)
        sock.sendall(first)
        reply = read_response(sock)
        assert json_answer(reply, 500)["code"] == "internal_error" and b"connection: close" not in reply.lower()
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")  # the same connection still serves
        assert read_response(sock).startswith(b"HTTP/1.1 200 ")


def read_response(sock: socket.socket) -> bytes:
    """One whole response with a Content-Length body from a kept-alive connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.lower().split(b"\r\n")
                      if line.startswith(b"content-length:")))
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def test_a_client_that_stops_reading_is_dropped(pipe) -> None:
    """An answer larger than the socket buffers, to a client that reads nothing: once the unsent rest has not
    shrunk for send_timeout_s the connection is dropped (uvicorn alone would hold it and the answer for ever)."""
    limits = Limits(keep_alive_s=0.3, send_timeout_s=0.5)
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # accepted sockets inherit it
    listener.bind(("127.0.0.1", 0))
    body = json.dumps({"prompt": "a red circle", "n": 10, "size": "1024x1024", "steps": 1}).encode()
    request = (b"POST /v1/images/generations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    with serve_in_thread(build_app(pipe, limits=limits), sock=listener) as base:
        host, port = base.removeprefix("http://").split(":")
        got = {}
        for idle_s in (0.0, 3.0):
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                s.connect((host, int(port)))
                s.sendall(request)
                time.sleep(idle_s)
                s.settimeout(10)
                data = b""
                while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < int(
                        data.lower().split(b"content-length: ")[1].split(b"\r\n")[0]):
                    try:
                        chunk = s.recv(65536)
                    except ConnectionResetError:
                        break
                    if not chunk:
                        break
                    data += chunk
                got[idle_s] = data
    head, _, answer = got[0.0].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and len(json.loads(answer)["data"]) == 10
    assert len(answer) > 100_000 and len(got[3.0]) < len(got[0.0]) // 2  # cut off, most of it never sent
