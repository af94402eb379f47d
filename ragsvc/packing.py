"""Packing passages into the model's context window, with exact token counts.

Budget = the engine's ``max_model_len`` − the mode's reserved output tokens − the prompt scaffolding
(system prompt, rules, question, chat template), all counted with the serving model's tokenizer.
Adjacent or overlapping chunks of one document are merged and duplicates dropped, then passages are
taken best first until the budget or the mode's passage limit is reached, and laid out with the most
relevant at the start and the end of the context (long-context models read the middle worst).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

from ragsvc.prompts import format_passages
from ragsvc.retrieval import Passage


@dataclass
class Packed:
    passages: list[Passage]
    passage_tokens: int
    budget: int
    dropped: int  # retrieved passages that did not fit


def merge_adjacent(passages: list[Passage]) -> list[Passage]:
    """Merge chunks of the same document and page whose spans touch or overlap; drop duplicate texts.

    The merged passage keeps the best score and the earliest position in the ranking.
    """
    out: list[Passage] = []
    seen_text: set[str] = set()
    for p in passages:
        key = " ".join(p.text.split())
        if key in seen_text:
            continue
        seen_text.add(key)
        for i, q in enumerate(out):
            if q.document_id == p.document_id and q.page == p.page and q.heading_path == p.heading_path \
                    and p.char_start <= q.char_end + 2 and q.char_start <= p.char_end + 2:
                out[i] = _join(q, p)
                break
        else:
            out.append(p)
    return out


def _join(a: Passage, b: Passage) -> Passage:
    first, second = (a, b) if a.char_start <= b.char_start else (b, a)
    overlap = max(0, first.char_end - second.char_start)
    text = first.text + ("\n" if overlap == 0 else "") + second.text[overlap:]
    return replace(a, text=text, char_start=first.char_start, char_end=max(a.char_end, b.char_end),
                   score=max(a.score, b.score),
                   dense_score=max(a.dense_score or 0.0, b.dense_score or 0.0) or None,
                   keyword_score=max(a.keyword_score or 0.0, b.keyword_score or 0.0) or None)


def edges_first(passages: list[Passage]) -> list[Passage]:
    """Best-first list → layout with ranks 1, 3, 5, … at the start and …, 4, 2 at the end."""
    return passages[0::2] + passages[1::2][::-1]


def pack(passages: list[Passage], count_tokens: Callable[[list[str]], list[int]], budget: int,
         max_passages: int) -> Packed:
    """Choose passages (best first) whose formatted tokens fit ``budget``; order them edges-first."""
    merged = merge_adjacent(passages)
    widest = len(merged)  # the widest passage number any of them can get
    # Counted as they will be formatted in the prompt (the exact rendered prompt is checked afterwards).
    costs = count_tokens([format_passages([(widest, p.label, " ".join(p.text.split()))]) + "\n\n"
                          for p in merged]) if merged else []
    chosen, used = [], 0
    for p, cost in zip(merged, costs):
        if len(chosen) >= max_passages or used + cost > budget:
            continue  # a smaller, less relevant passage may still fit
        chosen.append(p)
        used += cost
    return Packed(edges_first(chosen), used, budget, len(merged) - len(chosen))
