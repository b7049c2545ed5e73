from __future__ import annotations

from tidelog.client import errors
from tidelog.wire.errors import (
    ErrorCode,
    MessageTooLargeError,
    NotLeaderError,
    UnknownServerError,
)


def test_broker_error_is_the_registry_class_with_context_and_advice() -> None:
    exc = errors.broker_error(ErrorCode.MESSAGE_TOO_LARGE, where="t[0]")
    assert type(exc) is MessageTooLargeError
    assert not exc.retriable
    assert "t[0]" in str(exc)
    assert "batch_size" in str(exc)


def test_broker_message_is_kept() -> None:
    exc = errors.broker_error(ErrorCode.NOT_LEADER, "leader is 3", where="t[1]")
    assert isinstance(exc, NotLeaderError)
    assert exc.retriable
    assert "leader is 3" in str(exc)


def test_unknown_codes_map_to_unknown_server_error() -> None:
    exc = errors.broker_error(999, "odd")
    assert type(exc) is UnknownServerError


def test_retriable_client_errors() -> None:
    assert errors.is_retriable(errors.ConnectionClosedError("x"))
    assert errors.is_retriable(errors.RequestTimeoutError("x"))
    assert errors.is_retriable(NotLeaderError())
    assert not errors.is_retriable(errors.DeliveryTimeoutError("x"))
    assert not errors.is_retriable(ValueError("x"))
    assert isinstance(errors.ClientUsageError("x"), ValueError)
    assert isinstance(errors.ClientError("x"), errors.TidelogError)
