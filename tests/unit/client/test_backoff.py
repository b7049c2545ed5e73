from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidelog.client.backoff import Backoff

backoffs = st.builds(
    lambda initial, extra, multiplier, jitter: Backoff(
        initial, initial + extra, multiplier, jitter
    ),
    st.floats(0, 10),
    st.floats(0, 100),
    st.floats(1, 10),
    st.floats(0, 1),
)


@given(backoffs, st.integers(0, 10_000), st.floats(0, 1, exclude_max=True))
def test_delay_stays_within_bounds(b: Backoff, attempt: int, r: float) -> None:
    delay = b.delay(attempt, lambda: r)
    try:
        raw = min(b.maximum, b.initial * b.multiplier**attempt)
    except OverflowError:
        raw = b.maximum
    assert 0 <= delay <= b.maximum
    assert raw * (1 - b.jitter) - 1e-9 <= delay <= raw * (1 + b.jitter) + 1e-9


@given(st.integers(0, 60))
def test_without_jitter_the_delay_doubles_up_to_the_cap(attempt: int) -> None:
    b = Backoff(0.1, 5.0, 2.0, 0.0)
    assert b.delay(attempt) == pytest.approx(min(5.0, 0.1 * 2**attempt))
    assert b.delay(attempt + 1) >= b.delay(attempt)


def test_jitter_uses_the_random_source() -> None:
    b = Backoff(1.0, 10.0, 2.0, 0.2)
    assert b.delay(0, lambda: 0.0) == pytest.approx(0.8)
    assert b.delay(0, lambda: 0.5) == pytest.approx(1.0)
    assert b.delay(1, lambda: 0.999999) == pytest.approx(2.4, rel=1e-5)


def test_huge_attempts_do_not_overflow() -> None:
    assert Backoff(0.1, 3.0, 10.0, 0.0).delay(10**6) == 3.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"initial": -1.0},
        {"initial": 2.0, "maximum": 1.0},
        {"multiplier": 0.5},
        {"jitter": 1.5},
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="backoff"):
        Backoff(**kwargs)
