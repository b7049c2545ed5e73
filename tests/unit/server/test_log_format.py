"""``log_format = "json"``: one JSON object per line with the text format's fields."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from tidelog.server.config import BrokerConfig, ConfigError
from tidelog.server.run import TEXT_FORMAT, JsonFormatter


def record(msg: str, *args: object, exc: bool = False) -> logging.LogRecord:
    info = None
    if exc:
        try:
            raise ValueError("boom")
        except ValueError:
            info = sys.exc_info()
    return logging.LogRecord("tidelog.server", logging.WARNING, __file__, 1, msg, args, info)


def test_a_json_line_has_the_text_lines_fields() -> None:
    r = record("refusing %s from %d", "x", 7)
    line = JsonFormatter().format(r)
    assert "\n" not in line
    data = json.loads(line)
    assert data == {
        "time": logging.Formatter().formatTime(r),
        "level": "WARNING",
        "component": "tidelog.server",
        "message": "refusing x from 7",
    }
    text = logging.Formatter(TEXT_FORMAT).format(r)
    assert text.endswith(f"{data['level']:<7} {data['component']}: {data['message']}")


def test_a_traceback_is_one_field_of_the_same_line() -> None:
    line = JsonFormatter().format(record("failed", exc=True))
    assert "\n" not in line
    assert "ValueError: boom" in json.loads(line)["traceback"]


def test_log_format_is_text_or_json() -> None:
    assert BrokerConfig.load(overrides={"log_format": "json"}, environ={}).log_format == "json"
    with pytest.raises(ConfigError, match="log_format"):
        BrokerConfig.load(overrides={"log_format": "xml"}, environ={})
