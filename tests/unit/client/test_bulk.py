"""send_many()'s column helpers: sizes, cuts into batches, partitions."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidelog.client.accumulator import record_size
from tidelog.client.bulk import cut, largest, partitions_of, sizes, split
from tidelog.client.partitioner import partition_for_key

KEYS = st.none() | st.binary(max_size=30)


@given(records=st.lists(st.tuples(KEYS, KEYS), min_size=1), keyless=st.booleans())
def test_sizes_are_running_totals_of_record_size(
    records: list[tuple[bytes | None, bytes | None]], keyless: bool
) -> None:
    keys = None if keyless else [k for k, _ in records]
    values = [v for _, v in records]
    each = [record_size(None if keys is None else keys[i], v, None) for i, v in enumerate(values)]

    ends = sizes(values, keys)

    assert ends == [sum(each[: i + 1]) for i in range(len(each))]
    assert largest(ends) == (each.index(max(each)), max(each))


@given(
    lengths=st.lists(st.integers(1, 100), min_size=1),
    start=st.integers(0, 50),
    room=st.integers(0, 400),
)
def test_cut_takes_the_longest_run_that_fits_and_never_nothing(
    lengths: list[int], start: int, room: int
) -> None:
    start = min(start, len(lengths) - 1)
    ends = [sum(lengths[: i + 1]) for i in range(len(lengths))]

    stop = cut(ends, start, room)

    assert start < stop <= len(lengths)
    assert stop == start + 1 or sum(lengths[start:stop]) <= room
    assert stop == len(lengths) or sum(lengths[start : stop + 1]) > room


def test_partitions_follow_send_and_split_keeps_the_order() -> None:
    keys = [b"a", None, b"b", b"c", None, b"a"]
    values = [b"%d" % i for i in range(6)]
    parts = (0, 1, 2, 3)

    def pick(k: bytes | None) -> int:
        return 2 if k is None else partition_for_key(k, 4)

    chosen = partitions_of("t", keys, 6, None, parts, parts, None, lambda: 2)
    assert chosen == [pick(k) for k in keys]
    assert partitions_of("t", None, 6, None, parts, parts, None, lambda: 2) == -1
    assert partitions_of("t", keys, 6, 3, parts, parts, None, lambda: 2) == 3
    assert partitions_of("t", [b"a"] * 6, 6, None, (0,), (0,), None, lambda: 0) == 0
    assert partitions_of("t", keys, 6, None, parts, parts, lambda k, a, b: 1, lambda: 2) == [1] * 6
    with pytest.raises(ValueError, match="no partition 9"):
        partitions_of("t", keys, 6, None, parts, parts, lambda k, a, b: 9, lambda: 2)
    assert isinstance(chosen, list)
    groups = split(chosen, values, keys)
    for p, (positions, vs, ks) in groups.items():
        assert positions == [i for i in range(6) if chosen[i] == p]
        assert vs == [values[i] for i in positions]
        assert ks == [keys[i] for i in positions]
