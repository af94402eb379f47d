"""The whole path over HTTP: upload real files, wait for ingestion, ask, check the cited passages."""

from __future__ import annotations

import pytest

from tests.docmaker import FACT_PAGES, MARKDOWN_DOC, TEXT_DOC, make_docx, make_pdf


@pytest.fixture(scope="session")
def facts_pdf(service):
    resp = service.upload([("harbour-facts.pdf", make_pdf(FACT_PAGES), "application/pdf")])
    assert resp.status_code == 202, resp.text
    doc = resp.json()["documents"][0]
    assert doc["status"] == "queued" and doc["filename"] == "harbour-facts.pdf"
    done = service.wait_done(doc["id"])
    assert done["status"] == "ready", done
    return done


def test_health_and_ready(service):
    assert service.client.get("/health").json() == {"status": "ok"}
    ready = service.client.get("/ready").json()
    assert ready["status"] == "ready" and set(ready["checks"]) == {"database", "index_store", "engine"}


def test_pdf_ingested_page_by_page(service, facts_pdf):
    assert facts_pdf["pages"] == 3
    assert facts_pdf["chunks"] >= 3
    assert facts_pdf["kind"] == "pdf"
    assert facts_pdf["glued_word_ratio"] == 0.0
    assert facts_pdf["_seen"][-1] == "ready"
    listed = service.client.get("/v1/documents", params={"collection": "default"}).json()["documents"]
    assert facts_pdf["id"] in {d["id"] for d in listed}


def test_answer_cites_page_2(service, facts_pdf):
    resp = service.client.post("/v1/ask", json={"question": "What color is the Quintaro bridge?"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["mode"] == "off"
    assert set(body) >= {"answer", "mode", "citations", "passages", "usage", "timings"}
    assert body["answer"].strip()
    # Retrieval put the page-2 passage first, numbered [1].
    top = body["passages"][0]
    assert (top["document_id"], top["page"]) == (facts_pdf["id"], 2)
    assert "orange" in top["text"]
    # The answer cites a page-2 passage of that file that holds the fact.
    assert any(c["document_id"] == facts_pdf["id"] and c["page"] == 2 and "orange" in c["text"]
               for c in body["citations"]), body
    # Every citation is a marker in the answer and resolves to a passage that went into the prompt.
    numbers = {p["n"] for p in body["passages"]}
    for c in body["citations"]:
        assert c["n"] in numbers and f"[{c['n']}]" in body["answer"]
        assert c["filename"] == "harbour-facts.pdf"
    assert body["usage"]["prompt_tokens"] > 50 and body["usage"]["completion_tokens"] > 0
    assert body["timings"]["total_ms"] >= body["timings"]["generate_ms"] > 0


def test_reasoning_on_mode_runs(service, facts_pdf):
    resp = service.client.post("/v1/ask", json={"question": "How long is the Quintaro bridge?", "mode": "on",
                                                "top_k": 2, "include_reasoning": True})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["mode"] == "on" and len(body["passages"]) <= 2
    assert "<think>" not in body["answer"] and "reasoning" in body


def test_markdown_document_keeps_headings(service):
    resp = service.upload([("garden.md", MARKDOWN_DOC.encode(), "text/markdown")], collection="garden")
    assert resp.status_code == 202, resp.text
    doc = service.wait_done(resp.json()["documents"][0]["id"])
    assert doc["status"] == "ready" and doc["kind"] == "markdown" and doc["pages"] is None
    body = service.client.post("/v1/ask", json={"question": "When are the tomato beds watered?",
                                                "collection": "garden"}).json()
    top = body["passages"][0]
    assert "Tuesday" in top["text"] and top["heading_path"] == "Garden handbook > Watering"
    assert top["page"] is None
    assert any("Tuesday" in c["text"] for c in body["citations"]), body


def test_text_document(service):
    resp = service.upload([("notice.txt", TEXT_DOC.encode(), "text/plain")], collection="library")
    doc = service.wait_done(resp.json()["documents"][0]["id"])
    assert doc["status"] == "ready" and doc["kind"] == "text"
    body = service.client.post("/v1/ask", json={"question": "When does the reading room close on Fridays?",
                                                "collection": "library"}).json()
    assert "9 pm" in body["passages"][0]["text"]
    assert any("9 pm" in c["text"] for c in body["citations"]), body


def test_docx_document_with_table(service):
    resp = service.upload([("fleet.docx", make_docx(), "application/octet-stream")], collection="fleet")
    doc = service.wait_done(resp.json()["documents"][0]["id"])
    assert doc["status"] == "ready" and doc["kind"] == "docx", doc
    body = service.client.post("/v1/ask", json={"question": "How often is each engine of the Norrsken serviced?",
                                                "collection": "fleet"}).json()
    top = body["passages"][0]
    assert "500 running hours" in top["text"] and top["heading_path"] == "Fleet manual > Engines"


def test_duplicate_upload_creates_nothing(service, facts_pdf):
    resp = service.upload([("copy-of-facts.pdf", make_pdf(FACT_PAGES), "application/pdf")])
    assert resp.status_code == 202
    doc = resp.json()["documents"][0]
    assert doc["duplicate"] is True and doc["id"] == facts_pdf["id"]


def test_delete_removes_document_from_search(service):
    secret = "The vault combination of the Harwick museum is kept by the night curator."
    resp = service.upload([("vault.txt", secret.encode(), "text/plain")], collection="deletions")
    doc = service.wait_done(resp.json()["documents"][0]["id"])
    assert doc["status"] == "ready"
    ask = {"question": "Who keeps the vault combination of the Harwick museum?", "collection": "deletions"}
    before = service.client.post("/v1/ask", json=ask).json()
    assert before["passages"] and before["passages"][0]["document_id"] == doc["id"]
    assert service.client.delete(f"/v1/documents/{doc['id']}").status_code == 204
    assert service.client.get(f"/v1/documents/{doc['id']}").status_code == 404
    after = service.client.post("/v1/ask", json=ask).json()
    assert after["passages"] == [] and after["citations"] == []
    assert "do not contain" in after["answer"]
    assert after["usage"]["completion_tokens"] == 0  # no model call without passages


def test_collections_listed(service, facts_pdf):
    names = {c["name"] for c in service.client.get("/v1/collections").json()["collections"]}
    assert "default" in names
