"""What the etcd v3 API reads and writes, as typed values, and their JSON-gateway encoding.

etcd's gRPC gateway speaks the proto3 JSON mapping: keys and values are base64, int64 fields
(revisions, lease ids, TTLs) are *strings*, and fields at their default value are left out (a
failed transaction has no ``succeeded``, a PUT watch event no ``type``, an absent key no
``kvs``). Everything here turns that into plain Python values once, so no caller sees it.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final, TypeAlias

JSON: TypeAlias = dict[str, Any]

NO_LEASE: Final = 0


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str | None) -> bytes:
    return base64.b64decode(text) if text else b""


def prefix_end(prefix: bytes) -> bytes:
    """The ``range_end`` that makes a range cover every key starting with ``prefix``: the
    prefix with its last byte below 0xff incremented (etcd's ``clientv3.GetPrefixRangeEnd``)."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\0"  # every key


def range_body(key: bytes, prefix: bool) -> JSON:
    """The ``key`` (and ``range_end``) fields that name ``key``, or every key under it."""
    body: JSON = {"key": b64(key)}
    if prefix:
        body["range_end"] = b64(prefix_end(key))
    return body


@dataclass(frozen=True, slots=True)
class KeyValue:
    """One key as etcd stores it. ``create_revision`` identifies this incarnation of the key
    (it changes when the key is deleted and put again): compare it to fence an old owner."""

    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int

    @classmethod
    def from_json(cls, raw: JSON) -> KeyValue:
        return cls(
            key=unb64(raw.get("key")),
            value=unb64(raw.get("value")),
            create_revision=int(raw.get("create_revision", 0)),
            mod_revision=int(raw.get("mod_revision", 0)),
            version=int(raw.get("version", 0)),
            lease=int(raw.get("lease", 0)),
        )


class Target(StrEnum):
    """What a :class:`Compare` looks at."""

    VERSION = "VERSION"
    CREATE = "CREATE"
    MOD = "MOD"
    VALUE = "VALUE"
    LEASE = "LEASE"


class Result(StrEnum):
    EQUAL = "EQUAL"
    GREATER = "GREATER"
    LESS = "LESS"
    NOT_EQUAL = "NOT_EQUAL"


_TARGET_FIELD: Final = {
    Target.VERSION: "version",
    Target.CREATE: "create_revision",
    Target.MOD: "mod_revision",
    Target.VALUE: "value",
    Target.LEASE: "lease",
}


@dataclass(frozen=True, slots=True)
class Compare:
    """One condition of a transaction: ``key``'s ``target`` compared with ``value``.

    A key that does not exist has version, create and mod revision 0, so
    ``Compare(key, Target.CREATE, Result.EQUAL, 0)`` means "absent"."""

    key: bytes
    target: Target
    result: Result
    value: int | bytes

    def to_json(self) -> JSON:
        field = _TARGET_FIELD[self.target]
        value = b64(self.value) if isinstance(self.value, bytes) else str(self.value)
        return {"key": b64(self.key), "target": self.target.value, "result": self.result.value,
                field: value}  # fmt: skip

    @classmethod
    def absent(cls, key: bytes) -> Compare:
        return cls(key, Target.CREATE, Result.EQUAL, 0)

    @classmethod
    def created_at(cls, key: bytes, revision: int) -> Compare:
        """``key`` is still the incarnation created at ``revision`` (fencing)."""
        return cls(key, Target.CREATE, Result.EQUAL, revision)

    @classmethod
    def modified_at(cls, key: bytes, revision: int) -> Compare:
        """``key`` has not changed since ``revision`` was read (compare-and-set)."""
        return cls(key, Target.MOD, Result.EQUAL, revision)


@dataclass(frozen=True, slots=True)
class Put:
    key: bytes
    value: bytes
    lease: int = NO_LEASE

    def to_json(self) -> JSON:
        body: JSON = {"key": b64(self.key), "value": b64(self.value)}
        if self.lease:
            body["lease"] = str(self.lease)
        return {"request_put": body}


@dataclass(frozen=True, slots=True)
class Delete:
    """Delete ``key``, or every key under it when ``prefix``."""

    key: bytes
    prefix: bool = False

    def to_json(self) -> JSON:
        return {"request_delete_range": range_body(self.key, self.prefix)}


@dataclass(frozen=True, slots=True)
class Get:
    """Read ``key``, or every key under it when ``prefix``, inside a transaction."""

    key: bytes
    prefix: bool = False

    def to_json(self) -> JSON:
        return {"request_range": range_body(self.key, self.prefix)}


Op: TypeAlias = Put | Delete | Get


@dataclass(frozen=True, slots=True)
class TxnResult:
    """Whether the comparisons held, the store's revision after the transaction, and what
    each :class:`Get` of the branch that ran read (in order; empty lists for other ops)."""

    succeeded: bool
    revision: int
    reads: tuple[tuple[KeyValue, ...], ...]


class EventType(StrEnum):
    PUT = "PUT"
    DELETE = "DELETE"


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One change seen by a watch. For a DELETE, ``kv`` has the key and the deletion's
    ``mod_revision``; its value is empty."""

    type: EventType
    kv: KeyValue

    @classmethod
    def from_json(cls, raw: JSON) -> WatchEvent:
        return cls(EventType(raw.get("type", "PUT")), KeyValue.from_json(raw.get("kv", {})))


@dataclass(frozen=True, slots=True)
class Lease:
    id: int
    ttl: int
