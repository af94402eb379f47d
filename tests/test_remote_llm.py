"""The answer path against a real remote vLLM server (``RAGSVC_LLM_URL``), as docker compose runs it."""

from __future__ import annotations

import json

import pytest

from tests.docmaker import FACT_PAGES, make_pdf


@pytest.fixture(scope="module")
def facts(remote_service):
    resp = remote_service.upload([("harbour-facts.pdf", make_pdf(FACT_PAGES), "application/pdf")])
    doc = remote_service.wait_done(resp.json()["documents"][0]["id"])
    assert doc["status"] == "ready"
    return doc


def test_ready_reports_the_remote_model(remote_service):
    assert remote_service.client.get("/ready").json()["checks"]["engine"] == "ok"


def test_remote_answer_cites_page_2(remote_service, facts):
    body = remote_service.client.post("/v1/ask", json={"question": "What color is the Quintaro bridge?"}).json()
    assert body["model"] == "smollm2-135m-instruct" and body["answered"]
    assert body["usage"]["completion_tokens"] > 0 and body["usage"]["prompt_tokens"] > 50
    assert any(c["page"] == 2 and "orange" in c["text"] for c in body["citations"]), body


def test_remote_streaming(remote_service, facts):
    names, final = [], None
    with remote_service.client.stream("POST", "/v1/ask", json={"question": "How long is the Quintaro bridge?",
                                                                "stream": True, "mode": "on",
                                                                "include_reasoning": True}) as resp:
        name = None
        for line in resp.iter_lines():
            if line.startswith("event:"):
                name = line.split(":", 1)[1].strip()
                names.append(name)
            elif line.startswith("data:") and name == "final":
                final = json.loads(line[5:])
    assert names[0] == "retrieval" and names[-1] == "final" and "error" not in names
    assert final["mode"] == "on" and "<think>" not in final["answer"] and "reasoning" in final
