"""Does the collection answer the question? One decision from every signal the ask already has.

The best passage's similarity alone (``min_relevance``) only catches questions far off topic: a
plausible administrator question that the manual never answers ("which port does the Prometheus
exporter use?") retrieves passages about ports and daemons whose similarity is as high as a real
answer's. What gives such questions away is that their *specific* words are nowhere in the passages.
So the decision combines, in two stages:

1. Before generation (no model call when it fails), a tiny logistic model over retrieval signals:
   the best dense similarity, how many of the question's
   content terms the top passages contain (together and the best single one), and how many the
   whole collection never uses (one indexed keyword lookup per term). Its six numbers
   (:data:`WEIGHTS`) are fitted by ``bench/answerability_fit.py`` on a TRAIN split of the eval
   questions and reported on the held-out split (docs/benchmarks.md); they are not tuned by hand.
2. After generation, two transparent rules: the model said itself that the documents do not answer
   (:func:`declines`, detected by words near each other, not one fixed sentence) and said nothing
   a passage supports; or no claim of the answer is supported by any passage (``CitationChecker``).

Everything here is linear in the text: one tokenising pass and fixed-size windows.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

from ragsvc.citations import STOPWORDS

# Reasons (``unanswered_reason`` in the response), from the cheapest check to the last.
NO_PASSAGES = "no_relevant_passages"  # nothing retrieved, or the best passage under min_relevance
NOT_COVERED = "not_covered"  # retrieval signals: the passages do not hold what the question asks for
MODEL_DECLINED = "model_declined"  # the model said the documents do not answer, and nothing it said is supported
UNSUPPORTED = "unsupported_answer"  # the answer makes claims, and no passage supports any of them

NOT_COVERED_ANSWER = ("The documents in this collection do not cover this question. "
                      "The closest passages are listed as related; none of them answers it.")
RELATED_COUNT = 3  # closest passages shown with a non-answer
TOP_PASSAGES = 3  # passages whose words count for coverage: what the model would mostly read

# Fitted by bench/answerability_fit.py (TRAIN split; see docs/benchmarks.md for the held-out figures).
# Order: bias, then FEATURES.
# The margin of the best passage over the second is reported but not used: it measures how the collection
# is cut into documents (one article per subject gives large margins) more than whether it answers.
FEATURES = ("best_dense", "coverage_top", "coverage_best", "unknown")
WEIGHTS = (-4.835, 3.726, 2.053, 2.787, -2.128)
THRESHOLD = 0.304  # P(covered) under this: not covered

_WORD = re.compile(r"[a-z0-9]+(?:['’][a-z]+)?")  # one pass, no nesting: linear
# Words every question uses that say what kind of answer is wanted, not what it is about.
QUESTION_WORDS = frozenset(
    "which what how who whom whose when where why many much does did do can could would should get set "
    "use used using make way default called name named kind type tell find give want need year long "
    # Filler verbs and quantifiers: they say little about what the passage must hold.
    "every one see out up got came go let lets put show while another ever still "
    # The attribute asked for: a passage gives its value ("painted orange", "$850"), rarely the word.
    "color colour size length height width weight age date time number amount price cost distance speed".split()
)


def _stem(word: str) -> str:
    """A crude suffix fold so that ``packages``/``package`` and ``listed``/``list`` meet; never empties a word."""
    word = word.replace("’", "'").split("'", 1)[0]
    for suffix in ("ing", "ed", "es", "s"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix) and not word.endswith(("ss", "us", "is")):
            return word[: -len(suffix)]
    return word


def terms(text: str) -> set[str]:
    return {_stem(w) for w in _WORD.findall(text.lower())}


def question_terms(question: str) -> set[str]:
    """The content terms of a question: not stopwords, not question words, longer than one letter."""
    return {_stem(w) for w in _WORD.findall(question.lower())
            if len(w) > 1 and w not in STOPWORDS and w not in QUESTION_WORDS}


@dataclass(frozen=True)
class RetrievalSignals:
    best_dense: float
    margin: float
    coverage_top: float  # share of question terms found in the top passages together
    coverage_best: float  # the largest share found in any one of them
    unknown: float  # share of question terms that no passage of the whole collection uses
    missing: tuple[str, ...]  # question terms none of the top passages holds (for the reader of the JSON)

    def vector(self) -> list[float]:
        return [self.best_dense, self.coverage_top, self.coverage_best, self.unknown]


def retrieval_signals(question: str, dense_scores: Sequence[float | None], texts: Sequence[str],
                      known: set[str] | None = None) -> RetrievalSignals:
    """``known``: the question terms the collection uses anywhere (``KeywordStore.present``); None when
    there is no keyword index, and then ``unknown`` is 0."""
    dense = sorted((s or 0.0 for s in dense_scores), reverse=True)
    best = dense[0] if dense else 0.0
    margin = best - dense[1] if len(dense) > 1 else 0.0
    wanted = question_terms(question)
    top = [terms(t) for t in texts[:TOP_PASSAGES]]
    if not wanted:  # a question of stopwords only: coverage says nothing either way
        return RetrievalSignals(best, margin, 1.0, 1.0, 0.0, ())
    union = set().union(*top) if top else set()
    found = wanted & union
    best_one = max((len(wanted & t) for t in top), default=0)
    unknown = 0.0 if known is None else len(wanted - known - found) / len(wanted)
    return RetrievalSignals(best, margin, len(found) / len(wanted), best_one / len(wanted), unknown,
                            tuple(sorted(wanted - found)))


def covered_probability(signals: RetrievalSignals, weights: Sequence[float] = WEIGHTS) -> float:
    z = weights[0] + sum(w * x for w, x in zip(weights[1:], signals.vector()))
    return 1.0 / (1.0 + math.exp(-max(min(z, 50.0), -50.0)))


# --- the model's own "the documents do not say" -------------------------------------------------
# A sentence declines when a negation has, within a few words, both a word naming the sources (or the
# speaker) and a word for containing/saying/knowing. Word sets, not one sentence: "The provided text
# does not mention ...", "There is no information about ... in the passages", "I don't know",
# "... is not specified in the documents", "None of the passages says ...".
_NEGATION = frozenset("not no never nothing none neither nor cannot unable without "
                      "don't doesn't didn't isn't aren't wasn't weren't can't couldn't won't haven't hasn't".split())
_SOURCE = frozenset("document documents passage passages context text texts source sources excerpt excerpts "
                    "information info details provided given collection material materials i we".split())
_SAYING = frozenset("contain contains contained mention mentions mentioned say says said state states stated "
                    "provide provides include includes included cover covers covered specify specifies specified "
                    "answer answers answered give gives know find found discuss discusses address addresses "
                    "describe describes described indicate indicates indicated explain explains explained "
                    "information details detail available enough sure clear".split())
_WINDOW = 8  # words on each side of a negation


def declines(sentence: str) -> bool:
    words = [w.replace("’", "'") for w in _WORD.findall(sentence.lower())]
    for i, w in enumerate(words):
        if w in _NEGATION:
            near = words[max(0, i - _WINDOW): i + _WINDOW + 1]
            if any(x in _SOURCE for x in near) and any(x in _SAYING for x in near):
                return True
    return False


@dataclass(frozen=True)
class AnswerSignals:
    declined: bool  # some sentence says the documents (or the model) do not know
    claims: int  # sentences that make a claim (``CheckedSentence.is_claim``) and do not decline
    supported_claims: int  # of those, how many a passage supports


def answer_signals(sentences: Iterable) -> AnswerSignals:  # CheckedSentence from ragsvc.citations
    declined, claims, supported = False, 0, 0
    for s in sentences:
        if declines(s.text):
            declined = True
            continue
        if s.is_claim:
            claims += 1
            supported += any(c.supported for c in s.citations)
    return AnswerSignals(declined, claims, supported)


@dataclass(frozen=True)
class Verdict:
    answered: bool
    reason: str | None
    covered: float  # P(covered) from the retrieval signals
    retrieval: RetrievalSignals
    answer: AnswerSignals | None = None
    threshold: float = THRESHOLD  # the one stage 1 applied

    def json(self) -> dict:
        out = {"covered": round(self.covered, 4), "threshold": self.threshold,
               **{k: (round(v, 4) if isinstance(v, float) else list(v) if isinstance(v, tuple) else v)
                  for k, v in asdict(self.retrieval).items()}}
        if self.answer is not None:
            out |= asdict(self.answer)
        return out


def before_generation(question: str, dense_scores: Sequence[float | None], texts: Sequence[str],
                      known: set[str] | None = None, threshold: float = THRESHOLD) -> Verdict:
    """Stage 1: retrieval signals only; a non-answer here costs no model call. ``threshold``:
    ``RAGSVC_ANSWERABILITY_THRESHOLD`` (0: this stage never refuses)."""
    signals = retrieval_signals(question, dense_scores, texts, known)
    p = covered_probability(signals)
    return Verdict(p >= threshold, None if p >= threshold else NOT_COVERED, p, signals, threshold=threshold)


def after_generation(first: Verdict, sentences: Iterable) -> Verdict:
    """Stage 2: what the model said, checked against the passages."""
    a = answer_signals(sentences)
    reason = None
    if a.declined and a.supported_claims == 0:
        reason = MODEL_DECLINED
    elif a.claims > 0 and a.supported_claims == 0:
        reason = UNSUPPORTED
    return Verdict(reason is None, reason, first.covered, first.retrieval, a, first.threshold)
