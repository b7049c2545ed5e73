"""The registry's state as a function of its log, the compacted topic :data:`SCHEMAS_TOPIC`.

Every reader (each gateway's registry, each broker validating produce) replays the same records
in the same order with :meth:`RegistryState.apply`, so all agree on the outcome. Writers may
race: a registration *proposes* a version and an id, and replay **accepts it only if both are
still free** when it is reached in log order (optimistic concurrency decided by the log, CAS by
offset); a writer reads its own record back and sees whether it won, and tries again if not.

Keys carry a random ``writer`` token, so two racing proposals never share a key and compaction
never replaces an accepted record with a refused one; an accepted record is only ever rewritten
by its owner's key (soft delete) or removed by a tombstone (permanent delete). The highest id
ever given out is kept in an ``ID_FLOOR`` record written before a permanent delete, so ids are
never reused even once compaction has dropped the deleted schema.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Final

from .types import Compatibility, SchemaType

SCHEMAS_TOPIC: Final = "_schemas"
"""Like Confluent's; one underscore: a client topic (``__`` names are the broker's own)."""
SCHEMA: Final = "SCHEMA"
CONFIG: Final = "CONFIG"
ID_FLOOR: Final = "ID_FLOOR"


@dataclass(frozen=True, slots=True)
class SchemaVersion:
    """One version of a subject, as registered."""

    subject: str
    version: int
    id: int
    schema_type: SchemaType
    schema: str
    deleted: bool = False
    key: bytes = field(default=b"", compare=False)

    def encode(self) -> bytes:
        return _dumps(
            {
                "subject": self.subject,
                "version": self.version,
                "id": self.id,
                "schemaType": self.schema_type.value,
                "schema": self.schema,
                "deleted": self.deleted,
            }
        )


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


def schema_key(subject: str, version: int) -> bytes:
    """A new registration's key: unique to this proposal (see the module doc)."""
    return _dumps(
        {
            "keytype": SCHEMA,
            "subject": subject,
            "version": version,
            "magic": 1,
            "writer": os.urandom(8).hex(),
        }
    )


def config_key(subject: str | None) -> bytes:
    return _dumps({"keytype": CONFIG, "subject": subject, "magic": 0})


def config_value(level: Compatibility) -> bytes:
    return _dumps({"compatibilityLevel": level.value})


def id_floor_record(next_id: int) -> tuple[bytes, bytes]:
    return _dumps({"keytype": ID_FLOOR, "magic": 0}), _dumps({"next_id": next_id})


class RegistryState:
    """Subjects, versions, ids and compatibility configs, replayed from the log."""

    def __init__(self) -> None:
        self.subjects: dict[str, dict[int, SchemaVersion]] = {}
        self.by_key: dict[bytes, SchemaVersion] = {}
        self.schemas: dict[int, tuple[SchemaType, str]] = {}
        """Schema id -> (type, text), for ids some version still uses."""
        self.ids: dict[tuple[SchemaType, str], int] = {}
        self._users: dict[int, int] = {}
        self.configs: dict[str | None, Compatibility] = {}
        """Compatibility per subject; ``None``: the global level (when set)."""
        self.next_id = 1
        self.changes = 0
        """Counts applied changes (a reader's cheap "anything new?")."""

    # --- reads ----------------------------------------------------------------------------

    def versions(self, subject: str, *, deleted: bool = False) -> list[SchemaVersion]:
        """The subject's versions, oldest first; soft-deleted ones only if ``deleted``."""
        found = self.subjects.get(subject, {})
        return [v for _, v in sorted(found.items()) if deleted or not v.deleted]

    def latest(self, subject: str) -> SchemaVersion | None:
        live = self.versions(subject)
        return live[-1] if live else None

    def find(self, subject: str, schema_type: SchemaType, text: str) -> SchemaVersion | None:
        """The subject's live version holding this exact schema, if any."""
        schema_id = self.ids.get((schema_type, text))
        if schema_id is None:
            return None
        return next((v for v in self.versions(subject) if v.id == schema_id), None)

    def uses(self, schema_id: int) -> Iterator[SchemaVersion]:
        for versions in self.subjects.values():
            for v in versions.values():
                if v.id == schema_id:
                    yield v

    def compatibility(self, subject: str | None) -> Compatibility:
        level = self.configs.get(subject) if subject is not None else None
        return level or self.configs.get(None) or Compatibility.BACKWARD

    def accepts(self, proposal: SchemaVersion) -> bool:
        """Whether replay would accept ``proposal`` as a new record now."""
        taken = self.subjects.get(proposal.subject, {})
        known = self.schemas.get(proposal.id)
        same = (proposal.schema_type, proposal.schema)
        return (
            proposal.version not in taken
            and proposal.version > 0
            and (known is None or known == same)
            and self.ids.get(same, proposal.id) == proposal.id
            and (known is not None or proposal.id >= self.next_id)
        )

    # --- replay ---------------------------------------------------------------------------

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        """Apply one record of the log; unreadable or refused records change nothing."""
        if key is None:
            return
        try:
            k = json.loads(key)
            keytype = k["keytype"]
            v = None if value is None else json.loads(value)
            if keytype == SCHEMA:
                self._apply_schema(key, v)
            elif keytype == CONFIG:
                self._apply_config(k.get("subject"), v)
            elif keytype == ID_FLOOR and v is not None:
                self.next_id = max(self.next_id, int(v["next_id"]))
        except (ValueError, KeyError, TypeError):
            return  # a record of a newer version, or damage: skipped by every reader alike

    def _apply_config(self, subject: str | None, v: Any) -> None:
        if v is None:
            self.configs.pop(subject, None)
        else:
            self.configs[subject] = Compatibility(v["compatibilityLevel"])
        self.changes += 1

    def _apply_schema(self, key: bytes, v: Any) -> None:
        old = self.by_key.get(key)
        if v is None:
            if old is not None:
                self._remove(old)
            return
        new = SchemaVersion(
            str(v["subject"]),
            int(v["version"]),
            int(v["id"]),
            SchemaType(v.get("schemaType", "AVRO")),
            str(v["schema"]),
            bool(v.get("deleted", False)),
            key,
        )
        if old is not None:
            if new == SchemaVersion(*_fields(old, deleted=new.deleted)):
                self._store(new)  # a soft delete (or undelete) by the owner's key
            return
        if not self.accepts(new):
            return
        self._store(new)
        self._users[new.id] = self._users.get(new.id, 0) + 1
        self.schemas[new.id] = (new.schema_type, new.schema)
        self.ids[(new.schema_type, new.schema)] = new.id
        self.next_id = max(self.next_id, new.id + 1)

    def _store(self, version: SchemaVersion) -> None:
        self.by_key[version.key] = version
        self.subjects.setdefault(version.subject, {})[version.version] = version
        self.changes += 1

    def _remove(self, version: SchemaVersion) -> None:
        del self.by_key[version.key]
        versions = self.subjects[version.subject]
        del versions[version.version]
        if not versions:
            del self.subjects[version.subject]
        users = self._users[version.id] - 1
        if users:
            self._users[version.id] = users
        else:
            del self._users[version.id]
            del self.schemas[version.id]
            del self.ids[(version.schema_type, version.schema)]
        self.changes += 1


def _fields(v: SchemaVersion, *, deleted: bool) -> tuple[Any, ...]:
    return (v.subject, v.version, v.id, v.schema_type, v.schema, deleted, v.key)
