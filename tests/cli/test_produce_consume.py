"""``tidelog produce`` and ``tidelog consume`` in-process against a real broker."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import pytest

from tidelog.cli import parsing
from tidelog.client import AdminClient, Consumer, OffsetSpec, Producer, TopicPartition
from tidelog.testing import BrokerThread

from .helpers import cli, run


def create(address: str, name: str, partitions: int = 1) -> None:
    async def main() -> None:
        async with AdminClient(address) as admin:
            await admin.create_topic(name, partitions)

    run(main())


def read_all(address: str, topic: str, partitions: int = 1) -> list[Any]:
    async def main() -> list[Any]:
        async with Consumer(address, auto_offset_reset="earliest") as consumer:
            tps = [TopicPartition(topic, p) for p in range(partitions)]
            consumer.assign(tps)
            out: list[Any] = []
            async with AdminClient(address) as admin:
                found = await admin.list_offsets(dict.fromkeys(tps, OffsetSpec.LATEST))
            while len(out) < sum(o.offset for o in found.values()):
                for records in (await consumer.getmany(timeout=5)).values():
                    out.extend(records)
            return out

    return run(main())


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_values_as_arguments_and_json_output(tidelog_broker: BrokerThread) -> None:
    address = tidelog_broker.address
    create(address, "t")
    sent = cli(address, "produce", "t", "a", "b", "--key", "k1", "-H", "src=test", "-H", "n=1")
    assert sent.exit_code == 0, sent.output
    assert "sent 2 records" in sent.output and "partition 0 offsets 0-1" in sent.output
    records = read_all(address, "t")
    assert [(r.key, r.value, r.headers) for r in records] == [
        (b"k1", b"a", (("src", b"test"), ("n", b"1"))),
        (b"k1", b"b", (("src", b"test"), ("n", b"1"))),
    ]
    out = cli(address, "consume", "t", "--from-beginning", "--format", "json")
    assert out.exit_code == 0, out.output
    first, second = json_lines(out.stdout)
    assert first["key"] == "k1" and first["value"] == "a" and first["offset"] == 0
    assert first["headers"] == [{"key": "src", "value": "test"}, {"key": "n", "value": "1"}]
    assert second["offset"] == 1 and second["partition"] == 0 and second["timestamp"] > 0
    assert json_lines(cli(address, "--json", "consume", "t", "-b").stdout) == [first, second]

    summary = json.loads(cli(address, "--json", "produce", "t", "c").stdout)
    assert summary["records"] == 1
    assert summary["partitions"] == {"0": {"first_offset": 2, "last_offset": 2, "records": 1}}


def test_stdin_with_key_separator_and_pretty_output(tidelog_broker: BrokerThread) -> None:
    address = tidelog_broker.address
    create(address, "t")
    lines = 'u1:{"page": "/", "n": 1}\nu2:plain text\r\n'
    sent = cli(address, "produce", "t", "--key-separator", ":", input=lines)
    assert sent.exit_code == 0, sent.output
    records = read_all(address, "t")
    assert [(r.key, r.value) for r in records] == [
        (b"u1", b'{"page": "/", "n": 1}'),
        (b"u2", b"plain text"),
    ]
    pretty = cli(address, "consume", "t", "--from-beginning")
    assert pretty.exit_code == 0, pretty.output
    text = pretty.output
    assert "partition 0" in text and "offset 1" in text and "key u1" in text
    assert '  "page": "/",' in text  # JSON values are pretty-printed
    assert "plain text" in text

    missing = cli(address, "produce", "t", "--key-separator", ":", input="ok:1\nno separator\n")
    assert missing.exit_code == 1
    assert "line 2 has no key separator ':'" in missing.output


def test_invalid_json_input_stops_at_the_bad_line(tidelog_broker: BrokerThread) -> None:
    address = tidelog_broker.address
    create(address, "t")
    result = cli(address, "produce", "t", "--format", "json", input='{"a": 1}\n[1, 2]\n{oops\n3\n')
    assert result.exit_code == 1
    assert "line 3 is not valid JSON" in result.output
    assert "2 records before it were sent" in result.output
    assert [r.value for r in read_all(address, "t")] == [b'{"a": 1}', b"[1, 2]"]


def test_usage_errors_exit_2(tidelog_broker: BrokerThread) -> None:
    address = tidelog_broker.address
    create(address, "t")
    cases = [
        ["produce", "t", "v", "--header", "novalue"],
        ["produce", "t", "v", "--acks", "sometimes"],
        ["produce", "t", "v", "--key", "k", "--key-separator", ":"],
        ["produce", "t", "v", "--file", "x.txt"],
        ["consume", "t", "--from-beginning", "--offset", "3"],
        ["consume", "t", "--from-time", "yesterday-ish"],
        ["consume", "t", "--format", "xml"],
        ["tail", "t", "--grep", "("],
    ]
    for args in cases:
        result = cli(address, *args)
        assert result.exit_code == 2, (args, result.output)
        assert "Traceback" not in result.output


def test_missing_topic_and_partition(tidelog_broker: BrokerThread) -> None:
    address = tidelog_broker.address
    create(address, "t", 2)
    for args in (["produce", "nope", "v"], ["consume", "nope", "-b"], ["tail", "nope"]):
        result = cli(address, *args)
        assert result.exit_code == 1, (args, result.output)
        assert "'nope'" in result.output and "does not exist" in result.output
    for args in (["produce", "t", "v", "-p", "5"], ["consume", "t", "-p", "5"]):
        result = cli(address, *args)
        assert result.exit_code == 1, (args, result.output)
        assert "no partition 5" in result.output


def test_bytes_that_are_not_utf8_are_base64_in_json(tidelog_broker: BrokerThread) -> None:
    address = tidelog_broker.address
    create(address, "t")

    async def send() -> None:
        async with Producer(address) as producer:
            await producer.send_and_wait(
                "t", b"\xff\x00binary", key=b"\xfe", headers=[("h", b"\x80")]
            )

    run(send())
    (record,) = json_lines(cli(address, "consume", "t", "-b", "--format", "json").stdout)
    assert record["value_encoding"] == "base64" and record["key_encoding"] == "base64"
    assert base64.b64decode(record["value"]) == b"\xff\x00binary"
    assert base64.b64decode(record["key"]) == b"\xfe"
    assert record["headers"] == [{"key": "h", "value": "gA==", "encoding": "base64"}]
    raw = cli(address, "consume", "t", "-b", "--format", "raw")
    assert raw.stdout_bytes == b"\xff\x00binary"
    pretty = cli(address, "consume", "t", "-b")
    assert "\\xff\\x00binary" in pretty.output


def test_start_positions_and_count(tidelog_broker: BrokerThread) -> None:
    address = tidelog_broker.address
    create(address, "t", 2)
    now = int(time.time() * 1000)

    async def send() -> None:
        async with Producer(address) as producer:
            for i in range(10):
                ts = now - 3_600_000 if i < 5 else now  # five an hour ago, five now
                await producer.send("t", f"v{i}".encode(), partition=i % 2, timestamp=ts)

    run(send())

    def values(*args: str) -> list[str]:
        result = cli(address, "consume", "t", "--format", "value", *args)
        assert result.exit_code == 0, result.output
        return result.stdout.splitlines()

    assert sorted(values("-b")) == [f"v{i}" for i in range(10)]
    assert values("-b", "-p", "1") == ["v1", "v3", "v5", "v7", "v9"]
    assert values("-p", "0", "--offset", "3") == ["v6", "v8"]
    assert values("-p", "0", "--offset", "-1") == ["v8"]
    assert values("-p", "0", "--offset", "99") == []  # clamped to the end: nothing to read
    assert values("-p", "1", "--from-time", "-30m") == ["v5", "v7", "v9"]
    assert values("-p", "1", f"--from-time={now - 7_200_000}") == ["v1", "v3", "v5", "v7", "v9"]
    assert len(values("-b", "--count", "3")) == 3
    assert values("-p", "0", "-b", "-n", "2") == ["v0", "v2"]


def test_file_of_100000_lines_round_trips(tidelog_broker: BrokerThread, tmp_path: Path) -> None:
    address = tidelog_broker.address
    create(address, "big")
    lines = [f'{i} {{"n": {i}}} {"x" * (i % 50)}' for i in range(100_000)]
    path = tmp_path / "lines.txt"
    path.write_text("\n".join(lines) + "\n")

    sent = cli(address, "--json", "produce", "big", "--file", str(path), "--compression", "lz4")
    assert sent.exit_code == 0, sent.output
    summary = json.loads(sent.stdout)
    assert summary["records"] == 100_000
    assert summary["partitions"]["0"] == {
        "first_offset": 0,
        "last_offset": 99_999,
        "records": 100_000,
    }
    read = cli(
        address, "consume", "big", "--from-beginning", "--count", "100000", "--format", "value"
    )
    assert read.exit_code == 0, read.output[-2000:]
    assert read.stdout_bytes == path.read_bytes()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("-15m", 1_000_000_000_000 - 15 * 60_000),
        ("-1h30m", 1_000_000_000_000 - 90 * 60_000),
        ("-500ms", 1_000_000_000_000 - 500),
        ("-2d", 1_000_000_000_000 - 2 * 86_400_000),
        ("1700000000000", 1_700_000_000_000),
        ("2024-05-01T12:00:00+00:00", 1_714_564_800_000),
    ],
)
def test_parse_time(text: str, expected: int) -> None:
    assert parsing.parse_time_ms(text, now_ms=1_000_000_000_000) == expected


def test_tail_without_a_terminal_prints_lines(tidelog_broker: BrokerThread) -> None:
    address = tidelog_broker.address
    create(address, "t", 2)
    sent = cli(address, "produce", "t", "-p", "0", "a0", "a1", "a2")
    assert sent.exit_code == 0
    assert cli(address, "produce", "t", "-p", "1", "b0", "--key", "k").exit_code == 0
    tail = cli(address, "tail", "t", "--last", "2", "--count", "3")
    assert tail.exit_code == 0, tail.output
    lines = [line for line in tail.stdout.splitlines() if line]
    assert len(lines) == 3
    assert {line.split()[-1] for line in lines} == {"a1", "a2", "b0"}
    assert "p1 #0 k b0" in tail.stdout
    # Filters: the last record of each partition, only those with key k.
    as_json = cli(address, "--json", "tail", "t", "--last", "1", "--count", "1", "--key", "k")
    assert as_json.exit_code == 0, as_json.output
    assert [r["value"] for r in json_lines(as_json.stdout)] == ["b0"]


def test_acks_none_sends_without_offsets(tidelog_broker: BrokerThread) -> None:
    address = tidelog_broker.address
    create(address, "t")
    sent = cli(address, "--json", "produce", "t", "x", "y", "--acks", "none")
    assert sent.exit_code == 0, sent.output
    summary = json.loads(sent.stdout)
    assert summary["records"] == 2 and summary["partitions"] == {}


def test_an_endless_line_is_refused_without_holding_it_all(
    tidelog_broker: BrokerThread, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tidelog.cli.lines as lines_module

    monkeypatch.setattr(lines_module, "MAX_LINE", 1_000_000)  # a smaller bound, same code
    path = tmp_path / "one-line"
    path.write_bytes(b"x" * 3_000_000)  # no newline at all
    create(tidelog_broker.address, "t")
    result = cli(tidelog_broker.address, "produce", "t", "--file", str(path))
    assert result.exit_code == 1
    assert "longer than 1000000 bytes" in result.output
