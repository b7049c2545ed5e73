"""Validation on produce for topics with ``schema_validation`` set (docs/REGISTRY.md).

The registry's state comes from this broker's own replica of the ``_schemas`` topic (the
registry creates it with a replica on every broker): replayed with the same rules as the
registry (:class:`~tidelog.schemas.state.RegistryState`), caught up synchronously below the
high watermark before each check, so produce keeps appending without an ``await``. Records a
registry has not yet got committed are not yet seen: their ids are refused until they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from tidelog.schemas.state import SCHEMAS_TOPIC, RegistryState
from tidelog.schemas.types import ValidationMode
from tidelog.wire.errors import (
    CorruptBatchError,
    CorruptMessageError,
    InvalidRecordError,
    UnknownTopicOrPartitionError,
)
from tidelog.wire.records import iter_batches

from ..log import LogManager, PartitionLog, TopicPartition

if TYPE_CHECKING:
    from tidelog.schemas.validation import RecordChecker

SCHEMAS_TP: Final = TopicPartition(SCHEMAS_TOPIC, 0)
READ_BYTES: Final = 1024 * 1024


class SchemaGuard:
    """Refuses a partition's batches when a value breaks the topic's validation mode."""

    def __init__(self) -> None:
        self._log: PartitionLog | None = None
        self._read_to = 0
        self._state = RegistryState()
        self._checker: RecordChecker | None = None
        """Made on first use: it loads fastavro and jsonschema, which unvalidated brokers skip."""

    def check(
        self, logs: LogManager, topic: str, mode: ValidationMode, batches: Sequence[memoryview]
    ) -> None:
        """Raise :class:`InvalidRecordError` naming the first bad record and why."""
        from tidelog.schemas.validation import RecordChecker, value_subject

        self._catch_up(logs)
        if self._checker is None or self._checker.state is not self._state:
            self._checker = RecordChecker(self._state)
        checker = self._checker
        subject = value_subject(topic)
        for index, buffer in enumerate(batches):
            try:
                values = [r.value for batch in iter_batches(buffer) for r in batch.records()]
            except CorruptBatchError as exc:
                raise CorruptMessageError(str(exc)) from None
            bad = checker.first_invalid(subject, mode, values)
            if bad is not None:
                raise InvalidRecordError(
                    f"record {bad[0]} of batch {index} refused by schema_validation={mode.value} "
                    f"(subject {subject!r}): {bad[1]}"
                )

    def _catch_up(self, logs: LogManager) -> None:
        try:
            plog: PartitionLog | None = logs.get_log(SCHEMAS_TP)
        except UnknownTopicOrPartitionError:  # no registry topic here: nothing is registered
            plog = None
        if plog is not self._log:  # created, deleted or created anew: replay from its start
            self._log = plog
            self._read_to = 0
            self._state = RegistryState()
        if plog is None:
            return
        end = plog.high_watermark
        self._read_to = max(self._read_to, plog.log_start_offset)
        while self._read_to < end:
            read = plog.read(self._read_to, READ_BYTES, max_offset=end)
            if not read.records:
                break
            for batch in iter_batches(read.records):
                for record in batch.records():
                    if record.offset >= self._read_to:
                        self._state.apply(record.key, record.value)
                self._read_to = batch.next_offset
