"""Which tier serves a request, from the ``model`` the client sent.

A client may name a tier (``simple``) or a tier's model (``openai/gpt-4o-mini``): that
choice always wins. ``auto`` or the agent's own name leave it to the runtime: with
``routing.strategy: complexity`` (the default) the classifier sorts the request into
simple, medium or complex, and the classes map onto the tiers, which the manifest lists
cheapest first:

- simple -> the first (cheapest) tier,
- medium -> the routing default (``routing.default``, else the middle tier),
- complex -> the last (best) tier.

With two tiers and no default, medium goes to the cheaper one (the middle of two is the
first): name the other in ``routing.default`` to send medium requests up instead. With one
tier there is nothing to choose. ``strategy: fixed`` sends every ``auto`` request to the
default tier.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..config import AgentPolicy, TierSpec
from ..errors import not_found
from ..schemas import ChatRequest, message_text
from .classifier import Classifier, default_classifier
from .features import RequestShape

AUTO = "auto"


@dataclass(frozen=True)
class Route:
    """The tier chosen, the kind of decision (a class, ``explicit`` or ``default``) and why."""

    tier: TierSpec
    kind: str
    reason: str
    # why the tier was changed for a cheaper one: "" (it was not), "budget" (this agent's
    # budget, per pod) or "fleet-budget" (the fleet document's budget state)
    downgraded: str = ""

    @property
    def header(self) -> str:
        """``x-swiftclaw-route``: e.g. ``complex; reason=proof`` or ``explicit; reason=model``
        (with ``; downgraded=budget`` or ``; downgraded=fleet-budget`` when downgraded)."""
        value = f"{self.kind}; reason={self.reason}"
        return value + f"; downgraded={self.downgraded}" if self.downgraded else value

    def downgrade(self, tier: TierSpec, why: str = "budget") -> Route:
        return replace(self, tier=tier, downgraded=why)


def model_ids(policy: AgentPolicy, agent_name: str) -> list[str]:
    """What ``GET /v1/models`` lists: auto, the agent's name, each tier, then the
    embeddings model."""
    ids = [AUTO, agent_name, *(t.name for t in policy.models.tiers)]
    if policy.models.embeddings is not None:
        ids.append(policy.models.embeddings.model)
    return ids


def resolve_embeddings_model(policy: AgentPolicy, agent_name: str, requested: str) -> None:
    """An embeddings request names the agent (``auto``, its name) or its embeddings model,
    by reference (``openai/text-embedding-3-small``) or by the model's own name."""
    spec = policy.models.embeddings
    assert spec is not None
    if requested in (AUTO, agent_name) or any(
        requested in (ref, ref.partition("/")[2]) for ref in spec.refs
    ):
        return
    raise not_found(
        f"The embeddings model '{requested}' does not exist for this agent. Use "
        f"'{spec.model}' or 'auto'.",
        code="model_not_found",
        param="model",
    )


def request_shape(request: ChatRequest) -> RequestShape:
    """What the classifier reads: the last user message, turns, tools, total size."""
    last = ""
    turns = 0
    total = 0
    for m in request.messages:
        text = message_text(m)
        total += len(text)
        if m.role == "user":
            turns += 1
            last = text
    return RequestShape(last, max(1, turns), len(request.tools or ()), total)


class Router:
    """Routes requests for one agent; built once, used for every request."""

    def __init__(
        self, policy: AgentPolicy, agent_name: str, classifier: Classifier | None = None
    ) -> None:
        self.policy = policy
        self.agent_name = agent_name
        tiers = policy.models.tiers
        self.by_class = {"simple": tiers[0], "medium": policy.default_tier, "complex": tiers[-1]}
        classify = policy.models.routing.strategy == "complexity" and len(tiers) > 1
        self.classifier = (classifier or default_classifier()) if classify else None

    def route(self, request: ChatRequest) -> Route:
        requested = request.model
        if requested not in (AUTO, self.agent_name):
            return Route(self._named(requested), "explicit", "model")
        if self.classifier is None:
            reason = "fixed" if len(self.policy.models.tiers) > 1 else "single_tier"
            return Route(self.policy.default_tier, "default", reason)
        shape = request_shape(request)
        if not shape.text.strip():
            return Route(self.policy.default_tier, "default", "no_text")
        result = self.classifier.classify(shape)
        return Route(self.by_class[result.label], result.label, result.reason)

    def _named(self, requested: str) -> TierSpec:
        for tier in self.policy.models.tiers:
            if requested in (tier.name, tier.model):
                return tier
        known = ", ".join(repr(m) for m in model_ids(self.policy, self.agent_name))
        raise not_found(
            f"The model '{requested}' does not exist for this agent. Use one of: {known}.",
            code="model_not_found",
            param="model",
        )
