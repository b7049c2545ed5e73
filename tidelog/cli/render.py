"""Rendering: records in the four output formats, sizes, times, JSON for scripts."""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Iterable
from datetime import datetime
from typing import IO, Any, Final, Literal, TypeAlias

from rich.console import Console, Group, RenderableType
from rich.json import JSON
from rich.markup import escape
from rich.text import Text

from tidelog.client import ConsumerRecord

from . import context

Record: TypeAlias = ConsumerRecord[bytes | None, bytes | None]
OutputFormat: TypeAlias = Literal["pretty", "json", "raw", "value"]
_PREVIEW_BYTES: Final = 64


def human_bytes(n: int) -> str:
    """``1536`` -> ``"1.5 KiB"``."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def format_timestamp(ms: int) -> str:
    """Local time with milliseconds, ``2024-05-01 12:00:00.123``; ``-`` for none."""
    if ms < 0:
        return "-"
    return datetime.fromtimestamp(ms / 1000).isoformat(sep=" ", timespec="milliseconds")


def print_json(data: Any, file: IO[str] | None = None) -> None:
    """One JSON document on one line, for scripts (never wrapped or coloured)."""
    out = file or sys.stdout
    out.write(json.dumps(data, ensure_ascii=False, separators=(",", ":")) + "\n")
    out.flush()


def encode_bytes(data: bytes | None) -> tuple[str | None, bool]:
    """``data`` as text: UTF-8 if it is, else base64 (the flag says which)."""
    if data is None:
        return None, False
    try:
        return data.decode(), False
    except UnicodeDecodeError:
        return base64.b64encode(data).decode("ascii"), True


def record_json(record: Record) -> dict[str, Any]:
    """A record as a JSON object. ``key`` and ``value`` are strings (or null); bytes that are
    not UTF-8 are base64 and flagged by ``key_encoding`` / ``value_encoding: "base64"``."""
    out: dict[str, Any] = {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "timestamp": record.timestamp,
    }
    for field, data in (("key", record.key), ("value", record.value)):
        text, b64 = encode_bytes(data)
        out[field] = text
        if b64:
            out[f"{field}_encoding"] = "base64"
    headers = []
    for name, data in record.headers:
        text, b64 = encode_bytes(data)
        header: dict[str, Any] = {"key": name, "value": text}
        if b64:
            header["encoding"] = "base64"
        headers.append(header)
    out["headers"] = headers
    return out


def preview(data: bytes | None, limit: int | None = None) -> str:
    """Bytes for people: UTF-8 text as it is, anything else as a Python bytes literal."""
    if data is None:
        return "null"
    try:
        text = data.decode()
    except UnicodeDecodeError:
        shown = data if limit is None else data[:limit]
        more = f"… ({len(data)} bytes)" if len(shown) < len(data) else ""
        return repr(shown) + more
    if limit is not None and len(text) > limit:
        return text[:limit] + "…"
    return text


def json_value(data: bytes | None) -> JSON | None:
    """A rich JSON renderable if ``data`` is a JSON object or array, else ``None``."""
    if not data or data.lstrip()[:1] not in (b"{", b"["):
        return None
    try:
        return JSON(data.decode())
    except (UnicodeDecodeError, ValueError):
        return None


def pretty_record(record: Record) -> RenderableType:
    """Timestamp, partition, offset, key and headers on one line, then the value (indented
    and highlighted when it is JSON)."""
    head = Text.assemble(
        (format_timestamp(record.timestamp), "dim"),
        "  ",
        (f"partition {record.partition}", "cyan"),
        "  ",
        (f"offset {record.offset}", "magenta"),
        "  key ",
        (preview(record.key, _PREVIEW_BYTES), "bold yellow" if record.key is not None else "dim"),
    )
    parts: list[RenderableType] = [head]
    if record.headers:
        shown = ", ".join(f"{k}={preview(v, _PREVIEW_BYTES)}" for k, v in record.headers)
        parts.append(Text(f"  headers: {shown}", style="green"))
    value = json_value(record.value)
    if value is not None:
        parts.append(value)
    else:
        parts.append(Text(preview(record.value)))
    return Group(*parts)


class RecordWriter:
    """Writes records to standard output in one of the formats:

    * ``pretty``: for people (timestamp, partition, offset, key, headers, value);
    * ``json``: one JSON object per line (:func:`record_json`);
    * ``value``: the value and a newline per record, bytes as they are;
    * ``raw``: the value's bytes exactly, nothing added (binary-safe).
    """

    def __init__(self, fmt: OutputFormat, console: Console | None = None) -> None:
        self.fmt = fmt
        self.console = console or context.stdout

    def write(self, records: Iterable[Record]) -> None:
        if self.fmt == "pretty":
            for record in records:
                self.console.print(pretty_record(record), soft_wrap=True)
            return
        if self.fmt == "json":
            lines = (json.dumps(record_json(r), ensure_ascii=False) + "\n" for r in records)
            write_all("".join(lines).encode())
        elif self.fmt == "value":
            write_all(b"".join((r.value or b"") + b"\n" for r in records))
        else:
            write_all(b"".join(r.value or b"" for r in records))


def write_all(data: bytes) -> None:
    """Write ``data`` to standard output, all of it, and flush.

    A signal that arrives while a large write waits on a full pipe makes CPython's buffered
    ``write()`` return early with a short count (3.11: the rest is not buffered): ignoring it
    would lose the records a stop signal interrupts, though they count as consumed."""
    sys.stdout.flush()
    out = sys.stdout.buffer
    view = memoryview(data)
    while view:
        view = view[out.write(view) :]
    out.flush()


def markup(text: str) -> str:
    """``text`` safe to embed in rich markup."""
    return escape(text)
