"""The cleaner's key map: the latest offset of each key in the dirty part of a log, held in a
fixed budget of memory (Kafka's ``SkimpyOffsetMap``).

Keys are stored as 16-byte BLAKE2b digests, so an entry costs the same whatever the key's
size; :data:`ENTRY_BYTES` is what one entry costs in this process (digest object, offset int
and dict slot), and the map takes at most ``budget // ENTRY_BYTES`` keys. Two keys with the
same digest would be taken for one (2**-128 per pair, as Kafka's MD5 map accepts).
"""

from __future__ import annotations

from hashlib import blake2b
from typing import Final

ENTRY_BYTES: Final = 160
"""Memory of one entry: a 16-byte ``bytes`` object (49 bytes), an offset ``int`` (32) and its
share of the dict's table (about 70 at two-thirds load), rounded up."""
DIGEST_SIZE: Final = 16


def key_digest(key: bytes) -> bytes:
    return blake2b(key, digest_size=DIGEST_SIZE).digest()


class OffsetMap:
    """Latest offset per key digest, at most :attr:`slots` keys (see the module docstring)."""

    __slots__ = ("_map", "latest_offset", "slots")

    def __init__(self, budget_bytes: int) -> None:
        self.slots = budget_bytes // ENTRY_BYTES
        if self.slots < 1:
            raise ValueError(f"a key map of {budget_bytes} bytes holds no key")
        self._map: dict[bytes, int] = {}
        self.latest_offset = -1
        """The largest offset put in the map."""

    def __len__(self) -> int:
        return len(self._map)

    def room_for(self, keys: int) -> bool:
        """Whether ``keys`` more keys (if all were new) still fit."""
        return len(self._map) + keys <= self.slots

    def put(self, digest: bytes, offset: int) -> None:
        self._map[digest] = offset
        if offset > self.latest_offset:
            self.latest_offset = offset

    def get(self, digest: bytes) -> int | None:
        return self._map.get(digest)

    def clear(self) -> None:
        self._map.clear()
        self.latest_offset = -1
