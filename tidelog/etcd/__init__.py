"""etcd v3 for tidelog's cluster metadata: an asyncio client over etcd's JSON gateway, lease
keepalives on a thread of their own, and a local etcd process for tests and ``tidelog cluster``.

A leaf package like ``wire``: it imports nothing else of tidelog, so the broker (cluster
metadata) and the supervisor (``tidelog cluster``) can both use it.
"""

from .client import (
    EtcdClient,
    EtcdCompactedError,
    EtcdError,
    EtcdUnavailableError,
    WatchBatch,
)
from .lease import LeaseKeeper
from .process import EtcdNotInstalledError, EtcdProcess, etcd_binary, free_port
from .types import (
    Compare,
    Delete,
    EventType,
    Get,
    KeyValue,
    Lease,
    Put,
    Result,
    Target,
    TxnResult,
    WatchEvent,
    prefix_end,
)

__all__ = [
    "Compare",
    "Delete",
    "EtcdClient",
    "EtcdCompactedError",
    "EtcdError",
    "EtcdNotInstalledError",
    "EtcdProcess",
    "EtcdUnavailableError",
    "EventType",
    "Get",
    "KeyValue",
    "Lease",
    "LeaseKeeper",
    "Put",
    "Result",
    "Target",
    "TxnResult",
    "WatchBatch",
    "WatchEvent",
    "etcd_binary",
    "free_port",
    "prefix_end",
]
