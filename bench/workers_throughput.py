"""Ingestion throughput with 1, 2 and 3 ``ragsvc worker`` processes sharing one PostgreSQL queue.

    python bench/workers_throughput.py            # 200 small notes (4 chunks each) per run
    python bench/workers_throughput.py --docs 12 --sections 120 --out bench/results/workers_throughput_large.json

For each worker count: a fresh PostgreSQL database, the same N queued Markdown notes (a few chunks
each), that many workers started together. Throughput is counted from the job history
(``job_attempts``): first claim to last finish, so the workers' start-up (loading the embedding model)
is left out. Results: bench/results/workers_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PG_ADMIN = os.environ.get("RAGSVC_TEST_PG", "postgresql://127.0.0.1:5432/test")
RAGSVC = str(Path(sys.executable).parent / "ragsvc")
WORDS = ("harbour crane ferry lighthouse tide pier anchor rope gull kestrel heron otter salmon trout net buoy "
         "chart compass mast sail keel hull deck cabin galley").split()


def note(i: int, sections: int = 3) -> bytes:
    """About 200 words per heading (three headings: four chunks), all different."""
    parts = [f"# Logbook {i}\n"]
    for h in range(sections):
        parts.append(f"\n## Watch {h}\n\n")
        parts.append(" ".join(
            f"At {(i + s) % 24} hours the {WORDS[(i * 7 + s + h) % len(WORDS)]} passed the "
            f"{WORDS[(i + 3 * s + h) % len(WORDS)]} with {(i * s + h) % 97} tonnes aboard." for s in range(14)))
    return "".join(parts).encode()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def stage_medians(logs: list[Path]) -> dict[str, float]:
    """Median seconds per document of each stage, from the workers' "ingested <id>: {stats}" lines."""
    import ast
    import statistics

    per_stage: dict[str, list[float]] = {}
    for log in logs:
        for line in log.read_text(errors="replace").splitlines():
            if "ingest.pipeline: ingested " in line:
                stats = ast.literal_eval(line[line.index("{", line.index("ingested ")):])
                for key in ("parse_s", "chunk_s", "embed_s", "store_s"):
                    per_stage.setdefault(key, []).append(stats[key])
    return {k: round(statistics.median(v), 3) for k, v in per_stage.items()}


def run(n_docs: int, n_workers: int, tmp: Path, sections: int) -> dict:
    import psycopg
    from sqlalchemy import func, select

    from ragsvc.db import Chunk, Job, JobAttempt
    from ragsvc.db.migrate import upgrade
    from ragsvc.db.session import make_engine, make_sessionmaker
    from ragsvc.documents import DocumentService, Upload
    from ragsvc.index_store import IndexStore
    from ragsvc.settings import Settings

    name = f"ragsvc_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + f"/{name}"
    work = tmp / f"w{n_workers}"
    procs: list[subprocess.Popen] = []
    try:
        upgrade(url)
        settings = Settings(data_dir=work / "data", index_dir=work / "indexes", database_url=url)
        engine = make_engine(url)
        sessions = make_sessionmaker(engine)
        DocumentService(settings, sessions, IndexStore(settings.index_dir, 384)).create(
            "bench", [Upload(f"log-{i:04d}.md", note(i, sections)) for i in range(n_docs)])
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAGSVC_")} | {
            "RAGSVC_DATABASE_URL": url, "RAGSVC_DATA_DIR": str(work / "data"),
            "RAGSVC_INDEX_DIR": str(work / "indexes"), "RAGSVC_WORKER_POLL_S": "0.2",
            "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        t0 = time.time()
        for k in range(n_workers):
            procs.append(subprocess.Popen([RAGSVC, "worker"], env=env, cwd=work, start_new_session=True,
                                          stdout=(work / f"worker{k}.log").open("w"), stderr=subprocess.STDOUT))
        while True:
            with sessions() as s:
                left = s.scalar(select(func.count()).select_from(Job).where(Job.status.notin_(("done", "failed"))))
            if not left:
                break
            if time.time() - t0 > 1800:
                raise RuntimeError(f"{left} jobs still not done after 30 minutes")
            time.sleep(0.5)
        wall = time.time() - t0
        with sessions() as s:
            first = s.scalar(select(func.min(JobAttempt.started_at)))
            last = s.scalar(select(func.max(JobAttempt.ended_at)))
            chunks = s.scalar(select(func.count()).select_from(Chunk))
            failed = s.scalar(select(func.count()).select_from(Job).where(Job.status == "failed"))
            per_worker = dict(s.execute(select(JobAttempt.worker, func.count()).group_by(JobAttempt.worker)).all())
        engine.dispose()
        busy = (last - first).total_seconds()
        stages = stage_medians([work / f"worker{k}.log" for k in range(n_workers)])
        return {"workers": n_workers, "documents": n_docs, "chunks": chunks, "failed": failed,
                "seconds_first_claim_to_last_finish": round(busy, 2), "seconds_wall_with_startup": round(wall, 2),
                "documents_per_s": round(n_docs / busy, 2), "chunks_per_s": round(chunks / busy, 1),
                "jobs_per_worker": sorted(per_worker.values()), "median_stage_s_per_document": stages}
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=200)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--sections", type=int, default=3, help="headed sections per document (~1.3 chunks each)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "workers_throughput.json")
    args = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="ragsvc-workers-") as tmp:
        for k in args.workers:
            r = run(args.docs, k, Path(tmp), args.sections)
            print(json.dumps(r), flush=True)
            results.append(r)
    base = results[0]["documents_per_s"]
    for r in results:
        r["speedup_vs_first"] = round(r["documents_per_s"] / base, 2)
    out = {"cpu": cpu_model(), "cores": os.cpu_count(), "database": "PostgreSQL (local)", "runs": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
