"""``tidelog serve``'s options are generated from the broker's settings: one option per
setting, which reaches :class:`BrokerConfig` above the TOML file and the environment."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import typer

from tidelog.cli.main import app
from tidelog.server.config import SETTINGS, BrokerConfig, Setting

from .helpers import DEADLINE_S, TIDELOG, subprocess_env

GENERATED = [s for s in SETTINGS.values() if s.kind is not dict]
SERVE = typer.main.get_command(app).commands["serve"]  # type: ignore[attr-defined]
PARAMS = {p.name: p for p in SERVE.params}


@pytest.mark.parametrize("setting", GENERATED, ids=lambda s: s.name)
def test_each_setting_has_its_option(setting: Setting) -> None:
    param = PARAMS[setting.name]
    flag = "--" + setting.name.replace("_", "-")
    assert flag in param.opts
    assert param.default is None, "an option not given must leave the file and env in charge"
    assert setting.doc[1:] in (param.help or "") and setting.env in (param.help or "")
    assert setting.range in (param.help or "")
    match setting.default:
        case None:
            assert param.show_default is False  # its doc says what happens instead
        case bool():
            assert param.show_default == ("on" if setting.default else "off")
        case _:
            assert param.show_default == str(setting.default)


def test_serve_help_says_memory_storage_keeps_nothing_across_restarts() -> None:
    assert "nothing is kept across restarts" in " ".join((SERVE.help or "").split())
    assert "memory keeps nothing across restarts" in (PARAMS["storage"].help or "")


@pytest.mark.parametrize("setting", GENERATED, ids=lambda s: s.name)
def test_each_option_parses_its_example_as_the_setting_does(setting: Setting) -> None:
    wanted = getattr(
        BrokerConfig.load(overrides={setting.name: setting.example}, environ={}), setting.name
    )
    flag = "--" + setting.name.replace("_", "-")
    args = [flag, setting.example]
    if setting.kind is bool:
        args = [flag if wanted else flag.replace("--", "--no-", 1)]
    value = SERVE.make_context("serve", args).params[setting.name]
    assert isinstance(value, setting.kind) and value == wanted


def refused(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``tidelog serve ARGS`` that must refuse its settings. A subprocess with a deadline, in
    ``tmp_path`` on port 0, so a regression that starts a broker fails the test, not hangs it;
    a setting refused by option and by environment after the one checked (fields are checked
    in order) makes most such regressions fail at once."""
    backstop = {"TIDELOG_OFFSETS_TOPIC_PARTITIONS": "0", "TIDELOG_PORT": "0"}
    return subprocess.run(
        [str(TIDELOG), "serve", *args, "--offsets-topic-partitions", "0"],
        cwd=tmp_path,
        env=subprocess_env(**(backstop | env)),
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        check=False,
    )


def test_options_beat_the_environment_and_the_file(tmp_path: Path) -> None:
    toml = tmp_path / "broker.toml"
    toml.write_text("broker_id = -1\n")  # refused, unless --broker-id overrides it
    env = {"TIDELOG_PORT": "70000", "TIDELOG_GROUP_MAX_SIZE": "0"}
    result = refused(tmp_path, "--config", str(toml), "--broker-id", "2", "--port", "0", **env)
    # port and broker_id are checked before group_max_size: their bad values were overridden.
    assert result.returncode == 2, result.stderr
    assert result.stderr == "tidelog: group_max_size must be >= 1\n"


def test_an_option_is_checked_against_its_range(tmp_path: Path) -> None:
    result = refused(tmp_path, "--idle-timeout-s", "0")
    assert result.returncode == 2, result.stderr
    assert result.stderr == "tidelog: idle_timeout_s must be > 0\n"
