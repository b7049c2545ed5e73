"""One broker's part in a cluster: its registration, its view of the cluster, and the
controller's duties when it holds the controller key.

* **Registration.** The broker's record goes under ``brokers/<id>`` with a lease kept alive by a
  :class:`~tidelog.etcd.LeaseKeeper` thread. The key's creation revision is the broker's
  **incarnation**. If the id is still registered (the previous process of this broker, whose
  lease has not expired yet, or another live process), registering waits until that lease has
  run out; a registration that outlives its lease's TTL belongs to a live process, and
  registering fails with :class:`BrokerIdInUseError`.
* **The view** is read once and then followed by a watch; when the watch breaks it resumes from
  the next revision, and when that history is compacted it reads everything again.
* **The controller** is whoever holds the ``controller`` key (created under its lease: when the
  broker dies the key goes with it, and every broker campaigns again). Each controller write is
  a transaction that also compares the controller key's creation revision with the one this
  broker won, so a controller that was paused or cut off and replaced can change nothing.
* **Topics** are created, deleted and reconfigured by any broker with a compare-and-set on the
  topic's key; the controller then places or removes the partitions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Final, TypeVar

import msgspec

from tidelog.etcd import (
    Compare,
    Delete,
    EtcdClient,
    EtcdCompactedError,
    EtcdError,
    EtcdUnavailableError,
    Lease,
    LeaseKeeper,
    Put,
)
from tidelog.wire.errors import (
    BrokerError,
    InvalidReplicationFactorError,
    RequestTimedOutError,
    TidelogError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
)

from .decisions import Change, decide
from .records import (
    BrokerRecord,
    ClusterKeys,
    ControllerRecord,
    PartitionState,
    TopicRecord,
    decode,
    encode,
)
from .view import ClusterView

logger = logging.getLogger("tidelog.server.cluster")
T = TypeVar("T")

DEFAULT_LEASE_TTL: Final = 3
"""Seconds: a dead broker is noticed after about this long (etcd adds up to half a second)."""
RETRY_DELAY: Final = 0.2
"""Seconds between attempts while etcd cannot be reached or a registration is still held."""
RETRIES: Final = 10
"""Compare-and-set attempts on a partition state that other writers keep changing."""
RELEASE_MARGIN: Final = 2.0
"""Seconds past an old registration's lease TTL before it counts as held by a live process
(etcd expires leases in steps of about half a second, later during an etcd leader change)."""


class ClusterJoinError(TidelogError):
    """The broker could not join its cluster: etcd unreachable, or its id taken."""


class BrokerIdInUseError(ClusterJoinError):
    """Another live process holds this broker id's registration."""


class ClusterMember:
    """A broker's membership in the cluster named by ``keys``."""

    def __init__(
        self,
        etcd: EtcdClient,
        keys: ClusterKeys,
        me: BrokerRecord,
        *,
        lease_ttl: int = DEFAULT_LEASE_TTL,
        on_change: Callable[[ClusterView], None] = lambda _: None,
        on_lease_lost: Callable[[str], None] = lambda _: None,
        on_rejoined: Callable[[], None] = lambda: None,
        auto_leader_rebalance: bool = True,
    ) -> None:
        """``on_lease_lost(reason)`` is called when the registration's lease is lost (the
        cluster counts this broker dead from then on), ``on_rejoined()`` once it is registered
        again and has read the cluster afresh."""
        self.etcd = etcd
        self.auto_leader_rebalance = auto_leader_rebalance
        self.keys = keys
        self.me = me
        self.lease_ttl = lease_ttl
        self.on_change = on_change
        self.on_lease_lost = on_lease_lost
        self.on_rejoined = on_rejoined
        self.view = ClusterView(keys)
        self.incarnation = 0
        self.controller_epoch = 0
        """The controller key's creation revision while this broker holds it, else 0."""
        self.controller_writes_refused = 0
        self.leader_elections = 0
        """Leaders this broker elected as controller (Kafka's LeaderElectionRateAndTimeMs
        count): a dead leader replaced, or a leaderless partition led again."""
        self.unclean_leader_elections = 0
        """Of those, elections of a replica outside the ISR (UncleanLeaderElectionsPerSec)."""
        self._lease: Lease | None = None
        self._keeper: LeaseKeeper | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._watch: asyncio.Task[None] | None = None
        self._reconcile = asyncio.Event()
        self._changed = asyncio.Condition()
        self._stopping = False

    @property
    def broker_id(self) -> int:
        return self.me.broker_id

    @property
    def is_controller(self) -> bool:
        controller = self.view.controller
        return (
            self.controller_epoch > 0
            and controller is not None
            and controller.create_revision == self.controller_epoch
        )

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self, register_within: float | None = None) -> None:
        """Register (waiting out a previous registration of this id; :class:`ClusterJoinError` when
        etcd cannot be reached within ``register_within`` seconds), read the cluster and start
        following it."""
        await self._register(register_within)
        await self._reload()
        self._watch = self._spawn(self._follow(), "watch")
        self._spawn(self._control(), "controller")
        self._kick()

    async def drain(self) -> None:
        """Mark this broker draining (its record, same lease): the controller moves its
        leaderships away (``decisions._hand_over``). Raises :class:`EtcdError`."""
        if self._lease is None or self._stopping:
            return
        self.me = msgspec.structs.replace(self.me, draining=True)
        key = self.keys.broker(self.broker_id)
        await self.etcd.txn(
            [Compare.created_at(key, self.incarnation)], [Put(key, encode(self.me), self._lease.id)]
        )

    async def stop(self) -> None:
        """Leave the cluster at once: revoke the lease, so the registration (and the controller
        key, if held) vanish now rather than after the TTL."""
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._keeper is not None:
            await asyncio.to_thread(self._keeper.stop)
        if self._lease is not None:
            with contextlib.suppress(EtcdError):
                await self.etcd.revoke(self._lease.id)

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro, name=f"cluster-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # --- registration --------------------------------------------------------------------

    async def _register(self, within: float | None) -> None:
        key = self.keys.broker(self.broker_id)
        deadline = None if within is None else time.monotonic() + within
        lease = await _retrying(lambda: self.etcd.grant(self.lease_ttl), deadline)
        loop = asyncio.get_running_loop()

        def lost(reason: str) -> None:  # on the keeper's thread
            loop.call_soon_threadsafe(self._lease_lost, lease.id, reason)

        # Kept alive from the start: waiting out an old registration can outlast its TTL.
        keeper = LeaseKeeper(self.etcd.endpoints, lease, lost).start()
        try:
            incarnation = await self._claim(key, lease, deadline)
        except BaseException:
            await asyncio.to_thread(keeper.stop)
            with contextlib.suppress(EtcdError):
                await self.etcd.revoke(lease.id)
            raise
        self._lease, self._keeper, self.incarnation = lease, keeper, incarnation
        logger.info("registered broker %d, incarnation %d", self.broker_id, incarnation)

    async def _claim(self, key: bytes, lease: Lease, deadline: float | None) -> int:
        """Put this broker's record under ``key`` once nobody else holds it; the incarnation.

        An existing registration is waited out for as long as its lease has left plus a
        margin; one that is still there then is kept alive by a live process."""
        give_up: float | None = None
        while True:
            result = await _retrying(
                lambda: self.etcd.txn([Compare.absent(key)], [Put(key, encode(self.me), lease.id)]),
                deadline,
            )
            if result.succeeded:
                return result.revision
            held = await self.etcd.get(key)
            if held is None:
                continue
            if held.lease == lease.id:  # an earlier attempt did commit; its answer was lost
                return held.create_revision
            now = time.monotonic()
            if give_up is None:
                left = max(await self.etcd.time_to_live(held.lease), 0)
                give_up = now + left + RELEASE_MARGIN
                logger.info(
                    "broker id %d is still registered (lease %x, %ds left): waiting for it to "
                    "expire",
                    self.broker_id,
                    held.lease,
                    left,
                )
            elif now > give_up:
                raise BrokerIdInUseError(
                    f"broker id {self.broker_id} is registered by another live process "
                    f"({held.value.decode(errors='replace')}); stop it or give this broker "
                    "another broker_id"
                )
            await asyncio.sleep(RETRY_DELAY)

    def _lease_lost(self, lease: int, reason: str) -> None:
        if self._stopping or self._lease is None or self._lease.id != lease:
            return
        logger.error(
            "broker %d lost its etcd lease (%s): registering again", self.broker_id, reason
        )
        self.controller_epoch = 0
        self.on_lease_lost(reason)
        self._spawn(self._reregister(), "reregister")

    async def _reregister(self) -> None:
        """Register afresh, then read the whole cluster again and watch it anew: the watch
        may hang on a connection that died without a word (a network that drops packets
        rather than refuses them), so a view followed through it could stay frozen for ever,
        naming this broker leader of partitions others lead now."""
        await self._register(None)
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
        await self._reload()
        self._watch = self._spawn(self._follow(), "watch")
        logger.info("broker %d is registered again and has read the cluster", self.broker_id)
        self.on_rejoined()
        self._kick()

    # --- following the cluster -----------------------------------------------------------

    async def _reload(self) -> None:
        kvs, revision = await _retrying(
            lambda: self.etcd.range(self.keys.prefix, prefix=True), None
        )
        self.view = ClusterView.load(self.keys, kvs, revision)
        await self._notify()

    async def _follow(self) -> None:
        while True:
            try:
                async for batch in self.etcd.watch(
                    self.keys.prefix, start_revision=self.view.revision + 1
                ):
                    self.view.apply(batch.events, batch.revision)
                    await self._notify()
            except EtcdCompactedError:
                logger.warning("the etcd watch fell behind compaction: reading the cluster again")
                await self._reload()
            except EtcdError as exc:
                logger.warning("the etcd watch broke (%s): resuming", exc)
                await asyncio.sleep(RETRY_DELAY)

    async def _notify(self) -> None:
        try:
            self.on_change(self.view)
        except Exception:
            logger.exception("a cluster change listener failed")
        self._kick()
        await self._wake_waiters()

    async def _wake_waiters(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def _kick(self) -> None:
        self._reconcile.set()

    async def wait_for(self, predicate: Callable[[ClusterView], bool], within: float) -> bool:
        """Wait until ``predicate(view)`` holds; ``False`` after ``within`` seconds."""
        try:
            async with asyncio.timeout(within), self._changed:
                await self._changed.wait_for(lambda: predicate(self.view))
            return True
        except TimeoutError:
            return False

    # --- the controller ------------------------------------------------------------------

    async def _control(self) -> None:
        while True:
            await self._reconcile.wait()
            self._reconcile.clear()
            try:
                if self.view.controller is None and self._lease is not None:
                    await self._campaign()
                if self.is_controller:
                    await self._apply(
                        decide(self.view, auto_leader_rebalance=self.auto_leader_rebalance)
                    )
            except EtcdError as exc:
                logger.warning("controller work failed (%s): retrying", exc)
                await asyncio.sleep(RETRY_DELAY)
                self._kick()

    async def _campaign(self) -> None:
        assert self._lease is not None
        key = self.keys.controller
        record = ControllerRecord(self.broker_id, self.incarnation)
        result = await self.etcd.txn(
            [Compare.absent(key)], [Put(key, encode(record), self._lease.id)]
        )
        if result.succeeded:
            self.controller_epoch = result.revision
            logger.info("broker %d is the controller (epoch %d)", self.broker_id, result.revision)
            await self._wake_waiters()  # the watch may have brought the key before this answer

    async def _apply(self, changes: list[Change]) -> None:
        for change in changes:
            if not await self.controller_write(change):
                return  # the view moved on: the watch brings it and decide() runs again

    async def controller_write(self, change: Change) -> bool:
        """Write ``change``, fenced by this broker's controller epoch; whether etcd took it."""
        key = self.keys.partition(change.topic, change.partition)
        compare = [
            Compare.created_at(self.keys.controller, self.controller_epoch),
            Compare.modified_at(key, change.partition_revision),
        ]
        if change.topic_revision:
            compare.append(
                Compare.modified_at(self.keys.topic(change.topic), change.topic_revision)
            )
        op = Delete(key) if change.state is None else Put(key, encode(change.state))
        result = await self.etcd.txn(compare, [op])
        if not result.succeeded:
            self.controller_writes_refused += 1
            return False
        if change.election:
            self.leader_elections += 1
            self.unclean_leader_elections += change.election == "unclean"
        logger.info(
            "controller: %s[%d] %s (%s)",
            change.topic,
            change.partition,
            "deleted" if change.state is None else f"led by {change.state.leader}",
            change.why,
        )
        return True

    # --- topics, through any broker ------------------------------------------------------

    async def create_topic(
        self,
        name: str,
        partitions: int,
        replication_factor: int,
        configs: dict[str, str],
        place_within: float,
    ) -> TopicRecord:
        """Write the topic and wait until the controller has placed its partitions."""
        if not 1 <= replication_factor <= max(1, len(self.view.brokers)):
            raise InvalidReplicationFactorError(
                f"replication factor {replication_factor} must be between 1 and the "
                f"{len(self.view.brokers)} live brokers"
            )
        record = TopicRecord(uuid.uuid4().hex, partitions, replication_factor, dict(configs))
        key = self.keys.topic(name)
        result = await self.etcd.txn([Compare.absent(key)], [Put(key, encode(record))])
        if not result.succeeded:
            raise TopicAlreadyExistsError(f"topic {name!r} already exists")
        placed = await self.wait_for(
            lambda view: (
                view.topic_ready(name) and view.topics[name].record.topic_id == record.topic_id
            ),
            place_within,
        )
        if not placed:
            raise RequestTimedOutError(
                f"topic {name!r} was created but its partitions were not placed within "
                f"{place_within:g}s (is a controller alive?); they will be placed when one is"
            )
        return record

    async def reserve_producer_ids(self, size: int, at_least: int) -> int:
        """The start of a block of ``size`` producer ids, at or above ``at_least``, that no
        other broker of the cluster is given: a compare-and-set on the cluster's counter."""
        key = self.keys.producer_ids
        while True:
            current = await self.etcd.get(key)
            if current is None:
                start, compare = at_least, Compare.absent(key)
            else:
                try:
                    start = max(int(current.value), at_least)
                except ValueError:
                    message = (
                        f"etcd key {key.decode()} is damaged ({current.value[:40]!r}): it "
                        "holds the next free producer id; put a number above every id in use"
                    )
                    logger.error("%s", message)
                    raise BrokerError(message) from None  # not retriable: an operator's fix
                compare = Compare.modified_at(key, current.mod_revision)
            result = await self.etcd.txn([compare], [Put(key, b"%d" % (start + size))])
            if result.succeeded:
                return start
            # another broker reserved a block meanwhile: read the counter again

    async def delete_topic(self, name: str) -> None:
        key = self.keys.topic(name)
        current = await self.etcd.get(key)
        if current is None:
            raise UnknownTopicOrPartitionError(f"topic {name!r} does not exist")
        result = await self.etcd.txn(
            [Compare.modified_at(key, current.mod_revision)], [Delete(key)]
        )
        if not result.succeeded:
            raise RequestTimedOutError(f"topic {name!r} changed while it was being deleted: retry")

    async def reassign(self, topic: str, partition: int, target: tuple[int, ...]) -> None:
        """Store ``target`` as the partition's reassignment target (compare-and-set on the
        partition state's revision, read afresh); the controller then moves it step by
        step. A target equal to the replicas of a partition not being moved changes nothing."""
        key = self.keys.partition(topic, partition)
        for _ in range(RETRIES):
            current = await self.etcd.get(key)
            if current is None:
                raise UnknownTopicOrPartitionError(f"{topic}[{partition}] is not placed yet")
            state = decode(current.value, PartitionState)
            if state.replicas == target and not state.target:
                return
            new = msgspec.structs.replace(state, target=target)
            result = await self.etcd.txn(
                [Compare.modified_at(key, current.mod_revision)], [Put(key, encode(new))]
            )
            if result.succeeded:
                logger.info("%s[%d]: reassignment to %s requested", topic, partition, list(target))
                return
        raise RequestTimedOutError(f"{topic}[{partition}] kept changing while it was reassigned")

    async def alter_topic_configs(self, name: str, configs: dict[str, str]) -> None:
        """Replace the topic's config overrides with ``configs``."""
        topic = self.view.topics.get(name)
        if topic is None:
            raise UnknownTopicOrPartitionError(f"topic {name!r} does not exist")
        key = self.keys.topic(name)
        record = TopicRecord(
            topic.record.topic_id,
            topic.record.partitions,
            topic.record.replication_factor,
            dict(configs),
        )
        result = await self.etcd.txn(
            [Compare.modified_at(key, topic.mod_revision)], [Put(key, encode(record))]
        )
        if not result.succeeded:
            raise RequestTimedOutError(f"topic {name!r} changed while it was being altered: retry")


async def _retrying(call: Callable[[], Awaitable[T]], deadline: float | None) -> T:
    """``await call()`` until etcd answers (``EtcdUnavailableError`` is retried after a short
    delay, with a log line once), or :class:`ClusterJoinError` at ``deadline``."""
    warned = False
    while True:
        try:
            return await call()
        except EtcdUnavailableError as exc:
            if deadline is not None and time.monotonic() >= deadline:
                raise ClusterJoinError(
                    f"etcd could not be reached ({exc}); is it running? (--etcd)"
                ) from exc
            if not warned:
                logger.warning("etcd cannot be reached (%s): retrying", exc)
                warned = True
            await asyncio.sleep(RETRY_DELAY)
