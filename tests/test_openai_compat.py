"""The OpenAI-compatible endpoint, driven by the official ``openai`` Python client."""

from __future__ import annotations

import openai
import pytest

from tests.docmaker import FACT_PAGES, NEAR_TOPIC_UNANSWERED, make_pdf


@pytest.fixture(scope="module")
def oa(service):
    resp = service.upload([("harbour-facts.pdf", make_pdf(FACT_PAGES), "application/pdf")])
    assert service.wait_done(resp.json()["documents"][0]["id"])["status"] == "ready"
    return openai.OpenAI(base_url=service.url + "/v1", api_key="unused", max_retries=0, timeout=600)


def test_chat_completion_answers_with_citations(oa):
    r = oa.chat.completions.create(model="ragsvc", messages=[
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What color is the Quintaro bridge?"}])
    content = r.choices[0].message.content
    assert r.choices[0].finish_reason == "stop" and "Sources:" in content and "harbour-facts.pdf, page 2" in content
    extra = r.model_extra
    assert any(c["page"] == 2 and "orange" in c["text"] for c in extra["citations"])
    assert r.usage.completion_tokens > 0 and extra["ragsvc"]["mode"] == "off"


def test_chat_completion_streams(oa):
    stream = oa.chat.completions.create(model="ragsvc/default", stream=True, messages=[
        {"role": "user", "content": "How long is the Quintaro bridge?"}])
    parts, finish, citations = [], None, None
    for chunk in stream:
        choice = chunk.choices[0]
        parts.append(choice.delta.content or "")
        finish = choice.finish_reason or finish
        citations = (chunk.model_extra or {}).get("citations", citations)
    text = "".join(parts)
    assert finish == "stop" and "Sources:" in text and citations


def test_chat_completion_says_when_the_documents_do_not_cover_it(oa):
    r = oa.chat.completions.create(model="ragsvc", messages=[{"role": "user", "content": NEAR_TOPIC_UNANSWERED}])
    content = r.choices[0].message.content
    assert "do not cover" in content and "Closest passages" in content and "harbour-facts.pdf" in content
    assert "Sources:" not in content and r.model_extra["citations"] == []
    assert r.model_extra["ragsvc"]["answered"] is False and r.model_extra["ragsvc"]["related"]


def test_chat_completion_errors_are_api_errors(oa):
    with pytest.raises(openai.APIStatusError) as err:
        oa.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "hi"}])
    assert err.value.status_code == 422
    with pytest.raises(openai.NotFoundError):
        oa.chat.completions.create(model="ragsvc/no-such-collection", messages=[{"role": "user", "content": "hi"}])
