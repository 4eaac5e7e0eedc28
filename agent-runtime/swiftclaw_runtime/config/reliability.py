"""Deadlines, retries and circuit breakers."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from .base import Model
from .rules import at_most


class RetrySpec(Model):
    rules = (at_most("initialBackoffMs", "maxBackoffMs"),)

    max_attempts: Annotated[int, Field(ge=1, le=10)] = 3
    """Attempts per model of a tier's chain (the first included); the runtime retries only connect
    errors, timeouts, 408, 409, 429 and 5xx."""
    initial_backoff_ms: Annotated[int, Field(ge=0, le=60_000)] = 250
    """The runtime's first backoff: full jitter, uniform(0, min(maxBackoffMs, initialBackoffMs *
    2^(n-1)))."""
    max_backoff_ms: Annotated[int, Field(ge=0, le=300_000)] = 8_000
    """The cap of the runtime's backoff between attempts."""
    # A provider's Retry-After is honoured up to this many seconds; a longer one (a
    # misconfigured or hostile upstream asking for an hour) is cut to it.
    max_retry_after_seconds: Annotated[int, Field(ge=0, le=3600)] = 60
    """The runtime honours a provider's Retry-After up to this many seconds (the provider is held
    back that long); a longer one is cut to it."""
    # Retries per tier are at most this share of its requests over the last 10 s (with a
    # floor of 10 retries), so that an outage does not multiply the load on a provider.
    budget_percent: Annotated[int, Field(ge=0, le=100)] = 20
    """The runtime's retries of a tier are at most this share of its requests over the last 10 s
    (at least 10), so an outage does not multiply the load on a provider."""


class CircuitBreakerSpec(Model):
    """Opens when, within ``windowSeconds``, at least ``failureThreshold`` calls failed and
    they are at least ``failureRatePercent`` % of the calls: a rate, so a busy provider
    with a few errors stays in use, with a minimum, so a quiet one is not judged on one."""

    failure_threshold: Annotated[int, Field(ge=1, le=10_000)] = 5
    """The fewest failed calls within windowSeconds that open the runtime's breaker of a provider
    and model."""
    failure_rate_percent: Annotated[int, Field(ge=1, le=100)] = 50
    """The share of failed calls within windowSeconds that, with failureThreshold, opens the
    breaker."""
    window_seconds: Annotated[int, Field(ge=1, le=3600)] = 30
    """The window over which the breaker counts calls and failures."""
    open_seconds: Annotated[int, Field(ge=1, le=3600)] = 60
    """How long an open breaker keeps the runtime off the model before probing it."""
    half_open_probes: Annotated[int, Field(ge=1, le=100)] = 1
    """How many calls probe a model whose breaker is half-open."""


class ReliabilitySpec(Model):
    """The deadline of a request, and how much of it one attempt may take.

    Without ``attemptTimeoutSeconds``, each model of a tier's chain gets an equal share
    of what is left of the deadline when its turn comes (the last one gets all of it), so
    a hung primary cannot starve a healthy fallback. The wait for a connection slot
    counts against the attempt.
    """

    rules = (at_most("attemptTimeoutSeconds", "timeoutSeconds"),)

    timeout_seconds: Annotated[float, Field(gt=0, le=600)] = 30.0
    """Every request's deadline in the runtime: retries never go past it (504 upstream_timeout); a
    stream's chunks must each arrive within it of the last."""
    attempt_timeout_seconds: Annotated[float, Field(gt=0, le=600)] | None = None
    """Caps the share of the deadline one attempt may take; unset, each model of the chain gets an
    equal share of what is left."""
    retry: RetrySpec = RetrySpec()
    """Retries with full-jitter backoff (the runtime)."""
    circuit_breaker: CircuitBreakerSpec = CircuitBreakerSpec()
    """A breaker per provider and model (the runtime)."""
