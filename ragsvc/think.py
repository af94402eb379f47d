"""Streaming-safe removal of ``<think>…</think>`` from generated text.

Nemotron's tags are not single tokens, so a tag can arrive split across deltas (``<thi`` + ``nk>``).
The parser holds back only the few characters that could still become a tag, routes text inside a
think block to ``reasoning`` and everything else to ``answer``, and copes with a missing close tag
(truncated reasoning: all of it is reasoning) and an empty block.
"""

from __future__ import annotations

from dataclasses import dataclass, field

OPEN, CLOSE = "<think>", "</think>"


@dataclass
class ThinkSplitter:
    answer: str = ""
    reasoning: str = ""
    in_think: bool = False
    _pending: str = field(default="", repr=False)
    # Until the first non-blank answer text, a leading <think> is expected; later ones are treated
    # the same way (a model may think twice), so no state beyond in_think is needed.

    def feed(self, delta: str) -> tuple[str, str]:
        """Consume a delta; return the (answer, reasoning) text it released."""
        text = self._pending + delta
        self._pending = ""
        out_answer, out_reasoning = [], []
        # ``pos`` walks the text and ``find`` remembers where each tag occurs next: slicing off each
        # consumed tag, or searching again for a tag that is not there, would rescan the rest every time,
        # quadratic on model output made of many tags ("<think></think>" * n, "</think>" * n).
        find = _Finder(text)
        pos = 0
        while pos < len(text):
            tag = CLOSE if self.in_think else OPEN
            at = find(tag, pos)
            if at >= 0:
                (out_reasoning if self.in_think else out_answer).append(text[pos:at])
                pos = at + len(tag)
                self.in_think = not self.in_think
                continue
            keep = _partial_suffix(text, tag, pos)
            if not self.in_think:
                # A stray close tag with no open one (the prefill opened the block): drop it.
                stray = find(CLOSE, pos)
                if stray >= 0:
                    out_answer.append(text[pos:stray])
                    pos = stray + len(CLOSE)
                    continue
                keep = max(keep, _partial_suffix(text, CLOSE, pos))
            emit, self._pending = text[pos: len(text) - keep], text[len(text) - keep:]
            (out_reasoning if self.in_think else out_answer).append(emit)
            break
        a, r = "".join(out_answer), "".join(out_reasoning)
        self.answer += a
        self.reasoning += r
        return a, r

    def close(self) -> tuple[str, str]:
        """End of stream: release held-back characters (an unfinished tag is just text)."""
        text, self._pending = self._pending, ""
        if self.in_think:
            self.reasoning += text
            return "", text
        self.answer += text
        return text, ""


class _Finder:
    """``text.find(tag, pos)`` for a ``pos`` that only grows: each tag's next occurrence is remembered
    (there is none between the position it was searched from and it), so the text is scanned once per tag."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.next: dict[str, int] = {}

    def __call__(self, tag: str, pos: int) -> int:
        at = self.next.get(tag)
        if at is None or 0 <= at < pos:
            at = self.next[tag] = self.text.find(tag, pos)
        return at


def _partial_suffix(text: str, tag: str, pos: int = 0) -> int:
    """Length of the longest suffix of ``text[pos:]`` that is a proper prefix of ``tag``."""
    for n in range(min(len(tag) - 1, len(text) - pos), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0


def split_reasoning(text: str) -> tuple[str, str]:
    """(answer, reasoning) of a whole text."""
    s = ThinkSplitter()
    s.feed(text)
    s.close()
    return s.answer.strip(), s.reasoning.strip()
