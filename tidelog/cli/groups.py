"""``tidelog group list|describe|reset-offsets|delete``."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.table import Column, Table

from tidelog.client import AdminClient, TopicPartition
from tidelog.client.admin import GroupDescription, ResetTarget

from . import context, parsing
from .errors import CliError, CliUsageError, command
from .render import markup, print_json

app = typer.Typer(
    name="group",
    help="List, describe, reset and delete consumer groups.\n\n"
    "Example: `tidelog group describe billing`",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)

GroupArgument = Annotated[
    str, typer.Argument(help="The consumer group's id. Example: billing", show_default=False)
]


class GroupStateChoice(StrEnum):
    empty = "empty"
    reconciling = "reconciling"
    stable = "stable"


def _admin(settings: context.Settings) -> AdminClient:
    return AdminClient(settings.broker, client_id="tidelog-cli", **settings.client_options())


def _partitions(tps: Iterable[TopicPartition]) -> dict[str, list[int]]:
    """``{topic: [partitions]}``, sorted."""
    out: dict[str, list[int]] = {}
    for tp in sorted(tps):
        out.setdefault(tp.topic, []).append(tp.partition)
    return out


def _show_partitions(tps: Iterable[TopicPartition]) -> str:
    """``events[0,1] logs[2]``, or ``-`` for none."""
    shown = " ".join(f"{t}[{','.join(map(str, ps))}]" for t, ps in _partitions(tps).items())
    return shown or "-"


def _owner(member_id: str | None, client_ids: dict[str, str]) -> str:
    """A partition's owner, short: the client id and the start of the member id's unique part
    (member ids are ``CLIENT_ID-UUID``); the members table and ``--json`` have the whole id."""
    if member_id is None:
        return "-"
    client_id = client_ids.get(member_id, "")
    if client_id and member_id.startswith(f"{client_id}-"):
        return member_id[: len(client_id) + 9]
    return member_id


def _number(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


@app.command("list")
@command
def list_groups(
    ctx: typer.Context,
    state: Annotated[
        list[GroupStateChoice] | None,
        typer.Option(
            "--state",
            help="Only groups in this state (empty, reconciling or stable); repeat for more. "
            "Example: --state empty",
            show_default=False,
        ),
    ] = None,
) -> None:
    """List the consumer groups with their state and number of members.

    A group exists while it has members or committed offsets.

    Example: `tidelog group list` (add --json before `group` for scripts)
    """
    settings = context.settings(ctx)

    async def main() -> list[dict[str, Any]]:
        async with _admin(settings) as admin:
            found = await admin.list_groups([s.value for s in state or ()])
        return [{"group": g.group_id, "state": g.state, "members": g.member_count} for g in found]

    rows = context.run(main())
    if settings.json:
        print_json(rows)
        return
    if not rows:
        context.stdout.print(
            "no consumer groups: `tidelog consume TOPIC --group NAME` starts one"
            if not state
            else "no consumer groups in that state"
        )
        return
    table = Table("group", "state", "members")
    for row in rows:
        table.add_row(markup(row["group"]), row["state"], str(row["members"]))
    context.stdout.print(table)


def _describe_json(group: GroupDescription) -> dict[str, Any]:
    return {
        "group": group.group_id,
        "state": group.state,
        "epoch": group.group_epoch,
        "assignor": group.assignor,
        "members": [
            {
                "member_id": mb.member_id,
                "member_epoch": mb.member_epoch,
                "instance_id": mb.instance_id,
                "client_id": mb.client_id,
                "host": mb.client_host,
                "subscribed_topics": list(mb.subscribed_topics),
                "subscribed_pattern": mb.subscribed_pattern,
                "assignment": _partitions(mb.assignment),
                "target_assignment": _partitions(mb.target_assignment),
            }
            for mb in group.members
        ],
        "offsets": [
            {
                "topic": p.topic,
                "partition": p.partition,
                "owner": p.member_id,
                "committed": p.committed,
                "end_offset": p.end_offset,
                "lag": p.lag,
                "metadata": p.metadata,
            }
            for p in group.offsets
        ],
        "lag": group.lag,
    }


@app.command("describe")
@command
def describe(ctx: typer.Context, group_id: GroupArgument) -> None:
    """Show a group: its state, its members and what each holds, and per partition the
    owner, the committed offset, the end offset and the lag (end minus committed).

    Example: `tidelog group describe billing`
    """
    settings = context.settings(ctx)

    async def main() -> GroupDescription:
        async with _admin(settings) as admin:
            (found,) = await admin.describe_groups([group_id])
            return found

    group = context.run(main())
    if settings.json:
        print_json(_describe_json(group))
        return
    out = context.stdout
    count = len(group.members)
    out.print(
        f"group [bold]{markup(group.group_id)}[/bold]: {group.state}, epoch {group.group_epoch}, "
        f"assignor {markup(group.assignor or '-')}, {count} member{'s' if count != 1 else ''}",
        soft_wrap=True,
    )
    if group.members:
        members = Table(
            Column("member id", overflow="fold"), "client id", "host", "assigned partitions"
        )
        for mb in group.members:
            members.add_row(
                markup(mb.member_id),
                markup(mb.client_id),
                markup(mb.client_host),
                markup(_show_partitions(mb.assignment)),
            )
        out.print(members)
    if not group.offsets:
        out.print("no committed offsets and no partitions assigned yet")
        return
    client_ids = {mb.member_id: mb.client_id for mb in group.members}
    offsets = Table("topic", "partition", "owner", "committed", "end offset", "lag")
    for p in group.offsets:
        offsets.add_row(
            markup(p.topic),
            str(p.partition),
            markup(_owner(p.member_id, client_ids)),
            _number(p.committed),
            _number(p.end_offset),
            _number(p.lag),
        )
    out.print(offsets)
    out.print(f"total lag: {group.lag:,}")


@app.command("reset-offsets")
@command
def reset_offsets(
    ctx: typer.Context,
    group_id: GroupArgument,
    topic: Annotated[
        str,
        typer.Option(
            "--topic", "-t", help="The topic whose offsets to reset. Example: --topic events"
        ),
    ],
    to_earliest: Annotated[
        bool,
        typer.Option(
            "--to-earliest",
            help="To the first record still in the log. Example: --to-earliest",
        ),
    ] = False,
    to_latest: Annotated[
        bool,
        typer.Option(
            "--to-latest",
            help="To the end of the log (skip everything there now). Example: --to-latest",
        ),
    ] = False,
    to_offset: Annotated[
        int | None,
        typer.Option(
            "--to-offset",
            min=0,
            help="To this offset in each partition (clamped into the log). "
            "Example: --to-offset 100",
            show_default=False,
        ),
    ] = None,
    to_time: Annotated[
        str | None,
        typer.Option(
            "--to-time",
            help="To the first record at or after a time: relative (-15m, -2h, -1d), ISO 8601 "
            "or epoch ms; the end if there is none. Example: --to-time -1h, "
            "--to-time 2024-05-01T12:00",
            show_default=False,
        ),
    ] = None,
    partition: Annotated[
        list[int] | None,
        typer.Option(
            "--partition",
            "-p",
            help="Reset only this partition; repeat for more (default: all). "
            "Example: --partition 0",
            show_default=False,
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Show the offsets it would set, and set nothing. Example: --to-latest --dry-run",
        ),
    ] = False,
) -> None:
    """Set a group's committed offsets for a topic: where its consumers start next time.

    The group must be empty (stop its consumers first): the broker refuses otherwise. Give
    exactly one of --to-earliest, --to-latest, --to-offset and --to-time.

    Examples:

    * `tidelog group reset-offsets billing --topic events --to-earliest`
    * `tidelog group reset-offsets billing --topic events --to-time -15m --dry-run`
    * `tidelog group reset-offsets billing --topic events --to-offset 100 -p 0`
    """
    settings = context.settings(ctx)
    chosen = sum((to_earliest, to_latest, to_offset is not None, to_time is not None))
    if chosen != 1:
        raise CliUsageError(
            "give exactly one of --to-earliest, --to-latest, --to-offset N and --to-time T "
            f"(e.g. tidelog group reset-offsets {group_id} --topic {topic} --to-earliest)"
        )
    to: ResetTarget | None = None
    timestamp: int | None = None
    if to_time is not None:
        try:
            timestamp = parsing.parse_time_ms(to_time)
        except typer.BadParameter as exc:
            raise CliUsageError(f"--to-time: {exc}") from None
    elif to_offset is not None:
        to = to_offset
    else:
        to = "earliest" if to_earliest else "latest"

    async def main() -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
        async with _admin(settings) as admin:
            before = {tp: o.offset for tp, o in (await admin.list_committed(group_id)).items()}
            after = await admin.reset_offsets(
                group_id, topic, to, timestamp=timestamp, partitions=partition, dry_run=dry_run
            )
            return before, after

    before, after = context.run(main())
    rows: list[dict[str, Any]] = [
        {
            "topic": tp.topic,
            "partition": tp.partition,
            "previous": before.get(tp),
            "offset": offset,
        }
        for tp, offset in sorted(after.items())
    ]
    if settings.json:
        print_json({"group": group_id, "topic": topic, "dry_run": dry_run, "offsets": rows})
        return
    verb = "would reset (dry run, nothing changed)" if dry_run else "reset"
    context.stdout.print(
        f"{verb} group [bold]{markup(group_id)}[/bold] on topic [bold]{markup(topic)}[/bold]:",
        soft_wrap=True,
    )
    table = Table("topic", "partition", "previous", "new offset")
    for row in rows:
        table.add_row(
            markup(row["topic"]),
            str(row["partition"]),
            _number(row["previous"]),
            f"{row['offset']:,}",
        )
    context.stdout.print(table)


@app.command("delete")
@command
def delete(
    ctx: typer.Context,
    group_id: GroupArgument,
    yes: Annotated[
        bool,
        typer.Option(
            "--yes",
            "-y",
            help="Do not ask for confirmation (it is only asked on a terminal). "
            "Example: tidelog group delete billing --yes",
        ),
    ] = False,
) -> None:
    """Delete an empty consumer group and its committed offsets. On a terminal it asks first.

    The broker refuses while the group has members (stop its consumers first).

    Example: `tidelog group delete billing --yes`
    """
    settings = context.settings(ctx)

    async def committed() -> int:
        async with _admin(settings) as admin:
            (found,) = await admin.describe_groups([group_id])
            return sum(p.committed is not None for p in found.offsets)

    if not yes and sys.stdin.isatty():
        count = context.run(committed())
        question = (
            f"Delete group {group_id!r} and its committed offsets of {count} "
            f"partition{'s' if count != 1 else ''}?"
        )
        if not typer.confirm(question, default=False):
            raise CliError(f"group {group_id!r} was not deleted")

    async def main() -> None:
        async with _admin(settings) as admin:
            await admin.delete_groups([group_id])

    context.run(main())
    if settings.json:
        print_json({"group": group_id, "deleted": True})
    else:
        context.stdout.print(f"deleted group [bold]{markup(group_id)}[/bold]")
