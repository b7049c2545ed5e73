"""Share state stored as deltas (tidelog/server/shares/records.py): each change writes a record
per changed offset and the partition's start and end, and what a compacted topic keeps of them
(each key's last value) reads back as the state the broker had, locks released."""

from __future__ import annotations

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from tidelog.server.log import TopicPartition
from tidelog.server.shares.partition import RecordState, SharePartition
from tidelog.server.shares.records import (
    EntryRecord,
    PartitionRecord,
    Row,
    changed_rows,
    decode_partition,
    entry_key,
    partition_key,
    sort_rows,
)
from tidelog.server.shares.settings import ShareSettings

TP = TopicPartition("jobs", 0)
SETTINGS = ShareSettings()


def store(sp: SharePartition, log: dict[bytes, bytes | None]) -> list[Row]:
    """Persist what changed, as the coordinator does; ``log`` keeps each key's last value."""
    rows = changed_rows("g", TP, sp, sp.take_dirty())
    log.update(rows)
    return rows


def reread(log: dict[bytes, bytes | None]) -> SharePartition:
    return decode_partition(sort_rows(log).partitions["g", TP], SETTINGS)


def summary(sp: SharePartition) -> tuple[int, int, int, int, dict[int, tuple[int, int, str]]]:
    """What survives a restart: window, counters, and per record (state with locks released,
    delivery count, last error)."""
    released = {
        o: (
            int(RecordState.AVAILABLE if r.state is RecordState.ACQUIRED else r.state),
            r.delivery_count,
            r.last_error,
        )
        for o, r in sp.records.items()
    }
    return sp.start, sp.end, sp.acked, sp.dead_lettered, released


def test_a_change_writes_only_the_offsets_it_touched() -> None:
    sp, log = SharePartition(0), {}
    for o in range(100):
        sp.acquire(o, "m", 0, 0, 1000)
    assert len(store(sp, log)) == 101  # an entry record each, and the partition record
    sp.accept(0, "m", 1)
    sp.release(7, "m", 1, SETTINGS, 0, "boom")
    rows = store(sp, log)
    keys = [entry_key("g", TP, 0), entry_key("g", TP, 7), partition_key("g", TP)]
    assert [k for k, _ in rows] == keys
    assert rows[0][1] is None  # the ack: a tombstone
    sp.renew(8, "m", 1, 1000)  # a lock is not stored
    assert store(sp, log) == [(partition_key("g", TP), rows[-1][1])]


def test_what_the_compacted_topic_keeps_reads_back_as_the_state() -> None:
    sp, log = SharePartition(10), {}
    for o in range(10, 20):
        sp.acquire(o, "m", 0, 5, 1000)
    store(sp, log)
    sp.accept(10, "m", 1)
    sp.accept(11, "m", 1)
    sp.accept(15, "m", 1)
    sp.release(12, "m", 1, SETTINGS, 0, "try again")
    sp.reject(13, "m", 1, "bad")
    store(sp, log)
    back = reread(log)
    assert summary(back) == summary(sp)
    assert (back.start, back.end, back.acked) == (12, 20, 3)
    assert back.records[14].state is RecordState.AVAILABLE  # its lock did not survive
    assert back.records[14].expired
    assert back.dead_lettering() == [13]


def test_a_record_on_its_last_attempt_is_dead_lettered_after_a_restart() -> None:
    sp, log = SharePartition(0), {}
    last = ShareSettings().altered([("max_delivery_attempts", "1")])
    sp.acquire(0, "m", 0, 0, 1000)
    store(sp, log)
    back = decode_partition(sort_rows(log).partitions["g", TP], last)
    assert back.records[0].state is RecordState.ARCHIVING
    assert back.records[0].reason == "lock_expired"
    assert back.dead_lettering() == [0]


def test_a_version_1_snapshot_is_read_and_rewritten_as_entries() -> None:
    entries = [
        EntryRecord(5, int(RecordState.ACQUIRED), 2, 100, 200, "err"),
        EntryRecord(7, 0, 1, 1, 1),
    ]
    old = msgspec.msgpack.encode(PartitionRecord(1, 5, 9, entries, acked=3))
    log: dict[bytes, bytes | None] = {partition_key("g", TP): old}
    sp = reread(log)
    assert (sp.start, sp.end, sp.acked) == (5, 9, 3)
    assert sp.records[5].delivery_count == 2 and sp.records[5].last_error == "err"
    assert sorted(sp.dirty) == [5, 7]  # the next change stores them as entry records
    sp.acquire(7, "m", 0, 0, 1000)
    store(sp, log)  # the partition record of version 2 replaces the snapshot
    assert summary(reread(log)) == summary(sp)


def test_entries_below_the_start_are_settled_whatever_they_say() -> None:
    sp, log = SharePartition(0), {}
    sp.acquire(0, "m", 0, 0, 1000)
    store(sp, log)
    stale = log[entry_key("g", TP, 0)]
    sp.accept(0, "m", 1)
    store(sp, log)
    log[entry_key("g", TP, 0)] = stale  # as if its tombstone had been lost
    assert reread(log).records == {}


def test_the_start_follows_settling_in_and_out_of_order() -> None:
    sp = SharePartition(0)
    for o in range(200):
        sp.acquire(o, "m", 0, 0, 1000)
    sp.accept(1, "m", 1)
    assert sp.start == 0
    sp.accept(0, "m", 1)
    assert sp.start == 2
    for o in range(3, 150):
        sp.accept(o, "m", 1)
    sp.accept(2, "m", 1)  # a long run of settled offsets behind it
    assert sp.start == 150
    sp.extend_to(10_000)  # a gap at the end
    for o in range(150, 200):
        sp.accept(o, "m", 1)
    assert (sp.start, sp.end) == (10_000, 10_000)


OPS = st.lists(
    st.tuples(
        st.sampled_from(
            ["acquire", "accept", "release", "reject", "expire", "archive", "leave", "redeliver"]
        ),
        st.integers(0, 30),
    ),
    max_size=80,
)


@settings(max_examples=200, deadline=None)
@given(OPS, st.lists(st.integers(1, 80), max_size=10))
def test_any_history_reads_back_as_the_live_state(
    ops: list[tuple[str, int]], cuts: list[int]
) -> None:
    sp, log = SharePartition(0), {}
    for i, (op, o) in enumerate(ops):
        now = i + 1
        entry = sp.records.get(o)
        held = entry is not None and entry.state is RecordState.ACQUIRED and entry.lock_until > now
        if op == "acquire" and (o >= sp.end or (entry and entry.state is RecordState.AVAILABLE)):
            sp.acquire(o, "m", now, now, 5)
        elif op == "accept" and held:
            sp.accept(o, "m", now)
            assert sp.start == min(sp.records, default=sp.end)  # settling moves the start
        elif op == "release" and held:
            sp.release(o, "m", now, SETTINGS, -1, f"e{i}")
        elif op == "reject" and held:
            sp.reject(o, "m", now, "no")
        elif op == "expire":  # the scan is skipped until a lock may be due: same answer
            due = [o for o, r in sp.records.items() if r.state is RecordState.ACQUIRED]
            expired = sum(sp.records[d].lock_until <= now + o for d in due)
            assert sp.expire(now + o, SETTINGS) == expired
        elif op == "redeliver":
            ready = sorted(
                d
                for d, r in sp.records.items()
                if r.state is RecordState.AVAILABLE and r.available_at <= now + o
            )
            assert sp.redeliverable(now + o, 3) == ready[:3]
        elif op == "archive":
            for d in sp.dead_lettering()[:1]:
                sp.archived(d)
        elif op == "leave":
            sp.release_member("m", now, SETTINGS)
        if i in cuts:
            store(sp, log)
    store(sp, log)
    back = reread(log)
    assert summary(back) == summary(sp)
    waiting = sorted(o for o, r in back.records.items() if r.state is RecordState.AVAILABLE)
    assert back.redeliverable(2**62, len(back.records)) == waiting  # all of them, at once
    assert sp.start <= min(sp.records, default=sp.end)
    assert sp.dead_lettering() == sorted(
        o for o, r in sp.records.items() if r.state is RecordState.ARCHIVING
    )
