"""The operator's settings: every SWIFTCLAW_* variable read in one place, bad ones named."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from swiftclaw_operator.resources import Settings
from swiftclaw_operator.settings import ENV, OperatorConfig


def test_defaults_and_values_from_the_environment() -> None:
    default = OperatorConfig.from_env({})
    assert (default.standalone, default.namespaces, default.drift_seconds) == (False, (), 300)
    assert default.service_account_dir == Path("/var/run/secrets/kubernetes.io/serviceaccount")
    config = OperatorConfig.from_env(
        {
            "SWIFTCLAW_STANDALONE": "1",
            "SWIFTCLAW_NAMESPACES": "team-a, team-b,",
            "SWIFTCLAW_DRIFT_SECONDS": "2",
            "SWIFTCLAW_RETRY_BASE_SECONDS": "0.5",
            "SWIFTCLAW_REDIS_IMAGE": "registry.local/redis:7",
            "SWIFTCLAW_METRICS_PORT": "",  # empty is unset
            "SWIFTCLAW_CUSTOM_METRICS": "true",
            "HOME": "/root",  # not ours
        }
    )
    assert config.standalone and config.namespaces == ("team-a", "team-b")
    assert (config.drift_seconds, config.retry_base_seconds, config.metrics_port) == (2, 0.5, 0)
    assert config.builder_settings(monitoring_available=True) == Settings(
        redis_image="registry.local/redis:7",
        runbook_base_url=Settings.runbook_base_url,
        monitoring_available=True,
        custom_metrics=True,
    )
    assert not default.builder_settings(monitoring_available=False).custom_metrics


def test_every_variable_is_a_field() -> None:
    assert set(ENV) == set(OperatorConfig.model_fields)
    assert all(var.startswith("SWIFTCLAW_") for var in ENV.values())


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("SWIFTCLAW_WORKERS", "0"),
        ("SWIFTCLAW_DRIFT_SECONDS", "soon"),
        ("SWIFTCLAW_LOG_FORMAT", "xml"),
        ("SWIFTCLAW_METRICS_PORT", "70000"),
    ],
)
def test_bad_value_names_the_variable(var: str, value: str) -> None:
    with pytest.raises(ValueError, match=f"invalid operator setting: {var}"):
        OperatorConfig.from_env({var: value})


def test_the_chart_sets_only_settings_the_operator_reads() -> None:
    template = (
        Path(__file__).resolve().parent.parent / "charts/swiftclaw/templates/deployment.yaml"
    ).read_text()
    named = set(re.findall(r"\bSWIFTCLAW_[A-Z_]+", template))
    assert named and named <= set(ENV.values()), named - set(ENV.values())
