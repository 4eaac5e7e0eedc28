"""The agent policy: one pydantic definition for the manifest, the CRD and the pod's config.

The operator embeds :class:`AgentPolicy` as the ``spec`` of an ``AgentDeployment`` and
renders it into the runtime config a pod loads, so the manifest, the CRD schema and the
runtime all validate against the same model. Field names on the wire are camelCase as in
Kubernetes; Python attributes are snake_case.

Modules: :mod:`.base` (names, patterns, the model base), one per area of the policy
(:mod:`.agent`, :mod:`.providers`, :mod:`.cache`, :mod:`.reliability`, :mod:`.limits`),
:mod:`.policy` (the whole), :mod:`.pods` (how the pods run), :mod:`.rules` (cross-field
rules, each declared once for the CRD's CEL and the Python check) and :mod:`.loading`
(parsing, errors, the rendered runtime config). Import from the package.
"""

from __future__ import annotations

from .agent import AgentSpec, ContextSource
from .autopilot import (
    AlertsSpec,
    AutopilotSpec,
    AutopilotThresholds,
    CostSpikeSpec,
)
from .base import (
    API_GROUP,
    API_VERSION,
    CONTEXT_URL_PATTERN,
    ENV_NAME_PATTERN,
    KIND,
    MODEL_REF_PATTERN,
    NAME_PATTERN,
    PLACEHOLDERS,
    RUNTIME_CONFIG_KIND,
    TIME_ZONE_PATTERN,
    URL_PATTERN,
    Model,
    ModelRef,
    Name,
    SecretKeyRef,
    cel,
    map_list,
)
from .cache import (
    CacheSpec,
    ExactCacheSpec,
    LocalCacheSpec,
    RedisSpec,
    SemanticCacheSpec,
)
from .limits import BudgetSpec, RateLimit, RateLimitsSpec, ScalingSpec, SLOSpec, valid_time_zone
from .loading import (
    NOT_FOR_PODS,
    ConfigError,
    FieldIssue,
    LoadedConfig,
    format_path,
    load_config,
    parse_document,
    parse_policy,
    render_runtime_config,
)
from .pods import (
    DEFAULT_IMAGE,
    AgentDeploymentSpec,
    MonitoringSpec,
    Quantity,
    ResourceAmounts,
    Resources,
    RuntimeSpec,
)
from .policy import AgentPolicy, AuthSpec
from .providers import (
    EmbeddingsSpec,
    ModelsSpec,
    ProviderSpec,
    ProviderType,
    RoutingSpec,
    TierSpec,
)
from .reliability import CircuitBreakerSpec, ReliabilitySpec, RetrySpec
from .rules import Rule

__all__ = [
    "API_GROUP",
    "API_VERSION",
    "CONTEXT_URL_PATTERN",
    "DEFAULT_IMAGE",
    "ENV_NAME_PATTERN",
    "KIND",
    "MODEL_REF_PATTERN",
    "NAME_PATTERN",
    "NOT_FOR_PODS",
    "PLACEHOLDERS",
    "RUNTIME_CONFIG_KIND",
    "TIME_ZONE_PATTERN",
    "URL_PATTERN",
    "AgentDeploymentSpec",
    "AgentPolicy",
    "AgentSpec",
    "AlertsSpec",
    "AuthSpec",
    "AutopilotSpec",
    "AutopilotThresholds",
    "BudgetSpec",
    "CacheSpec",
    "CircuitBreakerSpec",
    "ConfigError",
    "ContextSource",
    "CostSpikeSpec",
    "EmbeddingsSpec",
    "ExactCacheSpec",
    "FieldIssue",
    "LoadedConfig",
    "LocalCacheSpec",
    "Model",
    "ModelRef",
    "ModelsSpec",
    "MonitoringSpec",
    "Name",
    "ProviderSpec",
    "ProviderType",
    "Quantity",
    "RateLimit",
    "RateLimitsSpec",
    "RedisSpec",
    "ReliabilitySpec",
    "ResourceAmounts",
    "Resources",
    "RetrySpec",
    "RoutingSpec",
    "Rule",
    "RuntimeSpec",
    "SLOSpec",
    "ScalingSpec",
    "SecretKeyRef",
    "SemanticCacheSpec",
    "TierSpec",
    "cel",
    "format_path",
    "load_config",
    "map_list",
    "parse_document",
    "parse_policy",
    "render_runtime_config",
    "valid_time_zone",
]
