"""Queue members: the gateway's share-group members, one per (group, topics), shared by every
HTTP caller that leases from that queue (Amazon SQS's shape: no member to create, a receipt per
message).

A lease acquires messages for the member under the group's lock; each gets a **receipt** that
names the acquisition (group, member, topic, partition, offset, delivery count). The gateway
keeps what each member holds leased, so a receipt is settled only while its acquisition is the
current one: a receipt the gateway never issued, already settled, or whose member expired is
404 ``unknown_receipt``; one whose lock expired (or that was redelivered since) is 409
``receipt_expired``, and the broker is not asked. Members are bounded
(``max_queue_members``, ``max_queue_leases`` each) and closed when unused for
``queue_idle_timeout_s`` with no lease left, or on shutdown (what they hold is released).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final, TypeVar

import msgspec

from tidelog.client import Cluster, QueueConsumer, QueueMessage
from tidelog.client.errors import ClientClosedError
from tidelog.wire.errors import InvalidRecordStateError

from .errors import GatewayError
from .registry import IdleRegistry
from .settings import GatewaySettings

RECEIPT_VERSION: Final = 1
MAX_RECEIPT_LENGTH: Final = 2048
T = TypeVar("T")
Position = tuple[str, int, int]
"""topic, partition, offset"""


_ReceiptBody = tuple[int, str, str, str, int, int, int]
"""version, group, member, topic, partition, offset, delivery count"""


@dataclass(frozen=True, slots=True)
class Receipt:
    """One acquisition of one message, as the caller holds it (opaque to it)."""

    group: str
    member: str
    topic: str
    partition: int
    offset: int
    delivery_count: int

    @property
    def position(self) -> Position:
        return self.topic, self.partition, self.offset

    def encode(self) -> str:
        body = (
            RECEIPT_VERSION,
            self.group,
            self.member,
            self.topic,
            self.partition,
            self.offset,
            self.delivery_count,
        )
        return base64.urlsafe_b64encode(msgspec.json.encode(body)).rstrip(b"=").decode()

    @classmethod
    def decode(cls, text: str) -> Receipt:
        """Raises 400 ``invalid_receipt`` for anything this gateway could not have issued."""
        try:
            if len(text) > MAX_RECEIPT_LENGTH:
                raise ValueError("too long")
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            body = msgspec.json.decode(raw, type=_ReceiptBody)
            if body[0] != RECEIPT_VERSION:
                raise ValueError("unknown version")
        except (ValueError, binascii.Error, msgspec.DecodeError):
            raise GatewayError(400, "invalid_receipt", "not a receipt of this gateway") from None
        return cls(*body[1:])


@dataclass(slots=True)
class Lease:
    message: QueueMessage
    deadline: float
    """The gateway's clock when the lock ends (no later than the broker's)."""


@dataclass(slots=True)
class Member:
    """One share-group member, shared by the callers of one (group, topics)."""

    group: str
    name: str
    queue: QueueConsumer
    last_used: float
    leases: dict[Position, Lease] = field(default_factory=dict)
    reserved: int = 0
    """Room taken by leases in flight, so concurrent ones stay within ``max_queue_leases``."""
    attached: bool = False
    """Owned by one WebSocket (never shared, never idle while the socket is open)."""

    def busy(self, now: float) -> bool:
        return (
            self.attached
            or self.reserved > 0
            or any(lease.deadline > now for lease in self.leases.values())
        )

    def unsettled(self, now: float) -> int:
        """Leases whose lock is on, plus those being taken."""
        self.prune(now)
        return len(self.leases) + self.reserved

    def prune(self, now: float) -> None:
        """Forget the leases whose lock ended (the broker releases them on its own)."""
        for position in [p for p, lease in self.leases.items() if lease.deadline <= now]:
            del self.leases[position]

    async def close(self) -> None:
        self.leases.clear()
        await self.queue.close()


class QueueMembers:
    """Every queue member of this gateway; the owner of leases and their settlement."""

    def __init__(self, settings: GatewaySettings, clock: Callable[[], float]) -> None:
        self.settings = settings
        self.clock = clock
        self._registry: IdleRegistry[str, Member] = IdleRegistry(
            settings.max_queue_members, settings.queue_idle_timeout_s, clock
        )
        self._by_queue: dict[tuple[str, tuple[str, ...]], str] = {}
        self._creating = asyncio.Lock()

    def __len__(self) -> int:
        return len(self._registry)

    def start(self) -> None:
        self._registry.start()

    async def close(self) -> None:
        self._by_queue.clear()
        await self._registry.close()

    def held(self, group: str) -> int:
        """Messages of ``group`` leased and not settled (their lock not known to be over)."""
        now = self.clock()
        return sum(
            sum(lease.deadline > now for lease in m.leases.values())
            for m in self._registry
            if m.group == group
        )

    async def _member(self, group: str, topics: tuple[str, ...]) -> Member:
        """The member of (group, topics), created on first use. 429 at ``max_queue_members``."""
        key = (group, topics)
        async with self._creating:  # two first leases of a queue make one member
            await self._registry.expire_idle()
            name = self._by_queue.get(key)
            member = self._registry.get(name) if name is not None else None
            if member is not None:
                return member
            self._by_queue = {k: n for k, n in self._by_queue.items() if n in self._registry}
            member = await self._open(group, topics)
            self._by_queue[key] = member.name
            return member

    async def attach(self, group: str, topics: tuple[str, ...]) -> Member:
        """A member of its own for one WebSocket, counted in ``max_queue_members`` (429 at
        it); its receipts settle like any other. :meth:`detach` closes it."""
        async with self._creating:
            await self._registry.expire_idle()
            member = await self._open(group, topics)
            member.attached = True
            return member

    async def detach(self, member: Member) -> None:
        """Close a WebSocket's member: what it holds goes back to the queue at once."""
        self._registry.remove(member.name)
        await member.close()

    async def _open(self, group: str, topics: tuple[str, ...]) -> Member:
        if self._registry.full():
            raise GatewayError(
                429,
                "too_many_queue_members",
                f"{len(self._registry)} queue members are open (max_queue_members): "
                "each group and set of topics leased from, and each queue WebSocket, takes one "
                "until it is unused",
            )
        s = self.settings
        name = f"gwq-{secrets.token_hex(8)}"
        cluster = Cluster(
            s.bootstrap,
            client_id=f"tidelog-gateway-{name}",
            connect_timeout=s.request_timeout_s,
            request_timeout=s.request_timeout_s,
        )
        queue = QueueConsumer(s.bootstrap, group, topics, member_id=name, cluster=cluster)
        try:
            await queue.start()
        except BaseException:
            await queue.close()
            raise
        member = Member(group, name, queue, self.clock())
        self._registry.add(name, member)
        return member

    async def lease(
        self, group: str, topics: tuple[str, ...], max_records: int, wait_s: float
    ) -> tuple[list[tuple[Receipt, QueueMessage]], int]:
        """Up to ``max_records`` messages, waiting up to ``wait_s`` for the first, each with its
        receipt; and the lock duration in ms. 429 when the member holds ``max_queue_leases``."""
        return await self.lease_from(await self._member(group, topics), max_records, wait_s)

    async def lease_from(
        self, member: Member, max_records: int, wait_s: float
    ) -> tuple[list[tuple[Receipt, QueueMessage]], int]:
        """:meth:`lease`, for a given member (a WebSocket's)."""
        group = member.group
        now = self.clock()
        member.prune(now)
        room = self.settings.max_queue_leases - len(member.leases) - member.reserved
        if room <= 0:
            raise GatewayError(
                429,
                "too_many_leases",
                f"this queue's member holds {len(member.leases)} leased messages "
                "(max_queue_leases): settle some, or wait for their locks to end",
            )
        take = min(max_records, room)
        member.reserved += take
        try:
            messages = await _closed_is_503(member.queue.take(take, wait_s))
        except Exception:
            if not member.leases and member.reserved == take and not member.attached:
                # A member that never held anything (an unknown topic, a bad group id) does
                # not stay to count against max_queue_members.
                self._registry.remove(member.name)
                await member.close()
            raise
        finally:
            member.reserved -= take
            member.last_used = self.clock()
        lock_ms = member.queue.lock_duration_ms
        deadline = now + lock_ms / 1000
        out = []
        for message in messages:
            position = (message.topic, message.partition, message.offset)
            member.leases[position] = Lease(message, deadline)
            receipt = Receipt(group, member.name, *position, message.delivery_count)
            out.append((receipt, message))
        return out, lock_ms

    def _lease(self, group: str, text: str, *, take: bool) -> tuple[Member, Lease]:
        """The current lease of a receipt (taken out of the member's table when ``take``)."""
        receipt = Receipt.decode(text)
        if receipt.group != group:
            raise GatewayError(
                400, "invalid_receipt", f"the receipt is for group {receipt.group!r}, not {group!r}"
            )
        member = self._registry.get(receipt.member)
        if member is None:
            why = (
                f"its queue member was closed after {self.settings.queue_idle_timeout_s:g}s "
                "unused, releasing what it held"
                if self._registry.expired(receipt.member)
                else "no queue member of this gateway issued it"
            )
            raise GatewayError(404, "unknown_receipt", f"unknown receipt: {why}")
        lease = member.leases.get(receipt.position)
        if lease is None:
            raise GatewayError(
                404,
                "unknown_receipt",
                "unknown receipt: its message is settled, or its lock ended and was forgotten",
            )
        if lease.message.delivery_count != receipt.delivery_count:
            raise GatewayError(
                409,
                "receipt_expired",
                f"the lock of this receipt ended: the message was delivered again (delivery "
                f"{lease.message.delivery_count}, the receipt's is {receipt.delivery_count})",
            )
        if lease.deadline <= self.clock():
            del member.leases[receipt.position]
            raise GatewayError(409, "receipt_expired", "the lock of this receipt ended")
        if take:
            del member.leases[receipt.position]
        return member, lease

    async def settle(
        self, group: str, text: str, how: Callable[[QueueMessage], Awaitable[None]]
    ) -> None:
        """Ack, nack or reject by receipt: the lease ends here whatever the broker says."""
        _, lease = self._lease(group, text, take=True)
        await _refused_is_409(how(lease.message))

    async def renew(self, group: str, text: str) -> int:
        """Extend the receipt's lock by the group's lock duration; that duration, in ms."""
        member, lease = self._lease(group, text, take=False)
        start = self.clock()
        await _refused_is_409(lease.message.renew())
        lock_ms = member.queue.lock_duration_ms
        lease.deadline = start + lock_ms / 1000
        return lock_ms


async def _refused_is_409(settling: Awaitable[None]) -> None:
    """The broker's refusal of a settlement as the receipt's error."""
    try:
        await _closed_is_503(settling)
    except InvalidRecordStateError as exc:
        raise GatewayError(
            409, "receipt_expired", f"the broker refused the receipt: {exc.message}"
        ) from exc


async def _closed_is_503(call: Awaitable[T]) -> T:
    """A member closed under a request (idle expiry, shutdown) as a retriable answer."""
    try:
        return await call
    except ClientClosedError:
        raise GatewayError(
            503, "queue_member_closed", "the queue member closed meanwhile: lease again"
        ) from None
