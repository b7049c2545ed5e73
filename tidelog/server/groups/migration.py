"""The one-time migration of the old offsets store into ``__consumer_offsets``.

Run at start, after every partition of the topic is loaded and before any group request is
served: the old store's table (:func:`read_legacy`) is written into the topic -- only the
offsets the topic does not already hold with the same value, so a migration cut short by a
crash and run again writes each offset once -- fsynced, and only then is the old directory
renamed to ``__consumer_offsets.migrated-<UTC time>`` (kept, never deleted: the operator
removes it once satisfied). A crash before the rename leaves the old directory in place and
the next start migrates again; after it, nothing is left to do.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time

from tidelog.server.log import TopicPartition
from tidelog.server.log.files import Files

from .legacy import LEGACY_DIR, MIGRATED_PREFIX, read_legacy
from .store import GroupStore, OffsetValue, offset_row

logger = logging.getLogger("tidelog.server.groups")


def legacy_pending(data_dir: str) -> bool:
    """Whether ``data_dir`` still has an old offsets store to migrate."""
    return os.path.isdir(os.path.join(data_dir, LEGACY_DIR))


async def migrate_legacy(data_dir: str, store: GroupStore) -> int:
    """Migrate the old store of ``data_dir`` into ``store`` (every partition loaded); returns
    how many offsets were written. Raises :class:`StorageError` (nothing is renamed then)."""
    directory = os.path.join(data_dir, LEGACY_DIR)
    table = await asyncio.to_thread(read_legacy, directory)
    written = 0
    writes = []
    by_partition: dict[int, list[tuple[str, TopicPartition, OffsetValue]]] = {}
    for group, offsets in table.items():
        current = store.committed(group)
        for tp, value in sorted(offsets.items()):
            if current.get(tp) != value:
                by_partition.setdefault(store.partition_for(group), []).append((group, tp, value))
    for partition, rows in sorted(by_partition.items()):
        end = store.append(partition, [offset_row(g, tp, v) for g, tp, v in rows])
        for group, tp, value in rows:
            store.adopt({group: {**store.committed(group), tp: value}})
        writes.append(store.durable(partition, end))
        written += len(rows)
    await asyncio.gather(*writes)
    target = await asyncio.to_thread(_rename, directory, data_dir)
    logger.warning(
        "migrated the committed offsets of %d group(s) (%d offset(s) written) from the old "
        "store %s into the internal topic __consumer_offsets; the old store is kept as %s "
        "(remove it once you no longer need it)",
        len(table),
        written,
        directory,
        target,
    )
    return written


def _rename(source: str, data_dir: str) -> str:
    """Rename the old store aside (durably); returns its new path."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = os.path.join(data_dir, MIGRATED_PREFIX + stamp)
    n = 1
    while os.path.exists(target):  # migrated before within the same second
        n += 1
        target = os.path.join(data_dir, f"{MIGRATED_PREFIX}{stamp}.{n}")
    files = Files()
    files.rename(source, target)
    files.sync_dir(data_dir)
    return target
