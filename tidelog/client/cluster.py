"""What a client knows about the cluster: a metadata snapshot and one connection per broker.

:class:`ClusterMetadata` is an immutable snapshot of a MetadataResponse (brokers, topics, the
leader of every partition). :class:`Cluster` holds the current snapshot, refreshes it (one
refresh at a time, whoever asks), and keeps one :class:`~tidelog.client.connection.Connection`
per broker id, reconnecting with exponential backoff after failures.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from tidelog.wire import messages as m
from tidelog.wire.api import DEFAULT_BROKER_PORT
from tidelog.wire.errors import ErrorCode

from .backoff import Backoff
from .connection import DEFAULT_CONNECT_TIMEOUT, DEFAULT_REQUEST_TIMEOUT, Connection
from .errors import (
    BrokerUnavailableError,
    ClientClosedError,
    ClientUsageError,
    broker_error,
    is_retriable,
)
from .types import OffsetAndTimestamp, TopicPartition

DEFAULT_PORT: Final = DEFAULT_BROKER_PORT
DEFAULT_METADATA_MAX_AGE: Final = 300.0


def parse_bootstrap(servers: str | Sequence[str]) -> list[tuple[str, int]]:
    """``"host:port,host2"`` or ``["host:port", ...]`` as ``(host, port)`` pairs; the port
    defaults to 7070 and IPv6 hosts go in brackets (``"[::1]:7070"``)."""
    items = servers.split(",") if isinstance(servers, str) else list(servers)
    out: list[tuple[str, int]] = []
    for item in (s.strip() for s in items):
        if not item:
            continue
        host, port = item, DEFAULT_PORT
        if item.startswith("["):
            host, _, rest = item[1:].partition("]")
            if rest.startswith(":"):
                port = _port(rest[1:], item)
        elif item.count(":") == 1:
            host, raw = item.split(":")
            port = _port(raw, item)
        out.append((host, port))
    if not out:
        raise ClientUsageError("bootstrap_servers is empty: give at least one 'host:port'")
    return out


def _port(raw: str, item: str) -> int:
    try:
        port = int(raw)
    except ValueError:
        port = -1
    if not 0 < port < 65536:
        raise ClientUsageError(f"bad port in bootstrap server {item!r}: use 'host:port'")
    return port


@dataclass(frozen=True, slots=True)
class TopicInfo:
    """A topic as the metadata describes it."""

    name: str
    error_code: int = 0
    internal: bool = False
    partitions: tuple[int, ...] = ()
    """Every partition id, sorted."""
    available: tuple[int, ...] = ()
    """Partitions that have a leader now."""
    leaders: Mapping[int, int] = field(default_factory=dict)
    details: Mapping[int, m.PartitionMetadata] = field(default_factory=dict)

    @classmethod
    def from_wire(cls, t: m.TopicMetadata) -> TopicInfo:
        parts = sorted(t.partitions, key=lambda p: p.partition)
        return cls(
            name=t.name,
            error_code=t.error_code,
            internal=t.internal,
            partitions=tuple(p.partition for p in parts),
            available=tuple(p.partition for p in parts if p.leader >= 0 and not p.error_code),
            leaders={p.partition: p.leader for p in parts},
            details={p.partition: p for p in parts},
        )


@dataclass(frozen=True, slots=True)
class ClusterMetadata:
    """One immutable snapshot of the cluster's metadata."""

    brokers: Mapping[int, m.BrokerInfo] = field(default_factory=dict)
    topics: Mapping[str, TopicInfo] = field(default_factory=dict)
    cluster_id: str = ""
    controller_id: int = -1

    @classmethod
    def from_response(
        cls, response: m.MetadataResponse, previous: ClusterMetadata | None = None
    ) -> ClusterMetadata:
        """The snapshot a response describes. With ``previous``, topics the response does not
        mention are kept (a response to a query about some topics)."""
        topics = dict(previous.topics) if previous is not None else {}
        for t in response.topics:
            topics[t.name] = TopicInfo.from_wire(t)
        return cls(
            brokers={b.node_id: b for b in response.brokers},
            topics=topics,
            cluster_id=response.cluster_id,
            controller_id=response.controller_id,
        )

    def leader_for(self, tp: TopicPartition) -> int | None:
        """The broker id leading ``tp``, or ``None`` if unknown or leaderless."""
        info = self.topics.get(tp.topic)
        if info is None:
            return None
        leader = info.leaders.get(tp.partition, -1)
        return leader if leader >= 0 and leader in self.brokers else None

    def partitions_for(self, topic: str) -> tuple[int, ...] | None:
        """Every partition of ``topic``, or ``None`` if the topic is unknown."""
        info = self.topics.get(topic)
        if info is None or info.error_code or not info.partitions:
            return None
        return info.partitions


METADATA_ERRORS: Final = frozenset(
    {
        ErrorCode.NOT_LEADER,
        ErrorCode.LEADER_NOT_AVAILABLE,
        ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
        ErrorCode.BROKER_SHUTTING_DOWN,
    }
)
"""Per-partition errors that mean the cached metadata is stale: refresh before retrying."""


class Cluster:
    """The metadata cache and the connection pool of one client.

    ``clock`` (monotonic seconds) decides when reconnect backoffs and the metadata age
    expire; tests inject one.
    """

    def __init__(
        self,
        bootstrap_servers: str | Sequence[str],
        *,
        client_id: str = "tidelog",
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        metadata_max_age: float = DEFAULT_METADATA_MAX_AGE,
        reconnect_backoff: Backoff | None = None,
        allow_auto_create: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bootstrap = parse_bootstrap(bootstrap_servers)
        self.client_id = client_id
        self.connect_timeout = connect_timeout
        self.request_timeout = request_timeout
        self.metadata_max_age = metadata_max_age
        self.reconnect_backoff = reconnect_backoff or Backoff(0.05, 1.0)
        self.allow_auto_create = allow_auto_create
        self.clock = clock
        self.metadata = ClusterMetadata()
        self._updated_at = float("-inf")
        self._conns: dict[int, Connection] = {}
        self._connecting: dict[int, asyncio.Task[Connection]] = {}
        self._failures: dict[int, tuple[int, float]] = {}  # node -> (attempts, retry at)
        self._refresh: asyncio.Task[ClusterMetadata] | None = None
        self._update_listeners: list[Callable[[], None]] = []
        self._closed = False

    # --- metadata ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect to a bootstrap server and load the metadata."""
        await self.refresh()

    @property
    def metadata_stale(self) -> bool:
        return self.clock() - self._updated_at >= self.metadata_max_age

    def add_update_listener(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` after every metadata update (the sender wakes on it)."""
        self._update_listeners.append(callback)

    def request_refresh(self) -> asyncio.Task[ClusterMetadata]:
        """Start a refresh unless one is running; either way return the running one. A failed
        refresh is left for the next caller to retry."""
        if self._closed:
            raise ClientClosedError("the client is closed")
        task = self._refresh
        if task is None or task.done():
            task = self._refresh = asyncio.get_running_loop().create_task(self._do_refresh(None))
            task.add_done_callback(_consume_exception)
        return task

    async def refresh(self) -> ClusterMetadata:
        """Reload the metadata of every topic (shared with a refresh already running)."""
        return await asyncio.shield(self.request_refresh())

    async def fetch_topics(
        self, topics: Iterable[str], *, allow_auto_create: bool | None = None
    ) -> ClusterMetadata:
        """Reload the metadata of some topics, asking the broker to create missing ones when
        ``allow_auto_create`` (default: the cluster's setting)."""
        auto = self.allow_auto_create if allow_auto_create is None else allow_auto_create
        return await self._do_refresh(m.MetadataRequest(tuple(topics), allow_auto_create=auto))

    async def _do_refresh(self, request: m.MetadataRequest | None) -> ClusterMetadata:
        conn = await self.any_connection()
        response = await conn.call(request or m.MetadataRequest(), m.MetadataResponse)
        previous = self.metadata if request is not None and request.topics else None
        self.metadata = ClusterMetadata.from_response(response, previous)
        self._updated_at = self.clock()
        for node in list(self._conns):
            if node not in self.metadata.brokers:
                conn = self._conns.pop(node)
                await conn.close()
        for listener in self._update_listeners:
            listener()
        return self.metadata

    async def partitions_for(self, topic: str) -> tuple[int, ...]:
        """The partitions of ``topic``, from the cache or after one fetch. Raises the
        broker's error (e.g. :class:`~tidelog.wire.errors.UnknownTopicOrPartitionError`)."""
        parts = self.metadata.partitions_for(topic)
        if parts is not None:
            return parts
        meta = await self.fetch_topics((topic,))
        parts = meta.partitions_for(topic)
        if parts is not None:
            return parts
        info = meta.topics.get(topic)
        code = info.error_code if info is not None else ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
        raise broker_error(code or ErrorCode.LEADER_NOT_AVAILABLE, where=f"topic {topic!r}")

    async def list_offsets(
        self, specs: Mapping[TopicPartition, int], *, retry_for: float | None = None
    ) -> dict[TopicPartition, OffsetAndTimestamp]:
        """For each partition, the offset a ListOffsets ``timestamp`` (``OffsetSpec.EARLIEST``,
        ``OffsetSpec.LATEST`` or milliseconds since the epoch) stands for, asked of its
        leader. Retriable errors (no leader, lost connection) are retried after a metadata
        refresh for ``retry_for`` seconds (default ``request_timeout``); other errors raise."""
        deadline = self.clock() + (self.request_timeout if retry_for is None else retry_for)
        todo = dict(specs)
        out: dict[TopicPartition, OffsetAndTimestamp] = {}
        attempt = 0
        while True:
            retry: BaseException | None = None
            by_node: dict[int, list[TopicPartition]] = {}
            for tp in todo:
                leader = self.metadata.leader_for(tp)
                if leader is None:
                    if self.metadata.partitions_for(tp.topic) is None:
                        await self.partitions_for(tp.topic)  # raises for an unknown topic
                    retry = broker_error(
                        ErrorCode.LEADER_NOT_AVAILABLE, where=f"{tp.topic}[{tp.partition}]"
                    )
                else:
                    by_node.setdefault(leader, []).append(tp)
            for node, tps in by_node.items():
                request = m.ListOffsetsRequest(
                    tuple(m.ListOffsetsPartition(tp.topic, tp.partition, todo[tp]) for tp in tps)
                )
                try:
                    conn = await self.connection(node)
                    response = await conn.call(request, m.ListOffsetsResponse)
                except Exception as exc:
                    if not is_retriable(exc):
                        raise
                    retry = exc
                    continue
                for r in response.partitions:
                    tp = TopicPartition(r.topic, r.partition)
                    if tp not in todo:
                        continue
                    if r.error_code:
                        error = broker_error(
                            r.error_code, r.error_message, where=f"{r.topic}[{r.partition}]"
                        )
                        if not error.retriable:
                            raise error
                        retry = error
                        continue
                    out[tp] = OffsetAndTimestamp(r.offset, r.timestamp)
                    del todo[tp]
            if not todo:
                return out
            if retry is None:
                retry = broker_error(ErrorCode.UNKNOWN_SERVER_ERROR, "partitions left unanswered")
            if self.clock() >= deadline:
                raise retry
            await asyncio.sleep(self.reconnect_backoff.delay(attempt))
            attempt += 1
            with contextlib.suppress(Exception):
                await self.refresh()

    # --- connections -------------------------------------------------------------------------

    def ready_connection(self, node_id: int) -> Connection | None:
        """The open connection to ``node_id``, if there is one right now."""
        conn = self._conns.get(node_id)
        return conn if conn is not None and not conn.closed else None

    async def connection(self, node_id: int) -> Connection:
        """The connection to broker ``node_id``, opened (after any backoff) if needed. Raises
        :class:`BrokerUnavailableError` when it cannot be opened."""
        conn = self.ready_connection(node_id)
        if conn is not None:
            return conn
        if self._closed:
            raise ClientClosedError("the client is closed")
        task = self._connecting.get(node_id)
        if task is None:
            broker = self.metadata.brokers.get(node_id)
            if broker is None:
                raise BrokerUnavailableError(f"broker {node_id} is not in the cluster metadata")
            task = asyncio.get_running_loop().create_task(
                self._connect(node_id, broker.host, broker.port)
            )
            task.add_done_callback(_consume_exception)
            self._connecting[node_id] = task
        return await asyncio.shield(task)

    async def any_connection(self) -> Connection:
        """A connection to some broker: an open one, else a known broker, else a bootstrap
        server. Raises :class:`BrokerUnavailableError` if none can be reached."""
        for conn in self._conns.values():
            if not conn.closed:
                return conn
        errors: list[BaseException] = []
        for node_id in list(self.metadata.brokers):
            try:
                return await self.connection(node_id)
            except BrokerUnavailableError as exc:
                errors.append(exc)
        for host, port in self.bootstrap:
            try:
                return await self._connect(None, host, port)
            except BrokerUnavailableError as exc:
                errors.append(exc)
        servers = ", ".join(f"{h}:{p}" for h, p in self.bootstrap)
        raise BrokerUnavailableError(
            f"no broker reachable (bootstrap servers: {servers}); is the cluster running?"
        ) from (errors[-1] if errors else None)

    async def _connect(self, node_id: int | None, host: str, port: int) -> Connection:
        key = node_id if node_id is not None else _bootstrap_key(host, port)
        attempts, retry_at = self._failures.get(key, (0, 0.0))
        wait = retry_at - self.clock()
        try:
            if wait > 0:
                await asyncio.sleep(wait)  # reconnect backoff
            conn = await Connection.open(
                host,
                port,
                client_id=self.client_id,
                connect_timeout=self.connect_timeout,
                request_timeout=self.request_timeout,
            )
        except BrokerUnavailableError:
            delay = self.reconnect_backoff.delay(attempts)
            self._failures[key] = (attempts + 1, self.clock() + delay)
            raise
        finally:
            if node_id is not None:
                self._connecting.pop(node_id, None)
        self._failures.pop(key, None)
        if self._closed:
            await conn.close()
            raise ClientClosedError("the client is closed")
        node = conn.broker_id if node_id is None else node_id
        if node is not None:
            old = self._conns.get(node)
            if old is not None and not old.closed:
                await conn.close()  # raced with another connect: keep the first
                return old
            self._conns[node] = conn
            conn.add_close_callback(self._on_close)
        return conn

    def _on_close(self, conn: Connection) -> None:
        for node, c in list(self._conns.items()):
            if c is conn:
                del self._conns[node]
                self._failures.setdefault(node, (1, self.clock()))

    async def close(self) -> None:
        """Close every connection; requests in flight fail with ConnectionClosedError."""
        self._closed = True
        tasks: list[asyncio.Task[object]] = [*self._connecting.values()]
        if self._refresh is not None:
            tasks.append(self._refresh)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        conns, self._conns = list(self._conns.values()), {}
        for conn in conns:
            with contextlib.suppress(Exception):
                await conn.close()


def _bootstrap_key(host: str, port: int) -> int:
    # Bootstrap servers have no node id yet; give their backoff state a key no broker uses.
    return -1 - (hash((host, port)) & 0x7FFFFFFF)


def _consume_exception(task: asyncio.Task[object] | asyncio.Task[Connection]) -> None:
    # Whoever awaits the task sees its exception; this keeps an unawaited one from being
    # reported as "never retrieved".
    if not task.cancelled():
        task.exception()
