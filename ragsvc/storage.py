"""Uploaded files on disk: written whole or not at all, and swept when no document owns them.

An upload is stored as ``FILES_DIR/<document id>/original``: written to ``original.part``, fsynced,
renamed (atomic on POSIX), and only then is the document row committed. An API killed at any point
therefore leaves either a complete file with its committed row and queued job, or a folder whose
document was never committed: :func:`remove_orphans` deletes those.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ragsvc.db import Document

log = logging.getLogger(__name__)


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    with open(part, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(part, path)


def remove_orphans(sessions: sessionmaker[Session], files_dir: Path, grace_s: float) -> list[str]:
    """Delete upload folders older than ``grace_s`` whose document does not exist; return their names.

    The grace period keeps an upload that is being written right now (its row not yet committed) safe.
    """
    if not files_dir.is_dir():
        return []
    cutoff = time.time() - grace_s
    candidates = [p for p in files_dir.iterdir() if p.is_dir() and p.stat().st_mtime <= cutoff]
    if not candidates:
        return []
    with sessions() as session:
        owned = set(session.scalars(select(Document.id).where(Document.id.in_([p.name for p in candidates]))))
    removed = []
    for folder in candidates:
        if folder.name not in owned:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder.name)
    if removed:
        log.info("removed %d orphaned upload folder(s)", len(removed))
    return removed
