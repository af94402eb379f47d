"""Metrics (Prometheus) and structured JSON logs with a request id carried from the API to the worker.

The API process exports request latency per route, answers, modes and tokens, and (read from the
database at scrape time, so they count every worker) queue depth and documents by status. A worker
process exports its ingestion counters and stage durations on its own port
(``RAGSVC_WORKER_METRICS_PORT``): in compose each worker container is scraped on its own.
"""

from __future__ import annotations

import contextvars
import json
import logging
import time
import uuid

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

REGISTRY = CollectorRegistry(auto_describe=True)
HTTP_SECONDS = Histogram("ragsvc_http_request_duration_seconds", "HTTP request latency by route.",
                         ["method", "route", "status"], registry=REGISTRY,
                         buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120))
ANSWERS = Counter("ragsvc_answers_total", "Answers by mode and whether the model was asked.",
                  ["mode", "answered"], registry=REGISTRY)
MODE_CHOSEN = Counter("ragsvc_mode_chosen_total", "Reasoning mode chosen (auto routing or asked).", ["mode", "how"],
                      registry=REGISTRY)
TOKENS = Counter("ragsvc_tokens_generated_total", "Completion tokens generated, by mode.", ["mode"], registry=REGISTRY)
INGESTED = Counter("ragsvc_ingest_documents_total", "Documents ingested by this worker, by outcome.", ["outcome"])
STAGE_SECONDS = Histogram("ragsvc_ingest_stage_seconds", "Ingestion stage durations.", ["stage"],
                          buckets=(0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900))


class DatabaseCollector:
    """Queue depth and documents by status, read from the database when Prometheus scrapes."""

    def __init__(self, sessions) -> None:  # noqa: ANN001
        self.sessions = sessions

    def collect(self):
        from sqlalchemy import func, select

        from ragsvc.db import Document, Job

        jobs = GaugeMetricFamily("ragsvc_jobs", "Ingestion jobs by status (queue depth: status=queued).",
                                 labels=["status"])
        docs = GaugeMetricFamily("ragsvc_documents", "Documents by status.", labels=["status"])
        try:
            with self.sessions() as s:
                for status, n in s.execute(select(Job.status, func.count()).group_by(Job.status)):
                    jobs.add_metric([status], n)
                for status, n in s.execute(select(Document.status, func.count()).group_by(Document.status)):
                    docs.add_metric([status], n)
        except Exception:  # noqa: BLE001 - a scrape must not fail because the database is down
            logging.getLogger(__name__).warning("metrics: database unreachable", exc_info=True)
        yield jobs
        yield docs


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
                 "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        rid = getattr(record, "request_id", None) or request_id.get()
        if rid:
            entry["request_id"] = rid
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class HttpClientInfoToDebug(logging.Filter):
    """httpx logs every request it sends at INFO. `ragsvc ingest` polls each pending document every
    second, and a remote vLLM backend tokenizes every prompt: at INFO those lines buried the progress
    bar and the service's own logs. On the handler they become DEBUG and show only when DEBUG is asked for."""

    PREFIXES = ("httpx", "httpcore")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO and record.name.split(".", 1)[0] in self.PREFIXES:
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


def setup_logging(level: str, json_logs: bool) -> None:
    handler = logging.StreamHandler()
    handler.addFilter(HttpClientInfoToDebug())
    handler.setFormatter(JsonFormatter() if json_logs else logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def request_id_middleware(app):  # noqa: ANN001, ANN201 - an ASGI middleware factory
    """Give every HTTP request an id (``X-Request-ID`` if the client sent one), log with it, return it,
    and time the request per route template."""

    async def middleware(scope, receive, send):  # noqa: ANN001
        if scope["type"] != "http":
            return await app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        rid = headers.get(b"x-request-id", b"").decode("latin-1")[:64] or uuid.uuid4().hex
        token = request_id.set(rid)
        status = {"code": 500}
        start = time.perf_counter()

        async def send_with_id(message):  # noqa: ANN001
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode("latin-1"))]
            await send(message)

        try:
            await app(scope, receive, send_with_id)
        finally:
            route = scope.get("path_template") or _route_of(scope)
            HTTP_SECONDS.labels(scope.get("method", ""), route, str(status["code"])).observe(time.perf_counter() - start)
            request_id.reset(token)

    return middleware


def _route_of(scope) -> str:  # noqa: ANN001
    handler = scope.get("route_handler")
    paths = getattr(handler, "paths", None)
    return sorted(paths)[0] if paths else "unmatched"
