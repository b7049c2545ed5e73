"""A fetched batch handed to the application whole: :class:`ConsumerBatch`, what
``Consumer.batches()`` and ``Consumer.getbatch()`` return.

It is a :class:`~tidelog.wire.batch_view.BatchView` (columns decoded on first use, no tuple per
record) that knows its partition and the consumer's deserializers. A batch counts as consumed
when it is handed out: the consumer's position (what ``commit()`` and auto-commit store) is
then already past it.
"""

from __future__ import annotations

from collections.abc import Iterator

from tidelog.wire.batch_view import BatchView
from tidelog.wire.records import RecordBatch

from .errors import RecordDeserializationError
from .serializers import Deserializer
from .types import AnyRecord, ConsumerRecord, TopicPartition


class ConsumerBatch(BatchView):
    """The records of one fetched batch of one partition, from the consumer's position on,
    as columns: ``len(batch)``, ``offsets``, ``timestamps``, ``keys``, ``values``,
    ``headers`` (lists, decoded when first read, one entry per record, in offset order), or
    ``records()`` / iteration for :class:`ConsumerRecord` tuples.

    ``keys`` and ``values`` apply the consumer's deserializers when read; a key or value that
    cannot be deserialized raises :class:`RecordDeserializationError` naming its offset. The
    batch counts as consumed all the same: it was handed out."""

    __slots__ = ("_key_deserializer", "_value_deserializer", "partition", "topic")

    def __init__(
        self,
        tp: TopicPartition,
        batch: RecordBatch,
        since: int,
        key_deserializer: Deserializer | None = None,
        value_deserializer: Deserializer | None = None,
    ) -> None:
        super().__init__(batch, since)
        self.topic, self.partition = tp
        self._key_deserializer = key_deserializer
        self._value_deserializer = value_deserializer

    @property
    def tp(self) -> TopicPartition:
        return TopicPartition(self.topic, self.partition)

    @property
    def keys(self) -> list[object]:
        """Each record's key, deserialized (``None``: no key)."""
        return self._deserialized(self.raw_keys(), self._key_deserializer, "key")

    @property
    def values(self) -> list[object]:
        """Each record's value, deserialized (``None``: a tombstone)."""
        return self._deserialized(self.raw_values(), self._value_deserializer, "value")

    def _deserialized(
        self, raw: list[bytes | None], deserializer: Deserializer | None, what: str
    ) -> list[object]:
        if deserializer is None:
            return raw  # type: ignore[return-value]  # list is invariant; bytes are objects
        out: list[object] = []
        append = out.append
        try:
            for item in raw:
                append(None if item is None else deserializer(item))
        except Exception as exc:
            offset = self.offsets[len(out)]
            raise RecordDeserializationError(
                f"cannot deserialize the {what} at {self.topic}[{self.partition}] offset "
                f"{offset}: {exc} (the batch counts as consumed: it was handed out)",
                topic=self.topic,
                partition=self.partition,
                offset=offset,
            ) from exc
        return out

    def records(self) -> list[AnyRecord]:
        """The records as :class:`ConsumerRecord` tuples, deserialized."""
        if self._key_deserializer is None and self._value_deserializer is None:
            return self.rows(ConsumerRecord, (self.topic, self.partition))
        return [
            ConsumerRecord(self.topic, self.partition, o, t, k, v, h)
            for o, t, k, v, h in zip(
                self.offsets, self.timestamps, self.keys, self.values, self.headers, strict=True
            )
        ]

    def __iter__(self) -> Iterator[AnyRecord]:
        return iter(self.records())
