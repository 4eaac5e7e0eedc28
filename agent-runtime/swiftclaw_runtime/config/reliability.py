"""Deadlines, retries and circuit breakers."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from .base import Model
from .rules import at_most


class RetrySpec(Model):
    rules = (at_most("initialBackoffMs", "maxBackoffMs"),)

    max_attempts: Annotated[int, Field(ge=1, le=10)] = 3
    initial_backoff_ms: Annotated[int, Field(ge=0, le=60_000)] = 250
    max_backoff_ms: Annotated[int, Field(ge=0, le=300_000)] = 8_000
    # A provider's Retry-After is honoured up to this many seconds; a longer one (a
    # misconfigured or hostile upstream asking for an hour) is cut to it.
    max_retry_after_seconds: Annotated[int, Field(ge=0, le=3600)] = 60
    # Retries per tier are at most this share of its requests over the last 10 s (with a
    # floor of 10 retries), so that an outage does not multiply the load on a provider.
    budget_percent: Annotated[int, Field(ge=0, le=100)] = 20


class CircuitBreakerSpec(Model):
    """Opens when, within ``windowSeconds``, at least ``failureThreshold`` calls failed and
    they are at least ``failureRatePercent`` % of the calls: a rate, so a busy provider
    with a few errors stays in use, with a minimum, so a quiet one is not judged on one."""

    failure_threshold: Annotated[int, Field(ge=1, le=10_000)] = 5
    failure_rate_percent: Annotated[int, Field(ge=1, le=100)] = 50
    window_seconds: Annotated[int, Field(ge=1, le=3600)] = 30
    open_seconds: Annotated[int, Field(ge=1, le=3600)] = 60
    half_open_probes: Annotated[int, Field(ge=1, le=100)] = 1


class ReliabilitySpec(Model):
    """The deadline of a request, and how much of it one attempt may take.

    Without ``attemptTimeoutSeconds``, each model of a tier's chain gets an equal share
    of what is left of the deadline when its turn comes (the last one gets all of it), so
    a hung primary cannot starve a healthy fallback. The wait for a connection slot
    counts against the attempt.
    """

    rules = (at_most("attemptTimeoutSeconds", "timeoutSeconds"),)

    timeout_seconds: Annotated[float, Field(gt=0, le=600)] = 30.0
    attempt_timeout_seconds: Annotated[float, Field(gt=0, le=600)] | None = None
    retry: RetrySpec = RetrySpec()
    circuit_breaker: CircuitBreakerSpec = CircuitBreakerSpec()
