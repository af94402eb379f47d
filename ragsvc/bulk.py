"""``ragsvc ingest PATH…``: walk folders, upload every supported file to a running service, wait, summarise.

Each file goes up under its path relative to the folder it was found in (``guide/README.md`` for
``docs/guide/README.md`` when ``docs`` was given; a file given by itself: its base name), because the
path is the document's identity in the collection: the same path again is a new version or an unchanged
duplicate, never another file that happens to share a base name.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

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
    pages: int = 0


@dataclass
class Found:
    file: Path  # where it is on this machine
    path: str  # what the service calls it: relative to the folder given, with forward slashes


def find_files(paths: list[str], refused: list[tuple[str, str]] | None = None) -> list[Found]:
    out: list[Found] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += [Found(f, f.relative_to(p).as_posix()) for f in sorted(p.rglob("*"))
                    if f.is_file() and f.suffix.lower() in SUFFIXES
                    and not any(part.startswith(".") for part in f.relative_to(p).parts)]
        elif p.is_file():
            out.append(Found(p, p.name))
        else:
            print(f"skipping {p}: no such file or folder", file=sys.stderr)
    # Two folders given may hold the same relative path: the second would silently replace the first.
    first: dict[str, Path] = {}
    kept = []
    for f in out:
        if f.path in first:
            if refused is not None:
                refused.append((str(f.file), f"its path {f.path!r} is also {first[f.path]}'s; ingest the folder "
                                             "above both so that their paths differ"))
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


def _line(done: int, total: int, pages: int, started: float) -> None:
    elapsed = max(time.time() - started, 1e-6)
    width = 30
    filled = int(width * done / max(total, 1))
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} documents  "
                     f"{done / elapsed:.2f} docs/s  {pages / elapsed:.1f} pages/s ")
    sys.stderr.flush()


def ingest(url: str, paths: list[str], collection: str, poll_s: float = 1.0, api_key: str = "") -> Summary:
    summary = Summary()
    files = find_files(paths, summary.refused)
    started = time.time()
    pending: dict[str, tuple[str, str | None]] = {}  # document id -> (file, id of the version it replaces)
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    with httpx.Client(base_url=url.rstrip("/"), timeout=600, headers=headers) as client:
        for batch in _batches(files):
            multipart = [("files", (f.path, f.file.read_bytes(), "application/octet-stream")) for f in batch]
            resp = client.post("/v1/documents", data={"collection": collection}, files=multipart)
            if resp.status_code != 202:
                # One bad file refuses the whole request: send them one by one to find it.
                for f in batch:
                    r = client.post("/v1/documents", data={"collection": collection},
                                    files=[("files", (f.path, f.file.read_bytes(), "application/octet-stream"))])
                    if r.status_code != 202:
                        summary.refused.append((str(f.file), r.json().get("detail", r.text)))
                    else:
                        _track(r.json()["documents"], [f], pending, summary)
                continue
            _track(resp.json()["documents"], batch, pending, summary)
        total = summary.duplicate + len(pending)  # every accepted file; duplicates are done already
        while pending:
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
            _line(total - len(pending), total, summary.pages, started)
            if pending:
                time.sleep(poll_s)
    sys.stderr.write("\n")
    return summary


def _track(docs: list[dict], batch: list[Found], pending: dict[str, tuple[str, str | None]],
           summary: Summary) -> None:
    for doc, f in zip(docs, batch):  # the service answers in the order the files were sent
        if doc.get("duplicate"):
            summary.duplicate += 1
        else:
            # Read now: once the new version is ready the old document is gone and `replaces` with it.
            pending[doc["id"]] = (str(f.file), doc.get("replaces"))


def print_summary(s: Summary, elapsed: float) -> None:
    print(f"{s.new} new, {len(s.versions)} new versions, {s.duplicate} unchanged duplicates, {len(s.failed)} failed, "
          f"{len(s.refused)} refused in {elapsed:.1f} s ({s.pages} pages)")
    for name, old in s.versions:
        print(f"  new version: {name} replaces document {old}")
    for name, why in s.failed:
        print(f"  failed:  {name}: {why}")
    for name, why in s.refused:
        print(f"  refused: {name}: {why}")
