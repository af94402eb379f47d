"""Database layer: models, engine/session factory and migrations."""

from ragsvc.db.models import (ApiKey, Base, Chunk, Collection, Document, DocumentStatus, Job, JobStatus,
                               WebSession)

__all__ = ["ApiKey", "Base", "Chunk", "Collection", "Document", "DocumentStatus", "Job", "JobStatus",
           "WebSession"]
