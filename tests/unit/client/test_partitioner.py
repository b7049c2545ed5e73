"""The key hash is a cross-client contract: these golden values must never change."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidelog.client.partitioner import (
    StickyPartitioner,
    choose_partition,
    key_hash,
    partition_for_key,
)

GOLDEN = [
    # key, crc32c(key) & 0x7FFFFFFF, partition of 12
    (b"", 0, 0),
    (b"a", 1104167728, 4),
    (b"key", 1084519789, 1),
    (b"user-42", 831595790, 2),
    (b"123456789", 1661375107, 7),  # CRC-32C check value 0xE3069283, masked
    ("héllo".encode(), 1877080873, 1),
]


@pytest.mark.parametrize(("key", "hashed", "of_12"), GOLDEN)
def test_key_hash_golden_values(key: bytes, hashed: int, of_12: int) -> None:
    assert key_hash(key) == hashed
    assert partition_for_key(key, 12) == of_12
    assert partition_for_key(key, 1) == 0


def test_key_hash_is_crc32c_check_value_masked() -> None:
    assert key_hash(b"123456789") == 0xE3069283 & 0x7FFFFFFF


@given(st.binary(max_size=64), st.integers(1, 1000))
def test_key_partition_in_range_and_stable(key: bytes, n: int) -> None:
    p = partition_for_key(key, n)
    assert 0 <= p < n
    assert p == partition_for_key(bytes(key), n) == key_hash(key) % n


def test_key_hash_spreads_keys_evenly() -> None:
    counts = Counter(partition_for_key(f"user-{i}".encode(), 8) for i in range(8000))
    assert set(counts) == set(range(8))
    assert min(counts.values()) > 800  # expected 1000 each


def test_partition_count_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least one partition"):
        partition_for_key(b"k", 0)


PARTS = (0, 1, 2, 3)


def test_explicit_partition_wins_and_is_checked() -> None:
    sticky = StickyPartitioner()
    assert choose_partition("t", b"key", 3, PARTS, PARTS, None, sticky) == (3, False)
    with pytest.raises(ValueError, match="no partition 4"):
        choose_partition("t", b"key", 4, PARTS, PARTS, None, sticky)
    with pytest.raises(ValueError, match="no partition -1"):
        choose_partition("t", None, -1, PARTS, PARTS, None, sticky)


def test_keyed_record_uses_the_hash() -> None:
    got = choose_partition("t", b"user-42", None, PARTS, PARTS, None, StickyPartitioner())
    assert got == (partition_for_key(b"user-42", 4), False)


def test_user_callable_gets_key_and_partitions() -> None:
    calls: list[tuple[bytes | None, tuple[int, ...], tuple[int, ...]]] = []

    def last(key: bytes | None, all_partitions: Sequence[int], available: Sequence[int]) -> int:
        calls.append((key, tuple(all_partitions), tuple(available)))
        return all_partitions[-1]

    got = choose_partition("t", b"k", None, PARTS, (1, 2), last, StickyPartitioner())
    assert got == (3, False)
    assert calls == [(b"k", PARTS, (1, 2))]


def test_user_callable_result_is_checked() -> None:
    with pytest.raises(ValueError, match="no partition 9"):
        choose_partition("t", None, None, PARTS, PARTS, lambda k, a, v: 9, StickyPartitioner())


def test_keyless_records_stick_until_the_batch_fills() -> None:
    sticky = StickyPartitioner(rand=lambda n: 1)
    picks = [choose_partition("t", None, None, PARTS, PARTS, None, sticky) for _ in range(5)]
    assert picks == [(1, True)] * 5
    assert sticky.next("t", PARTS, PARTS) == 2
    assert sticky.partition("t", PARTS, PARTS) == 2


def test_sticky_round_robin_wraps_and_prefers_available() -> None:
    sticky = StickyPartitioner(rand=lambda n: 0)
    assert sticky.partition("t", PARTS, (1, 3)) == 1
    assert [sticky.next("t", PARTS, (1, 3)) for _ in range(3)] == [3, 1, 3]
    # No partition has a leader: fall back to all of them.
    assert [sticky.next("u", PARTS, ()) for _ in range(5)] == [0, 1, 2, 3, 0]


def test_sticky_round_robin_covers_every_partition_evenly() -> None:
    sticky = StickyPartitioner()
    counts = Counter(sticky.next("t", PARTS, PARTS) for _ in range(400))
    assert counts == dict.fromkeys(PARTS, 100)


def test_sticky_forget_chooses_again() -> None:
    sticky = StickyPartitioner(rand=lambda n: n - 1)
    assert sticky.partition("t", PARTS, PARTS) == 3
    sticky.forget()
    assert sticky.partition("t", (0, 1), (0, 1)) == 1
