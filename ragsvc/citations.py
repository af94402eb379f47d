"""Citations a person can check: parse ``[n]`` markers, verify them, attribute unmarked sentences.

Small models often ignore the instruction to cite, or cite the wrong passage. So every answer
sentence is scored against every passage (embedding cosine mixed with content-word overlap):
- explicit markers that point at no passage are dropped;
- every kept marker says whether its passage supports the sentence (``supported``);
- a sentence whose markers are all unsupported, or that has none, gets a marker for its
  best-supporting passage when one supports it (``inferred: true``);
- sentences that make a claim but end up with no supported citation are reported.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ragsvc.embedder import Embedder

MARKER = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")
_LEADING_MARKERS = re.compile(r"^(\s*\[\d+(?:\s*,\s*\d+)*\])+")
_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])(\s+)")
_WORD = re.compile(r"[a-z0-9]+")
# Whitespace before punctuation, in one pass: ``\s+([.!?,;:])`` retried from every position of a long
# whitespace run not followed by punctuation, and rescanned the rest of the run each time (quadratic).
_SPACE_THEN = re.compile(r"(\s+)([.!?,;:]?)")
STOPWORDS = frozenset(
    "a an the and or but if of to in on at by for with from as is are was were be been being it its this "
    "that these those which who whom what when where why how do does did has have had not no yes than then "
    "so such can could would should will shall may might must about into over under there their they them "
    "he she his her we our you your i me my also only very more most other some any each both all".split()
)


@dataclass
class SentenceCitation:
    n: int
    support: float
    inferred: bool
    supported: bool = True


@dataclass
class CheckedSentence:
    text: str
    citations: list[SentenceCitation]

    @property
    def is_claim(self) -> bool:
        """A statement with content (not a question, not a one-word filler) that should be sourced."""
        bare = MARKER.sub("", self.text).strip()
        return not bare.endswith("?") and len(content_words(bare)) >= 3


def parse_markers(text: str) -> list[int]:
    """All passage numbers in ``[n]``, ``[n, m]`` and ``[n][m]`` markers, in order of appearance."""
    return [int(x) for m in MARKER.finditer(text) for x in m.group(1).split(",")]


def content_words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in STOPWORDS and len(w) > 1}


def split_sentences(answer: str) -> list[str]:
    """Sentences with their trailing whitespace; markers written after the period stay with their sentence."""
    parts = _SENTENCE_SPLIT.split(answer)
    pieces = ["".join(parts[i:i + 2]) for i in range(0, len(parts), 2)]
    out: list[str] = []
    for piece in pieces:
        lead = _LEADING_MARKERS.match(piece)
        if lead and out:
            out[-1] = out[-1].rstrip() + " " + lead.group(0).strip() + " "
            piece = piece[lead.end():].lstrip()
        if piece:
            out.append(piece)
    return out


class CitationChecker:
    def __init__(self, embedder: Embedder, threshold: float) -> None:
        self.embedder = embedder
        self.threshold = threshold

    def support_matrix(self, sentences: list[str], passages: list[str]) -> np.ndarray:
        """support[i, j] in [0, 1]: how well passage j backs sentence i."""
        if not sentences or not passages:
            return np.zeros((len(sentences), len(passages)))
        vecs = self.embedder.embed(sentences + passages)
        cos = np.clip(vecs[: len(sentences)] @ vecs[len(sentences):].T, 0.0, 1.0)
        overlap = np.zeros_like(cos)
        pwords = [content_words(p) for p in passages]
        for i, s in enumerate(sentences):
            sw = content_words(s)
            if sw:
                overlap[i] = [len(sw & pw) / len(sw) for pw in pwords]
        return 0.5 * cos + 0.5 * overlap

    def check(self, answer: str, passages: list[str]) -> tuple[str, list[CheckedSentence], list[int]]:
        """Return (answer with verified markers, each sentence with its citations, dropped marker numbers)."""
        sentences = split_sentences(answer)
        bare = [MARKER.sub("", s).strip() for s in sentences]
        support = self.support_matrix(bare, passages)
        valid = set(range(1, len(passages) + 1))
        dropped: list[int] = []
        out_text: list[str] = []
        checked: list[CheckedSentence] = []
        for i, sentence in enumerate(sentences):
            marked = parse_markers(sentence)
            dropped += [n for n in marked if n not in valid]
            marked = list(dict.fromkeys(n for n in marked if n in valid))
            cites = [SentenceCitation(n, float(support[i, n - 1]), False, bool(support[i, n - 1] >= self.threshold))
                     for n in marked]
            best = int(np.argmax(support[i])) + 1 if passages else 0
            best_ok = bool(passages) and support[i, best - 1] >= self.threshold
            if not any(c.supported for c in cites) and best_ok and len(content_words(bare[i])) >= 2:
                cites.append(SentenceCitation(best, float(support[i, best - 1]), True, True))
            checked.append(CheckedSentence(MARKER.sub("", sentence).strip(), cites))
            out_text.append(_with_markers(sentence, [c.n for c in cites]))
        return "".join(out_text).strip(), checked, dropped


def _with_markers(sentence: str, numbers: list[int]) -> str:
    """Rewrite a sentence's markers as ``[n][m]`` before its final punctuation."""
    trail = sentence[len(sentence.rstrip()):]
    body = MARKER.sub("", sentence.rstrip())
    body = _SPACE_THEN.sub(lambda m: m.group(2) or m.group(1), body).rstrip()
    if not numbers:
        return body + trail
    marks = "".join(f"[{n}]" for n in numbers)
    # The final punctuation by rstrip, not ``[.!?]+$`` (retried from each mark of a long run of them).
    stem = body.rstrip(".!?")
    if len(stem) < len(body):
        return f"{stem.rstrip()} {marks}{body[len(stem):]}{trail}"
    return f"{body} {marks}{trail}"
