"""Quality gate of an embedding backend: dense retrieval recall@10 on the eval set, torch fp32 vs the backend.

The eval corpus (``bench/eval/corpus.py build DIR``: Debian Reference PDF, Debian FAQ, 300 Wikipedia
leads) is parsed and chunked exactly as the pipeline does; every chunk's ``embedding_input()`` is
embedded by each backend, and every question of ``bench/eval/*.jsonl`` that has evidence retrieves its
top 10 chunks by cosine (dense only: the keyword half of hybrid retrieval does not depend on the
backend). recall@10 = share of questions all of whose evidence strings (whitespace-normalised, as
``ragsvc eval`` matches them) lie in one of the top-10 chunks; ``piece_recall`` counts each evidence
string of a multi-hop question on its own. Also: how many of the top-10 chunk ids the backends share.

    .venv/bin/python bench/embedding_recall.py CORPUS_DIR [--backends torch openvino openvino:bfloat16]

A backend is ``NAME[:DTYPE]`` (``torch``, ``openvino``; dtype ``float32`` or ``bfloat16``); the first
one listed is the reference the others' top-10 overlap is measured against.

Writes ``bench/results/ingest_backend_recall.json``. Adopt a backend by default only if its recall@10
is within one point of torch's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

OUT = ROOT / "bench" / "results" / "ingest_backend_recall.json"
K = 10


def corpus_chunks(folder: Path, embedder) -> list:  # noqa: ANN001
    from ingest.chunker import Chunker
    from ingest.parsers import parse
    from ragsvc.filetypes import detect_kind

    chunker = Chunker(embedder, 200)
    out = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = path.read_bytes()
        out.extend(chunker.chunk(parse(detect_kind(path.name, data), data)))
    return out


def main() -> None:
    import numpy as np

    from ragsvc.embedder import SentenceTransformerEmbedder
    from ragsvc.evaluation import load_questions, normalize_ws
    from ragsvc.settings import Settings

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--backends", nargs="+", default=["torch", "openvino"])
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()

    questions = [q for f in sorted((ROOT / "bench" / "eval").glob("*.jsonl")) for q in load_questions(f) if q.evidence]
    embedders = {}
    for spec in args.backends:
        backend, _, dtype = spec.partition(":")
        embedders[spec] = SentenceTransformerEmbedder("all-MiniLM-L6-v2", backend=backend, dtype=dtype or "float32",
                                                      cache_dir=Settings().cache_dir)
    chunks = corpus_chunks(args.corpus, embedders[args.backends[0]])
    flat = [normalize_ws(c.text) for c in chunks]
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), "unknown")
    result = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "corpus": str(args.corpus),
              "cpu_model": cpu, "cpu_bf16": "avx512_bf16" in Path("/proc/cpuinfo").read_text(),
              "chunks": len(chunks), "questions_with_evidence": len(questions), "k": K, "backends": {}}
    tops = {}
    for name, emb in embedders.items():
        t0 = time.perf_counter()
        vecs = emb.embed([c.embedding_input() for c in chunks])
        embed_s = time.perf_counter() - t0
        qv = emb.embed([q.question for q in questions])
        top = np.argsort(-(qv @ vecs.T), axis=1)[:, :K]
        tops[name] = top
        hits, pieces, found = 0, 0, 0
        for q, row in zip(questions, top):
            got = [any(normalize_ws(e) in flat[i] for i in row) for e in q.evidence]
            hits += all(got)
            pieces += len(got)
            found += sum(got)
        result["backends"][name] = {
            "backend": emb.backend, "precision": emb.precision,
            "recall_at_10": hits / len(questions), "hits": hits, "piece_recall": found / pieces,
            "embed_chunks_s": embed_s, "chunks_per_s": len(chunks) / embed_s,
        }
        if name != args.backends[0]:
            ref = tops[args.backends[0]]
            result["backends"][name]["top10_same_as_" + args.backends[0]] = float(np.mean(
                [len(set(a) & set(b)) / K for a, b in zip(top.tolist(), ref.tolist())]))
        print(name, result["backends"][name], file=sys.stderr)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["backends"], indent=2))


if __name__ == "__main__":
    main()
