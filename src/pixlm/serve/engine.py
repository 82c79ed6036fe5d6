"""The pipeline behind the batcher: jobs for each kind of request, the merged text-to-image forward, and waiting
for a result with a timeout and client-disconnect handling. One ``Engine`` per app, on ``app.state.engine``."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Callable

from starlette.requests import Request

from pixlm.serve.batcher import Batcher, Job, QueueFull
from pixlm.serve.errors import APIError, ClientDisconnected, as_api_error
from pixlm.serve.metrics import ServerMetrics
from pixlm.serve.schemas import Params


@dataclass
class GenPayload:
    """A text-to-image job: its checked parameters and an optional per-step hook (called in the worker)."""

    params: Params
    on_step: Callable[[int, int, Any], None] | None = None


@dataclass
class CallPayload:
    """Any other job (edit, variation, caption): a function run alone in the worker thread."""

    fn: Callable[[], Any]


class Engine:
    """Queue, batch and run the pipeline's work; ``arriving`` counts generation requests still being read."""

    def __init__(self, pipeline, *, max_batch: int, batch_window_ms: float, max_queue: int,
                 request_timeout_s: float) -> None:
        if request_timeout_s <= 0:
            raise ValueError(f"request_timeout_s={request_timeout_s} must be > 0")
        self.pipeline = pipeline
        self.request_timeout_s = request_timeout_s
        self.arriving = 0  # generation requests being read and checked, not yet queued: they may join a batch
        self.batcher = Batcher(self.run_batch, max_batch=max_batch, window_s=batch_window_ms / 1000,
                               max_queue=max_queue, arriving=lambda: self.arriving)
        self.metrics = ServerMetrics(lambda: self.batcher.depth, lambda: self.batcher.queued_rows,
                                     lambda: len(self.batcher.running))
        self.batcher.on_batch = self.metrics.on_batch
        self.batcher.on_cancel = lambda reason: self.metrics.cancelled.labels(reason).inc()

    # ------------------------------------------------------------------ what the model can do
    def can_expand(self) -> bool:
        """Whether the pipeline has a prompt expander (``generate(expand=True)``)."""
        pipe = self.pipeline
        return callable(getattr(pipe, "get_expander", None)) and (
            getattr(pipe, "expander", None) is not None or getattr(pipe, "expander_path", None) is not None)

    def check_editable(self) -> None:
        """A 501 unless the generator is a masked-token one (editing and variations need it)."""
        kind = getattr(getattr(self.pipeline, "generator", None), "kind", None)
        if kind != "masked":
            raise APIError(501, f"editing and variations need a masked-token generator; this model's is {kind!r}",
                           code="not_implemented")

    # ------------------------------------------------------------------ jobs
    def generation_job(self, params: Params, on_step=None) -> Job:
        """A text-to-image job. Steps and guidance get the pipeline's defaults here (so that requests leaving them
        out batch with requests naming the same values); jobs with equal settings share a forward, seeded or not."""
        params.steps, params.guidance_scale = self.pipeline.sampling_settings(params.n, params.steps,
                                                                              params.guidance_scale)
        key = ("generate", params.steps, params.guidance_scale, params.negative_prompt is not None, params.expand)
        return Job(GenPayload(params, on_step), rows=params.n, key=key)

    def run_batch(self, jobs: list[Job]) -> list[Any]:
        """Worker thread: one merged text-to-image forward, or one call job.

        Image ``i`` of a request with seed ``s`` is drawn with seed ``s + i`` (the pipeline's convention), so a
        seeded request gives the same pictures alone or merged with others; unseeded requests in a merged batch
        get a random base seed each."""
        if isinstance(jobs[0].payload, CallPayload):
            return [jobs[0].payload.fn()]
        rows: list[str] = []
        negatives: list[str] = []
        seeds: list[int] = []
        offsets: list[int] = []
        for job in jobs:
            p = job.payload.params
            offsets.append(len(rows))
            rows += [p.prompt] * p.n
            negatives += [p.negative_prompt or ""] * p.n
            base = p.seed if p.seed is not None else secrets.randbits(62)
            seeds += [base + i for i in range(p.n)]
        first = jobs[0].payload.params
        seeded = any(j.payload.params.seed is not None for j in jobs)
        extra = {"expand": True} if first.expand else {}  # only pipelines with an expander take the argument
        callback = None
        if any(j.payload.on_step is not None for j in jobs):
            def callback(step: int, total: int, tokens) -> None:
                for job, off in zip(jobs, offsets):
                    if job.payload.on_step is not None and job.state != "cancelled":
                        job.payload.on_step(step, total, tokens[off:off + job.payload.params.n])
        out = self.pipeline.generate(rows, num_images_per_prompt=1, num_inference_steps=first.steps,
                                     guidance_scale=first.guidance_scale,
                                     negative_prompt=negatives if first.negative_prompt else None,
                                     seed=seeds if seeded else None, callback=callback, **extra)
        return [(out.images[o:o + j.payload.params.n], out.prompts[o:o + j.payload.params.n])
                for j, o in zip(jobs, offsets)]

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        """Count a generation request as arriving while its body is read and checked."""
        self.arriving += 1
        try:
            yield
        finally:
            self.arriving -= 1

    def submit(self, job: Job) -> Job:
        """Queue ``job``; a full queue is a 429 with ``Retry-After``."""
        try:
            return self.batcher.submit(job)
        except QueueFull as e:
            self.metrics.rejected.inc()
            raise APIError(429, str(e), code="queue_full", headers={"Retry-After": str(e.retry_after_s)}) from None

    async def run(self, request: Request, job: Job) -> Any:
        """Queue ``job`` and wait for it (see :meth:`wait`)."""
        return await self.wait(request, self.submit(job))

    async def wait(self, request: Request, job: Job) -> Any:
        """Wait for a queued ``job``, cancelling it on client disconnect or timeout."""
        assert job.future is not None
        watcher = asyncio.ensure_future(_disconnected(request))
        try:
            done, _ = await asyncio.wait({job.future, watcher}, timeout=self.request_timeout_s,
                                         return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # some servers cancel the handler when the client goes away
            self.batcher.cancel(job, "disconnect")
            raise
        finally:
            watcher.cancel()
        if job.future.done():
            try:
                return job.future.result()
            except BaseException as e:  # noqa: BLE001
                raise as_api_error(e) from None
        if watcher in done:
            self.batcher.cancel(job, "disconnect")
            raise ClientDisconnected()
        self.batcher.cancel(job, "timeout")
        raise self.timeout_error()

    def timeout_error(self) -> APIError:
        """The 504 of a request that ran past ``request_timeout_s``."""
        return APIError(504, f"the request did not finish within request_timeout_s={self.request_timeout_s:g} s "
                        f"(queue depth now {self.batcher.depth})", code="timeout")


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass
