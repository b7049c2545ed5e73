"""``tidelog consume``: read records of a topic and print them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Final, cast

import typer

from tidelog.client import AdminClient, Consumer, OffsetSpec, TopicPartition

from . import context, parsing
from .errors import CliError, CliUsageError, command
from .render import OutputFormat, RecordWriter
from .stopping import Stopped

POLL_RECORDS: Final = 10_000
"""Records taken per ``getmany()``: one write to the output each."""
POLL_WAIT_S: Final = 1.0


class OutputFormatChoice(StrEnum):
    pretty = "pretty"
    json = "json"
    raw = "raw"
    value = "value"


@dataclass(frozen=True, slots=True)
class StartAt:
    """Where reading starts: at most one of these is set; none means the end."""

    beginning: bool = False
    offset: int | None = None
    time_ms: int | None = None

    @property
    def end(self) -> bool:
        return not self.beginning and self.offset is None and self.time_ms is None


async def select_partitions(
    consumer: Consumer, topic: str, wanted: Sequence[int] | None
) -> list[TopicPartition]:
    """The partitions to read: ``wanted`` (checked) or all of the topic's."""
    partitions = await consumer.partitions_for(topic)
    for p in wanted or ():
        if p not in partitions:
            raise CliError(
                f"topic {topic!r} has no partition {p} (it has {len(partitions)}: "
                f"0 to {len(partitions) - 1})"
            )
    return [TopicPartition(topic, p) for p in (wanted or partitions)]


async def position(
    consumer: Consumer, admin: AdminClient, tps: list[TopicPartition], start: StartAt
) -> dict[TopicPartition, int]:
    """Seek every partition per ``start``; returns the end offsets as of now."""
    specs = dict.fromkeys(tps, OffsetSpec.LATEST)
    ends = {tp: o.offset for tp, o in (await admin.list_offsets(specs)).items()}
    specs = dict.fromkeys(tps, OffsetSpec.EARLIEST)
    firsts = {tp: o.offset for tp, o in (await admin.list_offsets(specs)).items()}
    if start.beginning:
        targets = firsts
    elif start.offset is not None:
        # A negative offset counts back from the end; both are clamped into the log.
        wanted = {tp: start.offset if start.offset >= 0 else ends[tp] + start.offset for tp in tps}
        targets = {tp: min(max(wanted[tp], firsts[tp]), ends[tp]) for tp in tps}
    elif start.time_ms is not None:
        found = await admin.list_offsets(dict.fromkeys(tps, start.time_ms))
        targets = {tp: found[tp].offset if found[tp].offset >= 0 else ends[tp] for tp in tps}
    else:
        targets = ends
    for tp in tps:
        consumer.seek(tp, targets[tp])
    return ends


async def _consume(
    settings: context.Settings,
    topic: str,
    partitions: Sequence[int] | None,
    start: StartAt,
    count: int | None,
    follow: bool,
    writer: RecordWriter,
) -> int:
    options = settings.client_options()
    seen = 0
    async with (
        AdminClient(settings.broker, client_id="tidelog-cli", **options) as admin,
        Consumer(
            settings.broker,
            client_id="tidelog-cli",
            auto_offset_reset="earliest",
            fetch_max_wait=0.5,
            **options,
        ) as consumer,
    ):
        tps = await select_partitions(consumer, topic, partitions)
        consumer.assign(tps)
        ends = await position(consumer, admin, tps, start)
        positions = {tp: await consumer.position(tp) for tp in tps}
        if follow and context.stderr.is_terminal:
            context.stderr.print(
                f"waiting for records on {topic} (Ctrl-C stops)", style="dim", soft_wrap=True
            )
        while count is None or seen < count:
            active: list[TopicPartition] = tps
            if not follow:
                active = [tp for tp in tps if positions[tp] < ends[tp]]
                if not active:
                    break
            limit = POLL_RECORDS if count is None else min(POLL_RECORDS, count - seen)
            batch = await consumer.getmany(*active, timeout=POLL_WAIT_S, max_records=limit)
            for tp, records in batch.items():
                positions[tp] = records[-1].offset + 1
                if not follow and records[-1].offset >= ends[tp]:
                    records = [r for r in records if r.offset < ends[tp]]
                if count is not None:
                    records = records[: count - seen]
                writer.write(records)
                seen += len(records)
    return seen


async def _caught_up(consumer: Consumer, ends: dict[TopicPartition, int]) -> bool:
    """Whether the group has assigned this consumer partitions, all read up to ``ends``."""
    owned = consumer.assignment()
    if not owned:
        return False
    for tp in owned:
        if await consumer.position(tp) < ends.get(tp, 0):
            return False
    return True


async def _consume_group(
    settings: context.Settings,
    topic: str,
    group: str,
    from_beginning: bool,
    count: int | None,
    follow: bool,
    writer: RecordWriter,
) -> int:
    """Read ``topic`` as a member of ``group``: from its committed offsets (where it has none,
    the beginning or the end per ``from_beginning``). Every record handed out is printed, so
    the positions auto-committed (and committed on close, also after Ctrl-C or SIGTERM) are
    exactly what was shown. Without ``follow`` it stops once every assigned partition has reached
    the end of the log as it was when it started."""
    options = settings.client_options()
    seen = 0
    async with (
        AdminClient(settings.broker, client_id="tidelog-cli", **options) as admin,
        Consumer(
            settings.broker,
            client_id="tidelog-cli",
            group_id=group,
            auto_commit=True,
            auto_offset_reset="earliest" if from_beginning else "latest",
            fetch_max_wait=0.5,
            **options,
        ) as consumer,
    ):
        tps = await select_partitions(consumer, topic, None)
        ends = {
            tp: o.offset
            for tp, o in (await admin.list_offsets(dict.fromkeys(tps, OffsetSpec.LATEST))).items()
        }
        consumer.subscribe([topic])
        # Said once the member has its partitions and their positions: a record produced
        # after the message is never skipped by a group that starts at the end.
        announce = follow and context.stderr.is_terminal
        while count is None or seen < count:
            if not follow and await _caught_up(consumer, ends):
                break
            limit = POLL_RECORDS if count is None else min(POLL_RECORDS, count - seen)
            batch = await consumer.getmany(timeout=POLL_WAIT_S, max_records=limit)
            for records in batch.values():
                writer.write(records)
                seen += len(records)
            if announce and consumer.assignment():
                for tp in consumer.assignment():
                    await consumer.position(tp)
                context.stderr.print(
                    f"waiting for records on {topic} as group {group} (Ctrl-C stops)",
                    style="dim",
                    soft_wrap=True,
                )
                announce = False
    return seen


@command
def consume(
    ctx: typer.Context,
    topic: Annotated[str, typer.Argument(help="Topic to read. Example: events")],
    from_beginning: Annotated[
        bool,
        typer.Option(
            "--from-beginning",
            "-b",
            help="Start at the first record still in the log. Example: --from-beginning",
        ),
    ] = False,
    offset: Annotated[
        int | None,
        typer.Option(
            "--offset",
            "-o",
            help="Start at this offset in each partition read; negative counts back from the "
            "end. Example: --offset 100, or --offset -10 for the last ten",
            show_default=False,
        ),
    ] = None,
    from_time: Annotated[
        str | None,
        typer.Option(
            "--from-time",
            help="Start at the first record at or after a time: relative (-15m, -2h, -1d), ISO "
            "8601 or epoch ms. Example: --from-time -15m, --from-time 2024-05-01T12:00",
            show_default=False,
        ),
    ] = None,
    partition: Annotated[
        list[int] | None,
        typer.Option(
            "--partition",
            "-p",
            help="Read only this partition; repeat for more (default: all). Example: --partition 0",
            show_default=False,
        ),
    ] = None,
    count: Annotated[
        int | None,
        typer.Option(
            "--count",
            "-n",
            min=1,
            help="Stop after this many records. Example: --count 10",
            show_default=False,
        ),
    ] = None,
    group: Annotated[
        str | None,
        typer.Option(
            "--group",
            "-g",
            help="Read as a member of this consumer group: from its committed offsets, "
            "committing what was printed as it goes and on exit. Example: --group billing",
            show_default=False,
        ),
    ] = None,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow",
            "-F",
            help="Keep waiting for new records at the end of the log (Ctrl-C stops). "
            "Example: --from-beginning --follow",
        ),
    ] = False,
    fmt: Annotated[
        OutputFormatChoice | None,
        typer.Option(
            "--format",
            help="pretty (for people: time, partition, offset, key, headers, value), json (one "
            "object per line), value (one value per line) or raw (value bytes, nothing "
            "added). Default: pretty, or json with --json. Example: --format value",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Print the records of a topic.

    With --from-beginning, --offset or --from-time it reads to the end of the log as it was
    when it started, and exits (add --follow to keep waiting). With none of them it starts at
    the end and waits for new records, until Ctrl-C, SIGTERM or --count.

    With --group it reads the partitions the group assigns it, from the group's committed
    offsets (partitions with none start at the end, or the beginning with --from-beginning),
    and commits what it printed (every few seconds and on exit). Ctrl-C and SIGTERM stop it
    cleanly: it commits, leaves the group (its partitions go to the other members at once)
    and exits 0. With --from-beginning it exits once it has caught up (add --follow to keep
    waiting).

    Examples:

    * `tidelog consume events --from-beginning`
    * `tidelog consume events --from-time -15m --format json`
    * `tidelog consume events -p 0 --offset 100 --count 10`
    * `tidelog consume events --group billing --from-beginning`
    """
    settings = context.settings(ctx)
    if group is not None and (partition or offset is not None or from_time is not None):
        raise CliUsageError(
            "--group reads the partitions the group assigns from its committed offsets: "
            "it does not combine with --partition, --offset or --from-time (move the group "
            f"with `tidelog group reset-offsets {group} --topic {topic} ...`)"
        )
    if sum((from_beginning, offset is not None, from_time is not None)) > 1:
        raise CliUsageError("use only one of --from-beginning, --offset and --from-time")
    time_ms = None
    if from_time is not None:
        try:
            time_ms = parsing.parse_time_ms(from_time)
        except typer.BadParameter as exc:
            raise CliUsageError(f"--from-time: {exc}") from None
    start = StartAt(from_beginning, offset, time_ms)
    chosen = fmt.value if fmt is not None else ("json" if settings.json else "pretty")
    writer = RecordWriter(cast(OutputFormat, chosen))
    try:
        if group is not None:
            follow = follow or not from_beginning
            context.run(
                _consume_group(settings, topic, group, from_beginning, count, follow, writer)
            )
            return
        context.run(_consume(settings, topic, partition, start, count, follow or start.end, writer))
    except (Stopped, KeyboardInterrupt):  # how consume ends: exit 0
        raise typer.Exit(0) from None
