"""Tells someone: one Slack-compatible message per episode start and end, with its runbook.

The URL is a secret (an incoming webhook's URL is its credential): read from the Secret
``alerts.webhook.urlSecretRef`` when sending, never logged, never in the status or an
Event. A send is bounded by a timeout; a failure is counted and logged without the URL.
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp

from .episodes import Change

log = logging.getLogger("swiftclaw.operator.autopilot")

TIMEOUT_SECONDS = 5.0

# episode kind -> (runbook page, what it is)
RUNBOOKS: dict[str, tuple[str, str]] = {
    "LatencyAboveSLO": ("latency-above-slo", "p95 latency above the SLO"),
    "ErrorRateHigh": ("error-rate-high", "error rate above the SLO"),
    "FleetFailover": ("fleet-failover", "a model taken out of its tiers on every pod"),
    "ProviderBound": ("provider-bound", "latency up because a provider is slow; not scaled"),
    "BudgetAlert": ("budget-alert", "budget alert threshold passed"),
    "BudgetProjected": ("budget-projected", "spend projected over the budget"),
    "BudgetDowngrade": ("budget-projected", "downgraded to cheaper tiers fleet-wide"),
    "BudgetExceeded": ("budget-projected", "budget exceeded: onExceeded in force"),
    "CostSpike": ("cost-spike", "cost spike"),
    "MetricsStale": ("metrics-stale", "the autopilot cannot read the pods"),
}


def message(agent: str, namespace: str, change: Change, runbook_base: str) -> dict[str, Any]:
    """A Slack-compatible payload (``text``; Mattermost, Teams' Slack mode, Discord's
    ``/slack`` endpoint read it too)."""
    kind, subject = change.key
    page, title = RUNBOOKS.get(kind, ("README", kind))
    state = "started" if change.started else "ended"
    icon = ":rotating_light:" if change.started else ":white_check_mark:"
    about = f" ({subject})" if subject else ""
    url = f"{runbook_base.rstrip('/')}/{page}.md"
    return {
        "text": (
            f"{icon} {namespace}/{agent}: {title}{about} {state}. {change.message}\n"
            f"Runbook: <{url}|{page}>"
        ),
        "swiftclaw": {
            "agent": agent,
            "namespace": namespace,
            "episode": kind,
            "subject": subject,
            "state": state,
            "runbook": url,
        },
    }


async def send(session: aiohttp.ClientSession, url: str, payload: dict[str, Any]) -> bool:
    """POST one message; False (logged, without the URL) when it was not accepted."""
    try:
        async with session.post(
            url, json=payload, timeout=aiohttp.ClientTimeout(total=TIMEOUT_SECONDS)
        ) as resp:
            if 200 <= resp.status < 300:
                return True
            log.warning("webhook refused an alert: HTTP %d", resp.status)
    except (TimeoutError, aiohttp.ClientError) as err:
        log.warning("webhook not reached: %s", type(err).__name__)
    return False
