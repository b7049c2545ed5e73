"""The WebSocket queue mode, ``/v1/queues/{group}/ws?topics=...&prefetch=N&format=...``: the
gateway pushes a share group's messages, each with its receipt, and the client settles them
on the same socket with ``ack``, ``nack``, ``reject`` and ``renew`` messages.

Each socket has a queue member of its own (:meth:`~.queues.QueueMembers.attach`: counted in
``max_queue_members``, never idle while open), and its messages are leases like the REST ones:
the same receipts, checks and answers. At most ``prefetch`` messages (at most
``ws_queue_max_prefetch``) are pushed and not settled (their lock still on) at once: the
pump asks for more only as the client settles, and its frames go through the socket's bounded
send queue. A closed socket closes its member, which releases what it held: those messages are
delivered again at once, to another consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, WebSocket
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from . import models as mo
from . import models_queues as mq
from .formats import Format
from .queues import Member, QueueMembers
from .routes_queues import ack_receipts, leased, nack_receipt, reject_receipt
from .state import Gateway
from .ws import POLL_WAIT_S, OpError, OpId, Socket, invalid, serve

router = APIRouter()
DEFAULT_PREFETCH: Final = 10


class Params(BaseModel):
    """The query of the socket's URL (``topics`` repeated for several)."""

    model_config = ConfigDict(extra="forbid")
    group: mo.GroupId
    topics: list[mo.TopicName] = Field(min_length=1, max_length=mq.MAX_QUEUE_TOPICS)
    prefetch: int | None = Field(default=None, ge=1)
    """Default :data:`DEFAULT_PREFETCH` (at most ``ws_queue_max_prefetch``)."""
    format: Format = Format.JSON


class AckOp(mq.AckRequest):
    op: Literal["ack"]
    id: OpId


class NackOp(mq.NackRequest):
    op: Literal["nack"]
    id: OpId


class RejectOp(mq.RejectRequest):
    op: Literal["reject"]
    id: OpId


class RenewOp(mq.RenewRequest):
    op: Literal["renew"]
    id: OpId


QueueOp = AckOp | NackOp | RejectOp | RenewOp
OPS: Final[TypeAdapter[QueueOp]] = TypeAdapter(Annotated[QueueOp, Field(discriminator="op")])


class QueueSocket(Socket):
    """One queue socket: its member, its pump and its credit."""

    ops = OPS

    def __init__(self, websocket: WebSocket, gw: Gateway) -> None:
        super().__init__(websocket, gw)
        self.member: Member | None = None
        self.group = ""
        self._pump_task: asyncio.Task[None] | None = None
        self._taking: asyncio.Future[Any] | None = None
        self._credit = asyncio.Event()

    async def _open(self) -> None:
        query = self.ws.query_params
        raw: dict[str, Any] = {k: query.get(k) for k in query if k != "topics"}
        raw.update(group=self.ws.path_params["group"], topics=query.getlist("topics"))
        try:
            params = Params.model_validate(raw)
            limit = self.gw.settings.ws_queue_max_prefetch
            prefetch = min(DEFAULT_PREFETCH, limit) if params.prefetch is None else params.prefetch
            if prefetch > limit:
                raise OpError(
                    "invalid_message", f"prefetch is at most {limit} (ws_queue_max_prefetch)"
                )
            topics = tuple(sorted(set(params.topics)))
            admin = await self.gw.clients.admin()
            await admin.describe_topics(list(topics))  # an unknown topic: an error now
            self.member = await self.gw.queues.attach(params.group, topics)
        except ValidationError as exc:
            await self.fail(invalid(exc))
            return
        except Exception as exc:
            await self.fail(exc)
            return
        self.group = params.group
        prefetch = min(prefetch, self.gw.settings.max_queue_leases)
        await self.send(
            {
                "type": "consuming",
                "id": None,
                "group": params.group,
                "member": self.member.name,
                "topics": list(topics),
                "prefetch": prefetch,
            }
        )
        pump = self._pump(self.member, prefetch, params.format)
        self._pump_task = asyncio.get_running_loop().create_task(pump)

    async def _close(self) -> None:
        if self._pump_task is not None:
            self._pump_task.cancel()
            # gather: the task's end, whatever it was -- but a cancellation of this one
            # still goes through
            await asyncio.gather(self._pump_task, return_exceptions=True)
        if self._taking is not None:
            # A ShareFetch cut short would still acquire at the broker after the member
            # left, costing those messages a delivery attempt: let it end (within
            # POLL_WAIT_S), and the close below releases what it took.
            await asyncio.gather(self._taking, return_exceptions=True)
        if self.member is not None:
            await self.gw.queues.detach(self.member)

    async def _handle(self, op: QueueOp) -> None:
        if self.member is None:
            raise OpError("not_consuming", "the socket did not open on a queue")
        q = self.gw.queues
        try:
            answer = await self._settle(q, op)
        finally:
            self._credit.set()  # a failed settlement may have freed room too
        await self.send(answer)

    async def _settle(self, q: QueueMembers, op: QueueOp) -> dict[str, object]:
        match op:
            case AckOp():
                result = await ack_receipts(self.gw, self.group, op.receipts)
                answer = {"type": "acked", "id": op.id, **result.model_dump()}
            case NackOp():
                await nack_receipt(self.gw, self.group, op)
                answer = {"type": "nacked", "id": op.id}
            case RejectOp():
                await reject_receipt(self.gw, self.group, op)
                answer = {"type": "rejected", "id": op.id}
            case RenewOp():
                lock_ms = await q.renew(self.group, op.receipt)
                answer = {"type": "renewed", "id": op.id, "lock_duration_ms": lock_ms}
        return answer

    async def _pump(self, member: Member, prefetch: int, fmt: Format) -> None:
        """Lease while the member holds fewer than ``prefetch`` unsettled messages; wait for
        credit (a settlement, or a lock that ends) otherwise. An error ends the socket."""
        q = self.gw.queues
        batch = self.gw.settings.ws_frame_records
        try:
            while True:
                self._credit.clear()  # before counting: a settlement after it is seen
                room = prefetch - member.unsettled(q.clock())
                if room <= 0:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(POLL_WAIT_S):  # a lock may end meanwhile
                            await self._credit.wait()
                    continue
                self._taking = asyncio.ensure_future(
                    q.lease_from(member, min(room, batch), POLL_WAIT_S)
                )
                taken, lock_ms = await asyncio.shield(self._taking)
                if taken:
                    frame = {
                        "type": "messages",
                        "messages": leased(taken, fmt),
                        "lock_duration_ms": lock_ms,
                    }
                    await self.send(frame, pump=True)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self.fail(exc)


@router.websocket("/v1/queues/{group}/ws")
async def queue_socket(websocket: WebSocket) -> None:
    """Take and settle a queue's messages over one socket (see the module documentation)."""
    await serve(websocket, QueueSocket)
