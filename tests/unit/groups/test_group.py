"""The group state machine, driven by requests and an explicit clock."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidelog.server.groups import GroupState
from tidelog.server.groups.group import to_partitions
from tidelog.server.log import TopicPartition as TP
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

from .helpers import REBALANCE_MS, SESSION_MS, Client, check_invariants, join, new_group, settle

TOPICS = {"t": 6}


def test_first_member_gets_everything_at_once() -> None:
    group = new_group()
    a = join(group, 0, TOPICS)
    assert a.owned == {TP("t", p) for p in range(6)}
    assert a.epoch == 1
    assert group.state is GroupState.STABLE
    assert group.group_epoch == 1


def test_a_partition_moves_only_after_its_owner_released_it() -> None:
    group = new_group()
    a = join(group, 0, TOPICS)
    b = join(group, 0, TOPICS)
    assert b.owned == frozenset()  # everything is still held by a
    assert group.state is GroupState.RECONCILING
    assert group.waiting(b.member_id)
    assert b.heartbeat(0).assignment is None  # nothing free yet
    response = a.heartbeat(0)
    assert response.assignment is not None and len(a.owned) == 3
    assert a.epoch == 2
    revoked = {TP("t", p) for p in range(6)} - a.owned
    # Told, not yet confirmed: still held by a, so b cannot have them.
    assert all(group.holder(tp) == a.member_id for tp in revoked)
    assert group.poll(b.member_id, 0).assignment is None
    a.heartbeat(0)  # owned now leaves them out: released
    assert all(group.holder(tp) is None for tp in revoked)
    b.apply(group.poll(b.member_id, 0))
    assert b.owned == revoked and b.epoch == 2
    check_invariants(group, [a, b])
    assert group.state is GroupState.STABLE


def test_heartbeat_with_owned_unchanged_keeps_revoked_partitions_held() -> None:
    group = new_group()
    a = join(group, 0, TOPICS)
    join(group, 0, TOPICS)
    a.heartbeat(0)
    member = group.members[a.member_id]
    assert member.revoking
    group.heartbeat(m.HeartbeatRequest("g", a.member_id, a.epoch), now=1)  # owned=None
    assert member.revoking


def test_stale_epochs_are_fenced_and_the_previous_one_gets_the_assignment_again() -> None:
    group = new_group()
    a = join(group, 0, TOPICS)
    join(group, 0, TOPICS)
    old = a.epoch
    a.heartbeat(0)
    assert a.epoch == old + 1
    # The response was lost: the previous epoch still works and gets the assignment again.
    again = group.heartbeat(m.HeartbeatRequest("g", a.member_id, old), now=0)
    assert again.assignment is not None and to_partitions(again.assignment) == a.owned
    with pytest.raises(FencedMemberEpochError):
        group.heartbeat(m.HeartbeatRequest("g", a.member_id, old - 1), now=0)
    with pytest.raises(FencedMemberEpochError):
        group.heartbeat(m.HeartbeatRequest("g", a.member_id, a.epoch + 1), now=0)
    with pytest.raises(UnknownMemberIdError):
        group.heartbeat(m.HeartbeatRequest("g", "nobody", 1), now=0)


def test_commits_need_the_member_to_hold_the_partition() -> None:
    group = new_group()
    a = join(group, 0, TOPICS)
    b = join(group, 0, TOPICS)
    a.heartbeat(0)
    revoking = group.members[a.member_id].revoking
    # Revoked but not yet released: a may still commit them (its on_revoked commit).
    assert group.check_commit(a.member_id, a.epoch, revoking) == {}
    a.heartbeat(0)
    refused = group.check_commit(a.member_id, a.epoch, revoking)
    assert set(refused) == revoking
    assert group.check_commit(b.member_id, b.epoch, [TP("t", 0)]) == {TP("t", 0): refused_for(b)}
    with pytest.raises(FencedMemberEpochError):
        group.check_commit(a.member_id, a.epoch - 2, a.owned)
    with pytest.raises(UnknownMemberIdError):
        group.check_commit("ghost", 1, a.owned)


def refused_for(client: Client) -> str:
    return f"t-0 is not assigned to member {client.member_id}"


def test_session_timeout_removes_a_silent_member_and_frees_its_partitions() -> None:
    group = new_group()
    a = join(group, 0, TOPICS)
    b = join(group, 0, TOPICS)
    settle(group, [a, b], 0)
    assert len(a.owned) == len(b.owned) == 3
    now = SESSION_MS // 2
    a.heartbeat(now)  # a keeps heartbeating; b goes silent
    assert group.expire(SESSION_MS) == []
    removed = group.expire(SESSION_MS + 1)
    assert [r.member_id for r in removed] == [b.member_id]
    assert "session timeout" in removed[0].reason
    a.heartbeat(SESSION_MS + 1)
    assert len(a.owned) == 6
    with pytest.raises(UnknownMemberIdError):
        b.heartbeat(SESSION_MS + 2)


def test_rebalance_timeout_removes_a_member_that_keeps_revoked_partitions() -> None:
    group = new_group()
    a = join(group, 0, TOPICS)
    b = join(group, 0, TOPICS)
    response = group.heartbeat(m.HeartbeatRequest("g", a.member_id, a.epoch), now=0)
    assert response.assignment is not None  # told to give up three, but never confirms
    for now in range(1000, REBALANCE_MS, 5000):
        group.heartbeat(m.HeartbeatRequest("g", a.member_id, response.member_epoch), now=now)
        b.heartbeat(now)
    assert group.expire(REBALANCE_MS) == []
    removed = group.expire(REBALANCE_MS + 1)
    assert [r.member_id for r in removed] == [a.member_id]
    assert "rebalance timeout" in removed[0].reason
    b.heartbeat(REBALANCE_MS + 1)
    assert len(b.owned) == 6


def test_leaving_frees_partitions_at_once() -> None:
    group = new_group()
    a = join(group, 0, TOPICS)
    b = join(group, 0, TOPICS)
    settle(group, [a, b], 0)
    epoch = group.group_epoch
    group.leave(m.LeaveGroupRequest("g", b.member_id, b.epoch), now=1)
    assert group.group_epoch == epoch + 1
    a.heartbeat(1)
    assert len(a.owned) == 6
    group.leave(m.LeaveGroupRequest("g", a.member_id), now=2)
    assert group.state is GroupState.EMPTY


def test_static_member_gets_its_partitions_back_after_a_restart() -> None:
    group = new_group()
    a = join(group, 0, TOPICS, instance_id="a")
    b = join(group, 0, TOPICS, instance_id="b")
    settle(group, [a, b], 0)
    mine = a.owned
    epoch = group.group_epoch
    # Restarted (crashed, no leave) within its session timeout: the new process takes over.
    a2 = join(group, 1000, TOPICS, instance_id="a")
    assert a2.member_id != a.member_id
    assert a2.owned == mine
    assert group.group_epoch == epoch  # no rebalance: nothing moved
    assert group.state is GroupState.STABLE
    with pytest.raises(UnknownMemberIdError):
        a.heartbeat(1000)  # the old incarnation is fenced


def test_static_member_leaving_temporarily_keeps_its_partitions_until_its_session_ends() -> None:
    group = new_group()
    a = join(group, 0, TOPICS, instance_id="a")
    b = join(group, 0, TOPICS, instance_id="b")
    settle(group, [a, b], 0)
    mine = b.owned
    group.leave(m.LeaveGroupRequest("g", b.member_id, b.epoch), now=100)
    a.heartbeat(200)
    assert len(a.owned) == 3  # b's partitions wait for it
    b2 = join(group, 5000, TOPICS, instance_id="b")
    assert b2.owned == mine
    # Leaving again, and not returning: removed after the session timeout.
    group.leave(m.LeaveGroupRequest("g", b2.member_id, b2.epoch), now=6000)
    a.heartbeat(6000 + SESSION_MS)
    assert group.expire(6001 + SESSION_MS)[0].member_id == b2.member_id
    a.heartbeat(6002 + SESSION_MS)
    assert len(a.owned) == 6


def test_static_member_leaving_for_good() -> None:
    group = new_group()
    a = join(group, 0, TOPICS, instance_id="a")
    b = join(group, 0, TOPICS, instance_id="b")
    settle(group, [a, b], 0)
    with pytest.raises(UnreleasedInstanceIdError):
        group.leave(m.LeaveGroupRequest("g", b.member_id, instance_id="a"), now=1)
    group.leave(m.LeaveGroupRequest("g", "", instance_id="b"), now=1)
    assert b.member_id not in group.members
    a.heartbeat(2)
    assert len(a.owned) == 6


def test_rejoining_after_a_fence_replaces_the_member() -> None:
    group = new_group()
    a = join(group, 0, TOPICS)
    again = join(group, 1, TOPICS, member_id=a.member_id)
    assert again.member_id != a.member_id
    assert list(group.members) == [again.member_id]
    assert again.owned == {TP("t", p) for p in range(6)}


def test_subscription_changes_and_patterns() -> None:
    group = new_group()
    topics = {"t": 2, "u": 2, "orders.eu": 1}
    a = join(group, 0, topics, subscribed=["t"])
    b = join(group, 0, topics, subscribed=(), subscribed_pattern=r"orders\..*")
    settle(group, [a, b], 0)
    assert a.owned == {TP("t", 0), TP("t", 1)}
    assert b.owned == {TP("orders.eu", 0)}
    a.heartbeat(1, subscribed_topics=("t", "u"))
    settle(group, [a, b], 1)
    assert len(a.owned) == 4
    assert group.update_topics({**topics, "orders.us": 1}) is True
    assert group.update_topics({**topics, "orders.us": 1}) is False
    settle(group, [a, b], 2)
    assert b.owned == {TP("orders.eu", 0), TP("orders.us", 0)}
    assert group.update_topics({"t": 2, "orders.us": 1}) is True  # u and orders.eu deleted
    settle(group, [a, b], 3)
    assert a.owned == {TP("t", 0), TP("t", 1)}
    assert b.owned == {TP("orders.us", 0)}


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"assignor": "fair"}, UnsupportedAssignorError),
        ({"session_timeout_ms": 10}, InvalidSessionTimeoutError),
        ({"session_timeout_ms": 10**9}, InvalidSessionTimeoutError),
        ({"subscribed": (), "subscribed_pattern": "("}, InvalidRequestError),
        ({"subscribed": ()}, InvalidRequestError),
    ],
)
def test_bad_joins_are_refused(kwargs: dict[str, object], error: type[Exception]) -> None:
    group = new_group()
    with pytest.raises(error):
        join(group, 0, TOPICS, **kwargs)  # type: ignore[arg-type]
    assert group.members == {}


def test_group_max_size() -> None:
    group = new_group(max_size=2)
    join(group, 0, TOPICS)
    join(group, 0, TOPICS)
    with pytest.raises(GroupMaxSizeReachedError):
        join(group, 0, TOPICS)


def test_the_assignor_most_members_ask_for_wins() -> None:
    group = new_group()
    a = join(group, 0, TOPICS, assignor="range")
    assert group.assignor == "range"
    b = join(group, 0, TOPICS, assignor="round-robin")
    assert group.assignor == "range"  # a tie: the earliest member's choice
    c = join(group, 0, TOPICS, assignor="round-robin")
    assert group.assignor == "round-robin"
    settle(group, [a, b, c], 0)
    description = group.describe()
    assert description.assignor == "round-robin"
    assert description.state == "stable"
    sizes = {sum(len(tp.partitions) for tp in d.assignment) for d in description.members}
    assert sizes == {2}


def test_heartbeat_interval_is_at_most_a_third_of_the_session() -> None:
    group = new_group(heartbeat_interval_ms=3000)
    response = group.join(
        m.JoinGroupRequest("g", ("t",), session_timeout_ms=1500), now=0, topics=TOPICS
    )
    assert response.heartbeat_interval_ms == 500


# --- random histories ----------------------------------------------------------------------

ops = st.lists(
    st.tuples(
        st.sampled_from(
            ["join", "heartbeat", "heartbeat", "reconcile", "reconcile", "leave", "silence"]
        ),
        st.integers(0, 7),
        st.sampled_from(["sticky", "range", "round-robin"]),
    ),
    max_size=40,
)


@settings(max_examples=100, deadline=None)
@given(history=ops, partitions=st.integers(1, 16))
def test_random_histories_never_give_a_partition_two_owners(
    history: list[tuple[str, int, str]], partitions: int
) -> None:
    topics = {"t": partitions}
    group = new_group()
    clients: list[Client] = []
    silent: set[str] = set()
    now = 0
    for op, index, assignor in history:
        now += 1000
        live = [c for c in clients if c.member_id in group.members and c.member_id not in silent]
        if op == "join" or not live:
            clients.append(join(group, now, topics, assignor=assignor))
        elif op == "heartbeat":  # told, not yet acted upon
            live[index % len(live)].heartbeat(now, reconcile=False)
        elif op == "reconcile":
            live[index % len(live)].reconcile()
        elif op == "leave":
            client = live[index % len(live)]
            client.crash()  # gave everything up, then left
            group.leave(m.LeaveGroupRequest("g", client.member_id, client.epoch), now=now)
        else:  # the member's process dies: it owns nothing from now on
            client = live[index % len(live)]
            silent.add(client.member_id)
            client.crash()
        for removal in group.expire(now):
            for c in clients:
                if c.member_id == removal.member_id:
                    c.crash()
        check_invariants(group, clients)
    # Everyone alive heartbeats until the group settles; silent members time out.
    for c in clients:
        if c.member_id in group.members and c.member_id not in silent:
            c.reconcile()
            c.heartbeat(now, reconcile=False)
    now += SESSION_MS
    for removal in group.expire(now):
        assert removal.member_id in silent
    live = [c for c in clients if c.member_id in group.members]
    settle(group, live, now)
    if live:
        assert group.state is GroupState.STABLE
        owned = [tp for c in live for tp in c.owned]
        assert sorted(owned) == [TP("t", p) for p in range(partitions)]
