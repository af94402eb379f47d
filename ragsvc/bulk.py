"""``ragsvc ingest PATH…``: walk folders, upload every supported file to a running service, wait, summarise.

Each file goes up under its path relative to the folder it was found in (``guide/README.md`` for
``docs/guide/README.md`` when ``docs`` was given; a file given by itself: its base name), because the
path is the document's identity in the collection: the same path again is a new version or an unchanged
duplicate, never another file that happens to share a base name.

What the person sees while it runs and at the end (progress, the final table) is ragsvc/bulk_report.py's.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import httpx

SUFFIXES = {".pdf", ".docx", ".pptx", ".html", ".htm", ".eml", ".md", ".markdown", ".txt"}
BATCH_FILES = 20
BATCH_BYTES = 32 * 1024 * 1024


@dataclass
class Summary:
    new: int = 0  # ready, at a path the collection did not have
    versions: list[tuple[str, str]] = field(default_factory=list)  # ready, replacing (file, old document id)
    duplicate: int = 0  # the same bytes at the same path: nothing to do
    failed: list[tuple[str, str]] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)  # suffix -> files in the folders given that were not sent
    missing: list[str] = field(default_factory=list)  # paths given that are neither a file nor a folder
    pages: int = 0
    files: int = 0  # files sent (or refused before sending): the progress bar's total

    @property
    def ready(self) -> int:
        return self.new + len(self.versions)


class Progress(Protocol):
    """Where ``ingest`` reports as it goes (bulk_report.py has one for terminals and one for pipes)."""

    def start(self, total: int) -> None: ...
    def update(self, done: int, pages: int) -> None: ...
    def close(self) -> None: ...


class _Silent:
    def start(self, total: int) -> None:
        pass

    def update(self, done: int, pages: int) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass
class Found:
    file: Path  # where it is on this machine
    path: str  # what the service calls it: relative to the folder given, with forward slashes


def find_files(paths: list[str], summary: Summary | None = None) -> list[Found]:
    """The files to send. With a ``summary``, what is not sent is recorded there: path collisions as
    refused, unsupported types as skipped (by suffix), paths that do not exist as missing."""
    summary = summary if summary is not None else Summary()
    out: list[Found] = []
    for p in map(Path, paths):
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                rel = f.relative_to(p)
                # Hidden files and folders (.git, editor swap files) are not documents, nor worth a mention.
                if not f.is_file() or any(part.startswith(".") for part in rel.parts):
                    continue
                if f.suffix.lower() in SUFFIXES:
                    out.append(Found(f, rel.as_posix()))
                else:
                    summary.skipped[f.suffix.lower() or "(no suffix)"] += 1
        elif p.is_file():
            out.append(Found(p, p.name))  # named on purpose: the service says whether it can read it
        else:
            summary.missing.append(str(p))
    # Two folders given may hold the same relative path: the second would silently replace the first.
    first: dict[str, Path] = {}
    kept = []
    for f in out:
        if f.path in first:
            summary.refused.append((str(f.file), f"its path {f.path!r} is also {first[f.path]}'s; ingest the "
                                                  "folder above both so that their paths differ"))
            continue
        first[f.path] = f.file
        kept.append(f)
    return kept


def _batches(files: list[Found]):
    batch, size = [], 0
    for f in files:
        n = f.file.stat().st_size
        if batch and (len(batch) >= BATCH_FILES or size + n > BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(f)
        size += n
    if batch:
        yield batch


def ingest(url: str, paths: list[str], collection: str, poll_s: float = 1.0, api_key: str = "",
           progress: Progress | None = None) -> Summary:
    """Send the files under ``paths`` to the service at ``url`` and wait until each is ready or failed."""
    progress = progress or _Silent()
    summary = Summary()
    files = find_files(paths, summary)
    summary.files = len(files) + len(summary.refused)
    pending: dict[str, tuple[str, str | None]] = {}  # document id -> (file, id of the version it replaces)
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}

    def done() -> int:  # every file whose outcome is known
        return summary.files - len(pending) - unsent

    unsent = len(files)
    progress.start(summary.files)
    try:
        with httpx.Client(base_url=url.rstrip("/"), timeout=600, headers=headers) as client:
            for batch in _batches(files):
                unsent -= len(batch)
                multipart = [("files", (f.path, f.file.read_bytes(), "application/octet-stream")) for f in batch]
                resp = client.post("/v1/documents", data={"collection": collection}, files=multipart)
                if resp.status_code != 202:
                    # One bad file refuses the whole request: send them one by one to find it.
                    for f in batch:
                        r = client.post("/v1/documents", data={"collection": collection},
                                        files=[("files", (f.path, f.file.read_bytes(), "application/octet-stream"))])
                        if r.status_code != 202:
                            summary.refused.append((str(f.file), _problem(r)))
                        else:
                            _track(r.json()["documents"], [f], pending, summary)
                else:
                    _track(resp.json()["documents"], batch, pending, summary)
                progress.update(done(), summary.pages)
            while pending:
                _poll(client, pending, summary)
                progress.update(done(), summary.pages)
                if pending:
                    time.sleep(poll_s)
    finally:
        progress.close()
    return summary


def _poll(client: httpx.Client, pending: dict[str, tuple[str, str | None]], summary: Summary) -> None:
    for doc_id, (name, replaces) in list(pending.items()):
        got = client.get(f"/v1/documents/{doc_id}")
        if got.status_code == 404:
            # A 404 problem also has a "status" (404): without this check the wait never ended.
            summary.failed.append((name, "deleted while ingest waited for it (another upload of its "
                                         "path may have replaced it)"))
            del pending[doc_id]
            continue
        doc = got.json()
        if doc.get("status") == "ready":
            if replaces:
                summary.versions.append((name, replaces))
            else:
                summary.new += 1
            summary.pages += doc.get("pages") or 0
            del pending[doc_id]
        elif doc.get("status") == "failed":
            summary.failed.append((name, doc.get("error") or "failed"))
            del pending[doc_id]


def _problem(resp: httpx.Response) -> str:
    try:
        return resp.json().get("detail") or resp.text
    except ValueError:  # not JSON: a proxy's error page, say
        return f"HTTP {resp.status_code}: {resp.text[:200]}"


def _track(docs: list[dict], batch: list[Found], pending: dict[str, tuple[str, str | None]],
           summary: Summary) -> None:
    for doc, f in zip(docs, batch):  # the service answers in the order the files were sent
        if doc.get("duplicate"):
            summary.duplicate += 1
        else:
            # Read now: once the new version is ready the old document is gone and `replaces` with it.
            pending[doc["id"]] = (str(f.file), doc.get("replaces"))
