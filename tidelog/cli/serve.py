"""``tidelog serve``: run a broker in the foreground.

Its options are generated from :data:`tidelog.server.config.SETTINGS`, one per broker setting,
so a setting is declared once (default, doc, example, range) in ``server/config.py``.
"""

from __future__ import annotations

import dataclasses
import errno
import inspect
from pathlib import Path
from typing import Annotated, Any, Final

import typer
from rich.text import Text

from tidelog import __version__
from tidelog.client import TidelogError
from tidelog.server import Broker
from tidelog.server.config import SETTINGS, BrokerConfig, ConfigError, Setting
from tidelog.server.groups import INTERNAL_PREFIX
from tidelog.server.run import configure_logging
from tidelog.server.run import serve as run_broker

from . import context, parsing
from .errors import CliError, CliUsageError, command

_BANNER_TOPICS: Final = 5
_TABLE: Final = "topic_defaults"  # a TOML table: its option is --topic-default key=value

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


def _banner(settings: BrokerConfig, broker: Broker) -> None:
    topics = sorted(t for t in broker.core.manager.topics() if not t.startswith(INTERNAL_PREFIX))
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
    **settings: Any,
) -> None:
    """Start a broker in the foreground; Ctrl-C or SIGTERM shuts it down gracefully.

    Settings come from defaults, then the TOML file (--config), then `TIDELOG_<SETTING>`
    environment variables, then these options. `make run` calls this.

    Example: `tidelog serve --port 7070 --data-dir ./data`
    """
    try:
        broker_config = BrokerConfig.load(overrides=settings, config_file=config)
    except ConfigError as exc:
        raise CliUsageError(str(exc)) from None
    if topic_default:
        table = {
            **broker_config.topic_defaults,
            **parsing.key_values(topic_default, "--topic-default"),
        }
        broker_config = dataclasses.replace(broker_config, topic_defaults=table)
    configure_logging(broker_config.log_level)
    try:
        code = run_broker(broker_config, lambda broker: _banner(broker_config, broker))
    except OSError as exc:
        hint = ""
        if exc.errno == errno.EADDRINUSE:
            hint = " — is another broker running? pick another --port"
        raise CliError(f"cannot start the broker: {exc.strerror or exc}{hint}") from None
    except TidelogError as exc:
        raise CliError(f"cannot start the broker: {exc}") from None
    raise typer.Exit(code)


_given = inspect.signature(serve, eval_str=True).parameters
serve.__signature__ = inspect.Signature(  # type: ignore[attr-defined]  # typer reads it
    [
        _given["ctx"],
        _given["config"],
        *(_option(s) for s in SETTINGS.values() if s.name != _TABLE),
        _given["topic_default"],
    ]
)
