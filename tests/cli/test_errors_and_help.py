"""Errors are one red line with the right exit code; help explains every option."""

from __future__ import annotations

from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from tidelog.cli.main import app
from tidelog.client import BrokerUnavailableError
from tidelog.server.config import SETTINGS_DOC

from .helpers import cli, free_port

COMMANDS_NEEDING_A_BROKER = [
    ["topic", "create", "t"],
    ["topic", "list"],
    ["topic", "describe", "t"],
    ["topic", "alter", "t", "--config", "retention_ms=1"],
    ["topic", "delete", "t", "--yes"],
    ["produce", "t", "v"],
    ["consume", "t", "--from-beginning"],
    ["tail", "t"],
]


@pytest.mark.parametrize("args", COMMANDS_NEEDING_A_BROKER, ids=" ".join)
def test_broker_down_is_one_line_and_exit_1(args: list[str]) -> None:
    address = f"127.0.0.1:{free_port()}"
    result = cli(address, *args)
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    assert result.stderr == (
        f"tidelog: cannot reach broker at {address} — is `tidelog serve` running? "
        "(point --broker or TIDELOG_BROKER at it)\n"
    )


def test_broker_from_the_environment() -> None:
    address = f"127.0.0.1:{free_port()}"
    result = CliRunner().invoke(app, ["topic", "list"], env={"TIDELOG_BROKER": address})
    assert result.exit_code == 1
    assert f"cannot reach broker at {address}" in result.stderr


def test_debug_shows_the_real_error() -> None:
    address = f"127.0.0.1:{free_port()}"
    result = cli(None, "--broker", address, "--debug", "topic", "list")
    assert result.exit_code == 1
    assert isinstance(result.exception, BrokerUnavailableError)


def test_bad_broker_address_is_a_usage_error() -> None:
    result = cli("localhost:http", "topic", "list")
    assert result.exit_code == 2
    assert "bad port" in result.stderr


def test_version() -> None:
    from tidelog import __version__

    result = cli(None, "--version")
    assert result.exit_code == 0
    assert result.stdout == f"tidelog {__version__}\n"


def _commands(group: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    out = [(path, group)]
    for name, sub in getattr(group, "commands", {}).items():
        out.extend(_commands(sub, (*path, name)))
    return out


COMMANDS = _commands(typer.main.get_command(app))


@pytest.mark.parametrize(
    ("path", "command"),
    [pytest.param(path, command, id=" ".join(path) or "tidelog") for path, command in COMMANDS],
)
def test_every_option_is_explained_with_an_example(path: tuple[str, ...], command: Any) -> None:
    result = cli(None, *path, "--help")
    assert result.exit_code == 0, result.output
    assert "Example" in (command.help or ""), f"{path}: the command's help needs an example"
    generated = {"help", "install_completion", "show_completion"}
    for param in command.params:
        if param.name in generated:
            continue
        assert "Example" in (param.help or ""), f"{path} {param.name}: no example in its help"


def test_serve_has_an_option_for_every_setting() -> None:
    serve = typer.main.get_command(app).commands["serve"]  # type: ignore[attr-defined]
    names = {p.name for p in serve.params}
    wanted = set(SETTINGS_DOC) - {"topic_defaults"} | {"topic_default", "config"}
    assert wanted <= names
