"""Operating the service: Prometheus metrics and JSON logs with a request id from API to worker."""

from __future__ import annotations

import json
import re

from tests.docmaker import FACT_PAGES, make_pdf


def test_metrics_in_prometheus_format(service):
    doc = service.upload([("ops.txt", b"The ops collection holds one note about puffins.", "text/plain")],
                         collection="ops").json()["documents"][0]
    assert service.wait_done(doc["id"])["status"] == "ready"
    off_topic = {"question": "Who painted The Night Watch?", "collection": "ops"}
    assert service.client.post("/v1/ask", json=off_topic).json()["answered"] is False  # counted, no model call
    resp = service.client.get("/metrics")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    text = resp.text
    assert re.search(r'ragsvc_http_request_duration_seconds_count\{method="POST",route="/v1/ask",status="200"\} \d', text)
    assert re.search(r'ragsvc_jobs\{status="(done|queued|failed|running)"\} \d', text)  # queue depth
    assert re.search(r'ragsvc_documents\{status="\w+"\} \d', text)
    assert re.search(r'ragsvc_answers_total\{answered="false",mode="\w+"\} [1-9]', text)
    assert "ragsvc_mode_chosen_total" in text and "ragsvc_tokens_generated_total" in text


def test_request_id_travels_from_api_to_worker(service):
    rid = "trace-" + service.db + "-42"
    resp = service.client.post("/v1/documents", headers={"X-Request-ID": rid}, data={"collection": "trace"},
                               files=[("files", ("trace.pdf", make_pdf(FACT_PAGES[:1] + ["Traced."]), "application/pdf"))])
    assert resp.status_code == 202 and resp.headers["x-request-id"] == rid
    assert service.wait_done(resp.json()["documents"][0]["id"])["status"] == "ready"
    records = []
    for line in service.log.read_text(errors="replace").splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue  # e.g. vLLM's own prints
    mine = [r for r in records if r.get("request_id") == rid]
    assert any(r["logger"] == "ingest.pipeline" and "ingested" in r["message"] for r in mine), mine
    # A request without the header gets a fresh id back.
    assert re.fullmatch(r"[0-9a-f]{32}", service.client.get("/health").headers["x-request-id"])
