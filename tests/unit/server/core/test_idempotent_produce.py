"""Idempotent produce through the request core: duplicates, gaps, fencing, and producer
state that survives a clean restart (snapshot) and an unclean one (replay)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from tidelog.server.config import BrokerConfig
from tidelog.server.core import BrokerCore, Session
from tidelog.server.core.idempotence import ID_BLOCK, IDS_FILE
from tidelog.server.log import TopicPartition
from tidelog.server.log.producers import SNAPSHOT_SUFFIX
from tidelog.wire import messages as m
from tidelog.wire.errors import ErrorCode

from .helpers import idempotent_batch, produce

SESSION = Session("127.0.0.1", 40000)
TOPIC = "events"
TP = TopicPartition(TOPIC, 0)


async def call(core: BrokerCore, request: m.Request, data: bytes = b"") -> m.Response:
    reply = await core.handle(request, bytearray(data), SESSION)
    assert reply is not None
    return reply[0]


async def send(core: BrokerCore, batch: bytes) -> m.ProducePartitionResult:
    request, data = produce(TOPIC, batch, acks=m.Acks.ALL)
    response = await call(core, request, data)
    assert isinstance(response, m.ProduceResponse)
    return response.partitions[0]


async def init_id(core: BrokerCore, pid: int = -1, epoch: int = -1) -> tuple[int, int]:
    response = await call(core, m.InitProducerIdRequest(producer_id=pid, producer_epoch=epoch))
    assert isinstance(response, m.InitProducerIdResponse)
    assert response.error_code == 0
    return response.producer_id, response.producer_epoch


def run(tmp_path: Path, body: Callable[[BrokerCore], Awaitable[None]]) -> None:
    async def main() -> None:
        core = BrokerCore(BrokerConfig(data_dir=tmp_path))
        await core.open()
        if core.manager.partition_count(TOPIC) is None:
            core.manager.create_topic(TOPIC, 1)
        try:
            await body(core)
        finally:
            core.begin_shutdown()
            await core.shutdown()

    asyncio.run(main())


def test_a_retried_batch_is_answered_with_its_original_offsets(tmp_path: Path) -> None:
    async def body(core: BrokerCore) -> None:
        pid, epoch = await init_id(core)
        first = await send(core, idempotent_batch(pid, epoch, 0, b"a", b"b"))
        second = await send(core, idempotent_batch(pid, epoch, 2, b"c"))
        again = await send(core, idempotent_batch(pid, epoch, 0, b"a", b"b"))
        assert (first.base_offset, second.base_offset, again.base_offset) == (0, 2, 0)
        assert again.error_code == 0
        assert core.manager.get_log(TP).log_end_offset == 3

    run(tmp_path, body)


def test_a_gap_and_an_old_epoch_are_refused(tmp_path: Path) -> None:
    async def body(core: BrokerCore) -> None:
        pid, epoch = await init_id(core)
        await send(core, idempotent_batch(pid, epoch, 0, b"a"))
        gap = await send(core, idempotent_batch(pid, epoch, 5, b"x"))
        assert gap.error_code == ErrorCode.OUT_OF_ORDER_SEQUENCE
        pid2, epoch2 = await init_id(core, pid, epoch)
        assert (pid2, epoch2) == (pid, epoch + 1)
        await send(core, idempotent_batch(pid, epoch2, 0, b"new"))
        fenced = await send(core, idempotent_batch(pid, epoch, 1, b"zombie"))
        assert fenced.error_code == ErrorCode.INVALID_PRODUCER_EPOCH
        assert core.manager.get_log(TP).log_end_offset == 2

    run(tmp_path, body)


@pytest.mark.parametrize("clean", [True, False], ids=["clean restart", "unclean restart"])
def test_producer_state_survives_a_restart(tmp_path: Path, clean: bool) -> None:
    ids: list[tuple[int, int]] = []

    async def before(core: BrokerCore) -> None:
        ids.append(await init_id(core))
        pid, epoch = ids[0]
        for seq in range(7):
            await send(core, idempotent_batch(pid, epoch, seq, b"%d" % seq))
        if not clean:  # as after a SIGKILL: no snapshot, the log is replayed
            core.state.writes = None

    async def after(core: BrokerCore) -> None:
        pid, epoch = ids[0]
        duplicate = await send(core, idempotent_batch(pid, epoch, 6, b"6"))
        assert (duplicate.error_code, duplicate.base_offset) == (0, 6)
        gap = await send(core, idempotent_batch(pid, epoch, 9, b"9"))
        assert gap.error_code == ErrorCode.OUT_OF_ORDER_SEQUENCE
        assert core.manager.get_log(TP).log_end_offset == 7
        new_pid, _ = await init_id(core)
        assert new_pid != pid  # ids are never handed out twice

    run(tmp_path, before)
    snapshots = list((tmp_path / "events-0").glob("*" + SNAPSHOT_SUFFIX))
    assert len(snapshots) == (1 if clean else 0)
    run(tmp_path, after)


def test_producer_ids_are_reserved_in_blocks_before_use(tmp_path: Path) -> None:
    async def body(core: BrokerCore) -> None:
        pid, _ = await init_id(core)
        assert (tmp_path / IDS_FILE).read_text().strip() == str(pid + ID_BLOCK)

    run(tmp_path, body)
    run(tmp_path, body)  # the second broker starts after the first block
