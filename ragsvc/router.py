"""``mode: auto``: send hard multi-hop questions to reasoning (``on``) and lookups to greedy (``off``).

A question is scored on what makes it multi-hop: several answers asked for (plurals, "all", "top 5",
lists), several sub-questions ("…, and who…"), comparisons and superlatives over a set, aggregation
(totals, averages, counts), bridges (a property of an entity named through another: "the director of
the film that…"), and why/how over several facts. Retrieval adds evidence: top passages spread over
several documents with no clear winner suggest the answer must be assembled. Each signal found is
named in ``mode_reason``. Weights were set on a labelled set (FanOutQA dev questions + hand-written
lookups); ``bench/route_eval.py`` measures accuracy per class.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_NUM = r"(?:\d+|two|three|four|five|six|seven|eight|nine|ten|twelve|twenty)"
_COMPARATIVE = (r"older|younger|larger|smaller|bigger|higher|lower|longer|shorter|earlier|later|faster|"
                r"slower|better|worse|more|less|fewer|before|after|heavier|lighter|richer|poorer")


class _Then:
    """``first`` and, later on the same line, ``then``: what the regex ``first.*then`` matches, in linear
    time. That regex tries ``.*`` from every occurrence of ``first``, each one scanning to the end of the
    line ("more more more ..." cost quadratic time)."""

    def __init__(self, first: str, then: str, flags: int = 0) -> None:
        self.first, self.then = re.compile(first, flags), re.compile(then, flags)

    def search(self, text: str) -> bool:
        pos = 0
        while (m := self.first.search(text, pos)) is not None:
            eol = text.find("\n", m.end())
            eol = len(text) if eol < 0 else eol
            # The earliest ``first`` of a line leaves the most room; ``then`` may start where it ends.
            if self.then.search(text, m.end(), eol):
                return True
            pos = eol + 1
        return False


class _Any:
    def __init__(self, *matchers) -> None:
        self.matchers = matchers

    def search(self, text: str) -> bool:
        return any(m.search(text) for m in self.matchers)


# Every matcher runs in linear time on any question (tests/test_linear_time.py).
SIGNALS: list[tuple[str, float, re.Pattern | _Then | _Any]] = [
    ("asks for several items (top/first N)", 2.0,
     re.compile(rf"\b(top|first|last|largest|biggest|highest|lowest|smallest|most|least|best|oldest|"
                rf"youngest|longest|tallest|latest|recent)[- ]{_NUM}\b|\b{_NUM} (most|largest|highest|biggest|"
                rf"best|longest|tallest|oldest|richest|smallest|first|last|main|current|least)\b", re.I)),
    ("a counted set (N things)", 2.0, re.compile(rf"\b{_NUM} (\w+ ){{0,3}}\w+s\b", re.I)),
    # ``\b``: a word is tried from its start only (from inside, ``\w+`` rescanned the word: quadratic).
    ("an enumeration of several names", 2.0, re.compile(r"\b\w+, [^,?]+, (and |or )?[^,?]+")),
    ("asks for every member of a set", 1.6,
     re.compile(r"\b(all (of )?the|every|each \w+|respectively|for each|both)\b", re.I)),
    ("selection from a set", 1.6,
     re.compile(r"\bwhich of\b|^\s*which (\w+ ){0,4}\w+(ies|ers|ors|ants|ents|ates|ams|ons|ists|ries|ices|"
                r"ches|ums|ries|ts|ds|ns|es) (have|has|are|were|did|do|won|play|attend|had)\b", re.I)),
    ("asks a list", 1.4, re.compile(r"^\s*(list|name|find|identify|give)\b", re.I)),
    ("plural question", 1.2,
     re.compile(r"^\s*(what|which|who|where|when|how many|in (what|which))\s+(are|were|have|do|did)\b", re.I)),
    ("counting members of a set", 1.6,
     re.compile(r"^\s*how many (?!\w+ (does|do|did|is|are|can)\b)(\w+ ){1,5}(have|has|had|were|won|are)\b", re.I)),
    ("two questions in one", 1.6,
     re.compile(r"(,|\band)\s+(in |for |at |from |to )?(what|who|where|when|which|how)\b|\?\s*\w.*\?|"
                r"[.?]\s+(what|which|who|provide|specify|list|give|how|where|when)\b", re.I)),
    ("comparison", 1.8,
     _Any(_Then(rf"\b(compare|compared|comparison|difference|differ|versus|vs\.?|{_COMPARATIVE})\b",
                r"\b(or|than|and|between)\b", re.I),
          re.compile(rf"\bsame \w+ as\b|\b({_COMPARATIVE}) or ({_COMPARATIVE})\b", re.I))),
    ("aggregation", 1.8,
     re.compile(r"\b(total|sum|average|combined|altogether|in all|how many of|median|"
                r"the number of \w+ (that|which|who))\b", re.I)),
    ("a span of years", 1.4,
     re.compile(r"\b(from|between) (the year )?\d{4} (to|and|through) \d{4}\b|\b(since|after) \d{4}\b|"
                r"\bpast \w+ (years|decades|seasons)\b|\beach year\b|\bin the last (decade|\w+ years)\b", re.I)),
    ("bridge through another entity", 1.6,
     _Any(re.compile(r"\b(of|by|in|from|do|does|did) the (\w+ ){1,4}(that|which|who|whose|where)\b", re.I),
          _Then(r"\b(of|by) the (\w+ )?(director|author|founder|winner|creator|members?|actors?|"
                r"teams?|countries|cities|companies|players|films?|books?|albums?|bands?)\b",
                r"\b(of|in|that)\b", re.I))),
    ("superlative over a described set", 1.0,
     re.compile(r"\bthe (\w+ )?(\w+est|most \w+|least \w+) (\w+ ){0,4}(that|which|who|among|of the|by)\b",
                re.I)),
    ("why/how over several facts", 1.2,
     re.compile(r"^\s*(why|how (does|do|did|can|could|would|is|are))\b.*\b(and|because|affect|lead|cause|relate)",
                re.I)),
]
THRESHOLD = 1.5


@dataclass
class Route:
    mode: str
    reason: str
    score: float


def question_signals(question: str) -> list[tuple[str, float]]:
    return [(name, w) for name, w, rx in SIGNALS if rx.search(question)]


def route(question: str, doc_spread: int = 1, top_margin: float | None = None) -> Route:
    """Decide ``on``/``off``. ``doc_spread``: distinct documents among the top passages;
    ``top_margin``: best minus second-best dense score of the top passages (None if unknown)."""
    found = question_signals(question)
    score = sum(w for _, w in found)
    if len(question.split()) >= 22:
        found.append(("long question", 0.6))
        score += 0.6
    if doc_spread >= 3 and top_margin is not None and top_margin < 0.05:
        # Evidence spread over several documents with no passage standing out.
        found.append((f"evidence spread over {doc_spread} documents without a clear best passage", 0.8))
        score += 0.8
    if top_margin is not None and top_margin >= 0.15 and score < 2 * THRESHOLD:
        found.append(("one passage clearly best", -0.8))
        score -= 0.8
    if score >= THRESHOLD:
        why = "; ".join(n for n, w in found if w > 0)
        return Route("on", f"multi-hop: {why}", score)
    named = "; ".join(n for n, _ in found) or "no multi-hop signal"
    return Route("off", f"lookup: {named}", score)
