"""Fast features of a chat request for the complexity classifier.

Everything here is a handful of precompiled regular expressions over the last user
message (at most ``MAX_CHARS`` of it: a longer message is long whatever follows) plus
counts the request already holds (tools, turns). No tokenizer, no model: the whole
extraction costs tens of microseconds, which is what lets routing sit on every request.

Each feature is a number of roughly unit scale (counts through ``log1p``), named so that
the strongest one can be given as the reason of a routing decision.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

MAX_CHARS = 8_000

_FLAGS = re.IGNORECASE | re.UNICODE


def _words(*words: str) -> re.Pattern[str]:
    return re.compile(r"\b(?:" + "|".join(words) + r")", _FLAGS)


_CODE_FENCE = re.compile(r"```")
_INLINE_CODE = re.compile(r"`[^`\n]+`")
# snake_case, camelCase, dotted.calls(), foo(), ->, ::, {}, ;: what code looks like in prose
_IDENTIFIER = re.compile(
    r"\b[a-z]+_[a-z_0-9]+\b|\b[a-z]+[A-Z][A-Za-z0-9]+\b|\w+\.\w+\(|\w\(\)|->|::|[{};]"
)
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
    "proof\\b",
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
    "analy[sz]",
    "why",
    "trade-?offs?",
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
    "decision (?:tree|table|framework)",
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
    "summari[sz]e",
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
    "optimi[sz]e",
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


def extract(shape: RequestShape) -> list[float]:
    """The feature vector of ``shape``, in the order of :data:`NAMES`."""
    full = shape.text
    text = full[:MAX_CHARS]
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
        _log(len(_IDENTIFIER.findall(text))),
        _log(len(_INLINE_CODE.findall(text))),
        _log(len(_MATH.findall(text))),
        _log(len(_NUMBER.findall(text))),
        _log(len(_PROOF.findall(text))),
        _log(len(_REASONING.findall(text))),
        _log(len(_DESIGN.findall(text))),
        _log(len(_MULTI_STEP.findall(text))),
        _log(len(_CONSTRAINT.findall(text))),
        _log(len(_DEBUG.findall(text))),
        _log(len(_MEDIUM_ASK.findall(text))),
        _log(len(_DEPTH.findall(text))),
        _log(len(_ADVANCED.findall(text))),
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
