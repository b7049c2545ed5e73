"""Results of the side-by-side bench: one :class:`Result` per row, the judged ratios of issue
7, a rich table for the terminal and a Markdown section for docs/BENCHMARKS.md."""

from __future__ import annotations

import os
import re
import statistics
from dataclasses import dataclass, field
from typing import Any

from harness import machine, spread
from rich.table import Table

PERCENTILES = ("p50", "p99", "p99.9", "max")
START = "<!-- side-by-side:start -->"
END = "<!-- side-by-side:end -->"
SECTION_TITLE = "## Side by side with Redis Streams and NATS JetStream"


@dataclass
class Result:
    section: str  # limits | produce | consume | latency | clients | soak
    system: str  # machine | tidelog | redis | nats
    params: str
    durability: str
    unit: str
    runs: list[float]  # one figure per run (throughputs)
    latency: list[dict[str, float]] = field(default_factory=list)  # one summary per run
    key: str = ""  # rows with the same key are compared across systems
    size: int = 0
    note: str = ""

    def median(self) -> float:
        return statistics.median(self.runs) if self.runs else float("nan")

    def lat(self, q: str) -> float:
        return statistics.median(r[q] for r in self.latency) if self.latency else float("nan")

    def figure(self) -> str:
        if self.runs:
            text = f"{spread(self.runs)} {self.unit}"
            if self.size:
                text += f" = {spread([r * self.size / 1e6 for r in self.runs], ',.1f')} MB/s"
            return text
        return "  ".join(
            f"{q} {spread([r[q] for r in self.latency], ',.2f')}"
            for q in self.latency[0]
            if q in PERCENTILES
        ) + (" ms" if self.latency else "")

    def line(self) -> str:
        tail = f"  [{self.note}]" if self.note else ""
        return f"{self.section:8} {self.system:8} {self.params}: {self.figure()}{tail}"


def _find(results: list[Result], system: str, key: str) -> Result | None:
    return next((r for r in results if r.system == system and r.key == key), None)


def judge(results: list[Result]) -> list[str]:
    """The ratios issue 7 is judged by, one sentence each (goal, figure, verdict)."""
    out: list[str] = []
    rows = [
        ("produce 100 B at matching durability (acks=leader)", "produce-leader-100", 5.0),
        ("consume 100 B", "consume-100", 5.0),
        ("produce 100 B with fsync (acks=all)", "produce-all-100", 5.0),
    ]
    for title, key, goal in rows:
        mine = _find(results, "tidelog", key)
        for peer in ("redis", "nats"):
            theirs = _find(results, peer, key)
            if mine is None or theirs is None or not theirs.runs:
                out.append(f"{title}, tidelog vs {peer}: not measured")
                continue
            ratio = mine.median() / theirs.median()
            verdict = "met" if ratio >= goal else f"NOT met ({ratio / goal:.0%} of the goal)"
            out.append(f"{title}, tidelog vs {peer}: {ratio:.1f}x (goal >= {goal:.0f}x) {verdict}")
    mine = _find(results, "tidelog", "latency-10000")
    peers = [r for r in (_find(results, p, "latency-10000") for p in ("redis", "nats")) if r]
    if mine is None or not peers:
        out.append("latency p99 at 10,000 records/s: not measured")
    else:
        best = min(peers, key=lambda r: r.lat("p99"))
        ok = mine.lat("p99") <= best.lat("p99")
        out.append(
            f"latency p99 at 10,000 records/s: tidelog {mine.lat('p99'):.2f} ms vs best peer "
            f"({best.system}) {best.lat('p99'):.2f} ms: "
            + ("met" if ok else f"NOT met ({mine.lat('p99') / best.lat('p99'):.2f}x the peer's)")
        )
    out += _latency_goals(results)
    return out


LATENCY_GOALS = ((1_000, 0.2, 0.5, True), (10_000, None, 1.0, False))
"""Issue 24, goal 2: (records/s, p50 ms at most or None, p99 ms at most, also at or under
Redis), acks=leader, linger 0."""
MANY_CLIENTS_P99_MS = 5.0
"""Issue 24, goal 3: p99 end to end with 100 producers + 100 consumers at 50 records/s each."""


def _latency_goals(results: list[Result]) -> list[str]:
    """Issue 24's latency goals: absolute bounds, and at 1,000 records/s at or under Redis."""
    out: list[str] = []
    for rate, p50, p99, against_redis in LATENCY_GOALS:
        mine = _find(results, "tidelog", f"latency-{rate}")
        if mine is None or not mine.latency:
            out.append(f"latency at {rate:,} records/s (issue 24): not measured")
            continue
        checks = [("p99", p99)] if p50 is None else [("p50", p50), ("p99", p99)]
        parts = [f"{q} {mine.lat(q):.2f} ms (goal <= {bound:g})" for q, bound in checks]
        ok = all(mine.lat(q) <= bound for q, bound in checks)
        redis = _find(results, "redis", f"latency-{rate}")
        if against_redis and redis is not None and redis.latency:
            parts.append(f"Redis {redis.lat('p50'):.2f} / {redis.lat('p99'):.2f} ms")
            ok = ok and all(mine.lat(q) <= redis.lat(q) for q in ("p50", "p99"))
        verdict = "met" if ok else "NOT met"
        out.append(f"latency at {rate:,} records/s (issue 24): {', '.join(parts)}: {verdict}")
    many = next((r for r in results if r.section == "clients" and r.latency), None)
    if many is not None:
        p99 = many.lat("p99")
        verdict = "met" if p99 <= MANY_CLIENTS_P99_MS else "NOT met"
        out.append(
            f"many clients ({many.params}): p50 {many.lat('p50'):.2f} ms, p99 {p99:.2f} ms "
            f"(goal <= {MANY_CLIENTS_P99_MS:g}): {verdict}"
        )
    return out


def _rows(results: list[Result]) -> list[tuple[str, ...]]:
    return [
        (r.section, r.system, r.params, r.figure() + (f" ({r.note})" if r.note else ""),
         r.durability)
        for r in results
    ]  # fmt: skip


def header(bench: Any) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in bench.versions.items())
    return (
        f"plan {bench.plan.name}, median of {bench.plan.runs} runs (min-max); "
        f"{machine()}; {versions}"
    )


def render_table(bench: Any, verdicts: list[str]) -> Table:
    table = Table(title=f"side by side: {header(bench)}", show_lines=False)
    for column in ("scenario", "system", "parameters", "figure", "durability"):
        table.add_column(column, overflow="fold")
    for row in _rows(bench.results):
        table.add_row(*row)
    return table


def render_markdown(bench: Any, verdicts: list[str], command: str, charts: list[str]) -> str:
    lines = [
        SECTION_TITLE,
        "",
        "```console",
        command,
        "```",
        "",
        f"Latest run: {header(bench)}. One Python client process (uvloop) drives each server "
        "process; every server listens on 127.0.0.1 with its data in a temporary dir.",
        "",
        '| scenario | system | parameters | figure | durability (what "matching" means) |',
        "|---|---|---|---|---|",
    ]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in
              _rows(bench.results)]  # fmt: skip
    lines += ["", "Goals (issue 7):", ""]
    lines += [f"- {v}" for v in verdicts]
    if bench.notes:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in bench.notes]
    for chart in charts:
        lines += ["", f"![{os.path.basename(chart)}]({os.path.basename(chart)})"]
    return "\n".join(lines) + "\n"


def write_section(path: str, body: str) -> None:
    """Replace the generated section of ``path`` (between markers) or append it."""
    with open(path) as f:
        text = f.read()
    block = f"{START}\n{body}{END}\n"
    if START in text and END in text:
        text = re.sub(re.escape(START) + ".*?" + re.escape(END) + "\n?", lambda _: block,
                      text, flags=re.S)  # fmt: skip
    else:
        text = text.rstrip("\n") + "\n\n" + block
    with open(path, "w") as f:
        f.write(text)
