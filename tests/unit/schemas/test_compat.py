"""Compatibility rules, level by level, with pairs that must pass and pairs that must fail,
and property tests: every schema reads itself, and an Avro pair judged compatible really
decodes what the writer encoded."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from fastavro import schemaless_reader, schemaless_writer
from hypothesis import given, settings
from hypothesis import strategies as st

from tidelog.schemas.compat import ParsedSchema, check, parse_schema
from tidelog.schemas.types import Compatibility, InvalidSchemaError, SchemaType

L = Compatibility


def avro(*fields: dict[str, Any]) -> ParsedSchema:
    return parse_schema(
        SchemaType.AVRO, json.dumps({"type": "record", "name": "R", "fields": list(fields)})
    )


def js(schema: dict[str, Any]) -> ParsedSchema:
    return parse_schema(SchemaType.JSON, json.dumps(schema))


X_INT = {"name": "x", "type": "int"}
Y_DEFAULT = {"name": "y", "type": "string", "default": ""}
Y_REQUIRED = {"name": "y", "type": "string"}

# (level, existing versions oldest first, new schema, compatible?)
AVRO_CASES = [
    (L.BACKWARD, [avro(X_INT)], avro(X_INT, Y_DEFAULT), True),  # added with a default
    (L.BACKWARD, [avro(X_INT)], avro(X_INT, Y_REQUIRED), False),  # added without a default
    (L.BACKWARD, [avro(X_INT, Y_REQUIRED)], avro(X_INT), True),  # removed: reader ignores it
    (L.FORWARD, [avro(X_INT, Y_REQUIRED)], avro(X_INT), False),  # old reader needs y
    (L.FORWARD, [avro(X_INT)], avro(X_INT, Y_REQUIRED), True),
    (L.FULL, [avro(X_INT)], avro(X_INT, Y_DEFAULT), True),
    (L.FULL, [avro(X_INT)], avro(X_INT, Y_REQUIRED), False),
    (L.BACKWARD, [avro(X_INT)], avro({"name": "x", "type": "long"}), True),  # promotion
    (L.FORWARD, [avro(X_INT)], avro({"name": "x", "type": "long"}), False),
    (L.NONE, [avro(X_INT)], avro({"name": "x", "type": "string"}), True),
    (L.BACKWARD, [avro(X_INT), avro(X_INT, Y_DEFAULT)], avro(Y_DEFAULT), True),
    # transitive: fine against the latest, not against the first
    (L.BACKWARD, [avro(Y_REQUIRED), avro(X_INT, Y_DEFAULT)], avro(X_INT, Y_DEFAULT), True),
    (
        L.BACKWARD_TRANSITIVE,
        [avro(Y_REQUIRED), avro(X_INT, Y_DEFAULT)],
        avro({"name": "x", "type": "int", "default": 0}, Y_DEFAULT),
        True,
    ),
    (
        L.BACKWARD_TRANSITIVE,
        [avro(Y_REQUIRED), avro(X_INT, Y_REQUIRED)],
        avro(X_INT, Y_REQUIRED),
        False,
    ),
    (L.FORWARD_TRANSITIVE, [avro(X_INT, Y_REQUIRED), avro(X_INT, Y_DEFAULT)], avro(X_INT), False),
    (L.FORWARD, [avro(X_INT, Y_REQUIRED), avro(X_INT, Y_DEFAULT)], avro(X_INT), True),
    (
        L.FULL_TRANSITIVE,
        [avro(X_INT, Y_REQUIRED), avro(X_INT, Y_DEFAULT)],
        avro(X_INT),
        False,
    ),
    (L.FULL, [avro(X_INT, Y_REQUIRED), avro(X_INT, Y_DEFAULT)], avro(X_INT), True),
]

OBJ_X = {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}
CLOSED_X = {**OBJ_X, "additionalProperties": False}

# (rule, writer, reader, reader accepts everything the writer does?) -- docs/REGISTRY.md
JSON_RULES = [
    ("type widened", {"type": "integer"}, {"type": "number"}, True),
    ("type narrowed", {"type": "number"}, {"type": "integer"}, False),
    ("type added to a list", {"type": "string"}, {"type": ["string", "null"]}, True),
    ("type removed from a list", {"type": ["string", "null"]}, {"type": "string"}, False),
    ("required removed", OBJ_X, {**OBJ_X, "required": []}, True),
    ("required added", {**OBJ_X, "required": []}, OBJ_X, False),
    ("enum value added", {"enum": ["a"]}, {"enum": ["a", "b"]}, True),
    ("enum value removed", {"enum": ["a", "b"]}, {"enum": ["a"]}, False),
    (
        "property added to a closed model",
        CLOSED_X,
        {**CLOSED_X, "properties": {"x": {"type": "integer"}, "y": {"type": "string"}}},
        True,
    ),
    (
        "property added to an open model",
        OBJ_X,
        {**OBJ_X, "properties": {"x": {"type": "integer"}, "y": {"type": "string"}}},
        False,
    ),
    (
        "property removed from an open model",
        {**OBJ_X, "properties": {"x": {"type": "integer"}, "y": {"type": "string"}}},
        OBJ_X,
        True,
    ),
    (
        "property removed from a closed model",
        {**CLOSED_X, "properties": {"x": {"type": "integer"}, "y": {"type": "string"}}},
        CLOSED_X,
        False,
    ),
    ("additionalProperties opened", CLOSED_X, OBJ_X, True),
    ("additionalProperties closed", OBJ_X, CLOSED_X, False),
    (
        "maxLength raised",
        {"type": "string", "maxLength": 5},
        {"type": "string", "maxLength": 9},
        True,
    ),
    (
        "maxLength lowered",
        {"type": "string", "maxLength": 9},
        {"type": "string", "maxLength": 5},
        False,
    ),
    (
        "items widened",
        {"type": "array", "items": {"type": "integer"}},
        {"type": "array", "items": {"type": "number"}},
        True,
    ),
    (
        "items narrowed",
        {"type": "array", "items": {"type": "number"}},
        {"type": "array", "items": {"type": "integer"}},
        False,
    ),
    (
        "unsupported keyword changed",
        {"type": "string", "pattern": "a"},
        {"type": "string", "pattern": "b"},
        False,
    ),
    (
        "unsupported keyword kept",
        {"type": "string", "pattern": "a"},
        {"type": "string", "pattern": "a"},
        True,
    ),
]


@pytest.mark.parametrize(("level", "existing", "new", "ok"), AVRO_CASES)
def test_avro_levels(
    level: Compatibility, existing: list[ParsedSchema], new: ParsedSchema, ok: bool
) -> None:
    assert (check(level, new, existing) == []) is ok


@pytest.mark.parametrize(
    ("rule", "writer", "reader", "ok"), JSON_RULES, ids=[r[0] for r in JSON_RULES]
)
def test_json_rules(rule: str, writer: dict[str, Any], reader: dict[str, Any], ok: bool) -> None:
    old, new = js(writer), js(reader)
    assert (check(L.BACKWARD, new, [old]) == []) is ok, rule
    # FORWARD is the same question the other way round
    assert (check(L.FORWARD, old, [new]) == []) is ok, rule


def test_json_full_needs_both_ways() -> None:
    assert check(L.FULL, js({"type": "number"}), [js({"type": "integer"})]) != []
    assert check(L.FULL, js({"type": "integer"}), [js({"type": "integer", "title": "t"})]) == []


@pytest.mark.parametrize(
    ("kind", "text"),
    [
        (SchemaType.AVRO, "{"),
        (SchemaType.AVRO, json.dumps({"type": "record", "name": "R", "fields": [{"name": "x"}]})),
        (SchemaType.AVRO, json.dumps("nosuchtype")),
        (SchemaType.JSON, json.dumps({"type": "nosuchtype"})),
        (SchemaType.JSON, "[1]"),
    ],
)
def test_invalid_schemas(kind: SchemaType, text: str) -> None:
    with pytest.raises(InvalidSchemaError):
        parse_schema(kind, text)


# --- properties ---------------------------------------------------------------------------

PRIMITIVES = ["int", "long", "float", "double", "string", "bytes", "boolean"]
VALUES = {
    "int": st.integers(-(2**31), 2**31 - 1),
    "long": st.integers(-(2**63), 2**63 - 1),
    "float": st.floats(width=32, allow_nan=False),
    "double": st.floats(allow_nan=False),
    "string": st.text(max_size=5),
    # UTF-8 bytes: Avro promotes bytes to string, and a reader can only decode those as text
    # (other bytes are bad data, not a schema incompatibility).
    "bytes": st.text(max_size=5).map(str.encode),
    "boolean": st.booleans(),
}
FIELD_NAMES = st.sampled_from(["a", "b", "c", "d"])
field_spec = st.tuples(FIELD_NAMES, st.sampled_from(PRIMITIVES), st.booleans(), st.booleans())


def _record(fields: list[tuple[str, str, bool, bool]]) -> dict[str, Any]:
    """A record from ``(name, type, has_default, nullable)``; names deduplicated."""
    out, seen = [], set()
    defaults = {
        "int": 0,
        "long": 0,
        "float": 0.0,
        "double": 0.0,
        "string": "",
        "bytes": "",
        "boolean": False,
    }
    for name, kind, has_default, nullable in fields:
        if name in seen:
            continue
        seen.add(name)
        spec: dict[str, Any] = {"name": name, "type": ["null", kind] if nullable else kind}
        if has_default:
            spec["default"] = None if nullable else defaults[kind]
        out.append(spec)
    return {"type": "record", "name": "R", "fields": out}


@settings(max_examples=200, deadline=None)
@given(st.lists(field_spec, max_size=4), st.lists(field_spec, max_size=4), st.data())
def test_avro_compatible_pairs_really_decode(
    writer_fields: list[Any], reader_fields: list[Any], data: st.DataObject
) -> None:
    """Soundness: when the check says the reader reads the writer, fastavro's own schema
    resolution decodes every datum the writer encodes; and every schema reads itself."""
    writer, reader = _record(writer_fields), _record(reader_fields)
    w = parse_schema(SchemaType.AVRO, json.dumps(writer))
    r = parse_schema(SchemaType.AVRO, json.dumps(reader))
    assert check(L.FULL, w, [w]) == []
    if check(L.BACKWARD, r, [w]):
        return
    datum = {}
    for f in writer["fields"]:
        kind = f["type"][1] if isinstance(f["type"], list) else f["type"]
        strategy = VALUES[kind]
        datum[f["name"]] = data.draw(
            st.none() | strategy if isinstance(f["type"], list) else strategy
        )
    buffer = io.BytesIO()
    schemaless_writer(buffer, w.parsed, datum)  # type: ignore[union-attr]
    buffer.seek(0)
    schemaless_reader(buffer, w.parsed, r.parsed)  # type: ignore[union-attr]
