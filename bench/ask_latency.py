"""Answer latency and throughput of the running service, sequential against concurrent askers.

Starts ``ragsvc serve`` (the small CPU model unless ``--url`` points at a running service), ingests the
test facts PDF (or ``--pdf``), then asks the same questions one at a time and with ``--concurrency``
askers at once, per mode. Reports p50/p99 end-to-end latency, time to first token (streamed), and the
service overhead = end-to-end − (retrieval + engine) time as the server reports them. Goals: overhead at
most 10% of end-to-end; concurrent answer throughput at least 3× sequential (vLLM batches requests).

    .venv/bin/python bench/ask_latency.py [--url URL] [--concurrency 8] [--questions 16]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

QUESTIONS = [
    "What color is the Quintaro bridge?", "How long is the Quintaro bridge?", "When did the Quintaro bridge open?",
    "Where was the Zorblax reactor built?", "When was the Zorblax reactor built?",
    "How much power does the Zorblax reactor produce?", "Who opened a restaurant in Bergen?",
    "What is Amira Solberg's menu known for?", "Which river does the Quintaro bridge cross?",
    "What does the operations manual cover?", "In which city did Amira Solberg open her first restaurant?",
    "What powers the northern harbour?", "When did Amira Solberg open her first restaurant?",
    "What is painted bright orange?", "Which reactor was built in 1987?", "What is smoked trout known for?",
]


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def ask_streamed(client: httpx.Client, question: str, mode: str) -> dict:
    t0 = time.perf_counter()
    first = None
    final = None
    with client.stream("POST", "/v1/ask", json={"question": question, "mode": mode, "stream": True}) as r:
        name = None
        for line in r.iter_lines():
            if line.startswith("event:"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                if name == "answer" and first is None:
                    first = time.perf_counter()
                if name == "final":
                    final = json.loads(line[5:])
    end = time.perf_counter()
    t = final["timings"]
    return {"e2e_ms": (end - t0) * 1000, "ttft_ms": ((first or end) - t0) * 1000,
            "retrieve_ms": t["retrieve_ms"], "engine_ms": t.get("engine_ms", t["generate_ms"]),
            "tokens": final["usage"]["completion_tokens"]}


def run(url: str, mode: str, questions: list[str], concurrency: int) -> dict:
    with httpx.Client(base_url=url, timeout=900) as client:
        t0 = time.perf_counter()
        if concurrency == 1:
            rows = [ask_streamed(client, q, mode) for q in questions]
        else:
            with ThreadPoolExecutor(concurrency) as pool:
                rows = list(pool.map(lambda q: ask_streamed(client, q, mode), questions))
        wall = time.perf_counter() - t0
    e2e = [r["e2e_ms"] for r in rows]
    overhead = [r["e2e_ms"] - r["retrieve_ms"] - r["engine_ms"] for r in rows]
    return {"mode": mode, "concurrency": concurrency, "questions": len(rows), "wall_s": wall,
            "answers_per_s": len(rows) / wall, "p50_ms": pct(e2e, 0.5), "p99_ms": pct(e2e, 0.99),
            "ttft_p50_ms": pct([r["ttft_ms"] for r in rows], 0.5),
            "overhead_share": statistics.median(o / e for o, e in zip(overhead, e2e)),
            "tokens_per_answer": statistics.mean(r["tokens"] for r in rows)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--questions", type=int, default=16)
    ap.add_argument("--modes", default="off,on")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "ask_latency.json"))
    args = ap.parse_args()
    questions = (QUESTIONS * 4)[: args.questions]
    proc = None
    url = args.url
    if not url:
        from tests.conftest import start_service, stop_service
        from tests.docmaker import FACT_PAGES, make_pdf

        tmp = Path(tempfile.mkdtemp(prefix="ragsvc-ask-bench-"))
        # On-mode output is capped so a run takes minutes, not hours, with the 135M model on a CPU.
        svc = start_service(tmp, None, "bench", extra_env={"RAGSVC_MAX_TOKENS_ON": "256"})
        proc = svc
        url = svc.url
        doc = svc.upload([("harbour-facts.pdf", make_pdf(FACT_PAGES), "application/pdf")]).json()["documents"][0]
        svc.wait_done(doc["id"])
    results = []
    try:
        for mode in args.modes.split(","):
            run(url, mode, questions[:2], 1)  # warm-up
            for c in (1, args.concurrency):
                r = run(url, mode, questions, c)
                results.append(r)
                print(f"{mode} x{c}: {r['answers_per_s']:.2f} answers/s p50 {r['p50_ms']:.0f} ms "
                      f"p99 {r['p99_ms']:.0f} ms ttft {r['ttft_p50_ms']:.0f} ms overhead {r['overhead_share']:.1%}",
                      file=sys.stderr)
    finally:
        if proc is not None:
            stop_service(proc)
    print("| Mode | Askers | Answers/s | p50 | p99 | TTFT p50 | Overhead (median share) | Tokens/answer |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['mode']} | {r['concurrency']} | {r['answers_per_s']:.2f} | {r['p50_ms'] / 1000:.1f} s | "
              f"{r['p99_ms'] / 1000:.1f} s | {r['ttft_p50_ms'] / 1000:.2f} s | {r['overhead_share']:.1%} | "
              f"{r['tokens_per_answer']:.0f} |")
    by = {(r["mode"], r["concurrency"]): r for r in results}
    for mode in args.modes.split(","):
        seq, conc = by.get((mode, 1)), by.get((mode, args.concurrency))
        if seq and conc:
            print(f"\n{mode}: {args.concurrency} askers give {conc['answers_per_s'] / seq['answers_per_s']:.1f}x "
                  f"the sequential answer throughput")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
