"""The controller's decisions, as pure functions of a cluster view: placement, elections,
deletes, and that applying them settles (a second look finds nothing to do)."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from tidelog.etcd import KeyValue
from tidelog.server.cluster.decisions import Change, decide, place
from tidelog.server.cluster.records import (
    NO_LEADER,
    BrokerRecord,
    ClusterKeys,
    PartitionState,
    TopicRecord,
    encode,
)
from tidelog.server.cluster.view import ClusterView

KEYS = ClusterKeys("test")


class Etcd:
    """Just enough of etcd for the view: keys with revisions, compare-and-set on them."""

    def __init__(self) -> None:
        self.revision = 1
        self.kvs: dict[bytes, KeyValue] = {}

    def put(self, key: bytes, value: bytes) -> None:
        self.revision += 1
        old = self.kvs.get(key)
        created = old.create_revision if old else self.revision
        self.kvs[key] = KeyValue(key, value, created, self.revision, 1, 0)

    def delete(self, key: bytes) -> None:
        self.revision += 1
        self.kvs.pop(key, None)

    def mod(self, key: bytes) -> int:
        kv = self.kvs.get(key)
        return 0 if kv is None else kv.mod_revision

    def view(self) -> ClusterView:
        return ClusterView.load(KEYS, self.kvs.values(), self.revision)

    def apply(self, change: Change) -> bool:
        key = KEYS.partition(change.topic, change.partition)
        if self.mod(key) != change.partition_revision:
            return False
        if change.topic_revision and self.mod(KEYS.topic(change.topic)) != change.topic_revision:
            return False
        if change.state is None:
            self.delete(key)
        else:
            self.put(key, encode(change.state))
        return True

    def settle(self) -> int:
        """Apply decisions until there are none; how many rounds it took."""
        for rounds in range(1, 20):
            changes = decide(self.view())
            if not changes:
                return rounds
            for change in changes:
                self.apply(change)
        raise AssertionError("the decisions never settle")

    def broker(self, broker_id: int, alive: bool = True, rack: str | None = None) -> None:
        if alive:
            record = BrokerRecord(broker_id, "127.0.0.1", 7070, rack)
            self.put(KEYS.broker(broker_id), encode(record))
        else:
            self.delete(KEYS.broker(broker_id))

    def topic(self, name: str, partitions: int, topic_id: str = "", rf: int = 1) -> None:
        record = TopicRecord(topic_id or f"id-{name}-{self.revision}", partitions, rf)
        self.put(KEYS.topic(name), encode(record))


def states(etcd: Etcd, topic: str) -> dict[int, PartitionState]:
    return {p: v.record for p, v in etcd.view().partitions_of(topic).items()}


def test_ten_partitions_over_five_brokers_get_two_leaders_each() -> None:
    etcd = Etcd()
    for b in range(1, 6):
        etcd.broker(b)
    etcd.topic("orders", 10)
    etcd.settle()
    placed = states(etcd, "orders")
    assert sorted(placed) == list(range(10))
    assert Counter(s.leader for s in placed.values()) == {b: 2 for b in range(1, 6)}
    assert all(s.replicas == (s.leader,) == s.isr and s.leader_epoch == 0 for s in placed.values())


def test_replicas_sit_on_distinct_brokers_and_the_factor_is_cut_to_the_broker_count() -> None:
    assert place(4, [3, 1, 2], 2, 0) == [(1, 2), (2, 3), (3, 1), (1, 2)]
    assert place(1, [1, 2], 5, 1) == [(2, 1)]


def test_replicas_span_the_racks_and_leaders_spread_over_them() -> None:
    racks = {1: "a", 2: "a", 3: "b", 4: "b", 5: "c", 6: "c"}
    placed = place(6, sorted(racks), 3, 0, racks)
    assert all(len({racks[b] for b in replicas}) == 3 for replicas in placed), placed
    assert Counter(replicas[0] for replicas in placed) == {b: 1 for b in racks}
    # two racks, factor 3: both racks hold a replica of every partition
    two = {1: "a", 2: "a", 3: "a", 4: "b"}
    assert all({two[b] for b in r} == {"a", "b"} for r in place(8, sorted(two), 3, 0, two))


@settings(max_examples=200, deadline=None)
@given(
    racks=st.lists(st.sampled_from("abcd"), min_size=1, max_size=8),
    factor=st.integers(1, 5),
    partitions=st.integers(1, 12),
    start=st.integers(0, 20),
)
def test_placement_uses_as_many_racks_as_the_factor_allows(
    racks: list[str], factor: int, partitions: int, start: int
) -> None:
    rack_of = {b: r for b, r in enumerate(racks, 1)}
    for replicas in place(partitions, sorted(rack_of), factor, start, rack_of):
        assert len(set(replicas)) == len(replicas) == min(factor, len(rack_of))
        spanned = len({rack_of[b] for b in replicas})
        assert spanned == min(len(replicas), len(set(racks)))


def test_topics_created_in_a_cluster_with_racks_span_them() -> None:
    etcd = Etcd()
    for b, rack in ((1, "a"), (2, "a"), (3, "b"), (4, "b")):
        etcd.broker(b, rack=rack)
    etcd.topic("t", 4, rf=2)
    etcd.settle()
    rack = {1: "a", 2: "a", 3: "b", 4: "b"}
    assert all({rack[b] for b in s.replicas} == {"a", "b"} for s in states(etcd, "t").values())


def test_a_dead_leader_is_replaced_by_nobody_until_it_returns() -> None:
    etcd = Etcd()
    etcd.broker(1)
    etcd.broker(2)
    etcd.topic("t", 2)
    etcd.settle()
    before = states(etcd, "t")
    dead = before[0].leader
    etcd.broker(dead, alive=False)
    etcd.settle()
    during = states(etcd, "t")
    assert during[0].leader == NO_LEADER and during[0].isr == (dead,)  # the last ISR member stays
    assert during[0].leader_epoch == before[0].leader_epoch + 1
    assert during[1] == before[1]  # the other broker's partition is untouched
    etcd.broker(dead)
    etcd.settle()
    after = states(etcd, "t")
    assert after[0].leader == dead and after[0].leader_epoch == before[0].leader_epoch + 2


def test_a_dead_leader_with_a_live_in_sync_follower_hands_over() -> None:
    etcd = Etcd()
    for b in (1, 2, 3):
        etcd.broker(b)
    etcd.topic("t", 1, rf=2)
    etcd.settle()
    (state,) = states(etcd, "t").values()
    leader, follower = state.replicas
    etcd.broker(leader, alive=False)
    etcd.settle()
    (after,) = states(etcd, "t").values()
    assert after.leader == follower and after.isr == (follower,)
    assert after.leader_epoch == state.leader_epoch + 1


def test_changes_that_give_a_partition_a_new_leader_are_marked_as_elections() -> None:
    """What ``tidelog_leader_elections_total`` counts: a dead leader replaced from the ISR
    (clean), from outside it (unclean); not a placement, a leader lost, or an ISR shrink."""
    etcd = Etcd()
    for b in (1, 2, 3):
        etcd.broker(b)
    etcd.topic("t", 1, rf=3)
    assert [c.election for c in decide(etcd.view())] == [""]  # placement
    etcd.settle()
    (state,) = states(etcd, "t").values()
    etcd.broker(state.replicas[2], alive=False)
    assert [c.election for c in decide(etcd.view())] == [""]  # a follower out of the ISR
    etcd.settle()
    etcd.broker(state.leader, alive=False)
    assert [c.election for c in decide(etcd.view())] == ["clean"]
    etcd.settle()
    etcd.broker(state.replicas[1], alive=False)
    assert [c.election for c in decide(etcd.view())] == [""]  # leaderless: nobody elected
    etcd.settle()
    etcd.put(
        KEYS.topic("t"),
        encode(TopicRecord(state.topic_id, 1, 3, {"unclean_leader_election": "true"})),
    )
    etcd.broker(state.replicas[2])  # out of the ISR, back: only an unclean election takes it
    assert [c.election for c in decide(etcd.view())] == ["unclean"]


def test_a_deleted_topic_loses_its_partitions_and_a_new_one_of_the_name_gets_new_ones() -> None:
    etcd = Etcd()
    etcd.broker(1)
    etcd.topic("t", 3, topic_id="old")
    etcd.settle()
    etcd.delete(KEYS.topic("t"))
    etcd.settle()
    assert states(etcd, "t") == {}
    etcd.topic("t", 2, topic_id="new")
    # The delete's cleanup and the re-creation may also meet in one view.
    etcd.settle()
    assert {s.topic_id for s in states(etcd, "t").values()} == {"new"}
    assert sorted(states(etcd, "t")) == [0, 1]


def test_a_recreated_topic_replaces_states_left_by_the_old_one_in_the_same_view() -> None:
    etcd = Etcd()
    etcd.broker(1)
    etcd.topic("t", 3, topic_id="old")
    etcd.settle()
    etcd.topic("t", 2, topic_id="new")  # delete and create seen at once
    etcd.settle()
    assert {p: s.topic_id for p, s in states(etcd, "t").items()} == {0: "new", 1: "new"}


def test_nothing_is_placed_without_a_live_broker_and_a_stale_decision_is_refused() -> None:
    etcd = Etcd()
    etcd.topic("t", 1)
    assert decide(etcd.view()) == []
    etcd.broker(1)
    stale = decide(etcd.view())
    etcd.topic("t", 1, topic_id="other")  # the topic changed after the decision was made
    assert [etcd.apply(c) for c in stale] == [False]


@settings(max_examples=200, deadline=None)
@given(
    brokers=st.integers(1, 5),
    topics=st.lists(st.tuples(st.integers(1, 8), st.integers(1, 3)), min_size=1, max_size=4),
    deaths=st.lists(st.integers(1, 5), max_size=4),
)
def test_any_cluster_settles_with_every_partition_led_by_a_live_in_sync_replica_if_any(
    brokers: int, topics: list[tuple[int, int]], deaths: list[int]
) -> None:
    etcd = Etcd()
    for b in range(1, brokers + 1):
        etcd.broker(b)
    for i, (partitions, rf) in enumerate(topics):
        etcd.topic(f"t{i}", partitions, rf=rf)
    etcd.settle()
    for b in deaths:
        etcd.broker(b, alive=False)
    etcd.settle()
    view = etcd.view()
    alive = set(view.brokers)
    for i, (partitions, rf) in enumerate(topics):
        placed = states(etcd, f"t{i}")
        assert sorted(placed) == list(range(partitions))
        for state in placed.values():
            assert len(set(state.replicas)) == len(state.replicas) == min(rf, brokers)
            assert state.isr and set(state.isr) <= set(state.replicas)
            live_isr = [r for r in state.replicas if r in state.isr and r in alive]
            assert state.leader == (live_isr[0] if live_isr else NO_LEADER) or (
                state.leader in alive and state.leader in state.isr
            )
    assert decide(view) == []
