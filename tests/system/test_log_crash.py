"""Crash test with real processes: a worker appends with flush-before-ack and reports each
acknowledged batch; it is SIGKILLed at a random moment; after each reopen every acknowledged
batch is present and intact, the log ends on a batch boundary, and appends continue at the
right offset.

``make test`` runs 20 rounds; ``TIDELOG_SOAK_ROUNDS=300`` runs more (``make soak``).
``TIDELOG_CRASH_SEED`` replays a run (the seed is in every failure message).
"""

from __future__ import annotations

import os
import random
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tidelog.server.log import LogManager
from tidelog.wire.records import iter_batches

from .log_crash_worker import TP, batch_for, seq_of

ROUNDS = int(os.environ.get("TIDELOG_SOAK_ROUNDS", "20"))
SEED = int(os.environ.get("TIDELOG_CRASH_SEED", str(random.randrange(2**32))))
WORKER = Path(__file__).with_name("log_crash_worker.py")
WRITERS = 8
LINE_TIMEOUT = 30.0
"""Seconds to wait for the worker's next line before failing (a bound, not a sleep)."""


class Worker:
    """A worker process and the lines it printed."""

    def __init__(self, data_dir: Path, stderr: Path) -> None:
        self._stderr = stderr.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, str(WORKER), str(data_dir), str(WRITERS)],
            stdout=subprocess.PIPE,
            stderr=self._stderr,
        )
        assert self.proc.stdout is not None
        os.set_blocking(self.proc.stdout.fileno(), False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self.proc.stdout, selectors.EVENT_READ)
        self._buffer = b""

    def lines(self, *, until_eof: bool = False) -> list[str]:
        """The next complete lines: wait for at least one (or, after a kill, for EOF)."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + LINE_TIMEOUT
        while True:
            if not self._selector.select(timeout=max(deadline - time.monotonic(), 0)):
                raise AssertionError(f"worker {self.proc.pid} printed nothing for a while")
            chunk = self.proc.stdout.read()
            if chunk:
                self._buffer += chunk
            if b"\n" in self._buffer and not until_eof:
                break
            if not chunk:  # EOF: the process is gone; a partial last line is dropped
                break
        *complete, self._buffer = self._buffer.split(b"\n")
        return [line.decode() for line in complete]

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=LINE_TIMEOUT)

    def close(self) -> None:
        self.kill()
        self._selector.close()
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        self._stderr.close()


def expected_bytes(seq: int, base_offset: int) -> bytes:
    stored = bytearray(batch_for(seq))
    stored[0:8] = base_offset.to_bytes(8, "big", signed=True)
    stored[12:16] = (-1).to_bytes(4, "big", signed=True)
    return bytes(stored)


def verify(data_dir: Path, acked: dict[int, tuple[int, int]], context: str) -> int:
    """Reopen after the kill; check the log; append one more batch; close cleanly. Returns
    the number of batches in the log."""
    with LogManager(data_dir).open() as manager:
        log = manager.get_log(TP)
        offset, seq = 0, 0
        while offset < log.log_end_offset:
            data = log.read(offset, 1 << 20).records
            for batch in iter_batches(data):  # checks each CRC
                assert batch.base_offset == offset, context
                assert seq_of(batch) == seq, context
                assert bytes(batch.buffer) == expected_bytes(seq, offset), context
                if seq in acked:
                    assert acked[seq] == (batch.base_offset, batch.next_offset), context
                offset, seq = batch.next_offset, seq + 1
        missing = sorted(s for s in acked if s >= seq)
        assert not missing, f"{context}: acknowledged batches lost: {missing[:10]}"
        # Every segment file ends on a batch boundary.
        directory = Path(log.directory)
        for path in sorted(directory.glob("*.log")):
            consumed = sum(b.size for b in iter_batches(path.read_bytes()))
            assert consumed == path.stat().st_size, f"{context}: {path.name} is torn"
        # Appends continue at the right offset.
        info = log.append(batch_for(seq))
        assert info.base_offset == offset, context
        acked[seq] = (info.base_offset, info.next_offset)
        return seq + 1


@pytest.mark.slow
@pytest.mark.timeout(max(300, ROUNDS * 10))
def test_acknowledged_batches_survive_sigkill(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    data_dir = tmp_path / "data"
    acked: dict[int, tuple[int, int]] = {}
    batches = 0
    for round_ in range(ROUNDS):
        context = f"seed {SEED}, round {round_}"
        target = rng.choice([0, rng.randint(1, 10), rng.randint(10, 120)])
        worker = Worker(data_dir, tmp_path / f"worker-{round_}.err")
        try:
            seen = 0
            ready = False
            while not ready or seen < target:
                for line in worker.lines():
                    kind, *fields = line.split()
                    if kind == "ready":
                        ready = True
                        assert int(fields[1]) == batches, context
                    elif kind == "ack":
                        seq, base, end = map(int, fields)
                        acked[seq] = (base, end)
                        seen += 1
            worker.kill()
            for line in worker.lines(until_eof=True):  # acked before the kill landed
                kind, *fields = line.split()
                if kind == "ack":
                    seq, base, end = map(int, fields)
                    acked[seq] = (base, end)
            assert worker.proc.returncode == -signal.SIGKILL, context
        finally:
            worker.close()
        batches = verify(data_dir, acked, context)
        assert batches > max(acked, default=-1), context
    assert len(acked) >= ROUNDS
