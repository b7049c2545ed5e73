"""``tidelog topic reassign`` and ``tidelog cluster rebalance``: move partitions between the
brokers of a cluster (docs/CLUSTER.md, "Moving partitions"); thin over
:meth:`AdminClient.reassign_partitions` and :meth:`AdminClient.rebalance_partitions`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import typer
from rich.table import Table

from tidelog.client import AdminClient, TopicPartition
from tidelog.client.errors import RequestTimeoutError

from . import context
from .errors import CliError, CliUsageError, command
from .render import markup, print_json

Targets = dict[TopicPartition, tuple[int, ...]]

WaitOption = Annotated[
    bool,
    typer.Option(
        "--wait",
        help="Return only once every partition sits on its new brokers, all in sync. "
        "Example: --wait",
    ),
]
WaitTimeoutOption = Annotated[
    float,
    typer.Option(
        "--wait-timeout",
        help="Seconds --wait waits before it gives up (the move goes on). "
        "Example: --wait-timeout 600",
    ),
]
DryRunOption = Annotated[
    bool,
    typer.Option("--dry-run", help="Check and show the moves, change nothing. Example: --dry-run"),
]


def parse_replicas(text: str) -> tuple[int, ...]:
    """``"3,4,5"`` as broker ids; :class:`CliUsageError` for anything else."""
    try:
        replicas = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise CliUsageError(
            f"--replicas {text!r}: give broker ids separated by commas (e.g. --replicas 3,4,5)"
        ) from None
    if any(b < 0 for b in replicas):
        raise CliUsageError(f"--replicas {text!r}: broker ids are not negative")
    return replicas


def reassign(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The topic. Example: orders", show_default=False)],
    replicas: Annotated[
        str,
        typer.Option(
            "--replicas",
            help="The brokers to hold the partitions, comma separated, as many as the topic's "
            "replication factor; the first is the preferred leader. Example: --replicas 3,4,5",
            show_default=False,
        ),
    ],
    partition: Annotated[
        int | None,
        typer.Option(
            "--partition",
            "-p",
            help="Move only this partition (default: every partition). Example: --partition 2",
            show_default=False,
        ),
    ] = None,
    wait: WaitOption = False,
    wait_timeout: WaitTimeoutOption = 300.0,
    dry_run: DryRunOption = False,
) -> None:
    """Move a topic's partitions to other brokers, with no pause in traffic: the new replicas
    are added, catch up and join the ISR, leadership moves to one of them, then the old
    replicas are dropped (and delete their copies).

    Example: `tidelog topic reassign orders --replicas 3,4,5 --wait`
    """
    wanted = parse_replicas(replicas)

    async def start(admin: AdminClient) -> Targets:
        return await admin.reassign_partitions(
            name, wanted, partition=partition, validate_only=dry_run
        )

    _run(ctx, start, wait, wait_timeout, dry_run)


def rebalance(
    ctx: typer.Context,
    wait: WaitOption = False,
    wait_timeout: WaitTimeoutOption = 300.0,
    dry_run: DryRunOption = False,
) -> None:
    """Spread the replicas and preferred leaders of every topic evenly over the live brokers
    (after brokers were added, say), moving as few replicas as possible; each move is a
    reassignment (`tidelog topic reassign`). Internal topics stay where they are.

    Example: `tidelog cluster rebalance --dry-run`, then `tidelog cluster rebalance --wait`
    """

    async def start(admin: AdminClient) -> Targets:
        return await admin.rebalance_partitions(validate_only=dry_run)

    _run(ctx, start, wait, wait_timeout, dry_run)


def _run(
    ctx: typer.Context,
    start: Callable[[AdminClient], Awaitable[Targets]],
    wait: bool,
    wait_timeout: float,
    dry_run: bool,
) -> None:
    settings = context.settings(ctx)

    async def main() -> tuple[dict[TopicPartition, tuple[int, ...]], Targets]:
        async with AdminClient(settings.broker, **settings.client_options()) as admin:
            before = {
                TopicPartition(d.name, p.partition): p.replicas
                for d in await admin.describe_topics()
                for p in d.partitions
            }
            targets = await start(admin)
            if wait and not dry_run and targets:
                try:
                    await admin.wait_for_reassignment(targets, within=wait_timeout)
                except RequestTimeoutError as exc:
                    raise CliError(str(exc)) from None
            return before, targets

    before, targets = context.run(main())
    rows = [
        {
            "topic": tp.topic,
            "partition": tp.partition,
            "replicas": list(before.get(tp, ())),
            "target": list(target),
        }
        for tp, target in sorted(targets.items())
    ]
    state = "checked" if dry_run else ("done" if wait else "started")
    if settings.json:
        out: dict[str, Any] = {"moves": rows, "state": state}
        print_json(out)
        return
    if not rows:
        context.stdout.print("nothing to move: every partition is where it should be")
        return
    table = Table("topic", "partition", "replicas", "target")
    for tp, target in sorted(targets.items()):
        table.add_row(
            markup(tp.topic),
            str(tp.partition),
            ",".join(map(str, before.get(tp, ()))),
            ",".join(map(str, target)),
        )
    context.stdout.print(table)
    said = {
        "checked": "dry run: nothing was changed",
        "done": f"{len(rows)} partition(s) moved",
        "started": f"{len(rows)} partition(s) moving (--wait waits until done; "
        "`tidelog topic describe` shows progress)",
    }
    context.stdout.print(said[state])


def register(topic_app: typer.Typer, cluster_app: typer.Typer) -> None:
    topic_app.command("reassign")(command(reassign))
    cluster_app.command("rebalance")(command(rebalance))
