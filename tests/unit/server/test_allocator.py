"""The broker process's allocator thresholds: large buffers freed and allocated again reuse the
heap's pages instead of faulting in fresh ones. Each check runs in a process of its own: the
setting is process-wide."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

ROUNDS = 50
PAGES = ROUNDS * 4 * 256  # four 1 MiB buffers per round, 4 KiB pages

SCRIPT = f"""
import resource, sys
from tidelog.server.allocator import keep_large_allocations

print(keep_large_allocations())

def rounds(n):
    for _ in range(n):
        held = [bytearray(1 << 20) for _ in range(4)]  # like frames in flight, then freed
        del held

rounds(3)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
rounds({ROUNDS})
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def run(env: dict[str, str] | None = None) -> tuple[bool, int]:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split()
    return out[0] == "True", int(out[1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's allocator only")
def test_freed_large_buffers_are_reused_without_page_faults() -> None:
    tuned, faults = run()
    assert tuned
    assert faults < PAGES // 20  # without the thresholds: about one fault per page


def test_an_operators_own_malloc_settings_are_kept() -> None:
    tuned, _ = run({"MALLOC_TRIM_THRESHOLD_": str(1 << 30)})
    assert not tuned
