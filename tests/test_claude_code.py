"""Claude Code in print mode (``claude -p``), installed from npm by ``make install``
(scripts/install-claude-code.sh), pointed at the runtime by ``ANTHROPIC_BASE_URL``: a task
with a tool call (it reads a file) runs to its answer on a tier of each provider shape.

Claude Code's network is loopback only: a bare environment (a fresh ``HOME``), the
switches that turn off its telemetry, error reports, update checks and other
non-essential traffic, and every other destination sent through a proxy at a closed
loopback port. The simulated model calls the one tool offered (``Read``) with the path
``sim``; the file of that name holds a word the answer must quote.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from swiftclaw_devtools.processes import Proc, free_port

from .conftest import API_KEY, Launcher
from .test_tools import shape_sims, shapes_manifest

CLAUDE = Path(sys.prefix) / "claude-code" / "node_modules" / ".bin" / "claude"
WORD = "pelican"


@pytest.fixture(scope="module")
def claude() -> Path:
    if shutil.which("npm") is None and not CLAUDE.exists():
        pytest.skip("npm is absent, so make install could not install Claude Code")
    if not CLAUDE.exists():
        pytest.fail(f"{CLAUDE} is missing: run make install (scripts/install-claude-code.sh)")
    return CLAUDE


@pytest.fixture(scope="module")
def sims(module_launch: Launcher) -> dict[str, Proc]:
    return shape_sims(module_launch)


@pytest.fixture(scope="module")
def rt(module_launch: Launcher, sims: dict[str, Proc]) -> Proc:
    return module_launch.runtime(shapes_manifest(sims))


def run(claude: Path, rt: Proc, folder: Path, tier: str, **env: str) -> dict[str, Any]:
    """``claude -p`` on ``tier`` in ``folder``; its JSON result."""
    (folder / "home").mkdir(parents=True, exist_ok=True)
    (folder / "sim").write_text(f"the secret word is {WORD}\n")
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens: no way out but loopback
    base = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(folder / "home"),
        "ANTHROPIC_BASE_URL": rt.url,
        "ANTHROPIC_API_KEY": API_KEY,
        "ANTHROPIC_MODEL": tier,
        "ANTHROPIC_SMALL_FAST_MODEL": tier,
        "ANTHROPIC_DEFAULT_HAIKU_MODEL": tier,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "HTTPS_PROXY": closed,
        "HTTP_PROXY": closed,
        "NO_PROXY": "127.0.0.1,localhost",
    }
    done = subprocess.run(
        [
            str(claude),
            "-p",
            "Read the file named sim and tell me the secret word.",
            "--tools",
            "Read",
            "--allowedTools",
            "Read",
            "--output-format",
            "json",
        ],
        cwd=folder,
        env={**base, **env},
        capture_output=True,
        timeout=240,
        check=False,
    )
    out = done.stdout.decode()
    assert out.strip(), f"no result from claude: {done.stderr.decode()[-2000:]}"
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def last_request(sim: Proc) -> dict[str, Any]:
    with urllib.request.urlopen(f"{sim.url}/_sim/requests", timeout=5) as r:
        body: dict[str, Any] = json.load(r)[-1]["body"]
        return body


def test_claude_code_reads_a_file_and_answers_on_the_anthropic_tier(
    claude: Path, rt: Proc, sims: dict[str, Proc], tmp_path: Path
) -> None:
    result = run(claude, rt, tmp_path, "anthropic")
    assert result["is_error"] is False, result["result"]
    assert WORD in result["result"] and result["num_turns"] == 2
    sent = last_request(sims["anthropic"])
    assert sent["stream"] is True and sent["thinking"]["type"] != "disabled"  # passed through
    results = [
        b
        for m in sent["messages"]
        if isinstance(m["content"], list)
        for b in m["content"]
        if b.get("type") == "tool_result"
    ]
    assert len(results) == 1 and WORD in json.dumps(results[0])


def test_claude_code_without_thinking_answers_on_the_openai_tier(
    claude: Path, rt: Proc, tmp_path: Path
) -> None:
    result = run(claude, rt, tmp_path, "openai", MAX_THINKING_TOKENS="0")
    assert result["is_error"] is False, result["result"]
    assert WORD in result["result"] and result["num_turns"] == 2


def test_claude_code_without_thinking_answers_on_the_gemini_tier(
    claude: Path, rt: Proc, sims: dict[str, Proc], tmp_path: Path
) -> None:
    """Claude Code's Read tool bounds a parameter with ``exclusiveMinimum``, which Gemini's
    schema lacks: translated to an inclusive ``minimum``, the task finishes."""
    result = run(claude, rt, tmp_path, "gemini", MAX_THINKING_TOKENS="0")
    assert result["is_error"] is False, result["result"]
    assert WORD in result["result"] and result["num_turns"] == 2


def test_claude_code_is_told_that_thinking_cannot_reach_an_openai_tier(
    claude: Path, rt: Proc, tmp_path: Path
) -> None:
    result = run(claude, rt, tmp_path, "openai")
    assert result["is_error"] is True and result["api_error_status"] == 400
    assert "'thinking'" in result["result"]
