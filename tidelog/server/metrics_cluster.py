"""The cluster, replication and share-group (queue) families of ``/metrics``, read at scrape
time like the rest (:mod:`.metrics_export`): from the broker's view of the cluster, the
partitions it leads (:class:`~.replication.leader.PartitionLeader`), the counters its replica
manager and its cluster membership keep (bumped once per ISR change or election, never per
record), and the share coordinator's groups (through its DescribeShareGroup handler).

Where a fact belongs to one broker in Kafka it does here too, so a sum over brokers is the
cluster's figure: ``partitions_under_replicated`` and ``partitions_under_min_isr`` count the
partitions a broker *leads* (Kafka's ReplicaManager UnderReplicatedPartitions);
``partitions_leaderless`` and ``leader_elections_total`` are the *controller's*
(OfflinePartitionsCount, LeaderElectionRateAndTimeMs); ``controller_active`` is 1 on the
controller only (ActiveControllerCount). A single broker is its own cluster: alive, the
controller, every replica in sync.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Final

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from tidelog.wire import share_messages as sm

from .cluster.records import NO_LEADER

if TYPE_CHECKING:
    from .cluster.role import ClusterRole
    from .shares import ShareCoordinator

PREFIX: Final = "tidelog_"
PARTITION: Final = ("topic", "partition")


def cluster_families(role: ClusterRole | None, partitions: int, offline: int) -> Iterator[Metric]:
    """``partitions``: the local partitions (all led, on a single broker); ``offline``: those
    whose log went offline after a storage error (leaderless on a single broker, as Kafka
    counts an offline log dir's partitions; in a cluster the controller's view decides)."""
    alive, present, active, leaderless, led_count = 1, 1, 1, offline, partitions - offline
    led: list[tuple[str, int, int, int, int, dict[int, int]]] = []
    shrinks = expands = elections = unclean = 0
    if role is not None and role.member is not None:
        member = role.member
        alive = len(member.view.brokers)
        present = int(member.view.controller is not None)
        active = int(member.is_controller)
        leaderless = _leaderless(role) if active else 0
        elections = member.leader_elections
        unclean = member.unclean_leader_elections
        replicas = role.replicas
        shrinks, expands = replicas.isr_shrinks, replicas.isr_expands
        for tp, leader in sorted(replicas.leaders.items()):
            end = leader.plog.log_end_offset
            lags = {
                broker: max(end - progress.position, 0)
                for broker, progress in sorted(leader.followers.items())
                if progress.position >= 0
            }
            led.append((tp.topic, tp.partition, len(leader.replicas), len(leader.isr),
                        leader.min_isr, lags))  # fmt: skip
        led_count = len(led)
    yield GaugeMetricFamily(
        PREFIX + "brokers_alive",
        "Brokers registered in the cluster with a live lease, as this broker sees it "
        "(Redpanda's cluster_brokers).",
        value=alive,
    )
    yield GaugeMetricFamily(
        PREFIX + "controller_present",
        "1 when this broker sees a controller in the cluster, else 0.",
        value=present,
    )
    yield GaugeMetricFamily(
        PREFIX + "controller_active",
        "1 on the broker that is the controller, 0 on the others: the sum over the cluster "
        "is 1 (Kafka's ActiveControllerCount).",
        value=active,
    )
    yield GaugeMetricFamily(
        PREFIX + "partitions_leaderless",
        "Partitions without a leader, counted by the controller (0 on the other brokers); on "
        "a single broker, those whose log went offline after a storage error (Kafka's "
        "OfflinePartitionsCount; Redpanda's cluster_unavailable_partitions).",
        value=leaderless,
    )
    yield GaugeMetricFamily(
        PREFIX + "partitions_led",
        "Partitions this broker leads (Kafka's LeaderCount).",
        value=led_count,
    )
    yield GaugeMetricFamily(
        PREFIX + "partitions_under_replicated",
        "Partitions this broker leads whose ISR is smaller than their replica set (Kafka's "
        "UnderReplicatedPartitions).",
        value=sum(1 for _, _, replicas, isr, _, _ in led if isr < replicas),
    )
    yield GaugeMetricFamily(
        PREFIX + "partitions_under_min_isr",
        "Partitions this broker leads whose ISR is smaller than min_insync_replicas: acks=all "
        "produces to them fail with NOT_ENOUGH_REPLICAS (Kafka's UnderMinIsrPartitionCount).",
        value=sum(1 for _, _, _, isr, min_isr, _ in led if isr < min_isr),
    )
    for name, count, doc in (
        ("isr_shrinks", shrinks, "ISR changes of partitions led here that dropped a replica "
         "(Kafka's IsrShrinksPerSec)."),
        ("isr_expands", expands, "ISR changes of partitions led here that added a replica "
         "(Kafka's IsrExpandsPerSec)."),
        ("leader_elections", elections, "Leaders elected by this broker as the controller: a "
         "dead leader replaced or a leaderless partition led again (Kafka's "
         "LeaderElectionRateAndTimeMs count)."),
        ("unclean_leader_elections", unclean, "Of those, leaders elected from outside the ISR "
         "(only for topics with unclean_leader_election; UncleanLeaderElectionsPerSec)."),
    ):  # fmt: skip
        yield CounterMetricFamily(PREFIX + name, doc, value=count)
    lag = GaugeMetricFamily(
        PREFIX + "replica_lag_records",
        "For each partition this broker leads and each follower that fetched in the current "
        "leader epoch: the leader's log end offset minus the follower's fsynced position "
        "(Kafka's per-replica lag; a replica that has not fetched since the epoch began is "
        "left out, and counts in partitions_under_replicated once out of the ISR).",
        labels=[*PARTITION, "replica"],
    )
    for topic, partition, _, _, _, lags in led:
        for broker, records in lags.items():
            lag.add_metric([topic, str(partition), str(broker)], records)
    yield lag


def _leaderless(role: ClusterRole) -> int:
    """Partitions of the cluster's current topics that have no leader."""
    view = role.view
    count = 0
    for (name, _), versioned in view.partitions.items():
        topic = view.topics.get(name)
        state = versioned.record
        if topic is not None and topic.record.topic_id == state.topic_id:
            count += state.leader == NO_LEADER
    return count


def share_families(shares: ShareCoordinator | None) -> Iterator[Metric]:
    """Every share group's partitions, as DescribeShareGroup reports them (``tidelog queue
    status``): what is available, in flight, delayed, and dead-lettered."""
    labels = ["group", *PARTITION]
    gauges = {
        name: GaugeMetricFamily(PREFIX + name, doc, labels=labels)
        for name, doc in (
            (
                "share_group_available",
                "Records a fetch could take now: never acquired (to the "
                "high watermark) or released and past their delay (the queue's depth; JetStream's "
                "consumer_num_pending).",
            ),
            (
                "share_group_inflight",
                "Records acquired by a member and not yet settled (under "
                "an acquisition lock; JetStream's consumer_num_ack_pending).",
            ),
            (
                "share_group_delayed",
                "Records released with a delay (a nack's backoff) that is not over yet.",
            ),
            (
                "share_group_lag",
                "The high watermark minus the share group's start offset: "
                "records not yet settled (Kafka's share-lag-offsets).",
            ),
        )
    }
    members = GaugeMetricFamily(
        PREFIX + "share_group_members", "Members of a share group.", labels=["group"]
    )
    acked = CounterMetricFamily(
        PREFIX + "share_group_acknowledged",
        "Records a share group's members acknowledged (kept across restarts).",
        labels=labels,
    )
    dead = CounterMetricFamily(
        PREFIX + "share_group_dead_lettered",
        "Records a share group sent to its dead-letter topic: rejected, out of delivery "
        "attempts or of lock renewals (kept across restarts).",
        labels=labels,
    )
    statuses = (
        []
        if shares is None
        else [(g, shares.describe(sm.DescribeShareGroupRequest(g))) for g in sorted(shares.groups)]
    )
    for group_id, status in statuses:
        if status.error_code:
            continue
        members.add_metric([group_id], len(status.members))
        for p in status.partitions:
            series = [group_id, p.topic, str(p.partition)]
            gauges["share_group_available"].add_metric(series, p.available)
            gauges["share_group_inflight"].add_metric(series, p.in_flight)
            gauges["share_group_delayed"].add_metric(series, p.delayed)
            gauges["share_group_lag"].add_metric(series, max(p.log_end_offset - p.start_offset, 0))
            acked.add_metric(series, p.acked)
            dead.add_metric(series, p.dead_lettered)
    yield members
    yield from gauges.values()
    yield from (acked, dead)
