"""PNG charts of the side-by-side bench (matplotlib, Agg backend; the bench extra only):
produce and consume throughput by record size per system, and latency percentiles per system
and rate."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from report import PERCENTILES, Result

SYSTEMS = ("tidelog", "redis", "nats")


def throughput(results: list[Result], path: str) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, section in zip(axes, ("produce", "consume"), strict=True):
        rows = [r for r in results if r.section == section and r.key.startswith(
            ("produce-leader-", "consume-"))]  # fmt: skip
        sizes = sorted({r.size for r in rows})
        width = 0.8 / len(SYSTEMS)
        for i, system in enumerate(SYSTEMS):
            mine = {r.size: r for r in rows if r.system == system}
            xs = [j + i * width for j, s in enumerate(sizes) if s in mine]
            meds = [mine[s].median() for s in sizes if s in mine]
            lows = [mine[s].median() - min(mine[s].runs) for s in sizes if s in mine]
            highs = [max(mine[s].runs) - mine[s].median() for s in sizes if s in mine]
            if xs:
                ax.bar(xs, meds, width, yerr=[lows, highs], label=system, capsize=3)
        ax.set_xticks([j + width for j in range(len(sizes))], [f"{s} B" for s in sizes])
        ax.set_ylabel("records/s (median, min-max)")
        ax.set_yscale("log")
        ax.set_title(
            f"{section}, one client process"
            + (" (acks=leader / everysec / default)" if section == "produce" else "")
        )
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def latency(results: list[Result], path: str) -> None:
    rows = [r for r in results if r.section == "latency" and r.latency]
    rates = sorted({int(r.key.split("-")[1]) for r in rows})
    fig, axes = plt.subplots(1, max(1, len(rates)), figsize=(4.5 * max(1, len(rates)), 4.2))
    axes = axes if len(rates) > 1 else [axes]
    for ax, rate in zip(axes, rates, strict=True):
        width = 0.8 / len(SYSTEMS)
        for i, system in enumerate(SYSTEMS):
            row = next((r for r in rows if r.system == system and r.key == f"latency-{rate}"),
                       None)  # fmt: skip
            if row is None:
                continue
            ax.bar([j + i * width for j in range(len(PERCENTILES))],
                   [row.lat(q) for q in PERCENTILES], width, label=system)  # fmt: skip
        ax.set_xticks([j + width for j in range(len(PERCENTILES))], list(PERCENTILES))
        ax.set_yscale("log")
        ax.set_ylabel("ms, produce to consume (median of runs)")
        ax.set_title(f"{rate:,} records/s, 100 B")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write(results: list[Result], directory: str) -> list[str]:
    os.makedirs(directory, exist_ok=True)
    paths = [os.path.join(directory, "bench-throughput.png"),
             os.path.join(directory, "bench-latency.png")]  # fmt: skip
    throughput(results, paths[0])
    latency(results, paths[1])
    return paths
