"""File descriptors: the resource a broker's logs and its client connections share.

Every partition keeps its active segment open, the handle cache up to ``max_open_segments`` more,
and every connection one socket. A connection flood must never take the descriptors an fsync
or a new segment needs, so connections are capped at what the limit leaves after the logs.
"""

from __future__ import annotations

import logging
import os
import resource
from typing import Final

from tidelog.wire.errors import StorageError

from .log import TopicPartition

log = logging.getLogger("tidelog.server")

RESERVED_DESCRIPTORS: Final = 64
"""Kept for everything but logs and connections: the listening socket, the offsets log, the
duplicates an fsync opens, index files being rebuilt, the event loop's own."""


def raise_descriptor_limit() -> int:
    """Raise this process's soft descriptor limit to its hard limit (what ``tidelog serve``
    does at start, as Kafka's and NATS's service files do); the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft == resource.RLIM_INFINITY:
        return soft if soft != resource.RLIM_INFINITY else 1 << 20
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:
            log.warning("could not raise the file descriptor limit to %d: %s", hard, exc)
            return soft
        log.info("raised the file descriptor limit from %d to %d", soft, hard)
        return hard
    return soft


def descriptor_limit() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def partitions_on_disk(data_dir: str | os.PathLike[str]) -> int:
    """How many partition directories a data directory holds (0 if it does not exist)."""
    try:
        names = os.listdir(data_dir)
    except FileNotFoundError:
        return 0
    return sum(1 for name in names if TopicPartition.parse_dir_name(name) is not None)


def check_descriptors(partitions: int, cached_segments: int) -> None:
    """Refuse to start, naming the limit and the fix, when the logs alone would exhaust it."""
    limit = descriptor_limit()
    need = partitions + cached_segments + RESERVED_DESCRIPTORS
    if need > limit:
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        raise StorageError(
            f"the data directory holds {partitions} partitions, which need about {need} open "
            f"files (one per partition, up to {cached_segments} for older segments, "
            f"{RESERVED_DESCRIPTORS} reserved), but this process may hold only {limit} "
            f"(hard limit {hard}): raise it with ulimit -n, or LimitNOFILE= under systemd"
        )


def connection_capacity(max_connections: int, partitions: int, cached_segments: int) -> int:
    """The connections a broker serves at once: ``max_connections``, lowered so that the
    logs always find the descriptors they need."""
    spare = descriptor_limit() - partitions - cached_segments - RESERVED_DESCRIPTORS
    return max(1, min(max_connections, spare))
