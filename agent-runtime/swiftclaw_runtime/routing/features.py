"""Fast features of a chat request for the complexity classifier.

Everything here reads the last user message (the first ``MAX_CHARS`` of it for the
pattern features: a longer message is long whatever follows) and counts the request
already holds (tools, turns). Keyword groups are matched by splitting the text into words
once and looking each distinct word up (cached), not by one regular expression per group:
on an 8,000-character paste that is the difference between 6 ms and a tenth of that. No
tokenizer, no model: tens of microseconds for a typical message.

Each feature is a number of roughly unit scale (counts through ``log1p``), named so that
the strongest one can be given as the reason of a routing decision.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache

MAX_CHARS = 3_000

_FLAGS = re.IGNORECASE | re.UNICODE


_REGEX_CHARS = set("\\.()[]{}?*+|")
_WORD = re.compile(r"\w+")


class Keywords:
    """A keyword group. Entries: a plain word is a prefix (``migrat`` counts
    ``migration``), ``=word`` an exact word, an entry with a space, hyphen, apostrophe or
    non-Latin script a phrase (counted in the text), one with regex syntax a pattern."""

    def __init__(self, *entries: str) -> None:
        self.prefixes: list[str] = []
        self.exact: set[str] = set()
        self.phrases: list[str] = []
        patterns: list[str] = []
        for e in entries:
            if _REGEX_CHARS & set(e):
                patterns.append(e)
            elif e.startswith("="):
                self.exact.add(e[1:])
            elif any(c in e for c in " -'") or not e.isascii():
                self.phrases.append(e)
            else:
                self.prefixes.append(e)
        self.pattern = re.compile("|".join(patterns), _FLAGS) if patterns else None

    def matches_word(self, word: str) -> bool:
        return word in self.exact or word.startswith(tuple(self.prefixes))

    def count(self, lowered: str, word_hits: int) -> int:
        n = word_hits + sum(lowered.count(p) for p in self.phrases)
        if self.pattern is not None:
            n += len(self.pattern.findall(lowered))
        return n


def _words(*entries: str) -> Keywords:
    return Keywords(*entries)


_CODE_FENCE = re.compile(r"```")
_INLINE_CODE = re.compile(r"`[^`\n]+`")
# Code in prose: snake_case and camelCase words, .calls(, and these marks (counted with
# str.count, far cheaper than one pattern over the text).
_CODE_MARKS = ("{", "}", ";", "->", "::", "()")
_DOTTED_CALL = re.compile(r"\.\w+\(")


def _is_identifier(word: str) -> bool:
    core = word.strip("_")
    if "_" in core:
        return True
    return core[:1].islower() and not core.islower() and not core.isupper()


_MATH = re.compile("[=^√∫∑≤≥±\u00d7÷π∞→]" r"|\b(?:sin|cos|log|lim|dx|dy)\b|\d\s*[+*/]\s*\d")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_SENTENCE_END = re.compile("[.!?。\uff1f\uff01]+" r"(?:\s|$)")
_LIST_ITEM = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s", re.MULTILINE)
_NON_ASCII_LETTER = re.compile(r"[^\x00-\x7f\s\d\W]", re.UNICODE)
# Pasted material: fenced code and quoted passages (what the ask is about, not the ask)
_PASTED = re.compile(r"```.*?(?:```|$)|\"[^\"\n]{40,}\"|“[^”\n]{40,}”", re.DOTALL)
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]")

_PROOF = _words(
    "prove",
    "=proof",
    "derive",
    "show that",
    "lemma",
    "theorem",
    "démontr",
    "beweis",
    "证明",
    "demuestra",
)
_REASONING = _words(
    "step by step",
    "reason",
    "analys",
    "analyz",
    "why",
    "trade-off",
    "tradeoff",
    "evaluat",
    "critically",
    "justify",
    "weigh",
    "diagnos",
    "root cause",
    "figure out",
    "work out",
    "think through",
    "implications",
    "analys",
    "分析",
    "比较",
    "pourquoi",
    "warum",
)
_DESIGN = _words(
    "design",
    "architect",
    "plan",
    "migrat",
    "strateg",
    "framework",
    "runbook",
    "playbook",
    "roadmap",
    "policy",
    "schedule",
    "refactor",
    "restructure",
    "outline",
    "proposal",
    "decision tree",
    "decision table",
    "decision framework",
    "方案",
)
_MULTI_STEP = _words(
    "then",
    "first",
    "after that",
    "finally",
    "each",
    "every",
    "end to end",
    "and how",
    "and what",
    "and when",
    "and which",
    "including",
    "cover",
    "ensuite",
    "dann",
)
_CONSTRAINT = _words(
    "must",
    "without",
    "budget",
    "constraint",
    "ensure",
    "at most",
    "no more than",
    "under \\d",
    "within",
    "never",
    "avoid",
    "can't",
    "cannot",
)
_DEBUG = _words(
    "bug",
    "error",
    "leak",
    "deadlock",
    "race",
    "slow",
    "latency",
    "stack trace",
    "crash",
    "exception",
    "oscillat",
    "intermittent",
    "corrupt",
    "inconsisten",
)
_MEDIUM_ASK = _words(
    "explain",
    "summaris",
    "summariz",
    "describe",
    "write",
    "draft",
    "rewrite",
    "suggest",
    "compare",
    "convert",
    "implement",
    "help me",
    "give me .{0,30}(?:list|plan|checklist|example)",
    "what are the",
    "difference",
    "how does",
    "how do .{0,40} work",
    "erkläre",
    "explique",
    "escribe",
    "calcula",
)
_DEPTH = _words(
    "detailed",
    "complete",
    "comprehensive",
    "rigorous",
    "in depth",
    "thorough",
    "full",
    "\\d[,.]?\\d{3}-word",
    "every",
    "all",
    "whole",
    "strictly",
)
_ADVANCED = _words(
    "limit",
    "eigen",
    "differential",
    "induction",
    "converg",
    "bayes",
    "significan",
    "irrational",
    "uncountabl",
    "recurrence",
    "optimis",
    "optimiz",
    "complexity",
    "invariant",
    "consisten",
    "concurren",
    "distributed",
    "idempoten",
    "memory order",
    "lock-free",
    "multi-region",
    "failover",
    "regulat",
    "contractual",
    "indemnif",
    "分布式",
    "并发",
)
_SIMPLE_LEAD = re.compile(
    r"^\s*(?:(?:hi|hello|hey)\b[^.?!]{0,20}[.?!,:]\s*(?:quick (?:one|question)\W*)?)?"
    r"(?:what(?:'s| is| are| does)?|who|when|where|which|is|are|does|do|can i"
    r"|how (?:many|much|long|do i)"
    r"|define|translate|convert|round|spell|capitali[sz]e|fix the typo|quelle?|où|combien"
    r"|can (?:i|you|we)|why can'?t i|is it|show me how|give me an? (?:word|name|title|synonym)"
    r"|¿|wie (?:kann|lösche)|comment)\b",
    _FLAGS,
)
_GREETING = re.compile(
    r"^\s*(?:hi|hello|hey|thanks|thank you|ok(?:ay)?|great|cool|merci|gracias|danke)\b[\s!.,]*$",
    _FLAGS,
)

NAMES: tuple[str, ...] = (
    "length",
    "words",
    "sentences",
    "questions",
    "code_block",
    "code_lines",
    "identifiers",
    "inline_code",
    "math",
    "numbers",
    "proof",
    "reasoning",
    "design",
    "multi_step",
    "constraints",
    "debugging",
    "explain_or_write",
    "depth_ask",
    "advanced_topic",
    "short_question",
    "greeting",
    "list_items",
    "tools",
    "conversation",
    "ask_length",
    "non_english",
    "cjk",
    "context_length",
)


@dataclass(frozen=True)
class RequestShape:
    """What the classifier reads of a request: the last user message and a few counts."""

    text: str
    user_turns: int = 1
    tools: int = 0
    total_chars: int = 0


def _log(n: float) -> float:
    return math.log1p(n)


_GROUPS: dict[str, Keywords] = {
    "proof": _PROOF,
    "reasoning": _REASONING,
    "design": _DESIGN,
    "multi_step": _MULTI_STEP,
    "constraints": _CONSTRAINT,
    "debugging": _DEBUG,
    "explain_or_write": _MEDIUM_ASK,
    "depth_ask": _DEPTH,
    "advanced_topic": _ADVANCED,
}
_GROUP_LIST = list(_GROUPS.values())


@lru_cache(maxsize=65_536)
def _groups_of(word: str) -> tuple[int, ...]:
    """The keyword groups a (lower-case) word belongs to; words repeat, so this is cached."""
    return tuple(i for i, g in enumerate(_GROUP_LIST) if g.matches_word(word))


def keyword_counts(text: str, words: list[str] | None = None) -> dict[str, int]:
    """Hits per keyword group in ``text`` (its words may be given, already split)."""
    lowered = text.lower()
    hits = [0] * len(_GROUP_LIST)
    for word in words if words is not None else _WORD.findall(text):
        for i in _groups_of(word.lower()):
            hits[i] += 1
    return {name: g.count(lowered, hits[i]) for i, (name, g) in enumerate(_GROUPS.items())}


def extract(shape: RequestShape) -> list[float]:
    """The feature vector of ``shape``, in the order of :data:`NAMES`."""
    full = shape.text
    text = full[:MAX_CHARS]
    tokens = _WORD.findall(text)
    groups = keyword_counts(text, tokens)
    identifiers = sum(1 for w in tokens if _is_identifier(w))
    identifiers += sum(text.count(m) for m in _CODE_MARKS) + len(_DOTTED_CALL.findall(text))
    fences = len(_CODE_FENCE.findall(text))
    code_lines = 0
    if fences >= 2:
        parts = text.split("```")
        code_lines = sum(p.count("\n") for p in parts[1::2])
    cjk = len(_CJK.findall(text))
    words = len(text.split()) + cjk // 2  # CJK scripts put no spaces between words
    short = words <= 15
    cjk_weight = 2 * cjk  # a CJK character carries about what a short English word does
    non_ascii = len(_NON_ASCII_LETTER.findall(text))
    return [
        _log(len(full) + cjk_weight) / 8,
        _log(words) / 6,
        _log(len(_SENTENCE_END.findall(text))),
        _log(text.count("?") + text.count("\uff1f")),
        1.0 if fences >= 2 else 0.0,
        _log(code_lines),
        _log(identifiers),
        _log(len(_INLINE_CODE.findall(text))),
        _log(len(_MATH.findall(text))),
        _log(len(_NUMBER.findall(text))),
        _log(groups["proof"]),
        _log(groups["reasoning"]),
        _log(groups["design"]),
        _log(groups["multi_step"]),
        _log(groups["constraints"]),
        _log(groups["debugging"]),
        _log(groups["explain_or_write"]),
        _log(groups["depth_ask"]),
        _log(groups["advanced_topic"]),
        1.0 if short and _SIMPLE_LEAD.search(text) else 0.0,
        1.0 if _GREETING.match(text) else 0.0,
        _log(len(_LIST_ITEM.findall(text))),
        _log(shape.tools),
        _log(max(0, shape.user_turns - 1)),
        _log(len(_PASTED.sub(" ", text).split()) + cjk // 2) / 6,
        min(1.0, non_ascii / max(1, len(text)) * 10),
        1.0 if cjk else 0.0,
        _log(max(0, shape.total_chars - len(full)) / 1000),
    ]
