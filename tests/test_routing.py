"""Complexity routing: the labelled set, the held-out figures the acceptance asks for, the
class-to-tier mapping, and explicit choices winning."""

from __future__ import annotations

import collections
import time
from typing import Any

import pytest

from swiftclaw_runtime.config import AgentPolicy
from swiftclaw_runtime.errors import ApiError
from swiftclaw_runtime.routing import Router
from swiftclaw_runtime.routing.classifier import default_classifier
from swiftclaw_runtime.routing.data import CLASSES, load_queries
from swiftclaw_runtime.routing.evaluate import evaluate
from swiftclaw_runtime.routing.features import NAMES, RequestShape, extract
from swiftclaw_runtime.schemas import parse_chat_request


def test_the_labelled_set_is_large_varied_and_held_out() -> None:
    queries = load_queries()
    assert len(queries) >= 300
    assert len({q.text for q in queries}) == len(queries)
    assert {q.label for q in queries} == set(CLASSES)
    domains = collections.Counter(q.domain for q in queries)
    assert set(domains) >= {"support", "coding", "operations", "general", "math", "writing"}
    assert min(domains.values()) >= 30
    test = [q for q in queries if q.split == "test"]
    assert len(test) >= len(queries) / 3
    for label in CLASSES:  # each class is held out in proportion
        n = sum(q.label == label for q in queries)
        assert sum(q.label == label for q in test) >= n / 3


def test_held_out_accuracy_and_quality_errors_meet_the_bar() -> None:
    result = evaluate(load_queries("test"))
    assert result.accuracy >= 0.85, result.table()
    assert result.complex_to_simple <= 0.05, result.table()


def test_classifier_is_fast_on_long_inputs() -> None:
    clf = default_classifier()
    long = "Please review this code. " + "def f(x):\n    return x * 2\n" * 2000
    shapes = [q.shape for q in load_queries()] + [RequestShape(long, 3, 2, len(long))]
    started = time.perf_counter()
    for _ in range(3):
        for s in shapes:
            clf.classify(s)
    per_call = (time.perf_counter() - started) / (3 * len(shapes))
    assert per_call < 0.001  # the bench measures p99; this guards the order of magnitude
    assert len(extract(shapes[-1])) == len(NAMES)


def policy(tiers: int, **routing: Any) -> AgentPolicy:
    names = ["small", "mid", "big", "huge"][:tiers]
    return AgentPolicy.model_validate(
        {
            "providers": [{"name": "p", "type": "openai", "baseURL": "http://x/v1"}],
            "models": {
                "tiers": [{"name": n, "model": f"p/{n}"} for n in names],
                "routing": routing,
            },
        }
    )


def req(content: str, model: str = "auto", **extra: Any) -> Any:
    return parse_chat_request(
        {"model": model, "messages": [{"role": "user", "content": content}], **extra}
    )


SIMPLE = "What's the capital of Peru?"
COMPLEX = (
    "Design a multi-region failover plan for our Postgres database, then analyse the "
    "trade-offs step by step and justify each choice."
)


def test_classes_map_onto_the_tiers_cheapest_first() -> None:
    r = Router(policy(3), "agent")
    assert (r.route(req(SIMPLE)).tier.name, r.route(req(SIMPLE)).kind) == ("small", "simple")
    hard = r.route(req(COMPLEX))
    assert (hard.tier.name, hard.kind) == ("big", "complex")
    assert hard.header.startswith("complex; reason=")
    medium = r.route(req("Explain the difference between a mutex and a semaphore with an example."))
    assert (medium.tier.name, medium.kind) == ("mid", "medium")
    # the agent's own name means auto too
    assert r.route(req(COMPLEX, model="agent")).tier.name == "big"


def test_an_explicit_tier_always_wins() -> None:
    r = Router(policy(3), "agent")
    route = r.route(req(COMPLEX, model="small"))
    assert (route.tier.name, route.header) == ("small", "explicit; reason=model")
    assert r.route(req(SIMPLE, model="p/big")).tier.name == "big"
    with pytest.raises(ApiError) as info:
        r.route(req(SIMPLE, model="gpt-5"))
    assert info.value.status == 404 and info.value.param == "model"


def test_fewer_tiers_and_fixed_strategy() -> None:
    two = Router(policy(2), "agent")
    assert two.route(req(SIMPLE)).tier.name == "small"
    assert two.route(req(COMPLEX)).tier.name == "mid"
    medium = "Explain the difference between a mutex and a semaphore with an example."
    assert two.route(req(medium)).tier.name == "small"  # the default of two is the first
    assert Router(policy(2, default="mid"), "agent").route(req(medium)).tier.name == "mid"
    one = Router(policy(1), "agent").route(req(COMPLEX))
    assert (one.tier.name, one.header) == ("small", "default; reason=single_tier")
    fixed = Router(policy(3, strategy="fixed", default="big"), "agent").route(req(SIMPLE))
    assert (fixed.tier.name, fixed.header) == ("big", "default; reason=fixed")


def test_conversation_and_tools_count() -> None:
    shape_of = Router(policy(3), "agent")
    request = parse_chat_request(
        {
            "model": "auto",
            "messages": [
                {"role": "system", "content": "sys"},
                {"role": "user", "content": "first"},
                {"role": "assistant", "content": "ok"},
                {"role": "user", "content": "second"},
            ],
            "tools": [{"type": "function", "function": {"name": "f"}}],
        }
    )
    from swiftclaw_runtime.routing.tiers import request_shape

    shape = request_shape(request)
    assert (shape.text, shape.user_turns, shape.tools) == ("second", 2, 1)
    assert shape_of.route(request).kind in CLASSES
