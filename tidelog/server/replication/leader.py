"""What the leader of a partition keeps about its followers: positions, the ISR, the high
watermark, and the acks=all produces waiting for it.

A follower's *position* is the offset of its last fetch in the current leader epoch: it fetches
from its log end, and it fsyncs what it appended before it fetches again, so the position is
an fsynced log end. The leader's own position is its log end once the append is as durable as
its ack asked (after the local fsync for acks=all). The **high watermark** is the smallest
position over the ISR, and it moves only once every ISR member has fetched in this epoch: a new
leader's followers have first cut their divergent tails by epoch, so the smallest position is an
offset every in-sync replica holds with the leader's content, and it never goes back while this
broker leads.

The ISR used here is the one committed in etcd: a shrink or an expansion this leader proposes
counts only once its compare-and-set succeeded (:meth:`PartitionLeader.set_isr`).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from tidelog.wire.errors import (
    BrokerError,
    NotEnoughReplicasAfterAppendError,
    NotEnoughReplicasError,
)

from ..log import PartitionLog

UNKNOWN = -1


@dataclass(slots=True)
class FollowerProgress:
    """One follower, as its fetches in this epoch show it (Kafka's ``Replica`` state)."""

    position: int = UNKNOWN
    last_fetch_ms: int = 0
    leo_at_last_fetch: int = 0
    caught_up_ms: int = 0
    """When the follower last had everything the leader had (the ISR lag clock)."""


class PartitionLeader:
    """This broker leading one partition in one leader epoch."""

    def __init__(
        self,
        plog: PartitionLog,
        *,
        me: int,
        epoch: int,
        replicas: tuple[int, ...],
        isr: tuple[int, ...],
        isr_revision: int,
        min_isr: int,
        now_ms: int,
        on_visible: Callable[[], None],
    ) -> None:
        self.plog = plog
        self.me = me
        self.epoch = epoch
        self.replicas = replicas
        self.isr = isr
        self.isr_revision = isr_revision
        """The etcd revision of the partition state the ISR came from: an older view of the
        partition never replaces an ISR this leader committed since."""
        self.min_isr = min_isr
        self.epoch_start = plog.log_end_offset
        self.local_end = plog.log_end_offset
        self.followers = {r: FollowerProgress(caught_up_ms=now_ms) for r in replicas if r != me}
        self.proposing = False
        """An ISR change of this leader is waiting for etcd's answer."""
        self.joining: tuple[int, ...] = ()
        """Followers this leader proposed for the ISR, not committed yet. The high watermark
        waits for them as for members (Kafka's maximal ISR): from the fetch that showed a
        follower caught up to the moment etcd takes it in, no record passes the high
        watermark without it, so an in-sync replica always holds every acknowledged record
        (it may be elected, or made preferred leader, at once)."""
        self._on_visible = on_visible
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()
        self.closed: BrokerError | None = None

    # --- produce ---------------------------------------------------------------------------

    def check_min_isr(self) -> None:
        """Refuse an acks=all produce before it is appended when the ISR is too small."""
        if self.closed is not None:
            raise self.closed
        if len(self.isr) < self.min_isr:
            raise NotEnoughReplicasError(
                f"{self.plog.name} has {len(self.isr)} in-sync replica(s) {list(self.isr)}, "
                f"acks=all needs {self.min_isr} (min_insync_replicas)"
            )

    def wait_for(self, offset: int) -> asyncio.Future[None]:
        """A future resolved once the high watermark reaches ``offset``; it fails with
        NOT_ENOUGH_REPLICAS_AFTER_APPEND if the ISR shrinks below the minimum first, and with
        the reason if this broker stops leading (the write's outcome is then unknown)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.closed is not None:
            future.set_exception(self.closed)
        elif self.plog.high_watermark >= offset:
            future.set_result(None)
        else:
            self._waiters.append((offset, future))
        # A produce that timed out no longer waits: its failure is nobody's to report.
        future.add_done_callback(_retrieve)
        return future

    def fail_waiters(self, error: BrokerError) -> None:
        waiters, self._waiters = self._waiters, deque()
        for _, future in waiters:
            if not future.done():
                future.set_exception(error)

    def advance_local(self, offset: int) -> None:
        """The leader's own log is as durable as promised up to ``offset``."""
        if offset > self.local_end:
            self.local_end = offset
            self.update_high_watermark()

    # --- followers -------------------------------------------------------------------------

    def follower_fetched(self, broker: int, offset: int, now_ms: int) -> bool:
        """Record a fetch of ``broker`` from ``offset``; whether it should join the ISR."""
        progress = self.followers.get(broker)
        if progress is None:
            return False
        leo = self.plog.log_end_offset
        if offset >= leo:
            progress.caught_up_ms = now_ms
        elif offset >= progress.leo_at_last_fetch:
            progress.caught_up_ms = max(progress.caught_up_ms, progress.last_fetch_ms)
        progress.last_fetch_ms = now_ms
        progress.leo_at_last_fetch = leo
        progress.position = offset
        if broker in self.isr:
            self.update_high_watermark()
            return False
        return offset >= max(self.plog.high_watermark, self.epoch_start)

    def lagging(self, now_ms: int, lag_ms: int) -> list[int]:
        """ISR followers that have not caught up for ``lag_ms``."""
        return [b for b in self.isr if b != self.me and now_ms - self._caught_up(b) > lag_ms]

    def abandoned(self, now_ms: int, silence_ms: int) -> bool:
        """Whether the ISR has followers and none of them has fetched for ``silence_ms``
        (what a leader the controller replaced sees: its followers fetch from the new one)."""
        others = [b for b in self.isr if b != self.me]
        return bool(others) and all(now_ms - self._heard(b) > silence_ms for b in others)

    def _heard(self, broker: int) -> int:
        progress = self.followers.get(broker)
        return 0 if progress is None else max(progress.last_fetch_ms, progress.caught_up_ms)

    def _caught_up(self, broker: int) -> int:
        progress = self.followers.get(broker)
        return 0 if progress is None else progress.caught_up_ms

    def set_replicas(self, replicas: tuple[int, ...], now_ms: int) -> None:
        """A reassignment changed the replica list in this epoch: a new follower is tracked
        from now (it joins the ISR once it has caught up), a dropped one is forgotten."""
        if replicas == self.replicas:
            return
        self.replicas = replicas
        self.followers = {
            r: self.followers.get(r) or FollowerProgress(caught_up_ms=now_ms)
            for r in replicas
            if r != self.me
        }

    def set_isr(self, isr: tuple[int, ...], revision: int) -> tuple[bool, bool]:
        """Use ``isr``, committed in etcd at ``revision`` (ignored if older than the one in
        use). A shrink below the minimum fails the produces waiting for acks=all. Returns
        ``(shrunk, expanded)``: whether a member left, whether one joined (the metrics')."""
        if revision < self.isr_revision or isr == self.isr:
            self.isr_revision = max(self.isr_revision, revision)
            return False, False
        changed = (bool(set(self.isr) - set(isr)), bool(set(isr) - set(self.isr)))
        self.isr, self.isr_revision = isr, revision
        if len(isr) < self.min_isr:
            self.fail_waiters(
                NotEnoughReplicasAfterAppendError(
                    f"{self.plog.name}: written, but the ISR shrank to {list(isr)} before "
                    f"{self.min_isr} replicas had it; the write may or may not survive"
                )
            )
        self.update_high_watermark()
        return changed

    # --- the high watermark ----------------------------------------------------------------

    def update_high_watermark(self) -> None:
        """Move the high watermark to the smallest position over the ISR, once every member
        has fetched in this epoch; resolve the produces it passes; wake the consumers."""
        hw = self.local_end
        for broker in (*self.isr, *self.joining):
            if broker == self.me:
                continue
            progress = self.followers.get(broker)
            if progress is None or progress.position < 0:
                return  # not fetched in this epoch yet: its log may still diverge
            hw = min(hw, progress.position)
        plog = self.plog
        if hw <= plog.high_watermark or plog.closed:
            return
        hw = plog.update_high_watermark(hw)
        waiters = self._waiters
        while waiters and waiters[0][0] <= hw:
            _, future = waiters.popleft()
            if not future.done():
                future.set_result(None)
        self._on_visible()

    def close(self, error: BrokerError) -> None:
        """This broker stops leading: the produces still waiting have an unknown outcome."""
        self.closed = error
        self.fail_waiters(error)


def _retrieve(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()
