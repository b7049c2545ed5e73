"""The registry's operations, as Confluent's Schema Registry defines them, over a
:class:`~.store.SchemaStore`. Each method syncs first (sees every earlier write) and raises
:class:`~.errors.RegistryError` with Confluent's codes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from tidelog.schemas.compat import ParsedSchema, check, parse_schema
from tidelog.schemas.state import (
    RegistryState,
    SchemaVersion,
    config_key,
    config_value,
    id_floor_record,
    schema_key,
)
from tidelog.schemas.types import Compatibility, InvalidSchemaError, SchemaType

from . import errors as e
from .store import Row, SchemaStore

MAX_VERSION: Final = 2**31 - 1
REGISTER_ATTEMPTS: Final = 8
"""Proposals refused because another writer took the id or version first, before giving up."""


@dataclass(frozen=True, slots=True)
class SchemaInput:
    """A schema as a request carries it."""

    schema: str
    schema_type: SchemaType = SchemaType.AVRO

    def parse(self) -> ParsedSchema:
        try:
            return parse_schema(self.schema_type, self.schema)
        except InvalidSchemaError as exc:
            raise e.RegistryError(e.INVALID_SCHEMA, str(exc)) from None


def parse_version(text: str) -> int | None:
    """A version path segment: ``None`` for ``latest`` (or -1), else 1..2^31-1 (42202)."""
    if text in ("latest", "-1"):
        return None
    try:
        number = int(text)
    except ValueError:
        raise e.invalid_version(text) from None
    if not 1 <= number <= MAX_VERSION:
        raise e.invalid_version(text)
    return number


def parse_level(raw: object) -> Compatibility:
    try:
        return Compatibility(str(raw).upper())
    except ValueError:
        raise e.invalid_compatibility(raw) from None


class Registry:
    def __init__(self, store: SchemaStore) -> None:
        self.store = store

    async def state(self) -> RegistryState:
        return await self.store.sync()

    # --- schemas --------------------------------------------------------------------------

    async def register(self, subject: str, given: SchemaInput) -> SchemaVersion:
        """The subject's version holding ``given``: the existing one, or a new version
        (same id as the same schema anywhere else) if it is compatible."""
        parsed = given.parse()
        kind, text = given.schema_type, parsed.canonical
        for _ in range(REGISTER_ATTEMPTS):
            state = await self.state()
            found = state.find(subject, kind, text)
            if found is not None:
                return found
            live = state.versions(subject)
            problems = check(
                state.compatibility(subject),
                parsed,
                [parse_schema(v.schema_type, v.schema) for v in live],
            )
            if problems:
                raise e.RegistryError(
                    e.INCOMPATIBLE_SCHEMA,
                    "Schema being registered is incompatible with an earlier schema for subject "
                    f"'{subject}', details: {problems}",
                )
            every = state.versions(subject, deleted=True)
            version = (every[-1].version if every else 0) + 1
            schema_id = state.ids.get((kind, text), state.next_id)
            key = schema_key(subject, version)
            proposal = SchemaVersion(subject, version, schema_id, kind, text, False, key)
            state = await self.store.write([(key, proposal.encode())])
            if state.by_key.get(key) == proposal:
                return proposal
        raise e.RegistryError(e.STORE_ERROR, "Register failed: too many concurrent writers")

    async def lookup(self, subject: str, given: SchemaInput, deleted: bool) -> SchemaVersion:
        state = await self.state()
        versions = state.versions(subject, deleted=deleted)
        if not versions:
            raise e.subject_not_found(subject)
        text = given.parse().canonical
        for v in reversed(versions):
            if v.schema_type is given.schema_type and v.schema == text:
                return v
        raise e.schema_not_found()

    async def by_id(self, schema_id: int) -> tuple[SchemaType, str, list[SchemaVersion]]:
        state = await self.state()
        found = state.schemas.get(schema_id)
        if found is None:
            raise e.schema_not_found(schema_id)
        return found[0], found[1], sorted(state.uses(schema_id), key=_order)

    # --- subjects and versions ------------------------------------------------------------

    async def subjects(self, prefix: str, deleted: bool) -> list[str]:
        state = await self.state()
        return sorted(
            s for s in state.subjects if s.startswith(prefix) and state.versions(s, deleted=deleted)
        )

    async def versions(self, subject: str, deleted: bool) -> list[int]:
        versions = (await self.state()).versions(subject, deleted=deleted)
        if not versions:
            raise e.subject_not_found(subject)
        return [v.version for v in versions]

    async def version(self, subject: str, version: str, deleted: bool = False) -> SchemaVersion:
        return _pick((await self.state()).versions(subject, deleted=deleted), subject, version)

    async def delete_subject(self, subject: str, permanent: bool) -> list[int]:
        state = await self.state()
        every = state.versions(subject, deleted=True)
        live = [v for v in every if not v.deleted]
        if not every:
            raise e.subject_not_found(subject)
        if permanent:
            if live:
                raise e.RegistryError(
                    e.SUBJECT_NOT_SOFT_DELETED,
                    f"Subject '{subject}' was not deleted first before being permanently deleted",
                )
            await self.store.write(
                [id_floor_record(state.next_id), *((v.key, None) for v in every)]
            )
            return [v.version for v in every]
        if not live:
            raise e.RegistryError(
                e.SUBJECT_SOFT_DELETED,
                f"Subject '{subject}' was soft deleted.Set permanent=true to delete permanently",
            )
        await self.store.write([_soft_deleted(v) for v in live])
        return [v.version for v in live]

    async def delete_version(self, subject: str, version: str, permanent: bool) -> int:
        state = await self.state()
        every = state.versions(subject, deleted=True)
        if not every:
            raise e.subject_not_found(subject)
        if permanent:
            target = _pick(every, subject, version)
            if not target.deleted:
                raise e.RegistryError(
                    e.VERSION_NOT_SOFT_DELETED,
                    f"Subject '{subject}' Version {target.version} was not deleted first before "
                    "being permanently deleted",
                )
            await self.store.write([id_floor_record(state.next_id), (target.key, None)])
            return target.version
        number = parse_version(version)
        if number is not None and any(v.version == number and v.deleted for v in every):
            raise e.RegistryError(
                e.VERSION_SOFT_DELETED,
                f"Subject '{subject}' Version {number} was soft deleted.Set permanent=true to "
                "delete permanently",
            )
        target = _pick([v for v in every if not v.deleted], subject, version)
        await self.store.write([_soft_deleted(target)])
        return target.version

    # --- compatibility --------------------------------------------------------------------

    async def config(self, subject: str | None, default_to_global: bool) -> Compatibility:
        state = await self.state()
        if subject is None or default_to_global:
            return state.compatibility(subject)
        level = state.configs.get(subject)
        if level is None:
            raise e.RegistryError(
                e.SUBJECT_COMPATIBILITY_NOT_CONFIGURED,
                f"Subject '{subject}' does not have subject-level compatibility configured",
            )
        return level

    async def set_config(self, subject: str | None, level: Compatibility) -> None:
        await self.store.write([(config_key(subject), config_value(level))])

    async def delete_config(self, subject: str | None) -> Compatibility:
        previous = (await self.state()).compatibility(subject)
        await self.store.write([(config_key(subject), None)])
        return previous

    async def test(self, subject: str, version: str | None, given: SchemaInput) -> list[str]:
        """Why ``given`` breaks the subject's level against ``version`` (``None``: against
        what registering would check); empty when compatible."""
        state = await self.state()
        parsed = given.parse()
        live = state.versions(subject)
        level = state.compatibility(subject)
        if version is None:
            against = live
        else:
            if not live:
                raise e.subject_not_found(subject)
            against = [_pick(live, subject, version)]
            level = Compatibility(level.value.removesuffix("_TRANSITIVE"))
        return check(level, parsed, [parse_schema(v.schema_type, v.schema) for v in against])


def _pick(versions: list[SchemaVersion], subject: str, version: str) -> SchemaVersion:
    number = parse_version(version)
    if not versions:
        raise e.subject_not_found(subject)
    if number is None:
        return versions[-1]
    for v in versions:
        if v.version == number:
            return v
    raise e.version_not_found(number)


def _soft_deleted(v: SchemaVersion) -> Row:
    return v.key, SchemaVersion(v.subject, v.version, v.id, v.schema_type, v.schema, True).encode()


def _order(v: SchemaVersion) -> tuple[str, int]:
    return v.subject, v.version
