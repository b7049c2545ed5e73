"""The consumer against a broker that answers each fetch error code (issue 12, point 2): a
fetch error never moves the position backwards and never hands a record out twice; a damaged
or missing range is an error that says where data resumes, skipped only by choice; a batch
that fails its CRC is checked by the broker once and never handed out."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from itertools import pairwise
from typing import Any, TypeVar

import pytest

from tidelog.client import Consumer, TopicPartition
from tidelog.wire.errors import (
    ERRORS,
    CorruptBatchError,
    DamagedRangeError,
    ErrorCode,
    MissingRangeError,
    OffsetOutOfRangeError,
    TidelogError,
    UnknownServerError,
    UnreadableRangeError,
)

from .fetchbroker import Fault, FetchBroker, serving

T = TypeVar("T")
TP = TopicPartition("t", 0)
STUCK_AFTER = 10.0
"""Seconds without a record or an error after which a test fails (a bound, not a sleep)."""
UNKNOWN_CODE = 99
CODES = [int(c) for c in ErrorCode if c != ErrorCode.NONE] + [UNKNOWN_CODE]


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, 60))


def consumer(broker: FetchBroker, **kwargs: Any) -> Consumer:
    options: dict[str, Any] = {
        "auto_offset_reset": "earliest",
        "fetch_max_wait": 0.01,
        "max_partition_fetch_bytes": 1,  # one batch per fetch
        "prefetch_bytes": 1,
        "retry_backoff": 0.001,
        "retry_backoff_max": 0.01,
        "request_timeout": 5.0,
    }
    options.update(kwargs)
    return Consumer(broker.address, **options)


async def take(c: Consumer, until: int) -> tuple[list[int], TidelogError | None]:
    """Offsets handed out until offset ``until - 1`` arrives or ``getmany()`` raises."""
    got: list[int] = []
    last = time.monotonic()
    while not got or got[-1] < until - 1:
        try:
            batch = await c.getmany(timeout=0.2)
        except TidelogError as exc:
            return got, exc
        for records in batch.values():
            for record in records:
                assert record.value == f"value-{record.offset}".encode()  # never corrupt
                got.append(record.offset)
        if batch:
            last = time.monotonic()
        assert time.monotonic() - last < STUCK_AFTER, f"stuck after {got[-1:]}"
    return got, None


def once_each_in_order(got: list[int]) -> bool:
    return all(b > a for a, b in pairwise(got))


def name(code: int) -> str:
    try:
        return ErrorCode(code).name
    except ValueError:
        return f"code {code}"


@pytest.mark.parametrize("code", CODES, ids=name)
def test_no_fetch_error_code_rewinds_the_consumer_or_repeats_a_record(code: int) -> None:
    async def main() -> None:
        broker = FetchBroker(faults={30: Fault(code, next_offset=40)})
        async with serving(broker), consumer(broker) as c:
            c.assign([TP])
            got, error = await take(c, 100)
            assert once_each_in_order(got)
            retriable = code in ERRORS and ERRORS[ErrorCode(code)].retriable
            if retriable:
                assert (got, error) == (list(range(100)), None)
                return
            assert got == list(range(30))
            assert error is not None and "t[0]" in str(error)
            if code == UNKNOWN_CODE:
                assert isinstance(error, UnknownServerError)
            resume = 30
            if isinstance(error, UnreadableRangeError):
                assert (error.start_offset, error.next_offset) == (30, 40)
                resume = 40
            elif code != ErrorCode.OFFSET_OUT_OF_RANGE:  # (whose position is being reset)
                assert await c.position(TP) == 30
            # The error repeats until the application chooses where to go on.
            with pytest.raises(type(error)):
                await c.getmany(timeout=0.01)
            c.seek(TP, resume)
            more, again = await take(c, 100)
            assert (more, again) == (list(range(resume, 100)), None)

    run(main())


def test_out_of_range_inside_the_log_never_sends_the_consumer_back() -> None:
    """The broker of the issue answered OFFSET_OUT_OF_RANGE inside [log start, high
    watermark): resetting to "earliest" then handed out millions of records again."""

    async def main() -> None:
        broker = FetchBroker(faults={30: Fault(ErrorCode.OFFSET_OUT_OF_RANGE, times=10**9)})
        async with serving(broker), consumer(broker) as c:
            c.assign([TP])
            got, error = await take(c, 100)
            assert got == list(range(30))
            assert isinstance(error, OffsetOutOfRangeError)
            assert "would move this consumer back to 0" in error.message
            offsets = [offset for offset, _ in broker.fetched]
            assert offsets == sorted(offsets)  # no fetch ever went back

    run(main())


def test_out_of_range_resets_forwards_as_configured() -> None:
    async def main() -> None:
        broker = FetchBroker(faults={30: Fault(ErrorCode.OFFSET_OUT_OF_RANGE)})
        async with serving(broker), consumer(broker, auto_offset_reset="latest") as c:
            c.assign([TP])
            await c.seek_to_beginning(TP)
            got, error = await take(c, 30)
            assert (got, error) == (list(range(30)), None)
            while (await c.position(TP)) < 100:  # the reset to "latest" lands at the end
                await c.getmany(timeout=0.05)
            assert await c.getmany(timeout=0.01) == {}

    run(main())


@pytest.mark.parametrize("code", [ErrorCode.DAMAGED_RANGE, ErrorCode.MISSING_RANGE])
def test_an_unreadable_range_is_skipped_only_by_choice(
    code: ErrorCode, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        broker = FetchBroker(faults={30: Fault(code, next_offset=40)})
        async with serving(broker), consumer(broker, skip_unreadable=True) as c:
            c.assign([TP])
            got, error = await take(c, 100)
            assert (got, error) == (list(range(30)) + list(range(40, 100)), None)

    caplog.set_level(logging.WARNING, logger="tidelog.client")
    run(main())
    assert any("skipping offsets [30, 40)" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("on_verify", "expected"),
    [("intact", None), ("damaged", DamagedRangeError), ("corrupt", CorruptBatchError)],
)
def test_a_batch_that_fails_its_crc_is_checked_by_the_broker_and_never_handed_out(
    on_verify: str, expected: type[Exception] | None
) -> None:
    async def main() -> None:
        broker = FetchBroker(corrupt={30: 1}, on_verify=on_verify)
        async with serving(broker), consumer(broker) as c:
            c.assign([TP])
            got, error = await take(c, 100)
            assert broker.fetched.count((30, True)) == 1  # asked to check, once
            if expected is None:
                assert (got, error) == (list(range(100)), None)
                return
            assert got == list(range(30))
            assert isinstance(error, expected)
            if isinstance(error, DamagedRangeError):
                assert error.next_offset == 40
            else:
                assert "found it intact" in str(error)

    run(main())


def test_a_missing_range_error_names_the_partition_and_the_offsets() -> None:
    async def main() -> None:
        broker = FetchBroker(faults={30: Fault(ErrorCode.MISSING_RANGE, next_offset=70)})
        async with serving(broker), consumer(broker) as c:
            c.assign([TP])
            _, error = await take(c, 100)
            assert isinstance(error, MissingRangeError)
            assert (error.topic, error.partition) == ("t", 0)
            assert (error.start_offset, error.next_offset) == (30, 70)
            assert "seek(tp, error.next_offset)" in str(error)

    run(main())


def test_a_batch_whose_base_offset_does_not_follow_on_is_checked_and_never_handed_out() -> None:
    async def main() -> None:
        broker = FetchBroker(misnumbered={30: 1})
        async with serving(broker), consumer(broker) as c:
            c.assign([TP])
            got, error = await take(c, 100)
            assert (got, error) == (list(range(100)), None)  # none handed out at 1040..
            assert broker.fetched.count((40, True)) == 1  # the broker was asked to check it

    run(main())
