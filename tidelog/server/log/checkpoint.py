"""Small files of a data directory that say what the logs can skip at the next start.

* ``recovery-point-offset-checkpoint``: per partition, the offset below which the log was
  fsynced. Kafka's text format: a version line, a count line, then ``topic partition offset``
  lines; then a ``crc32c <hex>`` line over everything before it (a reader of Kafka's format
  ignores it; a file without it is read as it is). Written atomically; a missing or
  unreadable file only means more recovery.
* ``log-start-offset-checkpoint``: per partition, the log start offset, in the same format:
  how opening tells a first segment that retention deleted from one that went missing.
* ``.tidelog_clean_shutdown``: present only between a clean close and the next open. Its
  presence lets the next start skip the batch-by-batch scan.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Final

from crc32c import crc32c

from .config import TopicPartition
from .files import Files

logger = logging.getLogger("tidelog.server.log")

RECOVERY_POINT_FILE: Final = "recovery-point-offset-checkpoint"
LOG_START_FILE: Final = "log-start-offset-checkpoint"
CLEAN_SHUTDOWN_FILE: Final = ".tidelog_clean_shutdown"
CHECKPOINT_VERSION: Final = 0
CRC_PREFIX: Final = "crc32c "


def write_offsets(files: Files, path: str, offsets: Mapping[TopicPartition, int]) -> None:
    """Replace the checkpoint at ``path`` with ``offsets`` (write, fsync, rename, fsync dir)."""
    lines = [str(CHECKPOINT_VERSION), str(len(offsets))]
    lines.extend(f"{tp.topic} {tp.partition} {offset}" for tp, offset in sorted(offsets.items()))
    body = ("\n".join(lines) + "\n").encode()
    files.write_atomically(path, body + f"{CRC_PREFIX}{crc32c(body):08x}\n".encode())


def read_offsets(files: Files, path: str) -> dict[TopicPartition, int]:
    """The offsets of a checkpoint; empty if it is missing or damaged (logged), which is safe:
    a partition without a recovery point is recovered from its first segment."""
    data = files.read_file(path)
    if data is None:
        return {}
    try:
        body, _, last = data.rstrip(b"\n").rpartition(b"\n")
        if last.startswith(CRC_PREFIX.encode()):
            body += b"\n"
            if int(last[len(CRC_PREFIX) :], 16) != crc32c(body):
                raise ValueError("its checksum does not match its content")
            data = body
        lines = data.decode().splitlines()
        if int(lines[0]) != CHECKPOINT_VERSION:
            raise ValueError(f"unknown version {lines[0]}")
        count = int(lines[1])
        out: dict[TopicPartition, int] = {}
        for line in lines[2 : 2 + count]:
            topic, partition, offset = line.split(" ")
            out[TopicPartition(topic, int(partition))] = int(offset)
        if len(out) != count:
            raise ValueError(f"{len(out)} entries where the header says {count}")
        return out
    except (ValueError, IndexError, UnicodeDecodeError) as exc:
        logger.warning("ignoring damaged checkpoint %s: %s", os.path.basename(path), exc)
        return {}
