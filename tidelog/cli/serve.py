"""``tidelog serve``: run a broker in the foreground, with the HTTP gateway beside it (on
``--http-port``, default 8080, on the broker's host; ``--no-http`` turns it off).

The gateway is a client of the broker over loopback, in the same process and event loop; its
socket is bound before the broker starts, so a busy HTTP port fails at once.

Its broker options are generated from :data:`tidelog.server.config.SETTINGS`, one per broker
setting, so a setting is declared once (default, doc, example, range) in ``server/config.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import inspect
import logging
import signal
import socket
from pathlib import Path
from typing import Annotated, Any, Final

import typer
from rich.text import Text

from tidelog import __version__
from tidelog.client import TidelogError
from tidelog.gateway import DEFAULT_HTTP_PORT, LIMITS, GatewayServer, GatewaySettings
from tidelog.server import Broker
from tidelog.server.config import SETTINGS, BrokerConfig, ConfigError, Setting
from tidelog.server.groups import INTERNAL_PREFIX
from tidelog.server.run import configure_logging
from tidelog.server.run import serve as run_broker

from . import context, parsing
from .errors import CliError, CliUsageError, command
from .gateway import (
    Http,
    HttpPort,
    banner_line,
    bind_http,
    limit_option,
    webhook_hosts,
    webhook_hosts_option,
)

_BANNER_TOPICS: Final = 5
_TABLE: Final = "topic_defaults"  # a TOML table: its option is --topic-default key=value
_HTTP: Final = "http_"  # the gateway's limits: --http-max-body-bytes, ... (some broker
# settings have the same names: max_fetch_bytes)

ConfigFile = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="TOML file with broker settings (env TIDELOG_CONFIG). Example: --config broker.toml",
        show_default=False,
    ),
]
TopicDefaults = Annotated[
    list[str] | None,
    typer.Option(
        "--topic-default",
        callback=parsing.config_option,
        help="A default topic config as key=value, repeatable (TOML: [broker.topic_defaults]). "
        f"Example: --topic-default {SETTINGS[_TABLE].example}",
        show_default=False,
    ),
]


def _banner(settings: BrokerConfig, broker: Broker, http: GatewayServer | None) -> None:
    topics = sorted(t for t in broker.core.manager.topics() if not t.startswith(INTERNAL_PREFIX))
    shown = ", ".join(topics[:_BANNER_TOPICS]) + (", …" if len(topics) > _BANNER_TOPICS else "")
    lines = [
        Text.assemble(
            (f"tidelog {__version__}", "bold green"),
            " listening on ",
            (broker.address, "bold"),
        ),
        Text(
            "  storage   memory: nothing is kept when the broker stops"
            if settings.in_memory
            else f"  data dir  {settings.data_dir.resolve()}"
        ),
        Text(f"  topics    {len(topics)}" + (f" ({shown})" if topics else "")),
        Text(banner_line(http) if http is not None else "  http      off (--no-http)"),
        Text("  Ctrl-C or SIGTERM stops the broker gracefully.", style="dim"),
    ]
    for line in lines:
        context.stderr.print(line, soft_wrap=True)


def _option(setting: Setting) -> inspect.Parameter:
    """A keyword parameter whose typer option sets ``setting``; ``None`` means "not given", so
    the TOML file and the environment still apply."""
    flag = "--" + setting.name.replace("_", "-")
    decls, example = (flag,), f"{flag} {setting.example}"
    if setting.kind is bool:
        decls = (f"{flag}/--no-{flag[2:]}",)
        example = f"--no-{flag[2:]}" if setting.default else flag  # the flag that changes it
    doc = setting.doc[:1].upper() + setting.doc[1:]
    limits = f", {setting.range}" if setting.range else ""
    info = typer.Option(
        *decls,
        help=f"{doc} (env {setting.env}{limits}). Example: {example}",
        show_default=_shown(setting.default),
        rich_help_panel=setting.group or None,
    )
    kind: Any = setting.kind
    return inspect.Parameter(
        setting.name,
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[kind | None, info],
    )


def _shown(default: object) -> str | bool:
    if isinstance(default, bool):
        return "on" if default else "off"
    return False if default is None else str(default)


@command
def serve(
    *,
    ctx: typer.Context,
    config: ConfigFile = None,
    topic_default: TopicDefaults = None,
    http_port: HttpPort = DEFAULT_HTTP_PORT,
    http: Http = True,
    http_webhook_allowed_hosts: Annotated[
        str, webhook_hosts_option("--http-webhook-allowed-hosts")
    ] = "",
    **settings: Any,
) -> None:
    """Start a broker in the foreground; Ctrl-C or SIGTERM shuts it down gracefully.

    Settings come from defaults, then the TOML file (--config), then `TIDELOG_<SETTING>`
    environment variables, then these options. `make run` calls this.

    With `--storage memory` every log lives in memory, for tests and demos: nothing is kept
    across restarts, and the data dir is neither used nor created.

    The HTTP gateway (REST + WebSocket, docs/HTTP.md) runs beside it on --http-port, on the
    broker's host, with its limits from the --http-* options; --no-http turns it off.

    Example: `tidelog serve --port 7070 --data-dir ./data --http-port 8080`
    """
    limits = {name: settings.pop(_HTTP + name) for name in LIMITS}
    try:
        broker_config = BrokerConfig.load(overrides=settings, config_file=config)
        gateway_config = GatewaySettings(
            host=broker_config.host,
            webhook_allowed_hosts=webhook_hosts(http_webhook_allowed_hosts),
            **limits,
        ).validate()
    except (ConfigError, ValueError) as exc:
        raise CliUsageError(str(exc)) from None
    if topic_default:
        table = {
            **broker_config.topic_defaults,
            **parsing.key_values(topic_default, "--topic-default"),
        }
        broker_config = dataclasses.replace(broker_config, topic_defaults=table)
    configure_logging(broker_config.log_level, broker_config.log_format)
    sock = bind_http(broker_config.host, http_port) if http else None

    def started(broker: Broker) -> None:
        server = None
        if sock is not None:
            server = _gateway_beside(broker, sock, gateway_config)
            _stop_gateway_first(broker, server)
        _banner(broker_config, broker, server)

    try:
        code = run_broker(broker_config, started)
    except OSError as exc:
        hint = ""
        if exc.errno == errno.EADDRINUSE:
            hint = " — is another broker running? pick another --port"
        raise CliError(f"cannot start the broker: {exc.strerror or exc}{hint}") from None
    except TidelogError as exc:
        raise CliError(f"cannot start the broker: {exc}") from None
    finally:
        if sock is not None:
            sock.close()
    raise typer.Exit(code)


def _stop_gateway_first(broker: Broker, server: GatewayServer) -> None:
    """Serve the gateway, and take over SIGINT and SIGTERM so that a stop ends the gateway
    first (its in-flight requests answered, its clients closed), then the broker."""
    loop = asyncio.get_running_loop()
    serving = loop.create_task(server.serve())
    stopping: list[asyncio.Task[None]] = []

    async def stop_both() -> None:
        server.stop()
        with contextlib.suppress(Exception):
            await serving
        await broker.stop()

    def on_signal(name: str) -> None:
        if not stopping:
            logging.getLogger("tidelog.server").info("received %s", name)
            stopping.append(loop.create_task(stop_both()))

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig.name)


def _gateway_beside(
    broker: Broker, sock: socket.socket, settings: GatewaySettings
) -> GatewayServer:
    """The gateway for ``tidelog serve``: a client of this broker over loopback."""
    host, port = sock.getsockname()[:2]
    return GatewayServer(settings.replace(bootstrap=broker.address, host=host, port=port), sock)


_given = inspect.signature(serve, eval_str=True).parameters
serve.__signature__ = inspect.Signature(  # type: ignore[attr-defined]  # typer reads it
    [
        _given["ctx"],
        _given["config"],
        *(_option(s) for s in SETTINGS.values() if s.name != _TABLE),
        _given["topic_default"],
        _given["http_port"],
        _given["http"],
        _given["http_webhook_allowed_hosts"],
        *(limit_option(name, doc, _HTTP) for name, doc in LIMITS.items()),
    ]
)
