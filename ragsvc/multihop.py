"""Follow-up queries for multi-hop questions: the sub-questions a question is made of, and the
entities the first passages name that the question does not (the "bridge" to the second hop)."""

from __future__ import annotations

import re
from collections import Counter

# Linear time on any text (both run over user text: the question, and passages of uploaded documents).
# ``(?<!\s)`` lets the "and" split start only where a whitespace run starts: tried from inside a long
# run, ``\s+and`` rescanned the rest of the run each time (quadratic). The entity's connector is
# ``\s+(?:word\s*)?`` rather than ``\s+(?:word)?\s*``: two adjacent whitespace loops split a run in
# quadratically many ways before failing ("Ab" and a million spaces froze every reasoning ask).
_SPLIT = re.compile(r"\?\s+|;\s+|\.\s+(?=[A-Z])"
                    r"|,?(?<!\s)\s+and\s+(?=(?:in |for |at |from |to )?(?:what|who|where|when|which|how)\b)", re.I)
_ENTITY = re.compile(r"\b([A-Z][\w'’-]+(?:\s+(?:(?:of|the|de|von|van|and)\s*)?[A-Z][\w'’-]+){0,3})")
_SKIP = {"The", "A", "An", "This", "That", "These", "Those", "It", "In", "On", "At", "For", "If", "When",
         "What", "Which", "Who", "Where", "How", "Why", "See", "Note", "Tip", "Table", "Figure", "Section"}


def sub_questions(question: str) -> list[str]:
    parts = [p.strip(" ,.?") for p in _SPLIT.split(question) if p and p.strip()]
    return [p for p in parts if len(p.split()) >= 3 and p.lower() != question.strip(" ?.").lower()]


def bridge_entities(question: str, passages: list[str], n: int) -> list[str]:
    asked = question.lower()
    counts: Counter[str] = Counter()
    for text in passages:
        for m in _ENTITY.finditer(text):
            name = m.group(1).strip()
            if name in _SKIP or len(name) < 3 or name.lower() in asked:
                continue
            counts[name] += 1
    return [name for name, _ in counts.most_common(n)]


def follow_up_queries(question: str, first_passages: list[str], n: int) -> list[str]:
    """Up to ``n`` queries: sub-questions first, then ``question + entity`` bridges."""
    queries = sub_questions(question)[:n]
    for entity in bridge_entities(question, first_passages, n):
        if len(queries) >= n:
            break
        queries.append(f"{entity} {question}")
    return queries
