"""A live uvicorn server on loopback: the official ``openai`` client, `pixlm serve --model`, and real disconnects."""

from __future__ import annotations

import base64
import io
import os
import socket
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
openai = pytest.importorskip("openai")
import httpx  # noqa: E402

from pixlm.serve import build_app, serve_in_thread  # noqa: E402
from pixlm.testing import tiny_pipeline  # noqa: E402
from serve_helpers import png  # noqa: E402


def scene() -> tuple[bytes, bytes]:
    im = Image.new("RGBA", (64, 64), (255, 255, 255, 255))
    im.paste((220, 30, 30, 255), (8, 8, 30, 30))
    mask = Image.new("RGBA", (64, 64), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (32, 32, 64, 64))
    return png(im), png(mask)


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    pipe = tiny_pipeline()
    app = build_app(pipe, output_dir=tmp_path_factory.mktemp("urls"), model_name="tiny")
    with serve_in_thread(app) as base:
        yield base, pipe


@pytest.fixture(scope="module")
def client(live):
    return openai.OpenAI(base_url=live[0] + "/v1", api_key="x", max_retries=0, timeout=30)


def b64_image(item) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(item.b64_json)))


def test_openai_generate_b64_and_url(client, live) -> None:
    r = client.images.generate(prompt="a red circle", n=2, size="64x64", response_format="b64_json")
    assert len(r.data) == 2 and all(b64_image(d).size == (64, 64) for d in r.data)
    r = client.images.generate(prompt="a red circle", response_format="url", size="128x128")
    assert r.data[0].url.startswith(live[0] + "/v1/images/files/")
    got = httpx.get(r.data[0].url)
    assert got.status_code == 200 and Image.open(io.BytesIO(got.content)).size == (128, 128)


def test_openai_extras_go_through_extra_body(client, live) -> None:
    extra = {"seed": 5, "steps": 3, "negative_prompt": "a blue square"}
    a = client.images.generate(prompt="a red circle", response_format="b64_json", extra_body=extra)
    ref = live[1].generate("a red circle", num_inference_steps=3, negative_prompt="a blue square", seed=5).images[0]
    assert (np.asarray(b64_image(a.data[0]).convert("RGB")) == np.asarray(ref)).all()


def test_openai_edit_and_variation(client) -> None:
    image, mask = scene()
    r = client.images.edit(image=("image.png", image, "image/png"), mask=("mask.png", mask, "image/png"),
                           prompt="a blue square", n=2, response_format="b64_json")
    assert len(r.data) == 2 and b64_image(r.data[0]).size == (64, 64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the client marks variations as a legacy endpoint
        r = client.images.create_variation(image=("image.png", image, "image/png"), n=3, response_format="b64_json")
    assert len(r.data) == 3


def test_openai_errors_raise_the_right_exceptions(client) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.images.generate(prompt="a red circle", n=11)
    assert "n=11" in str(info.value) and info.value.body["param"] == "n"
    image, _ = scene()
    with pytest.raises(openai.BadRequestError) as info:
        client.images.edit(image=("image.png", image, "image/png"), prompt="a blue square")
    assert "no transparent pixels" in str(info.value)
    assert client.models.list().data[0].id == "tiny"


class GatedPipeline:
    def __init__(self) -> None:
        self.pipe = tiny_pipeline()
        self.gate = threading.Event()
        self.calls: list[list[str]] = []

    def __getattr__(self, name: str):
        return getattr(self.pipe, name)

    def generate(self, prompt, **kwargs):
        self.calls.append(list(prompt))
        self.gate.wait(10)
        return self.pipe.generate(prompt, **kwargs)


def test_client_disconnect_cancels_queued_work() -> None:
    gated = GatedPipeline()
    app = build_app(gated, batch_window_ms=1)
    with serve_in_thread(app) as base:
        host, port = base.removeprefix("http://").split(":")
        first = threading.Thread(target=httpx.post, args=(base + "/v1/images/generations",),
                                 kwargs={"json": {"prompt": "first"}, "timeout": 20})
        first.start()
        deadline = time.monotonic() + 5
        while not gated.calls and time.monotonic() < deadline:
            time.sleep(0.01)
        body = b'{"prompt": "abandoned", "seed": 2}'
        sock = socket.create_connection((host, int(port)))
        sock.sendall(b"POST /v1/images/generations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        batcher = app.state.batcher
        while batcher.depth != 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert batcher.depth == 1
        sock.close()  # the client goes away while its request waits
        while batcher.depth != 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        metrics = app.state.metrics
        assert batcher.depth == 0 and metrics.value("pixlm_jobs_cancelled_total", reason="disconnect") == 1
        gated.gate.set()
        first.join(20)
    assert gated.calls == [["first"]]  # the abandoned request never reached the model
    assert metrics.value("pixlm_requests_total", endpoint="/v1/images/generations", status="499") == 1
    assert metrics.value("pixlm_requests_total", endpoint="/v1/images/generations", status="500") == 0


def test_cli_serve_loads_a_model_folder(tmp_path: Path) -> None:
    model = tiny_pipeline().save_pretrained(tmp_path / "tiny-model")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PIXLM_PUBLIC_URL": "https://img.example.org/pixlm/"}
    proc = subprocess.Popen([sys.executable, "-m", "pixlm.cli", "serve", "--model", str(model), "--port", str(port),
                             "--max-batch", "4", "--header-timeout", "1"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(base + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "pixlm serve did not come up"
            time.sleep(0.1)
        assert httpx.get(base + "/ready").json() == {"status": "ready", "model": "tiny-model"}
        r = httpx.post(base + "/v1/images/generations", json={"prompt": "a red circle", "n": 2}, timeout=20)
        assert r.status_code == 200 and len(r.json()["data"]) == 2
        r = httpx.post(base + "/v1/images/generations", json={"prompt": "a red circle", "response_format": "url"},
                       headers={"host": "evil.example"}, timeout=20)
        url = r.json()["data"][0]["url"]
        assert url.startswith("https://img.example.org/pixlm/v1/images/files/")  # PIXLM_PUBLIC_URL, not Host
        assert httpx.get(base + url.removeprefix("https://img.example.org/pixlm")).status_code == 200
        with socket.create_connection(("127.0.0.1", port)) as sock:  # --header-timeout 1: a silent client is cut
            sock.settimeout(10)
            t0 = time.monotonic()
            sock.sendall(b"GET /health HTTP/1.1\r\n")
            assert sock.recv(4096).startswith(b"HTTP/1.1 408 ") and time.monotonic() - t0 < 5
    finally:
        proc.terminate()
        proc.wait(10)


def test_cli_serve_reports_a_missing_model(tmp_path: Path, runner) -> None:
    from pixlm.cli import app

    result = runner.invoke(app, ["serve", "--model", str(tmp_path / "nope")])
    assert result.exit_code == 1 and "does not exist" in result.output
    result = runner.invoke(app, ["serve", "--model", str(tmp_path / "nope"), "--public-url", "ftp://x"])
    assert result.exit_code == 1 and "public_url='ftp://x'" in result.output  # checked before the model loads
