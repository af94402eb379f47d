"""The streaming loop guard: what counts as a repeat, where the answer is cut, and that deltas never matter."""

from __future__ import annotations

import itertools
import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ragsvc.loop_guard import NGRAM, LoopGuard, drop_repeats

LOOP = ("This option is used to keep the current package version in the /etc/apt/preferences file [4]. "
        "This option is used to keep the current package version in the /etc/apt/preferences file [5][4]. ")

# (text, kept, reason)
CASES = [
    # The loop: the same sentence with other markers (its first 12 words already repeat).
    ("The source of the package is ready [1][2]. " + LOOP * 10,
     "The source of the package is ready [1][2]. This option is used to keep the current package version in the "
     "/etc/apt/preferences file [4].", "ngram"),
    # Case, spacing and marker forms do not make a sentence new.
    ("Pin the package with apt-mark hold [1].  PIN the package  with apt-mark hold [2, 3].",
     "Pin the package with apt-mark hold [1].", "sentence"),
    ("Pin the package [1]. More text here.\nPin the package", "Pin the package [1]. More text here.", "sentence"),
    # A loop inside one sentence: cut at its second turn, after the last whole word before it.
    ("Run dpkg-deb --remove-all" + " --remove-only" * 30, "Run dpkg-deb --remove-all --remove-only", "ngram"),
    ("Systemd reads the host name from systemd" + ".target" * 40, "Systemd reads the host name from systemd.target",
     "ngram"),
    # No spaces at all: long runs are split into words of 16 characters, so the n-gram check still sees them.
    ("1.1." + "1" * 400, "1.1." + "1" * 16, "ngram"),
    # An n-gram repeated in a later sentence: that sentence goes.
    ("Use apt-mark hold to keep the package at its current version when you upgrade the system [1]. Also, "
     "use apt-mark hold to keep the package at its current version when you upgrade the system again.",
     "Use apt-mark hold to keep the package at its current version when you upgrade the system [1].", "ngram"),
    # Lines are sentences too (lists, echoed labels).
    ("The answer is:\n\nThe answer is: [1]", "The answer is:", "sentence"),
    # Not repeats: short sentences, list numbers, a fact restated in other words, one long answer.
    ("Yes. Yes. It is.", "Yes. Yes. It is.", None),
    ("1. Install it.\n2. Configure it.\n1. Install it again.", "1. Install it.\n2. Configure it.\n1. Install it again.",
     None),
    ("The bridge is orange [1]. The colour of the bridge is orange [2].",
     "The bridge is orange [1]. The colour of the bridge is orange [2].", None),
    ("Brackets [like this one] are text. Brackets like this one are text.",
     "Brackets [like this one] are text.", "sentence"),
    ("", "", None),
]


@pytest.mark.parametrize("text, kept, reason", CASES)
def test_whole_text(text, kept, reason):
    assert drop_repeats(text) == (kept, reason)


@pytest.mark.parametrize("text, kept, reason", [c for c in CASES if len(c[0]) < 200])
def test_every_split_into_deltas_gives_the_same_result(text, kept, reason):
    for i, j in itertools.combinations(range(1, len(text)), 2):
        guard = LoopGuard()
        released = []
        for delta in (text[:i], text[i:j], text[j:]):
            released.append(guard.feed(delta))
        guard.close()
        assert (guard.text, guard.reason) == (kept, reason), (i, j)
        # Released text streams on until the repeat is recognised (the final answer is the kept text), and
        # nothing before the cut is ever held back.
        out = "".join(released)
        assert text.startswith(out) and out.startswith(kept), (i, j)
        if not guard.stopped:
            assert out == text


def test_stops_while_streaming_and_ignores_what_follows():
    guard = LoopGuard()
    sentence = "The daily job installs upgrades on its own [1]. "
    assert guard.feed(sentence) == sentence and not guard.stopped
    assert guard.feed(sentence[:20]) == sentence[:20] and not guard.stopped  # a repeat is not known yet
    released = guard.feed(sentence[20:])
    assert guard.stopped and guard.reason == "sentence" and released == ""
    assert guard.feed("anything else") == ""
    assert guard.text == sentence.strip()


def test_a_marker_split_across_deltas_is_still_a_marker():
    guard = LoopGuard()
    for delta in ["Keep it with apt-mark hold [", "1", "2", "]. Keep it with apt-mark hold [", "3]. "]:
        guard.feed(delta)
    assert guard.reason == "sentence" and guard.text == "Keep it with apt-mark hold [12]."


# --- property tests: a brute-force reference over random answers ---------------------------------------

_WORD = re.compile(r"[a-z0-9]+")
VOCAB = ["apt", "pin", "the", "package", "hold", "version", "file", "keep", "a", "b"]


def _reference_has_repeat(text: str) -> bool:
    """Quadratic and obvious: every sentence against every other, every n-gram against every other."""
    plain = re.sub(r"\[[\d, ]*\d[\d, ]*\]", " ", text.lower())
    sentences = [tuple(_WORD.findall(s)) for s in re.split(r"(?<=[.!?])\s+|\n", plain)]
    sentences = [s for s in sentences if len(s) >= 3]
    if len(set(sentences)) < len(sentences):
        return True
    words = [w for s in _WORD.findall(plain) for w in (s[i:i + 16] for i in range(0, len(s), 16))]
    grams = [tuple(words[i:i + NGRAM]) for i in range(len(words) - NGRAM + 1)]
    return len(set(grams)) < len(grams)


sentence_st = st.lists(st.sampled_from(VOCAB), min_size=1, max_size=6).map(lambda ws: " ".join(ws))
marker_st = st.sampled_from(["", " [1]", " [2][3]", "[4]", " [1, 2]"])
answer_st = st.lists(st.tuples(sentence_st, marker_st, st.sampled_from([". ", "! ", ".\n", "? "])),
                     max_size=12).map(lambda parts: "".join(s + m + end for s, m, end in parts))


@settings(max_examples=400, deadline=None)
@given(answer_st)
def test_stops_exactly_when_the_reference_finds_a_repeat(text):
    kept, reason = drop_repeats(text)
    assert (reason is not None) == _reference_has_repeat(text), (text, kept)
    assert text.startswith(kept)
    # What is kept has no repeat left in it.
    assert not _reference_has_repeat(kept)


@settings(max_examples=200, deadline=None)
@given(answer_st, st.randoms(use_true_random=False))
def test_case_spacing_and_markers_do_not_change_the_verdict(text, rnd):
    noisy = "".join(c.upper() if rnd.random() < 0.3 else c for c in text).replace(" ", "  ")
    noisy = re.sub(r"\[\d\]", lambda m: f"[{rnd.randint(1, 9)}]", noisy)
    assert (drop_repeats(text)[1] is None) == (drop_repeats(noisy)[1] is None)


def test_time_per_character_does_not_grow_with_the_answer():
    # A long answer with no repeat at all: every sentence and n-gram is new (numbers make them unique).
    rnd = random.Random(0)
    text = " ".join(f"Step {i} uses {rnd.choice(VOCAB)} number {i * 7}." for i in range(20000))
    guard = LoopGuard()
    for k in range(0, len(text), 7):
        guard.feed(text[k:k + 7])
    guard.close()
    assert not guard.stopped and guard.text == text
