"""The broker's metrics as Prometheus families, built at scrape time (``/metrics``).

A prometheus-client custom collector, registered in a registry of the broker's own (several
brokers in one process never clash). Counters come from :class:`~.metrics.BrokerMetrics`;
everything else is read when scraped: the logs' offsets and sizes from the log manager, the
connections from the broker, the groups from the coordinator (through
:func:`group_views`, which only calls the coordinator's request methods), the cluster,
replication and share groups through :mod:`.metrics_cluster`, so nothing on the hot path
updates a gauge. docs/OPERATIONS.md lists every name.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from tidelog import __version__
from tidelog.wire import messages as m
from tidelog.wire.errors import BrokerError, ErrorCode

from .log import LogManager, TopicPartition
from .metrics import BrokerMetrics, Histogram
from .metrics_cluster import cluster_families, share_families

if TYPE_CHECKING:
    from .broker import Broker
    from .groups import GroupCoordinator

PREFIX: Final = "tidelog_"
GROUP_STATES: Final = ("empty", "reconciling", "stable", "dead")
"""Every value of ``consumer_group_state``'s ``state`` label (the wire's group states)."""
PARTITION: Final = ("topic", "partition")


@dataclass(frozen=True, slots=True)
class GroupView:
    """What metrics need of one consumer group."""

    group: str
    state: str
    members: int
    committed: dict[TopicPartition, int]


def group_views(coordinator: GroupCoordinator) -> list[GroupView]:
    """Every group with its state, member count and committed offsets, read through the
    coordinator's ListGroups and OffsetFetch handlers alone (read-only, synchronous)."""
    out = []
    for listing in coordinator.list_groups(m.ListGroupsRequest()).groups:
        try:
            fetched = coordinator.offset_fetch(m.OffsetFetchRequest(listing.group_id))
        except BrokerError:
            continue  # deleted between the two calls
        committed = {
            TopicPartition(p.topic, p.partition): p.offset
            for p in fetched.partitions
            if p.offset >= 0 and not p.error_code
        }
        out.append(GroupView(listing.group_id, listing.state, listing.member_count, committed))
    return out


def _histogram(
    name: str, doc: str, labels: Sequence[str], series: Iterable[tuple[Sequence[str], Histogram]]
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(PREFIX + name, doc, labels=labels)
    for values, hist in series:
        family.add_metric(list(values), hist.cumulative(), hist.total)
    return family


def _error_name(code: int) -> str:
    try:
        return ErrorCode(code).name.lower()
    except ValueError:
        return str(code)


class BrokerCollector(Collector):
    """Yields every ``tidelog_`` family of one broker."""

    def __init__(self, broker: Broker, metrics: BrokerMetrics) -> None:
        self._broker = broker
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        broker = self._broker
        yield from self._info()
        yield from self._requests()
        yield from self._topics()
        yield from self._connections()
        logs = broker.core.logs
        if logs is not None:
            yield from self._logs(logs)
        else:
            yield from cluster_families(broker.core.state.cluster, 0, 0)
        groups = broker.core.groups
        if groups is not None and logs is not None:
            yield from self._groups(groups, logs)
        yield from share_families(broker.core.shares)

    def _info(self) -> Iterator[Metric]:
        config = self._broker.config
        info = GaugeMetricFamily(
            PREFIX + "build_info",
            "Always 1; the labels say which version serves and its broker id.",
            labels=["version", "broker_id", "cluster_id"],
        )
        info.add_metric([__version__, str(config.broker_id), config.cluster_id], 1)
        yield info
        yield GaugeMetricFamily(
            PREFIX + "start_time_seconds",
            "When the broker started, in seconds since the epoch.",
            value=self._metrics.started_at,
        )

    def _requests(self) -> Iterator[Metric]:
        apis = sorted(self._metrics.apis.values(), key=lambda a: a.name)
        total = CounterMetricFamily(
            PREFIX + "requests",
            "Requests served, by API and request-level error (none: success).",
            labels=["api", "error"],
        )
        req_bytes = CounterMetricFamily(
            PREFIX + "request_bytes", "Request frame bytes received, by API.", labels=["api"]
        )
        resp_bytes = CounterMetricFamily(
            PREFIX + "response_bytes", "Response frame bytes sent, by API.", labels=["api"]
        )
        for api in apis:
            for code, count in sorted(api.by_error.items()):
                total.add_metric([api.name, _error_name(code)], count)
            req_bytes.add_metric([api.name], api.request_bytes)
            resp_bytes.add_metric([api.name], api.response_bytes)
        yield from (total, req_bytes, resp_bytes)
        yield _histogram(
            "request_duration_seconds",
            "From a request's frame decoded to its response written (Kafka's TotalTimeMs).",
            ["api"],
            (([a.name], a.total) for a in apis),
        )
        yield _histogram(
            "request_queue_seconds",
            "From a request's frame decoded to its handler starting (RequestQueueTimeMs).",
            ["api"],
            (([a.name], a.queue) for a in apis),
        )
        yield _histogram(
            "fetch_wait_seconds",
            "How long fetches that found too little data waited in their long poll.",
            [],
            [([], self._metrics.fetch_wait)],
        )

    def _topics(self) -> Iterator[Metric]:
        names = (
            ("records_in", "records_in", "Records appended by produce requests."),
            ("bytes_in", "bytes_in", "Record batch bytes appended by produce requests."),
            ("records_out", "records_out", "Records sent by fetches (offsets their batches span)."),
            ("bytes_out", "bytes_out", "Record batch bytes sent by fetches."),
        )
        topics = sorted(self._metrics.topics.items())
        for name, attr, doc in names:
            family = CounterMetricFamily(PREFIX + name, doc + " By topic.", labels=["topic"])
            for topic, counts in topics:
                family.add_metric([topic], getattr(counts, attr))
            yield family

    def _connections(self) -> Iterator[Metric]:
        broker = self._broker
        conns = broker.connections
        yield GaugeMetricFamily(PREFIX + "connections", "Client connections open.", len(conns))
        refused = CounterMetricFamily(
            PREFIX + "connections_refused",
            "Connections closed at accept, by reason (capacity: max_connections or the file "
            "descriptor limit).",
            labels=["reason"],
        )
        refused.add_metric(["capacity"], broker.refused_connections)
        yield refused
        yield GaugeMetricFamily(
            PREFIX + "connection_buffered_bytes_max",
            "The most request and response bytes one connection holds now.",
            max((c.stats.buffered for c in conns), default=0),
        )
        yield GaugeMetricFamily(
            PREFIX + "inflight_requests",
            "Requests being served, over all connections.",
            sum(c.stats.inflight for c in conns),
        )
        yield GaugeMetricFamily(
            PREFIX + "broker_buffered_request_bytes",
            "Request bytes held across all connections (max_queued_request_bytes bounds it).",
            broker.budget.used,
        )

    def _logs(self, manager: LogManager) -> Iterator[Metric]:
        gauges = {
            name: GaugeMetricFamily(PREFIX + name, doc, labels=PARTITION)
            for name, doc in (
                ("log_size_bytes", "Bytes of a partition's segment files."),
                ("log_segments", "Segments of a partition's log."),
                ("log_start_offset", "First offset a partition's log holds."),
                ("log_end_offset", "Offset the next appended record gets."),
                ("high_watermark", "Offset up to which records are visible to consumers."),
            )
        }
        fsync = Histogram()
        waiters = None
        damaged = repaired = offline = 0
        logs = sorted(manager.logs().items())
        for tp, plog in logs:
            labels = [tp.topic, str(tp.partition)]
            gauges["log_size_bytes"].add_metric(labels, plog.size_in_bytes)
            gauges["log_segments"].add_metric(labels, len(plog.segments))
            gauges["log_start_offset"].add_metric(labels, plog.log_start_offset)
            gauges["log_end_offset"].add_metric(labels, plog.log_end_offset)
            gauges["high_watermark"].add_metric(labels, plog.high_watermark)
            committer = manager.committer(tp)
            fsync.merge(committer.fsync_seconds)
            if waiters is None:
                waiters = Histogram(committer.waiters_per_fsync.bounds)
            waiters.merge(committer.waiters_per_fsync)
            damaged += plog.damage_found
            repaired += plog.repairs_made
            offline += plog.offline is not None
        yield from gauges.values()
        yield from cluster_families(self._broker.core.state.cluster, len(logs), offline)
        yield _histogram(
            "fsync_duration_seconds",
            "How long each partition flush (fsync of data and indexes) took.",
            [],
            [([], fsync)],
        )
        if waiters is not None:
            yield _histogram(
                "batches_per_fsync",
                "Appends waiting for durability that one flush released (group commit).",
                [],
                [([], waiters)],
            )
        damage = CounterMetricFamily(
            PREFIX + "storage_damage",
            "Storage damage found since start: damaged_range (isolated, unreadable) and "
            "repaired_batch (stamped fields restored), by recovery, the scrubber or a report.",
            labels=["kind"],
        )
        damage.add_metric(["damaged_range"], damaged)
        damage.add_metric(["repaired_batch"], repaired)
        yield damage

    def _groups(self, coordinator: GroupCoordinator, manager: LogManager) -> Iterator[Metric]:
        members = GaugeMetricFamily(
            PREFIX + "consumer_group_members", "Members of a consumer group.", labels=["group"]
        )
        state = GaugeMetricFamily(
            PREFIX + "consumer_group_state",
            "1 for a group's current state, 0 for the others.",
            labels=["group", "state"],
        )
        labels = ["group", *PARTITION]
        committed = GaugeMetricFamily(
            PREFIX + "consumer_group_committed_offset",
            "A group's committed offset of a partition.",
            labels=labels,
        )
        lag = GaugeMetricFamily(
            PREFIX + "consumer_group_lag",
            "High watermark minus a group's committed offset (records not yet consumed).",
            labels=labels,
        )
        logs = manager.logs()
        for view in sorted(group_views(coordinator), key=lambda v: v.group):
            members.add_metric([view.group], view.members)
            for name in GROUP_STATES:
                state.add_metric([view.group, name], 1 if name == view.state else 0)
            for tp, offset in sorted(view.committed.items()):
                series = [view.group, tp.topic, str(tp.partition)]
                committed.add_metric(series, offset)
                plog = logs.get(tp)
                if plog is not None:
                    lag.add_metric(series, max(plog.high_watermark - offset, 0))
        yield from (members, state, committed, lag)
