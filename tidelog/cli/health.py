"""``tidelog cluster health``: is the cluster serving? rpk's three conditions -- every broker
answers, every partition has a leader, a controller exists -- judged from metadata read
through the client. Exits 0 when healthy and :data:`EXIT_UNHEALTHY` (10, rpk's) when not,
printing the reasons, so scripts and readiness probes can use it.

With one broker, "every broker answers" is the broker answering the metadata request; in a
cluster each registered broker must answer one of its own too, and a broker that holds
replicas but is registered no more (killed: its lease ran out) is down. Each down broker is
named in the reasons.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass, field
from typing import Annotated, Final

import typer
from rich.text import Text

from tidelog.client import AdminClient, TidelogError
from tidelog.client.admin import BrokerInfo

from . import context, render
from .errors import command

EXIT_UNHEALTHY: Final = 10
app = typer.Typer(
    help="The cluster as a whole. Example: `tidelog cluster health --json`", no_args_is_help=True
)


@dataclass(slots=True)
class Health:
    """One check's outcome; the JSON output is this, field for field."""

    healthy: bool
    reasons: list[str] = field(default_factory=list)
    controller_id: int = -1
    brokers: list[int] = field(default_factory=list)
    """The brokers registered in the cluster (a broker whose lease ran out is not)."""
    brokers_down: list[str] = field(default_factory=list)
    """Broker ids that hold replicas but are not registered or do not answer (the bootstrap
    address when even it does not answer)."""
    leaderless_partitions: list[str] = field(default_factory=list)
    under_replicated_partitions: list[str] = field(default_factory=list)
    """Partitions whose ISR is smaller than their replica set: shown, not a reason on its own
    (as rpk: a replica catching up after a restart is healthy)."""


async def check(settings: context.Settings) -> Health:
    """Ask the bootstrap broker for the cluster's metadata, ask every broker in it to answer,
    and judge."""
    try:
        async with asyncio.timeout(settings.timeout * 2):
            async with AdminClient(settings.broker, **settings.client_options()) as admin:
                cluster = await admin.describe_cluster()
                topics = await admin.describe_topics(internal=True)
    except (TidelogError, OSError, TimeoutError) as exc:
        reason = f"broker {settings.broker} does not answer: {exc or type(exc).__name__}"
        return Health(False, [reason], brokers_down=[settings.broker])
    health = Health(
        True,
        controller_id=cluster.controller_id,
        brokers=sorted(b.node_id for b in cluster.brokers),
    )
    partitions = [(f"{t.name}-{p.partition}", p) for t in topics for p in t.partitions]
    health.leaderless_partitions = [n for n, p in partitions if p.leader < 0 or p.error_code]
    health.under_replicated_partitions = [n for n, p in partitions if len(p.isr) < len(p.replicas)]
    holding: dict[int, int] = {}
    for _, p in partitions:
        for replica in p.replicas:
            holding[replica] = holding.get(replica, 0) + 1
    down: dict[int, str] = {
        b: f"broker {b} is down: not registered, it holds replicas of {n} partition(s)"
        for b, n in sorted(holding.items())
        if b not in health.brokers
    }
    silent = await asyncio.gather(*(_answers(settings, b) for b in cluster.brokers))
    down.update((b.node_id, why) for b, why in zip(cluster.brokers, silent, strict=True) if why)
    health.brokers_down = [str(b) for b in sorted(down)]
    health.reasons += [down[b] for b in sorted(down)]
    if health.leaderless_partitions:
        shown = ", ".join(health.leaderless_partitions[:10])
        health.reasons.append(
            f"{len(health.leaderless_partitions)} leaderless partition(s): {shown}"
        )
    if cluster.controller_id not in health.brokers:
        health.reasons.append("no controller")
    health.healthy = not health.reasons
    return health


async def _answers(settings: context.Settings, broker: BrokerInfo) -> str | None:
    """``None`` when ``broker`` answers a metadata request of its own, else why not."""
    address = f"{broker.host}:{broker.port}"
    try:
        async with asyncio.timeout(settings.timeout):
            async with AdminClient(address, **settings.client_options()):
                return None
    except (TidelogError, OSError, TimeoutError) as exc:
        return f"broker {broker.node_id} at {address} does not answer: {exc or type(exc).__name__}"


def show(health: Health, as_json: bool) -> None:
    if as_json:
        render.print_json(asdict(health))
        return
    verdict = Text("healthy", "bold green") if health.healthy else Text("unhealthy", "bold red")
    context.stdout.print(Text.assemble("Healthy: ", verdict))
    for reason in health.reasons:
        context.stdout.print(Text(f"  - {reason}", "red"), soft_wrap=True)
    controller = str(health.controller_id) if health.controller_id >= 0 else "none"
    context.stdout.print(f"Controller ID: {controller}")
    context.stdout.print(f"All brokers: {health.brokers}")
    context.stdout.print(f"Brokers down: {health.brokers_down}")
    context.stdout.print(f"Leaderless partitions: {health.leaderless_partitions}")
    context.stdout.print(f"Under-replicated partitions: {health.under_replicated_partitions}")


async def watch(
    settings: context.Settings, interval: float, as_json: bool, until_healthy: bool
) -> bool:
    """Check every ``interval`` seconds until stopped (or healthy, with ``until_healthy``);
    whether the last check was healthy."""
    while True:
        health = await check(settings)
        show(health, as_json)
        if until_healthy and health.healthy:
            return True
        await asyncio.sleep(interval)


@app.command("health")
@command
def health(
    ctx: typer.Context,
    watch_: Annotated[
        bool,
        typer.Option(
            "--watch", "-w", help="Check again every --interval seconds. Example: --watch"
        ),
    ] = False,
    interval: Annotated[
        float,
        typer.Option(
            "--interval", min=0.1, help="Seconds between checks with --watch. Example: --interval 5"
        ),
    ] = 2.0,
    exit_when_healthy: Annotated[
        bool,
        typer.Option(
            "--exit-when-healthy",
            help="With --watch: stop at the first healthy check. "
            "Example: --watch --exit-when-healthy",
        ),
    ] = False,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print each check as JSON. Example: --json")
    ] = False,
) -> None:
    """Healthy when every broker answers, every partition has a leader and a controller
    exists; otherwise print the reasons and exit 10.

    Example: `tidelog cluster health --watch --exit-when-healthy`
    """
    settings = context.settings(ctx)
    as_json = json_output or settings.json
    if watch_:
        healthy = context.run(watch(settings, interval, as_json, exit_when_healthy))
        raise typer.Exit(0 if healthy else EXIT_UNHEALTHY)
    result = context.run(check(settings))
    show(result, as_json)
    raise typer.Exit(0 if result.healthy else EXIT_UNHEALTHY)
