"""Property-based tests of every endpoint from the gateway's own OpenAPI spec (schemathesis),
against a real gateway and broker: no 5xx, every status code declared, every body valid
against its declared schema, schema-violating requests refused with a 4xx, the ``Allow``
header on a 405, and the stateful phase following the spec's links (a created topic or
consumer instance, then the operations on it).

``make test`` runs a bounded number of examples per operation with a fixed seed;
``TIDELOG_SCHEMATHESIS_EXAMPLES`` (``make soak``) runs more, with a random seed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tidelog.gateway.testing import GatewayThread

from .conftest import TIMEOUT_S

ST = Path(sys.executable).parent / "st"
CONFIG = Path(__file__).with_name("schemathesis.toml")
EXAMPLES = int(os.environ.get("TIDELOG_SCHEMATHESIS_EXAMPLES", "0"))
SEED = "20"
FETCH_WAIT_MS = 100  # long polls stay short: the spec declares this maximum
DEADLINE_S = 600.0


def test_every_endpoint_matches_the_spec(
    tidelog_broker: Any,
    tidelog_gateway_factory: Callable[..., GatewayThread],
    tmp_path: Path,
) -> None:
    gateway = tidelog_gateway_factory(
        tidelog_broker.address,
        max_fetch_wait_ms=FETCH_WAIT_MS,
        consumer_idle_timeout_s=60.0,
    )
    with httpx.Client(base_url=gateway.url, timeout=TIMEOUT_S) as http:
        assert http.post("/v1/topics", json={"name": "events", "partitions": 2}).status_code == 201
        records = [{"key": f"k{i}", "value": {"n": i}} for i in range(20)]
        assert http.post("/v1/topics/events/records", json={"records": records}).is_success
    soak = EXAMPLES > 0
    args = [
        str(ST),
        "--config-file",
        str(CONFIG),
        "--no-color",
        "run",
        f"{gateway.url}/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        str(EXAMPLES if soak else 10),
        "--request-timeout",
        str(TIMEOUT_S),
        *([] if soak else ["--seed", SEED]),
    ]
    done = subprocess.run(
        args,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        check=False,
        env={**os.environ, "SCHEMATHESIS_HOOKS": ""},
    )
    assert done.returncode == 0, done.stdout[-20000:] + done.stderr[-5000:]
