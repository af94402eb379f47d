"""Several workers, for real: a worker stopped past its lease is fenced out, three workers share a queue.

Real ``ragsvc worker`` processes on real SQLite and PostgreSQL databases, real embeddings and FAISS.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections import defaultdict
from datetime import timedelta, timezone

import pytest
from sqlalchemy import func, select, update

from ingest.lease import Lease, StaleLease
from ingest.worker import Worker
from ragsvc.db import Chunk, Document, Job, JobAttempt
from ragsvc.db.session import make_engine, make_sessionmaker
from ragsvc.documents import Upload
from ragsvc.index_store import IndexStore
from ragsvc.settings import Settings
from tests.conftest import RAGSVC, base_env, new_pg_database
from tests.test_worker_faults import long_pdf, queue, wait_for


def start_worker(tmp_path, url: str, lease_s: float, name: str) -> subprocess.Popen:
    """A ``ragsvc worker`` with its own log file, ``<name>.log``."""
    env = base_env(tmp_path) | {"RAGSVC_DATABASE_URL": url, "RAGSVC_JOB_LEASE_S": str(lease_s),
                                "RAGSVC_WORKER_POLL_S": "0.2", "RAGSVC_LOG_JSON": "false"}
    return subprocess.Popen([RAGSVC, "worker"], env=env, cwd=tmp_path, start_new_session=True,
                            stdout=(tmp_path / f"{name}.log").open("a"), stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen) -> None:
    """Stop a worker started here (resumed first, in case it is stopped), then make sure it is gone."""
    if proc.poll() is None:
        for sig in (signal.SIGCONT, signal.SIGTERM):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def worker_id(proc: subprocess.Popen) -> str:
    return f"{os.uname().nodename}:{proc.pid}"


def index_ids(settings: Settings, collection_id: str) -> list[int]:
    return IndexStore(settings.index_dir, 0).stored_ids(collection_id).tolist()


def aware(dt):
    return dt if dt is None or dt.tzinfo else dt.replace(tzinfo=timezone.utc)  # SQLite returns naive UTC


def test_worker_stopped_past_its_lease_writes_nothing_after_another_took_over(tmp_path, db_url):
    settings, engine, sessions, svc = queue(tmp_path, db_url)
    doc = svc.create("fence", [Upload("long.pdf", long_pdf(240))])[0]

    def doc_row():
        with sessions() as s:
            return s.get(Document, doc["id"])

    def job_row():
        with sessions() as s:
            return s.scalars(select(Job).where(Job.document_id == doc["id"])).one()

    first = start_worker(tmp_path, db_url, lease_s=3, name="first")
    second = None
    try:
        # Stopped while embedding, between two progress writes (so it holds no database lock), with
        # batches still to embed: when it resumes it has a stale lease and work left to write.
        wait_for(lambda: (d := doc_row()).stage == "embedding" and 0 < (d.progress or 0) < 0.5, 300,
                 "the first worker embedding")
        os.killpg(first.pid, signal.SIGSTOP)
        second = start_worker(tmp_path, db_url, lease_s=3, name="second")
        wait_for(lambda: job_row().status in ("done", "failed"), 400, "the second worker to finish")
        after_second = doc_row()
        with sessions() as s:
            chunk_ids = sorted(s.scalars(select(Chunk.id).where(Chunk.document_id == doc["id"])))
        os.killpg(first.pid, signal.SIGCONT)
        wait_for(lambda: "abandoning it" in (tmp_path / "first.log").read_text(), 120,
                 "the first worker to notice it lost the lease")
    finally:
        stop(first)
        if second is not None:
            stop(second)

    final = doc_row()
    assert final.status == "ready", final.error
    # Not written again after the second worker finished: no progress, no rows, no "failed".
    assert final.updated_at == after_second.updated_at and final.stage is None
    with sessions() as s:
        rows = s.execute(select(Chunk.id, Chunk.ordinal).where(Chunk.document_id == doc["id"])).all()
        job = s.scalars(select(Job).where(Job.document_id == doc["id"])).one()
        history = s.scalars(select(JobAttempt).where(JobAttempt.job_id == job.id).order_by(JobAttempt.id)).all()
    assert sorted(r.id for r in rows) == chunk_ids
    assert len(rows) == final.chunks and sorted(r.ordinal for r in rows) == list(range(final.chunks))
    # The index holds exactly the ready rows' vectors: none left over from the first worker.
    ids = index_ids(settings, final.collection_id)
    assert sorted(ids) == chunk_ids
    # And the operator's own check says so: every vector has its ready row and every ready row its vector.
    check = subprocess.run([RAGSVC, "index", "check"], env=base_env(tmp_path) | {"RAGSVC_DATABASE_URL": db_url},
                           cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert check.returncode == 0, check.stdout + check.stderr
    assert job.status == "done" and job.attempts == 2
    assert [(a.attempt, a.worker) for a in history] == [(1, worker_id(first)), (2, worker_id(second))]
    assert history[0].outcome in ("lost", "abandoned") and history[1].outcome == "done"
    assert aware(history[0].ended_at) <= aware(history[1].started_at)
    # What GET /v1/jobs shows of it.
    listed = next(j for j in svc.jobs() if j["id"] == job.id)
    assert [(h["attempt"], h["outcome"]) for h in listed["history"]] == [(1, history[0].outcome), (2, "done")]
    assert listed["history"][1]["worker"] == worker_id(second) and listed["history"][1]["ended_at"]
    log = (tmp_path / "first.log").read_text()
    assert f"lease lost on job {job.id} (attempt 1); abandoning it" in log
    engine.dispose()


def _sqlite_job(tmp_path, lease_s: float = 3.0):
    """A migrated SQLite queue with one document and its job claimed by a real Worker: (worker, lease, sessions)."""
    url = f"sqlite:///{tmp_path / 'beat.db'}"
    settings, engine, sessions, svc = queue(tmp_path, url)
    settings = settings.model_copy(update={"job_lease_s": lease_s, "job_heartbeat_failures": 3})
    svc.create("beat", [Upload("a.txt", b"A heron stands in the reeds.")])
    worker = Worker(settings, sessions, pipeline=None)
    lease, _doc, _rid = worker.claim()
    return worker, lease, sessions, engine


def test_heartbeat_failing_in_a_row_stops_the_job(tmp_path):
    worker, lease, _sessions, engine = _sqlite_job(tmp_path)
    # The database becomes unreachable: a real engine whose every connection is refused.
    dead = make_engine("postgresql+psycopg://127.0.0.1:1/none?connect_timeout=2")
    calls = []
    real = make_sessionmaker(dead)

    def counting():
        calls.append(1)
        return real()

    worker.sessions = counting
    done = threading.Event()
    beat = threading.Thread(target=worker._heartbeat, args=(lease, done))
    beat.start()
    try:
        assert lease.lost.wait(60), "the heartbeat kept going after its beats failed"
    finally:
        done.set()
        beat.join(30)
    assert len(calls) == 3  # exactly job_heartbeat_failures beats, not one
    assert "3 heartbeats in a row failed" in lease.reason
    with pytest.raises(StaleLease):
        lease.raise_if_lost()  # the pipeline's next checkpoint stops the job
    dead.dispose()
    engine.dispose()


def test_heartbeat_finding_the_job_taken_stops_at_once(tmp_path):
    worker, lease, sessions, engine = _sqlite_job(tmp_path)
    with sessions() as s, s.begin():  # as if another worker re-claimed it after the lease expired
        s.execute(update(Job).where(Job.id == lease.job_id).values(attempts=Job.attempts + 1, lease_owner="other:1"))
    done = threading.Event()
    beat = threading.Thread(target=worker._heartbeat, args=(lease, done))
    beat.start()
    try:
        assert lease.lost.wait(30)
    finally:
        done.set()
        beat.join(30)
    assert "re-claimed" in lease.reason
    # And the fence refuses a write in the same transaction: finishing the job changes nothing.
    with pytest.raises(StaleLease):
        worker._finish(lease, "whatever", "a stale worker's error")
    with sessions() as s:
        job = s.get(Job, lease.job_id)
        assert job.status == "running" and job.lease_owner == "other:1" and job.error is None
    engine.dispose()


def test_fence_refuses_a_token_of_an_earlier_attempt(tmp_path):
    worker, lease, sessions, engine = _sqlite_job(tmp_path)
    with sessions() as s:
        lease.check(s)  # held: renews
        s.commit()
    stale = Lease(lease.job_id, lease.attempt - 1, lease.owner, lease.lease_s)
    with sessions() as s, pytest.raises(StaleLease):
        stale.check(s)
    engine.dispose()


def test_three_workers_share_200_documents_with_one_killed_halfway(tmp_path):
    n = 200
    with new_pg_database() as url:
        settings, engine, sessions, svc = queue(tmp_path, url)
        uploads = [Upload(f"note-{i:03d}.md", f"# Note {i}\n\nThe ferry number {i} left the pier at {i % 24} "
                                               f"o'clock with {i * 7 % 50} passengers.\n".encode()) for i in range(n)]
        created = svc.create("many", uploads)
        assert len(created) == n

        def ready_count() -> int:
            with sessions() as s:
                return s.scalar(select(func.count()).select_from(Document).where(Document.status == "ready"))

        def all_done() -> bool:
            with sessions() as s:
                return s.scalar(select(func.count()).select_from(Job).where(Job.status.in_(("done", "failed")))) == n

        workers = [start_worker(tmp_path, url, lease_s=10, name=f"w{i}") for i in range(3)]
        killed = workers[0]
        try:
            wait_for(lambda: ready_count() >= n // 2, 600, "half the documents")
            wait_for(lambda: _freeze_holding_a_job(killed, sessions), 120, "the worker to be caught holding a job")
            os.killpg(killed.pid, signal.SIGKILL)  # mid-document: its job must be claimed again
            killed.wait()
            wait_for(all_done, 600, "every job")
        finally:
            for w in workers[1:]:
                stop(w)
            if killed.poll() is None:
                os.killpg(killed.pid, signal.SIGKILL)
                killed.wait()

        with sessions() as s:
            docs = s.scalars(select(Document)).all()
            chunks = s.execute(select(Chunk.id, Chunk.document_id, Chunk.ordinal)).all()
            jobs = s.scalars(select(Job)).all()
            attempts = s.scalars(select(JobAttempt).order_by(JobAttempt.id)).all()
        # Every upload ended ready, exactly once: one document each, each chunk once.
        assert len(docs) == n and {d.status for d in docs} == {"ready"}, [d.error for d in docs if d.error][:3]
        assert sorted(d.filename for d in docs) == sorted(u.filename for u in uploads)
        by_doc = defaultdict(list)
        for c in chunks:
            by_doc[c.document_id].append(c.ordinal)
        for d in docs:
            assert sorted(by_doc[d.id]) == list(range(d.chunks)), d.filename
        # Every row has its vector. A vector without a row can only be the killed worker's, written in
        # its last transaction before the commit that never came (ids are never reused on PostgreSQL).
        ids = set(index_ids(settings, docs[0].collection_id))
        row_ids = {c.id for c in chunks}
        assert row_ids <= ids and len(ids - row_ids) <= max(d.chunks for d in docs)

        # From the history: each job done once, by its last attempt; an earlier attempt ended (lost:
        # closed by the worker that claimed the job again) no later than the next one began, and only
        # the killed worker lost one. So no job was ever worked by two live workers at once.
        assert {j.status for j in jobs} == {"done"}
        history = defaultdict(list)
        for a in attempts:
            history[a.job_id].append(a)
        live = {worker_id(w) for w in workers[1:]}
        assert set(history) == {j.id for j in jobs}
        for job_id, tries in history.items():
            assert [a.outcome for a in tries].count("done") == 1 and tries[-1].outcome == "done", job_id
            assert tries[-1].worker in live or len(tries) == 1
            for earlier, later in zip(tries, tries[1:]):
                assert earlier.outcome == "lost" and earlier.worker == worker_id(killed), (job_id, earlier.outcome)
                assert aware(earlier.ended_at) <= aware(later.started_at)
                assert aware(later.started_at) - aware(earlier.started_at) >= timedelta(seconds=10)  # lease ran out
        assert any(a.outcome == "lost" for a in attempts), "the killed worker's job was claimed again"
        workers_seen = {a.worker for a in attempts}
        assert workers_seen == {worker_id(w) for w in workers}, "all three workers took jobs"
        engine.dispose()


def _freeze_holding_a_job(proc: subprocess.Popen, sessions) -> bool:
    """SIGSTOP the worker; keep it stopped if it holds a running job, else resume it and say no."""
    os.killpg(proc.pid, signal.SIGSTOP)
    with sessions() as s:
        held = s.scalar(select(func.count()).select_from(Job).where(
            Job.status == "running", Job.lease_owner == worker_id(proc)))
    if not held:
        os.killpg(proc.pid, signal.SIGCONT)
        time.sleep(0.05)
    return bool(held)


def test_jobs_api_lists_each_jobs_history(tmp_path):
    """GET /v1/jobs over HTTP: each job with its attempts (worker, start, end, outcome)."""
    from tests.conftest import start_service, stop_service

    svc = start_service(tmp_path, None, "sqlite", engine=False)
    try:
        doc = svc.upload([("heron.txt", b"A heron stands in the reeds by the pier.")]).json()["documents"][0]
        assert svc.wait_done(doc["id"], 300)["status"] == "ready"
        job = next(j for j in svc.client.get("/v1/jobs").json()["jobs"] if j["document_id"] == doc["id"])
    finally:
        stop_service(svc)
    [attempt] = job["history"]
    assert attempt["attempt"] == 1 and attempt["outcome"] == "done" and attempt["error"] is None
    assert attempt["worker"] and attempt["started_at"] <= attempt["ended_at"]


@pytest.mark.parametrize("target", ["document", "collection"])
def test_delete_while_a_worker_holds_its_job_waits_instead_of_deadlocking(tmp_path, target):
    """A worker's fenced transaction locks its job row (the lease check) and then its document row; a
    DELETE of the document or of its collection must take them in the same order. Taken the other way
    round (document first, the job through ON DELETE CASCADE), PostgreSQL finds a deadlock and aborts one
    side: the DELETE answered 500 in CI. Real PostgreSQL, real Worker lease."""
    with new_pg_database() as url:
        settings, engine, sessions, svc = queue(tmp_path, url)
        doc = svc.create("locks", [Upload("a.txt", b"A heron stands in the reeds.")])[0]
        svc.create("locks", [Upload("b.txt", b"A second document in the same collection.")])
        worker = Worker(settings, sessions, pipeline=None)
        lease, claimed, _rid = worker.claim()  # claimed: the document id
        assert claimed is not None
        errors: list[BaseException] = []

        def delete() -> None:
            try:
                svc.delete(claimed) if target == "document" else svc.delete_collection("locks")
            except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
                errors.append(exc)

        with sessions() as s:
            lease.check(s)  # the worker's fence: holds the job row until commit
            deleter = threading.Thread(target=delete)
            deleter.start()
            time.sleep(1.5)  # the DELETE is now waiting on a lock (PostgreSQL's deadlock_timeout is 1 s)
            s.execute(update(Document).where(Document.id == claimed).values(stage="embedding"))
            s.commit()  # a deadlock would have aborted this statement or the DELETE
        deleter.join(60)
        assert not deleter.is_alive() and errors == []
        with sessions() as s:
            assert s.get(Document, claimed) is None
            assert (s.get(Document, doc["id"]) is None) == (target == "collection" or doc["id"] == claimed)
        engine.dispose()
