"""Topic files, and the copy of each in its partition directories that rebuilds a damaged one.

``topics/<topic>.json`` is a topic's commit record: its partition count and config overrides,
with a CRC-32C of that content (``crc32c``; a file without one, from an older version, is
read as it is). Every partition directory keeps a copy, ``partition.metadata`` -- like Kafka's
file of that name -- written without an fsync (the topic file is the durable record; a copy a
crash lost or cut is rewritten at the next start).

When a topic file is damaged (or gone while its partitions hold data) it is rebuilt from the
copies if that is unambiguous: every partition directory of the topic holds an intact copy and
they all agree. Otherwise opening the data directory fails with a message that names the file
and the fix.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from dataclasses import dataclass, field
from typing import Any, Final

from crc32c import crc32c

from tidelog.wire.errors import StorageError

from .config import TopicPartition
from .files import CREATE, Files

logger = logging.getLogger("tidelog.server.log")

TOPICS_DIR: Final = "topics"
TOPIC_SUFFIX: Final = ".json"
PARTITION_METADATA: Final = "partition.metadata"
TOPIC_FILE_VERSION: Final = 1


@dataclass(frozen=True, slots=True)
class TopicRecord:
    """What a topic file holds."""

    name: str
    partitions: int
    overrides: dict[str, Any] = field(default_factory=dict)
    topic_id: str = ""
    """The cluster's id of the topic (KIP-516); empty on a single broker."""


def encode_topic(record: TopicRecord) -> bytes:
    doc: dict[str, Any] = {
        "version": TOPIC_FILE_VERSION,
        "name": record.name,
        "partitions": record.partitions,
        "config": dict(record.overrides),
    }
    if record.topic_id:
        doc["topic_id"] = record.topic_id
    doc["crc32c"] = _checksum(doc)
    return json.dumps(doc, indent=2, sort_keys=True).encode()


def decode_topic(data: bytes | None, name: str) -> TopicRecord:
    """The record in ``data``, the file of topic ``name``. Raises ``ValueError`` (and the
    like) if it is damaged: unreadable, a wrong checksum or name, impossible values."""
    if data is None:
        raise ValueError("the file is missing")
    if not data:
        raise ValueError("the file is empty")
    doc = json.loads(data)
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    stored = doc.pop("crc32c", None)
    if stored is not None and stored != _checksum(doc):
        raise ValueError("its checksum does not match its content")
    if doc["name"] != name:
        raise ValueError(f"it names topic {doc['name']!r}")
    partitions = doc["partitions"]
    config = doc.get("config", {})
    if not isinstance(partitions, int) or partitions < 1 or not isinstance(config, dict):
        raise ValueError("impossible partitions or config")
    topic_id = doc.get("topic_id", "")
    if not isinstance(topic_id, str):
        raise ValueError("impossible topic_id")
    return TopicRecord(name, partitions, config, topic_id)


def _checksum(doc: dict[str, Any]) -> int:
    return crc32c(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode())


class TopicFiles:
    """The topic files of a data directory and their copies in the partition directories."""

    def __init__(self, files: Files, data_dir: str) -> None:
        self._files = files
        self.data_dir = data_dir

    def path(self, name: str) -> str:
        return os.path.join(self.data_dir, TOPICS_DIR, name + TOPIC_SUFFIX)

    def read(self, name: str) -> TopicRecord:
        """The topic file of ``name``; a damaged one is rebuilt from its copies, or
        :class:`StorageError` names the file and the fix. Stale copies are rewritten."""
        path = self.path(name)
        try:
            record = decode_topic(self._files.read_file(path), name)
        except (ValueError, KeyError, TypeError) as exc:
            return self.rebuild(name, f"topic file {path} is damaged ({exc})")
        self.refresh_copies(record)
        return record

    def write(self, record: TopicRecord) -> None:
        """Write the topic file (atomically and durably), then its copies."""
        self._files.write_atomically(self.path(record.name), encode_topic(record))
        self.refresh_copies(record, force=True)

    def refresh_copies(self, record: TopicRecord, *, force: bool = False) -> None:
        """Rewrite the copies that differ from ``record`` (all of them with ``force``)."""
        data = encode_topic(record)
        for partition in range(record.partitions):
            directory = os.path.join(self.data_dir, TopicPartition(record.name, partition).dir_name)
            if not self._files.isdir(directory):
                continue
            path = os.path.join(directory, PARTITION_METADATA)
            if force or self._files.read_file(path) != data:
                _write_quickly(self._files, path, data)

    def rebuild(self, name: str, problem: str) -> TopicRecord:
        """Rebuild the topic file of ``name`` from its copies, or raise :class:`StorageError`
        saying ``problem``, why the copies do not settle it and what to do."""
        record, why = self._from_copies(name)
        path = self.path(name)
        if record is None:
            partitions = len(self.partition_dirs(name)) or 1
            example = json.dumps(
                {
                    "version": TOPIC_FILE_VERSION,
                    "name": name,
                    "partitions": partitions,
                    "config": {},
                }
            )
            raise StorageError(
                f"{problem}, and the partition directories do not say what it held ({why}). "
                f"Restore {path} from a backup, or write it by hand -- for example {example}, "
                'with the topic\'s config overrides under "config" -- and start the broker '
                "again"
            )
        self._files.write_atomically(path, encode_topic(record))
        logger.warning(
            "%s; rebuilt it from the copies in %d partition director%s: %d partition(s), "
            "config overrides %s",
            problem,
            len(self.partition_dirs(name)),
            "y" if len(self.partition_dirs(name)) == 1 else "ies",
            record.partitions,
            record.overrides,
        )
        return record

    def holds_data(self, directory: str) -> bool:
        """A partition directory no topic claims: removed if its segments are empty (a
        creation cut short); ``True`` if it holds data."""
        files = self._files
        logs = [n for n in files.listdir(directory) if n.endswith(".log")]
        if all(files.size(os.path.join(directory, n)) == 0 for n in logs):
            logger.info(
                "removing %s, an empty partition of a topic whose creation was cut", directory
            )
            files.remove_tree(directory)
            return False
        return True

    def adopt(self, name: str, directories: list[str]) -> TopicRecord | None:
        """Partition directories holding data whose topic file is gone: the topic rebuilt
        from their copies if they settle it, else ``None`` (they are left alone, logged)."""
        try:
            return self.rebuild(name, f"topic file of {name} is missing")
        except StorageError as exc:
            for directory in directories:
                logger.error("ignoring %s: it holds data but belongs to no known topic", directory)
            logger.error("%s", exc)
            return None

    def partition_dirs(self, name: str) -> list[int]:
        out = []
        for entry in self._files.listdir(self.data_dir):
            tp = TopicPartition.parse_dir_name(entry)
            path = os.path.join(self.data_dir, entry)
            if tp is not None and tp.topic == name and self._files.isdir(path):
                out.append(tp.partition)
        return sorted(out)

    def _from_copies(self, name: str) -> tuple[TopicRecord | None, str]:
        partitions = self.partition_dirs(name)
        if not partitions:
            return None, "there are none"
        found: set[tuple[int, str]] = set()
        record = None
        for partition in partitions:
            directory = os.path.join(self.data_dir, TopicPartition(name, partition).dir_name)
            path = os.path.join(directory, PARTITION_METADATA)
            try:
                record = decode_topic(self._files.read_file(path), name)
            except (ValueError, KeyError, TypeError) as exc:
                return None, f"{path}: {exc}"
            if partition >= record.partitions:
                return None, f"{directory} is beyond the {record.partitions} partitions it says"
            found.add((record.partitions, json.dumps(record.overrides, sort_keys=True)))
        if len(found) != 1 or record is None:
            return None, "their copies disagree"
        return record, ""


def _write_quickly(files: Files, path: str, data: bytes) -> None:
    """Replace a small file by a rename, without an fsync (a copy, not the record)."""
    tmp = f"{path}.{uuid.uuid4().hex[:12]}.tmp"
    handle = files.open(tmp, CREATE)
    try:
        handle.truncate(0)
        handle.write_at([data], 0)
    finally:
        handle.close_quietly()
    files.rename(tmp, path)
