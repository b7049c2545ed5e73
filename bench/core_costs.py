"""Where a small request's CPU goes inside the broker, without sockets: the wire session's
decode of a request frame, the request core's ``handle_now``, and the encode of the response,
each timed on its own (process CPU time, best of ``--rounds`` rounds of ``--n`` requests).

One 100 B record per produce request (acks=leader) to a one-partition topic on a temporary
data dir, and one-batch fetches of what was produced, as bench/small_requests.py sends them.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable

import uvloop
from harness import machine

from tidelog.server.config import BrokerConfig
from tidelog.server.core import BrokerCore, Outcome, Session, served
from tidelog.server.metrics import BrokerMetrics
from tidelog.wire import messages as m
from tidelog.wire.batch_builder import RecordBatchBuilder
from tidelog.wire.session import BrokerIdentity, RequestReceived, Role, WireSession


def best_us(
    rounds: int, n: int, step: Callable[[], None], before: Callable[[], None] | None = None
) -> float:
    """Microseconds of CPU per request of ``step`` (``before`` runs first, untimed)."""
    best = float("inf")
    for _ in range(rounds):
        if before is not None:
            before()
        start = time.process_time()
        step()
        best = min(best, (time.process_time() - start) / n * 1e6)
    return best


async def main(args: argparse.Namespace) -> None:
    n, rounds = args.n, args.rounds
    with tempfile.TemporaryDirectory(prefix="tidelog-bench-") as data_dir:
        core = BrokerCore(BrokerConfig(data_dir=data_dir))
        await core.open()
        core.count_into(BrokerMetrics())  # as with an admin port: metrics on
        try:
            await core.manager.create_topic_async("t", 1)
            builder = RecordBatchBuilder()
            builder.append(bytes(100), key=None)
            batch = builder.build()
            session = Session("127.0.0.1", 1)
            client = WireSession[int](Role.CLIENT, client_id="bench")
            server = WireSession(Role.SERVER, identity=BrokerIdentity(0, "c", "v", 1 << 20))
            _, frame = client.send_request(client.handshake_request(), 0)
            server.receive_data(b"".join(frame))
            answered = server.next_event()
            assert answered is not None and not isinstance(answered, RequestReceived)
            client.receive_data(b"".join(answered.reply))
            client.next_event()

            def frames(make: Callable[[int], m.Request], data: tuple[bytes, ...]) -> list[bytes]:
                out = []
                for i in range(n):
                    _, buffers = client.send_request(make(i), i, data=data)
                    out.append(b"".join(bytes(b) for b in buffers))
                return out

            def costs(encoded: list[bytes]) -> tuple[float, float, float]:
                events: list[RequestReceived] = []
                replies: list[Outcome] = []

                def decode() -> None:
                    events.clear()
                    for f in encoded:
                        server.receive_data(f)
                        event = server.next_event()
                        assert type(event) is RequestReceived
                        events.append(event)

                def handle() -> None:
                    replies.clear()
                    for _header, request, body in events:
                        replies.append(core.handle_now(request, body, session))

                def encode() -> None:
                    for (header, _r, _b), reply in zip(events, replies, strict=True):
                        assert served(reply) and reply is not None
                        server.send_response(header, reply[0], data=reply[1])

                return (
                    best_us(rounds, n, decode),
                    best_us(rounds, n, handle, before=decode),
                    best_us(rounds, n, encode, before=decode),
                )

            produce = m.ProduceRequest((m.ProducePartition("t", 0, len(batch)),))
            for name, encoded in (
                ("produce", frames(lambda i: produce, (batch,))),
                ("fetch", frames(lambda i: m.FetchRequest((m.FetchPartition("t", 0, i, 1),)), ())),
            ):
                d, h, e = costs(encoded)
                print(
                    f"{name:8} decode {d:5.2f} us   handle_now {h:5.2f} us   encode {e:5.2f} us"
                    f"   sum {d + h + e:5.2f} us",
                    flush=True,
                )
        finally:
            core.begin_shutdown()
            await core.shutdown()


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=5000, help="requests per round")
    parser.add_argument("--rounds", type=int, default=9)
    return parser.parse_args()


if __name__ == "__main__":
    args = parse()
    print(f"# request costs in-process, best of {args.rounds} x {args.n}; {machine()}")
    uvloop.run(main(args))
