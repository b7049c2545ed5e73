"""Large records are built with one copy (``_build_large``): the same bytes as the general path,
with and without keys and headers."""

from __future__ import annotations

import os

import pytest

from tidelog.wire import RecordBatch, RecordBatchBuilder, batch_builder


def build(records: list[tuple[bytes | None, bytes | None, bool]]) -> bytes:
    builder = RecordBatchBuilder(clock=lambda: 1_000)
    for key, value, headers in records:
        builder.append(value, key=key, headers=[("h", b"x")] if headers else None)
    return builder.build(base_offset=7)


@pytest.mark.parametrize(
    "records",
    [
        [(None, os.urandom(64 * 1024), False)] * 3,
        [(b"key", os.urandom(5000), False), (None, None, False), (b"", os.urandom(9000), False)],
        [(b"k", os.urandom(8192), True), (None, os.urandom(8192), False)],
    ],
)
def test_one_copy_builds_the_same_batch(
    records: list[tuple[bytes | None, bytes | None, bool]], monkeypatch: pytest.MonkeyPatch
) -> None:
    large = build(records)
    monkeypatch.setattr(batch_builder, "_LARGE_RECORD", 1 << 40)  # the general path
    assert build(records) == large
    batch = RecordBatch.parse(large, verify_records=True)
    assert [(r.key, r.value) for r in batch.records()] == [(k, v) for k, v, _ in records]


def test_the_general_path_was_not_taken_for_large_records(monkeypatch: pytest.MonkeyPatch) -> None:
    taken: list[int] = []
    real = RecordBatchBuilder._build_large

    def spy(self: RecordBatchBuilder, *args: object) -> bytes:
        taken.append(len(self))
        return real(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(RecordBatchBuilder, "_build_large", spy)
    build([(None, os.urandom(4096), False)] * 2)
    build([(None, b"small", False)] * 2)
    assert taken == [2]
