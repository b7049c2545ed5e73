"""What the controller decides, as pure functions of the cluster view.

:func:`decide` looks at one :class:`~.view.ClusterView` and returns the changes that bring the
partition states in line with the topics and the live brokers. Each :class:`Change` names the
revision it was decided from, so the controller writes it with a compare-and-set (and its own
controller fence): a change decided from a view that is out of date is refused by etcd, not
applied. Nothing here does I/O, so every rule is tested without etcd.

The rules (docs/CLUSTER.md):

* a topic whose partitions have no state yet (or a state left by an older topic of the same
  name: another topic id) gets them, placed round-robin over the live brokers, rack-aware
  (:func:`place`);
* a partition state whose topic is gone or has another id now is deleted;
* dead brokers leave every ISR (the last member stays, so it can lead again when it returns:
  as in Kafka, no unclean election);
* a partition whose leader is not alive loses it: the next live in-sync replica leads, or
  nobody (:data:`NO_LEADER`) when none is alive (any live replica if the topic sets
  ``unclean_leader_election``); the leader epoch goes up by one;
* a partition without a leader gets the first live in-sync replica, epoch up by one;
* **controlled shutdown**: a partition led by a *draining* broker (stopping gracefully) is led
  by its first in-sync replica that is not draining (epoch up by one) while the old leader
  still serves; a draining broker is neither preferred nor given a reassigned leadership;
* **preferred leader** (``auto_leader_rebalance``, Kafka's auto.leader.rebalance): a partition
  whose first replica is alive, in the ISR and not the leader is led by it again (epoch up by
  one), so leaderships spread again after a broker returns (not for internal topics);
* **reassignment** (a ``target`` replica list in the partition state), one step per write: the
  target's missing replicas are added (replicas = old + new); once every target replica is in
  the ISR, leadership moves to the first live one of them if the leader is not a target
  replica (epoch up by one); then the old replicas are dropped (replicas = target, the ISR cut
  to it, the target cleared). The preferred-leader rule waits while a reassignment runs.

:func:`spread` computes the targets of ``tidelog cluster rebalance``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import msgspec

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
    partitions: int,
    brokers: Sequence[int],
    replication_factor: int,
    start: int,
    racks: Mapping[int, str | None] | None = None,
) -> list[tuple[int, ...]]:
    """Replica lists for ``partitions`` partitions: partition ``p``'s leader is the broker at
    ``start + p`` (round robin, so leaders spread evenly) and its followers the next ones.

    **Rack-aware** when brokers have a ``rack`` (``racks``: broker id to rack), as Kafka's
    placement: the brokers are ordered alternating over the racks, and a follower is the next
    broker whose rack holds no replica of the partition yet (the next one at all once every
    rack does), so a partition's replicas span as many racks as its factor allows and a rack's
    loss takes at most ``factor - racks + 1`` of them. ``replication_factor`` larger than the
    broker count is cut to it."""
    if not brokers:
        raise ValueError("no live broker to place partitions on")
    rack_of = racks or {}
    ordered = _rack_alternating(sorted(brokers), rack_of)
    count = len(ordered)
    factor = max(1, min(replication_factor, count))
    out = []
    for p in range(partitions):
        first = (start + p) % count
        chosen = [ordered[first]]
        used = {rack_of.get(ordered[first])}
        for step in range(1, count):
            if len(chosen) == factor:
                break
            broker = ordered[(first + step) % count]
            if rack_of.get(broker) not in used:
                chosen.append(broker)
                used.add(rack_of.get(broker))
        for step in range(1, count):  # fewer racks than the factor: any broker
            if len(chosen) == factor:
                break
            broker = ordered[(first + step) % count]
            if broker not in chosen:
                chosen.append(broker)
        out.append(tuple(chosen))
    return out


def _rack_alternating(brokers: list[int], racks: Mapping[int, str | None]) -> list[int]:
    """``brokers`` one rack at a time (``a1, b1, c1, a2, b2, ...``); unchanged without racks."""
    by_rack: dict[str | None, list[int]] = {}
    for b in brokers:
        by_rack.setdefault(racks.get(b), []).append(b)
    if len(by_rack) < 2:
        return brokers
    columns = [by_rack[r] for r in sorted(by_rack, key=lambda r: (r is None, r or ""))]
    return [c[i] for i in range(max(map(len, columns))) for c in columns if i < len(c)]


def rack_map(view: ClusterView) -> dict[int, str | None]:
    """The rack of every live broker (``None``: it has none)."""
    return {b: v.record.rack for b, v in view.brokers.items()}


def decide(view: ClusterView, *, auto_leader_rebalance: bool = True) -> list[Change]:
    """The changes the controller should make now (empty when the view is settled); with
    ``auto_leader_rebalance`` off, a preferred replica back in sync does not lead again."""
    changes: list[Change] = []
    alive = set(view.brokers)
    serving = {b for b, v in view.brokers.items() if not v.record.draining}
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
                name, topic.record, missing, current, topic.mod_revision, rack_map(view), placed
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
        if elected is None and state.leader in alive - serving:
            elected = _hand_over(state, serving)
        elif elected is None and state.target:
            elected = _reassign(state, serving)
        elif elected is None and auto_leader_rebalance and not name.startswith("__"):
            elected = _prefer(state, serving)  # internal topics: see _prefer
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
    racks: Mapping[int, str | None],
    start: int,
) -> list[Change]:
    replicas = place(len(missing), sorted(racks), topic.replication_factor, start, racks)
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


def _hand_over(state: PartitionState, serving: set[int]) -> tuple[PartitionState, str] | None:
    """**Controlled shutdown**: the leader is draining, so the first in-sync replica that is
    not leads (epoch up by one) while the old leader still serves; ``None`` if there is no
    such replica (the partition goes leaderless when the broker leaves, as it would anyway)."""
    for r in state.isr:
        if r in serving and r != state.leader:
            why = f"broker {state.leader} is shutting down: in-sync replica {r} leads"
            return _with(state, r, state.leader_epoch + 1, state.isr), why
    return None


def _prefer(state: PartitionState, alive: set[int]) -> tuple[PartitionState, str] | None:
    """The preferred replica (the first) leads again once it is alive and in sync.

    Not for internal topics: a leadership change of ``__consumer_offsets`` moves its group
    coordinator, which unloads every group of the partition and makes the next one load them
    from the log while their members wait; they move only when they must."""
    preferred = state.replicas[0]
    if state.leader in (NO_LEADER, preferred) or preferred not in alive:
        return None
    if preferred not in state.isr:
        return None
    why = f"preferred replica {preferred} is in sync again: it leads (was {state.leader})"
    return _with(state, preferred, state.leader_epoch + 1, state.isr), why


def _reassign(state: PartitionState, alive: set[int]) -> tuple[PartitionState, str] | None:
    """The next step of moving the partition to ``state.target`` (``None``: waiting for
    the new replicas to join the ISR, or for a target replica to be alive)."""
    target = state.target
    added = tuple(r for r in target if r not in state.replicas)
    if added:
        replicas = state.replicas + added
        why = f"reassignment to {list(target)}: adding replica(s) {list(added)}"
        return msgspec.structs.replace(state, replicas=replicas), why
    if not set(target) <= set(state.isr):
        return None  # the new replicas are catching up
    if state.leader not in target:
        candidates = [r for r in target if r in alive]
        if not candidates:
            return None
        why = f"reassignment to {list(target)}: leadership moves to {candidates[0]}"
        return _with(state, candidates[0], state.leader_epoch + 1, state.isr), why
    dropped = [r for r in state.replicas if r not in target]
    isr = tuple(r for r in target if r in state.isr)
    why = f"reassignment to {list(target)} done: dropped replica(s) {dropped}"
    return msgspec.structs.replace(state, replicas=target, isr=isr, target=()), why


def spread(view: ClusterView) -> dict[tuple[str, int], tuple[int, ...]]:
    """Targets that spread the replicas of every non-internal topic over the live brokers
    (``tidelog cluster rebalance``): each broker gets its fair share of the replicas (the
    total divided by the broker count; the brokers holding the most now take the remainder),
    and a replica stays where it is whenever its broker's share allows, so as little data
    moves as possible. With racks, a partition's replicas span as many racks as they can
    (a replica sharing a rack with another of its partition moves when a rack is free). Each
    partition's preferred leader is the replica that leads the fewest partitions so far (the
    current one when tied). Partitions already placed so are left out
    (an empty answer: balanced)."""
    alive = sorted(view.brokers)
    if not alive:
        return {}
    parts: list[tuple[tuple[str, int], tuple[int, ...], int]] = []
    for key, versioned in sorted(view.partitions.items()):
        topic = view.topics.get(key[0])
        state = versioned.record
        if key[0].startswith("__") or topic is None or topic.record.topic_id != state.topic_id:
            continue
        factor = min(topic.record.replication_factor, len(alive))
        parts.append((key, state.target or state.replicas, factor))
    if not parts:
        return {}
    now = Counter(r for _, current, _ in parts for r in current)
    quota = _shares(sum(f for _, _, f in parts), alive, now)
    rack = rack_map(view)
    racks = len(set(rack.values()))
    load: Counter[int] = Counter()
    kept: dict[tuple[str, int], list[int]] = {}
    for key, current, factor in parts:
        keep: list[int] = []
        for r in current:
            spare_rack = rack.get(r) not in {rack[k] for k in keep} or len(keep) >= racks
            if r in rack and load[r] < quota[r] and len(keep) < factor and spare_rack:
                keep.append(r)
                load[r] += 1
        kept[key] = keep
    for key, _, factor in parts:
        keep = kept[key]
        while len(keep) < factor:
            used = {rack[k] for k in keep}
            broker = max(
                (b for b in alive if b not in keep),
                key=lambda b: (rack[b] not in used, quota[b] - load[b], -b),
            )
            keep.append(broker)
            load[broker] += 1
    leads: Counter[int] = Counter()
    out = {}
    for key, current, _ in parts:
        keep = kept[key]
        # the least leading so far; of those the one leading now, then the kept order
        first = min(keep, key=lambda b: (leads[b], b != current[0], keep.index(b)))
        leads[first] += 1
        target = (first, *(r for r in keep if r != first))
        if target != current:
            out[key] = target
    return out


def _shares(total: int, brokers: list[int], now: Counter[int]) -> dict[int, int]:
    """``total`` split over ``brokers`` as evenly as it goes; the remainder goes to those
    with the most ``now`` (fewest moves), then the lowest ids."""
    base, extra = divmod(total, len(brokers))
    ranked = sorted(brokers, key=lambda b: (-now[b], b))
    return {b: base + (i < extra) for i, b in enumerate(ranked)}


def _unclean(topic: TopicRecord) -> bool:
    """Whether the topic allows an unclean leader election (``unclean.leader.election`` too)."""
    return any(
        normalise_key(k) == "unclean_leader_election" and v.strip().lower() == "true"
        for k, v in topic.configs.items()
    )


def _with(state: PartitionState, leader: int, epoch: int, isr: tuple[int, ...]) -> PartitionState:
    return msgspec.structs.replace(state, leader=leader, leader_epoch=epoch, isr=isr)
