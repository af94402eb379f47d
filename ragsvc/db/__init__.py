"""Database layer: models, engine/session factory and migrations."""

from ragsvc.db.models import (ApiKey, AttemptOutcome, Base, Chunk, Collection, Document, DocumentStatus, Job,
                              JobAttempt, JobStatus, RateLimitWindow, WebSession)

__all__ = ["ApiKey", "Base", "Chunk", "Collection", "Document", "DocumentStatus", "Job", "JobStatus",
           "JobAttempt", "AttemptOutcome", "RateLimitWindow", "WebSession"]
