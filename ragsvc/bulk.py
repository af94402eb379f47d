"""``ragsvc ingest PATH…``: walk folders, upload every supported file to a running service, wait, summarise."""

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
    ready: int = 0
    duplicate: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)
    pages: int = 0


def find_files(paths: list[str]) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in SUFFIXES
                          and not any(part.startswith(".") for part in f.relative_to(p).parts))
        elif p.is_file():
            out.append(p)
        else:
            print(f"skipping {p}: no such file or folder", file=sys.stderr)
    return out


def _batches(files: list[Path]):
    batch, size = [], 0
    for f in files:
        n = f.stat().st_size
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
    files = find_files(paths)
    summary = Summary()
    started = time.time()
    pending: dict[str, str] = {}
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    with httpx.Client(base_url=url.rstrip("/"), timeout=600, headers=headers) as client:
        for batch in _batches(files):
            multipart = [("files", (f.name, f.read_bytes(), "application/octet-stream")) for f in batch]
            resp = client.post("/v1/documents", data={"collection": collection}, files=multipart)
            if resp.status_code != 202:
                # One bad file refuses the whole request: send them one by one to find it.
                for f in batch:
                    r = client.post("/v1/documents", data={"collection": collection},
                                    files=[("files", (f.name, f.read_bytes(), "application/octet-stream"))])
                    if r.status_code != 202:
                        summary.refused.append((str(f), r.json().get("detail", r.text)))
                    else:
                        _track(r.json()["documents"], batch, pending, summary)
                continue
            _track(resp.json()["documents"], batch, pending, summary)
        total = len(files) - len(summary.refused)
        while pending:
            for doc_id, name in list(pending.items()):
                doc = client.get(f"/v1/documents/{doc_id}").json()
                if doc.get("status") == "ready":
                    summary.ready += 1
                    summary.pages += doc.get("pages") or 0
                    del pending[doc_id]
                elif doc.get("status") == "failed" or "status" not in doc:
                    summary.failed.append((name, doc.get("error") or doc.get("detail", "deleted")))
                    del pending[doc_id]
            _line(total - len(pending), total, summary.pages, started)
            if pending:
                time.sleep(poll_s)
    sys.stderr.write("\n")
    return summary


def _track(docs: list[dict], batch: list[Path], pending: dict[str, str], summary: Summary) -> None:
    for doc, f in zip(docs, batch):
        if doc.get("duplicate"):
            summary.duplicate += 1
        else:
            pending[doc["id"]] = str(f)


def print_summary(s: Summary, elapsed: float) -> None:
    print(f"{s.ready} ready, {s.duplicate} duplicate, {len(s.failed)} failed, {len(s.refused)} refused "
          f"in {elapsed:.1f} s ({s.pages} pages)")
    for name, why in s.failed:
        print(f"  failed:  {name}: {why}")
    for name, why in s.refused:
        print(f"  refused: {name}: {why}")
