"""``tidelog queue consume|status`` and ``tidelog queue dlq list|show|redrive|purge``: thin over
:class:`~tidelog.client.QueueConsumer` and :class:`~tidelog.client.QueueAdmin`."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncGenerator
from typing import Annotated, Any, Final

import typer
from rich.table import Table

from tidelog.client import (
    ConsumerRecord,
    DeadLetter,
    QueueAdmin,
    QueueConsumer,
    QueueMessage,
    UnknownTopicOrPartitionError,
    describe_queue,
)

from . import context
from .errors import CliError, CliUsageError, command
from .lines import InputLines
from .render import format_timestamp, markup, pretty_record, print_json, record_json

app = typer.Typer(
    name="queue",
    help="Queues (share groups): consume with per-message ack, see a queue's state, and work "
    "its dead letters.\n\n"
    "Examples: `tidelog queue consume mailer emails --auto-ack`, `tidelog queue status "
    "mailer`, `tidelog queue dlq list emails.dlq`, `tidelog queue dlq redrive emails.dlq "
    "--rate 50`",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)
dlq = typer.Typer(
    name="dlq",
    help="Dead-letter topics (default `<topic>.dlq`): list, show, redrive, purge.\n\n"
    "Example: `tidelog queue dlq redrive emails.dlq --reason max_attempts`",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)
app.add_typer(dlq, name="dlq")

PROMPT: Final = "[a]ck, [n]ack (retry after the backoff), [r]eject (dead-letter), [q]uit?"
ANSWERS: Final = {"a": "ack", "n": "nack", "r": "reject", "q": "quit", "": "ack"}

GroupArgument = Annotated[
    str, typer.Argument(help="The share group (queue). Example: mailer", show_default=False)
]
DlqArgument = Annotated[
    str,
    typer.Argument(
        help="The dead-letter topic (a group's default: <topic>.dlq). Example: emails.dlq",
        show_default=False,
    ),
]
ReasonOption = Annotated[
    list[str] | None,
    typer.Option(
        "--reason",
        help="Only dead letters with this reason (rejected, max_attempts, lock_expired); "
        "repeat for more. Example: --reason max_attempts",
        show_default=False,
    ),
]


def _record(r: QueueMessage | DeadLetter) -> ConsumerRecord[bytes | None, bytes | None]:
    return ConsumerRecord(r.topic, r.partition, r.offset, r.timestamp, r.key, r.value, r.headers)


def _offset(text: str) -> tuple[int, int]:
    """``OFFSET`` (partition 0) or ``PARTITION:OFFSET``."""
    part, _, off = text.rpartition(":")
    try:
        partition, offset = int(part or 0), int(off)
    except ValueError:
        raise CliUsageError(f"an offset is OFFSET or PARTITION:OFFSET, not {text!r}") from None
    if partition < 0 or offset < 0:
        raise CliUsageError(f"offsets and partitions are not negative: {text!r}")
    return partition, offset


def _letter_json(letter: DeadLetter) -> dict[str, Any]:
    out = record_json(_record(letter))
    out["dead_letter"] = letter.context
    out["redrive_count"] = letter.redrive_count
    return out


# --- consume --------------------------------------------------------------------------------


async def _answers() -> AsyncGenerator[str]:
    async for lines, _ in InputLines(sys.stdin.buffer).chunks():
        for line in lines:
            yield line.decode(errors="replace").strip().lower()


async def _ask(answers: AsyncGenerator[str]) -> str:
    """The next answer (asked again until it is one; the end of the input quits)."""
    while True:
        context.stderr.print(PROMPT, markup=False)
        line = await anext(answers, "q")
        answer = ANSWERS.get(line[:1])
        if answer is not None and line in (line[:1], answer):
            return answer
        context.stderr.print(f"answer a, n, r or q, not {line!r}")


@app.command("consume")
@command
def consume(
    ctx: typer.Context,
    group: GroupArgument,
    topics: Annotated[
        list[str], typer.Argument(help="The topics to read. Example: emails", show_default=False)
    ],
    auto_ack: Annotated[
        bool,
        typer.Option(
            "--auto-ack",
            help="Print and ack every message, without asking. Example: --auto-ack -n 100",
        ),
    ] = False,
    count: Annotated[
        int | None,
        typer.Option("--count", "-n", min=1, help="Stop after this many messages. Example: -n 10"),
    ] = None,
) -> None:
    """Take messages from a queue and settle each: print it, then ack, nack or reject it as you
    answer (one line per message on standard input: a, n, r or q; Enter acks), or ack every one
    with --auto-ack. Messages taken and not settled are released when the command ends.

    Example: `tidelog queue consume mailer emails --auto-ack -n 100`
    """
    settings = context.settings(ctx)

    async def main() -> int:
        done = 0
        answers = None if auto_ack else _answers()
        async with contextlib.AsyncExitStack() as stack:
            if answers is not None:
                stack.push_async_callback(answers.aclose)
            queue = await stack.enter_async_context(
                QueueConsumer(settings.broker, group, topics, max_records=1)
            )
            async for message in queue:
                if settings.json:
                    out = record_json(_record(message))
                    out["delivery_count"] = message.delivery_count
                    print_json(out)
                else:
                    context.stdout.print(pretty_record(_record(message)), soft_wrap=True)
                    context.stdout.print(f"  delivery {message.delivery_count}", style="dim")
                answer = "ack" if answers is None else await _ask(answers)
                if answer == "quit":
                    break  # released by the close
                if answer == "nack":
                    await message.nack(error="nacked from tidelog queue consume")
                elif answer == "reject":
                    await message.reject("rejected from tidelog queue consume")
                else:
                    await message.ack()
                done += 1
                if count is not None and done >= count:
                    break
        return done

    settled = context.run(main())
    if not settings.json:
        context.stderr.print(f"{settled} message(s) settled")


# --- status ---------------------------------------------------------------------------------


@app.command("status")
@command
def status(ctx: typer.Context, group: GroupArgument) -> None:
    """A queue's state per partition: start offset, in flight (locked), available, delayed,
    redelivered and the most deliveries of a record, acked and dead-lettered; its members,
    handling times, dead-letter topic sizes and settings.

    Example: `tidelog queue status mailer` (add --json before `queue` for scripts)
    """
    settings = context.settings(ctx)

    async def main() -> dict[str, Any]:
        described = await describe_queue(settings.broker, group)
        configs = dict(described.configs)
        admin = QueueAdmin(settings.broker, request_timeout=settings.timeout)
        dlqs: dict[str, int] = {}
        for topic in sorted({p.topic for p in described.partitions}):
            name = configs.get("dead_letter_topic") or f"{topic}.dlq"
            try:
                dlqs[name] = sum(p.size for p in await admin.partitions(name))
            except UnknownTopicOrPartitionError:  # no dead letter yet
                dlqs[name] = 0
        handled = described.handled
        return {
            "group": group,
            "members": list(described.members),
            "partitions": [
                {
                    "topic": p.topic,
                    "partition": p.partition,
                    "start_offset": p.start_offset,
                    "end_offset": p.end_offset,
                    "log_end_offset": p.log_end_offset,
                    "in_flight": p.in_flight,
                    "available": p.available,
                    "delayed": p.delayed,
                    "dead_lettering": p.dead_lettering,
                    "redelivered": p.redelivered,
                    "max_delivery_count": p.max_delivery_count,
                    "acked": p.acked,
                    "dead_lettered": p.dead_lettered,
                    "oldest_acquired_ms": p.oldest_acquired_ms,
                }
                for p in described.partitions
            ],
            "dead_letter_topics": dlqs,
            "handled": handled,
            "handling_ms_avg": described.handling_ms_total / handled if handled else None,
            "handling_ms_max": described.handling_ms_max if handled else None,
            "settings": configs,
        }

    data = context.run(main())
    if settings.json:
        print_json(data)
        return
    out = context.stdout
    out.print(f"queue {markup(group)}: {len(data['members'])} member(s)")
    table = Table(
        "topic", "part", "start", "in flight", "available", "delayed", "redelivered",
        "max deliveries", "acked", "dead-lettered", "oldest",
    )  # fmt: skip
    for p in data["partitions"]:
        oldest = p["oldest_acquired_ms"]
        table.add_row(
            markup(p["topic"]),
            str(p["partition"]),
            f"{p['start_offset']:,}",
            f"{p['in_flight']:,}",
            f"{p['available']:,}",
            f"{p['delayed']:,}",
            f"{p['redelivered']:,}",
            str(p["max_delivery_count"]),
            f"{p['acked']:,}",
            f"{p['dead_lettered'] + p['dead_lettering']:,}",
            format_timestamp(oldest) if oldest >= 0 else "-",
        )
    out.print(table if data["partitions"] else "no partition read yet")
    for name, size in data["dead_letter_topics"].items():
        out.print(f"dead letters in {markup(name)}: {size:,}")
    if data["handled"]:
        out.print(
            f"handled {data['handled']:,} since the broker started: "
            f"{data['handling_ms_avg']:.0f} ms average, {data['handling_ms_max']} ms max"
        )
    out.print("settings: " + ", ".join(f"{k}={v}" for k, v in data["settings"].items()))


# --- dlq ------------------------------------------------------------------------------------


@dlq.command("list")
@command
def dlq_list(
    ctx: typer.Context,
    topic: DlqArgument,
    reason: ReasonOption = None,
    start: Annotated[
        int | None,
        typer.Option("--from", min=0, help="From this offset. Example: --from 100"),
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", min=1, help="At most this many. Example: --limit 20")
    ] = 100,
) -> None:
    """List dead letters (not purged), oldest first: offset, source, reason, deliveries,
    error, and each partition's counts.

    Example: `tidelog queue dlq list emails.dlq --reason max_attempts`
    """
    settings = context.settings(ctx)

    async def main() -> tuple[list[DeadLetter], int]:
        admin = QueueAdmin(settings.broker, request_timeout=settings.timeout)
        letters = await admin.list(topic, limit=limit, reasons=reason, start=start)
        return letters, sum(p.size for p in await admin.partitions(topic))

    letters, total = context.run(main())
    if settings.json:
        print_json({"topic": topic, "total": total, "records": [_letter_json(x) for x in letters]})
        return
    if not letters:
        context.stdout.print(f"no dead letters in {markup(topic)}")
        return
    table = Table("part", "offset", "source", "reason", "deliveries", "redrives", "error")
    for x in letters:
        c = x.context
        source = f"{c.get('source_topic', '?')}[{c.get('source_partition', '?')}]"
        table.add_row(
            str(x.partition),
            str(x.offset),
            markup(f"{source}@{c.get('source_offset', '?')}"),
            markup(x.reason or "-"),
            c.get("delivery_count", "-"),
            str(x.redrive_count),
            markup(c.get("error", "")[:60]),
        )
    context.stdout.print(table)
    context.stdout.print(f"{len(letters)} shown of {total:,} dead letter(s)")


@dlq.command("show")
@command
def dlq_show(
    ctx: typer.Context,
    topic: DlqArgument,
    offset: Annotated[
        str,
        typer.Argument(
            help="The dead letter's OFFSET or PARTITION:OFFSET. Example: 42", show_default=False
        ),
    ],
) -> None:
    """Show one dead letter: its record (key, value, own headers) and its dead-letter context.

    Example: `tidelog queue dlq show emails.dlq 42`
    """
    settings = context.settings(ctx)
    partition, at = _offset(offset)
    admin = QueueAdmin(settings.broker, request_timeout=settings.timeout)
    letter = context.run(admin.show(topic, at, partition))
    if letter is None:
        raise CliError(f"no dead letter at {topic}[{partition}]@{at} (purged, or never there)")
    if settings.json:
        print_json(_letter_json(letter))
        return
    context.stdout.print(pretty_record(_record(letter)), soft_wrap=True)
    for k, v in letter.context.items():
        context.stdout.print(f"  {k}: {markup(v)}")
    context.stdout.print(f"  redrive_count: {letter.redrive_count}")


@dlq.command("redrive")
@command
def dlq_redrive(
    ctx: typer.Context,
    topic: DlqArgument,
    offsets: Annotated[
        list[str] | None,
        typer.Argument(
            help="Only these dead letters (OFFSET or PARTITION:OFFSET); all if none. "
            "Example: 3 7 1:12",
            show_default=False,
        ),
    ] = None,
    rate: Annotated[
        float,
        typer.Option(
            "--rate", min=0.001, help="At most this many records a second. Example: --rate 50"
        ),
    ] = 100.0,
    to: Annotated[
        str | None,
        typer.Option(
            "--to",
            help="Send them to this topic instead of each one's source. Example: --to retries",
            show_default=False,
        ),
    ] = None,
    reason: ReasonOption = None,
    start: Annotated[
        int | None,
        typer.Option("--from", min=0, help="Only from this offset. Example: --from 100"),
    ] = None,
) -> None:
    """Send dead letters back to their source topic and partition (or --to a topic), at a
    bounded rate, their headers kept and a `tidelog.redrive_count` header added. Redriving
    everything (no filter) resumes where an interrupted run stopped; a filtered run prints
    where it got to (`--from` that to resume).

    Example: `tidelog queue dlq redrive emails.dlq --rate 50 --reason max_attempts`
    """
    settings = context.settings(ctx)
    picked = [_offset(o) for o in offsets] if offsets else None
    admin = QueueAdmin(settings.broker, request_timeout=settings.timeout)
    result = context.run(
        admin.redrive(topic, rate=rate, to=to, reasons=reason, offsets=picked, start=start)
    )
    if picked is not None:
        found = result.redriven + result.skipped
        if found < len(picked):
            context.stderr.print(f"{len(picked) - found} offset(s) not found (purged?)")
    if settings.json:
        print_json(
            {"redriven": result.redriven, "skipped": result.skipped, "next": result.next_offsets}
        )
        return
    context.stdout.print(
        f"redriven {result.redriven:,}, left {result.skipped:,}; next offsets: "
        + ", ".join(f"{p}:{o}" for p, o in sorted(result.next_offsets.items()))
    )


@dlq.command("purge")
@command
def dlq_purge(
    ctx: typer.Context,
    topic: DlqArgument,
    before: Annotated[
        int | None,
        typer.Option("--before", min=0, help="Only below this offset. Example: --before 1000"),
    ] = None,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Do not ask for confirmation. Example: --yes")
    ] = False,
) -> None:
    """Purge dead letters: every one there is now, or those below --before. They are gone
    from list, show and redrive at once (the disk space goes with the topic's retention).

    Example: `tidelog queue dlq purge emails.dlq --yes`
    """
    settings = context.settings(ctx)
    if not yes:
        what = "every dead letter" if before is None else f"the dead letters below {before}"
        typer.confirm(f"purge {what} of {topic}?", abort=True, err=True)
    admin = QueueAdmin(settings.broker, request_timeout=settings.timeout)
    marks = context.run(admin.purge(topic, before=before))
    if settings.json:
        print_json({"topic": topic, "purged_to": marks})
        return
    context.stdout.print(
        f"purged {markup(topic)} up to " + ", ".join(f"{p}:{o}" for p, o in sorted(marks.items()))
    )
