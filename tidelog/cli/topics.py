"""``tidelog topic create|list|describe|alter|delete`` (``reassign``: :mod:`.reassign`)."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from rich.table import Table

from tidelog.client import (
    AdminClient,
    ConfigSource,
    LogDirPartition,
    OffsetSpec,
    TopicAlreadyExistsError,
    TopicPartition,
)

from . import context, parsing
from .errors import CliError, CliUsageError, command
from .render import human_bytes, markup, print_json

app = typer.Typer(
    name="topic",
    help="Create, list, describe, alter, reassign and delete topics.\n\n"
    "Example: `tidelog topic create events --partitions 3`",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)

ConfigOption = Annotated[
    list[str] | None,
    typer.Option(
        "--config",
        "-c",
        callback=parsing.config_option,
        help="A topic config as key=value; repeat for more. Keys are snake_case (Kafka-style "
        "dotted keys work too). Example: --config retention_ms=86400000",
        show_default=False,
    ),
]
NameArgument = Annotated[
    str, typer.Argument(help="The topic's name. Example: events", show_default=False)
]


@app.command("create")
@command
def create(
    ctx: typer.Context,
    name: NameArgument,
    partitions: Annotated[
        int,
        typer.Option(
            "--partitions",
            "-p",
            help="Number of partitions; -1 takes the broker's default_partitions. "
            "Example: --partitions 6",
        ),
    ] = -1,
    replication_factor: Annotated[
        int,
        typer.Option(
            "--replication-factor",
            "-r",
            help="Copies of each partition; -1 takes the broker's default. "
            "Example: --replication-factor 3",
        ),
    ] = -1,
    config: ConfigOption = None,
    if_not_exists: Annotated[
        bool,
        typer.Option(
            "--if-not-exists",
            help="Succeed quietly when the topic exists already. "
            "Example: tidelog topic create events --if-not-exists",
        ),
    ] = False,
) -> None:
    """Create a topic.

    Example: `tidelog topic create events --partitions 3 --config retention_ms=3600000`
    """
    settings = context.settings(ctx)
    configs = parsing.key_values(config, "--config")

    async def main() -> int:
        async with AdminClient(settings.broker, **settings.client_options()) as admin:
            try:
                await admin.create_topic(
                    name, partitions, replication_factor, configs, if_not_exists=if_not_exists
                )
            except TopicAlreadyExistsError:
                raise CliError(
                    f"topic {name!r} already exists (pick another name, or pass --if-not-exists)"
                ) from None
            (described,) = await admin.describe_topics([name])
            return len(described.partitions)

    count = context.run(main())
    if settings.json:
        print_json({"topic": name, "partitions": count, "configs": configs})
    else:
        context.stdout.print(
            f"created topic [bold]{markup(name)}[/bold] with {count} "
            f"partition{'s' if count != 1 else ''}"
        )


@app.command("list")
@command
def list_topics(
    ctx: typer.Context,
    internal: Annotated[
        bool,
        typer.Option(
            "--internal",
            help="Include internal topics. Example: tidelog topic list --internal",
        ),
    ] = False,
) -> None:
    """List the topics with their partitions, records and size on disk.

    Example: `tidelog topic list` (add --json before `topic` for scripts)
    """
    settings = context.settings(ctx)

    async def main() -> list[dict[str, Any]]:
        async with AdminClient(settings.broker, **settings.client_options()) as admin:
            names = await admin.list_topics(internal=internal)
            if not names:
                return []
            described = {t.name: t for t in await admin.describe_topics(names)}
            disks = await admin.describe_log_dirs(names)
            rows = []
            for name in names:
                parts = [p for d in disks for p in d.partitions if p.topic == name]
                rows.append(
                    {
                        "topic": name,
                        "partitions": len(described[name].partitions),
                        "records": sum(p.log_end_offset - p.log_start_offset for p in parts),
                        "size_bytes": sum(p.size_bytes for p in parts),
                        "internal": described[name].internal,
                    }
                )
            return rows

    rows = context.run(main())
    if settings.json:
        print_json(rows)
        return
    if not rows:
        context.stdout.print("no topics yet: create one with `tidelog topic create NAME`")
        return
    table = Table("topic", "partitions", "records", "size")
    for row in rows:
        table.add_row(
            markup(row["topic"]),
            str(row["partitions"]),
            f"{row['records']:,}",
            human_bytes(row["size_bytes"]),
        )
    context.stdout.print(table)


async def _describe(admin: AdminClient, name: str) -> dict[str, Any]:
    (topic,) = await admin.describe_topics([name])
    tps = [TopicPartition(name, p.partition) for p in topic.partitions]
    starts = await admin.list_offsets(dict.fromkeys(tps, OffsetSpec.EARLIEST))
    ends = await admin.list_offsets(dict.fromkeys(tps, OffsetSpec.LATEST))
    held = {
        (p.partition, d.broker_id): p
        for d in await admin.describe_log_dirs([name])
        for p in d.partitions
        if p.topic == name
    }
    configs = (await admin.describe_configs([name]))[name]
    partitions = []
    for meta in topic.partitions:
        tp = TopicPartition(name, meta.partition)
        start, end = starts[tp].offset, ends[tp].offset
        on_disk = held.get((meta.partition, meta.leader))
        partitions.append(
            {
                "partition": meta.partition,
                "leader": meta.leader,
                "replicas": list(meta.replicas),
                "isr": list(meta.isr),
                "lag": _lags(meta.partition, meta.leader, meta.replicas, held),
                "start_offset": start,
                "end_offset": end,
                "records": max(end - start, 0),
                "size_bytes": on_disk.size_bytes if on_disk else 0,
                "segments": on_disk.segments if on_disk else 0,
                "unreadable": [
                    {
                        "start": u.start_offset,
                        "end": u.end_offset,
                        "kind": u.kind,
                        "detail": u.detail,
                    }
                    for u in (on_disk.unreadable if on_disk else ())
                ],
            }
        )
    return {
        "topic": name,
        "internal": topic.internal,
        "partitions": partitions,
        "configs": {
            key: {"value": e.value, "source": ConfigSource(e.source).name.lower()}
            for key, e in sorted(configs.items())
        },
    }


def _lags(
    partition: int,
    leader: int,
    replicas: tuple[int, ...],
    held: dict[tuple[int, int], LogDirPartition],
) -> dict[str, int | None]:
    """Per replica: the leader's log end offset minus the replica's, as each broker reported
    it (DescribeLogDirs); ``None`` for a replica whose broker did not answer (it is down) or
    without a leader."""
    lead = held.get((partition, leader))
    out: dict[str, int | None] = {}
    for broker in replicas:
        copy = held.get((partition, broker))
        if lead is None or copy is None:
            out[str(broker)] = None
        else:
            out[str(broker)] = max(lead.log_end_offset - copy.log_end_offset, 0)
    return out


@app.command("describe")
@command
def describe(ctx: typer.Context, name: NameArgument) -> None:
    """Show a topic's partitions (offsets, records, size on disk) and configs.

    Per partition: leader, replicas, in-sync replicas, each replica's lag (the leader's log end
    offset minus the replica's, `-` for a broker that is down), start and end offsets, records
    and size on the leader's disk; then any offset ranges the broker cannot serve (damaged or
    missing on its disk). Then every config, with where its value comes from (default, topic
    or broker).

    Example: `tidelog topic describe events`
    """
    settings = context.settings(ctx)

    async def main() -> dict[str, Any]:
        async with AdminClient(settings.broker, **settings.client_options()) as admin:
            return await _describe(admin, name)

    info = context.run(main())
    if settings.json:
        print_json(info)
        return
    parts = info["partitions"]
    records = sum(p["records"] for p in parts)
    size = sum(p["size_bytes"] for p in parts)
    out = context.stdout
    out.print(
        f"topic [bold]{markup(name)}[/bold]: {len(parts)} partition"
        f"{'s' if len(parts) != 1 else ''}, {records:,} records, {human_bytes(size)} on disk"
    )
    table = Table(
        "partition", "leader", "replicas", "isr", "lag", "start", "end", "records", "size"
    )
    for p in parts:
        table.add_row(
            str(p["partition"]),
            str(p["leader"]),
            ",".join(map(str, p["replicas"])),
            ",".join(map(str, p["isr"])),
            " ".join(f"{b}:{'-' if lag is None else lag}" for b, lag in p["lag"].items()),
            str(p["start_offset"]),
            str(p["end_offset"]),
            f"{p['records']:,}",
            human_bytes(p["size_bytes"]),
        )
    out.print(table)
    damaged = [(p["partition"], u) for p in parts for u in p["unreadable"]]
    if damaged:
        out.print(
            f"[bold red]{len(damaged)} unreadable range{'s' if len(damaged) != 1 else ''}"
            "[/bold red]: consumers get DAMAGED_RANGE or MISSING_RANGE there "
            '(docs/STORAGE.md, "Damage")'
        )
        ranges = Table("partition", "offsets", "kind", "detail")
        for partition, u in damaged:
            ranges.add_row(
                str(partition), f"[{u['start']}, {u['end']})", u["kind"], markup(u["detail"])
            )
        out.print(ranges)
    configs = Table("config", "value", "source")
    for key, entry in info["configs"].items():
        style = "bold" if entry["source"] != "default" else ""
        value = "(hidden)" if entry["value"] is None else str(entry["value"])
        configs.add_row(key, markup(value), entry["source"], style=style)
    out.print(configs)


@app.command("alter")
@command
def alter(
    ctx: typer.Context,
    name: NameArgument,
    config: ConfigOption = None,
    reset: Annotated[
        list[str] | None,
        typer.Option(
            "--reset",
            help="A config key to reset to its default; repeat for more. "
            "Example: --reset retention_ms",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Change a topic's configs at run time (keys not named keep their values).

    Example: `tidelog topic alter events --config retention_ms=3600000`
    """
    settings = context.settings(ctx)
    values = parsing.key_values(config, "--config")
    if not values and not reset:
        raise CliUsageError(
            "nothing to change: give --config key=value or --reset key "
            "(e.g. tidelog topic alter events --config retention_ms=3600000)"
        )

    async def main() -> None:
        async with AdminClient(settings.broker, **settings.client_options()) as admin:
            await admin.alter_configs(name, values, reset or ())

    context.run(main())
    if settings.json:
        print_json({"topic": name, "set": values, "reset": reset or []})
        return
    changes = [f"{k}={v}" for k, v in values.items()] + [f"{k} reset" for k in reset or ()]
    context.stdout.print(f"updated topic [bold]{markup(name)}[/bold]: {markup(', '.join(changes))}")


@app.command("delete")
@command
def delete(
    ctx: typer.Context,
    name: NameArgument,
    yes: Annotated[
        bool,
        typer.Option(
            "--yes",
            "-y",
            help="Do not ask for confirmation (it is only asked on a terminal). "
            "Example: tidelog topic delete events --yes",
        ),
    ] = False,
) -> None:
    """Delete a topic and all its records. On a terminal it asks first.

    Example: `tidelog topic delete events --yes`
    """
    settings = context.settings(ctx)

    async def records() -> int:
        async with AdminClient(settings.broker, **settings.client_options()) as admin:
            info = await _describe(admin, name)
            return sum(p["records"] for p in info["partitions"])

    if not yes and sys.stdin.isatty():
        count = context.run(records())
        if not typer.confirm(f"Delete topic {name!r} and its {count:,} records?", default=False):
            raise CliError(f"topic {name!r} was not deleted")

    async def main() -> None:
        async with AdminClient(settings.broker, **settings.client_options()) as admin:
            await admin.delete_topics([name])

    context.run(main())
    if settings.json:
        print_json({"topic": name, "deleted": True})
    else:
        context.stdout.print(f"deleted topic [bold]{markup(name)}[/bold]")
