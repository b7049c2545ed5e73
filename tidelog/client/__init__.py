"""The async tidelog client: :class:`Producer`, :class:`Consumer` (alone or in a consumer
group) and :class:`AdminClient`.

Loop-agnostic asyncio (uvloop is welcome but not required). Errors are typed:
:mod:`tidelog.client.errors` re-exports the broker's error classes (each with ``retriable``)
and adds the client's own. The wire names a user of the client needs (the default port, enums
of its arguments and answers, the broker errors worth catching) are re-exported here, so
programs built on the client (the CLI among them) never import :mod:`tidelog.wire`.
"""

from tidelog.wire.api import DEFAULT_BROKER_PORT
from tidelog.wire.compression import Compression
from tidelog.wire.errors import (
    GroupIdNotFoundError,
    InvalidConfigError,
    InvalidRecordStateError,
    MessageTooLargeError,
    QueueFullError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
)
from tidelog.wire.messages import Acks, ConfigSource, OffsetSpec

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
from .bulk import BulkFuture, OffsetRange
from .cluster import Cluster, ClusterMetadata
from .connection import Connection
from .consumer import Consumer
from .consumer_batch import ConsumerBatch
from .deadletters import DeadLetter, DeadLetterPartition, QueueAdmin, RedriveResult
from .errors import (
    BrokerError,
    BrokerUnavailableError,
    ClientClosedError,
    ClientError,
    ClientUsageError,
    ConnectionClosedError,
    CorruptBatchError,
    DamagedRangeError,
    DeliveryTimeoutError,
    MissingRangeError,
    NoOffsetForPartitionError,
    OffsetOutOfRangeError,
    ProducerBufferFullError,
    ProducerFencedError,
    RecordDeserializationError,
    RequestTimeoutError,
    TidelogConnectionError,
    TidelogError,
    UnreadableRangeError,
)
from .group import CommitFailedError, RebalanceCallback
from .offsets import OffsetAndMetadata
from .partitioner import Partitioner, key_hash, partition_for_key
from .producer import Producer
from .queue import QueueConsumer, QueueMessage, alter_queue, describe_queue
from .types import ConsumerRecord, OffsetAndTimestamp, RecordMetadata, TopicPartition
from .workers import run_workers

__all__ = [
    "DeadLetter",
    "DeadLetterPartition",
    "GroupIdNotFoundError",
    "InvalidRecordStateError",
    "QueueAdmin",
    "QueueConsumer",
    "QueueFullError",
    "RedriveResult",
    "alter_queue",
    "describe_queue",
    "QueueMessage",
    "run_workers",
    "DEFAULT_BROKER_PORT",
    "Acks",
    "AdminClient",
    "Backoff",
    "BrokerError",
    "BrokerUnavailableError",
    "BulkFuture",
    "ClientClosedError",
    "ClientError",
    "ClientUsageError",
    "Cluster",
    "ClusterDescription",
    "ClusterMetadata",
    "CommitFailedError",
    "Compression",
    "ConfigEntry",
    "ConfigSource",
    "Connection",
    "ConnectionClosedError",
    "Consumer",
    "ConsumerBatch",
    "ConsumerRecord",
    "CorruptBatchError",
    "DamagedRangeError",
    "DeliveryTimeoutError",
    "GroupDescription",
    "GroupListing",
    "GroupMemberDescription",
    "GroupPartitionOffsets",
    "InvalidConfigError",
    "LogDirDescription",
    "LogDirPartition",
    "MessageTooLargeError",
    "MissingRangeError",
    "NewTopic",
    "NoOffsetForPartitionError",
    "OffsetAndMetadata",
    "OffsetAndTimestamp",
    "OffsetOutOfRangeError",
    "OffsetRange",
    "OffsetSpec",
    "Partitioner",
    "Producer",
    "ProducerBufferFullError",
    "ProducerFencedError",
    "RebalanceCallback",
    "RecordDeserializationError",
    "RecordFuture",
    "RecordMetadata",
    "RequestTimeoutError",
    "TidelogConnectionError",
    "TidelogError",
    "TopicAlreadyExistsError",
    "TopicDescription",
    "TopicPartition",
    "UnknownTopicOrPartitionError",
    "UnreadableRangeError",
    "key_hash",
    "partition_for_key",
]
