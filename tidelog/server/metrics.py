"""The broker's counters: plain integers and bucket arrays bumped on the hot path, turned into
Prometheus metric families only when ``/metrics`` is scraped (:mod:`.metrics_export`).

Why not prometheus-client's own ``Counter`` and ``Histogram`` here: each ``inc()`` and
``observe()`` takes a lock and each ``labels()`` call a dict lookup under another, which costs
several microseconds per request. A request here costs one dict lookup and a few integer
additions; per produce or fetch, one more per partition (never per record: a partition's record
count is the change of its log end offset). Everything runs on the broker's event loop, so no
lock is needed. Nothing here imports the rest of the server: the log's group committer uses
:class:`Histogram` too.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Final

LATENCY_BUCKETS: Final = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
"""Upper bounds (seconds) of request, fetch-wait and fsync histograms: 100 us to a minute
(a fetch's long poll waits up to ``max_fetch_wait_ms``)."""
COUNT_BUCKETS: Final = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0)
"""Upper bounds of ``batches_per_fsync``: powers of two."""


class Histogram:
    """Cumulative-at-scrape histogram: ``counts[i]`` holds observations in bucket ``i`` only
    (the last one is ``+Inf``); :meth:`cumulative` adds them up for Prometheus."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bound's bucket (le = "<=").
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, int]]:
        """``(le, count of observations <= le)`` pairs, ending with ``+Inf``."""
        out = []
        running = 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += n
            out.append(("+Inf" if bound == float("inf") else repr(bound), running))
        return out

    def merge(self, other: Histogram) -> None:
        """Add ``other``'s observations (same bounds) to this one."""
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        self.total += other.total


@dataclass(slots=True)
class ApiStats:
    """One API's requests: counted by error code, with bytes and times."""

    name: str
    """The ``api`` label: ``produce``, ``fetch``, ``join_group``..."""
    by_error: dict[int, int] = field(default_factory=dict)
    request_bytes: int = 0
    response_bytes: int = 0
    total: Histogram = field(default_factory=Histogram)
    """From the frame being decoded to its response being written (Kafka's TotalTimeMs)."""
    queue: Histogram = field(default_factory=Histogram)
    """From the frame being decoded to its handler starting (Kafka's RequestQueueTimeMs)."""


@dataclass(slots=True)
class TopicCounts:
    records_in: int = 0
    bytes_in: int = 0
    records_out: int = 0
    bytes_out: int = 0


class BrokerMetrics:
    """Every counter one broker keeps (one instance per broker: several brokers in one process
    never share one)."""

    def __init__(self) -> None:
        self.apis: dict[type, ApiStats] = {}
        self.topics: dict[str, TopicCounts] = {}
        self.fetch_wait = Histogram()
        self.started_at = time.time()
        """Wall-clock seconds at start (``tidelog_start_time_seconds``)."""

    def request(
        self,
        kind: type,
        error: int,
        request_bytes: int,
        response_bytes: int,
        queue_s: float,
        total_s: float,
    ) -> None:
        """Count one served request of class ``kind``."""
        stats = self.apis.get(kind)
        if stats is None:
            stats = self.apis[kind] = ApiStats(api_label(kind.__name__))
        by_error = stats.by_error
        by_error[error] = by_error.get(error, 0) + 1
        stats.request_bytes += request_bytes
        stats.response_bytes += response_bytes
        stats.queue.observe(queue_s)
        stats.total.observe(total_s)

    def topic(self, name: str) -> TopicCounts:
        counts = self.topics.get(name)
        if counts is None:
            counts = self.topics[name] = TopicCounts()
        return counts


def api_label(class_name: str) -> str:
    """``ProduceRequest`` -> ``produce``, ``JoinGroupRequest`` -> ``join_group``."""
    base = class_name.removesuffix("Request")
    return "".join("_" + c.lower() if c.isupper() and i else c.lower() for i, c in enumerate(base))
