"""Vector search over cached questions: RediSearch (HNSW, cosine) or numpy in process.

Each entry is a question's unit vector with the TAG fields of its :class:`Scope`
(tenant, agent, system prompt, tier, parameters), the time it was stored, and the cached
answer (which carries the question's text for the verification stage). A search filters
on every TAG, so nothing crosses a tenant, a system prompt or a sampling setting, and on
the time (fresh lookups want entries younger than the semantic TTL; the degraded answer
on an outage accepts entries up to ``staleTTLSeconds``, how long entries are kept).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from .entry import CachedAnswer
from .keys import Scope
from .store import RedisStore

if TYPE_CHECKING:  # numpy is imported once a semantic cache is built, not at startup
    import numpy as np

    from .minilm import Vector

log = logging.getLogger("swiftclaw.cache")


@dataclass(frozen=True)
class Candidate:
    answer: CachedAnswer
    similarity: float


class SemanticIndex(Protocol):
    async def search(
        self, vector: Vector, scope: Scope, k: int, not_before: float
    ) -> list[Candidate]: ...

    async def add(
        self, vector: Vector, scope: Scope, answer: CachedAnswer, ttl_seconds: float
    ) -> None: ...

    def __len__(self) -> int: ...


@dataclass
class _Row:
    vector: Vector
    raw: bytes
    created: float
    expires: float


class MemoryIndex:
    """Brute force over the entries of one scope, at most ``max_entries`` in all (oldest
    out first). A few thousand 384-float vectors are searched in well under a millisecond."""

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.bytes = 0
        self._rows: OrderedDict[tuple[Scope, int], _Row] = OrderedDict()
        self._by_scope: dict[Scope, dict[int, _Row]] = {}
        self._matrix: dict[Scope, tuple[np.ndarray[Any, Any], list[_Row]]] = {}
        self._next = 0

    def __len__(self) -> int:
        return len(self._rows)

    async def search(
        self, vector: Vector, scope: Scope, k: int, not_before: float
    ) -> list[Candidate]:
        import numpy as np

        rows = self._by_scope.get(scope)
        if not rows:
            return []
        cached = self._matrix.get(scope)
        if cached is None:
            listed = list(rows.values())
            cached = (np.stack([r.vector for r in listed]), listed)
            self._matrix[scope] = cached
        matrix, listed = cached
        sims = matrix @ vector
        now = time.time()
        out = []
        for i in np.argsort(-sims)[: k * 2]:
            row = listed[int(i)]
            if row.created < not_before or row.expires <= now:
                continue
            answer = CachedAnswer.from_bytes(row.raw)
            if answer is not None:
                out.append(Candidate(answer, float(sims[int(i)])))
            if len(out) == k:
                break
        return out

    async def add(
        self, vector: Vector, scope: Scope, answer: CachedAnswer, ttl_seconds: float
    ) -> None:
        row = _Row(vector, answer.to_bytes(), answer.created, time.time() + ttl_seconds)
        size = _size(row)
        if size > self.max_bytes:
            return
        self.bytes += size
        self._next += 1
        self._rows[(scope, self._next)] = row
        self._by_scope.setdefault(scope, {})[self._next] = row
        self._matrix.pop(scope, None)
        while len(self._rows) > self.max_entries or self.bytes > self.max_bytes:
            (old_scope, n), old = self._rows.popitem(last=False)
            self.bytes -= _size(old)
            rows = self._by_scope[old_scope]
            del rows[n]
            if not rows:
                del self._by_scope[old_scope]
            self._matrix.pop(old_scope, None)


def _size(row: _Row) -> int:
    return len(row.raw) + int(row.vector.nbytes)


def _f32(vector: Vector) -> bytes:
    import numpy as np

    return vector.astype(np.float32).tobytes()


TAGS = ("tenant", "agent", "prompt", "tier", "params")


class RedisIndex:
    """A RediSearch HNSW index (cosine) over hashes under ``{prefix}s:``."""

    def __init__(self, store: RedisStore, prefix: str, dim: int) -> None:
        self.store = store
        self.prefix = prefix
        self.name = f"{prefix}idx"
        self.dim = dim
        self._n = 0

    def __len__(self) -> int:
        return self._n

    async def prepare(self, client: Any) -> None:
        """Create the index unless it exists (a restarted Redis without persistence has
        lost it). Takes the client: it runs before the store is marked up again."""
        from redis.commands.search.field import NumericField, TagField, VectorField
        from redis.commands.search.index_definition import IndexDefinition, IndexType
        from redis.exceptions import ResponseError

        ft = client.ft(self.name)
        try:
            await ft.info()
            return
        except ResponseError:
            pass
        fields = [TagField(t) for t in TAGS] + [
            NumericField("created"),
            VectorField(
                "vec",
                "HNSW",
                {"TYPE": "FLOAT32", "DIM": self.dim, "DISTANCE_METRIC": "COSINE"},
            ),
        ]
        try:
            await ft.create_index(
                fields,
                definition=IndexDefinition(  # type: ignore[no-untyped-call]
                    prefix=[f"{self.prefix}s:"], index_type=IndexType.HASH
                ),
            )
            log.info("created the semantic cache index %s (dim %d)", self.name, self.dim)
        except ResponseError as err:
            if "already exists" not in str(err).lower():
                raise

    async def search(
        self, vector: Vector, scope: Scope, k: int, not_before: float
    ) -> list[Candidate]:
        from redis.commands.search.query import Query
        from redis.exceptions import ResponseError

        tags = " ".join(f"@{name}:{{{value}}}" for name, value in scope.tags().items())
        query = (
            Query(f"({tags} @created:[{not_before} +inf])=>[KNN {k} @vec $vec AS dist]")
            .sort_by("dist")
            .return_fields("dist", "answer")
            .paging(0, k)
            .dialect(2)
        )
        params: dict[str, str | int | float | bytes] = {"vec": _f32(vector)}
        try:
            result = await self.store.call(
                "search", lambda c: c.ft(self.name).search(query, query_params=params)
            )
        except ResponseError as err:
            if "no such index" in str(err).lower() or "unknown index" in str(err).lower():
                await self.prepare(self.store.client)
                return []
            raise
        out = []
        for doc in result.docs:
            answer = CachedAnswer.from_bytes(doc.answer)
            if answer is not None:
                out.append(Candidate(answer, 1.0 - float(doc.dist)))
        return out

    async def add(
        self, vector: Vector, scope: Scope, answer: CachedAnswer, ttl_seconds: float
    ) -> None:
        import hashlib

        raw = answer.to_bytes()
        key = (
            f"{self.prefix}s:"
            + hashlib.sha256(
                b"|".join(v.encode() for v in scope.tags().values()) + answer.question.encode()
            ).hexdigest()[:32]
        )
        mapping: dict[str, Any] = {
            **scope.tags(),
            "created": answer.created,
            "vec": _f32(vector),
            "answer": raw,
        }

        async def write(c: Any) -> None:
            pipe = c.pipeline(transaction=False)
            pipe.hset(key, mapping=mapping)
            pipe.pexpire(key, max(1, int(ttl_seconds * 1000)))
            await pipe.execute()

        await self.store.call("index", write)
        self._n += 1
