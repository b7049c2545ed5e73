"""The status and topic tables, from the JSON a supervisor answers (so the console and
``tidelog cluster status`` print the same thing, in-process or over the control socket)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

STATE_STYLES = {"running": "green", "starting": "yellow", "stopped": "dim", "died": "bold red"}


def brokers_table(status: dict[str, Any]) -> Table:
    table = Table(title=f"cluster {status['cluster_id']}", title_justify="left")
    for column in ("broker", "state", "pid", "address", "admin", "etcd", "leads"):
        table.add_column(
            column,
            justify="right" if column in ("pid", "leads") else "left",
            no_wrap=column in ("broker", "pid", "address", "admin"),
        )
    controller = status.get("controller", -1)
    for broker in status["brokers"]:
        state = Text(broker["state"], STATE_STYLES.get(broker["state"], ""))
        if broker.get("last_exit") and broker["state"] == "died":
            state.append(f" ({broker['last_exit']})")
        registered = broker.get("registered")
        etcd = "-" if registered is None else ("registered" if registered else "absent")
        name = f"{broker['id']}" + ("*" if broker["id"] == controller else "")
        table.add_row(
            name,
            state,
            str(broker["pid"] or "-"),
            broker["address"],
            str(broker["admin_port"]),
            etcd,
            str(broker.get("leads", "-")),
        )
    return table


def topics_table(topics: list[dict[str, Any]]) -> Table:
    table = Table(title="topics", title_justify="left")
    columns = (
        "topic",
        "partitions",
        "leaders (partition:broker)",
        "leaderless",
        "under-replicated",
    )
    for column in columns:
        table.add_column(column)
    for topic in topics:
        leaders = " ".join(f"{p}:{b if b >= 0 else '-'}" for p, b in topic["leaders"].items())
        leaderless = Text(", ".join(map(str, topic["leaderless"])) or "-")
        if topic["leaderless"]:
            leaderless.stylize("bold red")
        short = topic.get("under_replicated", [])
        under = Text(", ".join(map(str, short)) or "-", "yellow" if short else "")
        table.add_row(topic["name"], str(topic["partitions"]), leaders or "-", leaderless, under)
    return table


def print_status(console: Console, status: dict[str, Any]) -> None:
    console.print(brokers_table(status))
    etcd = status["etcd"]
    where = ", ".join(etcd["endpoints"])
    owner = f" (pid {etcd['pid']})" if etcd.get("pid") else " (external)"
    console.print(f"etcd: {where}{owner}", soft_wrap=True)
    if "error" in etcd:
        console.print(Text(f"etcd does not answer: {etcd['error']}", "red"), soft_wrap=True)
    gateway = status.get("gateway")
    if gateway is not None:
        line = Text(f"gateway: {gateway['url']} ")
        line.append(gateway["state"], STATE_STYLES.get(gateway["state"], ""))
        if gateway["pid"]:
            line.append(f" (pid {gateway['pid']})")
        elif gateway.get("last_exit") and gateway["state"] == "died":
            line.append(f" ({gateway['last_exit']})")
        console.print(line, soft_wrap=True)
    controller = status.get("controller", -1)
    console.print(f"controller (*): {controller if controller >= 0 else 'none'}")
    if status.get("topics"):
        console.print(topics_table(status["topics"]))
    for key, label, style, fine in (
        ("leaderless_partitions", "leaderless", "bold red", "every partition has a leader"),
        ("under_replicated_partitions", "under-replicated", "yellow", "every replica is in sync"),
    ):
        names = status.get(key, [])
        if names:
            shown = ", ".join(names[:20]) + (" ..." if len(names) > 20 else "")
            line = Text(f"{label} partitions ({len(names)}): {shown}", style)
            console.print(line, soft_wrap=True)
        elif status.get("topics"):
            console.print(fine)
