"""Which tenant each served response belongs to, in process: what feedback is matched
against while Redis is away.

A dict of response ids grew about 170 bytes a response up to its bound (100,000: some
17 MiB, the soak's whole RSS drift). This store is two arrays allocated and written once at
startup: a 64-bit fingerprint of each id and a 64-bit digest of its owner (the low bit says
rated), in a ring that the newest response overwrites the oldest of. Recording is O(1) and
allocates nothing; a lookup (feedback: rare) scans the ring with numpy, about 0.1 ms.

An id recorded twice (a provider repeating its completion ids) takes two slots; a rating
marks every slot of the id, and any rated slot makes the next rating a duplicate, so a
repeat cannot clear a rated mark.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

_RATED = np.uint64(1)


def _digest(text: str) -> int:
    """64 bits of BLAKE2b: never 0 (an empty slot)."""
    value = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")
    return value or 1


class ResponseOwners:
    """A ring of the last ``capacity`` responses' owners, of a fixed size."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        # np.full writes every page now: the ring is resident from the start, not as it fills
        self._ids: np.ndarray[Any, Any] = np.full(capacity, 0, dtype=np.uint64)
        self._owners: np.ndarray[Any, Any] = np.full(capacity, 0, dtype=np.uint64)
        self._next = 0

    @staticmethod
    def _owner(tenant: str) -> int:
        return _digest("owner:" + tenant) & ~1

    def add(self, rid: str, tenant: str) -> None:
        slot = self._next
        self._ids[slot] = _digest(rid)
        self._owners[slot] = self._owner(tenant)
        self._next = (slot + 1) % self.capacity

    def _slots(self, rid: str) -> np.ndarray[Any, Any]:
        return np.flatnonzero(self._ids == np.uint64(_digest(rid)))

    def __contains__(self, rid: str) -> bool:
        return bool(len(self._slots(rid)))

    def rate(self, rid: str, tenant: str) -> str:
        """``ok`` (now rated), ``duplicate`` (rated before) or ``unknown`` (no response of
        this tenant by that id, or it was overwritten)."""
        slots = self._slots(rid)
        owner = np.uint64(self._owner(tenant))
        mine = slots[(self._owners[slots] & ~_RATED) == owner]
        if not len(mine):
            return "unknown"
        if (self._owners[mine] & _RATED).any():
            return "duplicate"
        self._owners[mine] |= _RATED
        return "ok"
