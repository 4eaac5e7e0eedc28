"""Every shell block and manifest of the docs (docs/ and the README) is exercised, so no
page drifts from the code: manifests are validated against the models (the CRD's source),
keys files against their model, Helm values against the chart's values.yaml; shell
commands are checked cheaply (a ``make`` target exists, ``swiftclaw``/``python -m``
commands answer ``--help`` naming every option used, repository paths exist). A block
that needs a real cluster or cloud says so in the comment ``<!-- not-tested: REASON -->``
on the line before it; the test checks that the reason is there.
"""

from __future__ import annotations

import functools
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from swiftclaw_operator.api import AgentDeploymentSpec
from swiftclaw_runtime.auth import KeysFile
from swiftclaw_runtime.config import ConfigError, parse_document

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
SHELL = {"sh", "bash", "shell", "console"}
MANIFEST = {"yaml", "yml"}
FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>[\w-]*)\s*$")
MARKER = re.compile(r"^\s*<!--\s*not-tested:\s*(?P<reason>.*?)\s*-->\s*$")
REPO_PATH = re.compile(
    r"^(examples|crds|charts|docs|e2e|tests|bench|scripts|agent-runtime|operator|devtools)/"
)
BIN = Path(sys.executable).parent

# What a spec fragment is merged into: one provider of each kind the docs name.
BASE: dict[str, Any] = {
    "apiVersion": "swiftclaw.dev/v1alpha1",
    "kind": "AgentDeployment",
    "metadata": {"name": "docs-agent", "namespace": "agents"},
    "spec": {
        "providers": [
            {"name": "openai", "type": "openai", "baseURL": "https://api.openai.com/v1"},
            {"name": "anthropic", "type": "anthropic", "baseURL": "https://api.anthropic.com/v1"},
            {
                "name": "gemini",
                "type": "gemini",
                "baseURL": "https://generativelanguage.googleapis.com/v1beta",
            },
        ],
        "models": {"tiers": [{"name": "simple", "model": "openai/gpt-4o-mini"}]},
    },
}


@dataclass(frozen=True)
class Block:
    page: str
    line: int
    lang: str
    text: str
    reason: str | None  # the not-tested marker's reason, if marked

    def __str__(self) -> str:
        return f"{self.page}:{self.line}"


def blocks_of(text: str, page: str) -> Iterator[Block]:
    """The fenced blocks of a Markdown page, with the marker on the line before each."""
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        opened = FENCE.match(lines[i])
        if not opened:
            i += 1
            continue
        indent = opened["indent"]
        end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
        body = "\n".join(line.removeprefix(indent) for line in lines[i + 1 : end])
        before = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        marker = MARKER.match(before)
        yield Block(page, i + 1, opened["lang"], body, marker["reason"] if marker else None)
        i = end + 1


def all_blocks(langs: set[str]) -> list[Block]:
    return [
        b
        for page in PAGES
        for b in blocks_of(page.read_text(), str(page.relative_to(REPO)))
        if b.lang in langs
    ]


# --- manifests --------------------------------------------------------------------------


def deep_merge(base: Any, extra: Any) -> Any:
    """``extra`` over ``base``: mappings merged, anything else (lists too) replaced."""
    if isinstance(base, dict) and isinstance(extra, dict):
        return {**base, **{k: deep_merge(base.get(k), v) for k, v in extra.items()}}
    return extra


@functools.cache
def chart_values() -> dict[str, Any]:
    loaded = yaml.safe_load((REPO / "charts/swiftclaw/values.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def unknown_keys(doc: dict[str, Any], known: dict[str, Any], at: str = "") -> list[str]:
    """The key paths of ``doc`` that ``known`` lacks (free-form maps end the walk)."""
    out = []
    for key, value in doc.items():
        if key not in known:
            out.append(at + key)
        elif isinstance(value, dict) and isinstance(known[key], dict) and known[key]:
            out += unknown_keys(value, known[key], f"{at}{key}.")
    return out


SPEC_KEYS = {f.alias or n for n, f in AgentDeploymentSpec.model_fields.items()}


def manifest_kind(doc: Any) -> str | None:
    """What a YAML document of the docs is, or None if the test cannot tell."""
    if not isinstance(doc, dict) or not doc:
        return None
    if doc.get("kind") == "AgentDeployment":
        return "agent"
    if set(doc) == {"spec"} or set(doc) <= SPEC_KEYS:
        return "spec-fragment"
    if set(doc) == {"keys"}:
        return "keys"
    if set(doc) <= set(chart_values()):
        return "helm-values"
    return None


def check_manifest(doc: Any) -> None:
    """Raises (naming the field) when the document is not what its kind accepts."""
    kind = manifest_kind(doc)
    if kind == "agent":
        parse_document(doc, model=AgentDeploymentSpec)
    elif kind == "spec-fragment":
        fragment = doc if set(doc) == {"spec"} else {"spec": doc}
        parse_document(deep_merge(BASE, fragment), model=AgentDeploymentSpec)
    elif kind == "keys":
        KeysFile.model_validate(doc)
    elif kind == "helm-values":
        assert not unknown_keys(doc, chart_values()), unknown_keys(doc, chart_values())
    else:
        raise AssertionError("not a manifest the test knows: mark it not-tested, with why")


# --- shell ------------------------------------------------------------------------------


def commands_of(text: str) -> list[list[str]]:
    """Each simple command of a shell block as words: continuations joined, comments,
    ``VAR=value`` prefixes and a trailing ``&`` dropped, pipelines split."""
    joined = text.replace("\\\n", " ")
    out = []
    for line in joined.split("\n"):
        words = shlex.split(line, comments=True)
        while words and words[-1] == "&":
            words.pop()
        command: list[str] = []
        for word in [*words, "|"]:
            if word in ("|", "&&", ";"):
                while command and re.match(r"^[A-Za-z_]\w*=", command[0]):
                    command.pop(0)
                if command:
                    out.append(command)
                command = []
            else:
                command.append(word)
    return out


@functools.cache
def make_targets() -> frozenset[str]:
    found: set[str] = set()
    for line in (REPO / "Makefile").read_text().splitlines():
        rule = re.match(r"^([A-Za-z][\w .-]*):(?!=)", line)
        if rule:
            found |= set(rule[1].split())
    return frozenset(found)


@functools.cache
def help_text(*argv: str) -> str:
    done = subprocess.run(
        [*argv, "--help"], capture_output=True, text=True, timeout=120, cwd=REPO, check=False
    )
    assert done.returncode == 0, f"{' '.join(argv)} --help failed: {done.stderr[-2000:]}"
    return done.stdout


def options_of(words: list[str]) -> list[str]:
    return [w.split("=", 1)[0] for w in words if w.startswith("--")]


def command_problem(words: list[str]) -> str | None:
    """Why the test cannot check this command (so its block must be marked), or None once
    checked. Checking fails with an assertion where the command does not match the code."""
    for word in words:
        if REPO_PATH.match(word):
            assert (REPO / word.split("::")[0]).exists(), f"{word} does not exist"
    program = words[0].removeprefix(".venv/bin/")
    if program == "make":
        for target in (w for w in words[1:] if not w.startswith("-") and "=" not in w):
            assert target in make_targets(), f"no make target {target!r}"
        return None
    if program == "echo":
        return None
    if program == "swiftclaw" and len(words) > 1:
        text = help_text(str(BIN / "swiftclaw"), words[1])
    elif program in ("python", "python3") and words[1:2] == ["-m"]:
        text = help_text(sys.executable, "-m", words[2])
    elif program == "pytest":
        return None  # its paths were checked above; running it here would run the suite
    else:
        return f"cannot check {words[0]!r}"
    for option in options_of(words):
        assert option in text, f"{' '.join(words[:3])} has no option {option}"
    return None


# --- the tests --------------------------------------------------------------------------


def unmarked(langs: set[str]) -> list[Block]:
    return [b for b in all_blocks(langs) if b.reason is None]


@pytest.mark.parametrize("block", unmarked(MANIFEST), ids=str)
def test_manifest_of_the_docs_is_valid(block: Block) -> None:
    docs = [d for d in yaml.safe_load_all(block.text) if d is not None]
    assert docs, "empty block"
    for doc in docs:
        try:
            check_manifest(doc)
        except ConfigError as e:
            pytest.fail(f"{block}: {e}")


@pytest.mark.parametrize("block", unmarked(SHELL), ids=str)
def test_shell_block_of_the_docs_matches_the_code(block: Block) -> None:
    try:
        commands = commands_of(block.text)
    except ValueError as e:  # a heredoc, an open quote: not a block the test can read
        commands = [[f"(unparsed: {e})"]]
    problems = [p for words in commands if (p := command_problem(words))]
    assert not problems, (
        f"{block}: {problems}; mark the block <!-- not-tested: REASON --> if it needs a "
        "real cluster or cloud"
    )


def test_marked_blocks_say_why() -> None:
    marked = [b for b in all_blocks(SHELL | MANIFEST) if b.reason is not None]
    assert marked, "the docs have commands that need a cluster: they must be marked"
    vague = [str(b) for b in marked if len(b.reason.split()) < 3]
    assert not vague, f"a not-tested marker must say why (at least a few words): {vague}"


def test_the_helm_values_page_lists_every_value() -> None:
    page = (REPO / "docs/reference/helm-values.md").read_text()
    grouped = ("image", "operator", "admissionPolicy", "dashboard")  # listed one value a row
    paths = [
        *(k for k in chart_values() if k not in grouped),
        *(f"{k}.{inner}" for k in grouped for inner in chart_values()[k]),
    ]
    missing = [p for p in paths if f"`{p}`" not in page]
    assert not missing, f"values.yaml has values docs/reference/helm-values.md lacks: {missing}"


def test_the_readme_links_resolve() -> None:
    # The site's own links are checked by `make docs` (strict); the README is not part of it.
    text = (REPO / "README.md").read_text()
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [t for t in targets if not re.match(r"^[a-z]+:", t)]
    assert local, "the README links into the docs"
    missing = [t for t in local if not (REPO / t).exists()]
    assert not missing, f"README links to missing files: {missing}"


def test_the_checks_catch_drift() -> None:
    # The checks themselves can fail: an unknown field, an unknown option, an unmarked
    # kubectl, a missing make target, a missing file.
    with pytest.raises(ConfigError, match="treshold"):
        check_manifest({"cache": {"semantic": {"treshold": 0.7}}})
    with pytest.raises(AssertionError, match="--no-such-flag"):
        command_problem(["swiftclaw", "validate", "--no-such-flag"])
    assert command_problem(["kubectl", "get", "pods"]) is not None
    with pytest.raises(AssertionError, match="no make target"):
        command_problem(["make", "no-such-target"])
    with pytest.raises(AssertionError, match="does not exist"):
        command_problem(["swiftclaw", "run", "examples/no-such.yaml"])
    page = "text\n<!-- not-tested: needs a cluster to run -->\n```sh\nkubectl get pods\n```\n"
    (block,) = blocks_of(page, "x.md")
    assert block.reason == "needs a cluster to run" and block.text == "kubectl get pods"
