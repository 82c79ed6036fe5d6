"""What ``/metrics`` reports, through ``prometheus_client`` on a registry owned by one app (so several apps in one
process, as in the tests, keep separate counts)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


class ServerMetrics:
    """The app's metrics. ``depth``, ``queued_rows`` and ``running`` are read at scrape time."""

    def __init__(self, depth: Callable[[], float], queued_rows: Callable[[], float],
                 running: Callable[[], float]) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("pixlm_requests_total", "HTTP requests by endpoint and status (499: the client went "
                                "away first).", ("endpoint", "status"), registry=r)
        self.latency = Histogram("pixlm_request_duration_seconds", "HTTP request latency by endpoint.", ("endpoint",),
                                 buckets=LATENCY_BUCKETS, registry=r)
        for name, doc, read in (("pixlm_queue_depth", "Requests waiting for the model.", depth),
                                ("pixlm_queue_images", "Images waiting to be made.", queued_rows),
                                ("pixlm_running_requests", "Requests in the forward now running.", running)):
            Gauge(name, doc, registry=r).set_function(read)
        self.batch_size = Histogram("pixlm_batch_size_images", "Images per model forward (dynamic batching).",
                                    buckets=BATCH_BUCKETS, registry=r)
        self.batch_requests = Histogram("pixlm_batch_size_requests", "Requests merged into one forward.",
                                        buckets=BATCH_BUCKETS, registry=r)
        self.batch_seconds = Histogram("pixlm_batch_duration_seconds", "Time of one model forward.",
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.images = Counter("pixlm_images_total", "Images returned, by endpoint.", ("endpoint",), registry=r)
        self.cancelled = Counter("pixlm_jobs_cancelled_total", "Queued or running jobs dropped before finishing, by "
                                 "reason (disconnect, timeout).", ("reason",), registry=r)
        self.rejected = Counter("pixlm_queue_rejections_total", "Requests refused with 429 (queue full).", registry=r)

    def on_batch(self, jobs: list, seconds: float) -> None:
        """Record one finished forward (``jobs``: the batcher's jobs in it)."""
        self.batch_size.observe(sum(j.rows for j in jobs))
        self.batch_requests.observe(len(jobs))
        self.batch_seconds.observe(seconds)

    def on_request(self, endpoint: str, status: int, seconds: float) -> None:
        """Record one finished HTTP request."""
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def value(self, name: str, **labels: str) -> float:
        """One sample's value (0 when absent), e.g. ``value("pixlm_jobs_cancelled_total", reason="timeout")``."""
        return self.registry.get_sample_value(name, labels) or 0.0

    def exposition(self, accept: str | None) -> tuple[bytes, str]:
        """(body, content type) in the format the scraper's ``Accept`` header asks for (Prometheus text by
        default, OpenMetrics on request)."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type
