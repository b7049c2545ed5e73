"""``tidelog status``: a one-shot summary of a broker -- version, uptime, topics, partitions,
groups, queues and disk used. Topics and groups come through the client (metadata,
ListGroups); the version, uptime, queues (share groups) and disk from the broker's
``/metrics``. Without the admin port the summary still prints, with those fields unknown."""

from __future__ import annotations

import time
from typing import Annotated, Any

import httpx
import typer
from rich.table import Table

from tidelog.client import AdminClient

from . import context, render, scrape
from .errors import CliError, command


def _uptime(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    return (f"{days}d " if days else "") + f"{hours:02d}:{minutes:02d}:{secs:02d}"


async def gather(settings: context.Settings, admin: str) -> dict[str, Any]:
    """The summary as a JSON-ready dict."""
    async with AdminClient(settings.broker, **settings.client_options()) as client:
        cluster = await client.describe_cluster()
        topics = await client.describe_topics()
        groups = await client.list_groups()
    out: dict[str, Any] = {
        "broker": settings.broker,
        "cluster_id": cluster.cluster_id,
        "brokers": len(cluster.brokers),
        "topics": len([t for t in topics if not t.internal]),
        "partitions": sum(len(t.partitions) for t in topics if not t.internal),
        "groups": len(groups),
        "admin": admin,
        "version": None,
        "uptime_s": None,
        "queues": None,
        "disk_bytes": None,
    }
    try:
        async with httpx.AsyncClient(timeout=settings.timeout) as http:
            metrics = await scrape.fetch(http, admin)
    except CliError as exc:
        out["metrics_error"] = str(exc)
        return out
    for labels, _ in metrics.series("build_info"):
        out["version"] = labels.get("version")
    started = metrics.value("start_time_seconds")
    out["uptime_s"] = round(max(time.time() - started, 0.0), 1) if started else None
    out["queues"] = len(metrics.series("share_group_members"))
    out["disk_bytes"] = int(sum(v for _, v in metrics.series("log_size_bytes")))
    return out


@command
def status(
    ctx: typer.Context,
    admin: scrape.AdminOption = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the summary as JSON. Example: --json")
    ] = False,
) -> None:
    """A one-shot summary of the broker: version, uptime, topics, partitions, groups, queues,
    disk.

    Example: `tidelog status` (`--admin host:9644` when the admin port is elsewhere)
    """
    settings = context.settings(ctx)
    info = context.run(gather(settings, scrape.admin_address(admin, settings.broker)))
    if json_output or settings.json:
        render.print_json(info)
        return
    table = Table.grid(padding=(0, 2))
    unknown = "? (no metrics)"
    rows = [
        ("broker", info["broker"]),
        ("version", info["version"] or unknown),
        ("uptime", unknown if info["uptime_s"] is None else _uptime(info["uptime_s"])),
        ("cluster", f"{info['cluster_id']} ({info['brokers']} broker(s))"),
        ("topics", str(info["topics"])),
        ("partitions", str(info["partitions"])),
        ("groups", str(info["groups"])),
        ("queues", unknown if info["queues"] is None else str(info["queues"])),
        (
            "disk used",
            unknown if info["disk_bytes"] is None else render.human_bytes(info["disk_bytes"]),
        ),
    ]
    for key, value in rows:
        table.add_row(f"[bold]{key}[/]", render.markup(value))
    context.stdout.print(table)
    if "metrics_error" in info:
        context.stderr.print(render.markup(f"note: {info['metrics_error']}"), style="yellow")
