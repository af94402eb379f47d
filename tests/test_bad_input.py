"""Bad input gets a problem+json body with a sentence a person can act on, and loses nothing."""

from __future__ import annotations

import pytest

from tests.docmaker import make_image_only_pdf, make_pdf

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


def assert_problem(resp, status: int, *words: str) -> dict:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    body = resp.json()
    assert body["status"] == status and body["title"] and body["detail"].endswith((".", ")"))
    for w in words:
        assert w.lower() in body["detail"].lower(), body
    return body


def test_unsupported_file_type_is_415(service):
    resp = service.upload([("photo.png", PNG, "image/png")])
    assert_problem(resp, 415, "PNG", "PDF")


def test_binary_named_as_text_is_415(service):
    # The content decides, not the name.
    resp = service.upload([("notes.txt", b"PK\x03\x04" + b"\x00" * 100, "text/plain")])
    assert_problem(resp, 415, "ZIP")


def test_empty_file_is_422(service):
    assert_problem(service.upload([("empty.pdf", b"", "application/pdf")]), 422, "empty")


def test_request_without_file(service):
    resp = service.client.post("/v1/documents", data={"collection": "default"},
                               files={"other": ("x.txt", b"hello", "text/plain")})
    assert_problem(resp, 422, "no file", "files")


def test_one_bad_file_stores_nothing(service):
    before = len(service.client.get("/v1/documents").json()["documents"])
    resp = service.upload([("good.txt", b"A perfectly good file about otters.", "text/plain"),
                           ("bad.png", PNG, "image/png")])
    assert_problem(resp, 415)
    assert len(service.client.get("/v1/documents").json()["documents"]) == before


@pytest.mark.parametrize("body, words", [
    ({}, ["question"]),
    ({"question": ""}, ["empty"]),
    ({"question": "   "}, ["empty"]),
    ({"question": "hi", "mode": "sideways"}, ["mode"]),
    ({"question": "hi", "top_k": 0}, ["top_k"]),
    ({"question": "hi", "top_k": 10_000}, ["top_k"]),
    ({"question": "why " * 1001}, ["4004 characters", "4000"]),
    ({"question": "hi", "max_tokens": 0}, ["max_tokens"]),
    ({"question": "hi", "max_tokens": 100_000}, ["max_tokens", "8192"]),
    ({"question": "hi", "document_ids": ["x"] * 1001}, ["document_ids", "1000"]),
])
def test_bad_questions_are_422(service, body, words):
    assert_problem(service.client.post("/v1/ask", json=body), 422, *words)


def test_malformed_json_is_a_problem(service):
    resp = service.client.post("/v1/ask", content=b"{not json", headers={"content-type": "application/json"})
    assert resp.status_code in (400, 422)
    assert resp.headers["content-type"].startswith("application/problem+json")


def test_unknown_document_is_404(service):
    assert_problem(service.client.get("/v1/documents/doesnotexist"), 404, "doesnotexist")
    assert_problem(service.client.delete("/v1/documents/doesnotexist"), 404)


def test_unknown_collection_on_ask_is_404(service):
    assert_problem(service.client.post("/v1/ask", json={"question": "hi", "collection": "nope"}), 404, "nope")


def test_unknown_route_is_problem(service):
    assert_problem(service.client.get("/v1/nothing-here"), 404)


@pytest.mark.parametrize("name, data, reason", [
    ("broken.pdf", b"%PDF-1.4\n this is not really a pdf \n%%EOF", "not a readable pdf"),
    ("truncated.pdf", make_pdf(["Some text on a page."])[:300], "pdf"),
    ("locked.pdf", make_pdf(["Secret page."], password="hunter2"), "password"),
    ("scan.pdf", make_image_only_pdf(), "no text layer"),
])
def test_bad_pdf_fails_with_reason_and_others_survive(service, name, data, reason):
    good = service.upload([("survivor.txt", f"The survivor of {name} is a heron.".encode(), "text/plain")],
                          collection="bad-pdfs")
    bad = service.upload([(name, data, "application/pdf")], collection="bad-pdfs")
    assert bad.status_code == 202, bad.text
    bad_doc = service.wait_done(bad.json()["documents"][0]["id"])
    assert bad_doc["status"] == "failed"
    assert reason in bad_doc["error"].lower(), bad_doc["error"]
    good_doc = service.wait_done(good.json()["documents"][0]["id"])
    assert good_doc["status"] == "ready"
    assert service.client.get("/health").status_code == 200


def test_limits_hold_on_the_openai_route_too(service):
    r = service.client.post("/v1/chat/completions", json={
        "model": "ragsvc", "max_tokens": 100_000, "messages": [{"role": "user", "content": "hi"}]})
    assert_problem(r, 422, "max_tokens")
    r = service.client.post("/v1/chat/completions", json={
        "model": "ragsvc", "messages": [{"role": "user", "content": "why " * 1001}]})
    assert_problem(r, 422, "characters")


def test_max_tokens_caps_the_answer(service):
    r = service.upload([("cap.txt", b"The Quintaro ferry leaves pier 6 at 23:40 every night.\n")], collection="cap")
    assert service.wait_done(r.json()["documents"][0]["id"])["status"] == "ready"
    body = service.client.post("/v1/ask", json={"question": "When does the Quintaro ferry leave?", "collection": "cap",
                                                "mode": "off", "max_tokens": 3}).json()
    assert body["usage"]["completion_tokens"] <= 3 and body["finish_reason"] == "length", body
