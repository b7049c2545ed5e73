"""The ``async with`` shape shared by the clients (producer, consumer, admin)."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class AsyncClient:
    """``async with client:`` starts it and closes it however the block ends. Subclasses
    implement :meth:`start` and :meth:`close`."""

    async def start(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
