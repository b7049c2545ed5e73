"""``tidelog produce``: records from arguments, a file, standard input, or typed at a prompt.

Ctrl-C or SIGTERM stops reading: the lines already read are sent, then the summary is shown
and it exits 130 or 143 (see :mod:`.stopping`); at the prompt they end it like Ctrl-D."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections import deque
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import IO, Annotated, Any, Final

import msgspec
import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from tidelog.client import Producer, RecordFuture

from . import context, parsing
from .errors import CliError, CliUsageError, command, print_error
from .lines import InputLines
from .render import human_bytes, markup, print_json
from .stopping import Stopped, sigterm_as_ctrl_c

MAX_PENDING: Final = 200_000
"""Unacknowledged records before the command waits for the oldest (bounds its memory)."""


class Acks(StrEnum):
    none = "none"
    leader = "leader"
    all = "all"


class Codec(StrEnum):
    none = "none"
    lz4 = "lz4"
    zstd = "zstd"


class InputFormat(StrEnum):
    raw = "raw"
    json = "json"


class BadLine(CliError):
    """A line of input cannot become a record."""


@dataclass(frozen=True, slots=True)
class LineParser:
    """Turns a line of input into a record's key and value."""

    fmt: InputFormat = InputFormat.raw
    key: bytes | None = None
    separator: bytes | None = None

    def parse(self, line: bytes, lineno: int) -> tuple[bytes | None, bytes]:
        key, value = self.key, line
        if self.separator is not None:
            k, sep, value = line.partition(self.separator)
            if not sep:
                raise BadLine(
                    f"line {lineno} has no key separator {self.separator.decode()!r}: "
                    "write key<separator>value, or drop --key-separator"
                )
            key = k
        if self.fmt is InputFormat.json:
            try:
                msgspec.json.decode(value)
            except msgspec.DecodeError as exc:
                raise BadLine(
                    f"line {lineno} is not valid JSON ({exc}): fix it, or use --format raw"
                ) from None
        return key, value


@dataclass(slots=True)
class Delivery:
    """The records sent so far and their acknowledgements, collected after the fact: sending
    never waits for a record's answer (only for room in the producer's buffer)."""

    pending: deque[RecordFuture] = field(default_factory=deque)
    records: int = 0
    bytes: int = 0
    offsets: dict[int, list[int]] = field(default_factory=dict)  # p -> [first, last, count]

    def add(self, future: RecordFuture, size: int) -> None:
        self.pending.append(future)
        self.records += 1
        self.bytes += size

    async def wait(self, limit: int = 0) -> None:
        """Wait until at most ``limit`` records are unacknowledged."""
        while len(self.pending) > limit:
            metadata = await self.pending.popleft()
            if metadata.offset < 0:
                continue  # acks=none: the broker does not say where records went
            span = self.offsets.get(metadata.partition)
            if span is None:
                self.offsets[metadata.partition] = [metadata.offset, metadata.offset, 1]
            else:
                span[1] = metadata.offset
                span[2] += 1

    def summary(self, topic: str, seconds: float) -> dict[str, Any]:
        return {
            "topic": topic,
            "records": self.records,
            "bytes": self.bytes,
            "seconds": round(seconds, 3),
            "partitions": {
                str(p): {"first_offset": first, "last_offset": last, "records": count}
                for p, (first, last, count) in sorted(self.offsets.items())
            },
        }


async def _given(values: Sequence[str]) -> AsyncGenerator[tuple[list[bytes], int]]:
    """The values of the command line, as one chunk of lines."""
    yield [v.encode() for v in values], 0


@dataclass(frozen=True, slots=True)
class Target:
    """Where records go and how they are sent."""

    topic: str
    partition: int | None
    headers: list[tuple[str, bytes | None]]
    acks: Acks
    compression: Codec

    def producer(self, settings: context.Settings) -> Producer:
        return Producer(
            settings.broker,
            acks=self.acks.value,
            compression=self.compression.value,
            batch_size=256 * 1024,
            linger=0.02,
            buffer_memory=64 * 1024 * 1024,
            client_id="tidelog-cli",
            **settings.client_options(),
        )

    async def check(self, producer: Producer) -> None:
        """Fail early (before reading any input) on a missing topic or partition."""
        partitions = await producer.partitions_for(self.topic)
        if self.partition is not None and self.partition not in partitions:
            raise CliError(
                f"topic {self.topic!r} has no partition {self.partition} (it has "
                f"{len(partitions)}: 0 to {len(partitions) - 1})"
            )


async def _produce_bulk(
    settings: context.Settings,
    target: Target,
    parser: LineParser,
    values: Sequence[str] | None,
    lines_in: InputLines | None,
    total_bytes: int | None,
) -> dict[str, Any]:
    show_progress = lines_in is not None and context.stderr.is_terminal and not settings.json
    progress = Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[records]:,} records"),
        TextColumn("{task.fields[rate]:,.0f} records/s"),
        DownloadColumn(),
        TimeElapsedColumn(),
        console=context.stderr,
        disable=not show_progress,
    )
    delivery = Delivery()
    started = time.monotonic()
    async with target.producer(settings) as producer:
        await target.check(producer)
        send, topic, partition = producer.send, target.topic, target.partition
        headers = target.headers or None
        lineno = 0
        with progress:
            task = progress.add_task(f"producing to {topic}", total=total_bytes, records=0, rate=0)

            source = _given(values or ()) if lines_in is None else lines_in.chunks()
            try:
                async with contextlib.aclosing(source):
                    async for lines, size in source:
                        for line in lines:
                            lineno += 1
                            key, value = parser.parse(line, lineno)
                            future = await send(
                                topic, value, key, partition=partition, headers=headers
                            )
                            delivery.add(future, len(value) + (len(key) if key else 0))
                        if len(delivery.pending) > MAX_PENDING:
                            await delivery.wait(MAX_PENDING // 2)
                        elapsed = max(time.monotonic() - started, 1e-6)
                        progress.update(
                            task,
                            advance=size,
                            records=delivery.records,
                            rate=delivery.records / elapsed,
                        )
            except BadLine as exc:
                await delivery.wait()
                sent = delivery.records
                raise BadLine(
                    f"{exc}; stopped there: {sent} record{'s' if sent != 1 else ''} before it "
                    "were sent"
                ) from None
            await delivery.wait()
    return delivery.summary(target.topic, time.monotonic() - started)


def _print_summary(summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(summary)
        return
    records, seconds = summary["records"], summary["seconds"]
    rate = records / seconds if seconds > 0 else 0.0
    spans = summary["partitions"]
    where = ""
    if 0 < len(spans) <= 4:
        where = ": " + ", ".join(
            f"partition {p} offset{'s' if s['first_offset'] != s['last_offset'] else ''} "
            + (
                f"{s['first_offset']}"
                if s["first_offset"] == s["last_offset"]
                else f"{s['first_offset']}-{s['last_offset']}"
            )
            for p, s in spans.items()
        )
    elif spans:
        where = f" over {len(spans)} partitions"
    context.stdout.print(
        f"sent {records:,} record{'s' if records != 1 else ''} "
        f"({human_bytes(summary['bytes'])}) to [bold]{markup(summary['topic'])}[/bold] "
        f"in {seconds:.2f}s ({rate:,.0f} records/s){markup(where)}",
        soft_wrap=True,
    )


def _interactive(settings: context.Settings, target: Target, parser: LineParser) -> None:
    """A prompt: each line typed is sent and answered with its partition and offset. Ctrl-D,
    Ctrl-C and SIGTERM (run it in :func:`.stopping.sigterm_as_ctrl_c`) end it, wherever they
    come: what was typed is still sent by ``close()``."""
    out = context.stdout
    with asyncio.Runner() as runner:
        producer = target.producer(settings)
        runner.run(producer.start())
        try:
            runner.run(target.check(producer))
            out.print(
                f"producing to [bold]{markup(target.topic)}[/bold]: type a record and press "
                "Enter to send it; Ctrl-D or Ctrl-C to finish",
                soft_wrap=True,
            )
            _prompt(runner, producer, target, parser)
        except (EOFError, KeyboardInterrupt):
            out.print()
        finally:
            runner.run(producer.close())


def _prompt(runner: asyncio.Runner, producer: Producer, target: Target, parser: LineParser) -> None:
    out = context.stdout
    lineno = 0
    while True:
        line = out.input(f"[bold cyan]{markup(target.topic)}>[/bold cyan] ")
        if not line:
            continue
        lineno += 1
        try:
            key, value = parser.parse(line.encode(), lineno)
        except BadLine as exc:
            print_error(str(exc))
            continue
        metadata = runner.run(
            producer.send_and_wait(
                target.topic, value, key, partition=target.partition, headers=target.headers or None
            )
        )
        out.print(f"[green]✓[/green] partition {metadata.partition}, offset {metadata.offset}")


@command
def produce(
    ctx: typer.Context,
    topic: Annotated[str, typer.Argument(help="Topic to send to. Example: events")],
    values: Annotated[
        list[str] | None,
        typer.Argument(
            help="Record values; without them (and without --file) records come from standard "
            "input, one per line. Example: tidelog produce events hello world",
            show_default=False,
        ),
    ] = None,
    file: Annotated[
        Path | None,
        typer.Option(
            "--file",
            "-f",
            help="Read records from this file, one per line ('-' for standard input). "
            "Example: --file events.jsonl",
            dir_okay=False,
            show_default=False,
        ),
    ] = None,
    key: Annotated[
        str | None,
        typer.Option(
            "--key", "-k", help="Key of every record. Example: --key user-42", show_default=False
        ),
    ] = None,
    key_separator: Annotated[
        str | None,
        typer.Option(
            "--key-separator",
            help="Split each line at the first SEP into key and value. "
            "Example: --key-separator ':' sends 'user-1:clicked' with key user-1",
            show_default=False,
        ),
    ] = None,
    header: Annotated[
        list[str] | None,
        typer.Option(
            "--header",
            "-H",
            callback=parsing.header_option,
            help="A header as key=value on every record; repeat for more. "
            "Example: --header source=web",
            show_default=False,
        ),
    ] = None,
    partition: Annotated[
        int | None,
        typer.Option(
            "--partition",
            "-p",
            help="Send every record to this partition (default: by key hash, or spread when "
            "there is no key). Example: --partition 0",
            show_default=False,
        ),
    ] = None,
    acks: Annotated[
        Acks,
        typer.Option(
            help="Wait for none (no answer), the leader, or all in-sync replicas (on one "
            "broker: an fsync). With all, the producer is idempotent: a retry never writes "
            "a record twice; none and leader turn that off. Example: --acks leader",
        ),
    ] = Acks.all,
    compression: Annotated[
        Codec, typer.Option(help="Compress batches. Example: --compression zstd")
    ] = Codec.none,
    fmt: Annotated[
        InputFormat,
        typer.Option(
            "--format",
            help="raw sends each line as it is; json checks that each line is valid JSON "
            "first. Example: --format json",
        ),
    ] = InputFormat.raw,
) -> None:
    """Send records: the VALUE arguments, the lines of --file, or standard input's lines.

    On a terminal with no values it prompts: each line you type is sent and answered with its
    partition and offset. Input from a file or a pipe shows a progress bar (on a terminal)
    and ends with a summary.

    Examples:

    * `tidelog produce events hello world`
    * `tidelog produce events --file events.jsonl --format json`
    * `printf 'u1:a\\nu2:b\\n' | tidelog produce events --key-separator :`
    """
    settings = context.settings(ctx)
    if values and file is not None:
        raise CliUsageError("give record values as arguments or with --file, not both")
    if key is not None and key_separator is not None:
        raise CliUsageError("--key and --key-separator cannot be used together")
    if key_separator == "":
        raise CliUsageError("--key-separator cannot be empty")
    parser = LineParser(
        fmt,
        None if key is None else key.encode(),
        None if key_separator is None else key_separator.encode(),
    )
    target = Target(topic, partition, parsing.headers(header), acks, compression)

    if values:
        _bulk(settings, target, parser, values, None, None)
    elif file is not None and str(file) != "-":
        try:
            stream = file.open("rb")
        except OSError as exc:
            raise CliError(f"cannot read {file}: {exc.strerror or exc}") from None
        with stream:
            size = file.stat().st_size if file.is_file() else None
            _bulk(settings, target, parser, None, stream, size)
    elif file is None and sys.stdin.isatty():
        with sigterm_as_ctrl_c():
            _interactive(settings, target, parser)
    else:
        _bulk(settings, target, parser, None, sys.stdin.buffer, None)


def _bulk(
    settings: context.Settings,
    target: Target,
    parser: LineParser,
    values: Sequence[str] | None,
    stream: IO[bytes] | None,
    total_bytes: int | None,
) -> None:
    """Send the values, or the lines of ``stream``, and show the summary. A stop signal ends
    the input: what was read is sent, the summary shown, and the exit status is 128 + the
    signal's number (values are few: the signal cancels their sending, queued ones still go)."""
    lines_in = None if stream is None else InputLines(stream)
    coro = _produce_bulk(settings, target, parser, values, lines_in, total_bytes)
    try:
        summary = context.run(coro, on_stop=None if lines_in is None else lines_in.stop)
    except Stopped as stopped:
        if stopped.result is not None:
            _print_summary(stopped.result, settings.json)
        raise typer.Exit(stopped.exit_code) from None
    _print_summary(summary, settings.json)
