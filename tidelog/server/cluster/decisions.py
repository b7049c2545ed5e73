"""What the controller decides, as pure functions of the cluster view.

:func:`decide` looks at one :class:`~.view.ClusterView` and returns the changes that bring the
partition states in line with the topics and the live brokers. Each :class:`Change` names the
revision it was decided from, so the controller writes it with a compare-and-set (and its own
controller fence): a change decided from a view that is out of date is refused by etcd, not
applied. Nothing here does I/O, so every rule is tested without etcd.

The rules (docs/CLUSTER.md):

* a topic whose partitions have no state yet (or a state left by an older topic of the same
  name: another topic id) gets them, placed round-robin over the live brokers;
* a partition state whose topic is gone or has another id now is deleted;
* dead brokers leave every ISR (the last member stays, so it can lead again when it returns:
  as in Kafka, no unclean election);
* a partition whose leader is not alive loses it: the next live in-sync replica leads, or
  nobody (:data:`NO_LEADER`) when none is alive (any live replica if the topic sets
  ``unclean_leader_election``); the leader epoch goes up by one;
* a partition without a leader gets the first live in-sync replica, epoch up by one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..core.configs import normalise_key
from .records import NO_LEADER, PartitionState, TopicRecord
from .view import ClusterView, Versioned


@dataclass(frozen=True, slots=True)
class Change:
    """Set (or with ``state=None`` delete) partition ``topic``/``partition``, if its key was
    last modified at ``partition_revision`` (0: absent) and, when ``topic_revision`` is not 0,
    the topic's key still is at that revision."""

    topic: str
    partition: int
    state: PartitionState | None
    partition_revision: int
    topic_revision: int = 0
    why: str = ""
    election: str = ""
    """``clean`` or ``unclean`` when the change gives the partition a new live leader (the
    controller counts these: ``tidelog_leader_elections_total``); empty otherwise."""


def place(
    partitions: int, brokers: Sequence[int], replication_factor: int, start: int
) -> list[tuple[int, ...]]:
    """Replica lists for ``partitions`` partitions: partition ``p``'s leader is the broker at
    ``start + p`` (round robin, so leaders spread evenly) and its followers the next ones.

    ``replication_factor`` larger than the broker count is cut to it."""
    if not brokers:
        raise ValueError("no live broker to place partitions on")
    ordered = sorted(brokers)
    count = len(ordered)
    factor = max(1, min(replication_factor, count))
    return [
        tuple(ordered[(start + p + r) % count] for r in range(factor)) for p in range(partitions)
    ]


def decide(view: ClusterView) -> list[Change]:
    """The changes the controller should make now (empty when the view is settled)."""
    changes: list[Change] = []
    alive = set(view.brokers)
    placed = len(view.partitions)
    for name, topic in sorted(view.topics.items()):
        current = view.partitions_of(name)
        missing = [
            p
            for p in range(topic.record.partitions)
            if p not in current or current[p].record.topic_id != topic.record.topic_id
        ]
        if missing and alive:
            changes += _create(
                name, topic.record, missing, current, topic.mod_revision, alive, placed
            )
            placed += len(missing)
    for (name, partition), versioned in sorted(view.partitions.items()):
        state = versioned.record
        owner = view.topics.get(name)
        if owner is None or partition >= owner.record.partitions:
            why = "its topic was deleted" if owner is None else "beyond its topic's partitions"
            changes.append(Change(name, partition, None, versioned.mod_revision, why=why))
            continue
        if owner.record.topic_id != state.topic_id:
            continue  # left by an older topic of this name: replaced above
        elected = _elect(state, alive, _unclean(owner.record))
        if elected is not None:
            new, why = elected
            election = ""
            if new.leader != NO_LEADER and new.leader_epoch != state.leader_epoch:
                election = "clean" if new.leader in state.isr else "unclean"
            changes.append(
                Change(name, partition, new, versioned.mod_revision, why=why, election=election)
            )
    return changes


def _create(
    name: str,
    topic: TopicRecord,
    missing: list[int],
    current: Mapping[int, Versioned[PartitionState]],
    topic_revision: int,
    alive: set[int],
    start: int,
) -> list[Change]:
    replicas = place(len(missing), sorted(alive), topic.replication_factor, start)
    out = []
    for p, chosen in zip(missing, replicas, strict=True):
        old = current.get(p)
        revision = 0 if old is None else old.mod_revision
        state = PartitionState(
            topic_id=topic.topic_id,
            replicas=chosen,
            leader=chosen[0],
            leader_epoch=0,
            isr=chosen,
        )
        out.append(Change(name, p, state, revision, topic_revision, why="new partition"))
    return out


def _elect(
    state: PartitionState, alive: set[int], unclean: bool = False
) -> tuple[PartitionState, str] | None:
    """The state after the controller's look at ``state``, or ``None`` when it is fine.

    Dead brokers leave the ISR (a live leader keeps leading, same epoch); when the ISR would
    be empty the last leader stays in it, so it can lead again when it returns. A dead or
    missing leader is replaced by the first live in-sync replica (epoch up by one), or by
    nobody -- unless ``unclean`` (the topic's ``unclean_leader_election``): then by any live
    replica, which alone makes the ISR (what it lacks is lost)."""
    leader = state.leader
    live_isr = tuple(r for r in state.isr if r in alive)
    if leader != NO_LEADER and leader in alive:
        if live_isr == state.isr:
            return None
        gone = sorted(set(state.isr) - set(live_isr))
        why = f"broker(s) {gone} gone: out of the ISR"
        return _with(state, leader, state.leader_epoch, live_isr), why
    kept = live_isr or ((leader,) if leader != NO_LEADER else state.isr)
    candidates = [r for r in state.replicas if r in kept and r in alive]
    why = f"broker {leader} is gone" if leader != NO_LEADER else "a replica is back"
    if not candidates and unclean:
        candidates = [r for r in state.replicas if r in alive]
        if candidates:
            kept = (candidates[0],)
            why += ": unclean election (no in-sync replica alive)"
    new_leader = candidates[0] if candidates else NO_LEADER
    if new_leader == leader and kept == state.isr:
        return None  # still leaderless, nothing new to write
    return _with(state, new_leader, state.leader_epoch + 1, kept), why


def _unclean(topic: TopicRecord) -> bool:
    """Whether the topic allows an unclean leader election (``unclean.leader.election`` too)."""
    return any(
        normalise_key(k) == "unclean_leader_election" and v.strip().lower() == "true"
        for k, v in topic.configs.items()
    )


def _with(state: PartitionState, leader: int, epoch: int, isr: tuple[int, ...]) -> PartitionState:
    return PartitionState(
        topic_id=state.topic_id,
        replicas=state.replicas,
        leader=leader,
        leader_epoch=epoch,
        isr=isr,
    )
