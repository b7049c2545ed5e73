"""Checking records against a subject, what the broker does on produce for topics that opt in
(topic config ``schema_validation``):

- ``id``: every value starts with Confluent's framing (magic byte 0, 4-byte schema id) and the
  id is one of the subject's live versions. The payload itself is not read.
- ``full``: as ``id``, and the payload decodes under that schema (Avro: one datum, no byte
  left over; JSON: parses and validates). A value without the framing is accepted only if it is
  JSON valid under the subject's latest JSON Schema (plain JSON topics).

The subject is ``<topic>-value`` (Confluent's TopicNameStrategy). A null value (a tombstone) is
always accepted.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from .compat import ParsedSchema, parse_schema
from .framing import HEADER_SIZE, schema_id_of
from .json_schema import JsonSchema
from .state import RegistryState
from .types import InvalidSchemaError, SchemaType, ValidationMode

VALUE_SUFFIX: Final = "-value"
KEY_SUFFIX: Final = "-key"


def value_subject(topic: str) -> str:
    return topic + VALUE_SUFFIX


class RecordChecker:
    """Checks values against a :class:`RegistryState`, parsing each schema once."""

    def __init__(self, state: RegistryState) -> None:
        self.state = state
        self._parsed: dict[int, ParsedSchema | None] = {}
        self._seen = -1

    def _schema(self, schema_id: int) -> ParsedSchema | None:
        if self._seen != self.state.changes:  # deletes may have dropped ids
            self._parsed.clear()
            self._seen = self.state.changes
        if schema_id not in self._parsed:
            found = self.state.schemas.get(schema_id)
            try:
                parsed = None if found is None else parse_schema(*found)
            except InvalidSchemaError:
                parsed = None
            self._parsed[schema_id] = parsed
        return self._parsed[schema_id]

    def first_invalid(
        self, subject: str, mode: ValidationMode, values: Iterable[bytes | None]
    ) -> tuple[int, str] | None:
        """``(index, reason)`` of the first value that breaks ``mode``, or ``None``."""
        live = {v.id: v for v in self.state.versions(subject)}
        if not live:
            return 0, f"no schema is registered under subject {subject!r}"
        latest_json: JsonSchema | None = None
        latest = self.state.latest(subject)
        if mode is ValidationMode.FULL and latest and latest.schema_type is SchemaType.JSON:
            parsed = self._schema(latest.id)
            latest_json = parsed if isinstance(parsed, JsonSchema) else None
        for index, value in enumerate(values):
            if value is None:
                continue
            schema_id = schema_id_of(value)
            if schema_id is None:
                if latest_json is not None:
                    reason = latest_json.validate(value)
                    if reason is not None:
                        return index, f"plain JSON value invalid under the latest schema: {reason}"
                    continue
                return index, "no schema id: the value lacks the magic byte 0 and 4-byte id"
            if schema_id not in live:
                return index, f"schema id {schema_id} is not a live version of {subject!r}"
            if mode is ValidationMode.FULL:
                schema = self._schema(schema_id)
                reason = (
                    "schema unreadable"
                    if schema is None
                    else schema.validate(memoryview(value)[HEADER_SIZE:])
                )
                if reason is not None:
                    return index, f"does not fit schema id {schema_id}: {reason}"
        return None
