"""The supervisor behind ``tidelog cluster``: etcd, N broker processes and one HTTP gateway,
their lifecycle and their status.

Operations (from the console, the control socket or a watcher) are serialised by one lock, so
``broker stop 2`` and an automatic restart of broker 2 never interleave. A broker's death is
seen by its watcher thread (:mod:`.procs`) at once: an exit the supervisor did not ask for
(including ``broker kill``, which is a failure on purpose) is reported through ``notify`` and,
with ``restart_on_failure``, answered by a restart. The gateway is supervised the same way, in
a slot of its own (:data:`GATEWAY`).
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

import httpx

from tidelog.client import AdminClient, TidelogError
from tidelog.etcd import EtcdError, EtcdNotInstalledError, EtcdProcess

from . import view
from .config import ClusterConfig
from .preflight import ClusterError, DataDirLock, check_ports
from .procs import ChildProcess, describe_exit, log_tail
from .state import StateFile

READY_TIMEOUT_S: Final = 60.0
POLL_S: Final = 0.1
"""Readiness is a remote fact (an HTTP answer): polled every POLL_S until a deadline."""
SETTLE_S: Final = 10.0
"""How long ``stop_broker`` waits for the controller to react to the stop."""
RESTART_WINDOW_S: Final = 60.0
MAX_RESTARTS: Final = 5
"""A broker restarted on failure more often than this within RESTART_WINDOW_S is left down."""
GATEWAY: Final = 0
"""The gateway's slot number (brokers are 1..N)."""

Notify = Callable[[str], None]


class BrokerState(StrEnum):
    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    DIED = "died"


@dataclass(slots=True)
class BrokerSlot:
    """Broker ``broker_id`` (or the gateway: :data:`GATEWAY`) and its current child, if any."""

    broker_id: int
    state: BrokerState = BrokerState.STOPPED
    child: ChildProcess | None = None
    expected_exit: bool = False
    last_exit: str = ""
    restarts: list[float] = field(default_factory=list)

    @property
    def pid(self) -> int | None:
        return self.child.pid if self.child is not None and self.child.alive else None

    @property
    def name(self) -> str:
        return "gateway" if self.broker_id == GATEWAY else f"broker {self.broker_id}"


class Supervisor:
    """Starts, watches and stops one local cluster (``config``). Thread-safe."""

    def __init__(self, config: ClusterConfig, notify: Notify = print) -> None:
        self.config = config
        self.notify = notify
        self.slots = {i: BrokerSlot(i) for i in config.broker_ids}
        self.gateway = BrokerSlot(GATEWAY) if config.gateway else None
        self.etcd: EtcdProcess | None = None
        self.endpoints: tuple[str, ...] = config.etcd
        self.state_file = StateFile(config.data_dir)
        self._ops = threading.RLock()
        self._dir_lock = DataDirLock(config.data_dir)
        self._closed = False

    # --- starting and stopping the whole cluster ---------------------------------------------

    def up(self) -> None:
        """Lock the data dir, check ports, start etcd (unless given) and every broker, and
        wait until all serve. On any failure everything started is stopped again and
        :class:`ClusterError` says why."""
        self._dir_lock.acquire()
        try:
            with self._ops:
                check_ports(self.config)
                self._start_etcd()
                for broker_id in self.config.broker_ids:
                    self._spawn(broker_id)
                if self.gateway is not None:
                    self._spawn(GATEWAY)  # a client: /ready once it reaches a broker
                self._wait_ready(list(self.config.broker_ids))
                self._wait_for(lambda v: v.controller >= 0, "a controller to be elected")
                if self.gateway is not None:
                    self._wait_ready([GATEWAY])
        except BaseException:
            self.shutdown()
            raise

    def _start_etcd(self) -> None:
        if self.endpoints:
            try:
                self._view()
            except EtcdError as exc:
                raise ClusterError(f"etcd at {', '.join(self.endpoints)}: {exc}") from None
            return
        try:
            self.etcd = EtcdProcess(self.config.data_dir / "etcd").start()
        except (EtcdNotInstalledError, RuntimeError) as exc:
            raise ClusterError(str(exc)) from None
        self.endpoints = (self.etcd.endpoint,)
        self._save()

    def shutdown(self) -> None:
        """Stop every broker (SIGTERM, SIGKILL after the grace period), then our etcd. Safe to
        call more than once."""
        with self._ops:
            if self._closed or not self._dir_lock.held:
                self._closed = True  # never started (the data dir is another's): nothing ours
                return
            self._closed = True
            running = [s for s in self._all_slots() if s.pid is not None]
            self._stop_many(running)
            if self.etcd is not None:
                self.etcd.stop()
            self.state_file.remove()
            self._dir_lock.release()

    @property
    def closed(self) -> bool:
        return self._closed

    # --- one broker -------------------------------------------------------------------------

    def slot(self, broker_id: int) -> BrokerSlot:
        slot = self.slots.get(broker_id)
        if slot is None:
            raise ClusterError(
                f"there is no broker {broker_id} in this cluster (brokers 1..{self.config.brokers})"
            )
        return slot

    def _running(self, broker_id: int) -> BrokerSlot:
        slot = self.slot(broker_id)
        if slot.pid is None:
            raise ClusterError(f"broker {broker_id} is not running ({slot.state})")
        return slot

    def stop_broker(self, broker_id: int) -> str:
        with self._ops:
            slot = self._running(broker_id)
            pid = slot.pid
            self._stop_many([slot])
            # A graceful stop revokes the broker's lease; wait (bounded) until the controller
            # has taken its partitions, so a `status` right after shows them leaderless.
            gone = self._settle(lambda v: broker_id not in v.brokers and not v.led_by(broker_id))
            led = f"; {gone}"
            return f"broker {broker_id} (pid {pid}) stopped{led}"

    def start_broker(self, broker_id: int) -> str:
        with self._ops:
            self._check_open()
            slot = self.slot(broker_id)
            if slot.pid is not None:
                raise ClusterError(f"broker {broker_id} is already running (pid {slot.pid})")
            check_ports(self.config, [broker_id])
            self._spawn(broker_id)
            self._wait_ready([broker_id])
            return f"broker {broker_id} started (pid {slot.pid})"

    def restart_broker(self, broker_id: int) -> str:
        with self._ops:
            slot = self.slot(broker_id)
            was = f", was {slot.pid}" if slot.pid is not None else ", was not running"
            if slot.pid is not None:
                self._stop_many([slot])
            self.start_broker(broker_id)
            return f"broker {broker_id} restarted (pid {slot.pid}{was})"

    def kill_broker(self, broker_id: int) -> str:
        """SIGKILL, like a power cut: the supervisor reports the death as it would any other
        (and restarts the broker with ``restart_on_failure``)."""
        with self._ops:
            slot = self._running(broker_id)
            child = slot.child
            assert child is not None
            pid = child.pid
            child.kill()
            return f"broker {broker_id} (pid {pid}) sent SIGKILL"

    def restart_all(self) -> str:
        """Stop every running broker, then start every broker, and wait until all serve."""
        with self._ops:
            self._check_open()
            self._stop_many([s for s in self.slots.values() if s.pid is not None])
            check_ports(self.config, list(self.slots))  # the gateway runs on
            for broker_id in self.slots:
                self._spawn(broker_id)
            self._wait_ready(list(self.slots))
            return f"restarted brokers 1..{self.config.brokers}"

    # --- the gateway -----------------------------------------------------------------------

    def _gateway(self) -> BrokerSlot:
        if self.gateway is None:
            raise ClusterError("this cluster runs no gateway (it was started with --no-gateway)")
        return self.gateway

    def stop_gateway(self) -> str:
        with self._ops:
            slot = self._gateway()
            if slot.pid is None:
                raise ClusterError(f"the gateway is not running ({slot.state})")
            pid = slot.pid
            self._stop_many([slot])
            return f"gateway (pid {pid}) stopped"

    def start_gateway(self) -> str:
        with self._ops:
            self._check_open()
            slot = self._gateway()
            if slot.pid is not None:
                raise ClusterError(f"the gateway is already running (pid {slot.pid})")
            check_ports(self.config, [], gateway=True)
            self._spawn(GATEWAY)
            self._wait_ready([GATEWAY])
            return f"gateway started (pid {slot.pid}) on {self.gateway_url}"

    @property
    def gateway_url(self) -> str:
        return f"http://{self.config.host}:{self.config.http_port}"

    # --- children ---------------------------------------------------------------------------

    def argv(self, broker_id: int) -> list[str]:
        c = self.config
        if broker_id == GATEWAY:  # the data dir on its command line: see tidelog.cluster.run
            return [
                sys.executable, "-m", "tidelog.cluster", "gateway", str(c.data_dir),
                "--broker", ",".join(f"{c.host}:{c.port(i)}" for i in c.broker_ids),
                "--http-host", c.host,
                "--http-port", str(c.http_port),
            ]  # fmt: skip
        return [
            sys.executable, "-m", "tidelog.server",
            "--host", c.host,
            "--port", str(c.port(broker_id)),
            "--admin-port", str(c.admin_port(broker_id)),
            "--data-dir", str(c.broker_dir(broker_id)),
            "--broker-id", str(broker_id),
            "--cluster-id", c.cluster_id,
            "--etcd", ",".join(self.endpoints),
            "--etcd-lease-ttl-s", str(c.lease_ttl_s),
            "--default-partitions", str(c.default_partitions),
        ]  # fmt: skip

    def _slot_of(self, broker_id: int) -> BrokerSlot:
        return self._gateway() if broker_id == GATEWAY else self.slots[broker_id]

    def _all_slots(self) -> list[BrokerSlot]:
        """The gateway first: it is stopped with (and before) the brokers it fronts."""
        return ([self.gateway] if self.gateway is not None else []) + list(self.slots.values())

    def _spawn(self, broker_id: int) -> None:
        slot = self._slot_of(broker_id)
        log = self.config.data_dir / "logs" / f"{slot.name.replace(' ', '-')}.log"
        slot.child = ChildProcess(self.argv(broker_id), log, self._exited).start()
        slot.expected_exit = False
        slot.state = BrokerState.STARTING
        self._save()

    def _stop_many(self, slots: list[BrokerSlot]) -> None:
        """SIGTERM each at once, then wait for all (each SIGKILLed after the grace period)."""
        for slot in slots:
            slot.expected_exit = True
        threads = []
        for slot in slots:
            if slot.child is not None:
                thread = threading.Thread(target=slot.child.terminate, daemon=True)
                thread.start()
                threads.append(thread)
        for thread in threads:
            thread.join()
        for slot in slots:
            slot.state = BrokerState.STOPPED
        self._save()

    def _exited(self, child: ChildProcess, code: int) -> None:
        """On a watcher thread: ``child`` ended with ``code``."""
        slot = next((s for s in self._all_slots() if s.child is child), None)
        if slot is None or slot.expected_exit or self._closed:
            return
        slot.state = BrokerState.DIED
        slot.last_exit = describe_exit(code)
        self._save()
        self.notify(f"{slot.name} (pid {child.pid}) died: {slot.last_exit}")
        if self.config.restart_on_failure:
            threading.Thread(target=self._restart_failed, args=(slot, child), daemon=True).start()

    def _restart_failed(self, slot: BrokerSlot, dead: ChildProcess) -> None:
        now = time.monotonic()
        slot.restarts = [t for t in slot.restarts if now - t < RESTART_WINDOW_S] + [now]
        if len(slot.restarts) > MAX_RESTARTS:
            self.notify(
                f"{slot.name} died {MAX_RESTARTS} times within "
                f"{RESTART_WINDOW_S:g}s: left down (log: {dead.log_path})"
            )
            return
        with self._ops:
            if self._closed or slot.child is not dead:
                return  # stopped, or started again by hand meanwhile
            try:
                if slot.broker_id == GATEWAY:
                    started = self.start_gateway()
                else:
                    started = self.start_broker(slot.broker_id)
                self.notify(started + " (restart on failure)")
            except ClusterError as exc:
                self.notify(f"{slot.name} could not be restarted: {exc}")

    def _wait_ready(self, broker_ids: list[int]) -> None:
        """Until each broker's admin port says ``/ready`` (a broker opens it only after it has
        joined the cluster), or the gateway's; fails at once when one exits."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        waiting = set(broker_ids)
        with httpx.Client(timeout=1.0) as http:
            while waiting:
                for broker_id in sorted(waiting):
                    slot = self._slot_of(broker_id)
                    child = slot.child
                    assert child is not None
                    if not child.alive:
                        code = child.returncode if child.returncode is not None else -1
                        raise ClusterError(
                            f"{slot.name} exited while starting ({describe_exit(code)}): "
                            f"{log_tail(child.log_path)}"
                        )
                    if self._ready(http, broker_id):
                        slot.state = BrokerState.RUNNING
                        waiting.discard(broker_id)
                if waiting and time.monotonic() > deadline:
                    names = ", ".join(self._slot_of(i).name for i in sorted(waiting))
                    raise ClusterError(f"{names} not ready within {READY_TIMEOUT_S:g}s")
                if waiting:
                    time.sleep(POLL_S)
        self._save()

    def _ready(self, http: httpx.Client, broker_id: int) -> bool:
        if broker_id == GATEWAY:
            url = f"{self.gateway_url}/ready"
        else:
            url = f"http://{self.config.host}:{self.config.admin_port(broker_id)}/ready"
        try:
            return http.get(url).status_code == 200
        except httpx.HTTPError:
            return False

    def _wait_for(self, check: Callable[[view.ClusterView], bool], what: str) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not check(self._view()):
            if time.monotonic() > deadline:
                raise ClusterError(f"no {what} within {READY_TIMEOUT_S:g}s")
            time.sleep(POLL_S)

    def _settle(self, check: Callable[[view.ClusterView], bool]) -> str:
        """Wait up to SETTLE_S for ``check``; the leaderless partitions then (or why not)."""
        deadline = time.monotonic() + SETTLE_S
        try:
            while not check(current := self._view()):
                if time.monotonic() > deadline:
                    return f"the cluster has not reacted within {SETTLE_S:g}s"
                time.sleep(POLL_S)
        except EtcdError as exc:
            return f"etcd does not answer ({exc})"
        return "leaderless partitions: " + (", ".join(current.leaderless) or "none")

    def _check_open(self) -> None:
        if self._closed:
            raise ClusterError("the cluster is shutting down")

    def _save(self) -> None:
        self.state_file.write(self.snapshot())

    # --- what the cluster looks like --------------------------------------------------------

    def _view(self) -> view.ClusterView:
        return asyncio.run(view.read(self.endpoints, self.config.cluster_id))

    def snapshot(self) -> dict[str, Any]:
        """The processes, as the state file keeps them (no etcd call)."""
        c = self.config
        return {
            "supervisor_pid": os.getpid(),
            "cluster_id": c.cluster_id,
            "data_dir": str(c.data_dir),
            "etcd": {
                "endpoints": list(self.endpoints),
                "pid": self.etcd.proc.pid if self.etcd and self.etcd.proc else None,
            },
            "brokers": [
                {
                    "id": s.broker_id,
                    "state": str(s.state),
                    "pid": s.pid,
                    "address": f"{c.host}:{c.port(s.broker_id)}",
                    "admin_port": c.admin_port(s.broker_id),
                    "last_exit": s.last_exit,
                }
                for s in self.slots.values()
            ],
            "gateway": None
            if self.gateway is None
            else {
                "state": str(self.gateway.state),
                "pid": self.gateway.pid,
                "url": self.gateway_url,
                "last_exit": self.gateway.last_exit,
            },
        }

    def status(self) -> dict[str, Any]:
        """The snapshot plus what etcd says: registrations, controller, partition leaders,
        leaderless and under-replicated partitions."""
        out = self.snapshot()
        try:
            current = self._view()
        except EtcdError as exc:
            out["etcd"]["error"] = str(exc)
            current = view.ClusterView({}, view.NO_LEADER, {})
        out["controller"] = current.controller
        for broker in out["brokers"]:
            broker["registered"] = broker["id"] in current.brokers
            broker["leads"] = current.led_by(broker["id"])
        out["topics"] = topic_list(current)
        out["leaderless_partitions"] = current.leaderless
        out["under_replicated_partitions"] = current.under_replicated
        return out

    def topics(self) -> list[dict[str, Any]]:
        return topic_list(self._view())

    def bootstrap(self) -> list[str]:
        return [
            f"{self.config.host}:{self.config.port(s.broker_id)}"
            for s in self.slots.values()
            if s.state is BrokerState.RUNNING
        ]

    def create_topic(self, name: str, partitions: int | None = None) -> str:
        """Create ``name`` through a running broker, with the cluster's defaults."""
        bootstrap = self.bootstrap()
        if not bootstrap:
            raise ClusterError("no broker is running")
        count = partitions or self.config.default_partitions

        async def create() -> None:
            async with AdminClient(bootstrap, request_timeout=15.0) as admin:
                await admin.create_topic(name, count, self.config.replication_factor)

        try:
            asyncio.run(create())
        except (TidelogError, OSError) as exc:
            raise ClusterError(f"cannot create topic {name!r}: {exc}") from None
        return f"created topic {name} ({count} partitions)"


def topic_list(current: view.ClusterView) -> list[dict[str, Any]]:
    return [
        {
            "name": t.name,
            "partitions": t.partitions,
            "replication_factor": t.replication_factor,
            "leaders": {str(p): b for p, b in sorted(t.leaders.items())},
            "leaderless": t.leaderless,
            "under_replicated": t.under_replicated,
        }
        for t in current.topics.values()
    ]
