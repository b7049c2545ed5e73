"""The controller's preferred-leader and reassignment rules, and the targets of ``cluster
rebalance``, as pure functions of a cluster view (docs/CLUSTER.md, "Moving partitions")."""

from __future__ import annotations

from collections import Counter

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from tidelog.server.cluster.decisions import decide, spread
from tidelog.server.cluster.records import NO_LEADER, BrokerRecord, PartitionState, encode

from .test_decisions import KEYS, Etcd, states


def cluster(brokers: int, partitions: int = 1, rf: int = 3) -> Etcd:
    etcd = Etcd()
    for b in range(1, brokers + 1):
        etcd.broker(b)
    etcd.topic("t", partitions, rf=rf)
    etcd.settle()
    return etcd


def rewrite(etcd: Etcd, partition: int, **fields: object) -> PartitionState:
    """What a leader (an ISR change) or an admin (a target) writes beside the controller."""
    state = msgspec.structs.replace(states(etcd, "t")[partition], **fields)
    etcd.put(KEYS.partition("t", partition), encode(state))
    return state


def test_a_preferred_replica_back_in_sync_leads_again_with_the_epoch_bumped() -> None:
    etcd = cluster(3)
    (before,) = states(etcd, "t").values()
    assert before.leader == before.replicas[0]
    etcd.broker(before.leader, alive=False)
    etcd.settle()
    (failed_over,) = states(etcd, "t").values()
    assert failed_over.leader == before.replicas[1]
    etcd.broker(before.leader)  # back, but not in sync yet: nothing moves
    assert decide(etcd.view()) == []
    rewrite(etcd, 0, isr=before.replicas)  # its leader took it back into the ISR
    (change,) = decide(etcd.view())
    assert change.state is not None and change.election == "clean"
    assert change.state.leader == before.leader
    assert change.state.leader_epoch == failed_over.leader_epoch + 1
    assert change.state.isr == before.replicas and change.state.replicas == before.replicas


def test_with_auto_leader_rebalance_off_the_leader_stays() -> None:
    etcd = cluster(3)
    (before,) = states(etcd, "t").values()
    rewrite(etcd, 0, leader=before.replicas[1], leader_epoch=1)
    assert decide(etcd.view(), auto_leader_rebalance=False) == []
    assert [c.state.leader for c in decide(etcd.view()) if c.state] == [before.replicas[0]]


def test_a_preferred_replica_that_is_dead_or_out_of_sync_does_not_lead() -> None:
    etcd = cluster(3)
    (before,) = states(etcd, "t").values()
    first, second, third = before.replicas
    rewrite(etcd, 0, leader=second, leader_epoch=1, isr=(second, third))
    assert decide(etcd.view()) == []  # alive but out of the ISR
    rewrite(etcd, 0, isr=(first, second, third))
    etcd.broker(first, alive=False)
    assert all(c.state is None or c.state.leader != first for c in decide(etcd.view()))


def test_a_reassignment_adds_waits_for_the_isr_moves_leadership_then_drops_the_old() -> None:
    etcd = cluster(5)
    (before,) = states(etcd, "t").values()
    assert before.replicas == (1, 2, 3)
    rewrite(etcd, 0, target=(3, 4, 5))
    etcd.settle()
    (adding,) = states(etcd, "t").values()
    assert adding.replicas == (1, 2, 3, 4, 5) and adding.isr == (1, 2, 3)
    assert adding.leader == 1 and adding.leader_epoch == before.leader_epoch  # nothing moved
    rewrite(etcd, 0, isr=(1, 2, 3, 4))
    assert decide(etcd.view()) == []  # 5 is still catching up
    rewrite(etcd, 0, isr=(1, 2, 3, 4, 5))
    (move,) = decide(etcd.view())
    assert move.state is not None and move.state.leader == 3
    assert move.state.leader_epoch == before.leader_epoch + 1
    assert move.state.replicas == (1, 2, 3, 4, 5)  # the old replicas stay until it is led
    etcd.apply(move)
    etcd.settle()
    (after,) = states(etcd, "t").values()
    assert after == PartitionState(
        before.topic_id, (3, 4, 5), 3, before.leader_epoch + 1, (3, 4, 5)
    )


def test_a_reassignment_whose_leader_is_kept_moves_no_leadership() -> None:
    etcd = cluster(4)
    rewrite(etcd, 0, target=(1, 4, 2))
    etcd.settle()
    rewrite(etcd, 0, isr=(1, 2, 3, 4))
    etcd.settle()
    (after,) = states(etcd, "t").values()
    assert (after.replicas, after.isr, after.leader, after.leader_epoch) == (
        (1, 4, 2),
        (1, 4, 2),
        1,
        0,
    )


def test_a_dead_target_replica_holds_the_reassignment_but_not_the_partition() -> None:
    etcd = cluster(5)
    etcd.broker(5, alive=False)
    rewrite(etcd, 0, target=(3, 4, 5))
    etcd.settle()
    (waiting,) = states(etcd, "t").values()
    assert waiting.replicas == (1, 2, 3, 4, 5) and waiting.target == (3, 4, 5)
    assert waiting.leader == 1  # still served meanwhile


def test_rebalance_onto_new_racks_gives_every_partition_both_racks() -> None:
    etcd = cluster(2, partitions=4, rf=2)  # brokers 1 and 2, no rack: every partition on both
    for b in (1, 2):
        etcd.broker(b, rack="a")
    for b in (3, 4):
        etcd.broker(b, rack="b")
    rack = {1: "a", 2: "a", 3: "b", 4: "b"}
    targets = spread(etcd.view())
    final = {p: targets.get(("t", p), s.replicas) for p, s in states(etcd, "t").items()}
    assert all({rack[b] for b in r} == {"a", "b"} for r in final.values()), final
    assert Counter(b for r in final.values() for b in r) == {b: 2 for b in range(1, 5)}


def test_rebalance_spreads_replicas_and_preferred_leaders_and_moves_little() -> None:
    etcd = cluster(3, partitions=6, rf=2)
    for b in (4, 5, 6):
        etcd.broker(b)
    targets = spread(etcd.view())
    final = {p: targets.get(("t", p), s.replicas) for p, s in states(etcd, "t").items()}
    assert Counter(b for r in final.values() for b in r) == {b: 2 for b in range(1, 7)}
    assert Counter(r[0] for r in final.values()) == {b: 1 for b in range(1, 7)}
    kept = sum(len(set(r) & set(states(etcd, "t")[p].replicas)) for p, r in final.items())
    assert kept == 6  # half of the 12 replicas stay: the least that balances 6 brokers
    assert spread(etcd.view()) == targets  # deterministic
    for (_, p), target in targets.items():
        rewrite(etcd, p, target=target)
    etcd.settle()
    for _, p in targets:
        rewrite(etcd, p, isr=states(etcd, "t")[p].replicas)
    etcd.settle()
    assert {p: s.replicas for p, s in states(etcd, "t").items()} == final
    assert spread(etcd.view()) == {}  # balanced now


@settings(max_examples=100, deadline=None)
@given(
    brokers=st.integers(3, 6),
    partitions=st.integers(1, 6),
    rf=st.integers(1, 3),
    data=st.data(),
)
def test_any_reassignment_ends_on_its_target_led_by_a_target_replica(
    brokers: int, partitions: int, rf: int, data: st.DataObject
) -> None:
    etcd = cluster(brokers, partitions, rf)
    targets = {
        p: tuple(data.draw(st.permutations(range(1, brokers + 1)))[:rf]) for p in range(partitions)
    }
    for p, target in targets.items():
        rewrite(etcd, p, target=target)
    for _ in range(4):  # the controller steps; the leaders take caught-up replicas in
        etcd.settle()
        for p, s in states(etcd, "t").items():
            if set(s.isr) != set(s.replicas):
                rewrite(etcd, p, isr=s.replicas)
    etcd.settle()
    for p, s in states(etcd, "t").items():
        assert s.replicas == targets[p] and set(s.isr) == set(targets[p]) and not s.target
        assert s.leader == targets[p][0] != NO_LEADER
    assert decide(etcd.view()) == []


def test_rebalance_gives_every_live_broker_a_share_when_the_split_is_uneven() -> None:
    etcd = cluster(3, partitions=2, rf=3)  # 6 replicas on brokers 1-3
    etcd.broker(4)
    etcd.broker(5)
    targets = spread(etcd.view())
    final = {p: targets.get(("t", p), s.replicas) for p, s in states(etcd, "t").items()}
    load = Counter(b for r in final.values() for b in r)
    assert sorted(load.values()) == [1, 1, 1, 1, 2] and set(load) == {1, 2, 3, 4, 5}
    assert len({r[0] for r in final.values()}) == 2  # the two preferred leaders differ
    assert sum(len(set(r) & {1, 2, 3}) for r in final.values()) == 4  # 2 of 6 replicas move


def test_internal_topics_keep_their_leader_when_the_preferred_one_returns() -> None:
    etcd = Etcd()
    for b in (1, 2, 3):
        etcd.broker(b)
    etcd.topic("__consumer_offsets", 1, rf=3)
    etcd.settle()
    (state,) = states(etcd, "__consumer_offsets").values()
    moved = msgspec.structs.replace(state, leader=state.replicas[1], leader_epoch=1)
    etcd.put(KEYS.partition("__consumer_offsets", 0), encode(moved))
    assert decide(etcd.view()) == []


def test_a_draining_leader_hands_its_partitions_to_in_sync_followers() -> None:
    etcd = cluster(3, partitions=3, rf=2)
    before = states(etcd, "t")
    leader = before[0].leader
    etcd.put(KEYS.broker(leader), encode(BrokerRecord(leader, "127.0.0.1", 7070, draining=True)))
    etcd.settle()
    after = states(etcd, "t")
    for p, state in after.items():
        if before[p].leader == leader:  # moved while the old leader still serves
            assert state.leader != leader and state.leader in before[p].isr
            assert state.leader_epoch == before[p].leader_epoch + 1
            assert state.isr == before[p].isr  # it stays in sync until it leaves
        else:
            assert state == before[p]  # and is not preferred back meanwhile
    etcd.broker(leader)  # back, not draining: preferred leader again
    etcd.settle()
    assert states(etcd, "t")[0].leader == leader


def test_a_draining_leader_without_an_in_sync_follower_keeps_leading() -> None:
    etcd = cluster(2, partitions=1, rf=1)
    (state,) = states(etcd, "t").values()
    record = BrokerRecord(state.leader, "127.0.0.1", 7070, draining=True)
    etcd.put(KEYS.broker(state.leader), encode(record))
    etcd.settle()
    assert states(etcd, "t")[0] == state
