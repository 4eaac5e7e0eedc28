"""The in-process record of which tenant each response belongs to (what feedback is matched
against without Redis): ratings once per response, and a size that does not grow with
traffic (a dict of ids grew 170 bytes a response, the soak's whole RSS drift)."""

from __future__ import annotations

import tracemalloc

from swiftclaw_runtime.spend.identity import Identity
from swiftclaw_runtime.spend.owners import ResponseOwners
from swiftclaw_runtime.spend.usage import LOCAL_RESPONSES, Charge, UsageBook


def test_a_response_is_rated_once_by_its_own_tenant() -> None:
    owners = ResponseOwners(8)
    owners.add("r1", "acme")
    assert "r1" in owners and "r2" not in owners
    assert owners.rate("r1", "globex") == "unknown"  # another tenant's response
    assert owners.rate("r2", "acme") == "unknown"
    assert owners.rate("r1", "acme") == "ok"
    assert owners.rate("r1", "acme") == "duplicate"
    owners.add("r1", "acme")  # a provider repeating its completion id
    assert owners.rate("r1", "acme") == "duplicate"  # cannot reopen the rated response


def test_the_oldest_response_is_forgotten_past_the_capacity() -> None:
    owners = ResponseOwners(4)
    for i in range(6):
        owners.add(f"r{i}", "acme")
    assert "r0" not in owners and "r1" not in owners
    assert all(f"r{i}" in owners for i in range(2, 6))
    assert owners.rate("r0", "acme") == "unknown"
    assert owners.rate("r5", "acme") == "ok"


async def test_responses_recorded_without_redis_take_no_memory_per_response() -> None:
    """Three times the ring's capacity of answers, each with two ids (the server's and the
    provider's), through the usage book as a replica without Redis records them."""
    book = UsageBook("agent", None)
    who = Identity("acme", "alice")

    def charge(i: int) -> Charge:
        return Charge(who, "t", "m", 0.0, 1, 1, (f"{i:032x}", f"chatcmpl-{i:024x}"))

    for i in range(1000):  # the day's book and its first fields
        book.record_local("2026-12-07", charge(i))
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(1000, 1000 + LOCAL_RESPONSES * 3 // 2):
            book.record_local("2026-12-07", charge(i))
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 64 * 1024, grown  # a dict of ids: 170 bytes a response, 25 MB here
    last = 1000 + LOCAL_RESPONSES * 3 // 2 - 1
    assert await book.feedback("2026-12-07", f"chatcmpl-{last:024x}", who, ["feedback:up"]) == "ok"
    assert await book.feedback("2026-12-07", f"{0:032x}", who, ["feedback:up"]) == "unknown"
