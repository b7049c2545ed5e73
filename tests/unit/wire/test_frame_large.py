"""FrameDecoder and large frames: one that arrives in pieces is received into a buffer of its
own size, and the stream around it decodes the same however it is cut."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidelog.wire import FrameDecoder, encode_frame
from tidelog.wire.errors import ChecksumMismatchError, TruncatedFrameError

from .strategies import PROPERTY, feed_in_chunks

LARGE = 200_000  # data bytes: above the size a decoder hands over without copying


def frame(correlation_id: int, data_size: int) -> bytes:
    data = bytes([correlation_id % 251]) * data_size
    return encode_frame(
        api_key=1, api_version=0, flags=0, correlation_id=correlation_id, meta=b"\x80", data=[data]
    )


STREAM = b"".join(frame(i, size) for i, size in enumerate([10, LARGE, 5, LARGE + 7, 0, LARGE]))


def expected() -> list[tuple[int, bytes]]:
    decoder = FrameDecoder()
    decoder.feed(STREAM)
    return [(f.header.correlation_id, bytes(f.data)) for f in decoder]


@PROPERTY
@given(st.lists(st.integers(0, len(STREAM)), max_size=40).map(sorted))
def test_a_stream_with_large_frames_decodes_the_same_however_it_is_cut(cuts: list[int]) -> None:
    decoder = FrameDecoder()
    frames = feed_in_chunks(STREAM, cuts, decoder)
    assert [(f.header.correlation_id, bytes(f.data)) for f in frames] == expected()
    assert decoder.buffered == 0 and decoder.pending_frame_size == 0
    decoder.close()


def test_a_large_frame_in_pieces_costs_its_size_and_is_handed_over_whole() -> None:
    one = frame(1, LARGE)
    decoder = FrameDecoder()
    decoder.feed(one[:1000])
    assert decoder.next_frame() is None
    assert decoder.pending_frame_size == len(one)
    assert decoder._frame is None  # not yet: its owner may budget the size before reading on
    decoder.feed(one[1000:2000])
    held = decoder._frame  # the buffer of the frame's size, allocated once
    assert held is not None and len(held) == len(one)
    for start in range(2000, len(one) - 1, 65536):
        decoder.feed(one[start : min(start + 65536, len(one) - 1)])
        assert decoder.next_frame() is None and decoder._frame is held
    assert decoder.buffered == len(one) - 1
    decoder.feed(one[-1:] + frame(2, 3))  # the next frame goes to the stream buffer
    first, second = decoder.next_frame(), decoder.next_frame()
    assert first is not None and first.data is held and bytes(first.data) == one[-LARGE:]
    assert second is not None and second.header.correlation_id == 2
    assert decoder.next_frame() is None and decoder.buffered == 0


def test_a_large_frame_with_a_bad_checksum_is_refused_once_whole() -> None:
    bad = bytearray(frame(1, LARGE))
    bad[24] ^= 0xFF  # the metadata byte, covered by the CRC
    decoder = FrameDecoder()
    decoder.feed(bytes(bad[:100]))
    assert decoder.next_frame() is None
    decoder.feed(bytes(bad[100:]))
    with pytest.raises(ChecksumMismatchError):
        decoder.next_frame()


def test_a_stream_ending_inside_a_large_frame_is_truncated() -> None:
    decoder = FrameDecoder()
    decoder.feed(frame(1, LARGE)[:-1])
    assert decoder.next_frame() is None
    with pytest.raises(TruncatedFrameError):
        decoder.close()
