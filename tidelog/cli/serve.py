"""``tidelog serve``: run a broker in the foreground."""

from __future__ import annotations

import dataclasses
import errno
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from tidelog import __version__
from tidelog.server import Broker
from tidelog.server.config import SETTINGS_DOC, BrokerConfig, ConfigError
from tidelog.server.run import configure_logging
from tidelog.server.run import serve as run_broker
from tidelog.wire.errors import TidelogError

from . import context, parsing
from .errors import CliError, CliUsageError, command

_BANNER_TOPICS = 5


def _doc(name: str, example: str) -> str:
    doc = SETTINGS_DOC[name]
    return f"{doc[:1].upper()}{doc[1:]} (env TIDELOG_{name.upper()}). Example: {example}"


def _banner(settings: BrokerConfig, broker: Broker) -> None:
    topics = sorted(broker.core.manager.topics())
    shown = ", ".join(topics[:_BANNER_TOPICS]) + (", …" if len(topics) > _BANNER_TOPICS else "")
    lines = [
        Text.assemble(
            (f"tidelog {__version__}", "bold green"),
            " listening on ",
            (broker.address, "bold"),
        ),
        Text(f"  data dir  {settings.data_dir.resolve()}"),
        Text(f"  topics    {len(topics)}" + (f" ({shown})" if topics else "")),
        Text("  Ctrl-C or SIGTERM stops the broker gracefully.", style="dim"),
    ]
    for line in lines:
        context.stderr.print(line, soft_wrap=True)


@command
def serve(
    ctx: typer.Context,
    host: Annotated[
        str | None, typer.Option(help=_doc("host", "--host 0.0.0.0"), show_default="127.0.0.1")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help=_doc("port", "--port 7070"), show_default="7070")
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(help=_doc("data_dir", "--data-dir ./data"), show_default="./tidelog-data"),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="TOML file with broker settings (env TIDELOG_CONFIG). "
            "Example: --config broker.toml",
            show_default=False,
        ),
    ] = None,
    log_level: Annotated[
        str | None, typer.Option(help=_doc("log_level", "--log-level DEBUG"), show_default="INFO")
    ] = None,
    broker_id: Annotated[
        int | None, typer.Option(help=_doc("broker_id", "--broker-id 1"), show_default="0")
    ] = None,
    cluster_id: Annotated[
        str | None,
        typer.Option(help=_doc("cluster_id", "--cluster-id prod"), show_default="tidelog"),
    ] = None,
    advertised_host: Annotated[
        str | None,
        typer.Option(
            help=_doc("advertised_host", "--advertised-host broker1.internal"),
            show_default=False,
        ),
    ] = None,
    auto_create_topics: Annotated[
        bool | None,
        typer.Option(
            "--auto-create-topics/--no-auto-create-topics",
            help=_doc("auto_create_topics", "--no-auto-create-topics"),
            show_default="on",
        ),
    ] = None,
    default_partitions: Annotated[
        int | None,
        typer.Option(help=_doc("default_partitions", "--default-partitions 3"), show_default="1"),
    ] = None,
    topic_default: Annotated[
        list[str] | None,
        typer.Option(
            "--topic-default",
            callback=parsing.config_option,
            help="A default topic config as key=value, repeatable (TOML: [broker.topic_defaults])."
            " Example: --topic-default retention_ms=86400000",
            show_default=False,
        ),
    ] = None,
    max_frame_size: Annotated[
        int | None,
        typer.Option(
            help=_doc("max_frame_size", "--max-frame-size 67108864"),
            show_default=False,
            rich_help_panel="Limits and timeouts",
        ),
    ] = None,
    max_inflight_requests: Annotated[
        int | None,
        typer.Option(
            help=_doc("max_inflight_requests", "--max-inflight-requests 128"),
            show_default=False,
            rich_help_panel="Limits and timeouts",
        ),
    ] = None,
    max_connection_buffer: Annotated[
        int | None,
        typer.Option(
            help=_doc("max_connection_buffer", "--max-connection-buffer 33554432"),
            show_default=False,
            rich_help_panel="Limits and timeouts",
        ),
    ] = None,
    idle_timeout_s: Annotated[
        float | None,
        typer.Option(
            help=_doc("idle_timeout_s", "--idle-timeout-s 600"),
            show_default=False,
            rich_help_panel="Limits and timeouts",
        ),
    ] = None,
    handshake_timeout_s: Annotated[
        float | None,
        typer.Option(
            help=_doc("handshake_timeout_s", "--handshake-timeout-s 30"),
            show_default=False,
            rich_help_panel="Limits and timeouts",
        ),
    ] = None,
    shutdown_timeout_s: Annotated[
        float | None,
        typer.Option(
            help=_doc("shutdown_timeout_s", "--shutdown-timeout-s 10"),
            show_default=False,
            rich_help_panel="Limits and timeouts",
        ),
    ] = None,
    max_fetch_wait_ms: Annotated[
        int | None,
        typer.Option(
            help=_doc("max_fetch_wait_ms", "--max-fetch-wait-ms 60000"),
            show_default=False,
            rich_help_panel="Limits and timeouts",
        ),
    ] = None,
    max_fetch_bytes: Annotated[
        int | None,
        typer.Option(
            help=_doc("max_fetch_bytes", "--max-fetch-bytes 33554432"),
            show_default=False,
            rich_help_panel="Limits and timeouts",
        ),
    ] = None,
    retention_check_interval_ms: Annotated[
        int | None,
        typer.Option(
            help=_doc("retention_check_interval_ms", "--retention-check-interval-ms 300000"),
            show_default=False,
            rich_help_panel="Limits and timeouts",
        ),
    ] = None,
    group_heartbeat_interval_ms: Annotated[
        int | None,
        typer.Option(
            help=_doc("group_heartbeat_interval_ms", "--group-heartbeat-interval-ms 3000"),
            show_default=False,
            rich_help_panel="Consumer groups",
        ),
    ] = None,
    group_min_session_timeout_ms: Annotated[
        int | None,
        typer.Option(
            help=_doc("group_min_session_timeout_ms", "--group-min-session-timeout-ms 1000"),
            show_default=False,
            rich_help_panel="Consumer groups",
        ),
    ] = None,
    group_max_session_timeout_ms: Annotated[
        int | None,
        typer.Option(
            help=_doc("group_max_session_timeout_ms", "--group-max-session-timeout-ms 300000"),
            show_default=False,
            rich_help_panel="Consumer groups",
        ),
    ] = None,
    group_max_size: Annotated[
        int | None,
        typer.Option(
            help=_doc("group_max_size", "--group-max-size 1000"),
            show_default=False,
            rich_help_panel="Consumer groups",
        ),
    ] = None,
    offset_metadata_max_bytes: Annotated[
        int | None,
        typer.Option(
            help=_doc("offset_metadata_max_bytes", "--offset-metadata-max-bytes 4096"),
            show_default=False,
            rich_help_panel="Consumer groups",
        ),
    ] = None,
    offsets_snapshot_records: Annotated[
        int | None,
        typer.Option(
            help=_doc("offsets_snapshot_records", "--offsets-snapshot-records 10000"),
            show_default=False,
            rich_help_panel="Consumer groups",
        ),
    ] = None,
) -> None:
    """Start a broker in the foreground; Ctrl-C or SIGTERM shuts it down gracefully.

    Settings come from defaults, then the TOML file (--config), then `TIDELOG_<SETTING>`
    environment variables, then these options. `make run` calls this.

    Example: `tidelog serve --port 7070 --data-dir ./data`
    """
    overrides: dict[str, Any] = {
        name: value
        for name, value in locals().items()
        if name in SETTINGS_DOC and name != "topic_defaults"
    }
    try:
        settings = BrokerConfig.load(overrides=overrides, config_file=config)
    except ConfigError as exc:
        raise CliUsageError(str(exc)) from None
    if topic_default:
        defaults = {**settings.topic_defaults, **parsing.key_values(topic_default, "--config")}
        settings = dataclasses.replace(settings, topic_defaults=defaults)
    configure_logging(settings.log_level)
    try:
        code = run_broker(settings, lambda broker: _banner(settings, broker))
    except OSError as exc:
        hint = ""
        if exc.errno == errno.EADDRINUSE:
            hint = " — is another broker running? pick another --port"
        raise CliError(f"cannot start the broker: {exc.strerror or exc}{hint}") from None
    except TidelogError as exc:
        raise CliError(f"cannot start the broker: {exc}") from None
    raise typer.Exit(code)
