"""``tidelog schema ...`` against a real gateway and broker, and a bound topic refusing a
record sent by ``tidelog produce``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from tidelog.cli.main import app

V1 = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
V2_BREAKS = {**V1, "properties": {"n": {"type": "string"}}}


def test_the_schema_commands(tidelog_broker: Any, registry_url: str, tmp_path: Path) -> None:
    runner = CliRunner()

    def run(*args: str, code: int = 0) -> Any:
        result = runner.invoke(app, ["--json", "schema", *args, "--registry", registry_url])
        assert result.exit_code == code, result.output
        return json.loads(result.stdout)

    v1, v2 = tmp_path / "v1.json", tmp_path / "v2.json"
    v1.write_text(json.dumps(V1))
    v2.write_text(json.dumps(V2_BREAKS))
    schema_id = run("register", "jobs-value", str(v1))["id"]
    assert run("list") == {"jobs-value": [1]}
    got = run("get", "jobs-value")
    assert (got["id"], got["version"], json.loads(got["schema"])) == (schema_id, 1, V1)
    assert run("check", "jobs-value", str(v2), code=1)["is_compatible"] is False
    assert run("config", "jobs-value") == {"compatibilityLevel": "BACKWARD"}
    assert run("config", "jobs-value", "--level", "none") == {"compatibility": "NONE"}
    assert run("check", "jobs-value", str(v2))["is_compatible"] is True
    failed = runner.invoke(app, ["schema", "get", "nope", "--registry", registry_url])
    assert failed.exit_code == 1 and "40401" in failed.output

    # a topic bound to the subject: tidelog produce sends plain JSON, checked in full mode
    broker = ["--broker", tidelog_broker.address]
    made = runner.invoke(
        app, [*broker, "topic", "create", "jobs", "--config", "schema_validation=full"]
    )
    assert made.exit_code == 0, made.output
    good = runner.invoke(app, [*broker, "produce", "jobs", '{"n": 1}'])
    assert good.exit_code == 0, good.output
    bad = runner.invoke(app, [*broker, "produce", "jobs", '{"n": "x"}'])
    assert bad.exit_code != 0
    assert "schema_validation=full" in bad.output
