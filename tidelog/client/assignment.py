"""The consumer's assigned partitions and the records ``async for`` holds back from them.

The :class:`PartitionState` per assigned partition (position, pause, prefetched batches) lives
in one dict shared with the fetcher and the group subscription. ``async for`` takes records in
chunks and yields them one at a time: those taken but not yet yielded are *held*, and count as
not consumed. Giving them back (a seek, a pause, a new assignment, a revocation) moves each
partition's position back to the first of them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence

from .errors import ClientUsageError
from .fetcher import PartitionState
from .types import AnyRecord, TopicPartition


class Assignment:
    """The assigned partitions' states and the records held by ``async for``.

    ``held`` is the one deque of held records: the consumer pops from it per record (a
    method call less on the hot path); it is only ever changed in place.
    """

    __slots__ = ("held", "states")

    def __init__(self) -> None:
        self.states: dict[TopicPartition, PartitionState] = {}
        self.held: deque[AnyRecord] = deque()

    def replace(self, partitions: Iterable[TopicPartition], reset: int | None) -> None:
        """Assign exactly ``partitions``: kept ones keep their positions, new ones start at
        ``reset`` (a ListOffsets spec; ``None``: no position until a seek)."""
        self.give_back(self.states)
        old = self.states.copy()
        self.states.clear()
        for tp in partitions:
            state = old.get(tp)
            if state is None:
                state = PartitionState(tp)
                state.need_reset(reset)
            self.states[tp] = state

    def state(self, tp: TopicPartition | tuple[str, int]) -> PartitionState:
        """The state of an assigned partition; raises :class:`ClientUsageError` for another."""
        state = self.states.get(TopicPartition(*tp))
        if state is None:
            raise ClientUsageError(
                f"{tp[0]}[{tp[1]}] is not assigned to this consumer: assign() it"
            )
        return state

    def states_for(
        self, partitions: Sequence[TopicPartition | tuple[str, int]]
    ) -> list[PartitionState]:
        """The states of ``partitions``, or of every assigned partition if none are given."""
        if not partitions:
            return list(self.states.values())
        return [self.state(tp) for tp in partitions]

    def seek(self, tp: TopicPartition | tuple[str, int], offset: int) -> None:
        state = self.state(tp)
        self.give_back([state.tp])
        state.seek(offset)

    def pause(self, partitions: Sequence[TopicPartition]) -> None:
        states = self.states_for(partitions)
        self.give_back(state.tp for state in states)
        for state in states:
            state.paused = True

    def resume(self, partitions: Sequence[TopicPartition]) -> None:
        for state in self.states_for(partitions):
            state.paused = False

    def paused(self) -> frozenset[TopicPartition]:
        return frozenset(tp for tp, state in self.states.items() if state.paused)

    # --- records held by async for -------------------------------------------------------------

    def give_back(self, partitions: Iterable[TopicPartition]) -> None:
        """Give back the held records of ``partitions``: their positions move back to the
        first of them."""
        held = self.held
        if not held:
            return
        wanted = set(partitions)
        first: dict[TopicPartition, int] = {}
        kept: list[AnyRecord] = []
        for record in held:
            tp = TopicPartition(record.topic, record.partition)
            if tp in wanted:
                first.setdefault(tp, record.offset)
            else:
                kept.append(record)
        held.clear()
        held.extend(kept)
        for tp, offset in first.items():
            state = self.states.get(tp)
            if state is not None:
                state.seek(offset)

    def consumed(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        """The next offset to hand out, per partition with a position: what to commit."""
        out: dict[TopicPartition, int] = {}
        for tp in partitions:
            state = self.states.get(tp)
            if state is not None and state.position is not None:
                out[tp] = state.position
        if self.held:
            for record in reversed(self.held):  # taken by async for, not yet yielded
                tp = TopicPartition(record.topic, record.partition)
                if tp in out:
                    out[tp] = record.offset
        return out
