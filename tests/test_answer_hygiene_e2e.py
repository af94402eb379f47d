"""Answer hygiene on the real engine, over HTTP: a looping answer is cut where it starts repeating (and the
engine stops there), no answer echoes the prompt's scaffolding, and both APIs report the finish reason."""

from __future__ import annotations

import json
import re

import pytest

from ragsvc.citations import MARKER, split_sentences
from tests.docmaker import FACT_PAGES, make_pdf

# A document that repeats itself: a small model answering from it copies the passage, loop and all.
DIARY = "Jack's diary. " + "All work and no play makes Jack a dull boy. " * 40
LOOPING = "What does Jack's diary say about work and play?"
QUESTIONS = ["What color is the Quintaro bridge?", "How long is the Quintaro bridge?",
             "Where was the Zorblax reactor built?", "Who opened a restaurant in Bergen in 2004?"]
BUDGET = 200


@pytest.fixture(scope="module")
def facts(service):
    resp = service.upload([("harbour-facts.pdf", make_pdf(FACT_PAGES), "application/pdf")])
    assert resp.status_code == 202, resp.text
    doc = resp.json()["documents"][0]
    assert service.wait_done(doc["id"])["status"] == "ready"
    resp = service.upload([("diary.txt", DIARY.encode(), "text/plain")], collection="diary")
    assert resp.status_code == 202, resp.text
    assert service.wait_done(resp.json()["documents"][0]["id"])["status"] == "ready"
    return doc


def _words(text: str) -> tuple[str, ...]:
    return tuple(re.findall(r"[a-z0-9]+", MARKER.sub(" ", text.lower())))


def _repeated_sentences(answer: str) -> list[str]:
    seen, repeated = set(), []
    for line in answer.split("\n"):
        for s in split_sentences(line):
            w = _words(s)
            if len(w) >= 3 and w in seen:
                repeated.append(s)
            seen.add(w)
    return repeated


def _scaffolding(answer: str, question: str) -> list[str]:
    low = answer.lower()
    found = [x for x in ("question:", "answer briefly", "context:", "<passage", "</passage", "(harbour-facts.pdf")
             if x in low]
    if "".join(_words(question)) in "".join(_words(answer)):
        found.append("the question")
    return found


def _ask(service, question: str) -> dict:
    resp = service.client.post("/v1/ask", json={"question": question, "mode": "off", "max_tokens": BUDGET,
                                                "collection": "diary" if question == LOOPING else None})
    assert resp.status_code == 200, resp.text
    return resp.json()


@pytest.mark.parametrize("question", QUESTIONS + [LOOPING])
def test_answers_have_no_repeats_and_no_scaffolding(service, facts, question):
    body = _ask(service, question)
    assert body["answer"].strip(), body
    assert _repeated_sentences(body["answer"]) == [], body["answer"]
    assert _scaffolding(body["answer"], question) == [], body["answer"]
    assert body["finish_reason"] in ("stop", "length", "repetition")
    # Citations still resolve to markers of the (cleaned) answer.
    for c in body["citations"]:
        assert f"[{c['n']}]" in body["answer"]


def test_a_loop_is_cut_and_the_engine_stops_there(service, facts):
    body = _ask(service, LOOPING)
    assert body["finish_reason"] == "repetition", body["answer"]
    # The engine stopped at the repeat instead of spending the whole budget on copies.
    assert 0 < body["usage"]["completion_tokens"] < BUDGET
    assert body["answer"].lower().count("dull boy") == 1

    # Streaming: the deltas may hold the start of the repeat; the final event's answer is the cut one.
    events = []
    with service.client.stream("POST", "/v1/ask", json={"question": LOOPING, "mode": "off", "max_tokens": BUDGET,
                                                        "collection": "diary", "stream": True}) as resp:
        name = None
        for line in resp.iter_lines():
            if line.startswith("event:"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                events.append((name, json.loads(line.split(":", 1)[1])))
    final = events[-1][1]
    streamed = "".join(d["delta"] for n, d in events if n == "answer")
    assert final["finish_reason"] == "repetition" and final["answer"] == body["answer"]
    assert _words(streamed)[: len(_words(final["answer"]))] == _words(final["answer"])

    # The OpenAI-compatible endpoint reports the same finish reason, streamed or not.
    r = service.client.post("/v1/chat/completions", json={
        "model": "ragsvc/diary", "mode": "off", "max_tokens": BUDGET, "messages": [{"role": "user", "content": LOOPING}]})
    assert r.status_code == 200 and r.json()["choices"][0]["finish_reason"] == "repetition", r.text
    finish = None
    with service.client.stream("POST", "/v1/chat/completions", json={
            "model": "ragsvc/diary", "mode": "off", "max_tokens": BUDGET, "stream": True,
            "messages": [{"role": "user", "content": LOOPING}]}) as resp:
        for line in resp.iter_lines():
            data = line.split(":", 1)[1].strip() if line.startswith("data:") else ""
            if data and data != "[DONE]":
                finish = json.loads(data)["choices"][0]["finish_reason"] or finish
    assert finish == "repetition"
