"""Turning option strings into values: ``key=value`` pairs, headers, points in time."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Final

import typer

_DURATION: Final = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNIT_MS: Final = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_UNIT_MS["w"] = 7 * _UNIT_MS["d"]


def key_value(text: str, option: str) -> tuple[str, str]:
    """``"k=v"`` as ``("k", "v")``; anything else is a usage error (exit 2)."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise typer.BadParameter(f"{text!r} is not key=value (e.g. {option} retention_ms=60000)")
    return key, value


def key_values(items: Sequence[str] | None, option: str) -> dict[str, str]:
    """Repeated ``key=value`` options as a dict (a later key wins)."""
    return dict(key_value(item, option) for item in items or ())


def config_option(items: list[str] | None) -> list[str]:
    """Option callback: check every ``--config key=value`` at parse time."""
    for item in items or ():
        key_value(item, "--config")
    return items or []


def header_option(items: list[str] | None) -> list[str]:
    """Option callback: check every ``--header key=value`` at parse time."""
    for item in items or ():
        key, _, _ = item.partition("=")
        if "=" not in item or not key:
            raise typer.BadParameter(f"{item!r} is not key=value (e.g. --header source=web)")
    return items or []


def headers(items: Sequence[str] | None) -> list[tuple[str, bytes | None]]:
    """Repeated ``--header k=v`` as record headers, in order (keys may repeat)."""
    out: list[tuple[str, bytes | None]] = []
    for item in items or ():
        key, _, value = item.partition("=")
        out.append((key, value.encode()))
    return out


def parse_duration_ms(text: str) -> int | None:
    """``"15m"``, ``"1h30m"``, ``"500ms"`` in milliseconds, or ``None`` if it is not one."""
    pos, total = 0, 0.0
    for match in _DURATION.finditer(text):
        if match.start() != pos:
            return None
        total += float(match.group(1)) * _UNIT_MS[match.group(2)]
        pos = match.end()
    if pos != len(text) or pos == 0:
        return None
    return int(total)


def parse_time_ms(text: str, *, now_ms: int | None = None) -> int:
    """A point in time as milliseconds since the epoch: relative to now (``-15m``, ``-2h``,
    ``-1d12h``), an ISO 8601 date or time (``2024-05-01``, ``2024-05-01T12:00:00+02:00``; local
    time when it has no offset), or epoch milliseconds. Raises ``typer.BadParameter``."""
    now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    raw = text.strip()
    if raw.startswith("-"):
        delta = parse_duration_ms(raw[1:])
        if delta is not None:
            return now - delta
    elif raw.isdigit() and len(raw) >= 10:
        return int(raw)
    else:
        try:
            moment = datetime.fromisoformat(raw)
        except ValueError:
            pass
        else:
            return int(moment.timestamp() * 1000)
    raise typer.BadParameter(
        f"{text!r} is not a time: use -15m, -2h, -1d (ago), an ISO date like "
        "2024-05-01T12:00:00, or epoch milliseconds"
    )
