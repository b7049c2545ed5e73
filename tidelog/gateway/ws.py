"""The WebSocket endpoint, ``/v1/ws``: stream topics as JSON frames and produce on the same
socket.

The client sends JSON messages with an ``op`` (``subscribe``, ``unsubscribe``, ``produce``,
``commit``) and an ``id`` it chooses; each gets one answer frame carrying that ``id``
(``subscribed``, ``unsubscribed``, ``produced``, ``committed`` or ``error``). A subscription
sends ``records`` frames carrying its id, in offset order per partition, none skipped.

Flow control: every frame goes through the socket's :class:`~.wsqueue.FrameQueue`
(``ws_send_queue_bytes``); one writer task drains it into the socket, whose own writes wait
while the client does not read. A subscription's pump waits for room before it asks its
consumer for more, so a slow client stops the fetching for it; memory per socket is bounded by
the queue, the transport's buffer and each consumer's prefetch (``ws_prefetch_bytes`` per
partition).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, WebSocket
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from starlette.websockets import WebSocketDisconnect

from tidelog.client import Consumer, TopicPartition

from . import models as mo
from .errors import describe
from .formats import Format, encode_frame
from .polling import poll
from .producing import enqueue, settle
from .state import Gateway
from .wsqueue import FrameQueue

router = APIRouter()
logger = logging.getLogger("tidelog.gateway")

CLOSE_POLICY: Final = 1008
CLOSE_TOO_BIG: Final = 1009
CLOSE_ERROR: Final = 1011
CLOSE_TRY_AGAIN: Final = 1013
_CLOSE: Final = b""
"""In the send queue: close the socket here (after the frames before it)."""
POLL_WAIT_S: Final = 1.0
MAX_PRODUCE_IN_FLIGHT: Final = 64
"""Produce messages of one socket awaiting their acknowledgements; the reader waits above."""


OpId = Annotated[str, Field(min_length=1, max_length=200)]


class _Op(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: OpId


class SubscribeOp(_Op):
    """Stream ``topics`` (every partition, or ``partition`` of the one topic) from ``start``,
    or from ``offsets`` (a reconnecting client's next offsets), or as a member of ``group``
    (committed offsets first; commit with the ``commit`` op)."""

    op: Literal["subscribe"]
    topics: list[mo.TopicName] = Field(min_length=1)
    partition: mo.Partition | None = None
    start: Literal["earliest", "latest"] = "latest"
    offsets: list[mo.OffsetIn] = Field(default_factory=list)
    group: mo.GroupId | None = None
    format: Format = Format.JSON


class UnsubscribeOp(_Op):
    op: Literal["unsubscribe"]


class ProduceOp(_Op):
    op: Literal["produce"]
    topic: mo.TopicName
    acks: mo.AcksParam = "all"
    format: Format = Format.JSON
    records: list[mo.RecordIn] = Field(min_length=1)


class CommitOp(_Op):
    """Commit a group subscription's ``offsets``, or the positions of what it has sent."""

    op: Literal["commit"]
    subscription: str
    offsets: list[mo.OffsetIn] | None = None


Op = Annotated[SubscribeOp | UnsubscribeOp | ProduceOp | CommitOp, Field(discriminator="op")]
OPS: Final[TypeAdapter[SubscribeOp | UnsubscribeOp | ProduceOp | CommitOp]] = TypeAdapter(Op)


class OpError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Socket:
    """What every WebSocket of the gateway shares: its bounded send queue and writer task, and
    a read loop that checks each message's size, validates it against ``ops`` and answers a
    bad one with an ``error`` frame (the socket stays open). Subclasses handle the ops."""

    ops: TypeAdapter[Any]

    def __init__(self, websocket: WebSocket, gw: Gateway) -> None:
        self.ws = websocket
        self.gw = gw
        self.queue = FrameQueue(gw.settings.ws_send_queue_bytes, gw.sockets)
        self._close_with = (CLOSE_ERROR, "")
        self._closing = False

    async def run(self) -> None:
        writer = asyncio.get_running_loop().create_task(self._write())
        try:
            await self._open()
            await self._read()
        finally:
            writer.cancel()
            await self._close()
            with contextlib.suppress(BaseException):
                await writer
            self.queue.clear()

    async def _open(self) -> None:
        """Before the first message is read."""

    async def _close(self) -> None:
        """Once the socket is closed: stop and release what it holds."""

    async def _handle(self, op: Any) -> None:
        raise NotImplementedError

    async def _write(self) -> None:
        while True:
            frame = await self.queue.get()
            if frame == _CLOSE:
                await self.ws.close(*self._close_with)
                return
            await self.ws.send_text(frame.decode())

    async def fail(self, exc: Exception) -> None:
        """End the socket on ``exc``: an ``error`` frame (``id`` null) once the frames queued
        before it are written, then a close code that says whether to come back: 1013 for a
        limit or an unreachable broker, 1008 for a request to change, 1011 otherwise."""
        if self._closing:
            return
        await self.send_error(None, exc)
        status = 400 if isinstance(exc, OpError) else describe(exc)[0]
        if status in (429, 503):
            self._close_with = (CLOSE_TRY_AGAIN, "")
        elif status >= 500:
            self._close_with = (CLOSE_ERROR, "")
        else:
            self._close_with = (CLOSE_POLICY, "")
        self._closing = True
        await self.queue.put(_CLOSE)

    async def send(self, frame: dict[str, Any], *, pump: bool = False) -> None:
        if self._closing:  # nothing writes after the close
            return
        await self.queue.put(encode_frame(frame), pump=pump)

    async def send_error(self, op_id: str | None, exc: Exception) -> None:
        code, text = (exc.code, exc.message) if isinstance(exc, OpError) else describe(exc)[1:]
        await self.send({"type": "error", "id": op_id, "error_code": code, "message": text})

    async def _read(self) -> None:
        limit = self.gw.settings.max_ws_message_bytes
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("text") or message.get("bytes") or b""
            if len(data) > limit:
                await self.ws.close(CLOSE_TOO_BIG, f"a message is at most {limit} bytes")
                return
            try:
                op = self.ops.validate_json(data)
            except ValidationError as exc:
                await self.send_error(_id_of(data), invalid(exc))
                continue
            try:
                await self._handle(op)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                await self.send_error(op.id, exc)


def invalid(exc: ValidationError) -> OpError:
    """A validation failure as an ``invalid_message`` error (its first problem)."""
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ()))
    return OpError("invalid_message", f"{where}: {first.get('msg', 'invalid')}")


class Session(Socket):
    """``/v1/ws``: its subscriptions and in-flight produce answers."""

    ops = OPS

    def __init__(self, websocket: WebSocket, gw: Gateway) -> None:
        super().__init__(websocket, gw)
        self.subs: dict[str, tuple[Consumer, asyncio.Task[None], bool]] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.produce_slots = asyncio.Semaphore(MAX_PRODUCE_IN_FLIGHT)

    async def _close(self) -> None:
        for task in (*self.tasks, *(t for _, t, _ in self.subs.values())):
            task.cancel()
        for consumer, task, _ in list(self.subs.values()):
            await asyncio.gather(task, return_exceptions=True)  # a cancellation of ours goes on
            await consumer.close()
        self.gw.sockets.subscriptions -= len(self.subs)
        self.subs.clear()

    async def _handle(self, op: SubscribeOp | UnsubscribeOp | ProduceOp | CommitOp) -> None:
        match op:
            case SubscribeOp():
                await self._subscribe(op)
            case UnsubscribeOp():
                entry = self.subs.pop(op.id, None)
                if entry is None:
                    raise OpError("unknown_subscription", f"no subscription {op.id!r}")
                self.gw.sockets.subscriptions -= 1
                entry[1].cancel()
                with contextlib.suppress(BaseException):
                    await entry[1]
                await entry[0].close()
                await self.send({"type": "unsubscribed", "id": op.id})
            case ProduceOp():
                body = mo.ProduceRequest(format=op.format, records=op.records)
                pending = await enqueue(self.gw, op.topic, body, op.acks)  # queued in order
                await self.produce_slots.acquire()
                task = asyncio.get_running_loop().create_task(self._answer(op.id, pending))
                self.tasks.add(task)
                task.add_done_callback(self._answered)
            case CommitOp():
                entry = self.subs.get(op.subscription)
                if entry is None or not entry[2]:
                    raise OpError(
                        "unknown_subscription", f"no group subscription {op.subscription!r}"
                    )
                offsets = (
                    None
                    if op.offsets is None
                    else {TopicPartition(o.topic, o.partition): o.offset for o in op.offsets}
                )
                await entry[0].commit(offsets)
                await self.send({"type": "committed", "id": op.id})

    async def _answer(self, op_id: str, pending: Any) -> None:
        result = await settle(pending)
        await self.send({"type": "produced", "id": op_id, **result.model_dump()})

    def _answered(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        self.produce_slots.release()
        if not task.cancelled() and task.exception() is not None:
            logger.warning("a WebSocket produce answer failed: %s", task.exception())

    async def _subscribe(self, op: SubscribeOp) -> None:
        s = self.gw.settings
        if op.id in self.subs:
            raise OpError("subscription_exists", f"subscription {op.id!r} exists")
        if len(self.subs) >= s.max_ws_subscriptions:
            raise OpError(
                "too_many_subscriptions",
                f"{len(self.subs)} subscriptions on this socket (max_ws_subscriptions)",
            )
        if op.group is not None and (op.offsets or op.partition is not None):
            raise OpError("invalid_message", "a group subscription takes no offsets or partition")
        if op.partition is not None and len(op.topics) != 1:
            raise OpError("invalid_message", "partition needs exactly one topic")
        admin = await self.gw.clients.admin()
        described = await admin.describe_topics(op.topics)  # unknown topic: an error
        consumer = Consumer(
            s.bootstrap,
            client_id="tidelog-gateway-ws",
            group_id=op.group,
            auto_offset_reset=op.start,
            auto_commit=False,
            prefetch_bytes=s.ws_prefetch_bytes,
            max_partition_fetch_bytes=s.ws_prefetch_bytes,
            request_timeout=s.request_timeout_s,
            connect_timeout=s.request_timeout_s,
        )
        await consumer.start()
        try:
            if op.group is not None:
                consumer.subscribe(op.topics)
                tps: list[TopicPartition] = []
            else:
                tps = [
                    TopicPartition(t.name, p.partition)
                    for t in described
                    for p in t.partitions
                    if op.partition is None or p.partition == op.partition
                ]
                if not tps:
                    raise OpError("unknown_topic_or_partition", f"no partition {op.partition}")
                consumer.assign(tps)
                for o in op.offsets:
                    tp = TopicPartition(o.topic, o.partition)
                    if tp not in tps:
                        raise OpError("invalid_message", f"{o.topic}[{o.partition}] not streamed")
                    consumer.seek(tp, o.offset)
                for tp in tps:  # "latest" means the end as of the answer, not a later fetch
                    await consumer.position(tp)
        except BaseException:
            await consumer.close()
            raise
        task = asyncio.get_running_loop().create_task(self._pump(op.id, consumer, op.format))
        self.subs[op.id] = (consumer, task, op.group is not None)
        self.gw.sockets.subscriptions += 1
        await self.send(
            {
                "type": "subscribed",
                "id": op.id,
                "partitions": [{"topic": tp.topic, "partition": tp.partition} for tp in tps],
            }
        )

    async def _pump(self, sub_id: str, consumer: Consumer, fmt: Format) -> None:
        """Records to frames until unsubscribed; an error ends the subscription with an
        error frame (the client resubscribes from its last offsets)."""
        max_records = self.gw.settings.ws_frame_records
        try:
            while True:
                records = await poll(consumer, fmt, POLL_WAIT_S, max_records)
                if records:
                    frame = {"type": "records", "id": sub_id, "records": records}
                    await self.send(frame, pump=True)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self.send_error(sub_id, exc)


def _id_of(data: str | bytes) -> str | None:
    """The ``id`` of a message that failed validation, if it has one (for the answer)."""
    try:
        raw = TypeAdapter(dict[str, Any]).validate_json(data)
    except ValidationError:
        return None
    value = raw.get("id")
    return value if isinstance(value, str) else None


@router.websocket("/v1/ws")
async def stream(websocket: WebSocket) -> None:
    """Stream and produce over one socket (see the module documentation)."""
    await serve(websocket, Session)


async def serve(websocket: WebSocket, socket: Callable[[WebSocket, Gateway], Socket]) -> None:
    """Accept ``websocket`` within ``max_ws_connections`` and run ``socket`` on it."""
    gw: Gateway = websocket.app.state.gateway
    await websocket.accept()
    if gw.sockets.connections >= gw.settings.max_ws_connections:
        await websocket.send_text(
            encode_frame(
                {
                    "type": "error",
                    "id": None,
                    "error_code": "too_many_connections",
                    "message": f"{gw.sockets.connections} WebSockets are open "
                    "(max_ws_connections): try again later",
                }
            ).decode()
        )
        await websocket.close(CLOSE_TRY_AGAIN)
        return
    gw.sockets.connections += 1
    try:
        await socket(websocket, gw).run()
    except WebSocketDisconnect:
        pass
    finally:
        gw.sockets.connections -= 1
