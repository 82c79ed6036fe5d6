"""Dynamic batching: concurrent jobs with the same settings share one pipeline forward.

Jobs wait in a bounded FIFO. One asyncio task takes the oldest job, waits up to ``window_s`` (from that job's
arrival) for compatible jobs (equal, non-None ``key``) — but only while ``arriving()`` says more requests are
being read, so a lone client pays no window — and hands the group — at most ``max_batch`` image rows,
though a single job larger than that still runs alone — to ``runner`` in a single worker thread. While a batch
runs, new jobs pile up, so under load batches fill without any waiting. A job can be cancelled while queued
(it is dropped) or while running (its result is discarded).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any


class QueueFull(Exception):
    """The queue holds ``max_queue`` jobs; ``retry_after_s`` estimates when there will be room."""

    def __init__(self, depth: int, retry_after_s: int) -> None:
        super().__init__(f"the queue is full ({depth} requests waiting); retry in {retry_after_s} s")
        self.depth = depth
        self.retry_after_s = retry_after_s


@dataclass(eq=False)
class Job:
    """One request's work. ``payload`` is whatever ``runner`` understands; ``rows`` is its image count."""

    payload: Any
    rows: int
    key: Hashable | None = None  # jobs with equal non-None keys may share a forward
    future: asyncio.Future | None = None
    enqueued_at: float = field(default_factory=time.monotonic)
    state: str = "new"  # new → queued → running → done | cancelled


Runner = Callable[[list[Job]], list[Any]]  # runs in the worker thread; one result per job, in order


class Batcher:
    """Merge concurrent jobs into batches and run them one at a time in a worker thread."""

    def __init__(self, runner: Runner, max_batch: int = 16, window_s: float = 0.005, max_queue: int = 64,
                 on_batch: Callable[[list[Job], float], None] | None = None,
                 arriving: Callable[[], int] | None = None,
                 on_cancel: Callable[[str], None] | None = None) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch={max_batch} must be >= 1")
        if max_queue < 1:
            raise ValueError(f"max_queue={max_queue} must be >= 1")
        if not 0 <= window_s <= 10:
            raise ValueError(f"batch window {window_s} s must be in [0, 10]")
        self.runner = runner
        self.max_batch = max_batch
        self.window_s = window_s
        self.max_queue = max_queue
        self.on_batch = on_batch  # called in the event loop after each batch with (jobs, seconds)
        self.on_cancel = on_cancel  # called with the reason when a queued or running job is cancelled
        self.arriving = arriving or (lambda: 1)  # requests being read that may join; None: always wait
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pixlm-worker")
        self._pending: deque[Job] = deque()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.running: list[Job] = []
        self.batch_seconds = 0.05  # moving average of a batch's duration, for Retry-After

    # ----------------------------------------------------------------- state
    @property
    def depth(self) -> int:
        """Jobs waiting (not yet running)."""
        return len(self._pending)

    @property
    def queued_rows(self) -> int:
        """Images waiting to be made."""
        return sum(j.rows for j in self._pending)

    def _ensure_started(self) -> None:
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._loop is not loop:
            self._loop = loop
            self._wake = asyncio.Event()
            self._task = loop.create_task(self._run(), name="pixlm-batcher")

    async def start(self) -> None:
        """Start the batching task on the running event loop (also done lazily by ``submit``)."""
        self._ensure_started()

    async def stop(self) -> None:
        """Cancel queued jobs, stop the task and the worker thread."""
        for job in list(self._pending):
            self.cancel(job, None)
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        self.executor.shutdown(wait=False, cancel_futures=True)

    # ----------------------------------------------------------------- jobs
    def submit(self, job: Job) -> Job:
        """Queue ``job`` (its ``future`` resolves to the runner's result); raises QueueFull when full."""
        self._ensure_started()
        if len(self._pending) >= self.max_queue:
            waves = math.ceil((self.queued_rows + sum(j.rows for j in self.running)) / self.max_batch) + 1
            raise QueueFull(len(self._pending), max(1, math.ceil(waves * self.batch_seconds)))
        job.future = asyncio.get_running_loop().create_future()
        job.enqueued_at = time.monotonic()
        job.state = "queued"
        self._pending.append(job)
        assert self._wake is not None
        self._wake.set()
        return job

    def cancel(self, job: Job, reason: str | None) -> None:
        """Drop a queued job, or mark a running one so its result is thrown away; reports ``reason``."""
        if job.state == "queued":
            try:
                self._pending.remove(job)
            except ValueError:
                pass
        if job.state in ("queued", "running"):
            job.state = "cancelled"
            if reason is not None and self.on_cancel is not None:
                self.on_cancel(reason)
        if job.future is not None and not job.future.done():
            job.future.cancel()

    def _take_batch(self) -> list[Job]:
        first = self._pending.popleft()
        batch, rows = [first], first.rows
        if first.key is not None:
            for job in list(self._pending):
                if job.key == first.key and rows + job.rows <= self.max_batch:
                    self._pending.remove(job)
                    batch.append(job)
                    rows += job.rows
        return batch

    def _ready_rows(self, first: Job) -> int:
        if first.key is None:
            return self.max_batch
        return sum(j.rows for j in self._pending if j.key == first.key)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._wake is not None
        while True:
            if not self._pending:
                self._wake.clear()
                await self._wake.wait()
                continue
            first = self._pending[0]
            deadline = first.enqueued_at + self.window_s
            # Give companions a moment to arrive, unless the batch is already full.
            while self._ready_rows(first) < self.max_batch and self.arriving() > 0 and \
                    (left := deadline - time.monotonic()) > 0:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), left)
                except asyncio.TimeoutError:
                    break
                if not self._pending or self._pending[0] is not first:
                    break  # the first job was cancelled
            if not self._pending or self._pending[0] is not first:
                continue
            batch = self._take_batch()
            for job in batch:
                job.state = "running"
            self.running = batch
            t0 = time.monotonic()
            try:
                results = await loop.run_in_executor(self.executor, self.runner, batch)
                error = None
            except Exception as e:  # noqa: BLE001 - handed to every waiting request
                results, error = None, e
            seconds = time.monotonic() - t0
            self.running = []
            self.batch_seconds = 0.8 * self.batch_seconds + 0.2 * seconds
            for i, job in enumerate(batch):
                if job.state == "cancelled" or job.future is None or job.future.done():
                    continue
                job.state = "done"
                if error is not None:
                    job.future.set_exception(error)
                else:
                    job.future.set_result(results[i])
            if self.on_batch is not None:
                self.on_batch(batch, seconds)
