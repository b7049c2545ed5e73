"""A real cluster for system tests: one etcd and N broker processes, each stopped by PID.

Brokers listen on ephemeral loopback ports (a restarted broker gets a new one and registers it
again); etcd runs from Debian's ``etcd-server`` (installed by ``.ci/run``). Without the etcd
binary these tests are skipped locally and fail under CI.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tidelog.etcd import EtcdClient, EtcdProcess
from tidelog.etcd.process import INSTALL_HINT
from tidelog.server.cluster.records import (
    ClusterKeys,
    ControllerRecord,
    PartitionState,
    decode,
)
from tidelog.server.log.powerloss import (
    JOURNAL_ENV,
    SLOW_FSYNC_ENV,
    PowerLossReport,
    replay_power_loss,
)

from .procs import BrokerProcess

T = TypeVar("T")
LEASE_TTL_S = 2
DEADLINE_S = 30.0


def need_etcd() -> None:
    if shutil.which("etcd") is None:
        if os.environ.get("CI"):
            pytest.fail(INSTALL_HINT)
        pytest.skip(INSTALL_HINT)


class Cluster:
    """Brokers 1..N of cluster ``name`` over ``etcd``."""

    DEFAULT_OPTIONS = ("--replication-factor", "1")

    def __init__(
        self,
        root: Path,
        etcd: EtcdProcess,
        name: str = "test",
        options: tuple[str, ...] = DEFAULT_OPTIONS,
        *,
        journals: bool = False,
        slow_fsync_ms: int = 0,
    ) -> None:
        """``options`` go to every broker: by default one replica per partition (the tests of
        clusters before replication); the replication tests pass their own. With
        ``journals`` each broker journals what it fsyncs, so that :meth:`power_loss` can drop
        what it had not (``slow_fsync_ms``: each fsync of log data takes that long first)."""
        self.root = root
        self.journals = journals
        self.slow_fsync_ms = slow_fsync_ms
        self.etcd = etcd
        self.name = name
        self.options = options
        self.keys = ClusterKeys(name)
        self.brokers: dict[int, BrokerProcess] = {}
        self.started: list[tuple[int, BrokerProcess]] = []
        """Every broker process started, in order (their logs, after restarts)."""

    def start(self, broker_id: int, *extra: str, endpoint: str | None = None) -> BrokerProcess:
        proc = BrokerProcess(
            self.root / f"broker-{broker_id}",
            "--broker-id", str(broker_id),
            "--etcd", endpoint or self.etcd.endpoint,
            "--cluster-id", self.name,
            "--etcd-lease-ttl-s", str(LEASE_TTL_S),
            *self.options,
            *extra,
            env=self._journal_env(broker_id),
        ).start()  # fmt: skip
        self.brokers[broker_id] = proc
        self.started.append((broker_id, proc))
        return proc

    def kill(self, broker_id: int) -> None:
        self.brokers[broker_id].close()

    def restart(self, broker_id: int) -> BrokerProcess:
        """Start a stopped broker again on the port it had, as a machine that reboots comes
        back at its address (clients whose bootstrap list names it find it again)."""
        port = self.address(broker_id).rsplit(":", 1)[1]
        return self.start(broker_id, "--port", port)

    def _journal(self, broker_id: int) -> Path:
        return self.root / f"powerloss-journal-{broker_id}"

    def _journal_env(self, broker_id: int) -> dict[str, str] | None:
        if not self.journals:
            return None
        return {
            JOURNAL_ENV: str(self._journal(broker_id)),
            SLOW_FSYNC_ENV: str(self.slow_fsync_ms),
        }

    def power_loss(self, broker_id: int) -> PowerLossReport:
        """SIGKILL a broker, then leave its data dir as a power loss would: every byte it had
        not fsynced dropped (:mod:`tidelog.server.log.powerloss`). Start it again after."""
        self.kill(broker_id)
        return self.replay_power_loss(broker_id)

    def replay_power_loss(self, broker_id: int) -> PowerLossReport:
        """Leave a killed broker's data dir as a power loss would (see :meth:`power_loss`)."""
        assert self.journals, "a cluster started without power-loss journals"
        data_dir = self.brokers[broker_id].data_dir
        return replay_power_loss(str(data_dir), str(self._journal(broker_id)))

    def address(self, broker_id: int) -> str:
        return self.brokers[broker_id].address

    def stop_all(self) -> None:
        for proc in self.brokers.values():
            proc.close()

    # --- what etcd says ------------------------------------------------------------------

    def etcd_call(self, call: Callable[[EtcdClient], Coroutine[Any, Any, T]]) -> T:
        async def main() -> T:
            async with EtcdClient([self.etcd.endpoint]) as client:
                return await call(client)

        return asyncio.run(main())

    def controller(self) -> ControllerRecord | None:
        kv = self.etcd_call(lambda c: c.get(self.keys.controller))
        return None if kv is None else decode(kv.value, ControllerRecord)

    def live_brokers(self) -> list[int]:
        kvs, _ = self.etcd_call(lambda c: c.range(self.keys.brokers, prefix=True))
        return sorted(int(kv.key.rsplit(b"/", 1)[1]) for kv in kvs)

    def partitions(self, topic: str) -> dict[int, PartitionState]:
        kvs, _ = self.etcd_call(lambda c: c.range(self.keys.partitions_of(topic), prefix=True))
        return {int(kv.key.rsplit(b"/", 1)[1]): decode(kv.value, PartitionState) for kv in kvs}

    def wait_until(self, what: str, check: Callable[[], bool], within: float = DEADLINE_S) -> float:
        """Poll ``check`` until it holds; the seconds it took. Fails naming ``what``."""
        start = time.monotonic()
        while not check():
            if time.monotonic() - start > within:
                raise AssertionError(f"{what}: not within {within:g}s")
            time.sleep(0.05)
        return time.monotonic() - start


@contextmanager
def cluster(
    root: Path,
    brokers: int,
    name: str = "test",
    options: tuple[str, ...] | None = None,
    start: Callable[[Cluster, int], object] = Cluster.start,
    *,
    journals: bool = False,
    slow_fsync_ms: int = 0,
) -> Iterator[Cluster]:
    """A cluster of ``brokers`` brokers, each begun by ``start(cluster, broker_id)``;
    ``journals``: brokers that journal their fsyncs (:meth:`Cluster.power_loss`)."""
    need_etcd()
    with EtcdProcess(root / "etcd") as etcd:
        c = Cluster(
            root,
            etcd,
            name,
            options or Cluster.DEFAULT_OPTIONS,
            journals=journals,
            slow_fsync_ms=slow_fsync_ms,
        )
        try:
            for b in range(1, brokers + 1):
                start(c, b)
            c.wait_until("every broker registered", lambda: len(c.live_brokers()) == brokers)
            c.wait_until("a controller", lambda: c.controller() is not None)
            yield c
        finally:
            c.stop_all()
