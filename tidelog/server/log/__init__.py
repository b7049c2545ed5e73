"""Log storage: segmented, indexed, crash-recovering partition logs (docs/STORAGE.md).

The classes take Kafka's shapes and names: :class:`LogSegment` with its :class:`OffsetIndex`
and :class:`TimeIndex`, :class:`PartitionLog`, :class:`LogManager`. Storage is synchronous;
:class:`GroupCommitter` is the asyncio edge that shares fsyncs between producers.
"""

from .cache import HandleCache
from .config import (
    CleanupPolicy,
    Clock,
    FlushPolicy,
    TopicConfig,
    TopicPartition,
    system_clock,
    validate_topic_name,
)
from .faults import Fault, FaultyFileSystem
from .files import Files, FileSystem, OsFileSystem, SyncJob, storage_error
from .flush import GroupCommitter
from .index import OffsetIndex, TimeIndex
from .loader import LoadReport
from .logfile import LogOfflineError
from .manager import LogManager, TopicInfo
from .memfs import MemoryFileSystem
from .partition import PartitionLog
from .results import AppendInfo, FetchData, LogReadResult, TimestampOffset, Unreadable
from .segment import LogSegment

__all__ = [
    "AppendInfo",
    "Clock",
    "Fault",
    "FaultyFileSystem",
    "FetchData",
    "FileSystem",
    "Files",
    "CleanupPolicy",
    "FlushPolicy",
    "GroupCommitter",
    "HandleCache",
    "LoadReport",
    "LogManager",
    "LogOfflineError",
    "LogReadResult",
    "LogSegment",
    "MemoryFileSystem",
    "OffsetIndex",
    "OsFileSystem",
    "PartitionLog",
    "SyncJob",
    "TimeIndex",
    "TimestampOffset",
    "TopicConfig",
    "TopicInfo",
    "TopicPartition",
    "Unreadable",
    "storage_error",
    "system_clock",
    "validate_topic_name",
]
