"""The assignors: every partition to exactly one subscribed member, deterministic, balanced;
sticky keeps what it can and moves no more than balance requires."""

from __future__ import annotations

import random
from collections.abc import Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidelog.server.groups import ASSIGNORS, AssignmentSpec, sticky_assign
from tidelog.server.groups.assignors import Assignment, range_assign
from tidelog.server.log import TopicPartition as TP

SETTINGS = settings(max_examples=150, deadline=None)
NAMES = sorted(ASSIGNORS)

members_st = st.lists(
    st.text("abcdefgh", min_size=1, max_size=4), min_size=1, max_size=9, unique=True
)
topics_st = st.dictionaries(
    st.sampled_from(["t1", "t2", "t3", "t4"]), st.integers(1, 25), min_size=1
)


@st.composite
def specs(draw: st.DrawFn, *, homogeneous: bool) -> AssignmentSpec:
    members = draw(members_st)
    topics = draw(topics_st)
    names = sorted(topics)
    if homogeneous:
        subs = {mid: frozenset(names) for mid in members}
    else:
        subs = {
            mid: frozenset(draw(st.lists(st.sampled_from(names), min_size=1, unique=True)))
            for mid in members
        }
    return AssignmentSpec(subs, topics)


def all_partitions(spec: AssignmentSpec) -> set[TP]:
    wanted = set().union(*spec.members.values())
    return {TP(t, p) for t, n in spec.partitions.items() if t in wanted for p in range(n)}


def check_valid(spec: AssignmentSpec, out: Assignment) -> None:
    assert set(out) == set(spec.members)
    seen: list[TP] = [tp for tps in out.values() for tp in tps]
    assert len(seen) == len(set(seen)), "a partition has two owners"
    assert set(seen) == all_partitions(spec), "a partition is left out or invented"
    for mid, tps in out.items():
        assert all(tp.topic in spec.members[mid] for tp in tps), "assigned an unsubscribed topic"


def spread(out: Assignment) -> int:
    counts = [len(tps) for tps in out.values()]
    return max(counts) - min(counts)


def shuffled(spec: AssignmentSpec, seed: int) -> AssignmentSpec:
    rng = random.Random(seed)

    def mix(d: Mapping[str, object]) -> dict[str, object]:
        items = list(d.items())
        rng.shuffle(items)
        return dict(items)

    return AssignmentSpec(
        mix(spec.members),  # type: ignore[arg-type]
        mix(spec.partitions),  # type: ignore[arg-type]
        mix(spec.current),  # type: ignore[arg-type]
        spec.rank,
    )


@pytest.mark.parametrize("name", NAMES)
@SETTINGS
@given(spec=specs(homogeneous=False), seed=st.integers(0, 1000))
def test_every_partition_has_one_subscribed_owner_and_results_are_deterministic(
    name: str, spec: AssignmentSpec, seed: int
) -> None:
    assignor = ASSIGNORS[name]
    out = assignor(spec)
    check_valid(spec, out)
    assert assignor(shuffled(spec, seed)) == out


@pytest.mark.parametrize("name", ["round-robin", "sticky"])
@SETTINGS
@given(spec=specs(homogeneous=True))
def test_balanced_within_one_with_identical_subscriptions(name: str, spec: AssignmentSpec) -> None:
    assert spread(ASSIGNORS[name](spec)) <= 1


@SETTINGS
@given(spec=specs(homogeneous=True))
def test_range_is_balanced_per_topic_and_co_partitions(spec: AssignmentSpec) -> None:
    out = range_assign(spec)
    for topic, count in spec.partitions.items():
        per_member = [sum(1 for tp in tps if tp.topic == topic) for tps in out.values()]
        assert max(per_member) - min(per_member) <= 1
        for other, other_count in spec.partitions.items():
            if other_count == count:  # partition p of both goes to the same member
                for tps in out.values():
                    assert {tp.partition for tp in tps if tp.topic == topic} == {
                        tp.partition for tp in tps if tp.topic == other
                    }


@SETTINGS
@given(spec=specs(homogeneous=False))
def test_sticky_is_stable_on_its_own_output(spec: AssignmentSpec) -> None:
    first = sticky_assign(spec)
    again = sticky_assign(AssignmentSpec(spec.members, spec.partitions, first))
    assert again == first


def minimal_moves(current: Mapping[str, frozenset[TP]], members: list[str], total: int) -> int:
    """Fewest partitions that must change owner to balance ``current`` (every partition owned)
    over ``members``: the members holding most keep the larger shares."""
    q, r = divmod(total, len(members))
    counts = sorted((len(current.get(mid, ())) for mid in members), reverse=True)
    return sum(max(0, c - (q + 1 if i < r else q)) for i, c in enumerate(counts))


def moved(before: Mapping[str, frozenset[TP]], after: Assignment) -> int:
    owner = {tp: mid for mid, tps in before.items() for tp in tps}
    return sum(1 for mid, tps in after.items() for tp in tps if owner.get(tp, mid) != mid)


@SETTINGS
@given(
    members=members_st,
    topics=topics_st,
    joining=st.integers(0, 3),
    leaving=st.integers(0, 3),
)
def test_sticky_moves_only_what_balance_requires(
    members: list[str], topics: dict[str, int], joining: int, leaving: int
) -> None:
    names = frozenset(topics)
    start = AssignmentSpec({mid: names for mid in members}, topics)
    current = sticky_assign(start)
    stay = members[: max(1, len(members) - leaving)]
    now = stay + [f"new{i}" for i in range(joining)]
    spec = AssignmentSpec({mid: names for mid in now}, topics, current)
    out = sticky_assign(spec)
    check_valid(spec, out)
    assert spread(out) <= 1
    kept = {mid: tps for mid, tps in current.items() if mid in now}
    # The departed members' partitions must move; of the others, only what balance requires.
    assert moved(kept, out) == minimal_moves(kept, now, sum(topics.values()))


def test_a_fourth_member_takes_exactly_three_of_twelve() -> None:
    three = {mid: frozenset({"t"}) for mid in ("a", "b", "c")}
    current = sticky_assign(AssignmentSpec(three, {"t": 12}))
    assert sorted(len(tps) for tps in current.values()) == [4, 4, 4]
    four = {**three, "d": frozenset({"t"})}
    out = sticky_assign(AssignmentSpec(four, {"t": 12}, current))
    assert sorted(len(tps) for tps in out.values()) == [3, 3, 3, 3]
    assert moved(current, out) == 3
    for mid in ("a", "b", "c"):
        assert out[mid] <= current[mid]  # the old members only gave up partitions


def test_sticky_keeps_a_valid_assignment_and_drops_unsubscribed_topics() -> None:
    subs = {"a": frozenset({"x", "y"}), "b": frozenset({"x"})}
    current = {"a": frozenset({TP("x", 0), TP("y", 0)}), "b": frozenset({TP("x", 1)})}
    out = sticky_assign(AssignmentSpec(subs, {"x": 2, "y": 1}, current))
    assert out == current
    subs["a"] = frozenset({"x"})
    out = sticky_assign(AssignmentSpec(subs, {"x": 2, "y": 1}, current))
    assert out == {"a": frozenset({TP("x", 0)}), "b": frozenset({TP("x", 1)})}


def test_rank_orders_members_for_range() -> None:
    subs = {"m-2": frozenset({"t"}), "m-1": frozenset({"t"})}
    spec = AssignmentSpec(subs, {"t": 4}, rank={"m-2": "instance-a", "m-1": "instance-b"})
    out = range_assign(spec)
    assert out["m-2"] == {TP("t", 0), TP("t", 1)}


@pytest.mark.parametrize("name", NAMES)
def test_no_members_or_no_topics(name: str) -> None:
    assert ASSIGNORS[name](AssignmentSpec({}, {"t": 3})) == {}
    out = ASSIGNORS[name](AssignmentSpec({"a": frozenset({"gone"})}, {"t": 3}))
    assert out == {"a": frozenset()}
