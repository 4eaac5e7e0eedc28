"""The generated reference pages (the AgentDeployment API from the models, the metrics from
their definitions) are current, and every field of the API says what it is for."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel

from swiftclaw_devtools import api_reference, metrics_reference
from swiftclaw_operator.api import AgentDeploymentSpec, AgentDeploymentStatus
from swiftclaw_runtime.config import Model

REPO = Path(__file__).resolve().parent.parent


def test_the_api_reference_is_what_the_models_generate() -> None:
    page = REPO / api_reference.PAGE
    assert page.read_text() == api_reference.render(), (
        f"{api_reference.PAGE} is stale: run `make docs-ref` (or `make crds`) and commit it"
    )


def test_the_metrics_reference_is_what_the_definitions_generate() -> None:
    page = REPO / metrics_reference.PAGE
    assert page.read_text() == metrics_reference.render(), (
        f"{metrics_reference.PAGE} is stale: run `make docs-ref` and commit it"
    )


def test_every_field_of_the_api_has_a_description() -> None:
    missing = api_reference.undescribed()
    assert not missing, (
        "fields without a description (write a docstring under the field, saying what acts "
        f"on it, then `make crds`): {missing}"
    )


def model_paths(model: type[BaseModel], prefix: str) -> set[str]:
    """Every field path of ``model`` in wire names, as the reference names them."""
    out: set[str] = set()
    for name, info in model.model_fields.items():
        path = f"{prefix}.{info.alias or name}"
        out.add(path)
        for inner in _models_in(info.annotation):
            is_list = "list[" in str(info.annotation)
            out |= model_paths(inner, path + ("[]" if is_list else ""))
    return out


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, Model):
        return [annotation]
    return [m for arg in getattr(annotation, "__args__", ()) for m in _models_in(arg)]


def test_the_reference_lists_every_field_of_the_models_and_nothing_else() -> None:
    # The page walks the CRD; this walks the models: a field the CRD generator dropped
    # (or one the walk missed) would show here.
    expected = model_paths(AgentDeploymentSpec, "spec") | model_paths(
        AgentDeploymentStatus, "status"
    )
    listed = {e.path for e in api_reference.entries()} - {"spec", "status"}
    listed = {p for p in listed if ".<key>" not in p}
    assert listed == expected


def test_every_metric_of_the_runtime_and_the_operator_is_in_the_page() -> None:
    from prometheus_client.metrics import MetricWrapperBase

    from swiftclaw_operator import metrics as operator_metrics
    from swiftclaw_runtime.metrics import Metrics

    page = (REPO / metrics_reference.PAGE).read_text()
    runtime = Metrics()
    defined = [
        m
        for m in [*vars(runtime).values(), *vars(operator_metrics).values()]
        if isinstance(m, MetricWrapperBase)
    ]
    assert len(defined) > 40
    for metric in defined:
        exposed = metric._name + ("_total" if metric._type == "counter" else "")
        assert f"`{exposed}`" in page, exposed
        assert metric._documentation.replace("|", "\\|") in page
