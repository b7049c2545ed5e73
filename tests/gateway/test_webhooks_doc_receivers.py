"""The receivers docs/HTTP.md shows (Python and Node.js), run as written but on a free port,
against a real gateway: signed deliveries are acknowledged and printed; a subscription with another
secret is refused by the receiver (401) and its records end in the dead letters."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tidelog.etcd.process import free_port

from .conftest import eventually
from .test_webhooks import TIMEOUT_S, make_topic, produce, subscribe

HTTP_MD = Path(__file__).resolve().parents[2] / "docs" / "HTTP.md"
SECRET = "a-secret-of-16-chars-or-more"
NODE = shutil.which("node")


def receiver_source(language: str) -> str:
    """The first ``language`` code block after "A receiver in Python" in docs/HTTP.md."""
    text = HTTP_MD.read_text().split("A receiver in Python", 1)[1]
    found = re.search(rf"```{language}\n(.*?)```", text, re.DOTALL)
    assert found, f"no {language} receiver in docs/HTTP.md"
    source = found.group(1)
    assert SECRET in source and "9000" in source
    return source


class ReceiverProcess:
    """The documented receiver as a process on a free loopback port; the lines it prints on
    standard output (the Python one logs each request on standard error)."""

    def __init__(self, argv: list[str], source: str, tmp: Path) -> None:
        self.port = free_port()
        script = tmp / ("receiver.js" if argv[0] == NODE else "receiver.py")
        script.write_text(source.replace("9000", str(self.port)))
        self.proc = subprocess.Popen(
            [*argv, str(script)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        eventually(self._listening, "the receiver listening", TIMEOUT_S)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def _listening(self) -> bool:
        assert self.proc.poll() is None, self.lines
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self) -> None:
        self.proc.kill()  # by its own PID
        self.proc.wait(TIMEOUT_S)
        self.reader.join(TIMEOUT_S)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture(params=["python", "node"])
def documented(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ReceiverProcess]:
    if request.param == "python":
        argv, source = [sys.executable, "-u"], receiver_source("python")
    else:
        if NODE is None:
            if os.environ.get("CI"):
                pytest.fail("Node.js is missing (apt-get install nodejs)")
            pytest.skip("Node.js is missing (apt-get install nodejs)")
        argv, source = [NODE], receiver_source("js")
    receiver = ReceiverProcess(argv, source, tmp_path)
    try:
        yield receiver
    finally:
        receiver.stop()


def test_the_documented_receiver_takes_signed_deliveries_and_refuses_others(
    http: httpx.Client, documented: ReceiverProcess
) -> None:
    make_topic(http, "orders")
    produce(http, "orders", [{"value": {"total": n}} for n in range(3)])
    subscribe(http, "billing", documented.url, topic="orders", secret=SECRET)
    subscribe(http, "forged", documented.url, topic="orders", secret="another-secret-16")

    def dead_letters() -> list[dict[str, str]]:
        r = http.get(
            "/v1/topics/_tidelog_dlq.forged/partitions/0/records", params={"offset": "earliest"}
        )
        if r.status_code != 200:  # the topic is created with the first dead letter
            return []
        return [{h["name"]: h["value"] for h in x["headers"]} for x in r.json()["records"]]

    eventually(lambda: len(documented.lines) == 3, "3 values printed")
    eventually(lambda: len(dead_letters()) == 3, "3 refused records dead-lettered")
    printed = [re.sub("[ '\"]", "", line) for line in documented.lines]  # a dict or JS object
    assert printed == ["{total:0}", "{total:1}", "{total:2}"]
    assert {(d["tidelog.dead_letter.reason"], d["tidelog.dead_letter.status"])
            for d in dead_letters()} == {("rejected", "401")}  # fmt: skip
    billing = http.get("/v1/subscriptions/billing").json()
    assert billing["delivery"]["deliveries"] == 3
