"""What the side-by-side bench runs: the scenario matrix for ``--quick``, ``--full`` and
``--tiny`` (the test suite's), and what "matching durability" means for each row.

A :class:`Plan` is pure data; ``sidebyside.py`` executes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# What each durability level means, per system, as written in the table.
DURABILITY: dict[str, dict[str, str]] = {
    "leader": {
        "tidelog": "acks=leader: appended to the log (page cache), no fsync before the ack",
        "redis": "appendfsync everysec: in the AOF (page cache), fsynced within ~1 s",
        "nats": "JetStream default: in the stream file (page cache), fsynced on a timer",
    },
    "all": {
        "tidelog": "acks=all: fsynced before the ack (group commit)",
        "redis": "appendfsync always: AOF fsynced before the reply (per event-loop batch)",
        "nats": "sync_interval: always: every write fsynced before the ack (nats-server 2.10+; "
        "with an older server the row is left out)",
    },
}


@dataclass
class Plan:
    name: str
    runs: int
    records: int  # per produce / consume run, every system
    sizes: list[int]  # produce and consume, all systems
    tidelog_acks: list[str]  # produce, 100 B; "none" has no peer counterpart
    codecs: list[str | None]  # tidelog produce at acks=leader, every size
    partitions: list[int]  # tidelog produce at acks=leader, 100 B
    latency_rates: list[int]
    latency_seconds: float
    limits_mib: int
    group_members: int = 0  # 0: not run
    many_clients: int = 0  # producers and consumers each; 0: not run
    many_clients_rate: int = 50  # records/s per producer
    many_clients_seconds: float = 10.0
    soak_seconds: float = 0.0  # 0: not run
    soak_rate: int = 5_000
    peers: list[str] = field(default_factory=lambda: ["redis", "nats"])


QUICK = Plan(
    name="quick",
    runs=3,
    records=100_000,
    sizes=[100],
    tidelog_acks=["leader", "all"],
    codecs=[None],
    partitions=[1],
    latency_rates=[1_000, 10_000],
    latency_seconds=3.0,
    limits_mib=256,
    many_clients=100,  # issue 24, goal 3
    many_clients_rate=50,
    many_clients_seconds=10.0,
)

FULL = Plan(
    name="full",
    runs=3,
    records=300_000,
    sizes=[100, 1024, 10240],
    tidelog_acks=["none", "leader", "all"],
    codecs=[None, "lz4", "zstd"],
    partitions=[1, 16],
    latency_rates=[1_000, 10_000, 50_000],
    latency_seconds=10.0,
    limits_mib=1024,
    group_members=4,
    many_clients=100,
    many_clients_rate=50,
    many_clients_seconds=30.0,
    soak_seconds=600.0,
)

TINY = Plan(
    name="tiny",
    runs=1,
    records=300,
    sizes=[100],
    tidelog_acks=["leader", "all"],
    codecs=[None, "lz4"],
    partitions=[1, 2],
    latency_rates=[500],
    latency_seconds=0.2,
    limits_mib=4,
    group_members=2,
    many_clients=3,
    many_clients_rate=20,
    many_clients_seconds=0.5,
    soak_seconds=0.5,
    soak_rate=200,
)

PLANS = {p.name: p for p in (QUICK, FULL, TINY)}
