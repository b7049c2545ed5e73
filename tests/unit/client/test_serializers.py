from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidelog.client.serializers import get_deserializer, get_serializer

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("bytes", b"\x00\xffraw"),
        ("str", "héllo ✓"),
        ("json", {"id": 1, "tags": ["a", "é"], "ok": True, "none": None}),
        ("msgpack", {"id": 1, "blob": b"\x00\x01", "nested": [1.5, "x"]}),
    ],
)
def test_round_trip(name: str, value: Any) -> None:
    data = get_serializer(name)(value)  # type: ignore[arg-type]
    assert isinstance(data, bytes)
    assert get_deserializer(name)(data) == value  # type: ignore[arg-type]


@given(json_values)
def test_json_and_msgpack_round_trip_any_json_value(value: Any) -> None:
    for name in ("json", "msgpack"):
        assert get_deserializer(name)(get_serializer(name)(value)) == value


def test_json_is_compact_utf8() -> None:
    assert get_serializer("json")({"a": "é", "b": [1, 2]}) == '{"a":"é","b":[1,2]}'.encode()


def test_default_is_bytes_and_accepts_bytes_likes() -> None:
    ser = get_serializer(None)
    assert ser(b"x") == b"x"
    assert ser(bytearray(b"x")) == b"x"
    assert ser(memoryview(b"x")) == b"x"
    assert get_deserializer(None)(b"x") == b"x"


def test_bytes_serializer_refuses_other_types_with_advice() -> None:
    with pytest.raises(TypeError, match="give the producer a serializer"):
        get_serializer("bytes")("text")


def test_str_serializer_refuses_non_str() -> None:
    with pytest.raises(TypeError, match="takes str"):
        get_serializer("str")(b"x")


def test_callables_are_used_as_they_are() -> None:
    def upper(v: Any) -> bytes:
        return str(v).upper().encode()

    assert get_serializer(upper) is upper
    assert get_deserializer(bytes.decode) is bytes.decode


def test_unknown_names_and_non_callables_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown serializer 'yaml'"):
        get_serializer("yaml")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="name or a callable"):
        get_deserializer(42)  # type: ignore[arg-type]
