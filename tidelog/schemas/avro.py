"""Avro schemas: parsing (fastavro), the reader/writer resolution rules of the Avro
specification (what compatibility means for Avro), and validating an encoded datum.

:func:`can_read` answers "can a reader with schema R decode data written with schema W?", per
the spec's "Schema Resolution": matching names (or reader aliases), numeric promotions, record
fields matched by name with reader defaults for missing ones, enum symbols, unions branch by
branch. Logical types are checked on their underlying type, as Confluent does by default.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from fastavro import schemaless_reader
from fastavro.schema import SchemaParseException, UnknownType, parse_schema

from .types import InvalidSchemaError

PROMOTIONS: Final[dict[str, frozenset[str]]] = {
    "int": frozenset({"int"}),
    "long": frozenset({"int", "long"}),
    "float": frozenset({"int", "long", "float"}),
    "double": frozenset({"int", "long", "float", "double"}),
    "string": frozenset({"string", "bytes"}),
    "bytes": frozenset({"bytes", "string"}),
}
"""Reader type -> writer types it reads (the spec's promotions)."""
NAMED: Final = frozenset({"record", "error", "enum", "fixed"})


@dataclass(frozen=True, slots=True)
class AvroSchema:
    """A parsed Avro schema: ``parsed`` as fastavro decodes with, ``named`` its named types by
    full name, ``canonical`` the text the registry stores and compares."""

    parsed: Any
    named: Mapping[str, Any] = field(repr=False)
    canonical: str

    def validate(self, payload: bytes | memoryview) -> str | None:
        """Why ``payload`` is not one datum of this schema (``None``: it is)."""
        stream = io.BytesIO(payload)
        try:
            schemaless_reader(stream, self.parsed, None)
        except Exception as exc:  # fastavro raises many kinds on bad bytes
            return f"not Avro of the schema: {type(exc).__name__}: {exc}"
        if stream.tell() != len(payload):
            return f"{len(payload) - stream.tell()} bytes left after the Avro datum"
        return None


def parse(text: str) -> AvroSchema:
    """Parse Avro schema text; raises :class:`InvalidSchemaError` saying why."""
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise InvalidSchemaError(f"Invalid schema: not JSON: {exc}") from None
    named: dict[str, Any] = {}
    try:
        parsed = parse_schema(raw, named_schemas=named)
    except (SchemaParseException, UnknownType, TypeError, ValueError, KeyError) as exc:
        raise InvalidSchemaError(f"Invalid Avro schema: {exc}") from None
    return AvroSchema(parsed, named, json.dumps(raw, separators=(",", ":")))


def can_read(reader: AvroSchema, writer: AvroSchema) -> list[str]:
    """Why ``reader`` cannot decode data written with ``writer`` (empty: it can)."""
    problems: list[str] = []
    _Resolver(reader.named, writer.named, problems).check(reader.parsed, writer.parsed, "")
    return problems


class _Resolver:
    def __init__(
        self, rnamed: Mapping[str, Any], wnamed: Mapping[str, Any], problems: list[str]
    ) -> None:
        self.rnamed = rnamed
        self.wnamed = wnamed
        self.problems = problems
        self.seen: set[tuple[str, str]] = set()

    def _resolve(self, schema: Any, named: Mapping[str, Any]) -> Any:
        while isinstance(schema, dict) and isinstance(schema.get("type"), dict | list):
            schema = schema["type"]  # {"type": {...}}: the inner schema
        if isinstance(schema, str) and schema in named:
            return named[schema]
        if isinstance(schema, dict) and schema.get("type") in named:
            return named[schema["type"]]
        return schema

    def check(self, r: Any, w: Any, path: str) -> None:
        r, w = self._resolve(r, self.rnamed), self._resolve(w, self.wnamed)
        if isinstance(w, list):  # every branch the writer may have used must be readable
            for branch in w:
                self.check(r, branch, path)
            return
        if isinstance(r, list):
            for branch in r:
                trial = _Resolver(self.rnamed, self.wnamed, [])
                trial.seen = set(self.seen)
                trial.check(branch, w, path)
                if not trial.problems:
                    return
            self.problems.append(
                f"{path or '/'}: no branch of the reader's union reads writer type {_type_name(w)}"
            )
            return
        rt, wt = _type_name(r), _type_name(w)
        if rt in PROMOTIONS or wt in PROMOTIONS or rt in ("null", "boolean"):
            if wt not in PROMOTIONS.get(rt, frozenset({rt})):
                self.problems.append(f"{path or '/'}: reader type {rt} cannot read {wt}")
            return
        if rt != wt and not (rt in ("record", "error") and wt in ("record", "error")):
            self.problems.append(f"{path or '/'}: reader type {rt} cannot read {wt}")
            return
        if rt in NAMED:
            if not _names_match(r, w):
                self.problems.append(
                    f"{path or '/'}: reader {rt} {r.get('name')} does not match writer "
                    f"{w.get('name')}"
                )
                return
            key = (r["name"], w["name"])
            if key in self.seen:  # a recursive type already being compared
                return
            self.seen.add(key)
        if rt in ("record", "error"):
            self._record(r, w, path)
        elif rt == "enum":
            missing = [s for s in w["symbols"] if s not in r["symbols"]]
            if missing and "default" not in r:
                self.problems.append(
                    f"{path or '/'}: reader enum {r['name']} lacks symbols {missing}"
                )
        elif rt == "fixed":
            if r["size"] != w["size"]:
                self.problems.append(
                    f"{path or '/'}: fixed {r['name']} size {r['size']} != {w['size']}"
                )
        elif rt == "array":
            self.check(r["items"], w["items"], f"{path}/items")
        elif rt == "map":
            self.check(r["values"], w["values"], f"{path}/values")

    def _record(self, r: Any, w: Any, path: str) -> None:
        wfields = {f["name"]: f for f in w["fields"]}
        for rf in r["fields"]:
            names = [rf["name"], *rf.get("aliases", ())]
            wf = next((wfields[n] for n in names if n in wfields), None)
            where = f"{path}/{rf['name']}"
            if wf is not None:
                self.check(rf["type"], wf["type"], where)
            elif "default" not in rf:
                self.problems.append(
                    f"{where}: reader field {rf['name']!r} is missing from the writer's "
                    "record and has no default"
                )


def _type_name(schema: Any) -> str:
    if isinstance(schema, str):
        return schema
    if isinstance(schema, dict):
        return str(schema["type"])
    return "union"


def _names_match(r: Mapping[str, Any], w: Mapping[str, Any]) -> bool:
    """Names match by full name, or by an alias of the reader (either full or unqualified)."""
    if r["name"] == w["name"]:
        return True
    aliases = set(r.get("aliases", ()))
    return w["name"] in aliases or w["name"].rpartition(".")[2] in aliases
