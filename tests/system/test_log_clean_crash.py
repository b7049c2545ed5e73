"""The cleaner SIGKILLed at random points (any read or write of a cleaning, or its swap):
after each kill the log reopens with nothing lost and nothing half-written served -- every
key's latest record at its original offset, every record one that was appended, no leftover
``.cleaned`` or ``.swap`` file, no damaged or missing range.

``make test`` runs a few rounds; ``TIDELOG_CLEAN_SOAK_ROUNDS=100`` runs more (``make soak``).
``TIDELOG_CRASH_SEED`` replays a run (the seed is in every failure message).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tidelog.server.log import PartitionLog
from tidelog.wire.records import RecordBatchBuilder, iter_batches

from .log_clean_worker import CONFIG

ROUNDS = int(os.environ.get("TIDELOG_CLEAN_SOAK_ROUNDS", "4"))
SEED = int(os.environ.get("TIDELOG_CRASH_SEED", str(random.randrange(2**32))))
WORKER = Path(__file__).with_name("log_clean_worker.py")
KEYS = 300
PER_ROUND = 4000
LINE_TIMEOUT = 60.0


def append_round(
    directory: str, rng: random.Random, appended: dict[int, tuple[bytes, bytes | None]]
) -> None:
    log = PartitionLog.open(directory, CONFIG)
    for _ in range(PER_ROUND // 40):
        builder = RecordBatchBuilder()
        pairs = []
        for _ in range(40):
            key = b"key-%d" % rng.randrange(KEYS)
            value = None if rng.random() < 0.05 else b"value-%d" % rng.randrange(10**9)
            builder.append(value, key=key)
            pairs.append((key, value))
        first = log.append(builder.build()).base_offset
        for i, pair in enumerate(pairs):
            appended[first + i] = pair
    log.roll()
    log.close()


def verify(directory: str, appended: dict[int, tuple[bytes, bytes | None]], context: str) -> None:
    log = PartitionLog.open(directory, CONFIG)
    try:
        assert log.load_report.damaged == () and log.load_report.missing == (), context
        leftovers = [n for n in os.listdir(directory) if n.endswith((".cleaned", ".swap"))]
        assert not leftovers, f"{context}: {leftovers}"
        found: dict[int, tuple[bytes | None, bytes | None]] = {}
        offset = 0
        while offset < log.log_end_offset:
            read = log.read(offset, 1 << 20)
            for batch in iter_batches(read.records):
                for record in batch.records():
                    found[record.offset] = (record.key, record.value)
            offset = read.next_offset
        for record_offset, record in found.items():
            assert appended.get(record_offset) == record, f"{context}: offset {record_offset}"
        latest = {key: o for o, (key, _) in sorted(appended.items())}
        lost = [(k, o) for k, o in latest.items() if o not in found]
        assert not lost, f"{context}: latest records lost: {lost[:5]}"
    finally:
        log.close()


@pytest.mark.slow
@pytest.mark.timeout(max(120, ROUNDS * 20))
def test_a_cleaning_killed_anywhere_loses_nothing(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    directory = str(tmp_path / "changelog-0")
    appended: dict[int, tuple[bytes, bytes | None]] = {}
    for round_ in range(ROUNDS):
        context = f"seed {SEED}, round {round_}"
        append_round(directory, rng, appended)
        # Kill at a random read or write, as the swap starts, or not at all.
        mode = rng.choice(["io", "io", "swap", "finish"])
        target = rng.randint(1, 250) if mode == "io" else 10**9
        err = (tmp_path / f"worker-{round_}.err").open("wb")
        proc = subprocess.Popen(
            [sys.executable, str(WORKER), directory], stdout=subprocess.PIPE, stderr=err
        )
        try:
            assert proc.stdout is not None
            lines = 0
            while lines < target:
                line = proc.stdout.readline()
                if not line or line.startswith(b"idle"):
                    break
                if mode == "swap" and line.startswith(b"swapping"):
                    break
                lines += 1
            proc.kill()
            proc.wait(timeout=LINE_TIMEOUT)
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=LINE_TIMEOUT)
            err.close()
            if proc.stdout is not None:
                proc.stdout.close()
        verify(directory, appended, context)
