"""The scaffold stripper: echoed questions, labels, instructions, passage tags and source labels leave the
answer; the answer's own text and citation markers stay."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ragsvc.prompts import GENERIC_INSTRUCTION, RULES
from ragsvc.scaffold import strip_scaffold

Q = "How do I make a package keep its current version when I upgrade?"
LABEL = "debian-reference.en.pdf, page 101 (printed 102), section Debian package management > Tips"
LABELS = [LABEL, "Tokyo Story.txt"]

# (answer, question, cleaned)
CASES = [
    # The answer: echoed question with a marker inside, then the instruction's label.
    ("Question: How do I make a package keep its current version when I upgrade [1]? Answer briefly: "
     "Put it in /etc/apt/preferences [4].", Q, "Put it in /etc/apt/preferences [4]."),
    # The question echoed without its label, in other case and spacing.
    ("how do I make a package  keep its current version when I upgrade? Use apt-mark hold [2].", Q,
     "Use apt-mark hold [2]."),
    # A question the model made up after its answer: gone up to its question mark.
    ("Use apt-mark hold [2].\n\nQuestion: Which release got its codename from the binoculars [3]?\nAnswer: Woody.",
     Q, "Use apt-mark hold [2].\n\nWoody."),
    # The instruction line and a rules sentence copied.
    (f"Use apt-mark hold [1].\n{GENERIC_INSTRUCTION}", Q, "Use apt-mark hold [1]."),
    (RULES.split(". ")[0] + ". Use apt-mark hold [1].", Q, "Use apt-mark hold [1]."),
    # Passage tags and source labels, with nested parentheses; a numbered line left empty goes too.
    (f"1. ({LABEL})\n<passage n=\"1\" source=\"x\">Pinning keeps a version [1].</passage>", Q,
     "Pinning keeps a version [1]."),
    ("(Tokyo Story.txt)\nTokyo Story is a 1953 Japanese drama film [1].", "Who directed Tokyo Story?",
     "Tokyo Story is a 1953 Japanese drama film [1]."),
    (f"{LABEL}\nPinning keeps a version [1].", Q, "Pinning keeps a version [1]."),
    ("Context: pinning keeps a version [1].", Q, "pinning keeps a version [1]."),
    ("Passage: 1\n\nPinning keeps a version [1].", Q, "1\n\nPinning keeps a version [1]."),
    # Only scaffolding: nothing is left.
    (f"Question: {Q}", Q, ""),
    # Not scaffolding: the words in running text, a restated (not copied) question, a short question.
    ("The answer depends on the context: pin it [1].", Q, "The answer depends on the context: pin it [1]."),
    ("To keep a package at its current version, hold it [1].", Q,
     "To keep a package at its current version, hold it [1]."),
    ("Use apt. It works [1].", "apt?", "Use apt. It works [1]."),
    ("See Tokyo Story.txt for details [1].", "Who directed Tokyo Story?", "See Tokyo Story.txt for details [1]."),
]


@pytest.mark.parametrize("answer, question, cleaned", CASES)
def test_cases(answer, question, cleaned):
    out, echoes = strip_scaffold(answer, question, LABELS)
    assert out == cleaned
    assert bool(echoes) == (out != answer)


def test_markers_inside_an_echoed_question_never_survive():
    out, echoes = strip_scaffold(f"Question: How do I make a package [7] keep its current version when I upgrade "
                                 f"[8]? Hold it [1].", Q, LABELS)
    assert out == "Hold it [1]." and [e.kind for e in echoes] == ["question"]


# --- property tests ---------------------------------------------------------------------------------

VOCAB = ["pin", "the", "package", "hold", "version", "file", "keep", "apt", "mark", "upgrade", "current"]
sentence_st = st.tuples(st.lists(st.sampled_from(VOCAB), min_size=2, max_size=8),
                        st.sampled_from(["", " [1]", " [2][3]"])).map(lambda t: " ".join(t[0]).capitalize() + t[1] + ".")
echo_st = st.sampled_from([
    f"Question: {Q[:-1]} [9]?", "Answer briefly:", "Answer:", f"({LABEL})", '<passage n="9" source="a">',
    "</passage>", GENERIC_INSTRUCTION.replace("[1]", "[9]"), f"{Q[:-1]} [9]?", "Passages:",
])
_TOKENS = re.compile(r"\w+|\[\d+\]")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(sentence_st, st.lists(echo_st, max_size=2), st.sampled_from([" ", "\n", "\n\n"])),
                min_size=1, max_size=8))
def test_echoes_anywhere_between_sentences_leave_exactly_the_answer(parts):
    clean = " ".join(s for s, _, _ in parts)
    noisy = "".join(" ".join(echoes + [s]) + sep for s, echoes, sep in parts)
    out, _ = strip_scaffold(noisy, Q, LABELS)
    assert _TOKENS.findall(out) == _TOKENS.findall(clean)
    assert "[9]" not in out  # every marker that came with an echo left with it
    assert strip_scaffold(out, Q, LABELS)[0] == out  # nothing left to strip


@settings(max_examples=300, deadline=None)
@given(st.lists(sentence_st, min_size=1, max_size=10))
def test_an_answer_without_scaffolding_is_unchanged(sentences):
    answer = " ".join(sentences)
    assert strip_scaffold(answer, Q, LABELS) == (answer, [])
