"""Turning keys and values into bytes and back.

Records are bytes on the wire. A producer takes a *serializer* for keys and one for values, a
consumer a *deserializer* for each: a name (``"bytes"``, ``"str"``, ``"json"``, ``"msgpack"``)
or any callable. ``None`` (a missing key, a tombstone value) is never passed to them: it
travels as a null.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Final, Literal, TypeAlias

import msgspec

Serializer: TypeAlias = Callable[[Any], bytes]
Deserializer: TypeAlias = Callable[[bytes], Any]
SerializerName: TypeAlias = Literal["bytes", "str", "json", "msgpack"]


def serialize_bytes(value: Any) -> bytes:
    """Bytes-like values as they are; anything else is a TypeError that says what to do."""
    if type(value) is bytes:
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    raise TypeError(
        f"cannot send a {type(value).__name__} as bytes: encode it first, or give the producer "
        "a serializer ('str', 'json', 'msgpack' or a callable)"
    )


def serialize_str(value: Any) -> bytes:
    if not isinstance(value, str):
        raise TypeError(f"the 'str' serializer takes str, got {type(value).__name__}")
    return value.encode()


_json_encoder: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def serialize_json(value: Any) -> bytes:
    """Compact JSON, UTF-8."""
    return _json_encoder.encode(value).encode()


_msgpack_encoder: Final = msgspec.msgpack.Encoder()
_msgpack_decoder: Final = msgspec.msgpack.Decoder()


def serialize_msgpack(value: Any) -> bytes:
    return _msgpack_encoder.encode(value)


def deserialize_bytes(data: bytes) -> bytes:
    return data


def deserialize_str(data: bytes) -> str:
    return data.decode()


def deserialize_json(data: bytes) -> Any:
    return json.loads(data)


def deserialize_msgpack(data: bytes) -> Any:
    return _msgpack_decoder.decode(data)


SERIALIZERS: Final[dict[str, Serializer]] = {
    "bytes": serialize_bytes,
    "str": serialize_str,
    "json": serialize_json,
    "msgpack": serialize_msgpack,
}
DESERIALIZERS: Final[dict[str, Deserializer]] = {
    "bytes": deserialize_bytes,
    "str": deserialize_str,
    "json": deserialize_json,
    "msgpack": deserialize_msgpack,
}


def get_serializer(spec: SerializerName | Serializer | None) -> Serializer:
    """The serializer a name or callable stands for; ``None`` means ``"bytes"``."""
    return _lookup(spec, SERIALIZERS, "serializer")


def get_deserializer(spec: SerializerName | Deserializer | None) -> Deserializer:
    """The deserializer a name or callable stands for; ``None`` means ``"bytes"``."""
    return _lookup(spec, DESERIALIZERS, "deserializer")


def _lookup(
    spec: str | Callable[[Any], Any] | None, table: dict[str, Callable[[Any], Any]], what: str
) -> Callable[[Any], Any]:
    if spec is None:
        return table["bytes"]
    if isinstance(spec, str):
        try:
            return table[spec]
        except KeyError:
            names = ", ".join(repr(n) for n in table)
            raise ValueError(f"unknown {what} {spec!r}: use one of {names} or a callable") from None
    if callable(spec):
        return spec
    raise TypeError(f"a {what} is a name or a callable, not {type(spec).__name__}")
