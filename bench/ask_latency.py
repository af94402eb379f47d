"""Answer latency and throughput of the running service, sequential against concurrent askers.

Starts ``ragsvc serve`` (the small CPU model unless ``--url`` points at a running service), ingests the
test facts PDF (or ``--pdf``), then asks the questions with each number of concurrent askers in
``--concurrency`` (default 1, 8 and 32), per mode; a level with more askers than ``--questions`` asks
as many questions as it has askers, so that every asker has one. The levels are run ``--runs`` times in
interleaved rounds and each figure is the median over the rounds. Reports p50/p99 end-to-end latency,
time to first token (streamed), and the service overhead = end-to-end − (retrieval + engine) time as
the server reports them. Goals: overhead at most 10% of end-to-end; concurrent answer throughput at
least 3× sequential (vLLM batches requests).

    flock /tmp/ragsvc-cpu.lock .venv/bin/python bench/ask_latency.py [--url URL] [--concurrency 1,8,32]
        [--questions 16] [--runs 2]
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
    # A seed per question: sampled (`on`) answers are then the same text at every concurrency level, so
    # the levels compare the same work (unseeded, the x8 run happened to write 55% longer answers).
    seed = int.from_bytes(question.encode()[:6].ljust(6, b"\0"), "big")
    body = {"question": question, "mode": mode, "stream": True, "seed": seed}
    with client.stream("POST", "/v1/ask", json=body) as r:
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


def median_of(rounds: list[dict]) -> dict:
    """Each measure's median over the rounds of one mode and level; the rounds themselves kept too."""
    first = rounds[0]
    out = {k: (statistics.median(r[k] for r in rounds) if isinstance(v, float) else v) for k, v in first.items()}
    out["runs"] = len(rounds)
    out["rounds"] = rounds
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url")
    ap.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8, 32],
                    help="comma-separated numbers of concurrent askers; 1 is the sequential baseline")
    ap.add_argument("--questions", type=int, default=16)
    ap.add_argument("--runs", type=int, default=2, help="rounds over all levels; figures are medians over rounds")
    ap.add_argument("--modes", default="off,on")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "ask_latency.json"))
    args = ap.parse_args()
    pool = QUESTIONS * 4  # repeated questions are answered again: nothing is cached
    levels = sorted(set(args.concurrency) | {1})
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
            run(url, mode, pool[:2], 1)  # warm-up
            rounds: dict[int, list[dict]] = {c: [] for c in levels}
            for _ in range(args.runs):  # interleaved: a noisy minute on the shared machine hits every level
                for c in levels:
                    r = run(url, mode, pool[: max(args.questions, c)], c)
                    rounds[c].append(r)
                    print(f"{mode} x{c}: {r['answers_per_s']:.2f} answers/s p50 {r['p50_ms']:.0f} ms "
                          f"p99 {r['p99_ms']:.0f} ms ttft {r['ttft_p50_ms']:.0f} ms "
                          f"overhead {r['overhead_share']:.1%}", file=sys.stderr)
            results += [median_of(rounds[c]) for c in levels]
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
        seq = by.get((mode, 1))
        for c in levels[1:]:
            conc = by.get((mode, c))
            if seq and conc:
                conc["throughput_vs_sequential"] = conc["answers_per_s"] / seq["answers_per_s"]
                print(f"{mode}: {c} askers give {conc['throughput_vs_sequential']:.2f}x the sequential "
                      "answer throughput")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
