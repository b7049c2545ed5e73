"""Record keys, values and header values between bytes and JSON: ``json``, ``text`` or
``base64``.

In: a JSON value is serialized compactly (UTF-8), text is encoded as UTF-8, base64 is decoded
strictly (bad base64 is the caller's error, never stored). Out: the bytes are parsed as JSON,
decoded as UTF-8, or base64-encoded; bytes that do not decode in the asked format raise
:class:`UndecodableError` naming the offset, so the caller can answer 406 and suggest base64.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from enum import StrEnum
from typing import Any

import msgspec


class Format(StrEnum):
    """How keys, values and header values are written in JSON."""

    JSON = "json"
    TEXT = "text"
    BASE64 = "base64"


class UndecodableError(ValueError):
    """A record's bytes are not valid in the format asked for."""

    def __init__(self, offset: int, fmt: Format, what: str) -> None:
        super().__init__(
            f"the {what} of the record at offset {offset} is not valid {fmt.value}: "
            "read it with format=base64"
        )
        self.offset = offset


_json_encode = msgspec.json.encode
_json_decode = msgspec.json.decode


def to_bytes(value: Any, fmt: Format) -> bytes | None:
    """The bytes to store for ``value`` (``None`` stays ``None``: a null key or value).

    Raises ``ValueError`` for a text or base64 value that is not a string, or bad base64."""
    if value is None:
        return None
    if fmt is Format.JSON:
        return _json_encode(value)
    if not isinstance(value, str):
        raise ValueError(f"a {fmt.value} value is a string, not {type(value).__name__}")
    if fmt is Format.TEXT:
        return value.encode()
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error:
        raise ValueError("not valid base64") from None


def from_bytes(data: bytes | None, fmt: Format, offset: int, what: str) -> Any:
    """``data`` rendered in ``fmt``; raises :class:`UndecodableError`."""
    if data is None:
        return None
    try:
        if fmt is Format.BASE64:
            return base64.b64encode(data).decode("ascii")
        if fmt is Format.TEXT:
            return bytes(data).decode()
        return _json_decode(data)
    except (UnicodeDecodeError, msgspec.DecodeError, json.JSONDecodeError):
        raise UndecodableError(offset, fmt, what) from None


class Rendered(msgspec.Struct, array_like=False, gc=False):
    """One record as the gateway answers it (REST and WebSocket alike)."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: Any
    value: Any
    headers: list[dict[str, Any]]


def render(
    topic: str,
    partition: int,
    rows: Sequence[tuple[int, int, bytes | None, bytes | None, Any]],
    fmt: Format,
) -> list[Rendered]:
    """Rows ``(offset, timestamp, key, value, headers)`` as :class:`Rendered`. Stops before the
    first row that does not decode (raising if it is the first), so what is returned is always
    a gap-free run from the first offset."""
    out: list[Rendered] = []
    for offset, timestamp, key, value, headers in rows:
        try:
            hs = [
                {"name": n, "value": from_bytes(v, _header_format(fmt), offset, f"header {n!r}")}
                for n, v in headers
            ]
            out.append(
                Rendered(
                    topic,
                    partition,
                    offset,
                    timestamp,
                    from_bytes(key, fmt, offset, "key"),
                    from_bytes(value, fmt, offset, "value"),
                    hs,
                )
            )
        except UndecodableError:
            if out:
                return out
            raise
    return out


def _header_format(fmt: Format) -> Format:
    """Header values are text unless base64 is asked for (they are rarely JSON)."""
    return Format.BASE64 if fmt is Format.BASE64 else Format.TEXT


def encode_frame(frame: Any) -> bytes:
    """A WebSocket frame or response body as compact JSON bytes."""
    return _json_encode(frame)
