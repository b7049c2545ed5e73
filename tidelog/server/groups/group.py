"""One consumer group as a pure state machine: driven by requests and the time passed in, no
asyncio, no I/O (docs/GROUPS.md).

The broker keeps, per group, a **target assignment** computed by the group's assignor whenever
the membership, a subscription or the subscribed topics change (each change bumps the *group
epoch*), and, per member, what it **holds**: the partitions it has been given and has not yet
confirmed giving up. Reconciling a member (on its heartbeat) moves it towards its target:

* partitions it holds outside its target are **revoked**: left out of the assignment sent to
  it, but still held -- nobody else gets them -- until a heartbeat's ``owned`` leaves them out
  (or the member is removed);
* partitions of its target that nobody holds are **granted** at once.

So a partition never has two holders, and partitions that need not move never do. A member's
*epoch* goes up every time the assignment sent to it changes; requests carrying any other epoch
than its current or previous one (a response may be lost) are fenced.
"""

from __future__ import annotations

import re
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from tidelog.server.log import TopicPartition
from tidelog.wire import messages as m
from tidelog.wire.errors import (
    FencedMemberEpochError,
    GroupMaxSizeReachedError,
    InvalidRequestError,
    InvalidSessionTimeoutError,
    UnknownMemberIdError,
    UnreleasedInstanceIdError,
    UnsupportedAssignorError,
)

from .assignors import ASSIGNORS, AssignmentSpec

LEAVE_EPOCH: Final = -1
"""``member_epoch`` of a LeaveGroup that does not check the epoch."""


class GroupState(StrEnum):
    EMPTY = "empty"
    """No members (the group may still have committed offsets)."""
    RECONCILING = "reconciling"
    """Some member has not yet been sent its target, or has revocations to confirm."""
    STABLE = "stable"
    """Every member holds exactly its target and knows it."""
    DEAD = "dead"
    """Deleted."""


@dataclass(frozen=True, slots=True)
class GroupSettings:
    """The broker's group settings (BrokerConfig ``group_*``)."""

    heartbeat_interval_ms: int = 3_000
    min_session_timeout_ms: int = 1_000
    max_session_timeout_ms: int = 300_000
    max_size: int = 1_000


@dataclass(slots=True)
class Member:
    """One member as the broker sees it."""

    member_id: str
    instance_id: str | None
    client_id: str
    client_host: str
    subscribed_topics: tuple[str, ...]
    subscribed_pattern: str | None
    pattern: re.Pattern[str] | None
    assignor: str
    session_timeout_ms: int
    rebalance_timeout_ms: int
    session_deadline: int
    epoch: int = 1
    previous_epoch: int = 1
    """Also accepted (a response may have been lost); equal to ``epoch`` until it changes."""
    held: frozenset[TopicPartition] = frozenset()
    """Given to the member and not yet confirmed released."""
    revoking: frozenset[TopicPartition] = frozenset()
    """The part of ``held`` the member has been asked to give up."""
    sent: frozenset[TopicPartition] | None = None
    """The assignment last sent to the member (``None``: nothing sent yet)."""
    revoke_deadline: int | None = None
    """When the member is removed if it has not released ``revoking`` (rebalance timeout)."""
    departed: bool = False
    """A static member that left temporarily: it keeps its partitions until it returns or its
    session times out."""

    def subscribes(self, topic: str) -> bool:
        if topic in self.subscribed_topics:
            return True
        return self.pattern is not None and self.pattern.fullmatch(topic) is not None

    def check_epoch(self, epoch: int) -> bool:
        """Whether ``epoch`` is current; raises FencedMemberEpochError if it is neither the
        current nor the previous one."""
        if epoch == self.epoch:
            return True
        if epoch == self.previous_epoch:
            return False
        raise FencedMemberEpochError(
            f"member {self.member_id} is at epoch {self.epoch}, the request carries {epoch}"
        )


@dataclass(frozen=True, slots=True)
class Removal:
    """A member the group removed on its own, and why."""

    member_id: str
    reason: str


class ConsumerGroup:
    """The state of one group; every method takes the time (``now``, milliseconds of a
    monotonic clock) and the broker's topics (name -> partition count) it needs."""

    def __init__(self, group_id: str, settings: GroupSettings | None = None) -> None:
        self.group_id = group_id
        self.settings = settings or GroupSettings()
        self.members: dict[str, Member] = {}
        self.group_epoch = 0
        self.assignor = ""
        self.target: dict[str, frozenset[TopicPartition]] = {}
        self._instances: dict[str, str] = {}
        self._holder: dict[TopicPartition, str] = {}
        self._topics: Mapping[str, int] = {}
        self._seen: dict[str, int] = {}
        """Partition counts of the subscribed topics when the target was computed."""
        self.version = 0
        """Goes up whenever partitions are freed or the target changes: what members waiting
        for a change (held heartbeats) are woken for."""
        self.revision = 0
        """Goes up on every change of the stored state (:mod:`.groupstate`): membership,
        target, what members hold and what they were sent, epochs. The coordinator stores the
        group before answering whenever this moved."""

    @classmethod
    def resume(
        cls,
        group_id: str,
        settings: GroupSettings,
        *,
        group_epoch: int,
        assignor: str,
        seen: Mapping[str, int],
        members: Iterable[Member],
        targets: Mapping[str, frozenset[TopicPartition]],
        topics: Mapping[str, int],
    ) -> ConsumerGroup:
        """A group as it was stored (:mod:`.groupstate`): members keep their ids, epochs and
        partitions; the target stays until something changes it."""
        group = cls(group_id, settings)
        group.group_epoch = group_epoch
        group.assignor = assignor
        group._seen = dict(seen)
        group._topics = topics
        for member in members:
            group.members[member.member_id] = member
            group.target[member.member_id] = targets.get(member.member_id, frozenset())
            if member.instance_id is not None:
                group._instances[member.instance_id] = member.member_id
            for tp in member.held:
                group._holder[tp] = member.member_id
        return group

    @property
    def seen(self) -> dict[str, int]:
        """The subscribed topics' partition counts the target was computed for."""
        return dict(self._seen)

    # --- state ------------------------------------------------------------------------------

    @property
    def state(self) -> GroupState:
        if not self.members:
            return GroupState.EMPTY
        for member in self.members.values():
            if member.departed:
                continue
            if member.revoking or member.sent != self.target.get(member.member_id, frozenset()):
                return GroupState.RECONCILING
        return GroupState.STABLE

    def holder(self, tp: TopicPartition) -> str | None:
        """The member holding ``tp`` now, if any."""
        return self._holder.get(tp)

    def may_hold(self, member_id: str) -> bool:
        """Whether the member's heartbeat may be held until its assignment changes: not while
        it has partitions to give up (it is about to heartbeat again to release them)."""
        member = self.members.get(member_id)
        return member is not None and not member.departed and not member.revoking

    def waiting(self, member_id: str) -> bool:
        """Whether the member waits for partitions of its target that others still hold."""
        member = self.members.get(member_id)
        if member is None or member.departed:
            return False
        return not self.target.get(member_id, frozenset()) <= member.held

    def heartbeat_interval(self, member: Member) -> int:
        """Three heartbeats per session timeout at least."""
        return max(1, min(self.settings.heartbeat_interval_ms, member.session_timeout_ms // 3))

    # --- requests ---------------------------------------------------------------------------

    def join(
        self,
        request: m.JoinGroupRequest,
        *,
        now: int,
        topics: Mapping[str, int],
        client_host: str = "",
    ) -> m.JoinGroupResponse:
        """Add a member (or replace a static member returning with its instance id, which then
        gets its partitions back without anything moving). A ``member_id`` naming a current
        member is that member rejoining after being fenced: it is replaced by a new one."""
        self._validate_join(request)
        self._topics = topics
        pattern = re.compile(request.subscribed_pattern) if request.subscribed_pattern else None
        previous: Member | None = None
        if request.instance_id is not None and request.instance_id in self._instances:
            previous = self.members[self._instances[request.instance_id]]
            other = request.member_id
            if other and other != previous.member_id and other in self.members:
                raise UnreleasedInstanceIdError(
                    f"instance {request.instance_id!r} is held by member "
                    f"{previous.member_id}, not {other}"
                )
        elif request.member_id in self.members:
            self._remove(request.member_id)  # rejoining after a fence: a new incarnation
        elif len(self.members) >= self.settings.max_size:
            raise GroupMaxSizeReachedError(
                f"group {self.group_id!r} has {len(self.members)} members, the maximum"
            )
        member = Member(
            member_id=f"{request.client_id or 'member'}-{uuid.uuid4()}",
            instance_id=request.instance_id,
            client_id=request.client_id,
            client_host=client_host,
            subscribed_topics=tuple(dict.fromkeys(request.subscribed_topics)),
            subscribed_pattern=request.subscribed_pattern,
            pattern=pattern,
            assignor=request.assignor,
            session_timeout_ms=request.session_timeout_ms,
            rebalance_timeout_ms=request.rebalance_timeout_ms,
            session_deadline=now + request.session_timeout_ms,
        )
        if previous is not None:
            self._replace(previous, member)
        else:
            self.members[member.member_id] = member
            if member.instance_id is not None:
                self._instances[member.instance_id] = member.member_id
            self._retarget()
        self._reconcile(member, now)
        return m.JoinGroupResponse(
            member_id=member.member_id,
            member_epoch=member.epoch,
            heartbeat_interval_ms=self.heartbeat_interval(member),
            assignment=_wire(member.sent or frozenset()),
        )

    def _validate_join(self, request: m.JoinGroupRequest) -> None:
        if request.assignor not in ASSIGNORS:
            raise UnsupportedAssignorError(
                f"unknown assignor {request.assignor!r}; known: {', '.join(sorted(ASSIGNORS))}"
            )
        low, high = self.settings.min_session_timeout_ms, self.settings.max_session_timeout_ms
        if not low <= request.session_timeout_ms <= high:
            raise InvalidSessionTimeoutError(
                f"session timeout {request.session_timeout_ms} ms is outside [{low}, {high}]"
            )
        if request.rebalance_timeout_ms <= 0:
            raise InvalidRequestError("rebalance_timeout_ms must be positive")
        if request.subscribed_pattern:
            try:
                re.compile(request.subscribed_pattern)
            except re.error as exc:
                raise InvalidRequestError(f"bad subscription pattern: {exc}") from None
        if not request.subscribed_topics and not request.subscribed_pattern:
            raise InvalidRequestError("subscribe to at least one topic or a pattern")

    def _replace(self, old: Member, new: Member) -> None:
        """A static member's new incarnation takes over the old one's place and partitions."""
        self.revision += 1
        del self.members[old.member_id]
        self.members[new.member_id] = new
        assert new.instance_id is not None
        self._instances[new.instance_id] = new.member_id
        new.held, new.revoking = old.held, old.revoking
        new.revoke_deadline = old.revoke_deadline
        for tp in new.held:
            self._holder[tp] = new.member_id
        self.target[new.member_id] = self.target.pop(old.member_id, frozenset())
        # Distinct from anything the old incarnation was told.
        new.epoch = new.previous_epoch = old.epoch + 1
        same = (old.subscribed_topics, old.subscribed_pattern, old.assignor) == (
            new.subscribed_topics,
            new.subscribed_pattern,
            new.assignor,
        )
        if not same:
            self._retarget()

    def heartbeat(self, request: m.HeartbeatRequest, *, now: int) -> m.HeartbeatResponse:
        """Keep the member alive, take note of the partitions it released (left out of
        ``owned``) and of a new subscription, and answer with its assignment if that changed
        (or if the member's epoch shows it missed the last one)."""
        member = self._member(request.member_id)
        current = member.check_epoch(request.member_epoch)
        member.session_deadline = now + member.session_timeout_ms
        if request.owned is not None:
            self._release(member, member.revoking - _flatten(request.owned))
        if request.subscribed_topics is not None:
            topics_now = tuple(dict.fromkeys(request.subscribed_topics))
            if topics_now != member.subscribed_topics:
                if not topics_now and member.pattern is None:
                    raise InvalidRequestError("subscribe to at least one topic or a pattern")
                member.subscribed_topics = topics_now
                self._retarget()
        changed = self._reconcile(member, now)
        return self._heartbeat_response(member, changed or not current)

    def poll(self, member_id: str, now: int) -> m.HeartbeatResponse:
        """Reconcile a member between its heartbeats (while its heartbeat is held); the
        answer carries the assignment only if it changed."""
        member = self._member(member_id)
        changed = self._reconcile(member, now)
        return self._heartbeat_response(member, changed)

    def _heartbeat_response(self, member: Member, send: bool) -> m.HeartbeatResponse:
        return m.HeartbeatResponse(
            member_epoch=member.epoch,
            heartbeat_interval_ms=self.heartbeat_interval(member),
            assignment=_wire(member.sent or frozenset()) if send else None,
        )

    def leave(self, request: m.LeaveGroupRequest, *, now: int) -> None:
        """A dynamic member leaves: its partitions are free at once. A static member leaving
        without naming its ``instance_id`` leaves temporarily: its partitions wait for it
        until its session times out. Naming it leaves for good."""
        if not request.member_id and request.instance_id is not None:
            mid = self._instances.get(request.instance_id)
            if mid is None:
                raise UnknownMemberIdError(f"no member with instance id {request.instance_id!r}")
            member = self.members[mid]
        else:
            member = self._member(request.member_id)
            if request.instance_id is not None and request.instance_id != member.instance_id:
                raise UnreleasedInstanceIdError(
                    f"member {member.member_id} does not hold instance {request.instance_id!r}"
                )
            if request.member_epoch != LEAVE_EPOCH:
                member.check_epoch(request.member_epoch)
        if member.instance_id is not None and request.instance_id is None:
            member.departed = True
            self.revision += 1
            member.session_deadline = now + member.session_timeout_ms
            self._release(member, member.revoking)
            return
        self._remove(member.member_id)
        self._retarget()

    def check_commit(
        self, member_id: str, epoch: int, partitions: Iterable[TopicPartition]
    ) -> dict[TopicPartition, str]:
        """Validate a member's offset commit. Raises UnknownMemberIdError or
        FencedMemberEpochError for the request; returns, per partition the member does not
        hold, why it may not commit it."""
        member = self._member(member_id)
        member.check_epoch(epoch)
        return {
            tp: f"{tp} is not assigned to member {member_id}"
            for tp in partitions
            if tp not in member.held
        }

    def expire(self, now: int) -> list[Removal]:
        """Remove the members whose session timed out and those that did not release revoked
        partitions within their rebalance timeout."""
        removed: list[Removal] = []
        for member in list(self.members.values()):
            if now > member.session_deadline:
                reason = f"session timeout ({member.session_timeout_ms} ms)"
            elif member.revoke_deadline is not None and now > member.revoke_deadline:
                reason = f"rebalance timeout ({member.rebalance_timeout_ms} ms)"
            else:
                continue
            self._remove(member.member_id)
            removed.append(Removal(member.member_id, reason))
        if removed:
            self._retarget()
        return removed

    def update_topics(self, topics: Mapping[str, int]) -> bool:
        """Take note of the broker's topics; recompute the target if a subscribed topic
        appeared, went or changed its partition count. Returns whether it did."""
        self._topics = topics
        if self._subscribed_counts() == self._seen:
            return False
        self._retarget()
        return True

    # --- internals --------------------------------------------------------------------------

    def _member(self, member_id: str) -> Member:
        member = self.members.get(member_id)
        if member is None or member.departed:
            raise UnknownMemberIdError(
                f"group {self.group_id!r} has no member {member_id!r}; rejoin the group"
            )
        return member

    def _remove(self, member_id: str) -> None:
        self.version += 1
        self.revision += 1
        member = self.members.pop(member_id)
        for tp in member.held:
            self._holder.pop(tp, None)
        self.target.pop(member_id, None)
        if member.instance_id is not None:
            self._instances.pop(member.instance_id, None)

    def _release(self, member: Member, partitions: frozenset[TopicPartition]) -> None:
        if not partitions:
            return
        self.version += 1
        self.revision += 1
        for tp in partitions:
            if self._holder.get(tp) == member.member_id:
                del self._holder[tp]
        member.held -= partitions
        member.revoking -= partitions
        if not member.revoking:
            member.revoke_deadline = None

    def _subscribed_counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for member in self.members.values():
            for topic in member.subscribed_topics:
                if topic in self._topics:
                    out[topic] = self._topics[topic]
            if member.pattern is not None:
                for topic, count in self._topics.items():
                    if member.pattern.fullmatch(topic):
                        out[topic] = count
        return out

    def _choose_assignor(self) -> str:
        """The assignor most members ask for; ties go to the earliest member's choice."""
        votes = Counter(m.assignor for m in self.members.values())
        best = max(votes.values(), default=0)
        for member in self.members.values():  # insertion (join) order
            if votes[member.assignor] == best:
                return member.assignor
        return "sticky"

    def _retarget(self) -> None:
        """A new group epoch: recompute the target assignment."""
        self.group_epoch += 1
        self.version += 1
        self.revision += 1
        counts = self._subscribed_counts()
        self._seen = counts
        if not self.members:
            self.target = {}
            return
        self.assignor = self._choose_assignor()
        spec = AssignmentSpec(
            members={
                mid: frozenset(t for t in counts if member.subscribes(t))
                for mid, member in self.members.items()
            },
            partitions=counts,
            current=self.target,
            rank={mid: mb.instance_id or mid for mid, mb in self.members.items()},
        )
        self.target = ASSIGNORS[self.assignor](spec)
        for member in self.members.values():
            if member.departed:
                # It holds nothing really (it left): what it must give up is free at once.
                self._release(member, member.held - self.target[member.member_id])

    def _reconcile(self, member: Member, now: int) -> bool:
        """Move ``member`` towards its target; returns whether its assignment (and epoch)
        changed."""
        target = self.target.get(member.member_id, frozenset())
        granted = frozenset(tp for tp in target - member.held if tp not in self._holder)
        for tp in granted:
            self._holder[tp] = member.member_id
        member.held |= granted
        revoking = member.held - target
        if granted or revoking != member.revoking:
            self.revision += 1
        if revoking and (member.revoke_deadline is None or not revoking <= member.revoking):
            member.revoke_deadline = now + member.rebalance_timeout_ms
        elif not revoking:
            member.revoke_deadline = None
        member.revoking = revoking
        assignment = member.held - revoking
        if assignment == member.sent:
            return False
        if member.sent is not None:
            member.previous_epoch, member.epoch = member.epoch, member.epoch + 1
        member.sent = assignment
        self.revision += 1
        return True

    # --- description ------------------------------------------------------------------------

    def describe(self) -> m.GroupDescription:
        return m.GroupDescription(
            self.group_id,
            state=self.state.value,
            group_epoch=self.group_epoch,
            assignor=self.assignor,
            members=tuple(
                m.MemberDescription(
                    member_id=mb.member_id,
                    member_epoch=mb.epoch,
                    instance_id=mb.instance_id,
                    client_id=mb.client_id,
                    client_host=mb.client_host,
                    subscribed_topics=mb.subscribed_topics,
                    subscribed_pattern=mb.subscribed_pattern,
                    assignment=_wire(mb.held),
                    target_assignment=_wire(self.target.get(mb.member_id, frozenset())),
                )
                for mb in self.members.values()
            ),
        )


def _wire(tps: Iterable[TopicPartition]) -> tuple[m.TopicPartitions, ...]:
    by_topic: dict[str, list[int]] = {}
    for tp in tps:
        by_topic.setdefault(tp.topic, []).append(tp.partition)
    return tuple(m.TopicPartitions(t, tuple(sorted(ps))) for t, ps in sorted(by_topic.items()))


def _flatten(groups: Iterable[m.TopicPartitions]) -> frozenset[TopicPartition]:
    return frozenset(TopicPartition(g.topic, p) for g in groups for p in g.partitions)


def to_partitions(groups: Iterable[m.TopicPartitions]) -> frozenset[TopicPartition]:
    """Wire ``TopicPartitions`` as a set of partitions."""
    return _flatten(groups)


def to_wire(tps: Iterable[TopicPartition]) -> tuple[m.TopicPartitions, ...]:
    """Partitions as wire ``TopicPartitions``, sorted."""
    return _wire(tps)
