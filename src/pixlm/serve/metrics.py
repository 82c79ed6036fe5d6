"""Prometheus text exposition, hand-written: counters, gauges and histograms with labels."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable, Sequence

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


def _labels(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


class Counter:
    """A monotonically increasing count per label set."""

    def __init__(self, name: str, help: str, labels: Sequence[str] = ()) -> None:
        self.name, self.help, self.labels = name, help, tuple(labels)
        self.values: dict[tuple[str, ...], float] = defaultdict(float)
        self._lock = threading.Lock()

    def inc(self, *labels: str, by: float = 1.0) -> None:
        """Add ``by`` to the series with these label values."""
        with self._lock:
            self.values[tuple(str(v) for v in labels)] += by

    def render(self) -> list[str]:
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        with self._lock:
            for key, v in sorted(self.values.items()):
                out.append(f"{self.name}{_labels(self.labels, key)} {_num(v)}")
        return out


class Gauge:
    """A value read at scrape time from a function."""

    def __init__(self, name: str, help: str, read: Callable[[], float]) -> None:
        self.name, self.help, self.read = name, help, read

    def render(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} gauge", f"{self.name} {_num(self.read())}"]


class Histogram:
    """Cumulative bucket counts, sum and count per label set."""

    def __init__(self, name: str, help: str, buckets: Sequence[float], labels: Sequence[str] = ()) -> None:
        self.name, self.help, self.buckets, self.labels = name, help, tuple(buckets), tuple(labels)
        self.series: dict[tuple[str, ...], list[float]] = {}  # per key: bucket counts..., +Inf, sum
        self._lock = threading.Lock()

    def observe(self, value: float, *labels: str) -> None:
        """Record one observation."""
        key = tuple(str(v) for v in labels)
        with self._lock:
            s = self.series.setdefault(key, [0.0] * (len(self.buckets) + 2))
            for i, b in enumerate(self.buckets):
                if value <= b:
                    s[i] += 1
            s[-2] += 1  # +Inf bucket == count
            s[-1] += value

    def count_and_sum(self, *labels: str) -> tuple[float, float]:
        """(count, sum) of one series."""
        s = self.series.get(tuple(labels))
        return (s[-2], s[-1]) if s else (0.0, 0.0)

    def render(self) -> list[str]:
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        with self._lock:
            for key, s in sorted(self.series.items()):
                for b, c in zip(self.buckets, s):
                    le = _labels(self.labels, key, 'le="' + _num(b) + '"')
                    out.append(f"{self.name}_bucket{le} {_num(c)}")
                le = _labels(self.labels, key, 'le="+Inf"')
                out.append(f"{self.name}_bucket{le} {_num(s[-2])}")
                out.append(f"{self.name}_sum{_labels(self.labels, key)} {s[-1]:.6f}")
                out.append(f"{self.name}_count{_labels(self.labels, key)} {_num(s[-2])}")
        return out


class Registry:
    """The metrics one app exposes at ``/metrics``."""

    def __init__(self) -> None:
        self.items: list[Counter | Gauge | Histogram] = []

    def add(self, metric):
        """Register and return ``metric``."""
        self.items.append(metric)
        return metric

    def render(self) -> str:
        """Prometheus text format 0.0.4."""
        lines: list[str] = []
        for m in self.items:
            lines += m.render()
        return "\n".join(lines) + "\n"
