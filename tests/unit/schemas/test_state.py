"""The registry log's replay: racing writers are decided by log order, soft and permanent
deletes, ids never reused, and validation of records against the replayed state."""

from __future__ import annotations

import json

from tidelog.schemas.framing import frame
from tidelog.schemas.state import (
    RegistryState,
    SchemaVersion,
    config_key,
    config_value,
    id_floor_record,
    schema_key,
)
from tidelog.schemas.types import Compatibility, SchemaType, ValidationMode
from tidelog.schemas.validation import RecordChecker

J = SchemaType.JSON
INT = json.dumps({"type": "integer"})
STR = json.dumps({"type": "string"})


def proposal(subject: str, version: int, schema_id: int, text: str) -> SchemaVersion:
    return SchemaVersion(subject, version, schema_id, J, text, False, schema_key(subject, version))


def write(state: RegistryState, v: SchemaVersion) -> None:
    state.apply(v.key, v.encode())


def test_racing_proposals_first_in_the_log_wins() -> None:
    state = RegistryState()
    a, b = proposal("s", 1, 1, INT), proposal("s", 1, 1, STR)
    assert a.key != b.key  # racing writers never share a key
    write(state, a)
    write(state, b)  # same version and id, other schema: refused by replay
    assert state.by_key.get(a.key) == a
    assert b.key not in state.by_key
    assert state.schemas == {1: (J, INT)}
    assert state.next_id == 2
    c = proposal("s", 1, 2, STR)  # a free id, but the version is taken
    write(state, c)
    assert c.key not in state.by_key
    assert [v.id for v in state.versions("s")] == [1]


def test_same_schema_in_two_subjects_shares_its_id() -> None:
    state = RegistryState()
    write(state, proposal("s", 1, 1, INT))
    write(state, proposal("t", 1, 2, INT))  # a new id for a known schema: refused
    assert "t" not in state.subjects
    write(state, proposal("t", 1, 1, INT))
    assert [v.id for v in state.versions("t")] == [1]


def test_soft_then_permanent_delete_never_reuses_the_id() -> None:
    state = RegistryState()
    v = proposal("s", 1, 1, INT)
    write(state, v)
    state.apply(v.key, SchemaVersion("s", 1, 1, J, INT, True).encode())
    assert state.versions("s") == []
    assert [x.version for x in state.versions("s", deleted=True)] == [1]
    floor_key, floor = id_floor_record(state.next_id)
    state.apply(floor_key, floor)
    state.apply(v.key, None)
    assert state.subjects == {} and state.schemas == {}
    # After compaction only the floor survives of all this: ids still start above it.
    fresh = RegistryState()
    fresh.apply(floor_key, floor)
    write(fresh, proposal("s", 1, 1, STR))
    assert fresh.subjects == {}
    write(fresh, proposal("s", 1, 2, STR))
    assert [x.id for x in fresh.versions("s")] == [2]


def test_config_records() -> None:
    state = RegistryState()
    assert state.compatibility("s") is Compatibility.BACKWARD
    state.apply(config_key(None), config_value(Compatibility.FULL))
    assert state.compatibility("s") is Compatibility.FULL
    state.apply(config_key("s"), config_value(Compatibility.NONE))
    assert state.compatibility("s") is Compatibility.NONE
    state.apply(config_key("s"), None)
    assert state.compatibility("s") is Compatibility.FULL


def test_unreadable_records_are_skipped() -> None:
    state = RegistryState()
    state.apply(b"not json", b"{}")
    state.apply(json.dumps({"keytype": "SCHEMA"}).encode(), b"[]")
    assert state.changes == 0


def test_checker_modes() -> None:
    state = RegistryState()
    write(state, proposal("t-value", 1, 1, INT))
    checker = RecordChecker(state)
    ok, wrong, unknown = frame(1, b"5"), frame(1, b'"x"'), frame(7, b"5")
    assert checker.first_invalid("t-value", ValidationMode.ID, [ok, wrong, None]) is None
    assert checker.first_invalid("t-value", ValidationMode.ID, [ok, unknown])[0] == 1  # type: ignore[index]
    bad = checker.first_invalid("t-value", ValidationMode.FULL, [ok, wrong])
    assert bad is not None and bad[0] == 1 and "not of type 'integer'" in bad[1]
    # plain JSON, checked against the latest JSON Schema in full mode only
    assert checker.first_invalid("t-value", ValidationMode.FULL, [b"5"]) is None
    assert checker.first_invalid("t-value", ValidationMode.FULL, [b'"x"']) is not None
    assert checker.first_invalid("t-value", ValidationMode.ID, [b"5"]) is not None
    assert checker.first_invalid("other-value", ValidationMode.ID, [ok]) is not None
