"""The ask service: retrieve, prompt, generate on vLLM, then check and resolve citations."""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ragsvc.citations import CitationChecker
from ragsvc.db import Collection
from ragsvc.embedder import Embedder
from ragsvc.errors import InvalidInput, NotFound
from ragsvc.generation import EngineSlot
from ragsvc.index_store import IndexStore
from ragsvc.keyword_index import KeywordStore
from ragsvc.prompts import build_messages, format_passages, mode_plan, profile_for
from ragsvc.retrieval import Passage, retrieve
from ragsvc.settings import Settings

NO_ANSWER = "The documents in this collection do not contain anything relevant to this question."
_THINK = re.compile(r"<think>(.*?)(?:</think>|$)", re.S)


@dataclass
class AskRequest:
    question: str
    mode: Literal["off", "on"] = "off"
    collection: str = "default"
    top_k: int | None = None
    include_reasoning: bool = False


def split_reasoning(text: str) -> tuple[str, str]:
    """(answer, reasoning): remove ``<think>…</think>``, also when the close tag never came."""
    reasoning = "\n".join(m.group(1).strip() for m in _THINK.finditer(text))
    answer = _THINK.sub("", text).replace("</think>", "")
    return answer.strip(), reasoning


def passage_json(n: int, p: Passage) -> dict:
    return {
        "n": n, "document_id": p.document_id, "filename": p.filename, "page": p.page, "page_label": p.page_label,
        "heading_path": p.heading_path, "char_start": p.char_start, "char_end": p.char_end,
        "text": p.text, "score": round(p.score, 5),
        "dense_score": None if p.dense_score is None else round(p.dense_score, 4),
        "keyword_score": None if p.keyword_score is None else round(p.keyword_score, 4),
    }


class AskService:
    def __init__(self, settings: Settings, sessions: sessionmaker[Session], embedder: Embedder,
                 store: IndexStore, keywords: KeywordStore | None, engine: EngineSlot) -> None:
        self.settings = settings
        self.sessions = sessions
        self.embedder = embedder
        self.store = store
        self.keywords = keywords
        self.engine = engine
        self.checker = CitationChecker(embedder, settings.support_threshold)

    def validate(self, req: AskRequest) -> int:
        if not req.question or not req.question.strip():
            raise InvalidInput("The question is empty; send a JSON body like {\"question\": \"...\"}.")
        k = req.top_k if req.top_k is not None else self.settings.top_k
        if not 1 <= k <= self.settings.max_top_k:
            raise InvalidInput(f"top_k must be between 1 and {self.settings.max_top_k}; got {k}.")
        return k

    def _retrieve(self, req: AskRequest, k: int) -> list[Passage]:
        with self.sessions() as session:
            coll = session.scalar(select(Collection).where(Collection.name == req.collection))
            if coll is None:
                raise NotFound(f"There is no collection named {req.collection!r}; upload a document to create it.")
            return retrieve(session, self.embedder, self.store, self.keywords, coll.id, req.question.strip(),
                            k, self.settings.relative_score_cut)

    async def ask(self, req: AskRequest) -> dict:
        k = self.validate(req)
        generator = self.engine.get()  # fail fast (503) before any work while the model loads
        t0 = time.perf_counter()
        passages = await asyncio.to_thread(self._retrieve, req, k)
        t_retrieved = time.perf_counter()
        if not passages:
            # Nothing indexed that could answer: say so without spending a model call.
            return _response(NO_ANSWER, req.mode, generator.model_name, [], [], [], None,
                             {"prompt_tokens": 0, "completion_tokens": 0},
                             {"retrieve_ms": _ms(t0, t_retrieved), "generate_ms": 0.0,
                              "total_ms": _ms(t0, time.perf_counter())})
        profile = profile_for(generator.model_name, self.settings.llm_prompt_profile)
        # PDF line wraps carry no meaning; collapsed whitespace reads better to the model and costs fewer tokens.
        block = format_passages([(i, p.label, " ".join(p.text.split())) for i, p in enumerate(passages, 1)])
        messages, prefill = build_messages(profile, req.mode, req.question.strip(), block)
        plan = mode_plan(profile, req.mode, self.settings.max_tokens_off, self.settings.max_tokens_on)
        gen = await generator.complete(messages, prefill, plan)
        t_generated = time.perf_counter()
        answer, reasoning = split_reasoning(gen.text)
        answer, per_sentence, dropped = await asyncio.to_thread(
            self.checker.check, answer, [p.text for p in passages]
        )
        cited: dict[int, dict] = {}
        for cites in per_sentence:
            for c in cites:
                entry = cited.setdefault(c.n, passage_json(c.n, passages[c.n - 1]) | {
                    "support": round(c.support, 4), "inferred": c.inferred})
                entry["support"] = max(entry["support"], round(c.support, 4))
                entry["inferred"] = entry["inferred"] and c.inferred
        result = _response(
            answer, req.mode, generator.model_name, [cited[n] for n in sorted(cited)],
            [passage_json(i, p) for i, p in enumerate(passages, 1)], dropped, gen.finish_reason,
            {"prompt_tokens": gen.prompt_tokens, "completion_tokens": gen.completion_tokens},
            {"retrieve_ms": _ms(t0, t_retrieved), "generate_ms": _ms(t_retrieved, t_generated),
             "total_ms": _ms(t0, time.perf_counter())},
        )
        if req.include_reasoning:
            result["reasoning"] = reasoning
        return result


def _response(answer: str, mode: str, model: str, citations: list, passages: list, dropped: list,
              finish_reason: str | None, usage: dict, timings: dict) -> dict:
    # Key order is what a person reads first: the answer and its sources, the long passages last.
    return {"answer": answer, "mode": mode, "citations": citations, "dropped_markers": dropped,
            "usage": usage, "timings": timings, "model": model, "finish_reason": finish_reason,
            "passages": passages}


def _ms(a: float, b: float) -> float:
    return round((b - a) * 1000, 1)
