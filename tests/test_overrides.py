"""The pure parts of the runtime's reloads: the fleet document read and applied
(overrides.py), the change check of a mounted file (reload.py), the API keys file's
errors, and the pod runner's kubelet-like delay of volume updates. No I/O beyond files
under the test's folder; clocks are passed in."""

from __future__ import annotations

import json
import os
import types
from pathlib import Path
from typing import Any

import pytest
import yaml
from e2e.podrunner import PodWorker, write_atomically

from swiftclaw_runtime.auth import ApiKeyStore
from swiftclaw_runtime.config import AgentDeploymentSpec
from swiftclaw_runtime.config.fleet import FleetOverrides
from swiftclaw_runtime.overrides import (
    MAX_FLEET_BYTES,
    Fleet,
    FleetFileError,
    FleetView,
    parse_fleet,
    supersedes,
)
from swiftclaw_runtime.reload import Watched, read_fleet

NOW = 1_800_000_000.0


def policy() -> Any:
    spec = AgentDeploymentSpec.model_validate(
        {
            "providers": [
                {"name": "a", "type": "openai-compatible", "baseURL": "http://127.0.0.1:1/v1"},
                {"name": "b", "type": "openai-compatible", "baseURL": "http://127.0.0.1:2/v1"},
            ],
            "models": {
                "tiers": [
                    {"name": "small", "model": "a/s"},
                    {"name": "big", "model": "a/l", "fallbacks": ["b/l", "b/m"]},
                ]
            },
        }
    )
    return spec.policy()


def doc(generation: int = 1, excluded: list[dict[str, Any]] | None = None, **budget: Any) -> Any:
    return FleetOverrides.model_validate(
        {"generation": generation, "excluded": excluded or [], "budget": budget}
    )


def entry(tier: str, model: str, until: float = NOW + 60, cause: str = "auth") -> dict[str, Any]:
    return {"tier": tier, "model": model, "cause": cause, "since": NOW - 10, "until": until}


# --- the fleet file -------------------------------------------------------------------


def test_a_fleet_file_parses_into_the_document() -> None:
    raw = json.dumps({"generation": 3, "excluded": [entry("big", "a/l")]}).encode()
    parsed = parse_fleet(raw)
    assert parsed.generation == 3 and parsed.excluded[0].model == "a/l"


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b'{"generation": 1, "excl', "not JSON"),
        (b'{"generation": -1}', "generation: greater_than_equal"),
        (b'{"generation": 1, "excluded": [{"tier": "big"}]}', "excluded.0.model: missing"),
        (b'{"generation": 1, "surprise": "sk-secret-value"}', "surprise: extra_forbidden"),
        (b"[1, 2]", "(document): model_type"),
        (b" " * (MAX_FLEET_BYTES + 1), "over the"),
        (  # past the schema's 256 exclusions (a file well under the size bound)
            json.dumps({"generation": 1, "excluded": [entry("big", "a/l")] * 257}).encode(),
            "excluded: too_long",
        ),
    ],
)
def test_a_bad_fleet_file_says_why_without_quoting_it(raw: bytes, words: str) -> None:
    with pytest.raises(FleetFileError) as info:
        parse_fleet(raw)
    assert words in str(info.value)
    assert "sk-secret" not in str(info.value)


def test_read_fleet_is_none_for_an_empty_mount_and_bounded(tmp_path: Path) -> None:
    assert read_fleet(tmp_path / "fleet.json") is None
    (tmp_path / "fleet.json").write_bytes(b"{" * (MAX_FLEET_BYTES * 3))
    with pytest.raises(FleetFileError, match="over the"):
        read_fleet(tmp_path / "fleet.json")


def test_an_older_generation_never_replaces_a_newer_one() -> None:
    assert supersedes(doc(1), None)
    assert supersedes(doc(2), doc(1))
    assert supersedes(doc(2), doc(2))  # the same document written again
    assert not supersedes(doc(1), doc(2))


# --- what the document means for this agent -------------------------------------------


def test_exclusions_apply_to_their_tier_and_model_until_their_end() -> None:
    view = FleetView.of(doc(1, [entry("big", "a/l", until=NOW + 60)]), policy())
    chain = ["a/l", "b/l", "b/m"]
    assert set(view.skipped("big", chain, NOW)) == {"a/l"}
    assert view.skipped("big", chain, NOW + 60) == {}  # until reached: tried again
    assert view.skipped("small", ["a/s"], NOW) == {}  # the other tier keeps a/... models
    assert [e.model for e in view.active(NOW)] == ["a/l"]
    assert view.active(NOW + 61) == []


def test_entries_naming_no_tier_or_model_of_the_agent_are_ignored() -> None:
    view = FleetView.of(
        doc(1, [entry("huge", "a/l"), entry("big", "c/x"), entry("small", "b/l")]), policy()
    )
    assert view.excluded == {} and view.ignored == 3


def test_a_duplicated_exclusion_keeps_the_longest() -> None:
    view = FleetView.of(
        doc(1, [entry("big", "b/l", until=NOW + 10), entry("big", "b/l", until=NOW + 500)]),
        policy(),
    )
    assert view.excluded["big"]["b/l"].until == NOW + 500


def test_a_chain_is_never_emptied_by_the_document() -> None:
    every = [entry("big", m) for m in ("a/l", "b/l", "b/m")]
    view = FleetView.of(doc(1, every), policy())
    assert view.skipped("big", ["a/l", "b/l", "b/m"], NOW) == {}
    two = FleetView.of(doc(1, every[:2]), policy())
    assert set(two.skipped("big", ["a/l", "b/l", "b/m"], NOW)) == {"a/l", "b/l"}


@pytest.mark.parametrize(
    ("state", "until", "at", "expected"),
    [
        ("normal", 0, NOW, "normal"),
        ("downgrade", 0, NOW + 10**6, "downgrade"),  # 0: until the document changes
        ("downgrade", NOW + 60, NOW, "downgrade"),
        ("downgrade", NOW + 60, NOW + 60, "normal"),
        ("exceeded", NOW + 60, NOW + 59, "exceeded"),
    ],
)
def test_the_budget_state_holds_until_its_end(
    state: str, until: float, at: float, expected: str
) -> None:
    assert FleetView.of(doc(1, state=state, until=until), policy()).budget(at) == expected


def test_the_fleet_in_force_ignores_stale_documents_and_clears_when_the_file_goes() -> None:
    fleet = Fleet(policy(), clock=lambda: NOW)
    assert fleet.apply(doc(2, [entry("big", "a/l")]))
    assert not fleet.apply(doc(1))
    assert fleet.view.generation == 2 and set(fleet.skipped("big", ["a/l", "b/l"])) == {"a/l"}
    assert fleet.apply(None)  # the ConfigMap deleted: no overrides, any generation next
    assert fleet.view == FleetView() and fleet.apply(doc(1))
    assert fleet.describe() == {"generation": 1, "budget": "normal", "excluded": []}


# --- noticing a change of a mounted file ---------------------------------------------


def test_a_kubelet_swap_and_an_in_place_edit_are_both_noticed(tmp_path: Path) -> None:
    folder = tmp_path / "mount"
    write_atomically(folder, {"fleet.json": b'{"generation": 1}'}, None)
    watched = Watched(folder / "fleet.json")
    assert not watched.changed()
    # same size, same second: a new inode behind the ..data symlink
    write_atomically(folder, {"fleet.json": b'{"generation": 2}'}, None)
    assert watched.changed() and not watched.changed()
    target = (folder / "fleet.json").resolve()
    target.write_bytes(b'{"generation": 30}')  # an edit in place (local runs)
    assert watched.changed()
    write_atomically(folder, {}, None)  # the optional ConfigMap deleted: the file goes
    assert watched.changed() and watched.stamp is None and not watched.changed()


# --- the API keys file's errors ------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "keys: [{key: sk-leaky-000000000, user: ",  # YAML cut short
        "keys: [{key: sk-leaky-000000000, user: bob, role: admin}]",  # a field too many
        "keys: [{key: sk-leaky-000000000, sha256: " + "a" * 64 + ", user: bob}]",
    ],
)
def test_a_bad_keys_file_is_refused_without_quoting_a_key(tmp_path: Path, text: str) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=r"keys\.yaml is invalid") as info:
        ApiKeyStore.from_file(path)
    assert "sk-leaky" not in str(info.value)


def test_a_keys_file_that_goes_leaves_no_keys(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text(yaml.safe_dump({"keys": [{"key": "sk-plain-000001", "user": "a"}]}))
    assert len(ApiKeyStore.from_file(path)) == 1
    os.unlink(path)
    assert len(ApiKeyStore.from_file(path)) == 0


# --- the pod runner's kubelet-like delay ---------------------------------------------


def worker(tmp_path: Path, delay: float) -> tuple[PodWorker, list[str]]:
    runner: Any = types.SimpleNamespace(root=tmp_path, volume_delay=delay)
    pod = {
        "metadata": {"namespace": "podrun-x", "name": "p", "uid": "0123456789"},
        "spec": {"containers": [{"name": "c", "image": "agent-runtime"}]},
    }
    w = PodWorker(runner, pod)
    written: list[str] = []
    w.refresh_volume = lambda volume: written.append(volume["name"])  # type: ignore[method-assign]
    w.volume_sources[("configMap", "agent-fleet")] = [{"name": "fleet", "configMap": {}}]
    return w, written


def test_without_a_delay_a_change_is_written_at_once(tmp_path: Path) -> None:
    w, written = worker(tmp_path, 0)
    w.refresh_source("configMap", "agent-fleet")
    assert written == ["fleet"]
    w.refresh_source("configMap", "other")  # not one of the pod's: nothing
    assert written == ["fleet"]


@pytest.mark.parametrize("phase", [0.0, 0.3, 0.999])
def test_with_a_delay_a_change_waits_for_the_pods_next_sync(tmp_path: Path, phase: float) -> None:
    w, written = worker(tmp_path, 60)
    w.sync_phase = phase
    now = 1000.0
    w.refresh_source("configMap", "agent-fleet")
    w._sync_volumes(now)
    due = w.sync_due
    assert written == [] and due is not None and now < due <= now + 60
    assert (due - phase * 60) % 60 == pytest.approx(0)  # on the pod's own grid
    w._sync_volumes(due - 0.01)
    assert written == []
    w._sync_volumes(due)
    assert written == ["fleet"] and w.sync_due is None
    w._sync_volumes(due + 120)  # nothing pending: nothing written
    assert written == ["fleet"]
