"""JSON Schema: parsing and validation (the ``jsonschema`` library, any draft it knows; the
schema's ``$schema`` picks it, draft 2020-12 by default) and compatibility for a documented
subset of the language (docs/REGISTRY.md lists each rule with a passing and a failing pair).

Compatibility asks what Confluent's JSON Schema rules ask: does the reader schema accept every
document the writer schema accepts? :func:`accepts_all` answers it structurally for ``type``,
``enum``/``const``, ``properties``, ``required``, ``additionalProperties``, ``items`` and the
numeric and length bounds. Any other keyword (``$ref``, ``allOf``, ``anyOf``, ``oneOf``,
``not``, ``pattern``, ``patternProperties``, ...) must be equal on both sides or the change is
refused: conservative, never a false "compatible".
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, best_match
from jsonschema.protocols import Validator
from jsonschema.validators import validator_for

from .types import InvalidSchemaError

HANDLED: Final = frozenset(
    {
        "type",
        "enum",
        "const",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "minLength",
        "maxLength",
        "minItems",
        "maxItems",
        # annotations: no effect on what is valid
        "$schema",
        "$id",
        "title",
        "description",
        "default",
        "examples",
        "$comment",
        "format",
        "deprecated",
        "readOnly",
        "writeOnly",
    }
)
LOWER_BOUNDS: Final = ("minimum", "exclusiveMinimum", "minLength", "minItems")
UPPER_BOUNDS: Final = ("maximum", "exclusiveMaximum", "maxLength", "maxItems")
ALL_TYPES: Final = frozenset({"null", "boolean", "object", "array", "number", "string", "integer"})


@dataclass(frozen=True, slots=True)
class JsonSchema:
    """A checked JSON Schema: ``raw`` the document, ``canonical`` the text stored."""

    raw: Any
    canonical: str
    validator: Validator = field(repr=False, compare=False)

    def validate(self, payload: bytes | memoryview) -> str | None:
        """Why ``payload`` (JSON text) does not fit the schema (``None``: it does)."""
        try:
            document = json.loads(bytes(payload))
        except ValueError as exc:
            return f"not JSON: {exc}"
        return self.validate_document(document)

    def validate_document(self, document: Any) -> str | None:
        error = best_match(self.validator.iter_errors(document))
        if error is None:
            return None
        where = "/".join(str(p) for p in error.absolute_path)
        return f"at /{where}: {error.message}"


def parse(text: str) -> JsonSchema:
    """Parse and check JSON Schema text; raises :class:`InvalidSchemaError` saying why."""
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise InvalidSchemaError(f"Invalid schema: not JSON: {exc}") from None
    if not isinstance(raw, dict | bool):
        raise InvalidSchemaError("Invalid JSON schema: a schema is an object or a boolean")
    cls = validator_for(raw, default=Draft202012Validator)
    try:
        cls.check_schema(raw)  # type: ignore[arg-type]  # booleans are schemas too
    except SchemaError as exc:
        raise InvalidSchemaError(f"Invalid JSON schema: {exc.message}") from None
    return JsonSchema(raw, json.dumps(raw, separators=(",", ":")), cls(raw))


def accepts_all(reader: JsonSchema, writer: JsonSchema) -> list[str]:
    """Why some document valid under ``writer`` may be invalid under ``reader`` (empty: none)."""
    problems: list[str] = []
    _compare(reader.raw, writer.raw, "", problems)
    return problems


def _compare(r: Any, w: Any, path: str, out: list[str]) -> None:
    where = path or "/"
    if r is True or r == {} or w is False:
        return
    if r is False:
        out.append(f"{where}: the reader accepts nothing")
        return
    if w is True:
        w = {}
    for key in sorted((set(r) | set(w)) - HANDLED):
        if r.get(key) != w.get(key):
            out.append(f"{where}: keyword {key!r} changed (not in the supported subset)")
    rtypes, wtypes = _types(r), _types(w)
    narrowed = wtypes - rtypes
    if "integer" in narrowed and "number" in rtypes:
        narrowed.discard("integer")
    if narrowed:
        out.append(f"{where}: type narrowed, {sorted(narrowed)} no longer accepted")
    _compare_values(r, w, where, out)
    for key in LOWER_BOUNDS:
        if key in r and (key not in w or w[key] < r[key]):
            out.append(f"{where}: {key} raised to {r[key]}")
    for key in UPPER_BOUNDS:
        if key in r and (key not in w or w[key] > r[key]):
            out.append(f"{where}: {key} lowered to {r[key]}")
    if "object" in rtypes & wtypes:
        _compare_objects(r, w, path, out)
    if "array" in rtypes & wtypes and ("items" in r or "items" in w):
        _compare(r.get("items", True), w.get("items", True), f"{path}/items", out)


def _compare_values(r: Mapping[str, Any], w: Mapping[str, Any], where: str, out: list[str]) -> None:
    """``enum``/``const``: every value the writer allows, the reader allows."""
    allowed = _values(r)
    if allowed is None:
        return
    written = _values(w)
    if written is None:
        out.append(f"{where}: enum added")
        return
    missing = [v for v in written if v not in allowed]
    if missing:
        out.append(f"{where}: enum values {missing} removed")


def _values(schema: Mapping[str, Any]) -> list[Any] | None:
    if "const" in schema:
        return [schema["const"]]
    enum = schema.get("enum")
    return None if enum is None else list(enum)


def _compare_objects(r: Mapping[str, Any], w: Mapping[str, Any], path: str, out: list[str]) -> None:
    where = path or "/"
    added = sorted(set(r.get("required", ())) - set(w.get("required", ())))
    if added:
        out.append(f"{where}: required properties added: {added}")
    rprops, wprops = r.get("properties", {}), w.get("properties", {})
    radd, wadd = r.get("additionalProperties", True), w.get("additionalProperties", True)
    for name, rprop in rprops.items():
        if name in wprops:
            _compare(rprop, wprops[name], f"{path}/{name}", out)
        elif wadd is not False:  # the writer's documents may carry it, with any value
            before = len(out)
            _compare(rprop, wadd, f"{path}/{name}", out)
            if len(out) > before:
                out[before:] = [
                    f"{path}/{name}: property added to an open content model "
                    "(the writer's documents may have it with any value)"
                ]
    for name, wprop in wprops.items():
        if name not in rprops:
            if radd is False:
                out.append(f"{path}/{name}: property removed from a closed content model")
            else:
                _compare(radd, wprop, f"{path}/{name}", out)
    if radd is not True and radd != {}:
        if wadd is True or wadd == {}:
            out.append(f"{where}: additionalProperties narrowed")
        elif wadd is not False:
            _compare(radd, wadd, f"{path}/*", out)


def _types(schema: Mapping[str, Any]) -> set[str]:
    t = schema.get("type")
    if t is None:
        return set(ALL_TYPES)
    return {t} if isinstance(t, str) else set(t)
