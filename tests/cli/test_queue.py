"""``tidelog queue ...`` against a real broker: consume with answers on standard input, status,
and the dead-letter commands."""

from __future__ import annotations

import json

import pytest

from tidelog.testing import BrokerThread

from .helpers import cli, free_port
from .test_groups import create, one_red_line, produce


def test_consume_status_and_the_dead_letter_commands(tidelog_broker: BrokerThread) -> None:
    address = tidelog_broker.address
    create(address, "jobs")
    produce(address, "jobs", [(0, b"j0"), (0, b"j1"), (0, b"j2")])

    # a bad answer is asked again; r rejects, n nacks, Enter acks
    consumed = cli(
        address, "--json", "queue", "consume", "g", "jobs", "-n", "3", input="x\nr\nn\n\n"
    )
    assert consumed.exit_code == 0, consumed.output
    lines = [json.loads(line) for line in consumed.stdout.splitlines()]
    assert [x["value"] for x in lines] == ["j0", "j1", "j2"]
    assert {x["delivery_count"] for x in lines} == {1}
    assert "answer a, n, r or q, not 'x'" in consumed.stderr

    status = cli(address, "--json", "queue", "status", "g")
    assert status.exit_code == 0, status.output
    data = json.loads(status.stdout)
    [p] = data["partitions"]
    assert (p["acked"], p["dead_lettered"], p["in_flight"]) == (1, 1, 0)
    assert p["available"] + p["delayed"] == 1, data  # the nacked one, in its backoff
    assert data["dead_letter_topics"] == {"jobs.dlq": 1}
    assert data["settings"]["max_delivery_attempts"] == "5"
    shown = cli(address, "queue", "status", "g")
    assert shown.exit_code == 0 and "dead letters in jobs.dlq: 1" in shown.stdout

    listed = json.loads(cli(address, "--json", "queue", "dlq", "list", "jobs.dlq").stdout)
    [letter] = listed["records"]
    assert (letter["value"], letter["offset"]) == ("j0", 0)
    assert letter["dead_letter"]["reason"] == "rejected"
    assert letter["dead_letter"]["source_topic"] == "jobs"
    one = cli(address, "queue", "dlq", "show", "jobs.dlq", "0")
    assert one.exit_code == 0 and "reason: rejected" in one.stdout
    assert "no dead letter at jobs.dlq[0]@7" in one_red_line(
        cli(address, "queue", "dlq", "show", "jobs.dlq", "7")
    )

    redriven = cli(address, "--json", "queue", "dlq", "redrive", "jobs.dlq", "--rate", "1000")
    assert redriven.exit_code == 0, redriven.output
    assert json.loads(redriven.stdout)["redriven"] == 1
    again = cli(address, "--json", "queue", "dlq", "redrive", "jobs.dlq")
    assert json.loads(again.stdout)["redriven"] == 0  # it resumes after what it sent

    purged = cli(address, "queue", "dlq", "purge", "jobs.dlq", "--yes")
    assert purged.exit_code == 0, purged.output
    assert "no dead letters in jobs.dlq" in cli(address, "queue", "dlq", "list", "jobs.dlq").stdout


def test_quit_releases_the_message(tidelog_broker: BrokerThread) -> None:
    address = tidelog_broker.address
    create(address, "jobs")
    produce(address, "jobs", [(0, b"j0")])
    quit_ = cli(address, "--json", "queue", "consume", "g", "jobs", input="q\n")
    assert quit_.exit_code == 0, quit_.output
    taken = cli(address, "--json", "queue", "consume", "g", "jobs", "--auto-ack", "-n", "1")
    assert json.loads(taken.stdout)["delivery_count"] == 2  # released, delivered again


def test_bad_arguments_are_usage_errors(tidelog_broker: BrokerThread) -> None:
    address = tidelog_broker.address
    bad = cli(address, "queue", "dlq", "show", "jobs.dlq", "x:1")
    assert bad.exit_code == 2 and "OFFSET or PARTITION:OFFSET" in bad.stderr
    assert "does not exist" in one_red_line(cli(address, "queue", "dlq", "list", "nope.dlq"))
    assert "no share group" in one_red_line(cli(address, "queue", "status", "nope"))


QUEUE_COMMANDS = [
    ["queue", "status", "g"],
    ["queue", "dlq", "list", "t.dlq"],
    ["queue", "dlq", "purge", "t.dlq", "--yes"],
]


@pytest.mark.parametrize("args", QUEUE_COMMANDS, ids=" ".join)
def test_broker_down_is_one_line(args: list[str]) -> None:
    address = f"127.0.0.1:{free_port()}"
    assert "cannot reach broker" in one_red_line(cli(address, *args))


def test_help_has_examples() -> None:
    for path in (
        [],
        ["consume"],
        ["status"],
        ["dlq"],
        ["dlq", "list"],
        ["dlq", "show"],
        ["dlq", "redrive"],
        ["dlq", "purge"],
    ):
        shown = cli(None, "queue", *path, "--help")
        assert shown.exit_code == 0, shown.output
        assert "Example" in shown.output, path
