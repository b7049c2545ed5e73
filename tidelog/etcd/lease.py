"""Lease keepalives on a thread of their own.

A broker's registration and the controller key live under etcd leases: if keepalives stop, etcd
deletes the keys and the cluster treats the broker as dead. Keepalives must therefore never
depend on the broker's event loop, which a burst of heavy work can stall for longer than a
lease's TTL: :class:`LeaseKeeper` sends them from a daemon thread with a blocking HTTP client.

It sends one every ``ttl / 3`` seconds (etcd checks expiry in steps of about half a second, so
a third of the TTL leaves room for two lost keepalives). When etcd says the lease is gone, or no
keepalive has succeeded for a whole TTL (after which etcd may have expired it: we cannot know,
so we assume the worst), it calls ``on_lost`` once, from its thread, and stops. A lost lease is
never renewed: the owner must register afresh (a new incarnation).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Final

import httpx

from .client import DEFAULT_TIMEOUT, describe, normalise_endpoint
from .types import Lease

logger = logging.getLogger("tidelog.etcd")

KEEPALIVES_PER_TTL: Final = 3
RETRY_INTERVAL: Final = 0.2
"""Seconds between attempts once a keepalive failed (rotating over the endpoints)."""

Clock = Callable[[], float]


class LeaseKeeper:
    """Keeps ``lease`` alive until :meth:`stop`, or calls ``on_lost(reason)`` once it is lost."""

    def __init__(
        self,
        endpoints: Sequence[str],
        lease: Lease,
        on_lost: Callable[[str], None],
        *,
        timeout: float = DEFAULT_TIMEOUT,
        clock: Clock = time.monotonic,
    ) -> None:
        self.endpoints = [normalise_endpoint(e) for e in endpoints]
        self.lease = lease
        self.on_lost = on_lost
        self.interval = lease.ttl / KEEPALIVES_PER_TTL
        self.timeout = min(timeout, self.interval)
        self.clock = clock
        self.keepalives = 0
        """Successful keepalives so far (tests and metrics read it)."""
        self.lost_reason: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"etcd-lease-{lease.id:x}", daemon=True
        )

    def start(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop sending keepalives (the lease then expires unless revoked); waits for the thread."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        last_ok = self.clock()
        index = 0
        with httpx.Client(timeout=self.timeout) as http:
            while not self._stop.is_set():
                url = f"{self.endpoints[index]}/v3/lease/keepalive"
                try:
                    ttl = self._keepalive(http, url)
                except (httpx.HTTPError, ValueError) as exc:
                    index = (index + 1) % len(self.endpoints)
                    silent = self.clock() - last_ok
                    if silent >= self.lease.ttl:
                        self._lost(f"no keepalive reached etcd for {silent:.1f}s ({describe(exc)})")
                        return
                    self._stop.wait(RETRY_INTERVAL)
                    continue
                if ttl <= 0:
                    self._lost("etcd no longer knows the lease (it expired)")
                    return
                last_ok = self.clock()
                self.keepalives += 1
                self._stop.wait(self.interval)

    def _keepalive(self, http: httpx.Client, url: str) -> int:
        """One keepalive; the TTL etcd answers (0: the lease is gone)."""
        response = http.post(url, json={"ID": str(self.lease.id)})
        response.raise_for_status()
        first = response.text.strip().splitlines()[0]
        result = json.loads(first).get("result")
        if result is None:
            raise ValueError(f"etcd answered a keepalive with {first[:200]!r}")
        return int(result.get("TTL", 0))

    def _lost(self, reason: str) -> None:
        self.lost_reason = reason
        logger.warning("etcd lease %x lost: %s", self.lease.id, reason)
        self.on_lost(reason)
