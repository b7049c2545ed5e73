"""A real HTTP receiver for the webhook tests: a threaded ``http.server`` on an ephemeral
loopback port that records every request and answers what the test's policy says."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


@dataclass(frozen=True, slots=True)
class Delivery:
    """One request the receiver got and what it answered."""

    body: dict[str, Any]
    headers: dict[str, str]
    raw: bytes
    status: int

    @property
    def attempt(self) -> int:
        return int(self.headers["x-tidelog-delivery-attempt"])

    @property
    def where(self) -> tuple[str, int, int]:
        return self.body["topic"], self.body["partition"], self.body["offset"]


Policy = Callable[[dict[str, Any], dict[str, str]], "int | tuple[int, dict[str, str]]"]


class Receiver:
    """``policy(body, headers)`` gives the status (and headers) of each answer; it may block
    (an ``Event.wait``) to hold a delivery in flight. ``port`` 0 takes an ephemeral one."""

    def __init__(self, policy: Policy | None = None, port: int = 0) -> None:
        self.policy: Policy = policy or (lambda body, headers: 200)
        self.lock = threading.Lock()
        self.requests: list[Delivery] = []
        self.in_flight: dict[tuple[str, int], int] = {}
        self.overlaps = 0
        """Times a partition had two requests in flight at once (must stay 0)."""
        self.most_in_flight = 0
        """The most requests (of any partition) in flight at once."""
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers["content-length"]))
                body = json.loads(raw)
                headers = {k.lower(): v for k, v in self.headers.items()}
                tp = (body["topic"], body["partition"])
                with receiver.lock:
                    receiver.in_flight[tp] = receiver.in_flight.get(tp, 0) + 1
                    if receiver.in_flight[tp] > 1:
                        receiver.overlaps += 1
                    now = sum(receiver.in_flight.values())
                    receiver.most_in_flight = max(receiver.most_in_flight, now)
                try:
                    answer = receiver.policy(body, headers)
                finally:
                    with receiver.lock:
                        receiver.in_flight[tp] -= 1
                status, extra = answer if isinstance(answer, tuple) else (answer, {})
                with receiver.lock:
                    receiver.requests.append(Delivery(body, headers, raw, status))
                self.send_response(status)
                for k, v in extra.items():
                    self.send_header(k, v)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def requests_in_flight(self) -> int:
        with self.lock:
            return sum(self.in_flight.values())

    def acked(self) -> list[Delivery]:
        with self.lock:
            return [d for d in self.requests if 200 <= d.status < 300]

    def all(self) -> list[Delivery]:
        with self.lock:
            return list(self.requests)

    def acked_offsets(self) -> dict[tuple[str, int], list[int]]:
        """Offsets acknowledged per partition, in arrival order."""
        out: dict[tuple[str, int], list[int]] = {}
        for d in self.acked():
            out.setdefault(d.where[:2], []).append(d.where[2])
        return out

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver_factory() -> Iterator[Callable[..., Receiver]]:
    made: list[Receiver] = []

    def make(policy: Policy | None = None, port: int = 0) -> Receiver:
        r = Receiver(policy, port)
        r.thread.start()
        made.append(r)
        return r

    try:
        yield make
    finally:
        for r in made:
            r.close()
