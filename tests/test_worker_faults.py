"""The job queue under faults, for real: a worker process SIGKILLed mid-document, and jobs that keep failing.

Runs the real ``ragsvc worker`` processes against real SQLite and PostgreSQL databases.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from datetime import timedelta

from sqlalchemy import func, select, update

from ragsvc.db import Chunk, Document, Job
from ragsvc.db.migrate import upgrade
from ragsvc.db.models import utcnow
from ragsvc.db.session import make_engine, make_sessionmaker
from ragsvc.documents import DocumentService, Upload
from ragsvc.index_store import IndexStore
from ragsvc.settings import Settings
from tests.conftest import RAGSVC, base_env
from tests.docmaker import make_pdf

WORDS = ("harbour crane ferry lighthouse tide pier anchor rope gull kestrel heron otter salmon trout "
         "net buoy chart compass mast sail keel hull deck cabin galley").split()


def long_pdf(pages: int = 120) -> bytes:
    """Varied sentences, so chunking and embedding take long enough to kill the worker mid-way."""
    texts = []
    for p in range(pages):
        sents = [f"On page {p} the {WORDS[(p + i) % len(WORDS)]} number {i} is logged near the "
                 f"{WORDS[(p * 3 + i) % len(WORDS)]} at {i * 7 % 60} minutes past {p % 24}." for i in range(14)]
        texts.append(" ".join(sents))
    return make_pdf(texts)


def start_worker(tmp_path, url: str, lease_s: float, **extra: str) -> subprocess.Popen:
    env = base_env(tmp_path) | {"RAGSVC_DATABASE_URL": url, "RAGSVC_JOB_LEASE_S": str(lease_s),
                                "RAGSVC_WORKER_POLL_S": "0.2"} | extra
    return subprocess.Popen([RAGSVC, "worker"], env=env, cwd=tmp_path, start_new_session=True,
                            stdout=(tmp_path / "worker.log").open("a"), stderr=subprocess.STDOUT)


def settings_for(tmp_path, url: str) -> Settings:
    return Settings(data_dir=tmp_path / "data", index_dir=tmp_path / "indexes", database_url=url)


def wait_for(predicate, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_sigkill_mid_document_then_another_worker_finishes(tmp_path, db_url):
    upgrade(db_url)
    settings = settings_for(tmp_path, db_url)
    engine = make_engine(db_url)
    sessions = make_sessionmaker(engine)
    store = IndexStore(settings.index_dir, 384)
    doc = DocumentService(settings, sessions, store).create("faults", [Upload("long.pdf", long_pdf())])[0]

    def doc_row():
        with sessions() as s:
            return s.get(Document, doc["id"])

    first = start_worker(tmp_path, db_url, lease_s=3)
    try:
        wait_for(lambda: (d := doc_row()).stage == "embedding" and (d.progress or 0) > 0, 240, "embedding")
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    assert doc_row().status == "processing"  # killed before it could finish

    second = start_worker(tmp_path, db_url, lease_s=3)
    try:
        final = wait_for(lambda: (d := doc_row()).status in ("ready", "failed") and d, 300, "second worker")
    finally:
        second.terminate()
        second.wait(30)
    assert final.status == "ready", final.error
    with sessions() as s:
        n_rows = s.scalar(select(func.count()).select_from(Chunk).where(Chunk.document_id == doc["id"]))
        ordinals = list(s.scalars(select(Chunk.ordinal).where(Chunk.document_id == doc["id"])))
        ids = list(s.scalars(select(Chunk.id).where(Chunk.document_id == doc["id"])))
        job = s.scalars(select(Job).where(Job.document_id == doc["id"])).one()
        coll_id = final.collection_id
    assert n_rows == final.chunks and sorted(ordinals) == list(range(n_rows))  # exactly one copy each
    stored = store.stored_ids(coll_id)
    assert len(stored) == n_rows and sorted(stored.tolist()) == sorted(ids)  # and exactly one vector each
    assert job.status == "done" and job.attempts == 2
    engine.dispose()


def queue(tmp_path, url: str):
    """A migrated database and the document service over it: (settings, engine, sessions, service)."""
    upgrade(url)
    settings = settings_for(tmp_path, url)
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    return settings, engine, sessions, DocumentService(settings, sessions, IndexStore(settings.index_dir, 384))


def test_job_that_keeps_dying_fails_after_max_attempts(tmp_path, db_url):
    settings, engine, sessions, svc = queue(tmp_path, db_url)
    doomed = svc.create("faults", [Upload("doomed.txt", b"A document whose workers keep dying.")])[0]
    fine = svc.create("faults", [Upload("fine.txt", b"A document that ingests normally.")])[0]
    # As if three workers had each claimed it and died: running, lease long expired, attempts used up.
    with sessions() as s, s.begin():
        s.execute(update(Job).where(Job.document_id == doomed["id"]).values(
            status="running", attempts=settings.job_max_attempts, lease_owner="dead:1",
            lease_expires_at=utcnow() - timedelta(minutes=5)))
    env = base_env(tmp_path) | {"RAGSVC_DATABASE_URL": db_url}
    out = subprocess.run([RAGSVC, "worker", "--once"], env=env, cwd=tmp_path, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    with sessions() as s:
        d, f = s.get(Document, doomed["id"]), s.get(Document, fine["id"])
        assert d.status == "failed" and f"attempted {settings.job_max_attempts} times" in d.error
        assert f.status == "ready"  # the worker went on with other jobs
    engine.dispose()


def test_worker_exports_ingestion_metrics(tmp_path):
    import httpx

    from tests.conftest import free_port

    url = f"sqlite:///{tmp_path / 'metrics.db'}"
    settings, engine, sessions, svc = queue(tmp_path, url)
    good = svc.create("m", [Upload("good.txt", b"A heron stands in the reeds by the pier.")])[0]
    svc.create("m", [Upload("bad.pdf", b"%PDF-1.4 broken")])
    port = free_port()
    worker = start_worker(tmp_path, url, lease_s=30, RAGSVC_WORKER_METRICS_PORT=str(port))
    try:
        def done():
            with sessions() as s:
                return all(d.status in ("ready", "failed") for d in s.query(Document).all())
        wait_for(done, 240, "both documents")
        text = wait_for(lambda: _scrape(httpx, port), 30, "metrics")
    finally:
        worker.terminate()
        worker.wait(30)
    assert 'ragsvc_ingest_documents_total{outcome="ready"} 1.0' in text
    assert 'ragsvc_ingest_documents_total{outcome="failed"} 1.0' in text
    assert 'ragsvc_ingest_stage_seconds_count{stage="embed"} 1.0' in text
    with sessions() as s:
        assert s.get(Document, good["id"]).status == "ready"
    engine.dispose()


def _scrape(httpx, port: int) -> str | None:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except httpx.TransportError:
        return None
