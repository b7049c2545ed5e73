"""Records out of a :class:`~tidelog.client.Consumer`, rendered, for consumer instances and
WebSocket subscriptions: a record that does not decode in the asked format is never skipped
-- its partition is sought back to it, so the next poll starts there (and fails there, with
406 and a hint to use base64, until the client changes format)."""

from __future__ import annotations

from tidelog.client import Consumer, TopicPartition

from .formats import Format, Rendered, UndecodableError, render


async def poll(consumer: Consumer, fmt: Format, wait: float, max_records: int) -> list[Rendered]:
    """Up to ``max_records`` rendered records, waiting up to ``wait`` seconds for some.
    Raises :class:`UndecodableError` when the first record it would return does not decode,
    and the consumer's errors."""
    batch = await consumer.getmany(timeout=wait, max_records=max_records)
    out: list[Rendered] = []
    error: UndecodableError | None = None
    for tp, records in batch.items():
        try:
            rendered = render(tp.topic, tp.partition, [r[2:] for r in records], fmt)
        except UndecodableError as exc:
            rendered, error = [], exc
        if len(rendered) < len(records):
            consumer.seek(TopicPartition(tp.topic, tp.partition), records[len(rendered)].offset)
        out.extend(rendered)
    if not out and error is not None:
        raise error
    return out
