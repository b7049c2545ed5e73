"""One entry point over both schema languages: parse by type, and check a new schema against a
subject's live versions at a compatibility level."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeAlias

from . import avro, json_schema
from .types import Compatibility, InvalidSchemaError, SchemaType

ParsedSchema: TypeAlias = avro.AvroSchema | json_schema.JsonSchema


def parse_schema(schema_type: SchemaType | str, text: str) -> ParsedSchema:
    """Parse ``text`` as a schema of ``schema_type``; raises :class:`InvalidSchemaError`."""
    try:
        kind = SchemaType(schema_type)
    except ValueError:
        raise InvalidSchemaError(f"Invalid schema type {schema_type!r}") from None
    if kind is SchemaType.AVRO:
        return avro.parse(text)
    return json_schema.parse(text)


def reads(reader: ParsedSchema, writer: ParsedSchema) -> list[str]:
    """Why ``reader`` cannot read everything ``writer`` allows (empty: it can). Schemas of
    different languages never read each other."""
    if isinstance(reader, avro.AvroSchema) and isinstance(writer, avro.AvroSchema):
        return avro.can_read(reader, writer)
    if isinstance(reader, json_schema.JsonSchema) and isinstance(writer, json_schema.JsonSchema):
        return json_schema.accepts_all(reader, writer)
    return ["the schema type differs from the existing version's"]


def check(level: Compatibility, new: ParsedSchema, existing: Sequence[ParsedSchema]) -> list[str]:
    """Why ``new`` breaks ``level`` against ``existing`` (live versions, oldest first); empty
    when it is compatible. Non-transitive levels look at the latest version only."""
    if level is Compatibility.NONE or not existing:
        return []
    against = existing if level.transitive else existing[-1:]
    problems: list[str] = []
    for index, old in enumerate(reversed(against)):
        label = "the latest version" if index == 0 else f"version -{index}"
        if level.backward:
            problems += [f"{label}: BACKWARD: {p}" for p in reads(new, old)]
        if level.forward:
            problems += [f"{label}: FORWARD: {p}" for p in reads(old, new)]
    return problems
