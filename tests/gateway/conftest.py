"""Fixtures for the gateway tests: a real broker (``tidelog_broker``), a real gateway on an
ephemeral port (``tidelog_gateway``) and an httpx client on it."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest

from .receiver import receiver_factory  # noqa: F401  (the webhook tests' receivers)
from .webhook_gateway import gw, sleep, start_gateway  # noqa: F401  (the webhook tests' gateway)

TIMEOUT_S = 30.0


@pytest.fixture
def http(tidelog_gateway: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=tidelog_gateway, timeout=TIMEOUT_S) as client:
        yield client


@pytest.fixture
def make_topic(http: httpx.Client) -> Callable[..., str]:
    def make(name: str = "events", partitions: int = 1, **configs: str) -> str:
        r = http.post(
            "/v1/topics", json={"name": name, "partitions": partitions, "configs": configs}
        )
        assert r.status_code == 201, r.text
        return name

    return make


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, str]:
    """The answer is the JSON error body with this status and code (never a stack trace)."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error_code", "message"}, body
    assert body["error_code"] == code, body
    assert "Traceback" not in body["message"]
    return body  # type: ignore[no-any-return]


def eventually(check: Callable[[], bool], what: str, deadline_s: float = TIMEOUT_S) -> None:
    """Poll ``check`` until it holds (a condition with a deadline, not a timed wait)."""
    import time

    end = time.monotonic() + deadline_s
    while not check():
        assert time.monotonic() < end, f"never happened: {what}"
        time.sleep(0.02)
