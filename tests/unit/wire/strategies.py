"""Hypothesis strategies and small helpers shared by the tidelog.wire tests."""

from __future__ import annotations

import contextlib
import dataclasses
import types
import typing
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from crc32c import crc32c
from hypothesis import settings
from hypothesis import strategies as st

from tidelog.wire import (
    API_SPECS,
    Compression,
    Frame,
    FrameDecoder,
    RecordBatch,
    decode_request,
    decode_response,
    iter_batches,
)
from tidelog.wire.errors import TidelogError
from tidelog.wire.layouts import BATCH_CRC_OFFSET, BATCH_CRC_START
from tidelog.wire.records import Buffer

# Hypothesis' default 200 ms deadline is a timing assertion; this machine is slow and shared.
PROPERTY = settings(deadline=None)
QUICK = settings(deadline=None, max_examples=40)

SMALL_MAX_FRAME = 1024 * 1024

# --- messages -------------------------------------------------------------------------------

# msgpack integers are int64 or uint64: the widest range a message field can carry.
WIRE_INTS = st.integers(-(2**63), 2**64 - 1)
TEXT = st.text(max_size=12)

REQUEST_CLASSES: tuple[type, ...] = tuple(spec.request for spec in API_SPECS.values())
RESPONSE_CLASSES: tuple[type, ...] = tuple(spec.response for spec in API_SPECS.values())


def for_type(tp: Any) -> st.SearchStrategy[Any]:
    """A strategy for one message field type: ints within msgpack range, text, tuples, maps,
    optionals and nested message dataclasses."""
    if tp is int:
        return WIRE_INTS
    if tp is str:
        return TEXT
    if tp is bool:
        return st.booleans()
    if tp is bytes:
        return st.binary(max_size=12)
    if tp is type(None):
        return st.none()
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (types.UnionType, typing.Union):
        return st.one_of([for_type(a) for a in args])
    if origin is tuple and Ellipsis not in args:
        return st.tuples(*(for_type(a) for a in args))
    if origin is tuple:
        assert len(args) == 2, tp
        assert args[1] is Ellipsis, tp
        return st.lists(for_type(args[0]), max_size=3).map(tuple)
    if origin is dict:
        return st.dictionaries(for_type(args[0]), for_type(args[1]), max_size=3)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return message_strategy(tp)
    raise NotImplementedError(f"no strategy for {tp!r}")


_MESSAGE_STRATEGIES: dict[type, st.SearchStrategy[Any]] = {}


def message_strategy(cls: type) -> st.SearchStrategy[Any]:
    """Instances of a message dataclass with every field drawn (defaults included)."""
    if cls not in _MESSAGE_STRATEGIES:
        hints = typing.get_type_hints(cls)
        fields = {f.name: for_type(hints[f.name]) for f in dataclasses.fields(cls)}
        _MESSAGE_STRATEGIES[cls] = st.builds(cls, **fields)
    return _MESSAGE_STRATEGIES[cls]


# --- records ----------------------------------------------------------------------------------

COMPRESSIONS = st.sampled_from(list(Compression))
PAYLOADS = st.none() | st.binary(max_size=40)
HEADER_VALUES = st.none() | st.binary(max_size=10)
HEADER_KEYS = st.text(max_size=8)
# Span between any two timestamps stays within int64, which is what a batch can hold.
TIMESTAMPS = st.integers(-(2**62), 2**62 - 1)
HEADER_INPUTS = (
    st.none()
    | st.dictionaries(HEADER_KEYS, HEADER_VALUES, max_size=3)
    | st.lists(st.tuples(HEADER_KEYS, HEADER_VALUES), max_size=3)
)


@st.composite
def record_inputs(draw: st.DrawFn) -> dict[str, Any]:
    """Keyword arguments for one ``RecordBatchBuilder.append`` call."""
    return {
        "value": draw(PAYLOADS),
        "key": draw(PAYLOADS),
        "headers": draw(HEADER_INPUTS),
        "timestamp": draw(TIMESTAMPS),
    }


RECORD_LISTS = st.lists(record_inputs(), min_size=1, max_size=8)


def expected_headers(headers: Any) -> tuple[tuple[str, bytes | None], ...]:
    if not headers:
        return ()
    items = headers.items() if isinstance(headers, dict) else headers
    return tuple((k, v) for k, v in items)


def reseal_batch(buf: bytearray) -> bytearray:
    """Recompute a batch's CRC after a test patched bytes it covers, so the check under test
    is reached instead of the checksum."""
    crc = crc32c(bytes(buf[BATCH_CRC_START:]))
    buf[BATCH_CRC_OFFSET:BATCH_CRC_START] = crc.to_bytes(4, "big")
    return buf


# --- frames -----------------------------------------------------------------------------------


def join(parts: Iterable[Buffer]) -> bytes:
    return b"".join(bytes(p) for p in parts)


def feed_in_chunks(data: bytes, cuts: Sequence[int], decoder: FrameDecoder) -> list[Frame]:
    """Feed ``data`` split at ``cuts`` (sorted positions), collecting frames after each chunk."""
    frames: list[Frame] = []
    start = 0
    for cut in [*cuts, len(data)]:
        decoder.feed(data[start:cut])
        frames.extend(decoder)
        start = cut
    return frames


def decode_all(data: bytes, cuts: Sequence[int] = (), **kwargs: Any) -> list[Frame]:
    """Every frame in ``data`` fed in chunks, then ``close()``."""
    decoder = FrameDecoder(**kwargs)
    frames = feed_in_chunks(data, cuts, decoder)
    decoder.close()
    return frames


TOLERATED_BY_DECODERS: tuple[type[Exception], ...] = (TidelogError,)


def exercise_untrusted(data: bytes) -> None:
    """Push untrusted bytes through every reading layer; only TidelogError may escape each."""
    for frames in (_frames_of(data, ()), _frames_of(data, range(1, len(data)))):
        for frame in frames:
            _swallow(decode_request, frame, TOLERATED_BY_DECODERS)
            _swallow(decode_response, frame, TOLERATED_BY_DECODERS)
            _swallow(lambda b: list(iter_batches(b)), frame.data)
    _swallow(lambda b: RecordBatch.parse(b, verify_records=True).records(), data)
    _swallow(lambda b: [x.records() for x in iter_batches(b)], data)


def _frames_of(data: bytes, cuts: Iterable[int]) -> list[Frame]:
    """The frames decoded before the stream ended or the decoder failed."""
    decoder = FrameDecoder(max_frame_size=SMALL_MAX_FRAME)
    frames: list[Frame] = []
    start = 0
    try:
        for cut in [*cuts, len(data)]:
            decoder.feed(data[start:cut])
            frames.extend(decoder)
            start = cut
        decoder.close()
    except TidelogError:
        pass
    return frames


def _swallow(
    fn: Callable[[Any], object], arg: Any, tolerated: tuple[type[Exception], ...] = (TidelogError,)
) -> None:
    with contextlib.suppress(*tolerated):
        fn(arg)
