"""Structure-aware chunking sized in the embedding model's tokens.

Sentences are never cut (unless one alone exceeds the budget, then it is split at whitespace by
token offsets); chunks never cross a page or a heading change; each chunk is an exact slice of the
document's extracted text, so ``char_start:char_end`` points a citation at it. Every chunk's
embedding input is counted exactly and never exceeds the model's limit: nothing is truncated.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ingest.parsers import ParsedDocument
from ragsvc.embedder import Embedder

# A sentence ends at . ! ? (plus closing quotes/brackets) followed by whitespace, or at a blank line.
_SENT_BREAK = re.compile(r"(?<=[.!?])[\"'”’)\]]*\s+|\n\s*\n")
SPECIAL_TOKENS = 2  # [CLS] and [SEP] for BERT-style models


@dataclass
class Chunk:
    text: str
    heading_path: str
    page: int | None
    char_start: int
    char_end: int
    token_count: int = 0
    page_label: str | None = None

    def embedding_input(self) -> str:
        """What is embedded: the heading path gives a section's later chunks their context."""
        if self.heading_path and not self.text.lstrip("# ").startswith(self.heading_path.split(" > ")[-1]):
            return f"{self.heading_path}\n{self.text}"
        return self.text


@dataclass
class _Seg:
    start: int
    end: int
    page: int | None
    heading_path: str
    tokens: int = 0
    page_label: str | None = None


def _sentence_spans(text: str, offset: int) -> list[tuple[int, int]]:
    spans, pos = [], 0
    for m in _SENT_BREAK.finditer(text):
        if m.start() > pos:
            spans.append((pos, m.start()))
        pos = m.end()
    if pos < len(text):
        spans.append((pos, len(text)))
    out = []
    for s, e in spans:
        seg = text[s:e]
        lead = len(seg) - len(seg.lstrip())
        trail = len(seg.rstrip())
        if trail > lead:
            out.append((offset + s + lead, offset + s + trail))
    return out


def _line_spans(text: str, offset: int) -> list[tuple[int, int]]:
    spans, pos = [], 0
    for line in text.split("\n"):
        if line.strip():
            lead = len(line) - len(line.lstrip())
            spans.append((offset + pos + lead, offset + pos + len(line.rstrip())))
        pos += len(line) + 1
    return spans


class Chunker:
    def __init__(self, embedder: Embedder, chunk_tokens: int) -> None:
        self.embedder = embedder
        self.limit = embedder.max_tokens
        self.budget = max(16, min(chunk_tokens, self.limit))

    def _split_long(self, full: str, seg: _Seg) -> list[_Seg]:
        """Cut a sentence longer than the budget at whitespace, using the tokenizer's offsets."""
        text = full[seg.start:seg.end]
        tok = self.embedder._tokenizer  # type: ignore[attr-defined]
        offsets = tok(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)["offset_mapping"]
        room = self.budget - SPECIAL_TOKENS - 8  # headroom for a heading-path prefix
        pieces, i = [], 0
        start_char = 0
        while i < len(offsets):
            j = min(i + room, len(offsets))
            end_char = offsets[j - 1][1] if j == len(offsets) else offsets[j][0]
            if j < len(offsets):
                ws = text.rfind(" ", start_char + 1, end_char)
                nl = text.rfind("\n", start_char + 1, end_char)
                cut = max(ws, nl)
                if cut > start_char:
                    end_char = cut
                    while j > i + 1 and offsets[j - 1][0] >= end_char:
                        j -= 1
            else:
                end_char = len(text)
            piece = text[start_char:end_char]
            s = start_char + (len(piece) - len(piece.lstrip()))
            e = start_char + len(piece.rstrip())
            if e > s:
                pieces.append(_Seg(seg.start + s, seg.start + e, seg.page, seg.heading_path,
                                   page_label=seg.page_label))
            start_char = end_char
            i = j
        return pieces

    def _segments(self, doc: ParsedDocument) -> list[_Seg]:
        segs = []
        for b in doc.blocks:
            # A table is one segment, so it stays whole when it fits; a bigger one splits by rows.
            spans = _line_spans(b.text, b.start) if b.kind == "table" else _sentence_spans(b.text, b.start)
            if b.kind == "table" and self.embedder.count_tokens([b.text])[0] <= self.budget - 8:
                spans = [(b.start, b.start + len(b.text))]
            segs += [_Seg(s, e, b.page, b.heading_path, page_label=b.page_label) for s, e in spans]
        counts = self.embedder.count_tokens([doc.full_text[s.start:s.end] for s in segs])
        out: list[_Seg] = []
        for seg, n in zip(segs, counts):
            seg.tokens = n
            if n > self.budget - 8:
                parts = self._split_long(doc.full_text, seg)
                for p, c in zip(parts, self.embedder.count_tokens([doc.full_text[p.start:p.end] for p in parts])):
                    p.tokens = c
                out.extend(parts)
            else:
                out.append(seg)
        return out

    def chunk(self, doc: ParsedDocument) -> list[Chunk]:
        groups: list[list[_Seg]] = []
        used = 0
        for seg in self._segments(doc):
            cost = seg.tokens - SPECIAL_TOKENS
            prev = groups[-1][-1] if groups else None
            if (
                prev is None
                or prev.page != seg.page
                or prev.heading_path != seg.heading_path
                or used + cost > self.budget - SPECIAL_TOKENS
            ):
                groups.append([seg])
                used = cost
            else:
                groups[-1].append(seg)
                used += cost
        candidates = [self._candidate(doc, g) for g in groups]
        # One batched count for all chunks; only the rare chunk over the model limit is split again.
        counts = self.embedder.count_tokens([c.embedding_input() for c in candidates])
        chunks: list[Chunk] = []
        for g, c, n in zip(groups, candidates, counts):
            c.token_count = n
            chunks.extend([c] if n <= self.limit else self._fit(doc, g))
        return chunks

    def _candidate(self, doc: ParsedDocument, group: list[_Seg]) -> Chunk:
        first, last = group[0], group[-1]
        return Chunk(doc.full_text[first.start:last.end], first.heading_path, first.page, first.start, last.end,
                     page_label=first.page_label)

    def _fit(self, doc: ParsedDocument, group: list[_Seg]) -> list[Chunk]:
        """Make one chunk of the group, halving it until its exact token count fits the model."""
        chunk = self._candidate(doc, group)
        chunk.token_count = self.embedder.count_tokens([chunk.embedding_input()])[0]
        if chunk.token_count <= self.limit or len(group) == 1:
            if chunk.token_count > self.limit:  # a single over-long piece: should not happen, never silent
                raise ValueError(f"chunk of {chunk.token_count} tokens exceeds the model limit {self.limit}")
            return [chunk]
        mid = len(group) // 2
        return self._fit(doc, group[:mid]) + self._fit(doc, group[mid:])
