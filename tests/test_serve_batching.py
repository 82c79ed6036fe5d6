"""Dynamic batching under concurrency: merged forwards, the bounded queue (429), timeouts and cancellation."""

from __future__ import annotations

import asyncio
import threading

import pytest

pytest.importorskip("fastapi")
import httpx  # noqa: E402

from pixlm.serve import build_app  # noqa: E402
from pixlm.serve.batcher import Batcher, Job, QueueFull  # noqa: E402
from pixlm.testing import tiny_pipeline  # noqa: E402

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class GatedPipeline:
    """The tiny pipeline, but each ``generate`` records its batch and waits for ``gate`` before running."""

    def __init__(self) -> None:
        self.pipe = tiny_pipeline()
        self.gate = threading.Event()
        self.calls: list[list[str]] = []

    def __getattr__(self, name: str):
        return getattr(self.pipe, name)

    def generate(self, prompt, **kwargs):
        self.calls.append(list(prompt))
        if not self.gate.wait(10):
            raise TimeoutError("test gate never opened")
        return self.pipe.generate(prompt, **kwargs)


async def until(cond, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.005)


def client_for(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def test_concurrent_requests_share_one_forward() -> None:
    gated = GatedPipeline()
    app = build_app(gated, max_batch=16, batch_window_ms=1)
    async with client_for(app) as c:
        first = asyncio.ensure_future(c.post("/v1/images/generations", json={"prompt": "first"}))
        await until(lambda: len(gated.calls) == 1)  # running, blocked on the gate
        rest = [asyncio.ensure_future(c.post("/v1/images/generations", json={"prompt": f"p{i}", "n": 2}))
                for i in range(3)]
        await until(lambda: app.state.batcher.depth == 3)
        gated.gate.set()
        responses = await asyncio.gather(first, *rest)
    assert [r.status_code for r in responses] == [200] * 4
    assert [len(r.json()["data"]) for r in responses] == [1, 2, 2, 2]
    # The three queued requests ran as one forward of 6 rows, each request getting its own prompt's rows.
    assert gated.calls == [["first"], ["p0", "p0", "p1", "p1", "p2", "p2"]]
    metrics = app.state.metrics
    assert metrics.value("pixlm_batch_size_requests_count") == 2 and metrics.value("pixlm_batch_size_images_sum") == 7


async def test_different_settings_are_not_merged_but_seeds_are() -> None:
    gated = GatedPipeline()
    app = build_app(gated, batch_window_ms=1)
    async with client_for(app) as c:
        first = asyncio.ensure_future(c.post("/v1/images/generations", json={"prompt": "first"}))
        await until(lambda: len(gated.calls) == 1)
        bodies = [{"prompt": "a", "steps": 4}, {"prompt": "b", "steps": 5}, {"prompt": "c", "steps": 4, "seed": 1},
                  {"prompt": "d", "steps": 4}, {"prompt": "e", "steps": 4, "negative_prompt": "x"}]
        rest = [asyncio.ensure_future(c.post("/v1/images/generations", json=b)) for b in bodies]
        await until(lambda: app.state.batcher.depth == 5)
        gated.gate.set()
        responses = await asyncio.gather(first, *rest)
    assert all(r.status_code == 200 for r in responses)
    assert gated.calls == [["first"], ["a", "c", "d"], ["b"], ["e"]]


async def test_max_batch_caps_rows_per_forward() -> None:
    gated = GatedPipeline()
    app = build_app(gated, max_batch=4, batch_window_ms=1)
    async with client_for(app) as c:
        first = asyncio.ensure_future(c.post("/v1/images/generations", json={"prompt": "first"}))
        await until(lambda: len(gated.calls) == 1)
        rest = [asyncio.ensure_future(c.post("/v1/images/generations", json={"prompt": f"p{i}", "n": 3}))
                for i in range(3)]
        await until(lambda: app.state.batcher.depth == 3)
        gated.gate.set()
        await asyncio.gather(first, *rest)
    assert [len(c) for c in gated.calls] == [1, 3, 3, 3]


async def test_full_queue_is_429_with_retry_after() -> None:
    gated = GatedPipeline()
    app = build_app(gated, max_queue=2, batch_window_ms=1)
    async with client_for(app) as c:
        first = asyncio.ensure_future(c.post("/v1/images/generations", json={"prompt": "first"}))
        await until(lambda: len(gated.calls) == 1)
        queued = [asyncio.ensure_future(c.post("/v1/images/generations", json={"prompt": "q", "steps": s}))
                  for s in (2, 3)]
        await until(lambda: app.state.batcher.depth == 2)
        r = await c.post("/v1/images/generations", json={"prompt": "one too many"})
        assert r.status_code == 429, r.text
        assert int(r.headers["retry-after"]) >= 1
        assert r.json()["error"]["code"] == "queue_full" and "queue is full" in r.json()["error"]["message"]
        gated.gate.set()
        assert all(x.status_code == 200 for x in await asyncio.gather(first, *queued))
        metrics = app.state.metrics
    assert metrics.value("pixlm_queue_rejections_total") == 1
    assert metrics.value("pixlm_requests_total", endpoint="/v1/images/generations", status="429") == 1


async def test_timeout_is_504_and_drops_queued_work() -> None:
    gated = GatedPipeline()
    app = build_app(gated, request_timeout_s=0.3, batch_window_ms=1)
    async with client_for(app) as c:
        first = asyncio.ensure_future(c.post("/v1/images/generations", json={"prompt": "stuck"}))
        await until(lambda: len(gated.calls) == 1)
        second = await c.post("/v1/images/generations", json={"prompt": "waits", "seed": 3})
        assert second.status_code == 504 and "request_timeout_s=0.3" in second.json()["error"]["message"]
        assert app.state.batcher.depth == 0  # the timed-out request left the queue
        r = await first
        assert r.status_code == 504
        gated.gate.set()
        await until(lambda: not app.state.batcher.running)
        ok = await c.post("/v1/images/generations", json={"prompt": "after"})
        assert ok.status_code == 200
    assert [c[0] for c in gated.calls] == ["stuck", "after"]  # "waits" never ran
    assert app.state.metrics.value("pixlm_jobs_cancelled_total", reason="timeout") == 2


async def test_cancelled_handler_drops_its_queued_job() -> None:
    gated = GatedPipeline()
    app = build_app(gated, batch_window_ms=1)
    async with client_for(app) as c:
        first = asyncio.ensure_future(c.post("/v1/images/generations", json={"prompt": "first"}))
        await until(lambda: len(gated.calls) == 1)
        gone = asyncio.ensure_future(c.post("/v1/images/generations", json={"prompt": "gone", "seed": 1}))
        await until(lambda: app.state.batcher.depth == 1)
        gone.cancel()  # the client task is cancelled: the handler is cancelled with it
        await until(lambda: app.state.batcher.depth == 0)
        gated.gate.set()
        assert (await first).status_code == 200
    assert gated.calls == [["first"]]
    assert app.state.metrics.value("pixlm_jobs_cancelled_total", reason="disconnect") == 1


async def test_batcher_window_collects_companions() -> None:
    batches: list[list[int]] = []

    def runner(jobs: list[Job]) -> list[int]:
        batches.append([j.payload for j in jobs])
        return [j.payload * 10 for j in jobs]

    b = Batcher(runner, max_batch=8, window_s=0.05, max_queue=3)
    jobs = [b.submit(Job(i, rows=1, key="k")) for i in range(3)]
    with pytest.raises(QueueFull) as info:
        b.submit(Job(9, rows=1, key="k"))
    assert info.value.retry_after_s >= 1
    assert await asyncio.gather(*(j.future for j in jobs)) == [0, 10, 20]
    assert batches == [[0, 1, 2]]
    await b.stop()


async def test_runner_errors_reach_every_request_in_the_batch() -> None:
    def runner(jobs: list[Job]) -> list[int]:
        raise FloatingPointError("boom")

    b = Batcher(runner, window_s=0.01)
    jobs = [b.submit(Job(i, rows=1, key="k")) for i in range(2)]
    for j in jobs:
        with pytest.raises(FloatingPointError):
            await j.future
    await b.stop()


async def test_a_seeded_request_gives_the_same_pictures_alone_or_batched() -> None:
    gated = GatedPipeline()
    gated.gate.set()
    app = build_app(gated, batch_window_ms=1)
    seeded = {"prompt": "two blue squares", "n": 2, "seed": 11, "steps": 3}
    async with client_for(app) as c:
        alone = await c.post("/v1/images/generations", json=seeded)
        assert alone.status_code == 200, alone.text
        gated.gate.clear()
        first = asyncio.ensure_future(c.post("/v1/images/generations", json={"prompt": "first"}))
        await until(lambda: len(gated.calls) == 2)
        bodies = [{"prompt": "a red circle", "steps": 3}, seeded, {"prompt": "a green circle", "steps": 3, "seed": 4}]
        rest = [asyncio.ensure_future(c.post("/v1/images/generations", json=b)) for b in bodies]
        await until(lambda: app.state.batcher.depth == 3)
        gated.gate.set()
        responses = await asyncio.gather(first, *rest)
    assert all(r.status_code == 200 for r in responses)
    # The seeded request rode in one forward with an unseeded and another seeded one, and drew the same pictures.
    assert gated.calls[2] == ["a red circle", "two blue squares", "two blue squares", "a green circle"]
    assert [d["b64_json"] for d in responses[2].json()["data"]] == [d["b64_json"] for d in alone.json()["data"]]
