"""Stop an answer that starts repeating itself, as it streams.

Small models under greedy decoding fall into loops: the same sentence again and again, or one phrase
("--remove-only --remove-only ...") until ``max_tokens`` runs out. The guard reads the answer stream
once, character by character, and reports the first repeat:

- a **sentence** seen before: the same words once case, whitespace, punctuation and citation markers
  (``[4]``, ``[5][4]``, ``[1, 2]``) are ignored, for sentences of at least ``min_sentence_words`` words;
- an **n-gram** seen before: the same ``ngram`` words in a row (a loop inside one sentence, or one that
  varies its sentence breaks). A "word" is a run of letters and digits, split every ``max_word_chars``
  characters, so that a run with no space at all ("1111…", "target.target.target…") is caught too.

Every sentence and n-gram is kept as a tuple of words in a set: each character costs O(1) and each
word O(``ngram``), so the whole stream is read in linear time, never rescanned.

Where to cut: at the start of the repeated sentence; for an n-gram, at the start of the sentence its
second occurrence lies in, or inside that sentence (after the last word before the second occurrence)
when the loop began in the same sentence. What comes before the cut is kept; the repeat and everything after it is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

NGRAM = 12  # words: long enough that an answer restating a fact in new words never matches by chance
MIN_SENTENCE_WORDS = 3  # "1." list numbers and "Yes." may recur; a sentence of 3+ words should not
MAX_WORD_CHARS = 16
_TERMINATORS = frozenset(".!?")
_CLOSERS = frozenset("\"')]’”»")  # may follow the full stop before the space: `He said "no." Next`
_MARKER_CHARS = frozenset("0123456789, ")
_MAX_MARKER = 24  # a "[" followed by more than this is text in brackets, not a citation marker


@dataclass
class LoopGuard:
    ngram: int = NGRAM
    min_sentence_words: int = MIN_SENTENCE_WORDS
    max_word_chars: int = MAX_WORD_CHARS
    cut: int | None = None  # offset in the text where the repeat starts, once one is found
    reason: str | None = None  # "sentence" or "ngram"
    _text: list[str] = field(default_factory=list, repr=False)
    _length: int = 0
    _word: list[str] = field(default_factory=list, repr=False)
    _word_start: int = -1
    _words: list[str] = field(default_factory=list, repr=False)
    _word_starts: list[int] = field(default_factory=list, repr=False)
    _word_ends: list[int] = field(default_factory=list, repr=False)
    _word_end: int = 0
    _word_sentence: list[int] = field(default_factory=list, repr=False)  # start of each word's sentence
    _sentence_first: int = 0  # index in _words of the current sentence's first word
    _sentence_start: int | None = None  # offset of the current sentence's first character
    _after_stop: bool = False  # a terminator (and maybe closers) was just read
    _bracket: list[tuple[int, str]] | None = field(default=None, repr=False)  # a "[" being read
    _sentences: set[tuple[str, ...]] = field(default_factory=set, repr=False)
    _ngrams: dict[tuple[str, ...], int] = field(default_factory=dict, repr=False)

    @property
    def stopped(self) -> bool:
        return self.cut is not None

    @property
    def text(self) -> str:
        """The text fed so far, up to the cut once a repeat was found (trailing whitespace removed)."""
        whole = "".join(self._text)
        return whole if self.cut is None else whole[: self.cut].rstrip()

    def feed(self, delta: str) -> str:
        """Read a delta; return the part of it that comes before any repeat (all of it while none)."""
        if self.cut is not None:
            return ""
        base = self._length
        self._text.append(delta)
        self._length += len(delta)
        for i, c in enumerate(delta):
            self._char(base + i, c)
            if self.cut is not None:
                return delta[: max(0, self.cut - base)]
        return delta

    def close(self) -> None:
        """End of stream: an unfinished last sentence counts as a sentence."""
        if self.cut is None:
            self._flush_bracket()
        if self.cut is None:
            self._end_word()
        if self.cut is None:
            self._end_sentence()

    # --- the character machine -----------------------------------------------------------------
    def _char(self, at: int, c: str) -> None:
        if self._bracket is not None:
            if c == "]":
                body = self._bracket[1:]
                if body and any(ch.isdigit() for _, ch in body):
                    self._bracket = None  # a citation marker: no words, no effect on sentences
                    return
                self._flush_bracket()
                self._plain(at, c)
                return
            if c in _MARKER_CHARS and len(self._bracket) <= _MAX_MARKER:
                self._bracket.append((at, c))
                return
            self._flush_bracket()
            if self.cut is None:
                self._char(at, c)
            return
        if c == "[":
            self._end_word()
            if self.cut is None:
                self._bracket = [(at, c)]
            return
        self._plain(at, c)

    def _flush_bracket(self) -> None:
        """A "[" that turned out not to open a marker: read its characters as ordinary text."""
        held, self._bracket = self._bracket, None
        for at, c in held or ():
            if self.cut is not None:
                return
            self._plain(at, c)

    def _plain(self, at: int, c: str) -> None:
        if c.isalnum():
            if self._sentence_start is None:
                self._sentence_start = at
            self._after_stop = False
            if not self._word:
                self._word_start = at
            self._word.append(c.lower())
            self._word_end = at + 1
            if len(self._word) >= self.max_word_chars:
                self._end_word()
            return
        self._end_word()
        if self.cut is not None:
            return
        if c in _TERMINATORS:
            self._after_stop = True
        elif c == "\n" or (c.isspace() and self._after_stop):
            self._end_sentence()
            self._after_stop = False
            return
        elif c in _CLOSERS and self._after_stop:
            pass
        elif not c.isspace():
            self._after_stop = False
        if self._sentence_start is None and not c.isspace():
            self._sentence_start = at

    def _end_word(self) -> None:
        if not self._word:
            return
        word, self._word = "".join(self._word), []
        self._words.append(word)
        self._word_starts.append(self._word_start)
        self._word_ends.append(self._word_end)
        start = self._sentence_start if self._sentence_start is not None else self._word_start
        self._word_sentence.append(start)
        n = self.ngram
        if len(self._words) < n:
            return
        key = tuple(self._words[-n:])
        first = self._ngrams.setdefault(key, len(self._words) - n)
        second = len(self._words) - n
        if first != second:
            sentence = self._word_sentence[second]
            # A loop that began in an earlier sentence: drop the sentence the repeat lies in. One that began in
            # this sentence: keep the sentence up to the last whole word before the repeat.
            self._stop(sentence if sentence > self._word_starts[first] else self._word_ends[second - 1], "ngram")

    def _end_sentence(self) -> None:
        words = tuple(self._words[self._sentence_first:])
        start, self._sentence_start = self._sentence_start, None
        self._sentence_first = len(self._words)
        if len(words) < self.min_sentence_words:
            return
        if words in self._sentences:
            self._stop(start if start is not None else self._word_starts[-len(words)], "sentence")
        self._sentences.add(words)

    def _stop(self, at: int, reason: str) -> None:
        if self.cut is None:
            self.cut, self.reason = at, reason


def drop_repeats(text: str, **kwargs) -> tuple[str, str | None]:
    """(text up to its first repeat, why it was cut or None) for a whole text."""
    guard = LoopGuard(**kwargs)
    guard.feed(text)
    guard.close()
    return guard.text, guard.reason
