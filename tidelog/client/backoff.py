"""Exponential backoff with jitter, as pure arithmetic (the caller owns the clock and the
waiting).

Attempt ``n`` (0 for the first retry) waits ``initial * multiplier**n``, capped at ``maximum``,
then scaled by a uniform random factor in ``[1 - jitter, 1 + jitter]`` and capped at
``maximum`` again, so that many clients failing together do not retry in lockstep.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delays in seconds. ``rand`` returns a float in ``[0, 1)`` (injected by tests)."""

    initial: float = 0.1
    maximum: float = 1.0
    multiplier: float = 2.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if self.initial < 0 or self.maximum < self.initial:
            raise ValueError("backoff needs 0 <= initial <= maximum")
        if self.multiplier < 1:
            raise ValueError("backoff multiplier must be at least 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("backoff jitter must be between 0 and 1")

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based)."""
        try:
            raw = min(self.maximum, self.initial * self.multiplier ** max(attempt, 0))
        except OverflowError:
            raw = self.maximum
        factor = 1 - self.jitter + 2 * self.jitter * rand()
        return min(self.maximum, raw * factor)


def earlier(a: float | None, b: float) -> float:
    """The sooner of two delays, ``None`` standing for "no deadline yet"."""
    return b if a is None or b < a else a
