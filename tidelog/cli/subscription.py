"""``tidelog subscription create|list|status|pause|resume|replay|delete``: webhook
subscriptions, managed through the HTTP gateway (``--gateway URL``), which delivers them."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Final

import httpx
import typer
from rich.table import Table

from . import context
from .errors import CliError, CliUsageError, command
from .render import format_timestamp, markup, print_json

GATEWAY_ENV: Final = "TIDELOG_GATEWAY"
DEFAULT_GATEWAY: Final = "http://127.0.0.1:8080"
BASE: Final = "/v1/subscriptions"

app = typer.Typer(
    name="subscription",
    help="Webhook subscriptions: the gateway POSTs each record of a topic to a URL, in order, "
    "with retries and dead letters (docs/HTTP.md).\n\n"
    "Example: `tidelog subscription create billing --topic orders --url "
    "http://127.0.0.1:9000/hook`",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)

NameArgument = Annotated[
    str, typer.Argument(help="The subscription's name. Example: billing", show_default=False)
]
GatewayOption = Annotated[
    str,
    typer.Option(
        "--gateway",
        envvar=GATEWAY_ENV,
        help=f"The HTTP gateway's URL (env {GATEWAY_ENV}). Example: --gateway {DEFAULT_GATEWAY}",
    ),
]


class Start(StrEnum):
    earliest = "earliest"
    latest = "latest"
    offset = "offset"
    time = "time"


class Fmt(StrEnum):
    json = "json"
    text = "text"
    base64 = "base64"


def _call(ctx: typer.Context, gateway: str, method: str, path: str, body: Any = None) -> Any:
    """The gateway's JSON answer; its error body becomes a :class:`CliError`."""
    timeout = context.settings(ctx).timeout
    try:
        with httpx.Client(base_url=gateway, timeout=timeout, trust_env=False) as http:
            response = http.request(method, path, json=body)
    except httpx.HTTPError as exc:
        raise CliError(
            f"cannot reach the gateway at {gateway} ({exc}) — is `tidelog serve` or "
            f"`tidelog gateway` running? (point --gateway or {GATEWAY_ENV} at it)"
        ) from None
    if response.status_code >= 400:
        try:
            error = response.json()
            text = f"{error['error_code']}: {error['message']}"
        except (ValueError, KeyError, TypeError):
            text = f"HTTP {response.status_code}"
        raise CliError(text)
    return response.json() if response.content else None


def _pairs(values: list[str], what: str) -> dict[str, str]:
    out = {}
    for v in values:
        name, sep, value = v.partition("=")
        if not sep or not name:
            raise CliUsageError(f"{what} is NAME=VALUE, not {v!r}")
        out[name] = value
    return out


def _show(ctx: typer.Context, sub: dict[str, Any]) -> None:
    if context.settings(ctx).json:
        print_json(sub)
        return
    what = sub["topic"] or f"/{sub['topic_pattern']}/"
    context.stdout.print(
        f"{markup(sub['name'])}: {markup(what)} → {markup(sub['url'])} "
        f"{markup('[' + sub['state'] + ']')}",
        soft_wrap=True,
    )


@app.command("create")
@command
def create(
    ctx: typer.Context,
    name: NameArgument,
    url: Annotated[
        str, typer.Option(help="Where to POST. Example: --url http://127.0.0.1:9000/hook")
    ],
    gateway: GatewayOption = DEFAULT_GATEWAY,
    topic: Annotated[str | None, typer.Option(help="The topic. Example: --topic orders")] = None,
    pattern: Annotated[
        str | None, typer.Option(help="A topic name regex instead. Example: --pattern 'orders-.*'")
    ] = None,
    start: Annotated[
        Start, typer.Option(help="Where delivery starts. Example: --start earliest")
    ] = Start.latest,
    offset: Annotated[
        int | None, typer.Option(help="With --start offset. Example: --offset 100")
    ] = None,
    time_ms: Annotated[
        int | None,
        typer.Option(
            "--time", help="With --start time: ms since the epoch. Example: --time 1700000000000"
        ),
    ] = None,
    fmt: Annotated[
        Fmt,
        typer.Option("--format", help="How keys and values are rendered. Example: --format text"),
    ] = (Fmt.json),
    header: Annotated[
        list[str] | None,
        typer.Option(
            help="HTTP header to send, NAME=VALUE (repeatable). Example: --header X-Env=prod"
        ),
    ] = None,
    key_prefix: Annotated[
        str | None,
        typer.Option(help="Deliver only keys starting with this text. Example: --key-prefix eu-"),
    ] = None,
    match_header: Annotated[
        list[str] | None,
        typer.Option(
            help="Deliver only records with this header, NAME=VALUE (repeatable). "
            "Example: --match-header kind=paid"
        ),
    ] = None,
    secret: Annotated[
        str | None,
        typer.Option(
            help="Sign bodies with HMAC-SHA256 (16+ characters). "
            "Example: --secret s3cret-s3cret-s3cret"
        ),
    ] = None,
) -> None:
    """Create a webhook subscription; every gateway on the same brokers serves it.

    Example: `tidelog subscription create billing --topic orders --url http://127.0.0.1:9000/hook`
    """
    if (topic is None) == (pattern is None):
        raise CliUsageError("give one of --topic and --pattern")
    body: dict[str, Any] = {
        "name": name,
        "url": url,
        "start": start.value,
        "format": fmt.value,
        "headers": _pairs(header or [], "--header"),
        "filter": {
            "key_prefix": key_prefix,
            "headers": _pairs(match_header or [], "--match-header"),
        },
    }
    body.update(
        {
            k: v
            for k, v in (
                ("topic", topic),
                ("topic_pattern", pattern),
                ("offset", offset),
                ("time", time_ms),
                ("secret", secret),
            )
            if v is not None
        }
    )
    _show(ctx, _call(ctx, gateway, "POST", BASE, body))


@app.command("list")
@command
def list_(ctx: typer.Context, gateway: GatewayOption = DEFAULT_GATEWAY) -> None:
    """List the subscriptions. Example: `tidelog subscription list`"""
    subs = _call(ctx, gateway, "GET", BASE)["subscriptions"]
    if context.settings(ctx).json:
        print_json(subs)
        return
    table = Table("name", "topic", "url", "state", "generation")
    for s in subs:
        what = s["topic"] or f"/{s['topic_pattern']}/"
        table.add_row(
            markup(s["name"]), markup(what), markup(s["url"]), s["state"], str(s["generation"])
        )
    context.stdout.print(table)


@app.command("status")
@command
def status(
    ctx: typer.Context, name: NameArgument, gateway: GatewayOption = DEFAULT_GATEWAY
) -> None:
    """Position and lag per partition, and delivery counts. Example:
    `tidelog subscription status billing`"""
    st = _call(ctx, gateway, "GET", f"{BASE}/{name}")
    if context.settings(ctx).json:
        print_json(st)
        return
    _show(ctx, st["subscription"])
    table = Table("topic", "partition", "position", "end", "lag")
    for p in st["partitions"]:
        table.add_row(
            markup(p["topic"]),
            str(p["partition"]),
            str(p["position"]),
            str(p["end_offset"]),
            str(p["lag"]),
        )
    context.stdout.print(table)
    d = st["delivery"]
    context.stdout.print(
        f"deliveries {d['deliveries']}, failures {d['failures']}, dead letters "
        f"{d['dead_letters']}, filtered {d['filtered']}, consecutive failures "
        f"{d['consecutive_failures']} (this gateway, since it took the subscription)",
        soft_wrap=True,
    )
    success = d["last_success_ms"]
    context.stdout.print(f"last success: {format_timestamp(success) if success else 'none'}")
    error = "none"
    if d["last_error"]:
        error = f"{markup(d['last_error'])} at {format_timestamp(d['last_error_ms'] or -1)}"
    context.stdout.print(f"last error: {error}", soft_wrap=True)


@app.command("pause")
@command
def pause(ctx: typer.Context, name: NameArgument, gateway: GatewayOption = DEFAULT_GATEWAY) -> None:
    """Stop delivering; the position is kept. Example: `tidelog subscription pause billing`"""
    _show(ctx, _call(ctx, gateway, "POST", f"{BASE}/{name}/pause"))


@app.command("resume")
@command
def resume(
    ctx: typer.Context, name: NameArgument, gateway: GatewayOption = DEFAULT_GATEWAY
) -> None:
    """Deliver again from the position. Example: `tidelog subscription resume billing`"""
    _show(ctx, _call(ctx, gateway, "POST", f"{BASE}/{name}/resume"))


@app.command("replay")
@command
def replay(
    ctx: typer.Context,
    name: NameArgument,
    gateway: GatewayOption = DEFAULT_GATEWAY,
    offset: Annotated[
        int | None, typer.Option(help="Move to this offset. Example: --offset 0")
    ] = None,
    time_ms: Annotated[
        int | None,
        typer.Option(
            "--time",
            help="Move to the first record at or after (ms). Example: --time 1700000000000",
        ),
    ] = None,
    topic: Annotated[
        str | None, typer.Option(help="Only this topic. Example: --topic orders")
    ] = None,
    partition: Annotated[
        int | None, typer.Option(help="Only this partition (with --topic). Example: --partition 0")
    ] = None,
) -> None:
    """Move the position back (or forward) and deliver from there.
    Example: `tidelog subscription replay billing --offset 0`"""
    if (offset is None) == (time_ms is None):
        raise CliUsageError("give one of --offset and --time")
    body = {"offset": offset, "time": time_ms, "topic": topic, "partition": partition}
    _show(
        ctx,
        _call(
            ctx,
            gateway,
            "POST",
            f"{BASE}/{name}/replay",
            {k: v for k, v in body.items() if v is not None},
        ),
    )


@app.command("delete")
@command
def delete(
    ctx: typer.Context, name: NameArgument, gateway: GatewayOption = DEFAULT_GATEWAY
) -> None:
    """Stop and forget a subscription. Example: `tidelog subscription delete billing`"""
    _call(ctx, gateway, "DELETE", f"{BASE}/{name}")
    if not context.settings(ctx).json:
        context.stdout.print(f"deleted subscription {markup(name)}")
