"""The ask service: route, retrieve (hybrid, multi-hop in reasoning mode), pack into the context window,
generate on vLLM, strip the think block as it streams, then check and resolve citations.

One code path serves every interface: :meth:`AskService.events` yields the stream of events
(``retrieval``, ``reasoning``, ``answer`` deltas, ``final``); the JSON answer is its ``final`` event.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import aclosing
from dataclasses import dataclass, replace
from typing import AsyncIterator, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ragsvc import answerability
from ragsvc.citations import CitationChecker
from ragsvc.db import Collection
from ragsvc.embedder import Embedder
from ragsvc.errors import InvalidInput, NotFound
from ragsvc.generation import EngineSlot, Generator
from ragsvc.index_store import IndexStore
from ragsvc.keyword_index import KeywordStore
from ragsvc.loop_guard import LoopGuard
from ragsvc.multihop import follow_up_queries
from ragsvc.observability import ANSWERS, MODE_CHOSEN, TOKENS
from ragsvc.packing import Packed, pack
from ragsvc.prompts import ModePlan, build_messages, format_passages, mode_plan, profile_for
from ragsvc.retrieval import Passage, retrieve
from ragsvc.router import Route, route
from ragsvc.scaffold import strip_scaffold
from ragsvc.settings import Settings
from ragsvc.think import ThinkSplitter

NO_ANSWER = "The documents in this collection do not contain anything relevant to this question."
SCAFFOLD_MARGIN = 16  # tokens of slack between the exact budget and the model's limit


@dataclass
class AskRequest:
    question: str
    mode: Literal["auto", "off", "on"] = "auto"
    collection: str | None = None  # None: the API key's collection, else `default`
    top_k: int | None = None
    include_reasoning: bool = False
    document_ids: list[str] | None = None
    dry_run: bool = False
    max_tokens: int | None = None  # lowers the mode's output budget for this request
    seed: int | None = None  # fixes sampling in `on` mode: the same question gives the same answer
    include_retrieved: bool = False  # add `retrieved`: the ranked list before packing (for `ragsvc eval`)


@dataclass
class _Plan:
    """What goes to the engine: the packed passages and the rendered prompt with its exact size."""

    packed: Packed
    messages: list[dict]
    prefill: str
    prompt_tokens: int


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

    # --- validation and retrieval --------------------------------------------------------------
    def validate(self, req: AskRequest) -> None:
        if not req.question or not req.question.strip():
            raise InvalidInput("The question is empty; send a JSON body like {\"question\": \"...\"}.")
        if len(req.question) > self.settings.max_question_chars:
            raise InvalidInput(f"The question has {len(req.question)} characters; the most accepted is "
                               f"{self.settings.max_question_chars}. Ask something shorter.")
        if req.top_k is not None and not 1 <= req.top_k <= self.settings.max_top_k:
            raise InvalidInput(f"top_k must be between 1 and {self.settings.max_top_k}; got {req.top_k}.")
        if req.max_tokens is not None and not 1 <= req.max_tokens <= self.settings.max_output_tokens:
            raise InvalidInput(f"max_tokens must be between 1 and {self.settings.max_output_tokens}; "
                               f"got {req.max_tokens}.")
        if req.seed is not None and not 0 <= req.seed < 2**63:
            raise InvalidInput(f"seed must be a whole number from 0 to 2**63 - 1; got {req.seed}.")
        if req.document_ids is not None and len(req.document_ids) > 1000:
            raise InvalidInput(f"document_ids lists {len(req.document_ids)} documents; filter by at most 1000.")

    def _collection_id(self, session: Session, name: str | None) -> str:
        name = name or "default"
        coll = session.scalar(select(Collection).where(Collection.name == name))
        if coll is None:
            raise NotFound(f"There is no collection named {name!r}; upload a document to create it.")
        return coll.id

    def _retrieve(self, req: AskRequest, question: str, k: int, collection_id: str | None = None) -> list[Passage]:
        with self.sessions() as session:
            coll = collection_id or self._collection_id(session, req.collection)
            return retrieve(session, self.embedder, self.store, self.keywords, coll, question, k,
                            self.settings.relative_score_cut, req.document_ids)

    def _multi_hop(self, req: AskRequest, question: str, first: list[Passage], k: int) -> tuple[list[Passage], list[str]]:
        """Retrieve again for sub-questions and bridge entities; append what is new, best first."""
        queries = follow_up_queries(question, [p.text for p in first[:5]], self.settings.multi_hop_queries)
        seen = {p.chunk_id for p in first}
        merged = list(first)
        with self.sessions() as session:
            coll = self._collection_id(session, req.collection)
        for q in queries:
            for p in self._retrieve(req, q, max(3, k // 3), coll):
                if p.chunk_id not in seen:
                    seen.add(p.chunk_id)
                    merged.append(p)
        return merged, queries

    def _answerability(self, req: AskRequest, question: str, passages: list[Passage]) -> answerability.Verdict:
        known = None
        if self.keywords is not None and passages:
            with self.sessions() as session:
                known = self.keywords.present(session, self._collection_id(session, req.collection),
                                              sorted(answerability.question_terms(question)))
        return answerability.before_generation(question, [p.dense_score for p in passages],
                                               [p.text for p in passages], known,
                                               self.settings.answerability_threshold)

    # --- planning ------------------------------------------------------------------------------
    def _route(self, req: AskRequest, question: str, passages: list[Passage]) -> Route:
        if req.mode in ("on", "off"):
            return Route(req.mode, "asked for explicitly", 0.0)
        top = passages[:5]
        spread = len({p.document_id for p in top})
        dense = sorted((p.dense_score or 0.0 for p in top), reverse=True)
        margin = dense[0] - dense[1] if len(dense) > 1 else None
        return route(question, spread, margin)

    def _sampling(self, profile: str, mode: str, max_tokens: int | None, seed: int | None = None) -> ModePlan:
        plan = replace(mode_plan(profile, mode, self.settings.max_tokens_off, self.settings.max_tokens_on), seed=seed)
        if profile != "nemotron":  # Nemotron's model card fixes its sampling; other models may get penalties
            plan = replace(plan, repetition_penalty=self.settings.llm_repetition_penalty,
                           frequency_penalty=self.settings.llm_frequency_penalty)
        if max_tokens:
            plan = replace(plan, max_tokens=min(plan.max_tokens, max_tokens))
        return plan

    def _pack(self, generator: Generator, profile: str, mode: str, question: str, passages: list[Passage],
              top_k: int | None = None, max_tokens: int | None = None) -> _Plan:
        plan = self._sampling(profile, mode, max_tokens)
        max_len = getattr(generator, "max_model_len", 4096)
        reserve = min(plan.max_tokens, max_len // 2)  # small contexts: keep room for passages
        empty, prefill = build_messages(profile, mode, question, "")
        scaffold = generator.count_prompt(empty, prefill)
        room = max_len - reserve - scaffold - SCAFFOLD_MARGIN
        cap = self.settings.passage_tokens_on if mode == "on" else self.settings.passage_tokens_off
        budget = min(room, cap) if cap > 0 else room
        limit = self.settings.max_passages_on if mode == "on" else self.settings.max_passages_off
        if top_k:  # a top_k the request asked for caps what reaches the prompt
            limit = min(limit, top_k)
        packed = pack(passages, generator.count_tokens, max(budget, 0), limit)
        total = packed.dropped + len(packed.passages)
        while True:  # the exact count of the rendered prompt decides; drop the least relevant until it fits
            block = format_passages([(i, p.label, " ".join(p.text.split())) for i, p in enumerate(packed.passages, 1)])
            messages, prefill = build_messages(profile, mode, question, block)
            tokens = generator.count_prompt(messages, prefill)
            if tokens + reserve <= max_len or not packed.passages:
                break
            ranked = sorted(packed.passages, key=lambda p: -p.score)
            packed = pack(ranked[:-1], generator.count_tokens, budget, limit)
            packed.dropped = total - len(packed.passages)
        return _Plan(packed, messages, prefill, tokens)

    # --- the event stream ----------------------------------------------------------------------
    async def events(self, req: AskRequest) -> AsyncIterator[tuple[str, dict]]:
        """Yield ``(event, data)``: ``retrieval``, then ``reasoning``/``answer`` deltas, then ``final``."""
        self.validate(req)
        generator = self.engine.get()  # fail fast (503) before any work while the model loads
        question = req.question.strip()
        t0 = time.perf_counter()
        k_first = req.top_k or self.settings.top_k
        passages = await asyncio.to_thread(self._retrieve, req, question, k_first)
        # Routing matches patterns over the question: linear, but CPU work all the same, so off the loop.
        decision = await asyncio.to_thread(self._route, req, question, passages)
        queries: list[str] = []
        if decision.mode == "on":
            k = req.top_k or self.settings.top_k_on
            if k > k_first:
                passages = await asyncio.to_thread(self._retrieve, req, question, k)
            if self.settings.multi_hop_queries > 0:
                passages, queries = await asyncio.to_thread(self._multi_hop, req, question, passages, k)
        t_retrieved = time.perf_counter()
        # Packing merges and reorders passages; evaluation scores the ranking itself (recall@k, MRR).
        retrieved = {"retrieved": [passage_json(i, p) for i, p in enumerate(passages, 1)]} \
            if req.include_retrieved else {}
        best = max((p.dense_score or 0.0 for p in passages), default=0.0)
        # Near-topic questions the passages do not answer pass min_relevance: answerability.py decides.
        verdict = await asyncio.to_thread(self._answerability, req, question, passages)
        if not passages or best < self.settings.min_relevance or not verdict.answered:
            # Nothing that answers: say so without spending a model call.
            off_topic = not passages or best < self.settings.min_relevance
            result = self._final(NO_ANSWER if off_topic else answerability.NOT_COVERED_ANSWER, decision,
                                 generator.model_name, [], [], [], None,
                                 {"prompt_tokens": 0, "completion_tokens": 0, "passage_tokens": 0},
                                 {"retrieve_ms": _ms(t0, t_retrieved), "generate_ms": 0.0,
                                  "total_ms": _ms(t0, time.perf_counter())}, queries, answered=False)
            result |= _unanswered(answerability.NO_PASSAGES if off_topic else verdict.reason, passages, verdict)
            if not req.dry_run:
                self._count(result, "auto" if req.mode == "auto" else "asked")
            yield "final", result | retrieved
            return
        profile = profile_for(generator.model_name, self.settings.llm_prompt_profile)
        t_pack = time.perf_counter()
        plan = await asyncio.to_thread(self._pack, generator, profile, decision.mode, question, passages, req.top_k,
                                       req.max_tokens)
        packed = plan.packed
        shown = [passage_json(i, p) for i, p in enumerate(packed.passages, 1)]
        how = "auto" if req.mode == "auto" else "asked"
        yield "retrieval", {"mode": decision.mode, "mode_reason": decision.reason, "passages": shown,
                            "queries": queries}
        usage = {"prompt_tokens": plan.prompt_tokens, "completion_tokens": 0,
                 "passage_tokens": packed.passage_tokens, "passage_budget": packed.budget,
                 "passages_dropped": packed.dropped}
        if req.dry_run:
            yield "final", self._final("", decision, generator.model_name, [], shown, [], None, usage,
                                       {"retrieve_ms": _ms(t0, t_retrieved), "generate_ms": 0.0,
                                        "total_ms": _ms(t0, time.perf_counter())}, queries, answered=False) \
                | {"answerability": verdict.json()} | retrieved
            return
        sampling = self._sampling(profile, decision.mode, req.max_tokens, req.seed)
        splitter = ThinkSplitter()
        # The loop guard reads the answer as it streams; `answer` deltas already sent may hold the start
        # of a repeat or echoed scaffolding: the `final` event's answer is the authoritative one.
        guard = LoopGuard() if self.settings.answer_hygiene else None
        totals = None
        t_first = None
        t_engine = time.perf_counter()
        # aclosing: leaving the loop early (a repeat, a client gone) closes the stream now, which aborts
        # the engine request instead of letting it run on to max_tokens.
        async with aclosing(generator.stream(plan.messages, plan.prefill, sampling)) as stream:
            async for delta, totals in stream:
                answer_part, reasoning_part = splitter.feed(delta)
                if (answer_part or reasoning_part) and t_first is None:
                    t_first = time.perf_counter()
                if reasoning_part and req.include_reasoning:
                    yield "reasoning", {"delta": reasoning_part}
                if answer_part and guard:
                    answer_part = guard.feed(answer_part)
                if answer_part:
                    yield "answer", {"delta": answer_part}
                if guard and guard.stopped:
                    break
        tail_answer, tail_reasoning = splitter.close()
        if tail_reasoning and req.include_reasoning:
            yield "reasoning", {"delta": tail_reasoning}
        if tail_answer and guard:
            tail_answer = guard.feed(tail_answer)
        if tail_answer:
            yield "answer", {"delta": tail_answer}
        t_generated = time.perf_counter()
        raw = splitter.answer.strip()
        if guard:
            guard.close()
            raw, _ = await asyncio.to_thread(strip_scaffold, guard.text.strip(), question,
                                             [p.label for p in packed.passages])
        # Reasoning never reaches citation parsing: only the answer text is checked.
        answer, sentences, dropped = await asyncio.to_thread(
            self.checker.check, raw, [p.text for p in packed.passages])
        citations = self._citations(sentences, packed.passages)
        usage["completion_tokens"] = totals.completion_tokens if totals else 0
        usage["prompt_tokens"] = totals.prompt_tokens if totals else plan.prompt_tokens
        result = self._final(
            answer, decision, generator.model_name, citations, shown, dropped,
            "repetition" if guard and guard.stopped else totals.finish_reason if totals else None, usage,
            {"retrieve_ms": _ms(t0, t_retrieved), "pack_ms": _ms(t_pack, t_engine),
             "engine_ms": _ms(t_engine, t_generated), "generate_ms": _ms(t_retrieved, t_generated),
             "first_token_ms": _ms(t0, t_first) if t_first else None, "total_ms": _ms(t0, time.perf_counter())},
            queries,
        )
        result["sentences"] = [
            {"text": s.text, "citations": [{"n": c.n, "support": round(c.support, 4), "supported": c.supported,
                                            "inferred": c.inferred} for c in s.citations]}
            for s in sentences]
        result["unsupported_sentences"] = [s.text for s in sentences
                                           if s.is_claim and not any(c.supported for c in s.citations)]
        verdict = answerability.after_generation(verdict, sentences)
        result["answerability"] = verdict.json()
        if not verdict.answered:  # what the model wrote stays readable, but is not given as the answer
            result |= {"answer": answerability.NOT_COVERED_ANSWER, "model_answer": answer, "citations": [],
                       "sentences": [], "unsupported_sentences": []}
            result |= _unanswered(verdict.reason, packed.passages, verdict)
        if req.include_reasoning:
            result["reasoning"] = splitter.reasoning.strip()
        self._count(result, how)
        yield "final", result | retrieved

    @staticmethod
    def _count(result: dict, how: str) -> None:
        ANSWERS.labels(result["mode"], str(result["answered"]).lower()).inc()
        MODE_CHOSEN.labels(result["mode"], how).inc()
        TOKENS.labels(result["mode"]).inc(result["usage"].get("completion_tokens", 0))

    async def ask(self, req: AskRequest) -> dict:
        result: dict = {}
        async for event, data in self.events(req):
            if event == "final":
                result = data
        return result

    @staticmethod
    def _citations(sentences, passages: list[Passage]) -> list[dict]:
        cited: dict[int, dict] = {}
        for sentence in sentences:
            for c in sentence.citations:
                entry = cited.setdefault(c.n, passage_json(c.n, passages[c.n - 1]) | {
                    "support": round(c.support, 4), "supported": c.supported, "inferred": c.inferred})
                entry["support"] = max(entry["support"], round(c.support, 4))
                entry["supported"] = entry["supported"] or c.supported
                entry["inferred"] = entry["inferred"] and c.inferred
        return [cited[n] for n in sorted(cited)]

    @staticmethod
    def _final(answer: str, decision: Route, model: str, citations: list, passages: list, dropped: list,
               finish_reason: str | None, usage: dict, timings: dict, queries: list[str],
               answered: bool = True) -> dict:
        # Key order is what a person reads first: the answer and its sources, the long passages last.
        return {"answer": answer, "mode": decision.mode, "mode_reason": decision.reason, "answered": answered,
                "unanswered_reason": None, "citations": citations, "related": [], "dropped_markers": dropped,
                "usage": usage, "timings": timings,
                "model": model, "finish_reason": finish_reason, "queries": queries, "passages": passages}


def _unanswered(reason: str | None, passages: list[Passage], verdict: answerability.Verdict) -> dict:
    """The fields of a non-answer: why, and the closest passages (best first) for the reader to judge."""
    closest = sorted(passages, key=lambda p: -(p.dense_score or 0.0))[:answerability.RELATED_COUNT]
    return {"answered": False, "unanswered_reason": reason, "answerability": verdict.json(),
            "related": [passage_json(i, p) for i, p in enumerate(closest, 1)]}


def _ms(a: float, b: float) -> float:
    return round((b - a) * 1000, 1)
