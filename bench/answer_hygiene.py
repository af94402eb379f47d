"""Answer hygiene on the small CPU model: loops and echoed prompt scaffolding, before and after.

Runs the real ask path (retrieval, packing, vLLM on SmolLM2-135M with greedy ``off`` decoding, citation
checks) over a seeded subset of the eval sets (``bench/eval/debian.jsonl``, ``wiki.jsonl``) on the eval
corpus, ingested by the real pipeline. Every question is asked under each condition in the same run, on
the same engine, one request at a time, in an order that rotates per question:

- ``before``: ``RAGSVC_ANSWER_HYGIENE=false`` (the model's raw text, as main hands it over);
- ``after``: the loop guard and the scaffold stripper;
- ``after`` with vLLM's ``repetition_penalty`` or ``frequency_penalty``;
- ``after`` with the question last and unlabelled in the prompt (a prompt-format candidate).

Per condition: the share of answers with a repeated sentence and with echoed scaffolding (both checked
here by simple, separate code, not by the modules under test), median answer length, engine time and
completion tokens per answer, answer match and citation precision (``ragsvc.evaluation``'s metrics).

    .venv/bin/python bench/answer_hygiene.py [--per-set 5] [--max-tokens 256] [--workdir /tmp/ragsvc-hygiene]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench" / "eval"))

import ragsvc.ask as ask_module  # noqa: E402
from ingest.pipeline import Pipeline  # noqa: E402
from ragsvc import prompts  # noqa: E402
from ragsvc.ask import AskRequest, AskService  # noqa: E402
from ragsvc.citations import MARKER, split_sentences  # noqa: E402
from ragsvc.db.migrate import upgrade  # noqa: E402
from ragsvc.db.session import make_engine, make_sessionmaker  # noqa: E402
from ragsvc.documents import DocumentService, Upload  # noqa: E402
from ragsvc.embedder import make_embedder  # noqa: E402
from ragsvc.evaluation import load_questions, score  # noqa: E402
from ragsvc.generation import EngineSlot, VllmGenerator  # noqa: E402
from ragsvc.index_store import IndexStore  # noqa: E402
from ragsvc.keyword_index import KeywordStore  # noqa: E402
from ragsvc.settings import Settings  # noqa: E402

COLLECTION = "eval"
_WORD = re.compile(r"[a-z0-9]+")


def question_last(profile: str, mode: str, question: str, passages_block: str):  # noqa: ANN201
    """Candidate prompt format: the question last, with no "Question:" label for the model to continue."""
    messages, prefill = prompts.build_messages(profile, mode, question, passages_block)
    if profile != "nemotron":
        messages[1]["content"] = (f"Context:\n{passages_block}\n\n{prompts.GENERIC_INSTRUCTION}\n\n{question}")
    return messages, prefill


CONDITIONS = {
    "before": ({"answer_hygiene": False}, None),
    "after": ({}, None),
    "after+repetition_penalty=1.1": ({"llm_repetition_penalty": 1.1}, None),
    "after+frequency_penalty=0.5": ({"llm_frequency_penalty": 0.5}, None),
    "after+question_last": ({}, question_last),
}


# --- the checks, written apart from ragsvc.loop_guard / ragsvc.scaffold on purpose ------------------

def words(text: str) -> tuple[str, ...]:
    return tuple(_WORD.findall(MARKER.sub(" ", text).lower()))


def repeated_sentence(answer: str) -> bool:
    seen = set()
    for line in answer.split("\n"):
        for sentence in split_sentences(line):
            w = words(sentence)
            if len(w) >= 3:
                if w in seen:
                    return True
                seen.add(w)
    return False


def echoed_scaffolding(answer: str, question: str, filenames: list[str]) -> list[str]:
    low = answer.lower()
    found = [label for label in ("question:", "answer briefly", "answer:", "context:", "passages:", "<passage",
                                 "</passage") if label in low]
    flat, q = "".join(words(answer)), "".join(words(question))
    if len(q) >= 12 and q in flat:
        found.append("the question")
    if "".join(words(prompts.GENERIC_INSTRUCTION)) in flat:
        found.append("the instruction")
    found += [f"({name}" for name in filenames if f"({name}".lower() in low]
    return found


# --- corpus and service ---------------------------------------------------------------------------

def ingest(settings: Settings, sessions, embedder, store, corpus: Path) -> None:  # noqa: ANN001
    import corpus as eval_corpus

    if not (corpus / "debian").exists():
        eval_corpus.build(corpus)
    files = sorted(p for p in corpus.rglob("*") if p.is_file())
    docs = DocumentService(settings, sessions, store)
    created = docs.create(COLLECTION, [Upload(p.name, p.read_bytes()) for p in files])
    pipeline = Pipeline(sessions, embedder, store, settings.chunk_tokens, settings.files_dir.resolve())
    t0 = time.perf_counter()
    for i, d in enumerate(created, 1):
        pipeline.process(d["id"])
        if i % 25 == 0:
            print(f"ingested {i}/{len(created)} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)


def summarize(rows: list[dict]) -> dict:
    n = len(rows)
    generated = [r for r in rows if r["completion_tokens"]]
    answerable = [r for r in rows if r["answer_match"] is not None]
    precisions = [r["citation_precision"] for r in rows if r["citation_precision"] is not None]
    engine = [r["engine_ms"] for r in generated]
    return {
        "questions": n, "generated": len(generated),
        "repeated_sentence": sum(r["repeated_sentence"] for r in rows) / n,
        "echoed_scaffolding": sum(bool(r["echo"]) for r in rows) / n,
        "finish_repetition": sum(r["finish_reason"] == "repetition" for r in rows) / n,
        "finish_length": sum(r["finish_reason"] == "length" for r in rows) / n,
        "empty_answer": sum(not r["answer"].strip() for r in rows) / n,
        "median_answer_words": statistics.median(len(r["answer"].split()) for r in rows),
        "median_engine_ms": statistics.median(engine) if engine else None,
        "mean_engine_ms": statistics.fmean(engine) if engine else None,
        "mean_completion_tokens": statistics.fmean(r["completion_tokens"] for r in generated) if generated else None,
        "answer_match": sum(bool(r["answer_match"]) for r in answerable) / len(answerable) if answerable else None,
        "n_answerable": len(answerable),
        "citation_precision": statistics.fmean(precisions) if precisions else None,
        "n_citation_precision": len(precisions),
    }


async def run(settings: Settings, asker: AskService, slot: EngineSlot, questions: list, names: list[str],
              max_tokens: int) -> dict[str, list[dict]]:
    """Every question under every condition, one request at a time, on one engine (one event loop)."""
    slot.generator = await asyncio.to_thread(VllmGenerator.start, settings)
    rows: dict[str, list[dict]] = {c: [] for c in names}
    original = ask_module.build_messages
    try:
        for i, q in enumerate(questions):
            order = names[i % len(names):] + names[: i % len(names)]  # rotate: no condition always runs first
            for cond in order:
                updates, builder = CONDITIONS[cond]
                asker.settings = settings.model_copy(update=updates)
                ask_module.build_messages = builder or original
                req = AskRequest(question=q.question, mode="off", collection=COLLECTION, max_tokens=max_tokens)
                t0 = time.perf_counter()
                result = await asker.ask(req)
                latency = (time.perf_counter() - t0) * 1000
                row = score(q, {}, result, latency)
                files = sorted({p["filename"] for p in result["passages"]})
                row |= {"condition": cond, "finish_reason": result["finish_reason"],
                        "completion_tokens": result["usage"]["completion_tokens"],
                        "engine_ms": result["timings"].get("engine_ms", 0.0),
                        "repeated_sentence": repeated_sentence(result["answer"]),
                        "echo": echoed_scaffolding(result["answer"], q.question, files)}
                rows[cond].append(row)
                print(f"[{i + 1}/{len(questions)}] {cond}: {row['finish_reason']}, {row['completion_tokens']} tok, "
                      f"{row['engine_ms'] / 1000:.1f} s, match {row['answer_match']}, rep {row['repeated_sentence']}, "
                      f"echo {row['echo']}", file=sys.stderr, flush=True)
    finally:
        ask_module.build_messages = original
        slot.generator.close()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-set", type=int, default=5, help="questions drawn (seeded) from each eval set")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--corpus", default="/tmp/eval-corpus")
    ap.add_argument("--workdir", default="/tmp/ragsvc-hygiene", help="kept between runs: ingestion is done once")
    ap.add_argument("--conditions", default=",".join(CONDITIONS))
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "answer_hygiene.json"))
    args = ap.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{work / 'h.db'}"
    fresh = not (work / "ingested").exists()
    upgrade(url)
    settings = Settings(data_dir=work / "data", index_dir=work / "indexes", database_url=url)
    sessions = make_sessionmaker(make_engine(url))
    embedder = make_embedder(settings)
    store, keywords = IndexStore(settings.index_dir, embedder.dim), KeywordStore()
    if fresh:
        ingest(settings, sessions, embedder, store, Path(args.corpus))
        (work / "ingested").touch()

    rng = random.Random(args.seed)
    questions = []
    for name in ("debian.jsonl", "wiki.jsonl"):
        qs = load_questions(ROOT / "bench" / "eval" / name)
        questions += rng.sample(qs, min(args.per_set, len(qs)))
    names = args.conditions.split(",")
    slot = EngineSlot()
    rows = asyncio.run(run(settings, AskService(settings, sessions, embedder, store, keywords, slot), slot,
                           questions, names, args.max_tokens))
    summary = {c: summarize(rows[c]) for c in names}
    cols = ["repeated_sentence", "echoed_scaffolding", "finish_repetition", "median_answer_words",
            "median_engine_ms", "mean_engine_ms", "mean_completion_tokens", "answer_match", "citation_precision"]
    print("| condition | " + " | ".join(cols) + " |\n|---|" + "---:|" * len(cols))
    for c in names:
        s = summary[c]
        print(f"| {c} | " + " | ".join("—" if s[k] is None else f"{s[k]:.3g}" for k in cols) + " |")
    out = {"model": settings.llm_model, "mode": "off", "max_tokens": args.max_tokens,
           "questions": [q.id for q in questions], "seed": args.seed, "per_set": args.per_set,
           "summary": summary, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
