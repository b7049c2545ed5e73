"""What the schema logic shares: schema types, compatibility levels and the one error.

Everything in :mod:`tidelog.schemas` is pure (no I/O, no asyncio): the broker (validation on
produce) and the registry (the HTTP API) import the same rules.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final


class SchemaType(StrEnum):
    """A schema's language, spelled as Confluent's ``schemaType`` field."""

    AVRO = "AVRO"
    JSON = "JSON"


class Compatibility(StrEnum):
    """Confluent's compatibility levels. BACKWARD: the new schema reads data written with the
    previous one; FORWARD: the previous reads the new; FULL: both; *_TRANSITIVE: against every
    live version, not only the latest."""

    NONE = "NONE"
    BACKWARD = "BACKWARD"
    BACKWARD_TRANSITIVE = "BACKWARD_TRANSITIVE"
    FORWARD = "FORWARD"
    FORWARD_TRANSITIVE = "FORWARD_TRANSITIVE"
    FULL = "FULL"
    FULL_TRANSITIVE = "FULL_TRANSITIVE"

    @property
    def transitive(self) -> bool:
        return self.value.endswith("_TRANSITIVE")

    @property
    def backward(self) -> bool:
        return self.value.startswith(("BACKWARD", "FULL"))

    @property
    def forward(self) -> bool:
        return self.value.startswith(("FORWARD", "FULL"))


class ValidationMode(StrEnum):
    """A topic's ``schema_validation`` (see :mod:`.validation`)."""

    NONE = "none"
    ID = "id"
    FULL = "full"


DEFAULT_COMPATIBILITY: Final = Compatibility.BACKWARD


class InvalidSchemaError(ValueError):
    """The schema text is not a schema of its type (Confluent's 42201)."""
