"""Errors as HTTP answers: one table from exception class to status and ``error_code``.

Every error the gateway returns is ``{"error_code": "...", "message": "..."}`` with a 4xx (or
503 when the brokers cannot be reached). Bad input never becomes a 500 and no answer carries a
stack trace: anything unexpected is logged and answered ``500 internal_error`` without detail.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Final

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tidelog.client import errors as ce
from tidelog.client.group import CommitFailedError
from tidelog.wire import errors as we
from tidelog.wire.errors import TidelogError

from .formats import UndecodableError

logger = logging.getLogger("tidelog.gateway")


class GatewayError(Exception):
    """An error the gateway answers as it is: status, code and message."""

    def __init__(self, status: int, error_code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message


class BodyTooLargeError(HTTPException):
    """Raised from ``receive`` once a body passes ``max_body_bytes`` (FastAPI lets an
    HTTPException through body parsing), so a chunked body is never read whole."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than {limit} bytes (max_body_bytes)")


# Most specific first: the first class an exception is an instance of decides.
ERROR_TABLE: Final[tuple[tuple[type[BaseException], int, str], ...]] = (
    (we.UnknownTopicOrPartitionError, 404, "unknown_topic_or_partition"),
    (we.GroupIdNotFoundError, 404, "unknown_group"),
    (we.OffsetOutOfRangeError, 400, "offset_out_of_range"),
    (ce.NoOffsetForPartitionError, 400, "no_offset"),
    (we.TopicAlreadyExistsError, 409, "topic_exists"),
    (we.NonEmptyGroupError, 409, "group_not_empty"),
    (CommitFailedError, 409, "commit_failed"),
    (we.MessageTooLargeError, 413, "record_too_large"),
    (we.InvalidTopicNameError, 400, "invalid_topic_name"),
    (we.InvalidPartitionsError, 400, "invalid_partitions"),
    (we.InvalidReplicationFactorError, 400, "invalid_replication_factor"),
    (we.InvalidConfigError, 400, "invalid_config"),
    (we.InvalidGroupIdError, 400, "invalid_group_id"),
    (we.InvalidCommitOffsetError, 400, "invalid_commit_offset"),
    (we.UnreadableRangeError, 422, "unreadable_range"),
    (ce.RecordDeserializationError, 406, "undecodable_record"),
    (UndecodableError, 406, "undecodable_record"),
    (ce.TidelogConnectionError, 503, "broker_unavailable"),
    (ce.RequestTimeoutError, 503, "broker_timeout"),
    (ce.DeliveryTimeoutError, 503, "delivery_timeout"),
    (ce.ProducerBufferFullError, 503, "producer_buffer_full"),
    (ce.ClientUsageError, 400, "bad_request"),
    (ConnectionError, 503, "broker_unavailable"),
    (TimeoutError, 503, "broker_timeout"),
)


def describe(exc: BaseException) -> tuple[int, str, str]:
    """``(status, error_code, message)`` for an exception: the table, then any other broker
    error by its wire code (503 if retriable, else 400), then 500."""
    if isinstance(exc, GatewayError):
        return exc.status, exc.error_code, exc.message
    for cls, status, code in ERROR_TABLE:
        if isinstance(exc, cls):
            return status, code, _message(exc)
    if isinstance(exc, we.BrokerError):
        return (503 if exc.retriable else 400), exc.code.name.lower(), _message(exc)
    return 500, "internal_error", "the gateway hit an unexpected error (it is logged)"


def _message(exc: BaseException) -> str:
    return getattr(exc, "message", None) or str(exc) or type(exc).__name__


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"error_code": code, "message": message}, status_code=status, headers=headers
    )


_HTTP_CODES: Final[dict[int, str]] = {
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
}


def install_handlers(app: FastAPI) -> None:
    """Answer every exception with the JSON error body."""

    async def on_validation(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return error_response(400, "invalid_json", "the request body is not valid JSON")
        parts = []
        for e in errors[:5]:
            where = ".".join(str(p) for p in e.get("loc", ()))
            parts.append(f"{where}: {e.get('msg', 'invalid')}")
        return error_response(422, "invalid_request", "; ".join(parts) or "invalid request")

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = _allowed(request)
        return error_response(exc.status_code, code, str(exc.detail), headers)

    async def on_any(request: Request, exc: Exception) -> JSONResponse:
        status, code, message = describe(exc)
        if status == 500:
            logger.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return error_response(status, code, message)

    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(HTTPException, on_http)
    # Expected failures, answered by the exception middleware. Anything else reaches the
    # handler for Exception, which answers 500 and lets the server log the error.
    for cls in (GatewayError, TidelogError, UndecodableError, ConnectionError, TimeoutError):
        app.add_exception_handler(cls, on_any)
    app.add_exception_handler(Exception, on_any)


def _allowed(request: Request) -> str:
    """Every method of every route on this path, for a 405's ``Allow`` (RFC 9110): Starlette
    names only the first route's, and FastAPI makes one route per method. ``create_app``
    lists the routes in ``app.state.routes`` (FastAPI wraps included routers)."""
    methods: set[str] = set()
    for route in request.app.state.routes:
        if isinstance(route, Route) and route.matches(request.scope)[0] != Match.NONE:
            methods |= route.methods or set()
    return ", ".join(sorted(methods))


class BodyLimitMiddleware:
    """413 for a body above ``limit`` bytes: at once from ``Content-Length``, else as soon as
    the chunks read pass it (the rest is never read)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    length = -1
                if length > self.limit or length < 0:
                    status = 413 if length > self.limit else 400
                    code = "body_too_large" if status == 413 else "bad_request"
                    text = (
                        str(BodyTooLargeError(self.limit).detail)
                        if status == 413
                        else ("Content-Length is not a number")
                    )
                    await error_response(status, code, text)(scope, receive, send)
                    return
        seen = 0
        limit = self.limit

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLargeError(limit)
            return message

        await self.app(scope, limited, send)
