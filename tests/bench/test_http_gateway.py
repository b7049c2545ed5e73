"""bench/http_gateway.py runs end to end with tiny parameters and reports its four ways (it
checks that the WebSocket stream and the consumer get every offset in order). Never asserts
on timings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "http_gateway.py"


def test_the_http_bench_reports_every_way() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--records", "3000", "--runs", "1", "--batch", "100"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for way in ("produce: Python client", "produce: HTTP batches", "consume: WebSocket"):
        assert way in done.stdout, done.stdout
    assert "consume: Python client" in done.stdout
