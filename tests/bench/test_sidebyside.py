"""The side-by-side bench runs and reports (tiny parameters). Never asserts on timings.

The tidelog side always runs; a peer's scenarios are skipped when its server binary or its
Python client is not installed (this suite installs nothing).
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import sys

import pytest

BENCH = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "bench")
sys.path.insert(0, os.path.abspath(BENCH))

import limits  # noqa: E402
import peers  # noqa: E402
import report  # noqa: E402
import scenarios  # noqa: E402
import sidebyside  # noqa: E402
from openloop import Recorder  # noqa: E402


def test_machine_limits_report_positive_figures() -> None:
    assert limits.loopback_mb_s(2) > 0
    assert limits.disk_write_mb_s(2) > 0
    assert set(limits.fsync_latency_ms(3)) == {"p50", "p99", "max", "mean"}


def test_recorder_percentiles_are_ordered() -> None:
    rec = Recorder()
    for us in range(1, 1001):
        rec.record(us)
    s = rec.summary()
    assert s["p50"] <= s["p99"] <= s["p99.9"] <= s["max"]
    assert rec.count == 1000


def test_tidelog_scenarios_run_and_report(tmp_path: pathlib.Path) -> None:
    plan = scenarios.Plan(**{**scenarios.TINY.__dict__, "peers": []})
    bench = asyncio.run(sidebyside.run(plan, use_peers=False))
    sections = {r.section for r in bench.results}
    assert sections == {"limits", "produce", "consume", "latency", "clients", "soak"}
    for r in bench.results:
        assert r.runs or r.latency, r.line()
    verdicts = report.judge(bench.results)
    assert any("not measured" in v for v in verdicts)  # no peers in this run
    doc = tmp_path / "B.md"
    doc.write_text("# Benchmarks\n\nkept\n")
    for _ in range(2):  # the second write replaces the section instead of appending again
        report.write_section(str(doc), report.render_markdown(bench, verdicts, "cmd", []))
    text = doc.read_text()
    assert text.count(report.SECTION_TITLE) == 1
    assert "kept" in text
    assert "| produce | tidelog |" in text


@pytest.mark.parametrize("peer", ["redis", "nats"])
def test_peer_scenarios_run_and_report(peer: str) -> None:
    reason = peers.available(peer)
    if reason is not None:
        pytest.skip(reason)
    plan = scenarios.Plan(
        **{**scenarios.TINY.__dict__, "peers": [peer], "sizes": [100], "latency_rates": [200]}
    )
    bench = sidebyside.Bench(plan, use_peers=True)

    async def go() -> None:
        await (bench.redis() if peer == "redis" else bench.nats())

    asyncio.run(go())
    systems = {r.system for r in bench.results}
    assert systems == {peer}
    assert {r.section for r in bench.results} == {"produce", "consume", "latency"}
    assert all(r.runs or r.latency for r in bench.results)


def _latency(
    system: str, key: str, p50: float, p99: float, section: str = "latency"
) -> report.Result:
    return report.Result(section, system, key, "", "ms", [], [{"p50": p50, "p99": p99}], key=key)


def test_issue_24_latency_verdicts_check_the_bounds_and_redis() -> None:
    fast = [
        _latency("tidelog", "latency-1000", 0.15, 0.4),
        _latency("redis", "latency-1000", 0.16, 0.45),
        _latency("tidelog", "latency-10000", 0.3, 0.9),
        _latency("tidelog", "clients", 1.0, 4.0, section="clients"),
    ]
    assert [v.endswith(": met") for v in report._latency_goals(fast)] == [True, True, True]
    slower_than_redis = [_latency("redis", "latency-1000", 0.1, 0.45), *fast[::2], fast[3]]
    one, ten, many = report._latency_goals(slower_than_redis)
    assert one.endswith("NOT met") and "Redis 0.10 / 0.45 ms" in one
    assert ten.endswith(": met") and many.endswith(": met")
    over = [_latency("tidelog", "latency-10000", 0.3, 1.2), _latency("x", "c", 1, 6, "clients")]
    assert report._latency_goals(over) == [
        "latency at 1,000 records/s (issue 24): not measured",
        "latency at 10,000 records/s (issue 24): p99 1.20 ms (goal <= 1): NOT met",
        "many clients (c): p50 1.00 ms, p99 6.00 ms (goal <= 5): NOT met",
    ]
