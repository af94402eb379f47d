"""The ingestion worker: claims queued jobs from the database with a lease and runs the pipeline.

Claims use ``SELECT … FOR UPDATE SKIP LOCKED`` on PostgreSQL, so any number of workers can share the
queue; SQLite ignores the lock clause and the conditional UPDATE keeps a claim exclusive. A job whose
lease expired (its worker died) is claimed again; after ``job_max_attempts`` it fails for good.

A claim hands the worker a :class:`~ingest.lease.Lease` (job id, attempt number, worker id): every write
for the job, the pipeline's and the finish, is fenced by it, so a worker that stalled past its lease
and was replaced writes nothing more; it logs that it abandons the job and moves on. Each claim and its
end are recorded in ``job_attempts`` (the queue's history: who worked on a job, when, with what outcome).
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

from ingest.lease import Lease, StaleLease
from ingest.pipeline import Pipeline
from ragsvc.db import AttemptOutcome, Document, DocumentStatus, Job, JobAttempt, JobStatus
from ragsvc.db.models import utcnow
from ragsvc.errors import IngestError
from ragsvc.observability import INGESTED, STAGE_SECONDS, request_id
from ragsvc.settings import Settings

log = logging.getLogger(__name__)


class Worker:
    def __init__(self, settings: Settings, sessions: sessionmaker[Session], pipeline: Pipeline) -> None:
        self.settings = settings
        self.sessions = sessions
        self.pipeline = pipeline
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"
        self.stop = threading.Event()

    def claim(self) -> tuple[Lease, str, str | None] | None:
        """Claim the oldest runnable job; returns (lease, document id, request id) or None when there is none."""
        while True:
            outcome = self._claim_once()
            if outcome != "retired":
                return outcome

    def _claim_once(self) -> tuple[Lease, str, str | None] | None | str:
        now = utcnow()
        lease_len = timedelta(seconds=self.settings.job_lease_s)
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
            job_id, attempt, was_running, expired_at = job.id, job.attempts + 1, job.status == JobStatus.RUNNING, \
                job.lease_expires_at
            if job.attempts >= self.settings.job_max_attempts:
                if was_running:
                    self._close_lost(session, job_id, expired_at, now)
                # Its workers kept dying (a crash or a kill each time): stop trying, say why, move on.
                reason = (f"Ingestion was attempted {job.attempts} times and the worker stopped each time "
                          "(crash or kill) before finishing.")
                job.status, job.error = JobStatus.FAILED, reason
                session.execute(update(Document).where(Document.id == job.document_id)
                                .values(status=DocumentStatus.FAILED, error=reason, stage=None))
                return "retired"
            won = session.execute(
                update(Job)
                # The lease condition again: a worker renewing meanwhile (SQLite has no row lock) keeps its job.
                .where(Job.id == job_id, Job.status == job.status, Job.attempts == job.attempts,
                       or_(Job.status == JobStatus.QUEUED, Job.lease_expires_at < now))
                .values(status=JobStatus.RUNNING, lease_owner=self.worker_id,
                        lease_expires_at=now + lease_len, attempts=job.attempts + 1)
                # Not evaluated against the loaded object in Python: SQLite hands back naive datetimes.
                .execution_options(synchronize_session=False)
            ).rowcount
            if not won:
                return "retired"  # another worker got it first; look again
            if was_running:
                self._close_lost(session, job_id, expired_at, now)
            session.execute(update(Document).where(Document.id == job.document_id)
                            .values(status=DocumentStatus.PROCESSING, error=None))
            session.add(JobAttempt(job_id=job_id, attempt=attempt, worker=self.worker_id, started_at=now))
            return Lease(job_id, attempt, self.worker_id, self.settings.job_lease_s), job.document_id, job.request_id

    def _close_lost(self, session: Session, job_id: int, expired_at, now) -> None:
        """A running job whose lease expired: its worker died, or stalled and will find itself fenced out.
        Close that attempt in the history at this claim, so attempts of one job never overlap there."""
        session.execute(
            update(JobAttempt).where(JobAttempt.job_id == job_id, JobAttempt.ended_at.is_(None))
            .values(ended_at=now, outcome=AttemptOutcome.LOST,
                    error=f"lease expired at {expired_at.isoformat()}; claimed again by {self.worker_id}"))

    def _heartbeat(self, lease: Lease, done: threading.Event) -> None:
        """Renew the lease every third of its length. The lease is lost, and the pipeline stops at its next
        checkpoint, when another worker holds the job now or after ``job_heartbeat_failures`` beats in a
        row failed (the database unreachable: the lease runs out and someone else will take the job)."""
        interval = max(1.0, self.settings.job_lease_s / 3)
        failures = 0
        while not done.wait(interval):
            try:
                with self.sessions() as session, session.begin():
                    held = lease.renew(session)
            except Exception as exc:  # noqa: BLE001 - counted; enough in a row stop the job
                failures += 1
                log.warning("heartbeat for %s failed (%d in a row): %s", lease, failures, exc)
                if failures >= self.settings.job_heartbeat_failures:
                    lease.give_up(f"{failures} heartbeats in a row failed (last: {type(exc).__name__}: {exc})")
                    return
                continue
            failures = 0
            if not held:
                lease.give_up("another worker re-claimed the job after this worker's lease expired")
                return

    def _finish(self, lease: Lease, document_id: str, error: str | None) -> None:
        """Mark the job done or failed (and the document failed with the reason), fenced by the lease."""
        now = utcnow()
        with self.sessions() as session:
            # The database's word only, not the heartbeat's: a document committed ready while renewals
            # failed (a long index write holding SQLite's lock) is still finished by the lease's owner.
            if not lease.renew(session):
                raise StaleLease("another worker re-claimed the job after this worker's lease expired")
            session.execute(update(Job).where(Job.id == lease.job_id).values(
                status=JobStatus.FAILED if error else JobStatus.DONE, error=error, lease_expires_at=None))
            if error:
                session.execute(update(Document).where(Document.id == document_id)
                                .values(status=DocumentStatus.FAILED, error=error, stage=None))
            self._end_attempt(session, lease, AttemptOutcome.FAILED if error else AttemptOutcome.DONE, error, now)
            session.commit()

    @staticmethod
    def _end_attempt(session: Session, lease: Lease, outcome: str, error: str | None, now) -> None:
        session.execute(update(JobAttempt).where(
            JobAttempt.job_id == lease.job_id, JobAttempt.attempt == lease.attempt,
            JobAttempt.worker == lease.owner, JobAttempt.ended_at.is_(None),
        ).values(ended_at=now, outcome=outcome, error=error))

    def _abandon(self, lease: Lease, document_id: str, reason: str) -> None:
        """Leave the job to whoever holds it now: write nothing to it or its document, only close this
        attempt in the history (unless the new owner closed it already, as ``lost``)."""
        log.warning("lease lost on job %s (attempt %s); abandoning it: %s (document %s)",
                    lease.job_id, lease.attempt, reason, document_id)
        try:
            with self.sessions() as session, session.begin():
                self._end_attempt(session, lease, AttemptOutcome.ABANDONED, reason, utcnow())
        except Exception:  # noqa: BLE001 - the history only; the next claim closes the attempt as lost
            log.warning("could not record the abandoned attempt of job %s", lease.job_id, exc_info=True)

    def run_one(self) -> bool:
        """Process one job if there is one; returns whether a job was found."""
        claimed = self.claim()
        if claimed is None:
            return False
        lease, document_id, rid = claimed
        token = request_id.set(rid)  # the upload's request id, in every log line about this document
        done = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(lease, done), daemon=True)
        beat.start()
        error = stale = None
        requeue = False
        try:
            stats = self.pipeline.process(document_id, lease)
            for stage in ("parse", "chunk", "embed", "store"):
                STAGE_SECONDS.labels(stage).observe(stats[f"{stage}_s"])
            INGESTED.labels("ready").inc()
        except StaleLease as exc:
            stale = str(exc)
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
                requeue = True
        except Exception as exc:  # noqa: BLE001 - the document fails with the reason; the worker goes on
            error = f"Unexpected error while ingesting ({type(exc).__name__}: {exc})."
            log.exception("document %s failed unexpectedly", document_id)
        finally:
            done.set()
            beat.join()
        try:
            if requeue:
                self._requeue(lease)
                return True
            if stale is None:
                if error:
                    INGESTED.labels("failed").inc()
                try:
                    self._finish(lease, document_id, error)
                    return True
                except StaleLease as exc:
                    stale = str(exc)
            self._abandon(lease, document_id, stale)
            return True
        finally:
            request_id.reset(token)  # after the abandon line, which carries the upload's request id too

    def _requeue(self, lease: Lease) -> None:
        """Give the job back (the attempt does not count), retrying until the database answers; fenced,
        so a job another worker took meanwhile stays with it."""
        while not self.stop.is_set():
            try:
                with self.sessions() as session, session.begin():
                    session.execute(update(Job).where(
                        Job.id == lease.job_id, Job.attempts == lease.attempt, Job.lease_owner == self.worker_id,
                        Job.status == JobStatus.RUNNING,
                    ).values(status=JobStatus.QUEUED, lease_owner=None, lease_expires_at=None,
                             attempts=Job.attempts - 1))
                    self._end_attempt(session, lease, AttemptOutcome.REQUEUED, "database connection lost", utcnow())
                return
            except DBAPIError:
                log.warning("database still unreachable; retrying in %.0f s", self.settings.worker_poll_s)
                self.stop.wait(max(self.settings.worker_poll_s, 1.0))

    def compact_indexes(self) -> None:
        """Merge small index segments and apply tombstones, off the jobs' path (its own thread, see
        run_forever): a merge that trains IVF lists at 1M vectors takes a minute and must not hold up
        the next document. One compaction per collection at a time, across workers (a file lock)."""
        while not self.stop.is_set():
            try:
                self.pipeline.store.compact_all()
                self.pipeline.store.sweep_all()
            except Exception:  # noqa: BLE001 - the segments stay searchable as they are; retried next round
                log.exception("index compaction failed")
            self.stop.wait(max(self.settings.worker_poll_s, 1.0))

    def run_forever(self) -> None:
        log.info("worker %s polling for jobs", self.worker_id)
        threading.Thread(target=self.compact_indexes, name="compaction", daemon=True).start()
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
