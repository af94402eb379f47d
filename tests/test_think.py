"""The streaming think-block parser: tags split anywhere, missing close tag, empty block."""

from __future__ import annotations

import itertools

import pytest

from ragsvc.think import ThinkSplitter, split_reasoning

CASES = [
    ("<think>\nweigh the passages\n</think>\nThe bridge is orange [1].", "The bridge is orange [1].", "weigh the passages"),
    ("<think>\n</think>\nJust the answer.", "Just the answer.", ""),
    ("No think block at all.", "No think block at all.", ""),
    ("<think>reasoning that was cut off by max_tokens", "", "reasoning that was cut off by max_tokens"),
    ("</think>\nAnswer after a prefilled open tag.", "Answer after a prefilled open tag.", ""),
    ("Compare a < b and <thin ice> here.", "Compare a < b and <thin ice> here.", ""),
    ("<think>a</think>Part one. <think>b</think>Part two.", "Part one. Part two.", "ab"),
]


@pytest.mark.parametrize("text, answer, reasoning", CASES)
def test_whole_text(text, answer, reasoning):
    assert split_reasoning(text) == (answer, reasoning)


@pytest.mark.parametrize("text, answer, reasoning", CASES)
def test_every_split_into_deltas_gives_the_same_result(text, answer, reasoning):
    # Cut the text at every pair of positions: tags get split across deltas in all possible ways.
    for i, j in itertools.combinations(range(1, len(text)), 2):
        s = ThinkSplitter()
        released_a, released_r = [], []
        for delta in (text[:i], text[i:j], text[j:]):
            a, r = s.feed(delta)
            released_a.append(a)
            released_r.append(r)
        a, r = s.close()
        released_a.append(a)
        released_r.append(r)
        assert "".join(released_a).strip() == answer, (i, j)
        assert "".join(released_r).strip() == reasoning, (i, j)
        assert "<think>" not in "".join(released_a) and "</think>" not in "".join(released_a)


def test_answer_text_is_released_without_waiting_for_the_end():
    s = ThinkSplitter()
    s.feed("<think>x</think>Hello")
    assert s.answer == "Hello"  # nothing held back: no tag prefix at the end
    a, _ = s.feed(" world <")
    assert a == " world "  # only the "<" that could start a tag waits
