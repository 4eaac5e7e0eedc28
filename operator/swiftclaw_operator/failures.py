"""What a failed reconcile means and when to try again (pure functions).

A permanent failure (the API server refused the request: a name clash, an immutable
field, a forbidden verb, an invalid object; or a spec the operator cannot build) will
fail the same way until something changes, so it is shown (``Degraded`` with the reason,
one Event) and retried rarely. A transient one (5xx, 429, a timeout, the API server out
of reach) is retried sooner. Both back off exponentially up to a cap; a spec change is
tried at once.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ValidationError

from .kube import KubeError

# After this many transient failures in a row the agent shows Degraded too.
TRANSIENT_DEGRADED_AFTER = 3


class NameClash(Exception):
    """A child's name is taken by an object this AgentDeployment does not own."""


class UnsupportedSpec(Exception):
    """A valid spec asks for something this operator's cluster cannot do."""


@dataclass(frozen=True)
class Failure:
    permanent: bool
    reason: str  # a condition reason: CamelCase, no spaces
    message: str


def _immutable(message: str) -> bool:
    text = message.lower()
    return "field is immutable" in text or "updates to statefulset spec for fields" in text


def classify(err: BaseException) -> Failure:
    """Permanent or transient, with a reason a platform engineer can act on."""
    if isinstance(err, NameClash):
        return Failure(True, "NameClash", str(err))
    if isinstance(err, UnsupportedSpec):
        return Failure(True, "InvalidSpec", str(err))
    if isinstance(err, ValidationError):
        return Failure(True, "InvalidSpec", f"the spec cannot be built: {err}")
    if isinstance(err, KubeError):
        status = err.status
        if status == 0:
            return Failure(False, "ApiUnreachable", err.message)
        if status == 429 or status >= 500 or status == 408:
            return Failure(False, "ApiUnavailable", str(err))
        if status == 422 and _immutable(err.message):
            return Failure(True, "ImmutableField", err.message)
        reason = {
            401: "Unauthorized",
            403: "Forbidden",
            404: "NotFound",
            409: "AlreadyExists" if err.reason == "AlreadyExists" else "Conflict",
            422: "Invalid",
        }.get(status, "Rejected")
        return Failure(True, reason, err.message or str(err))
    if isinstance(err, TimeoutError | ConnectionError):
        return Failure(False, "ApiUnreachable", repr(err))
    return Failure(True, "InternalError", f"{type(err).__name__}: {err}")


def retry_delay(attempt: int, base: float, cap: float) -> float:
    """Seconds to wait after the ``attempt``-th failure in a row: base, 2 base, 4 base... cap."""
    return float(min(cap, base * 2 ** max(0, attempt - 1)))


def shows_degraded(failure: Failure, attempts: int) -> bool:
    """Permanent failures show at once; transient ones once they persist."""
    return failure.permanent or attempts >= TRANSIENT_DEGRADED_AFTER
