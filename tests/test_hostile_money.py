"""Money under hostile and unlucky clients (issue 20, items 4 to 6), over real HTTP, real
processes and a real Redis; only the provider is simulated, and it reports what it was
sent (the output cap) and what it billed.

- A client that hangs up does not make the call free: what the provider was asked to do
  is charged (its usage where it returned, the estimate otherwise), to the budget,
  ``tokensPerMinute`` and ``/v1/usage``; so are attempts that timed out and were retried,
  and the output a stream had produced when its client left.
- A budget reservation settles where it was made, when Redis leaves or returns while the
  request runs: no reservation left behind on Redis, none in process, no spend lost.
- The output cap a request was reserved for is the one the provider gets, in each API's
  field, and it is cut to what the budget has left.
"""

from __future__ import annotations

import json
import math
import socket
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
import redis

from swiftclaw_devtools.processes import Proc, start_redis
from swiftclaw_runtime.config import BudgetSpec
from swiftclaw_runtime.spend.budgets import TOMBSTONE_SECONDS, Ask, Budget
from swiftclaw_runtime.spend.identity import Identity
from swiftclaw_runtime.spend.redis import SpendRedis

from .conftest import API_KEY, Launcher, manifest
from .test_connection_lifecycle import provider, wait_for
from .test_resilience_live import client, control, metrics, sim_stats
from .test_spend_live import AGENT, call

PRICE = 1000.0  # USD per 1M tokens, in and out: a token costs a thousandth of a dollar
TOKEN_USD = PRICE / 1_000_000
SETTLED = 15.0  # seconds a settlement may take, with margin for a loaded machine


def budget_key() -> str:
    return f"{AGENT}:budget:agent:{datetime.now(UTC).date().isoformat()}"


def ledger(r: redis.Redis) -> tuple[float, float]:
    """The agent's daily budget on Redis: spent and reserved (USD)."""
    spent, reserved = r.hmget(budget_key(), ["spent", "reserved"])
    return float(spent or 0), float(reserved or 0)


def priced_agent(
    launch: Launcher,
    r: Proc,
    sim_args: tuple[str, ...] = ("--latency", "fixed:1"),
    type_: str = "openai-compatible",
    **spec: Any,
) -> tuple[Proc, Proc]:
    """A sim and a runtime on Redis ``r``, one tier at :data:`PRICE` both ways."""
    sim = launch.sim(*sim_args)
    tier = {"name": "t", "model": "up/m", "inputPer1M": PRICE, "outputPer1M": PRICE}
    doc = manifest([provider("up", sim, type_, 8)], [tier], **spec)
    return sim, launch.runtime(doc, "--redis-url", f"redis://127.0.0.1:{r.port}/0")


def a_redis(launch: Launcher, data_dir: Path | None = None, port: int | None = None) -> Proc:
    r = start_redis(
        port, log_path=launch.folder / f"redis-{len(launch.procs)}.log", data_dir=data_dir
    )
    launch.procs.append(r)
    return r


def ask(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": "t", "messages": [{"role": "user", "content": text}], **extra}


# --- item 4: hang-ups and retried timeouts are charged ----------------------------------


def test_a_client_that_hangs_up_on_a_plain_request_pays_for_the_providers_work(
    launch: Launcher,
) -> None:
    """The provider takes 3 s; the client leaves once the provider has the request. The
    provider still made (and billed) the answer: the request is charged at least that, in
    the budget, the per-user token window and the day's usage. (Before: $0 and the tokens
    refunded.)"""
    r = a_redis(launch)
    sim, rt = priced_agent(
        launch,
        r,
        sim_args=("--latency", "fixed:3000"),
        budget={"dailyUSD": 100, "onExceeded": "reject"},
        rateLimits={"perUser": {"tokensPerMinute": 1_000_000}},
        reliability={"timeoutSeconds": 10, "retry": {"maxAttempts": 1}},
    )
    db = redis.Redis(port=r.port)
    body = json.dumps(ask("leave early", max_tokens=50)).encode()
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        f"authorization: Bearer {API_KEY}\r\ncontent-length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", rt.port), timeout=10) as s:
        s.sendall(head + body)
        wait_for(lambda: sim_stats(sim)["requests"] == 1, timeout=SETTLED)
    # the client has hung up while the provider works on its answer
    wait_for(lambda: sim_stats(sim)["billed_completion_tokens"] > 0, timeout=SETTLED)
    stats = sim_stats(sim)
    billed = stats["billed_prompt_tokens"] + stats["billed_completion_tokens"]
    wait_for(lambda: ledger(db)[0] > 0 and ledger(db)[1] == pytest.approx(0), timeout=SETTLED)
    spent, _ = ledger(db)
    assert spent >= billed * TOKEN_USD - 1e-9, (spent, billed)
    # the estimate of what was asked: the input and the whole output cap
    assert spent == pytest.approx((stats["billed_prompt_tokens"] + 50) * TOKEN_USD)
    usage = call(rt.url, "/v1/usage").json()
    assert usage["spend"]["agentTodayUSD"] == pytest.approx(spent)
    assert usage["requestsToday"]["agent"] == 1
    assert usage["rateLimits"]["perUser"]["tokens"]["used"] >= billed


def test_an_attempt_that_timed_out_and_was_retried_is_charged(launch: Launcher) -> None:
    """The primary hangs past its share of the deadline and the fallback answers; the
    primary may have done that work too, so it is charged its estimate on top of the
    answer's usage. (Before: only the answer that came back.)"""
    r = a_redis(launch)
    primary = launch.sim("--latency", "fixed:1")
    backup = launch.sim("--latency", "fixed:1")
    tier = {
        "name": "t",
        "model": "up/m",
        "fallbacks": ["backup/m2"],
        "inputPer1M": PRICE,
        "outputPer1M": PRICE,
    }
    doc = manifest(
        [provider("up", primary, "openai-compatible", 8), provider("backup", backup, "gemini", 8)],
        [tier],
        budget={"dailyUSD": 100, "onExceeded": "reject"},
        reliability={"timeoutSeconds": 4, "retry": {"maxAttempts": 1}},
    )
    rt = launch.runtime(doc, "--redis-url", f"redis://127.0.0.1:{r.port}/0")
    db = redis.Redis(port=r.port)
    control(primary, mode="hang")
    raw = client(rt).chat.completions.with_raw_response.create(**ask("slow first", max_tokens=40))
    answer = raw.parse()
    assert raw.headers["x-swiftclaw-model"] == "backup/m2"
    assert answer.usage is not None
    served = (answer.usage.prompt_tokens + answer.usage.completion_tokens) * TOKEN_USD
    timed_out = (answer.usage.prompt_tokens + 40) * TOKEN_USD  # input and the cap it was sent
    wait_for(lambda: ledger(db)[1] == pytest.approx(0) and ledger(db)[0] > 0, timeout=SETTLED)
    spent, _ = ledger(db)
    assert spent == pytest.approx(served + timed_out), (spent, served, timed_out)
    usage = call(rt.url, "/v1/usage").json()
    assert usage["spend"]["agentTodayUSD"] == pytest.approx(spent)


def test_a_stream_its_client_leaves_is_charged_the_output_it_produced(
    launch: Launcher,
) -> None:
    """An OpenAI stream reports its usage only at its end; a client that reads a few
    chunks and leaves must still pay for the output produced, not the input alone."""
    r = a_redis(launch)
    sim, rt = priced_agent(
        launch,
        r,
        sim_args=("--latency", "fixed:1", "--stream-pace-ms", "100"),
        budget={"dailyUSD": 100, "onExceeded": "reject"},
    )
    db = redis.Redis(port=r.port)
    stream = client(rt).chat.completions.create(**ask("a long story please"), stream=True)
    read = 0
    for chunk in stream:
        read += bool(chunk.choices and chunk.choices[0].delta.content)
        if read == 6:
            break
    stream.response.close()  # the client hangs up
    wait_for(lambda: sim_stats(sim)["open_streams"] == 0, timeout=SETTLED)
    wait_for(lambda: ledger(db)[0] > 0 and ledger(db)[1] == pytest.approx(0), timeout=SETTLED)
    spent, _ = ledger(db)
    prompt = sim_stats(sim)["billed_prompt_tokens"]
    assert spent >= (prompt + read) * TOKEN_USD - 1e-9, (spent, prompt, read)


def test_a_messages_stream_its_client_leaves_while_it_thinks_is_charged_the_thinking(
    launch: Launcher,
) -> None:
    """On the Messages API with thinking on, an Anthropic stream's first events are
    thinking, billed as output; its usage comes only at its end. A client that reads some
    of the thinking and leaves pays for it, not for the input alone. (Before: the cut
    stream counted only text and tool calls, so the thinking was free.)"""
    r = a_redis(launch)
    sim, rt = priced_agent(
        launch,
        r,
        sim_args=("--latency", "fixed:1", "--stream-pace-ms", "100"),
        type_="anthropic",
        budget={"dailyUSD": 100, "onExceeded": "reject"},
    )
    db = redis.Redis(port=r.port)
    c = anthropic.Anthropic(base_url=rt.url, api_key=API_KEY, max_retries=0, timeout=30)
    stream = c.messages.create(
        model="t",
        max_tokens=2000,
        thinking={"type": "enabled", "budget_tokens": 1024},
        messages=[{"role": "user", "content": "think it over"}],
        stream=True,
    )
    read = 0
    for event in stream:
        if event.type == "content_block_delta" and event.delta.type == "thinking_delta":
            read += 1
            if read == 8:
                break
    stream.response.close()  # the client hangs up while the model thinks
    wait_for(lambda: sim_stats(sim)["open_streams"] == 0, timeout=SETTLED)
    wait_for(lambda: ledger(db)[0] > 0 and ledger(db)[1] == pytest.approx(0), timeout=SETTLED)
    spent, _ = ledger(db)
    prompt = sim_stats(sim)["billed_prompt_tokens"]
    assert spent >= (prompt + read) * TOKEN_USD - 1e-9, (spent, prompt, read)


# --- item 5: a reservation settles where it was made -------------------------------------


def test_a_reservation_made_on_redis_settles_on_redis_across_an_outage(
    launch: Launcher, tmp_path: Path
) -> None:
    """Reserved on Redis; Redis stops while the provider answers (the settlement finds
    it away); Redis comes back with its data. The reservation is released there and the
    cost added, instead of the reservation staying for the day and the cost lost."""
    data = tmp_path / "redis-data"
    data.mkdir()
    r = a_redis(launch, data_dir=data)
    port = r.port
    _, rt = priced_agent(
        launch,
        r,
        sim_args=("--latency", "fixed:4000"),
        budget={"dailyUSD": 10, "onExceeded": "reject"},
    )
    db = redis.Redis(port=port)
    out: list[Any] = []

    def send() -> None:
        out.append(client(rt).chat.completions.create(**ask("across the outage", max_tokens=30)))

    worker = threading.Thread(target=send)
    worker.start()
    wait_for(lambda: ledger(db)[1] > 0, timeout=SETTLED)  # reserved on Redis
    r.stop()  # the append-only file keeps the reservation
    worker.join(timeout=30)
    assert out and out[0].usage is not None  # served, and settled while Redis was away
    cost = (out[0].usage.prompt_tokens + out[0].usage.completion_tokens) * TOKEN_USD
    a_redis(launch, data_dir=data, port=port)
    db = redis.Redis(port=port)
    wait_for(lambda: ledger(db)[1] == pytest.approx(0, abs=1e-9), timeout=SETTLED)
    assert ledger(db)[0] == pytest.approx(cost)
    usage = call(rt.url, "/v1/usage").json()
    assert usage["shared"] is True
    assert usage["budget"]["daily"]["reservedUSD"] == pytest.approx(0)
    assert usage["budget"]["daily"]["remainingUSD"] == pytest.approx(10 - cost)


def test_a_reservation_made_in_process_settles_in_process_when_redis_returns(
    launch: Launcher,
) -> None:
    """Redis is away when the request is admitted (reserved in process) and back before
    it ends. Its reservation is released in process, not on Redis (where it would drive
    the reserved sum below zero: headroom for the rest of the day), and its cost reaches
    Redis's spend."""
    r = a_redis(launch)
    port = r.port
    sim, rt = priced_agent(
        launch,
        r,
        sim_args=("--latency", "fixed:5000"),
        budget={"dailyUSD": 10, "onExceeded": "reject"},
    )
    r.stop()
    out: list[Any] = []

    def send() -> None:
        out.append(client(rt).chat.completions.create(**ask("while away", max_tokens=30)))

    worker = threading.Thread(target=send)
    worker.start()
    wait_for(lambda: sim_stats(sim)["requests"] == 1, timeout=SETTLED)  # admitted in process
    r = a_redis(launch, port=port)
    wait_for(lambda: "swiftclaw_spend_redis_up 1.0" in metrics(rt), timeout=SETTLED)
    worker.join(timeout=30)
    assert out and out[0].usage is not None
    cost = (out[0].usage.prompt_tokens + out[0].usage.completion_tokens) * TOKEN_USD
    db = redis.Redis(port=port)
    wait_for(lambda: ledger(db)[0] > 0, timeout=SETTLED)
    spent, reserved = ledger(db)
    assert reserved == pytest.approx(0, abs=1e-9)  # not minus the reservation
    assert spent == pytest.approx(cost)
    # and nothing stays reserved in process: Redis away again, the replica's own ledger
    r.stop()
    local = call(rt.url, "/v1/usage").json()
    assert local["shared"] is False
    assert local["budget"]["daily"]["reservedUSD"] == pytest.approx(0, abs=1e-9)
    assert local["budget"]["daily"]["spentUSD"] == pytest.approx(cost)


# --- item 6: the output cap is sent, and cut to what the budget has left -----------------


@pytest.mark.parametrize(
    ("type_", "field", "default_field"),
    [
        ("openai-compatible", "max_tokens", "max_tokens"),
        ("openai", "max_tokens", "max_completion_tokens"),
        ("anthropic", "max_tokens", "max_tokens"),
        ("gemini", "generationConfig.maxOutputTokens", "generationConfig.maxOutputTokens"),
    ],
)
def test_the_output_cap_reserved_for_is_the_one_sent(
    launch: Launcher, type_: str, field: str, default_field: str
) -> None:
    """Without max_tokens the reservation assumes 4,096 output tokens: the provider is
    sent 4,096 (before: nothing, so a model could write past what was reserved). The
    client's own cap and the agent's maxOutputTokens go as sent or as lowered."""
    r = a_redis(launch)
    sim, rt = priced_agent(launch, r, type_=type_, budget={"dailyUSD": 100})
    c = client(rt)

    def last_cap() -> list[Any]:
        return list(sim_stats(sim)["output_caps"][-1])

    c.chat.completions.create(**ask("no cap named"))
    assert last_cap() == [default_field, 4096]
    c.chat.completions.create(**ask("a cap named", max_tokens=77))
    assert last_cap() == [field, 77]
    if type_.startswith("openai"):
        c.chat.completions.create(**ask("the newer field", max_completion_tokens=55))
        assert last_cap() == ["max_completion_tokens", 55]
    capped = launch.sim("--latency", "fixed:1")
    tier = {"name": "t", "model": "up/m"}
    doc = manifest([provider("up", capped, type_, 8)], [tier], agent={"maxOutputTokens": 500})
    rt2 = launch.runtime(doc)
    client(rt2).chat.completions.create(**ask("over the agent's cap", max_tokens=900))
    assert list(sim_stats(capped)["output_caps"][-1]) == [field, 500]
    client(rt2).chat.completions.create(**ask("no cap, the agent's"))
    assert list(sim_stats(capped)["output_caps"][-1]) == [default_field, 500]


@pytest.mark.parametrize("stream", [False, True])
def test_a_request_the_budget_can_only_partly_pay_for_asks_for_that_part(
    launch: Launcher, stream: bool
) -> None:
    """0.312 USD left of a 1 USD day at 0.001 USD a token: a request asking 4,096 output
    tokens is sent with the cap it can pay for (about 300), says so in a header, and the
    day is not overspent. With less left than its input and 16 tokens of output, it is
    refused as before (429 insufficient_quota). (Before: refused outright.)"""
    r = a_redis(launch)
    sim, rt = priced_agent(launch, r, budget={"dailyUSD": 1.0, "onExceeded": "reject"})
    db = redis.Redis(port=r.port)
    db.hset(budget_key(), mapping={"spent": "0.688", "reserved": "0"})
    raw = client(rt).chat.completions.with_raw_response.create(
        **ask("what is left", max_tokens=4096), stream=stream
    )
    body = raw.parse()
    if stream:
        assert "".join(ch.choices[0].delta.content or "" for ch in body if ch.choices)
    stats = sim_stats(sim)
    field, cap = stats["output_caps"][-1]
    prompt = stats["billed_prompt_tokens"]
    affordable = math.floor((0.312 - prompt * TOKEN_USD) / TOKEN_USD + 1e-6)
    assert field == "max_tokens" and cap in (affordable - 1, affordable), (cap, affordable)
    assert raw.headers["x-swiftclaw-budget"] == f"capped; scope=daily; max_tokens={cap}"
    wait_for(lambda: ledger(db)[1] == pytest.approx(0, abs=1e-9), timeout=SETTLED)
    assert ledger(db)[0] <= 1.0 + 1e-9
    db.hset(budget_key(), mapping={"spent": repr(1.0 - (prompt + 10) * TOKEN_USD)})
    with pytest.raises(openai.APIStatusError) as refused:
        client(rt).chat.completions.create(**ask("what is left", max_tokens=4096), stream=stream)
    assert refused.value.status_code == 429
    err = refused.value.body
    assert isinstance(err, dict) and err["code"] == "insufficient_quota"
    assert "daily budget of 1 USD" in err["message"] and "16 output tokens" in err["message"]


async def test_redis_and_the_in_process_ledger_cut_the_output_alike(tmp_path: Path) -> None:
    """The reserve script and the in-process ledger (Redis away) take the same decisions:
    the whole ask when it fits, the output that fits when at least 16 tokens do, else
    onExceeded; a cut reservation never takes the day past its cap."""
    proc = start_redis(log_path=tmp_path / "redis.log")
    shared = SpendRedis(f"redis://127.0.0.1:{proc.port}/0")
    try:
        spec = BudgetSpec.model_validate({"dailyUSD": 1.0, "onExceeded": "reject"})
        on_redis, in_process = Budget(spec, "sc:{cut}", shared), Budget(spec, "sc:{cut}", None)
        who = Identity("acme", "alice")
        # 0.01 USD of input, 4,096 output tokens at 0.001 USD: 4.106 USD asked of 1 USD
        big = Ask(0.01 + 4096 * TOKEN_USD, 0.0, 4096, TOKEN_USD)
        small = Ask(0.01 + 100 * TOKEN_USD, 0.0, 100, TOKEN_USD)
        for budget in (on_redis, in_process):
            first = await budget.reserve(who, small)
            assert (first.action, first.output, first.shared) == ("ok", 100, budget is on_redis)
            cut = await budget.reserve(who, big)
            assert cut.action == "capped" and cut.exceeded is not None
            affordable = math.floor((1.0 - 0.11 - 0.01) / TOKEN_USD + 1e-6)  # about 880
            assert cut.output in (affordable - 1, affordable), cut.output
            refused = await budget.reserve(who, big)  # 0 USD left: not even 16 tokens
            assert refused.action == "reject"
            states, _ = await budget.peek(who)
            assert states[0].spent + states[0].reserved <= 1.0 + 1e-9
            await budget.settle(first, first.amount)
            await budget.settle(cut, cut.amount)
            states, _ = await budget.peek(who)
            assert states[0].reserved == pytest.approx(0, abs=1e-9)
            assert states[0].spent <= 1.0 + 1e-9
    finally:
        await shared.close()
        proc.stop()


async def test_a_settlement_written_twice_counts_once(tmp_path: Path) -> None:
    """A settlement whose reply was lost (Redis slow or gone after it ran) is sent again
    when Redis answers: it must release the reservation and add the cost once, not drive
    the reserved sum below zero and count the cost twice."""
    proc = start_redis(log_path=tmp_path / "redis.log")
    shared = SpendRedis(f"redis://127.0.0.1:{proc.port}/0")
    try:
        spec = BudgetSpec.model_validate({"dailyUSD": 1.0, "onExceeded": "reject"})
        budget = Budget(spec, "sc:{twice}", shared)
        who = Identity("acme", "alice")
        r = await budget.reserve(who, Ask(0.2, 0.0, 100, 0.001))
        assert r.shared and r.mark is not None
        assert await budget.settle(r, 0.05)
        assert await budget.settle(r, 0.05) == []  # the replay: nothing left to settle
        [state], _ = await budget.peek(who)
        assert state.reserved == pytest.approx(0, abs=1e-9)
        assert state.spent == pytest.approx(0.05)
        # no key left per request: the replay leaves a tombstone (so that a reserve that
        # reaches Redis after its settlement reserves nothing) that expires within the hour
        assert 0 < await shared.client.ttl(r.mark) <= TOMBSTONE_SECONDS
    finally:
        await shared.close()
        proc.stop()
