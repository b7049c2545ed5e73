"""Drive a ConsumerGroup the way well-behaved clients would, and check its invariants."""

from __future__ import annotations

from collections.abc import Iterable

from tidelog.server.groups import ConsumerGroup, GroupSettings
from tidelog.server.groups.group import to_partitions, to_wire
from tidelog.server.log import TopicPartition as TP
from tidelog.wire import messages as m

SESSION_MS = 10_000
REBALANCE_MS = 30_000


class Client:
    """A member that reports what it owns. What it is told becomes its ``target``; it owns
    that (giving up what it was told to give up, taking what it was given) once it reconciles:
    at once by default, or when the test says so (``reconcile=False``)."""

    def __init__(self, group: ConsumerGroup, response: m.JoinGroupResponse) -> None:
        self.group = group
        self.member_id = response.member_id
        self.epoch = response.member_epoch
        self.target: frozenset[TP] = to_partitions(response.assignment)
        self.owned: frozenset[TP] = self.target

    def heartbeat(
        self, now: int, *, reconcile: bool = True, **kwargs: object
    ) -> m.HeartbeatResponse:
        response = self.group.heartbeat(
            m.HeartbeatRequest(
                self.group.group_id, self.member_id, self.epoch, owned=to_wire(self.owned), **kwargs
            ),
            now=now,
        )
        self.apply(response, reconcile=reconcile)
        return response

    def apply(self, response: m.HeartbeatResponse, *, reconcile: bool = True) -> None:
        self.epoch = response.member_epoch
        if response.assignment is not None:
            self.target = to_partitions(response.assignment)
        if reconcile:
            self.reconcile()

    def reconcile(self) -> None:
        self.owned = self.target

    def crash(self) -> None:
        self.owned = self.target = frozenset()


def join(
    group: ConsumerGroup,
    now: int,
    topics: dict[str, int],
    subscribed: Iterable[str] = ("t",),
    **kwargs: object,
) -> Client:
    kwargs.setdefault("session_timeout_ms", SESSION_MS)
    kwargs.setdefault("rebalance_timeout_ms", REBALANCE_MS)
    request = m.JoinGroupRequest(group.group_id, tuple(subscribed), **kwargs)  # type: ignore[arg-type]
    return Client(group, group.join(request, now=now, topics=topics))


def new_group(**settings: int) -> ConsumerGroup:
    return ConsumerGroup("g", GroupSettings(**settings))


def check_invariants(group: ConsumerGroup, clients: Iterable[Client]) -> None:
    """No partition has two holders on the broker, nor two owners among the clients; what a
    member was told it owns, it holds."""
    held: dict[TP, str] = {}
    for member in group.members.values():
        for tp in member.held:
            assert tp not in held, f"{tp} held by {held[tp]} and {member.member_id}"
            held[tp] = member.member_id
            assert group.holder(tp) == member.member_id
        assert member.revoking <= member.held
        if member.sent is not None:
            assert member.sent <= member.held
    owners: dict[TP, str] = {}
    for client in clients:
        for tp in client.owned:
            assert tp not in owners, f"{tp} owned by clients {owners[tp]} and {client.member_id}"
            owners[tp] = client.member_id
            if client.member_id in group.members:
                assert held.get(tp) == client.member_id


def settle(group: ConsumerGroup, clients: list[Client], now: int, rounds: int = 6) -> None:
    """Heartbeat every client a few rounds (each applying what it was told)."""
    for _ in range(rounds):
        for client in clients:
            client.heartbeat(now)
            check_invariants(group, clients)
