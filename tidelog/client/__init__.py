"""The async tidelog client: :class:`Producer`, :class:`Consumer` (alone or in a consumer
group) and :class:`AdminClient`.

Loop-agnostic asyncio (uvloop is welcome but not required). Errors are typed:
:mod:`tidelog.client.errors` re-exports the broker's error classes (each with ``retriable``)
and adds the client's own.
"""

from tidelog.wire.compression import Compression
from tidelog.wire.messages import Acks, OffsetSpec

from .accumulator import RecordFuture
from .admin import (
    AdminClient,
    ClusterDescription,
    ConfigEntry,
    GroupDescription,
    GroupListing,
    GroupMemberDescription,
    GroupPartitionOffsets,
    LogDirDescription,
    LogDirPartition,
    NewTopic,
    TopicDescription,
)
from .backoff import Backoff
from .cluster import Cluster, ClusterMetadata
from .connection import Connection
from .consumer import Consumer
from .errors import (
    BrokerError,
    BrokerUnavailableError,
    ClientClosedError,
    ClientError,
    ClientUsageError,
    ConnectionClosedError,
    DeliveryTimeoutError,
    NoOffsetForPartitionError,
    ProducerBufferFullError,
    RecordDeserializationError,
    RequestTimeoutError,
    TidelogConnectionError,
    TidelogError,
)
from .group import CommitFailedError, RebalanceCallback
from .offsets import OffsetAndMetadata
from .partitioner import Partitioner, key_hash, partition_for_key
from .producer import Producer
from .types import ConsumerRecord, OffsetAndTimestamp, RecordMetadata, TopicPartition

__all__ = [
    "Acks",
    "AdminClient",
    "Backoff",
    "BrokerError",
    "BrokerUnavailableError",
    "ClientClosedError",
    "ClientError",
    "ClientUsageError",
    "Cluster",
    "ClusterDescription",
    "ClusterMetadata",
    "CommitFailedError",
    "Compression",
    "ConfigEntry",
    "Connection",
    "ConnectionClosedError",
    "Consumer",
    "ConsumerRecord",
    "DeliveryTimeoutError",
    "GroupDescription",
    "GroupListing",
    "GroupMemberDescription",
    "GroupPartitionOffsets",
    "LogDirDescription",
    "LogDirPartition",
    "NewTopic",
    "NoOffsetForPartitionError",
    "OffsetAndMetadata",
    "OffsetAndTimestamp",
    "OffsetSpec",
    "Partitioner",
    "Producer",
    "ProducerBufferFullError",
    "RebalanceCallback",
    "RecordDeserializationError",
    "RecordFuture",
    "RecordMetadata",
    "RequestTimeoutError",
    "TidelogConnectionError",
    "TidelogError",
    "TopicDescription",
    "TopicPartition",
    "key_hash",
    "partition_for_key",
]
