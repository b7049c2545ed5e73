"""Consumer groups: the broker-side coordinator (docs/GROUPS.md).

* :mod:`.assignors` -- ``range``, ``round-robin`` and ``sticky``: pure functions.
* :mod:`.group` -- one group as a pure state machine driven by requests and the time.
* :mod:`.offsets` -- committed offsets on an internal log with snapshots.
* :mod:`.coordinator` -- the asyncio edge: the group APIs and one housekeeping loop.
"""

from .assignors import ASSIGNORS, AssignmentSpec, range_assign, round_robin_assign, sticky_assign
from .coordinator import GroupCoordinator, GroupRequest, monotonic_ms, validate_group_id
from .group import ConsumerGroup, GroupSettings, GroupState, Member, Removal
from .offsets import OFFSETS_DIR, OffsetStore, OffsetValue

__all__ = [
    "ASSIGNORS",
    "OFFSETS_DIR",
    "AssignmentSpec",
    "ConsumerGroup",
    "GroupCoordinator",
    "GroupRequest",
    "GroupSettings",
    "GroupState",
    "Member",
    "OffsetStore",
    "OffsetValue",
    "Removal",
    "monotonic_ms",
    "range_assign",
    "round_robin_assign",
    "sticky_assign",
    "validate_group_id",
]
