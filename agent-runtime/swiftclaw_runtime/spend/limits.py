"""Rate limits: requests and tokens per minute, per user, per tenant and for the agent.

A sliding-window log, exact: a request is admitted when, over the last 60 s, each scope
holds fewer than its ``requestsPerMinute`` requests and its tokens plus this request's
estimate stay within ``tokensPerMinute``. (A token bucket or GCRA would let a full burst
through *and* refill during the minute; a log counts exactly what the limit says.)

One Lua script (:data:`SCRIPT`) does the whole check for every scope of a request and
records it only if all scopes admit it, atomically, so replicas sharing a Redis enforce
the limits exactly together. The same script settles the token charge when the answer is
in (the estimate was input + the output cap; the real usage replaces it) and reads the
state for ``GET /v1/usage``.

Without Redis (none configured, or unreachable) :class:`MemoryWindows` applies the same
rules in process, each limit divided by the replicas expected to share it
(``--expected-replicas``, which the operator sets to ``scaling.minReplicas``).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

from ..config import RateLimit, RateLimitsSpec
from .identity import Identity
from .redis import RedisDown, SpendRedis

WINDOW_MS = 60_000
REQUESTS = "requests"
TOKENS = "tokens"

# KEYS: per scope, the log (zset: request id -> admitted at, ms) and its token hash
#   (request id -> tokens, plus "_sum").
# ARGV: mode (acquire | settle | peek), now_ms, window_ms, request id, tokens (the charge to
#   acquire, or the change to settle), then per scope its request and token limits (0: none).
# Returns: allowed (1/0), the refusing scope's index (1-based, 0 none), its unit
#   (1 requests, 2 tokens), the wait in ms until it would admit (-1: never), then per
#   scope: requests in the window, tokens in the window, oldest entry (ms, 0 when empty).
SCRIPT = """
local mode = ARGV[1]
local now = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
local id = ARGV[4]
local tokens = tonumber(ARGV[5])
local n = #KEYS / 2
-- A settlement needs no trim: an entry still in the log keeps its field and the sum in
-- step, and the trim that drops it later frees what it holds then.
for i = 1, mode == 'settle' and 0 or n do
  local log, tok = KEYS[2 * i - 1], KEYS[2 * i]
  local old = redis.call('ZRANGEBYSCORE', log, '-inf', now - window)
  if #old > 0 then
    local freed = 0
    for j = 1, #old, 1000 do  -- unpack's bound: a minute of a busy user's requests at once
      local part = {unpack(old, j, math.min(j + 999, #old))}
      local held = redis.call('HMGET', tok, unpack(part))
      for k = 1, #part do freed = freed + (tonumber(held[k]) or 0) end
      redis.call('HDEL', tok, unpack(part))
    end
    redis.call('HINCRBY', tok, '_sum', -freed)
    redis.call('ZREMRANGEBYSCORE', log, '-inf', now - window)
  end
end
if mode == 'settle' then
  for i = 1, n do
    local log, tok = KEYS[2 * i - 1], KEYS[2 * i]
    if redis.call('ZSCORE', log, id) then
      redis.call('HINCRBY', tok, id, tokens)
      redis.call('HINCRBY', tok, '_sum', tokens)
    end
  end
  return {1, 0, 0, 0}
end
local out = {1, 0, 0, 0}
for i = 1, n do
  local log, tok = KEYS[2 * i - 1], KEYS[2 * i]
  local count = redis.call('ZCARD', log)
  local sum = tonumber(redis.call('HGET', tok, '_sum')) or 0
  local rl = tonumber(ARGV[4 + 2 * i])
  local tl = tonumber(ARGV[5 + 2 * i])
  if mode == 'acquire' and out[1] == 1 then
    if rl > 0 and count + 1 > rl then
      local e = redis.call('ZRANGE', log, count - rl, count - rl, 'WITHSCORES')
      out[1], out[2], out[3], out[4] = 0, i, 1, tonumber(e[2]) + window - now
    elseif tl > 0 and sum + tokens > tl then
      local wait = -1
      if tokens <= tl then
        local entries = redis.call('ZRANGE', log, 0, -1, 'WITHSCORES')
        local freed = 0
        for j = 1, #entries, 2 do
          freed = freed + (tonumber(redis.call('HGET', tok, entries[j])) or 0)
          if sum - freed + tokens <= tl then
            wait = tonumber(entries[j + 1]) + window - now
            break
          end
        end
      end
      out[1], out[2], out[3], out[4] = 0, i, 2, wait
    end
  end
  local first = redis.call('ZRANGE', log, 0, 0, 'WITHSCORES')
  out[#out + 1] = count
  out[#out + 1] = sum
  out[#out + 1] = tonumber(first[2]) or 0
end
if mode == 'acquire' and out[1] == 1 then
  for i = 1, n do
    local log, tok = KEYS[2 * i - 1], KEYS[2 * i]
    redis.call('ZADD', log, now, id)
    redis.call('HSET', tok, id, tokens)
    redis.call('HINCRBY', tok, '_sum', tokens)
    redis.call('PEXPIRE', log, window + 1000)
    redis.call('PEXPIRE', tok, window + 1000)
    out[4 + 3 * i - 2] = out[4 + 3 * i - 2] + 1
    out[4 + 3 * i - 1] = out[4 + 3 * i - 1] + tokens
    if out[4 + 3 * i] == 0 then out[4 + 3 * i] = now end
  end
end
return out
"""


@dataclass(frozen=True)
class Scope:
    """One limited scope of a request: ``user``, ``tenant`` or ``global``, its key and limits."""

    name: str
    key: str
    requests: int | None
    tokens: int | None


@dataclass(frozen=True)
class ScopeState:
    """A scope's window after the operation: requests and tokens in it, its oldest entry."""

    scope: Scope
    requests: int
    tokens: int
    oldest_ms: int


@dataclass(frozen=True)
class Outcome:
    """Whether a request is admitted and, if not, which limit refused it and for how long."""

    allowed: bool
    states: list[ScopeState]
    refused: Scope | None = None
    unit: str = ""
    retry_after: float | None = None  # seconds; None: never (larger than the limit)
    now_ms: int = 0
    shared: bool = True  # counted in Redis (False: this replica's share only)

    def limit(self, unit: str) -> tuple[int, int, float] | None:
        """The tightest limit of ``unit``: (limit, remaining, seconds until a slot frees)."""
        best: tuple[int, int, float] | None = None
        for s in self.states:
            cap = s.scope.requests if unit == REQUESTS else s.scope.tokens
            if cap is None:
                continue
            used = s.requests if unit == REQUESTS else s.tokens
            remaining = max(0, cap - used)
            reset = max(0.0, (s.oldest_ms + WINDOW_MS - self.now_ms) / 1000) if used else 0.0
            if best is None or remaining < best[1]:
                best = (cap, remaining, reset)
        return best

    def headers(self) -> list[tuple[bytes, bytes]]:
        """OpenAI's ``x-ratelimit-*`` headers for the tightest request and token limits."""
        out: list[tuple[bytes, bytes]] = []
        for unit in (REQUESTS, TOKENS):
            figures = self.limit(unit)
            if figures is None:
                continue
            cap, remaining, reset = figures
            out += [
                (f"x-ratelimit-limit-{unit}".encode(), str(cap).encode()),
                (f"x-ratelimit-remaining-{unit}".encode(), str(remaining).encode()),
                (f"x-ratelimit-reset-{unit}".encode(), duration(reset).encode()),
            ]
        return out


def duration(seconds: float) -> str:
    """OpenAI's reset format: ``20ms``, ``1.5s``, ``6m0s``."""
    if seconds < 1:
        return f"{math.ceil(seconds * 1000)}ms"
    if seconds < 60:
        return f"{seconds:.3g}s"
    minutes, rest = divmod(math.ceil(seconds), 60)
    return f"{minutes}m{rest}s"


def scaled(limit: int | None, replicas: int) -> int | None:
    """A replica's share of a limit when it cannot count with the others (at least 1)."""
    return None if limit is None else max(1, limit // replicas)


# Windows held in process at most (one per user, tenant and the agent that admitted a
# request in the last minute): about 1.3 KB each with its first entry (measured), so some
# 26 MB at most however many end users the requests name (``auth.userFromRequest``).
MAX_WINDOWS = 20_000


@dataclass
class _Window:
    entries: deque[tuple[int, str]] = field(default_factory=deque)  # (admitted ms, id)
    tokens: dict[str, int] = field(default_factory=dict)
    total: int = 0


class MemoryWindows:
    """The script's rules in process: this replica's own sliding windows (no I/O).

    Windows are kept in the order of their last admission: those with nothing left in the
    last minute are dropped from the front as time passes, and past :data:`MAX_WINDOWS`
    the coldest goes first (a user's window, never one admitted to since: the tenant's and
    the agent's are admitted to with every request), so a stream of new end users cannot
    grow the process."""

    def __init__(self, max_windows: int = MAX_WINDOWS) -> None:
        self.max_windows = max_windows
        self._windows: OrderedDict[str, _Window] = OrderedDict()

    def __len__(self) -> int:
        return len(self._windows)

    def _expire(self, now: int) -> None:
        """Drop the windows whose last admission has left the window (oldest first)."""
        windows = self._windows
        while windows:
            w = windows[next(iter(windows))]
            if w.entries and w.entries[-1][0] > now - WINDOW_MS:
                return
            windows.popitem(last=False)

    def _trim(self, key: str, now: int) -> _Window:
        w = self._windows.get(key) or _Window()  # kept only once it admits (see run)
        while w.entries and w.entries[0][0] <= now - WINDOW_MS:
            _, rid = w.entries.popleft()
            w.total -= w.tokens.pop(rid, 0)
        return w

    def _keep(self, key: str, w: _Window) -> None:
        """Hold ``w`` (just admitted to) as the newest window, within the bound."""
        self._windows[key] = w
        self._windows.move_to_end(key)
        while len(self._windows) > self.max_windows:
            self._windows.popitem(last=False)

    def run(self, mode: str, scopes: list[Scope], now: int, rid: str, tokens: int) -> Outcome:
        self._expire(now)
        windows = [self._trim(s.key, now) for s in scopes]
        if mode == "settle":
            for w in windows:
                if rid in w.tokens:
                    w.tokens[rid] += tokens
                    w.total += tokens
            return Outcome(True, [], now_ms=now, shared=False)
        refused: Scope | None = None
        unit = ""
        wait: float | None = None
        for s, w in zip(scopes, windows, strict=True):
            if mode != "acquire" or refused is not None:
                break
            count = len(w.entries)
            if s.requests is not None and count + 1 > s.requests:
                refused, unit = s, REQUESTS
                wait = (w.entries[count - s.requests][0] + WINDOW_MS - now) / 1000
            elif s.tokens is not None and w.total + tokens > s.tokens:
                refused, unit, wait = s, TOKENS, None
                if tokens <= s.tokens:
                    freed = 0
                    for at, entry in w.entries:
                        freed += w.tokens.get(entry, 0)
                        if w.total - freed + tokens <= s.tokens:
                            wait = (at + WINDOW_MS - now) / 1000
                            break
        allowed = refused is None
        if mode == "acquire" and allowed:
            for s, w in zip(scopes, windows, strict=True):
                w.entries.append((now, rid))
                w.tokens[rid] = tokens
                w.total += tokens
                self._keep(s.key, w)
        states = [
            ScopeState(s, len(w.entries), w.total, w.entries[0][0] if w.entries else 0)
            for s, w in zip(scopes, windows, strict=True)
        ]
        return Outcome(allowed, states, refused, unit, wait, now, shared=False)


class RateLimiter:
    """The limits of one agent, counted in Redis when there is one, else in process."""

    def __init__(
        self,
        spec: RateLimitsSpec,
        prefix: str,
        redis: SpendRedis | None,
        replicas: int = 1,
    ) -> None:
        self.spec = spec
        self.prefix = prefix
        self.redis = redis
        self.replicas = max(1, replicas)
        self.local = MemoryWindows()
        self.script = redis.script(SCRIPT) if redis is not None else None
        self.active = any(
            r is not None and (r.requests_per_minute or r.tokens_per_minute)
            for r in (spec.per_user, spec.per_tenant, spec.global_)
        )

    def scopes(self, who: Identity) -> list[Scope]:
        out = []
        for name, rule, part in (
            ("user", self.spec.per_user, f"u:{who.key}"),
            ("tenant", self.spec.per_tenant, f"t:{who.tenant_key}"),
            ("global", self.spec.global_, "g"),
        ):
            if rule is not None and (rule.requests_per_minute or rule.tokens_per_minute):
                out.append(_scope(name, f"{self.prefix}:rl:{part}", rule))
        return out

    def _start(
        self, mode: str, who: Identity, rid: str, tokens: int
    ) -> tuple[list[Scope], int, asyncio.Future[Any] | None]:
        """The scopes, the time, and the script queued on Redis now (None: no Redis, or it
        is down; then the windows in process count)."""
        scopes = self.scopes(who)
        now = int(time.time() * 1000)
        if not scopes or self.redis is None or self.script is None:
            return scopes, now, None
        keys = [k for s in scopes for k in (s.key, s.key + ":tok")]
        args: list[Any] = [mode, now, WINDOW_MS, rid, tokens]
        for s in scopes:
            args += [s.requests or 0, s.tokens or 0]
        return scopes, now, self.redis.queue(f"rate limit {mode}", self.script, keys, args)

    async def _finish(
        self,
        mode: str,
        rid: str,
        tokens: int,
        scopes: list[Scope],
        now: int,
        pending: asyncio.Future[Any] | None,
    ) -> Outcome:
        if not scopes:
            return Outcome(True, [], now_ms=now)
        if self.redis is not None and pending is not None:
            try:
                raw = await self.redis.reply(f"rate limit {mode}", pending)
            except RedisDown:
                pass
            else:
                if mode == "settle":
                    return Outcome(True, [], now_ms=now)
                return _outcome(scopes, [int(float(v)) for v in raw], now)
        local = [
            Scope(s.name, s.key, scaled(s.requests, self.replicas), scaled(s.tokens, self.replicas))
            for s in scopes
        ]
        return self.local.run(mode, local, now, rid, tokens)

    async def _run(self, mode: str, who: Identity, rid: str, tokens: int) -> Outcome:
        return await self._finish(mode, rid, tokens, *self._start(mode, who, rid, tokens))

    async def acquire(self, who: Identity, rid: str, tokens: int) -> Outcome:
        """Admit one request charged ``tokens`` (estimated) in every scope, or refuse it."""
        return await self._run("acquire", who, rid, tokens)

    def settle(self, who: Identity, rid: str, change: int) -> Awaitable[Any]:
        """Correct an admitted request's token charge by ``change`` (real minus estimate):
        queued on Redis at once (before the caller waits: a settlement started with
        others goes in the same round trip), the returned awaitable ends when it is done."""
        if not (change and self.active):
            return _nothing()
        return self._finish("settle", rid, change, *self._start("settle", who, rid, change))

    async def peek(self, who: Identity) -> Outcome:
        return await self._run("peek", who, "", 0)


async def _nothing() -> None:
    return None


def _scope(name: str, key: str, rule: RateLimit) -> Scope:
    return Scope(name, key, rule.requests_per_minute, rule.tokens_per_minute)


def _outcome(scopes: list[Scope], raw: list[int], now: int) -> Outcome:
    allowed, index, unit, wait = raw[:4]
    states = [
        ScopeState(s, raw[4 + 3 * i], raw[5 + 3 * i], raw[6 + 3 * i]) for i, s in enumerate(scopes)
    ]
    refused = scopes[index - 1] if not allowed and index else None
    return Outcome(
        bool(allowed),
        states,
        refused,
        {1: REQUESTS, 2: TOKENS}.get(unit, ""),
        None if wait < 0 else wait / 1000,
        now,
    )
