"""Who a request is for: the tenant and user behind its API key, or the end user the
request names when the agent trusts it (``auth.userFromRequest``).

The identity keys every limit, budget and usage counter. Users are never metric labels
(unbounded); tenants are, through :class:`TenantLabels`, which caps how many values the
``tenant`` label can take.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import quote

from ..auth import Principal

OTHER = "other"


@lru_cache(maxsize=16_384)
def escaped(part: str) -> str:
    """A tenant or user name made safe for a key (escaping costs about 2 µs; identities
    repeat, so it is done once per name)."""
    return quote(part, safe="")


@dataclass(frozen=True)
class Identity:
    tenant: str
    user: str

    @property
    def key(self) -> str:
        """``tenant/user`` with each part escaped, so that no pair collides with another."""
        return f"{escaped(self.tenant)}/{escaped(self.user)}"

    @property
    def tenant_key(self) -> str:
        return escaped(self.tenant)


def identify(principal: Principal, request_user: str | None, user_from_request: bool) -> Identity:
    """The key's tenant and user; with ``user_from_request`` a non-empty ``user`` field of
    the request names the end user instead (within the key's tenant: a key can never
    speak for another tenant's users)."""
    if user_from_request and request_user and request_user.strip():
        return Identity(principal.tenant, request_user.strip())
    return Identity(principal.tenant, principal.user)


class TenantLabels:
    """The ``tenant`` label value for a tenant: itself for the first ``limit`` tenants this
    process sees, ``other`` after that, so that a multi-tenant agent cannot blow up the
    metrics' cardinality."""

    def __init__(self, limit: int = 50) -> None:
        self.limit = limit
        self._seen: set[str] = set()

    def __call__(self, tenant: str) -> str:
        if tenant in self._seen:
            return tenant
        if len(self._seen) < self.limit:
            self._seen.add(tenant)
            return tenant
        return OTHER
