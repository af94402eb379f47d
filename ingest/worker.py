"""The ingestion worker: claims queued jobs from the database with a lease and runs the pipeline.

Claims use ``SELECT … FOR UPDATE SKIP LOCKED`` on PostgreSQL, so any number of workers can share the
queue; SQLite ignores the lock clause and the conditional UPDATE keeps a claim exclusive. A job whose
lease expired (its worker died) is claimed again; after ``job_max_attempts`` it fails for good.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from datetime import timedelta

from sqlalchemy import and_, or_, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from ingest.pipeline import Pipeline
from ragsvc.db import Document, DocumentStatus, Job, JobStatus
from ragsvc.db.models import utcnow
from ragsvc.errors import IngestError
from ragsvc.keyword_index import KeywordStore, rebuild_from_db
from ragsvc.observability import INGESTED, STAGE_SECONDS, request_id
from ragsvc.settings import Settings

log = logging.getLogger(__name__)


class Worker:
    def __init__(self, settings: Settings, sessions: sessionmaker[Session], pipeline: Pipeline,
                 keywords: KeywordStore | None = None) -> None:
        self.settings = settings
        self.sessions = sessions
        self.pipeline = pipeline
        self.keywords = keywords
        self._dirty: set[str] = set()  # collections whose keyword index is behind
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"
        self.stop = threading.Event()

    def claim(self) -> tuple[int, str, str | None] | None:
        """Claim the oldest runnable job; returns (job id, document id) or None when there is none."""
        while True:
            outcome = self._claim_once()
            if outcome != "retired":
                return outcome

    def _claim_once(self) -> tuple[int, str, str | None] | None | str:
        now = utcnow()
        lease = timedelta(seconds=self.settings.job_lease_s)
        with self.sessions() as session, session.begin():
            job = session.scalars(
                select(Job)
                .where(or_(Job.status == JobStatus.QUEUED,
                           and_(Job.status == JobStatus.RUNNING, Job.lease_expires_at < now)))
                .order_by(Job.id).limit(1)
                .with_for_update(skip_locked=True)
            ).first()
            if job is None:
                return None
            if job.attempts >= self.settings.job_max_attempts:
                # Its workers kept dying (a crash or a kill each time): stop trying, say why, move on.
                reason = (f"Ingestion was attempted {job.attempts} times and the worker stopped each time "
                          "(crash or kill) before finishing.")
                job.status, job.error = JobStatus.FAILED, reason
                session.execute(update(Document).where(Document.id == job.document_id)
                                .values(status=DocumentStatus.FAILED, error=reason, stage=None))
                return "retired"
            won = session.execute(
                update(Job)
                .where(Job.id == job.id, Job.status == job.status, Job.attempts == job.attempts)
                .values(status=JobStatus.RUNNING, lease_owner=self.worker_id,
                        lease_expires_at=now + lease, attempts=job.attempts + 1)
            ).rowcount
            if not won:
                return "retired"  # another worker got it first; look again
            session.execute(update(Document).where(Document.id == job.document_id)
                            .values(status=DocumentStatus.PROCESSING, error=None))
            return job.id, job.document_id, job.request_id

    def _heartbeat(self, job_id: int, done: threading.Event) -> None:
        interval = max(1.0, self.settings.job_lease_s / 3)
        while not done.wait(interval):
            try:
                with self.sessions() as session, session.begin():
                    session.execute(
                        update(Job).where(Job.id == job_id, Job.lease_owner == self.worker_id)
                        .values(lease_expires_at=utcnow() + timedelta(seconds=self.settings.job_lease_s))
                    )
            except Exception:  # noqa: BLE001 - a missed beat only risks a re-claim, never data
                log.exception("heartbeat for job %s failed", job_id)

    def _finish(self, job_id: int, document_id: str, error: str | None) -> None:
        with self.sessions() as session, session.begin():
            session.execute(update(Job).where(Job.id == job_id).values(
                status=JobStatus.FAILED if error else JobStatus.DONE, error=error, lease_expires_at=None))
            if error:
                session.execute(update(Document).where(Document.id == document_id)
                                .values(status=DocumentStatus.FAILED, error=error, stage=None))

    def _more_queued(self, collection_id: str) -> bool:
        with self.sessions() as session:
            return session.scalar(
                select(Job.id).join(Document).where(Document.collection_id == collection_id,
                                                    Job.status == JobStatus.QUEUED).limit(1)
            ) is not None

    def flush_keywords(self) -> None:
        """Rebuild the BM25 index of every collection changed since the last flush."""
        while self._dirty and self.keywords is not None:
            collection_id = self._dirty.pop()
            try:
                n = rebuild_from_db(self.sessions, self.keywords, collection_id)
                log.info("keyword index of collection %s rebuilt (%d chunks)", collection_id, n)
            except Exception:  # noqa: BLE001 - dense search still works; the next change retries
                log.exception("keyword index rebuild for %s failed", collection_id)

    def run_one(self) -> bool:
        """Process one job if there is one; returns whether a job was found."""
        claimed = self.claim()
        if claimed is None:
            self.flush_keywords()
            return False
        job_id, document_id, rid = claimed
        token = request_id.set(rid)  # the upload's request id, in every log line about this document
        done = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(job_id, done), daemon=True)
        beat.start()
        error = None
        try:
            stats = self.pipeline.process(document_id)
            for stage in ("parse", "chunk", "embed", "store"):
                STAGE_SECONDS.labels(stage).observe(stats[f"{stage}_s"])
            INGESTED.labels("ready").inc()
            self._dirty.add(stats["collection_id"])
            # Rebuild now unless more of this collection's documents are queued (bulk uploads rebuild once).
            if not self._more_queued(stats["collection_id"]):
                self.flush_keywords()
        except IngestError as exc:
            error = exc.detail
            log.warning("document %s failed: %s", document_id, error)
        except DBAPIError as exc:
            if not _connection_lost(exc):
                error = f"Unexpected database error while ingesting ({type(exc).__name__}: {exc})."
                log.exception("document %s failed on a database error", document_id)
            else:
                # The database went away (a restart, a failover): not the document's fault. Put the job
                # back once the database answers again; the next claim redoes it (chunks are not doubled).
                log.warning("database connection lost while ingesting %s; requeueing it when it is back",
                            document_id)
                done.set()
                beat.join()
                request_id.reset(token)
                self._requeue(job_id)
                return True
        except Exception as exc:  # noqa: BLE001 - the document fails with the reason; the worker goes on
            error = f"Unexpected error while ingesting ({type(exc).__name__}: {exc})."
            log.exception("document %s failed unexpectedly", document_id)
        finally:
            done.set()
            beat.join()
            request_id.reset(token)
        if error:
            INGESTED.labels("failed").inc()
        self._finish(job_id, document_id, error)
        return True

    def _requeue(self, job_id: int) -> None:
        """Give the job back (the attempt does not count), retrying until the database answers."""
        while not self.stop.is_set():
            try:
                with self.sessions() as session, session.begin():
                    session.execute(update(Job).where(Job.id == job_id, Job.lease_owner == self.worker_id).values(
                        status=JobStatus.QUEUED, lease_owner=None, lease_expires_at=None,
                        attempts=Job.attempts - 1))
                return
            except DBAPIError:
                log.warning("database still unreachable; retrying in %.0f s", self.settings.worker_poll_s)
                self.stop.wait(max(self.settings.worker_poll_s, 1.0))

    def run_forever(self) -> None:
        log.info("worker %s polling for jobs", self.worker_id)
        while not self.stop.is_set():
            try:
                if self.run_one():
                    continue
            except Exception:  # noqa: BLE001 - e.g. the database restarting; retry after a pause
                log.exception("worker loop error")
            self.stop.wait(self.settings.worker_poll_s)


def _connection_lost(exc: DBAPIError) -> bool:
    """A dropped or refused connection, as opposed to a query the database rejected."""
    from sqlalchemy.exc import InterfaceError, OperationalError

    if exc.connection_invalidated:  # the dialect recognised a disconnect
        return True
    # Reconnecting while the server is still down fails at connect time, before any query ran.
    words = ("connection", "connect to server", "server closed", "terminating")
    return isinstance(exc, (OperationalError, InterfaceError)) and any(w in str(exc.orig).lower() for w in words)
