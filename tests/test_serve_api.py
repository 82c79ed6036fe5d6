"""The Images API through an ASGI test client: responses, validation, caps, errors and service endpoints."""

from __future__ import annotations

import base64
import io
import json
import os
import struct
import time
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("fastapi")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from pixlm.serve import build_app  # noqa: E402
from pixlm.serve.schemas import Limits  # noqa: E402
from pixlm.testing import tiny_pipeline  # noqa: E402
from serve_helpers import assert_error, png  # noqa: E402


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline()


@pytest.fixture(scope="module")
def client(pipe, tmp_path_factory):
    app = build_app(pipe, output_dir=tmp_path_factory.mktemp("urls"), url_ttl_s=60,
                    limits=Limits(max_upload_bytes=200_000, max_image_pixels=512 * 512))
    with TestClient(app) as c:
        yield c


def decode(item: dict) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(item["b64_json"])))


# ------------------------------------------------------------------------------------------ generations
def test_generation_returns_n_pngs_at_native_size(client) -> None:
    r = client.post("/v1/images/generations", json={"prompt": "a red circle", "n": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    assert isinstance(body["created"], int) and abs(body["created"] - time.time()) < 60
    assert len(body["data"]) == 3 and body["size"] == "64x64"
    for item in body["data"]:
        im = decode(item)
        assert im.format == "PNG" and im.size == (64, 64)


def test_seeded_generation_matches_the_pipeline(client, pipe) -> None:
    req = {"prompt": "two blue squares", "n": 2, "seed": 11, "steps": 3, "guidance_scale": 2.0,
           "negative_prompt": "a green circle"}
    a = client.post("/v1/images/generations", json=req).json()["data"]
    b = client.post("/v1/images/generations", json=req).json()["data"]
    assert [x["b64_json"] for x in a] == [x["b64_json"] for x in b]
    ref = pipe.generate("two blue squares", num_images_per_prompt=2, num_inference_steps=3, guidance_scale=2.0,
                        negative_prompt="a green circle", seed=11).images
    for item, im in zip(a, ref):
        assert (np.asarray(decode(item).convert("RGB")) == np.asarray(im)).all()


def test_larger_size_is_the_native_picture_upscaled(client) -> None:
    req = {"prompt": "a red circle", "seed": 1}
    small = decode(client.post("/v1/images/generations", json=req).json()["data"][0]).convert("RGB")
    big = decode(client.post("/v1/images/generations", json={**req, "size": "256x256"}).json()["data"][0])
    assert big.size == (256, 256)
    assert (np.asarray(big.convert("RGB"))[::4, ::4] == np.asarray(small)).all()


def test_url_responses_are_served_by_id_and_expire(client) -> None:
    r = client.post("/v1/images/generations", json={"prompt": "a red circle", "response_format": "url"})
    url = r.json()["data"][0]["url"]
    assert "/v1/images/files/" in url and "b64_json" not in r.json()["data"][0]
    got = client.get(url)
    assert got.status_code == 200 and got.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(got.content)).size == (64, 64)
    # Ids are never paths: traversal and junk are plain 404s.
    for bad in ("..%2F..%2Fetc%2Fpasswd", "0" * 31, "x" * 32 + ".png", "%2e%2e"):
        assert client.get(f"/v1/images/files/{bad}").status_code == 404
    # Age the file past its time to live: it is gone.
    name = url.rsplit("/", 1)[1]
    store = client.app.state.store
    path = store.path(name)
    old = time.time() - 120
    os.utime(path, (old, old))
    assert_error(client.get(url), 404, words="expired")
    assert not path.exists()


@pytest.mark.parametrize("body, param, words", [
    ({"prompt": "x", "n": 0}, "n", "[1, 10]"),
    ({"prompt": "x", "n": 11}, "n", "[1, 10]"),
    ({"prompt": "x", "n": "3"}, "n", "valid integer"),
    ({"prompt": "x", "n": True}, "n", "valid integer"),
    ({"prompt": "x", "steps": 0}, "steps", "[1, 64]"),
    ({"prompt": "x", "steps": 65}, "steps", "[1, 64]"),
    ({"prompt": "x", "guidance_scale": -1}, "guidance_scale", "[0.0, 50.0]"),
    ({"prompt": "x", "seed": -5}, "seed", "seed=-5"),
    ({"prompt": "   "}, "prompt", "empty"),
    ({"prompt": "x" * 1001}, "prompt", "at most 1000"),
    ({"prompt": 7}, "prompt", "valid string"),
    ({}, "prompt", "required"),
    ({"prompt": "x", "size": "100x50"}, "size", "64x64"),
    ({"prompt": "x", "size": "2048x2048"}, "size", "1024x1024"),
    ({"prompt": "x", "response_format": "jpeg"}, "response_format", "b64_json"),
    ({"prompt": "x", "stepz": 3}, "stepz", "unknown parameter"),
    ({"prompt": "x", "stream": True}, "stream", "/v1/images/generations/stream"),
    ({"prompt": "x", "negative_prompt": ""}, "negative_prompt", "empty"),
])
def test_bad_parameters_are_400_naming_the_parameter(client, body, param, words) -> None:
    assert_error(client.post("/v1/images/generations", json=body), 400, param, words)


def test_non_finite_numbers_in_json_are_refused(client) -> None:
    r = client.post("/v1/images/generations", content=b'{"prompt": "x", "guidance_scale": NaN}',
                    headers={"content-type": "application/json"})
    assert_error(r, 400, "guidance_scale", "finite")


def test_malformed_bodies_are_4xx_json(client) -> None:
    assert_error(client.post("/v1/images/generations", content=b'{"prompt": "x"',
                             headers={"content-type": "application/json"}), 400, words="malformed JSON")
    assert_error(client.post("/v1/images/generations", json=["a", "b"]), 400, words="JSON object")
    assert_error(client.post("/v1/images/generations", content=b"", headers={"content-type": "application/json"}),
                 400, words="empty")
    assert_error(client.post("/v1/images/generations", files={"prompt": (None, "x")}), 415, words="JSON")


def test_expand_true_is_501_until_an_expander_exists(client) -> None:
    assert client.post("/v1/images/generations", json={"prompt": "a red circle", "expand": False}).status_code == 200
    assert_error(client.post("/v1/images/generations", json={"prompt": "x", "expand": True}), 501, "expand",
                 "expander")


def test_expand_uses_the_pipeline_expander_when_there_is_one(pipe, monkeypatch) -> None:
    if not hasattr(pipe, "get_expander"):
        pytest.skip("this pipeline has no prompt expansion")

    class Expander:
        def expand_batch(self, prompts: list[str]) -> list[str]:
            return [p + ", on a white canvas" for p in prompts]

    monkeypatch.setattr(pipe, "expander", Expander(), raising=False)
    with TestClient(build_app(pipe)) as c:
        r = c.post("/v1/images/generations", json={"prompt": "a red circle", "expand": True, "n": 2})
        assert r.status_code == 200, r.text
        assert [d["revised_prompt"] for d in r.json()["data"]] == ["a red circle, on a white canvas"] * 2
        plain = c.post("/v1/images/generations", json={"prompt": "a red circle"}).json()["data"][0]
        assert "revised_prompt" not in plain


def test_editing_needs_a_masked_generator(pipe) -> None:
    class OtherFamily:
        defaults = pipe.defaults
        generator = type("G", (), {"kind": "gan"})()

    with TestClient(build_app(OtherFamily())) as c:
        for path in ("/v1/images/edits", "/v1/images/variations"):
            assert_error(c.post(path, data={"prompt": "x"}, files={"image": ("i.png", png(scene()))}), 501,
                         words="'gan'")


def test_openai_fields_are_accepted(client) -> None:
    r = client.post("/v1/images/generations", json={"prompt": "a red circle", "model": "dall-e-2", "quality": "hd",
                                                    "style": "vivid", "user": "u1", "size": "auto"})
    assert r.status_code == 200 and len(r.json()["data"]) == 1


def test_unknown_routes_and_methods_use_the_error_shape(client) -> None:
    assert_error(client.get("/v1/nope"), 404, words="no such endpoint")
    assert_error(client.get("/v1/images/generations"), 405, words="not allowed")


def test_body_over_the_byte_cap_is_413(client) -> None:
    cap = client.app.state.limits.max_body_bytes
    r = client.post("/v1/images/generations", content=b"x" * (cap + 1), headers={"content-type": "application/json"})
    assert_error(r, 413, words="at most")


def test_chunked_body_over_the_cap_is_413(client) -> None:
    cap = client.app.state.limits.max_body_bytes

    def chunks():
        for _ in range(cap // 65536 + 2):
            yield b"x" * 65536

    r = client.post("/v1/images/variations", content=chunks(), headers={"content-type": "multipart/form-data; "
                                                                        "boundary=zz"})
    assert "content-length" not in r.request.headers
    assert_error(r, 413, words="bytes")


# ------------------------------------------------------------------------------------------ streaming
def parse_sse(text: str) -> list[tuple[str, dict]]:
    events = []
    for chunk in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in chunk.splitlines())
        events.append((lines["event"], json.loads(lines["data"])))
    return events


def test_stream_sends_per_step_previews_then_the_result(client) -> None:
    r = client.post("/v1/images/generations/stream", json={"prompt": "a red circle", "n": 2, "steps": 4})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(r.text)
    assert events[0][0] == "queued"
    progress = [d for e, d in events if e == "progress"]
    assert [p["step"] for p in progress] == [1, 2, 3, 4] and all(p["total"] == 4 for p in progress)
    assert all(len(p["previews"]) == 2 for p in progress)
    assert Image.open(io.BytesIO(base64.b64decode(progress[0]["previews"][0]))).size == (64, 64)
    kind, result = events[-1]
    assert kind == "result" and len(result["data"]) == 2


def test_stream_validates_before_streaming(client) -> None:
    assert_error(client.post("/v1/images/generations/stream", json={"prompt": "x", "n": 99}), 400, "n")


# ------------------------------------------------------------------------------------------ edits, variations
def scene() -> Image.Image:
    im = Image.new("RGBA", (128, 128), (255, 255, 255, 255))
    im.paste((220, 30, 30, 255), (16, 16, 60, 60))
    return im


def hole_mask(box=(64, 64, 128, 128), size=(128, 128)) -> Image.Image:
    mask = Image.new("RGBA", size, (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), box)
    return mask


def test_edit_with_mask(client) -> None:
    r = client.post("/v1/images/edits", data={"prompt": "a blue square", "n": "2", "seed": "4"},
                    files={"image": ("i.png", png(scene()), "image/png"), "mask": ("m.png", png(hole_mask()))})
    assert r.status_code == 200, r.text
    assert [decode(d).size for d in r.json()["data"]] == [(64, 64), (64, 64)]


def test_edit_uses_image_alpha_when_no_mask(client) -> None:
    im = scene()
    im.paste((0, 0, 0, 0), (0, 0, 40, 40))
    r = client.post("/v1/images/edits", data={"prompt": "a blue square"}, files={"image[]": ("i.png", png(im))})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("files, data, status, param, words", [
    ({"image": ("i.png", png(scene().convert("RGB")))}, {"prompt": "x"}, 400, "image", "alpha"),
    ({"image": ("i.png", png(scene()))}, {"prompt": "x"}, 400, "image", "no transparent"),
    ({"image": ("i.png", png(scene())), "mask": ("m.png", png(hole_mask(size=(64, 64), box=(0, 0, 8, 8))))},
     {"prompt": "x"}, 400, "mask", "same size"),
    ({"image": ("i.png", png(scene())), "mask": ("m.png", png(scene().convert("L")))}, {"prompt": "x"}, 400, "mask",
     "alpha"),
    ({"image": ("i.txt", b"hello, not a picture")}, {"prompt": "x"}, 400, "image", "not an image"),
    ({"image": ("i.png", png(scene())[:60])}, {"prompt": "x"}, 400, "image", ""),
    ({"mask": ("m.png", png(hole_mask()))}, {"prompt": "x"}, 400, "image", "required"),
    ({"image": ("i.png", png(scene()))}, {}, 400, "prompt", "required"),
    ({"image": ("i.png", png(scene())), "mask": ("m.png", png(hole_mask()))}, {"prompt": "x", "n": "many"}, 400,
     "n", "valid integer"),
    ({"image": ("i.png", png(scene())), "mask": ("m.png", png(hole_mask()))}, {"prompt": "x", "colour": "red"}, 400,
     "colour", "unknown parameter"),
    ({"image": ("i.png", png(scene())), "extra": ("e.png", png(scene()))}, {"prompt": "x"}, 400, "extra",
     "unexpected file"),
])
def test_bad_edit_requests(client, files, data, status, param, words) -> None:
    assert_error(client.post("/v1/images/edits", data=data, files=files), status, param, words)


def test_edit_needs_multipart(client) -> None:
    assert_error(client.post("/v1/images/edits", json={"prompt": "x"}), 415, words="multipart")


def test_malformed_multipart_is_400(client) -> None:
    r = client.post("/v1/images/edits", content=b"--zz\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\nx",
                    headers={"content-type": "multipart/form-data; boundary=zz"})
    assert r.status_code == 400 and r.json()["error"]["code"] in ("invalid_multipart", "missing_parameter")


def test_decompression_bomb_is_refused_before_decoding(client) -> None:
    bomb = Image.new("1", (10_000, 10_000))  # 100 megapixels (300 MB as RGB), a few kB as PNG
    data = png(bomb)
    assert len(data) < 200_000
    err = assert_error(client.post("/v1/images/variations",
                                   files={"image": ("b.png", data)}), 400, "image", "pixels")
    assert err["code"] == "image_too_large"


def header_only_png(width: int, height: int) -> bytes:
    """A PNG that claims width × height but holds no pixel data."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def test_huge_header_is_refused(client) -> None:
    err = assert_error(client.post("/v1/images/variations", files={"image": ("b.png", header_only_png(10**5, 10**5))}),
                       400, "image", "too large")
    assert err["code"] == "image_too_large"
    err = assert_error(client.post("/v1/images/variations", files={"image": ("b.png", header_only_png(600, 600))}),
                       400, "image")
    assert err["code"] == "image_too_large"  # over this app's 512×512 cap, refused before decoding


def test_upload_over_the_file_cap_is_413(client) -> None:
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 300, 3), dtype=np.uint8))
    data = png(noise)
    assert len(data) > 200_000
    assert_error(client.post("/v1/images/variations", files={"image": ("n.png", data)}), 413, "image",
                 "max_upload_bytes")


def test_variations(client) -> None:
    files = {"image": ("i.png", png(scene()))}
    r = client.post("/v1/images/variations", data={"n": "3", "size": "128x128", "strength": "0.3"}, files=files)
    assert r.status_code == 200, r.text
    assert [decode(d).size for d in r.json()["data"]] == [(128, 128)] * 3
    assert_error(client.post("/v1/images/variations", data={"strength": "0"}, files=files), 400, "strength", "1.0]")
    assert_error(client.post("/v1/images/variations", data={"strength": "1.5"}, files=files), 400, "strength")


# ------------------------------------------------------------------------------------------ captions, models
def test_captions_are_501_without_a_captioner(client) -> None:
    r = client.post("/v1/captions", files={"image": ("i.png", png(scene()))})
    assert_error(r, 501, words="no captioner")


def test_captions_use_the_pipeline_captioner_when_there_is_one(pipe) -> None:
    class Captioning:
        defaults = pipe.defaults

        def caption(self, image: Image.Image) -> str:
            return f"a picture {image.size[0]} wide"

    with TestClient(build_app(Captioning())) as c:
        r = c.post("/v1/captions", files={"image": ("i.png", png(scene()))})
        assert r.status_code == 200 and r.json() == {"text": "a picture 128 wide"}
        assert_error(c.post("/v1/captions", files={"picture": ("i.png", png(scene()))}), 400, "picture")


def test_models_health_ready(client) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").json()["status"] == "ready"
    models = client.get("/v1/models").json()
    assert models["object"] == "list" and models["data"][0]["id"] == "pixlm"
    assert client.get("/v1/models/pixlm").status_code == 200
    assert_error(client.get("/v1/models/dall-e-3"), 404, words="dall-e-3")


def test_metrics_report_requests_latency_queue_and_batches(client) -> None:
    client.post("/v1/images/generations", json={"prompt": "a red circle", "n": 2})
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(r.text)}  # the library's own parser

    def sample(family: str, suffix: str = "", **labels: str) -> float:
        found = [s.value for s in families[family].samples if s.name == family + suffix and
                 all(s.labels.get(k) == v for k, v in labels.items())]
        assert found, (family, suffix, labels)
        return found[0]

    assert families["pixlm_requests"].type == "counter"
    assert sample("pixlm_requests", "_total", endpoint="/v1/images/generations", status="200") >= 1
    assert sample("pixlm_requests", "_total", endpoint="/v1/images/generations", status="400") >= 1
    assert families["pixlm_request_duration_seconds"].type == "histogram"
    assert sample("pixlm_request_duration_seconds", "_bucket", endpoint="/v1/images/generations", le="+Inf") >= 2
    assert sample("pixlm_queue_depth") == 0 and families["pixlm_queue_depth"].type == "gauge"
    for name in ("pixlm_queue_images", "pixlm_running_requests"):
        assert sample(name) == 0
    assert sample("pixlm_batch_size_images", "_count") >= 1 and sample("pixlm_batch_size_requests", "_count") >= 1
    assert sample("pixlm_batch_duration_seconds", "_count") >= 1
    assert sample("pixlm_images", "_total", endpoint="/v1/images/generations") >= 2
    assert {"pixlm_jobs_cancelled", "pixlm_queue_rejections"} <= set(families)
    # OpenMetrics for scrapers that ask for it.
    om = client.get("/metrics", headers={"accept": "application/openmetrics-text; version=1.0.0"})
    assert om.headers["content-type"].startswith("application/openmetrics-text") and om.text.endswith("# EOF\n")


def test_each_app_counts_its_own_requests(pipe) -> None:
    with TestClient(build_app(pipe)) as a, TestClient(build_app(pipe)) as b:
        a.get("/health")
        a.get("/health")
        b.get("/health")
        assert a.app.state.metrics.value("pixlm_requests_total", endpoint="/health", status="200") == 2
        assert b.app.state.metrics.value("pixlm_requests_total", endpoint="/health", status="200") == 1


def test_ui_is_served_with_its_assets(client) -> None:
    r = client.get("/")
    assert r.status_code == 200 and "<title>pixlm</title>" in r.text
    assert "default-src 'self'" in r.headers["content-security-policy"]
    assert "http://" not in r.text and "https://" not in r.text  # nothing from a CDN
    for asset in ("/static/app.js", "/static/style.css"):
        got = client.get(asset)
        assert got.status_code == 200 and "https://" not in got.text


# ------------------------------------------------------------------------------------------ non-finite output
def test_nan_output_is_a_500_never_an_image(pipe, monkeypatch) -> None:
    with TestClient(build_app(pipe)) as c:
        monkeypatch.setattr(pipe.vq, "decode", lambda tokens: torch.full((tokens.shape[0], 3, 64, 64), float("nan")))
        for path, kw in [("/v1/images/generations", {"json": {"prompt": "a red circle"}}),
                         ("/v1/images/variations", {"files": {"image": ("i.png", png(scene()))}})]:
            r = c.post(path, **kw)
            err = assert_error(r, 500, words="NaN")
            assert err["code"] == "non_finite_output" and "data" not in r.json()
        events = parse_sse(c.post("/v1/images/generations/stream", json={"prompt": "a red circle"}).text)
        assert events[-1][0] == "error" and events[-1][1]["error"]["code"] == "non_finite_output"
        assert c.get("/ready").status_code == 503
