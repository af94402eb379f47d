"""Packing, routing and citation checking, with the real tokenizer, chat template and embedder."""

from __future__ import annotations

import pytest

from ragsvc.ask import AskService
from ragsvc.citations import CitationChecker
from ragsvc.generation import VllmGenerator
from ragsvc.local_models import ensure_smollm2
from ragsvc.packing import edges_first, merge_adjacent
from ragsvc.retrieval import Passage
from ragsvc.router import route
from ragsvc.settings import Settings


def tokenizer_only(max_model_len: int) -> VllmGenerator:
    """The real generator class with the real tokenizer and chat template, but no engine (counting only)."""
    from transformers import AutoTokenizer

    settings = Settings()
    path = ensure_smollm2(settings.cache_dir)
    return VllmGenerator(None, AutoTokenizer.from_pretrained(str(path)), "smollm2-135m-instruct", max_model_len)


def passage(i: int, text: str, doc: str = "d1", start: int | None = None, score: float | None = None) -> Passage:
    start = i * 1000 if start is None else start
    return Passage(i, doc, f"{doc}.pdf", 1 + i, 1 + i, "", start, start + len(text), text,
                   score if score is not None else 1.0 / (i + 1), 0.5, None)


@pytest.mark.parametrize("max_len", [600, 1200, 4096])
def test_packing_never_exceeds_the_context_window(max_len):
    gen = tokenizer_only(max_len)
    svc = AskService.__new__(AskService)
    svc.settings = Settings(max_tokens_off=200, passage_tokens_off=0, max_passages_off=1000)
    many = [passage(i, f"Passage number {i} says that the harbour crane {i} lifts {i * 3} tonnes. " * 4)
            for i in range(200)]
    plan = svc._pack(gen, "generic", "off", "How much does crane 7 lift?", many)
    reserve = min(200, max_len // 2)
    assert plan.prompt_tokens + reserve <= max_len
    assert plan.prompt_tokens == gen.count_prompt(plan.messages, plan.prefill)  # exact, with the template
    assert 0 < len(plan.packed.passages) < 200 and plan.packed.dropped > 0
    # The best passage is first, the second best last.
    assert plan.packed.passages[0].chunk_id == 0 and plan.packed.passages[-1].chunk_id == 1


def test_nemotron_profile_has_exactly_the_switch_as_system_prompt():
    from ragsvc.prompts import build_messages

    for mode, switch, prefill in (("on", "detailed thinking on", ""), ("off", "detailed thinking off", "<think>\n</think>\n")):
        messages, pre = build_messages("nemotron", mode, "Q?", "[1] (a.pdf)\ntext")
        assert messages[0] == {"role": "system", "content": switch}
        assert "Q?" in messages[1]["content"] and "[1]" in messages[1]["content"] and pre == prefill


def test_adjacent_chunks_merge_and_duplicates_drop():
    a = passage(0, "First half of the section.", start=0)
    b = passage(1, "Second half of the section.", start=a.char_end + 2)
    b.page = a.page
    dup = passage(2, "First half of the section.", doc="d2")
    other = passage(3, "Another document entirely.", doc="d3")
    merged = merge_adjacent([a, b, dup, other])
    assert len(merged) == 2
    assert merged[0].text == "First half of the section.\nSecond half of the section."
    assert (merged[0].char_start, merged[0].char_end) == (a.char_start, b.char_end)


def test_edges_first_layout():
    assert [p.chunk_id for p in edges_first([passage(i, "x") for i in range(6)])] == [0, 2, 4, 5, 3, 1]


@pytest.mark.parametrize("question, mode", [
    ("What color is the Quintaro bridge?", "off"),
    ("Which file under /proc is an image of the system's memory?", "off"),
    ("What are the five largest cities in Norway and who are their mayors?", "on"),
    ("Which is older, the Eiffel Tower or the Statue of Liberty?", "on"),
    ("What is the total budget of the three projects?", "on"),
])
def test_router(question, mode):
    decision = route(question)
    assert decision.mode == mode and decision.reason


def test_retrieval_signals_move_the_router():
    q = "What does each team do?"  # a weak multi-hop signal on its own
    assert route(q, doc_spread=1, top_margin=0.3).mode == "off"
    assert route(q, doc_spread=4, top_margin=0.01).mode == "on"


def test_citations_checked_claim_by_claim(embedder):
    passages = ["The Quintaro bridge is painted bright orange.", "The Zorblax reactor was built in Oslo in 1987."]
    checker = CitationChecker(embedder, 0.45)
    answer, sentences, dropped = checker.check(
        "The Quintaro bridge is painted bright orange [2][7]. The reactor was built in Oslo in 1987. "
        "Penguins enjoy jazz concerts on Tuesdays.", passages)
    assert dropped == [7]
    first, second, third = sentences
    # [2] does not support the bridge sentence: kept, flagged, and the supporting passage added.
    assert [(c.n, c.supported, c.inferred) for c in first.citations] == [(2, False, False), (1, True, True)]
    assert [(c.n, c.inferred) for c in second.citations] == [(2, True)]
    assert third.citations == [] and third.is_claim
    assert "[2][1]." in answer and "[7]" not in answer


def test_engine_slot_hands_a_dead_in_process_engine_to_the_reloader():
    """Unit test of the slot around the engine (the engine itself is a stand-in here)."""
    from ragsvc.generation import EngineDown, EngineSlot, VllmGenerator

    class Dead(VllmGenerator):
        def __init__(self) -> None:  # no engine behind it
            self.model_name = "stand-in"

        def health(self) -> str | None:
            return "The vLLM engine stopped (engine core died)"

    slot, handed = EngineSlot(), []
    slot.on_dead = lambda gen, reason: handed.append((gen, reason))
    dead = Dead()
    slot.generator = dead
    with pytest.raises(EngineDown) as first:
        slot.get()
    assert first.value.status_code == 503 and "restarting" in first.value.detail
    assert handed == [(dead, "The vLLM engine stopped (engine core died)")]
    with pytest.raises(EngineDown):  # while it reloads: 503 again, and no second reload
        slot.get()
    assert len(handed) == 1
