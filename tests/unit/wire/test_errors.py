"""The error taxonomy: one exception class per wire error code, with its retriable flag."""

from __future__ import annotations

import inspect

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidelog.wire import errors
from tidelog.wire.errors import (
    ERRORS,
    BrokerError,
    ErrorCode,
    NotLeaderError,
    ProtocolError,
    TidelogError,
    UnknownServerError,
    error_class,
    error_for,
    raise_for_code,
)

CODES = [c for c in ErrorCode if c != ErrorCode.NONE]
BROKER_ERRORS = [
    cls
    for _, cls in inspect.getmembers(errors, inspect.isclass)
    if issubclass(cls, BrokerError) and cls is not BrokerError
]


def test_every_code_has_an_entry_describing_it() -> None:
    assert set(ERRORS) == set(ErrorCode)
    for code, info in ERRORS.items():
        assert info.code is code
        assert info.message


@pytest.mark.parametrize("code", CODES, ids=lambda c: c.name)
def test_every_code_maps_to_exactly_one_broker_error_class(code: ErrorCode) -> None:
    classes = [cls for cls in BROKER_ERRORS if cls.__dict__.get("code") == code]

    assert len(classes) == 1
    (cls,) = classes
    assert error_class(code) is cls
    assert error_class(int(code)) is cls
    assert cls.code is code
    assert cls.retriable is ERRORS[code].retriable


@pytest.mark.parametrize("code", CODES, ids=lambda c: c.name)
def test_raise_for_code_raises_the_mapped_class_with_the_message(code: ErrorCode) -> None:
    with pytest.raises(error_class(code)) as info:
        raise_for_code(int(code), "what happened")

    error = info.value
    assert type(error) is error_class(code)
    assert error.message == "what happened"
    assert str(error) == f"{code.name}: what happened"
    assert error.retriable == ERRORS[code].retriable
    kept = error_for(int(code), "what happened")  # the same error, as a value
    assert type(kept) is type(error) and kept.message == error.message


def test_no_class_maps_code_none() -> None:
    assert all(cls.__dict__.get("code") != ErrorCode.NONE for cls in BROKER_ERRORS)
    raise_for_code(ErrorCode.NONE)  # returns: no error
    raise_for_code(0, "ignored")
    assert error_for(0, "ignored") is None


@given(code=st.integers().filter(lambda c: c not in set(ErrorCode)))
def test_unknown_codes_map_to_unknown_server_error_naming_the_number(code: int) -> None:
    assert error_class(code) is UnknownServerError
    with pytest.raises(UnknownServerError, match=f"unknown error code {code}: oops"):
        raise_for_code(code, "oops")
    with pytest.raises(UnknownServerError, match=f"unknown error code {code}$"):
        raise_for_code(code)


def test_the_default_message_comes_from_the_registry() -> None:
    error = NotLeaderError()

    assert error.message == ERRORS[ErrorCode.NOT_LEADER].message
    assert error.retriable
    assert not UnknownServerError().retriable


def test_protocol_errors_and_broker_errors_are_separate_families() -> None:
    protocol = [
        cls
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, ProtocolError)
    ]
    assert protocol
    for protocol_cls in protocol:
        assert issubclass(protocol_cls, TidelogError)
        assert not issubclass(protocol_cls, BrokerError)
    for cls in BROKER_ERRORS:
        assert issubclass(cls, TidelogError)
        assert not issubclass(cls, ProtocolError)


def test_a_second_class_for_a_code_is_refused() -> None:
    with pytest.raises(TypeError, match="already maps"):

        class AnotherNotLeader(BrokerError):
            code = ErrorCode.NOT_LEADER

    assert error_class(ErrorCode.NOT_LEADER) is NotLeaderError
