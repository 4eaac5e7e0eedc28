"""Questions the semantic cache never answers by meaning, whatever the score.

A wrong semantic hit on "is it safe to mix bleach and vinegar?" (answered from "...
baking soda and vinegar?") or "how much ibuprofen can a child take?" does harm that a
cheaper call never repays, and one substituted object moves an embedding too little for
any threshold or rule to see. So questions of these kinds go to the model every time (the
exact cache still applies: the same words get the same answer):

- ``health``: symptoms, illnesses, injuries, allergies, pregnancy, first aid;
- ``medication``: drugs, doses, pills, supplements;
- ``chemical``: household and industrial chemicals, fumes, poisons, fuels;
- ``electrical``: wiring, outlets, breakers, voltage;
- ``legal``: laws, lawyers, contracts, leases, courts, visas;
- ``financial``: money moved or committed (investing, loans, taxes, transfers, refunds);
- ``security``: credentials, keys, secrets, encryption, permissions, access;
- ``hazard``: "is it safe to ...", "dangerous", "toxic".

Word lists, not a model: each is a few regular expressions over the question, linear in
its length, measured on ``eval/safety_dev.jsonl`` (safety questions of each kind and
ordinary ones, for the false-positive rate). Apart from the topic, a question that
carries instructions to the model, a URL, an e-mail address or code
(:func:`.verify.carried`) is never answered by meaning either.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

from .verify import carried


def _any(*patterns: str) -> re.Pattern[str]:
    return re.compile(r"\b(?:" + "|".join(patterns) + r")\b", re.I)


# fmt: off
TOPICS: dict[str, re.Pattern[str]] = {
    "health": _any(
        r"symptoms?", r"diagnos\w*", r"doctors?", r"physicians?", r"hospitals?", r"nurses?",
        r"pregnan\w*", r"breastfeed\w*", r"allerg\w*", r"intoleran\w*", r"celiac",
        r"infect\w*", r"fevers?", r"diseases?", r"illness\w*", r"injur\w*", r"wounds?",
        r"bleeding", r"burns?", r"fractur\w*", r"sprain\w*", r"concussion", r"seizures?",
        r"diabet\w*", r"cancer", r"tumou?rs?", r"asthma", r"blood\s+(?:pressure|sugar)",
        r"cholesterol", r"heart\s+(?:attack|rate|disease)", r"strokes?", r"surger\w*",
        r"vaccin\w*", r"covid", r"flu", r"virus(?:es)?\s+(?:infection|symptoms)",
        r"mental\s+health", r"depress(?:ed|ion)", r"anxiety", r"suicid\w*", r"self[- ]harm",
        r"overdos\w*", r"first\s+aid", r"cpr", r"rash(?:es)?", r"headaches?", r"migraines?",
        r"chest\s+pain", r"pain", r"nause\w*", r"vomit\w*", r"diarrh\w*", r"dehydrat\w*",
        r"therap(?:y|ist)", r"dentist", r"toothache", r"eczema", r"insomnia",
        r"bitten", r"bites?", r"stings?", r"choking", r"poison\w*", r"sunburn", r"swallow\w*",
    ),
    "medication": _any(
        r"medications?", r"medicines?", r"meds", r"drugs?", r"doses?", r"dosage\w*",
        r"\d+\s*mg", r"milligrams?", r"pills?", r"capsules?", r"prescri\w*",
        r"ibuprofen", r"acetaminophen", r"paracetamol", r"tylenol", r"advil", r"aspirin",
        r"naproxen", r"antibiotics?", r"amoxicillin", r"insulin", r"antidepressants?",
        r"ssris?", r"opioids?", r"painkillers?", r"side\s+effects?", r"supplements?",
        r"vitamins?", r"melatonin", r"antihistamines?", r"benadryl", r"xanax",
        r"steroids?", r"birth\s+control", r"contracepti\w*", r"pharmac\w*", r"inhalers?",
    ),
    "chemical": _any(
        r"bleach", r"ammonia", r"chlorine", r"peroxide", r"lye", r"solvents?",
        r"(?:hydrochloric|sulfuric|sulphuric|muriatic|nitric|battery|boric)\s+acid",
        r"acetone", r"pesticides?", r"insecticides?", r"herbicides?", r"weed\s*killers?",
        r"gasoline", r"petrol", r"kerosene", r"propane", r"carbon\s+monoxide",
        r"fumes", r"toxic\w*", r"chemicals",
        r"chemical\s+(?:burns?|spills?|fumes|cleaners?|exposure|reaction)",
        r"drain\s+cleaners?", r"cleaning\s+products?", r"explosives?", r"flammable",
        r"mercury\s+(?:poisoning|exposure|spill|thermometer)", r"asbestos", r"radon",
        r"lead\s+paint",
        r"antifreeze", r"rat\s+poison", r"mold", r"mould",
    ),
    "electrical": _any(
        r"electrical", r"electrician", r"electrocut\w*", r"electric\s+shock", r"wiring",
        r"rewir\w*", r"wire\s+(?:a|an|the|my)\s+\w+", r"outlets?", r"wall\s+sockets?",
        r"breaker\s+(?:box|panel)", r"tripp?(?:ed|ing|s)?\s+(?:the\s+)?breakers?",
        r"fuse\s*box", r"fuses?", r"voltage", r"volts?", r"\d+\s*v", r"amps?", r"amperage",
        r"gfci", r"live\s+wires?", r"ground(?:ing)?\s+wires?", r"neutral\s+wires?",
        r"light\s+switch\w*", r"dimmer", r"extension\s+cords?", r"power\s+strips?",
        r"junction\s+box", r"mains", r"breakers?\s+(?:\w+\s+)?trip\w*",
        r"wires?\s+(?:is|are)\s+(?:neutral|hot|live|ground)",
    ),
    "legal": _any(
        r"lawyers?", r"attorneys?", r"legal\w*", r"illegal\w*", r"laws?", r"lawsuits?",
        r"sue", r"suing", r"sued", r"court", r"judge", r"contracts?\s+(?:law|breach)",
        r"breach\s+of\s+contract", r"sign\w*\s+(?:a|the)\s+contract", r"leases?",
        r"landlords?", r"evict\w*\s+(?:me|us|you|them|him|her|my|a\s+tenant|tenants)",
        r"custody", r"divorce", r"alimony", r"(?:work|tourist|student|travel|residence)\s+visas?",
        r"visas?\s+(?:to|for|application)", r"need\s+a\s+visa",
        r"immigra\w*", r"citizenship", r"patents?", r"trademarks?", r"copyright\w*",
        r"liab(?:le|ility)", r"police", r"arrest\w*", r"criminal", r"gdpr", r"hipaa",
        r"subpoena", r"notar\w*", r"power\s+of\s+attorney", r"last\s+will", r"inherit\w*",
        r"non[- ]?compete", r"nda", r"fired\s+for", r"wrongful",
    ),
    "financial": _any(
        r"invest\w*", r"stocks", r"stock\s+(?:market|price|options?)", r"shares\s+of",
        r"etfs?", r"index\s+funds?", r"crypto\w*",
        r"bitcoin", r"loans?", r"mortgages?", r"refinanc\w*", r"debts?", r"credit\s+cards?",
        r"credit\s+score", r"bank\s+accounts?", r"wire\s+transfers?", r"transfer\s+money",
        r"send\s+money", r"tax(?:es|ed)?", r"irs", r"401\s*\(?k\)?", r"ira", r"roth",
        r"retire\w*", r"pensions?", r"insurance", r"refunds?", r"chargebacks?",
        r"bankrupt\w*", r"savings", r"interest\s+rates?", r"annuit\w*", r"dividends?",
        r"brokerage", r"payday", r"overdraft", r"cash\s+out", r"withdraw\w*",
    ),
    "security": _any(
        r"passwords?", r"passcodes?", r"passphrases?", r"credentials?", r"api\s+keys?",
        r"secret\s+keys?", r"secrets?", r"private\s+keys?", r"ssh\s+keys?", r"keys?\s+pairs?",
        r"encrypt\w*", r"decrypt\w*", r"2fa", r"mfa", r"two[- ]factor",
        r"multi[- ]factor", r"authenticat\w*", r"permissions?", r"chmod", r"chown", r"sudo",
        r"root\s+access", r"admin\w*\s+(?:rights|access|privileges)", r"privileges?",
        r"firewall\w*", r"vulnerab\w*", r"exploits?", r"malware", r"ransomware",
        r"phishing", r"hack\w*", r"certificates?", r"tls", r"ssl", r"rbac", r"iam",
        r"access\s+(?:control|tokens?|keys?)", r"(?:auth|bearer|refresh|session)\s+tokens?",
        r"security", r"data\s+(?:breach\w*|leaks?)",
        r"leaked\s+(?:passwords?|keys?|credentials?|tokens?)", r"sso", r"oauth", r"login\s+details",
    ),
    "hazard": _any(
        r"(?:is|are|was)\s+(?:\w+\s+)?safe(?!-)", r"safe\s+(?:to|for)",
        r"dangerous", r"hazard\w*", r"deadly", r"lethal", r"risk\s+of\s+(?:death|injury|fire)",
    ),
}
# fmt: on

KINDS = tuple(TOPICS)
MAX_CHARS = 4000  # longer questions are judged on their start and end (bounded work)


@lru_cache(maxsize=4096)
def topic(question: str) -> str | None:
    """The first safety kind the question is about, or None."""
    text = unicodedata.normalize("NFKC", question)
    if len(text) > MAX_CHARS:
        text = text[: MAX_CHARS // 2] + " " + text[-MAX_CHARS // 2 :]
    for kind, pattern in TOPICS.items():
        if pattern.search(text):
            return kind
    return None


def never_by_meaning(question: str) -> str | None:
    """Why the question must not be answered from another question's answer: its safety
    kind (see :data:`TOPICS`), ``instruction`` when it carries instructions to the model,
    ``payload`` when it carries a URL, an e-mail address or code; None when it may be."""
    kind = topic(question)
    if kind is not None:
        return kind
    c = carried(question)
    if c.directive:
        return "instruction"
    if c.payloads:
        return "payload"
    return None
