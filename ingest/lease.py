"""The lease a worker holds on a job, and the fence every write for that job goes through.

A worker that stalls past its lease (a long GC pause, a stopped container, a saturated disk) must not
write once another worker has re-claimed the job: it could mark a ready document failed or write its
chunks a second time. So the worker holds a fencing token, (job id, attempt number, worker id), and
each transaction that writes for the job first runs

    UPDATE jobs SET lease_expires_at = now + lease
    WHERE id = :job AND attempts = :attempt AND lease_owner = :me AND status = 'running'

and gives up with :class:`StaleLease` when no row matched. A re-claim raises ``attempts``, so a stale
token never matches again. The UPDATE also locks what the rest of the transaction writes against a
re-claim until it commits: on PostgreSQL the job row is locked (a claimer's ``FOR UPDATE SKIP LOCKED``
passes over it, its conditional UPDATE waits); on SQLite the whole database is (one writer at a time).
So the writes of a transaction that passed the fence, FAISS writes made inside it included, all happen
while the lease is really held.
"""

from __future__ import annotations

import threading
from datetime import timedelta

from sqlalchemy import update
from sqlalchemy.orm import Session

from ragsvc.db import Job, JobStatus
from ragsvc.db.models import utcnow


class StaleLease(Exception):
    """The worker no longer holds the job's lease: another worker re-claimed it, or it stopped beating."""


class Lease:
    """The fencing token of one claimed job. ``lost`` is set by the heartbeat when the lease is gone or
    cannot be renewed; the pipeline stops at its next checkpoint."""

    def __init__(self, job_id: int, attempt: int, owner: str, lease_s: float) -> None:
        self.job_id, self.attempt, self.owner, self.lease_s = job_id, attempt, owner, lease_s
        self.lost = threading.Event()
        self.reason = ""

    def __repr__(self) -> str:
        return f"job {self.job_id} (attempt {self.attempt})"

    def give_up(self, reason: str) -> None:
        if not self.lost.is_set():
            self.reason = reason
            self.lost.set()

    def raise_if_lost(self) -> None:
        if self.lost.is_set():
            raise StaleLease(self.reason or "the lease was lost")

    def renew(self, session: Session) -> bool:
        """Extend the lease if this token still holds it (inside the caller's transaction)."""
        return bool(session.execute(
            update(Job)
            .where(Job.id == self.job_id, Job.attempts == self.attempt, Job.lease_owner == self.owner,
                   Job.status == JobStatus.RUNNING)
            .values(lease_expires_at=utcnow() + timedelta(seconds=self.lease_s))
        ).rowcount)

    def check(self, session: Session) -> None:
        """The fence: call first in every transaction that writes for the job; raises ``StaleLease``."""
        self.raise_if_lost()
        if not self.renew(session):
            self.give_up("another worker re-claimed the job after this worker's lease expired")
            raise StaleLease(self.reason)


class NoLease:
    """For running the pipeline without a queue (benchmarks, tests of the pipeline alone): never fences."""

    lost = threading.Event()

    def check(self, session: Session) -> None:  # noqa: ARG002 - same interface as Lease.check
        return None

    def raise_if_lost(self) -> None:
        return None


NO_LEASE = NoLease()
