"""Share groups (queues): records acquired under a lock, settled one by one, retried with
backoff and dead-lettered (docs/QUEUES.md)."""

from .coordinator import ShareCoordinator
from .group import ShareGroup
from .partition import InFlight, RecordState, SharePartition
from .records import SHARE_STATE_TOPIC
from .settings import ShareSettings

__all__ = [
    "SHARE_STATE_TOPIC",
    "InFlight",
    "RecordState",
    "ShareCoordinator",
    "ShareGroup",
    "SharePartition",
    "ShareSettings",
]
