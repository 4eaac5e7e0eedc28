"""The committed CRD is what the models generate, and the manifests under
tests/invalid-manifests/ are refused by the Python validator as by the API server."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from swiftclaw_operator.api import AgentDeploymentSpec
from swiftclaw_operator.crd import build_crd, render
from swiftclaw_runtime.config import ConfigError, parse_document

REPO = Path(__file__).resolve().parent.parent
CRD_FILE = REPO / "crds" / "agentdeployments.swiftclaw.dev.yaml"
INVALID = sorted((REPO / "tests" / "invalid-manifests").glob("*.yaml"))


def expectations(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if line.startswith("# ") and ": " in line:
            key, _, value = line[2:].partition(": ")
            out[key] = value
    return out


def test_committed_crd_matches_the_models() -> None:
    assert yaml.safe_load(CRD_FILE.read_text()) == build_crd(), (
        "crds/ is stale: run `make crds` and commit the result"
    )
    assert CRD_FILE.read_text() == render()
    chart_copy = REPO / "charts" / "swiftclaw" / "crds" / CRD_FILE.name
    assert chart_copy.read_text() == CRD_FILE.read_text(), "run `make crds`"


def test_crd_has_status_printer_columns_short_names_and_no_refs() -> None:
    crd = build_crd()
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"]] == [
        "Ready",
        "Replicas",
        "P95",
        "Cost today",
        "Reason",
        "Age",
    ]
    assert "agd" in crd["spec"]["names"]["shortNames"]
    text = yaml.safe_dump(crd)
    assert "$ref" not in text and "anyOf" not in text and "title:" not in text
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    tiers = spec["properties"]["models"]["properties"]["tiers"]
    assert tiers["x-kubernetes-list-type"] == "map"
    assert tiers["items"]["properties"]["fallbacks"]["x-kubernetes-list-type"] == "set"
    retry = spec["properties"]["reliability"]["properties"]["retry"]
    max_attempts = retry["properties"]["maxAttempts"]
    assert max_attempts.pop("description")  # every field has one (test_docs_reference.py)
    assert max_attempts == {
        "default": 3,
        "maximum": 10,
        "minimum": 1,
        "type": "integer",
    }
    assert retry["default"] == {
        "maxAttempts": 3,
        "initialBackoffMs": 250,
        "maxBackoffMs": 8000,
        "maxRetryAfterSeconds": 60,
        "budgetPercent": 20,
    }
    resources = spec["properties"]["runtime"]["properties"]["resources"]
    assert resources["default"] == {
        "requests": {"cpu": "250m", "memory": "256Mi"},
        "limits": {"memory": "512Mi"},
    }
    timeout = spec["properties"]["reliability"]["properties"]["timeoutSeconds"]
    assert timeout["exclusiveMinimum"] is True and timeout["minimum"] == 0


def test_there_are_at_least_25_invalid_manifests() -> None:
    assert len(INVALID) >= 25
    rules = [expectations(p)["rule"] for p in INVALID]
    assert len(set(rules)) == len(rules)


# Rules of the API object itself (the name's length) are the API server's alone: e2e.
PYTHON_CHECKED = [p for p in INVALID if expectations(p)["checked-by"] in ("both", "python")]


@pytest.mark.parametrize("path", PYTHON_CHECKED, ids=[p.stem for p in PYTHON_CHECKED])
def test_python_validator_refuses_and_names_the_field(path: Path) -> None:
    exp = expectations(path)
    with pytest.raises(ConfigError) as info:
        parse_document(yaml.safe_load(path.read_text()), model=AgentDeploymentSpec)
    paths = [i.path for i in info.value.issues]
    assert any(p.startswith(exp["expect-field"]) for p in paths), (exp, paths)
