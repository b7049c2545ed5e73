"""Partition assignors: pure functions from a group's members and topics to an assignment.

Every assignor is deterministic (the same spec gives the same assignment, whatever the order of
the mappings it is given) and gives each partition of a subscribed topic to exactly one member
subscribed to that topic. Members are ranked by :attr:`AssignmentSpec.rank` (a static member's
instance id, else its member id), so a static member that restarts under a new member id keeps
its place.

* ``range`` -- per topic, the members subscribed to it split its partitions into contiguous
  ranges in rank order (the first ``n % k`` members get one more). Partition *p* of topics with
  the same partition count and subscribers goes to the same member (co-partitioning); the
  balance is per topic, so a member may get one extra partition of every topic.
* ``round-robin`` -- every partition in (topic, partition) order is dealt to the next member in
  rank order that is subscribed to its topic. Balanced within one overall when all members
  subscribe to the same topics.
* ``sticky`` -- balanced within one (among the members that can take a partition) while moving
  as few partitions as possible from the previous assignment: partitions stay with their
  current owner unless the owner left, unsubscribed, or holds more than its share.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final, TypeAlias

from tidelog.server.log import TopicPartition

Assignment: TypeAlias = dict[str, frozenset[TopicPartition]]
"""Member id -> the partitions it is assigned."""


@dataclass(frozen=True, slots=True)
class AssignmentSpec:
    """What an assignor needs to know about a group."""

    members: Mapping[str, frozenset[str]]
    """Member id -> the topics it subscribes to (patterns already resolved)."""
    partitions: Mapping[str, int]
    """Topic -> partition count, for every topic some member subscribes to."""
    current: Mapping[str, frozenset[TopicPartition]] = field(default_factory=dict)
    """The previous target assignment (what ``sticky`` keeps)."""
    rank: Mapping[str, str] = field(default_factory=dict)
    """Member id -> its sort key (default: the member id)."""

    def ordered(self) -> list[str]:
        """Member ids in rank order (ties broken by member id)."""
        return sorted(self.members, key=lambda mid: (self.rank.get(mid, mid), mid))

    def topics(self) -> list[str]:
        """Subscribed topics that exist, sorted."""
        wanted = set().union(*self.members.values()) if self.members else set()
        return sorted(t for t in wanted if self.partitions.get(t, 0) > 0)


Assignor: TypeAlias = Callable[[AssignmentSpec], Assignment]


def _empty(spec: AssignmentSpec) -> dict[str, set[TopicPartition]]:
    return {mid: set() for mid in spec.members}


def _freeze(out: dict[str, set[TopicPartition]]) -> Assignment:
    return {mid: frozenset(tps) for mid, tps in out.items()}


def range_assign(spec: AssignmentSpec) -> Assignment:
    """Per topic, contiguous ranges of partitions in member rank order."""
    out = _empty(spec)
    order = spec.ordered()
    for topic in spec.topics():
        subscribers = [mid for mid in order if topic in spec.members[mid]]
        if not subscribers:
            continue
        per, extra = divmod(spec.partitions[topic], len(subscribers))
        start = 0
        for i, mid in enumerate(subscribers):
            size = per + (1 if i < extra else 0)
            out[mid].update(TopicPartition(topic, p) for p in range(start, start + size))
            start += size
    return _freeze(out)


def round_robin_assign(spec: AssignmentSpec) -> Assignment:
    """Partitions in (topic, partition) order dealt to members in rank order, skipping members
    not subscribed to the partition's topic."""
    out = _empty(spec)
    order = spec.ordered()
    if not order:
        return _freeze(out)
    turn = 0
    for topic in spec.topics():
        for p in range(spec.partitions[topic]):
            for step in range(len(order)):
                mid = order[(turn + step) % len(order)]
                if topic in spec.members[mid]:
                    out[mid].add(TopicPartition(topic, p))
                    turn = (turn + step + 1) % len(order)
                    break
    return _freeze(out)


def sticky_assign(spec: AssignmentSpec) -> Assignment:
    """Balanced, moving as little as possible from ``spec.current`` (see the module doc).

    1. Every member keeps the partitions it holds that still exist and that it still
       subscribes to (a partition two members claim stays with the first in rank order).
    2. Partitions nobody keeps go, the most constrained first, to the eligible member with the
       fewest partitions.
    3. While some member has at least two more partitions than an eligible other, one moves
       from the fullest to the emptiest. Each move lowers the sum of squared counts, so this
       ends, and it only moves what balance requires.
    """
    order = spec.ordered()
    position = {mid: i for i, mid in enumerate(order)}
    out = _empty(spec)
    owner: dict[TopicPartition, str] = {}
    for mid in order:
        subscribed = spec.members[mid]
        for tp in sorted(spec.current.get(mid, ())):
            if (
                tp.topic in subscribed
                and 0 <= tp.partition < spec.partitions.get(tp.topic, 0)
                and tp not in owner
            ):
                owner[tp] = mid
                out[mid].add(tp)
    eligible = {t: [mid for mid in order if t in spec.members[mid]] for t in spec.topics()}
    free = [
        TopicPartition(t, p)
        for t in spec.topics()
        for p in range(spec.partitions[t])
        if TopicPartition(t, p) not in owner and eligible[t]
    ]
    free.sort(key=lambda tp: (len(eligible[tp.topic]), tp))
    for tp in free:
        mid = min(eligible[tp.topic], key=lambda m: (len(out[m]), position[m]))
        out[mid].add(tp)
    _rebalance(out, order, position, spec.members)
    return _freeze(out)


def _rebalance(
    out: dict[str, set[TopicPartition]],
    order: list[str],
    position: Mapping[str, int],
    members: Mapping[str, frozenset[str]],
) -> None:
    while True:
        donors = sorted(order, key=lambda m: (-len(out[m]), position[m]))
        takers = sorted(order, key=lambda m: (len(out[m]), position[m]))
        if not donors or len(out[donors[0]]) - len(out[takers[0]]) < 2:
            return
        if not _move_one(out, donors, takers, members):
            return


def _move_one(
    out: dict[str, set[TopicPartition]],
    donors: list[str],
    takers: list[str],
    members: Mapping[str, frozenset[str]],
) -> bool:
    for donor in donors:
        have = len(out[donor])
        for taker in takers:
            if len(out[taker]) > have - 2:
                break  # takers are sorted by count: no one further can take
            # The donor's highest partition the taker may have: deterministic, and it keeps
            # the low partitions (usually the older assignment) where they are.
            for tp in sorted(out[donor], reverse=True):
                if tp.topic in members[taker]:
                    out[donor].remove(tp)
                    out[taker].add(tp)
                    return True
    return False


ASSIGNORS: Final[Mapping[str, Assignor]] = {
    "range": range_assign,
    "round-robin": round_robin_assign,
    "sticky": sticky_assign,
}
"""Assignors by the name a member asks for in JoinGroup."""
