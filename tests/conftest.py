"""Fixtures that start real processes: simulated providers and runtimes on loopback."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from swiftclaw_devtools.processes import Proc, start_runtime, start_sim

API_KEY = "sk-test-0123456789"
KEYS_FILE = {"keys": [{"key": API_KEY, "tenant": "acme", "user": "alice"}]}


def manifest(
    providers: list[dict[str, Any]], tiers: list[dict[str, Any]], **spec: Any
) -> dict[str, Any]:
    """A minimal AgentDeployment; ``spec`` entries override or add top-level spec keys."""
    body: dict[str, Any] = {
        "providers": providers,
        "models": {"tiers": tiers, "routing": {"default": tiers[0]["name"]}},
        "cache": {"redis": {"mode": "none"}},
        "reliability": {
            "timeoutSeconds": 10,
            "retry": {"maxAttempts": 2, "initialBackoffMs": 10, "maxBackoffMs": 50},
            "circuitBreaker": {"failureThreshold": 3, "windowSeconds": 30, "openSeconds": 60},
        },
    }
    body.update(copy.deepcopy(spec))
    return {
        "apiVersion": "swiftclaw.dev/v1alpha1",
        "kind": "AgentDeployment",
        "metadata": {"name": "test-agent", "namespace": "tests"},
        "spec": body,
    }


def openai_provider(name: str, sim: Proc) -> dict[str, Any]:
    return {"name": name, "type": "openai-compatible", "baseURL": f"{sim.url}/v1"}


class Launcher:
    """Starts simulators and runtimes into one folder and stops them all by pid."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.procs: list[Proc] = []

    def sim(self, *args: str) -> Proc:
        p = start_sim(
            None,
            *args,
            log_path=self.folder / f"sim-{len(self.procs)}.log",
            env={"SIM_KEY": "upstream-secret-1"},
        )
        self.procs.append(p)
        return p

    def runtime(self, doc: dict[str, Any], *args: str, env: dict[str, str] | None = None) -> Proc:
        path = self.folder / f"agent-{len(self.procs)}.yaml"
        path.write_text(yaml.safe_dump(doc))
        keys = self.folder / "keys.yaml"
        keys.write_text(yaml.safe_dump(KEYS_FILE))
        p = start_runtime(
            path,
            None,
            "--api-keys",
            str(keys),
            "--log-format",
            "text",
            *args,
            log_path=self.folder / f"runtime-{len(self.procs)}.log",
            env=env,
        )
        self.procs.append(p)
        return p

    def stop_all(self) -> None:
        for p in reversed(self.procs):
            p.stop()


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Launcher]:
    launcher = Launcher(tmp_path)
    yield launcher
    launcher.stop_all()


@pytest.fixture(scope="module")
def module_launch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launcher]:
    launcher = Launcher(tmp_path_factory.mktemp("procs"))
    yield launcher
    launcher.stop_all()
