"""Files re-read by a running runtime, without a restart: the operator's fleet document
(models out of a tier's chain, the fleet's budget state), the client API keys and the
providers' Secret keys. Each file is rewritten as a kubelet rewrites a mounted ConfigMap
or Secret (new files in a new folder, one rename of ``..data``), with the pod runner's
own writer; real runtime and simulator processes over HTTP."""

from __future__ import annotations

import hashlib
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from e2e.podrunner import write_atomically

from swiftclaw_devtools.processes import Proc, sim_control
from swiftclaw_runtime import contract

from .conftest import API_KEY, KEYS_FILE, Launcher, manifest, openai_provider

# How long a change may take to show: the runtime checks every second; a loaded machine
# stretches that, so the deadline is generous and the waits are on conditions.
DEADLINE = 30.0
FAR = 3600.0  # an exclusion that lasts the whole test


def wait_for(what: str, check: Callable[[], bool], deadline: float = DEADLINE) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"not within {deadline:.0f}s: {what}")


def chat(rt: Proc, model: str, key: str = API_KEY) -> tuple[int, dict[str, str], Any]:
    body = {"model": model, "messages": [{"role": "user", "content": "hello"}]}
    req = urllib.request.Request(
        f"{rt.url}/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json", "authorization": f"Bearer {key}"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, json.load(r)
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, json.load(err)


def requests_seen(sim: Proc) -> int:
    with urllib.request.urlopen(f"{sim.url}/_sim/stats", timeout=5) as r:
        return int(json.load(r)["requests"])


def last_key(sim: Proc) -> str | None:
    with urllib.request.urlopen(f"{sim.url}/_sim/stats", timeout=5) as r:
        value = json.load(r)["last_key_sha256"]
    return str(value) if value else None


def metrics(rt: Proc) -> str:
    with urllib.request.urlopen(f"{rt.url}/metrics", timeout=5) as r:
        return str(r.read().decode())


def metric(rt: Proc, line_start: str) -> float | None:
    for line in metrics(rt).splitlines():
        if line.startswith(line_start + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


class Mount:
    """A ConfigMap or Secret volume as the kubelet lays it out, updated as it updates it."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def write(self, files: dict[str, bytes]) -> None:
        assert write_atomically(self.folder, files, None)


def fleet_doc(
    generation: int, excluded: list[dict[str, Any]] | None = None, **budget: Any
) -> bytes:
    """A fleet document as the operator renders it; ``budget``: its state and until."""
    doc = {"generation": generation, "excluded": excluded or [], "budget": budget}
    return json.dumps(doc).encode()


def out(
    tier: str, model: str, until_in: float = FAR, cause: str = "breaker-open"
) -> dict[str, Any]:
    """One model out of one tier, from now until ``until_in`` seconds from now."""
    now = time.time()
    return {"tier": tier, "model": model, "cause": cause, "since": now, "until": now + until_in}


class Fleet:
    """Three simulated providers: ``cheap`` serves the cheap tier; ``a`` and ``b`` the
    premium tier's model and its fallback. The fleet document, the API keys and the
    providers' keys are kubelet-style mounts under the test's folder."""

    def __init__(
        self,
        launch: Launcher,
        a_args: tuple[str, ...] = (),
        a_key: bytes = b"upstream-key-1",
        **spec: Any,
    ) -> None:
        root = launch.folder
        self.cheap, self.a, self.b = launch.sim(), launch.sim(*a_args), launch.sim()
        self.fleet = Mount(root / "fleet")
        self.keys = Mount(root / "api-keys")
        secrets = root / "secrets"
        self.provider_key = Mount(Path(contract.provider_key_dir("a", str(secrets))))
        self.provider_key.write({contract.PROVIDER_KEY_FILE: a_key})
        self.fleet.write({contract.FLEET_FILE: fleet_doc(1)})
        self.keys.write(
            {
                contract.API_KEYS_FILE: yaml.safe_dump(
                    {"keys": [*KEYS_FILE["keys"], {"key": "sk-bob-0123456789", "user": "bob"}]}
                ).encode()
            }
        )
        doc = manifest(
            [
                openai_provider("cheap", self.cheap),
                openai_provider("a", self.a),
                openai_provider("b", self.b),
            ],
            [
                {"name": "small", "model": "cheap/s1", "inputPer1M": 0.1, "outputPer1M": 0.2},
                {
                    "name": "premium",
                    "model": "a/big",
                    "fallbacks": ["b/big"],
                    "inputPer1M": 5,
                    "outputPer1M": 15,
                },
            ],
            **spec,
        )
        self.rt = launch.runtime(
            doc,
            "--api-keys",
            str(root / "api-keys" / contract.API_KEYS_FILE),
            env={
                contract.FLEET_FILE_ENV: str(root / "fleet" / contract.FLEET_FILE),
                contract.SECRETS_DIR_ENV: str(secrets),
            },
        )
        self.pid = self.rt.pid

    def served_by(self, model: str = "premium") -> str:
        status, headers, _ = chat(self.rt, model)
        assert status == 200, status
        return headers["x-swiftclaw-model"]

    def alive(self) -> None:
        """Still the process started at the beginning: nothing restarted it."""
        assert self.rt.pid == self.pid and self.rt.popen.poll() is None


@pytest.fixture
def fleet(launch: Launcher) -> Fleet:
    return Fleet(launch)


def test_an_excluded_primary_is_skipped_on_every_request_without_a_restart(fleet: Fleet) -> None:
    assert fleet.served_by() == "a/big"
    fleet.fleet.write({contract.FLEET_FILE: fleet_doc(2, [out("premium", "a/big")])})
    wait_for("the premium tier skips a/big", lambda: fleet.served_by() == "b/big")
    before = requests_seen(fleet.a)
    for _ in range(10):
        status, headers, _ = chat(fleet.rt, "premium")
        assert status == 200
        assert headers["x-swiftclaw-model"] == "b/big"
        assert headers["x-swiftclaw-fleet-skipped"] == "a/big"
        assert headers["x-swiftclaw-fallback"] == "true"
    assert requests_seen(fleet.a) == before  # not one call to the excluded model
    assert metric(fleet.rt, "swiftclaw_fleet_overrides_generation") == 2
    excluded = 'swiftclaw_fleet_excluded{cause="breaker-open",model="a/big",tier="premium"}'
    assert metric(fleet.rt, excluded) == 1
    skips = metric(fleet.rt, 'swiftclaw_fleet_skips_total{model="a/big",tier="premium"}')
    assert skips is not None and skips >= 10
    # the small tier is not touched; /health tells an API-key holder what the pod applies
    assert fleet.served_by("small") == "cheap/s1"
    req = urllib.request.Request(
        f"{fleet.rt.url}/health", headers={"authorization": f"Bearer {API_KEY}"}
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        applied = json.load(r)["fleet"]
    assert applied["generation"] == 2
    assert [(e["tier"], e["model"]) for e in applied["excluded"]] == [("premium", "a/big")]
    # taken back out of the document: a/big serves again
    fleet.fleet.write({contract.FLEET_FILE: fleet_doc(3)})
    wait_for("a/big serves again", lambda: fleet.served_by() == "a/big")
    assert metric(fleet.rt, excluded) is None
    fleet.alive()


def test_an_exclusion_whose_until_has_passed_is_ignored(fleet: Fleet) -> None:
    fleet.fleet.write({contract.FLEET_FILE: fleet_doc(2, [out("premium", "a/big", until_in=-5)])})
    wait_for(
        "generation 2 applied",
        lambda: metric(fleet.rt, "swiftclaw_fleet_overrides_generation") == 2,
    )
    before = requests_seen(fleet.a)
    assert all(fleet.served_by() == "a/big" for _ in range(5))
    assert requests_seen(fleet.a) == before + 5
    fleet.alive()


def test_an_older_generation_is_ignored(fleet: Fleet) -> None:
    fleet.fleet.write({contract.FLEET_FILE: fleet_doc(5)})
    wait_for(
        "generation 5 applied",
        lambda: metric(fleet.rt, "swiftclaw_fleet_overrides_generation") == 5,
    )
    fleet.fleet.write({contract.FLEET_FILE: fleet_doc(4, [out("premium", "a/big")])})
    wait_for(
        "the stale document noticed",
        lambda: metric(fleet.rt, 'swiftclaw_reloads_total{file="fleet",outcome="stale"}') == 1,
    )
    assert all(fleet.served_by() == "a/big" for _ in range(5))
    assert metric(fleet.rt, "swiftclaw_fleet_overrides_generation") == 5
    assert "older than the 5 in force" in fleet.rt.log()
    fleet.alive()


@pytest.mark.parametrize(
    "garbage",
    [
        b'{"generation": 9, "excluded": [{"tier": "premium"',  # cut short
        b'{"generation": -1, "excluded": "all"}',  # not the schema
        b"secret-looking-garbage-0123 " * 50_000,  # too large (1.4 MB)
    ],
    ids=["truncated", "schema", "too-large"],
)
def test_a_bad_file_keeps_the_last_good_document(fleet: Fleet, garbage: bytes) -> None:
    fleet.fleet.write({contract.FLEET_FILE: fleet_doc(2, [out("premium", "a/big")])})
    wait_for("a/big excluded", lambda: fleet.served_by() == "b/big")
    fleet.fleet.write({contract.FLEET_FILE: garbage})
    wait_for(
        "the bad file noticed",
        lambda: metric(fleet.rt, 'swiftclaw_reloads_total{file="fleet",outcome="invalid"}') == 1,
    )
    assert all(fleet.served_by() == "b/big" for _ in range(5))
    assert metric(fleet.rt, "swiftclaw_fleet_overrides_generation") == 2
    log = fleet.rt.log()
    assert "generation 2 stays in force" in log
    assert garbage[:40].decode() not in log and "secret-looking" not in log  # why, not what
    fleet.alive()


def test_budget_downgrade_sends_requests_to_the_cheapest_tier(fleet: Fleet) -> None:
    assert fleet.served_by() == "a/big"
    fleet.fleet.write({contract.FLEET_FILE: fleet_doc(2, state="downgrade")})
    wait_for("the premium tier downgraded", lambda: fleet.served_by() == "cheap/s1")
    before = requests_seen(fleet.a), requests_seen(fleet.b), requests_seen(fleet.cheap)
    for _ in range(5):
        status, headers, _ = chat(fleet.rt, "premium")
        assert status == 200
        assert headers["x-swiftclaw-tier"] == "small"
        assert headers["x-swiftclaw-route"].endswith("; downgraded=fleet-budget")
        assert headers["x-swiftclaw-budget"] == "downgrade; scope=fleet"
    after = requests_seen(fleet.a), requests_seen(fleet.b), requests_seen(fleet.cheap)
    assert after == (before[0], before[1], before[2] + 5)
    assert metric(fleet.rt, "swiftclaw_fleet_budget_state") == 1
    # back to normal: the premium tier serves again
    fleet.fleet.write({contract.FLEET_FILE: fleet_doc(3, state="normal")})
    wait_for("premium again", lambda: fleet.served_by() == "a/big")
    fleet.alive()


def test_budget_exceeded_applies_on_exceeded_reject_fleet_wide(launch: Launcher) -> None:
    fleet = Fleet(launch, budget={"onExceeded": "reject"})
    assert fleet.served_by() == "a/big"
    fleet.fleet.write(
        {contract.FLEET_FILE: fleet_doc(2, state="exceeded", until=time.time() + 600)}
    )

    def refused() -> bool:
        return chat(fleet.rt, "premium")[0] == 429

    wait_for("requests refused", refused)
    status, headers, body = chat(fleet.rt, "small")
    assert status == 429
    assert body["error"]["code"] == "insufficient_quota"
    assert "fleet has spent its budget" in body["error"]["message"]
    assert 500 <= int(headers["retry-after"]) <= 600
    fleet.alive()


def test_a_key_deleted_from_the_keys_secret_is_refused(fleet: Fleet) -> None:
    assert chat(fleet.rt, "small", key="sk-bob-0123456789")[0] == 200
    fleet.keys.write({contract.API_KEYS_FILE: yaml.safe_dump(KEYS_FILE).encode()})
    wait_for("bob refused", lambda: chat(fleet.rt, "small", key="sk-bob-0123456789")[0] == 401)
    assert chat(fleet.rt, "small")[0] == 200  # the key still in the Secret still works
    # a bad keys file keeps the keys in force (and says why, not what)
    fleet.keys.write({contract.API_KEYS_FILE: b"keys: [{key: sk-leaky-000000000, user: "})
    wait_for(
        "the bad keys file noticed",
        lambda: metric(fleet.rt, 'swiftclaw_reloads_total{file="api_keys",outcome="invalid"}') == 1,
    )
    assert chat(fleet.rt, "small")[0] == 200
    assert chat(fleet.rt, "small", key="sk-bob-0123456789")[0] == 401
    assert "sk-leaky" not in fleet.rt.log()
    fleet.alive()


@pytest.mark.parametrize(
    "bad",
    [
        {"keys": [{"sk-leaky-000000001": "alice", "user": "alice"}]},  # the key as a field
        {"keys": [], "sk-leaky-000000001": {"user": "alice"}},  # at the top
    ],
    ids=["in-an-entry", "at-the-top"],
)
def test_a_key_written_as_a_field_name_is_not_logged(fleet: Fleet, bad: dict[str, Any]) -> None:
    """A keys file whose key sits where a field name goes is invalid: the log names the
    place and the kind of error, never that name (it is the key)."""
    fleet.keys.write({contract.API_KEYS_FILE: yaml.safe_dump(bad).encode()})
    wait_for(
        "the bad keys file noticed",
        lambda: metric(fleet.rt, 'swiftclaw_reloads_total{file="api_keys",outcome="invalid"}') == 1,
    )
    log = fleet.rt.log()
    assert "extra_forbidden" in log
    assert "sk-leaky" not in log
    assert chat(fleet.rt, "small")[0] == 200  # the keys in force stay
    fleet.alive()


def test_a_rotated_provider_key_is_sent_from_the_next_request(fleet: Fleet) -> None:
    def sha(key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()

    assert fleet.served_by() == "a/big"
    assert last_key(fleet.a) == sha("upstream-key-1")
    fleet.provider_key.write({contract.PROVIDER_KEY_FILE: b"upstream-key-2\n"})

    def rotated() -> bool:
        fleet.served_by()
        return last_key(fleet.a) == sha("upstream-key-2")

    wait_for("the new key reaches the provider", rotated)
    assert all(fleet.served_by() == "a/big" for _ in range(3))
    assert last_key(fleet.a) == sha("upstream-key-2")
    assert "upstream-key-2" not in fleet.rt.log()
    fleet.alive()


def test_a_rotated_key_lets_the_breaker_its_refusals_opened_probe_at_once(
    launch: Launcher,
) -> None:
    # provider a takes only the conftest's SIM_KEY; its Secret holds a revoked key
    fleet = Fleet(launch, a_args=("--require-key-env", "SIM_KEY"), a_key=b"revoked-key-0")
    breaker = 'swiftclaw_circuit_breaker_state{model="big",provider="a"}'
    wait_for(
        "a/big's breaker open on 401s",
        lambda: fleet.served_by() == "b/big" and metric(fleet.rt, breaker) == 1,
    )
    fleet.provider_key.write({contract.PROVIDER_KEY_FILE: b"upstream-secret-1"})
    # well before the breaker's openSeconds (60 s) are over
    wait_for("a/big serving with the new key", lambda: fleet.served_by() == "a/big", deadline=20)
    assert metric(fleet.rt, breaker) == 0
    fleet.alive()


def test_an_open_breaker_of_an_excluded_model_turns_half_open_by_the_clock(
    launch: Launcher,
) -> None:
    """The operator lets a model back only once no pod reports its breaker open. A model
    the fleet took out gets no call that would move its breaker on, so the exported state
    must turn half-open when the breaker's time is up, or the model is out for ever."""
    f = Fleet(
        launch,
        reliability={
            "timeoutSeconds": 10,
            "retry": {"maxAttempts": 1},
            "circuitBreaker": {"failureThreshold": 2, "windowSeconds": 30, "openSeconds": 2},
        },
    )
    state = 'swiftclaw_circuit_breaker_state{model="big",provider="a"}'
    sim_control(f.a.url, mode="error")
    wait_for("a/big's breaker open", lambda: f.served_by() == "b/big" and metric(f.rt, state) == 1)
    f.fleet.write({contract.FLEET_FILE: fleet_doc(2, [out("premium", "a/big")])})
    wait_for("a/big skipped", lambda: "a/big" in skipped_by(f))
    before = requests_seen(f.a)
    # no call reaches a/big, yet its breaker reads half-open once its 2 s are up
    wait_for("a/big's breaker half-open", lambda: metric(f.rt, state) == 2)
    assert requests_seen(f.a) == before
    f.alive()


def skipped_by(f: Fleet) -> str:
    status, headers, _ = chat(f.rt, "premium")
    assert status == 200, status
    return headers.get("x-swiftclaw-fleet-skipped", "")
