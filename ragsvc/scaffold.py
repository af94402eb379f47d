"""Cut the prompt's own scaffolding out of an answer that echoes it.

A small model often continues the prompt instead of answering it: it restates the question ("Question: How
do I ... [1]? Answer briefly: ..."), copies the instruction line, a passage's ``<passage>`` tag or its
source label ("(manual.pdf, page 86, section ...)"). None of that is an answer, and a marker inside an
echoed question would otherwise become a citation. :func:`strip_scaffold` removes, before citations are
checked:

- ``<passage ...>`` / ``</passage>`` tags;
- a passage's source label in parentheses, or alone on a line;
- ``Question:`` with what follows it: the question (verbatim, up to case, spacing, punctuation and
  markers) or, when the model made up another one, up to its question mark or the end of the line;
- the labels ``Answer:``, ``Answer briefly:``, ``Context:``, ``Passage(s):`` (the text after them stays);
- the question restated verbatim without a label, and any sentence of the prompt's fixed texts
  (rules, system prompt, instruction line).

Text is compared through a skeleton: lower-case letters and digits only, citation markers left out,
each skeleton character remembering where it came from. Every search is ``str.find`` over the skeleton
or a regex without nested or adjacent loops, and removals never overlap, so the cost is linear in the
answer (rows in tests/test_linear_time.py).
"""

from __future__ import annotations

import functools
import re
from bisect import bisect_left
from dataclasses import dataclass
from typing import Iterable

from ragsvc.citations import MARKER
from ragsvc.prompts import scaffold_texts

# ``[^<>\n]{0,300}``: one bounded loop that stops at the next "<", so attempts never rescan each other.
_PASSAGE_TAG = re.compile(r"<[ \t]{0,3}/?[ \t]{0,3}passage\b[^<>\n]{0,300}>", re.IGNORECASE)
# A label counts at the start of a line or right after a sentence, a marker, another label, a parenthesis or a
# tag ends ("...[1]? Answer briefly:"); inside running text ("depends on the context: ...") it is words.
_LABEL = re.compile(r"(?:^|(?<=[.!?:)>\]]))[ \t]*(question|answer(?:[ \t]+briefly)?|context|passages?)[ \t]*:",
                    re.IGNORECASE | re.MULTILINE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_LIST_ITEM_ONLY = re.compile(r"\d{1,3}[.)]|[-*\u2022]")  # a line left as "1." or "-" once its text was cut
MIN_QUESTION_SKELETON = 12  # a shorter question ("apt?") may well be part of a real answer


@dataclass(frozen=True)
class Echo:
    kind: str  # "passage tag", "source label", "question", "label", "prompt text"
    text: str


class _Skeleton:
    """Lower-case letters and digits of ``text``, markers left out; ``origin[j]`` is where ``chars[j]``
    came from."""

    def __init__(self, text: str) -> None:
        chars: list[str] = []
        origin: list[int] = []
        pos = 0
        for m in MARKER.finditer(text):
            self._add(text, pos, m.start(), chars, origin)
            pos = m.end()
        self._add(text, pos, len(text), chars, origin)
        self.chars = "".join(chars)
        self.origin = origin

    @staticmethod
    def _add(text: str, a: int, b: int, chars: list[str], origin: list[int]) -> None:
        for i in range(a, b):
            c = text[i]
            if c.isalnum():
                low = c.lower()
                chars.append(low)
                origin.extend([i] * len(low))

    def span(self, j: int, length: int) -> tuple[int, int]:
        """The text span of skeleton characters ``j .. j + length``."""
        return self.origin[j], self.origin[j + length - 1] + 1


def skeleton(text: str) -> str:
    return _Skeleton(text).chars


@functools.lru_cache(maxsize=1)
def _prompt_sentences() -> tuple[str, ...]:
    out = []
    for text in scaffold_texts():
        out += [s for s in (skeleton(p) for p in _SENTENCE_END.split(text)) if len(s) >= MIN_QUESTION_SKELETON]
    return tuple(dict.fromkeys(out))


def strip_scaffold(answer: str, question: str, labels: Iterable[str] = ()) -> tuple[str, list[Echo]]:
    """(the answer without echoed scaffolding, what was removed). ``labels``: the packed passages' source
    labels (``Passage.label``), as the prompt showed them."""
    spans: list[tuple[int, int, str]] = []
    for m in _PASSAGE_TAG.finditer(answer):
        spans.append((m.start(), m.end(), "passage tag"))
    spans += _source_labels(answer, labels)
    skel = _Skeleton(answer)
    q = skeleton(question)
    spans += _labels(answer, skel, q)
    if len(q) >= MIN_QUESTION_SKELETON:
        spans += [(a, _after_question(answer, b), "question") for a, b in _occurrences(skel, q)]
    for sentence in _prompt_sentences():
        spans += [(a, _after_question(answer, b), "prompt text") for a, b in _occurrences(skel, sentence)]
    if not spans:
        return answer, []
    return _remove(answer, spans)


def _occurrences(skel: _Skeleton, needle: str) -> list[tuple[int, int]]:
    """Text spans of the non-overlapping occurrences of ``needle`` in the skeleton."""
    out = []
    j = skel.chars.find(needle)
    while j >= 0:
        out.append(skel.span(j, len(needle)))
        j = skel.chars.find(needle, j + len(needle))
    return out


def _after_question(text: str, end: int) -> int:
    """Extend an echoed question or prompt sentence over its punctuation and the markers right after it."""
    while end < len(text):
        if text[end] in " \t?.!:":
            end += 1
            continue
        m = MARKER.match(text, end)
        if not m:
            break
        end = m.end()
    return end


def _labels(text: str, skel: _Skeleton, q: str) -> list[tuple[int, int, str]]:
    spans: list[tuple[int, int, str]] = []
    covered = 0  # removals never overlap: a label inside an earlier removal is already gone
    for m in _LABEL.finditer(text):
        if m.start(1) < covered:
            continue
        end = m.end()
        if m.group(1).lower() == "question":
            j = bisect_left(skel.origin, end)
            if q and skel.chars.startswith(q, j):
                end = _after_question(text, skel.span(j, len(q))[1])
            else:  # a question the model made up: up to its question mark, or the end of the line
                stop = [x for x in (text.find("?", end), text.find("\n", end)) if x >= 0]
                end = min(stop) + 1 if stop else len(text)
                if end <= len(text) and text[end - 1:end] == "?":
                    end = _after_question(text, end)
            spans.append((m.start(), end, "question"))
        else:
            spans.append((m.start(), end, "label"))
        covered = end
    return spans


def _source_labels(text: str, labels: Iterable[str]) -> list[tuple[int, int, str]]:
    """``(filename ...)`` as the prompt's source labels read, with nested parentheses ("(printed 12)"),
    and lines that hold nothing but a label."""
    labels = [x.strip() for x in labels if x and x.strip()]
    spans: list[tuple[int, int, str]] = []
    names = {x.split(",", 1)[0].strip() for x in labels}
    for name in sorted(n for n in names if n):
        needle = "(" + name
        at = text.find(needle)
        while at >= 0:
            end, depth = at, 0
            line_end = text.find("\n", at)
            line_end = len(text) if line_end < 0 else line_end
            for i in range(at, line_end):
                depth += {"(": 1, ")": -1}.get(text[i], 0)
                if depth == 0:
                    end = i + 1
                    break
            else:
                end = line_end
            spans.append((at, end, "source label"))
            at = text.find(needle, end)
    whole = set(labels)
    pos = 0
    for line in text.splitlines(keepends=True):
        if line.strip() and line.strip() in whole:
            spans.append((pos, pos + len(line.rstrip("\r\n")), "source label"))
        pos += len(line)
    return spans


def _remove(text: str, spans: list[tuple[int, int, str]]) -> tuple[str, list[Echo]]:
    spans.sort()
    pieces: list[str] = []
    echoes: list[Echo] = []
    pos = 0
    for a, b, kind in spans:
        if b <= pos:
            continue
        a = max(a, pos)
        pieces.append(text[pos:a])
        echoes.append(Echo(kind, text[a:b]))
        pos = b
        # The text after a removal starts a fresh: no space left dangling at a line's start.
        while pos < len(text) and text[pos] in " \t" and (not pieces[-1] or pieces[-1][-1] in " \t\n"):
            pos += 1
    pieces.append(text[pos:])
    lines = []
    for line in "".join(pieces).split("\n"):
        bare = MARKER.sub("", line).strip()
        if any(c.isalnum() for c in bare) and not _LIST_ITEM_ONLY.fullmatch(bare):
            lines.append(line.rstrip())
        elif not line.strip() and lines and lines[-1]:
            lines.append("")  # keep one blank line between paragraphs, drop lines left with only ":" or "?"
    return "\n".join(lines).strip(), echoes
