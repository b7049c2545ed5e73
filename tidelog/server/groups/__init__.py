"""Consumer groups: the broker-side coordinator (docs/GROUPS.md).

* :mod:`.assignors` -- ``range``, ``round-robin`` and ``sticky``: pure functions.
* :mod:`.group` -- one group as a pure state machine driven by requests and the time.
* :mod:`.records` -- the record format of the internal topic ``__consumer_offsets``.
* :mod:`.groupstate` -- a group to its stored record and back.
* :mod:`.store` -- the topic as the coordinator uses it, and the committed offsets.
* :mod:`.legacy`, :mod:`.migration` -- the old offsets store, read once and migrated.
* :mod:`.coordinator` -- the asyncio edge: the group APIs and one housekeeping loop.
"""

from .assignors import ASSIGNORS, AssignmentSpec, range_assign, round_robin_assign, sticky_assign
from .coordinator import GroupCoordinator, GroupRequest, monotonic_ms, validate_group_id
from .group import ConsumerGroup, GroupSettings, GroupState, Member, Removal
from .records import INTERNAL_PREFIX, OFFSETS_TOPIC, partition_for
from .store import GroupStore, OffsetValue

__all__ = [
    "ASSIGNORS",
    "INTERNAL_PREFIX",
    "OFFSETS_TOPIC",
    "AssignmentSpec",
    "ConsumerGroup",
    "GroupCoordinator",
    "GroupRequest",
    "GroupSettings",
    "GroupState",
    "GroupStore",
    "Member",
    "OffsetValue",
    "Removal",
    "monotonic_ms",
    "partition_for",
    "range_assign",
    "round_robin_assign",
    "sticky_assign",
    "validate_group_id",
]
