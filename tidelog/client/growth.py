"""Batches that grow while their partition's window is full (the idempotent producer).

With idempotence a partition has at most 5 batches in flight (what the broker remembers per
producer: :mod:`.inflight`), while a producer without it sends all of a partition's ready
batches in one request, up to ``max_request_size``. When the brokers are slower than the
application, the batches pile up behind that window: sealing each at ``batch_size`` only makes
more, smaller batches, and each costs a request and its share of an fsync on both sides. So,
as Kafka's producer lets a batch take what arrives while it cannot be sent, a partition's open
batch is not closed at ``batch_size`` while it could not leave anyway (the window is full, or
other closed batches already wait for it): it grows, in ``batch_size`` steps, up to four times
``batch_size`` (:data:`~.accumulator.MAX_GROWTH`), the largest batch the topic takes (its
``max_message_bytes``, learned once per topic with DescribeConfigs, in the background) and
``max_request_size``. Once the window has room, the sender takes it as it is.

Nothing grows before the topic's limit is known, or if it cannot be learned (then never), so
a grown batch never exceeds what the broker accepts unless ``max_message_bytes`` is lowered
while it is in flight; a ``MESSAGE_TOO_LARGE`` answer makes the limit be learned again.
Growing changes neither the number of batches in flight nor any sequence rule.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from tidelog.wire import messages as m
from tidelog.wire.layouts import BATCH_HEADER_SIZE

from .types import TopicPartition

if TYPE_CHECKING:
    from .cluster import Cluster
    from .inflight import PartitionFlights

logger = logging.getLogger("tidelog.client.producer")

MAX_MESSAGE_BYTES = "max_message_bytes"
"""The topic config that bounds a batch."""


class BatchGrowth:
    """The accumulator's ``grow`` hook: how far a partition's open batch may grow now."""

    __slots__ = (
        "_cluster",
        "_flights",
        "_limits",
        "_max_batches",
        "_max_request_size",
        "_tasks",
        "_timeout",
    )

    def __init__(
        self,
        cluster: Cluster,
        flights: PartitionFlights,
        *,
        max_batches: int,
        max_request_size: int,
        timeout: float,
    ) -> None:
        self._cluster = cluster
        self._timeout = timeout
        self._flights = flights
        self._max_batches = max_batches
        self._max_request_size = max_request_size
        self._limits: dict[str, int] = {}
        """Per topic, the record bytes a batch may hold at most (0: do not grow)."""
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def room(self, tp: TopicPartition, queued: int) -> int:
        """The record bytes (batch header aside) ``tp``'s open batch may hold now, with
        ``queued`` closed batches of ``tp`` waiting before it; 0 if it should be closed at
        ``batch_size`` as usual."""
        if self._flights.in_flight(tp) + queued < self._max_batches:
            return 0  # it could leave at once: no reason to wait for more
        limit = self._limits.get(tp.topic)
        if limit is None:
            self._learn(tp.topic)
            return 0
        return limit

    def forget(self, topic: str) -> None:
        """The topic refused a batch as too large: learn its limit again before growing."""
        self._limits.pop(topic, None)

    def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        self._tasks.clear()

    def _learn(self, topic: str) -> None:
        if topic in self._tasks:
            return
        task = asyncio.get_running_loop().create_task(self._describe(topic))
        self._tasks[topic] = task

    async def _describe(self, topic: str) -> None:
        limit = 0
        try:
            conn = await self._cluster.any_connection()
            request = m.DescribeConfigsRequest(
                (m.ConfigResource(m.ConfigResourceType.TOPIC, topic),), keys=(MAX_MESSAGE_BYTES,)
            )
            response = await conn.call(request, m.DescribeConfigsResponse, timeout=self._timeout)
            for result in response.results:
                for entry in result.entries:
                    if not result.error_code and entry.name == MAX_MESSAGE_BYTES:
                        limit = int(entry.value or 0)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # growth is an optimisation: without the limit, no growth
            logger.debug("batches of %s will not grow: %s", topic, exc)
        finally:
            self._tasks.pop(topic, None)
        self._limits[topic] = max(0, min(limit, self._max_request_size) - BATCH_HEADER_SIZE)
