"""Where to set ``RAGSVC_MIN_RELEVANCE``: best dense similarity for questions a collection answers vs
questions it does not, measured on the Debian Reference PDF with the real pipeline and retrieval.

On-topic: questions whose answer is in the manual. Off-topic: general-knowledge and other-domain
questions from ``bench/data/lookups.txt`` that the manual cannot answer. Prints both distributions and
the share of each class kept or refused at candidate thresholds.

    .venv/bin/python bench/relevance_threshold.py [--pdf PATH]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ingest.pipeline import Pipeline  # noqa: E402
from ragsvc.db import Collection, Document, Job  # noqa: E402
from ragsvc.db.migrate import upgrade  # noqa: E402
from ragsvc.db.session import make_engine, make_sessionmaker  # noqa: E402
from ragsvc.embedder import SentenceTransformerEmbedder  # noqa: E402
from ragsvc.index_store import IndexStore  # noqa: E402
from ragsvc.keyword_index import KeywordStore  # noqa: E402
from ragsvc.retrieval import retrieve  # noqa: E402

ON_TOPIC = [
    "Which file under /proc is an image of the system's memory?",
    "How do I change my login shell?",
    "What does apt-get autoremove do?",
    "Which file sets the system hostname?",
    "What is the purpose of the /etc/fstab file?",
    "How do I mount a USB stick?",
    "Where is the kernel log written?",
    "What is the user id of root?",
    "What does the -r flag of rm do?",
    "What is the meaning of the sticky bit?",
    "How can I see which packages are installed?",
    "How do I make a backup of my home directory with rsync?",
    "What is tmpfs?",
    "How do I add a user to the sudo group?",
    "What does the dpkg --purge option remove?",
    "How do I set the timezone?",
    "What is Midnight Commander?",
    "How do I switch to a virtual console?",
    "Which command shows the disk usage of a directory?",
    "How do I configure a static IP address?",
]
OFF_TOPIC = [
    "What is the capital of Australia?", "Who wrote the novel Middlemarch?", "Who painted The Night Watch?",
    "What color is the Quintaro bridge?", "When does the reading room close on Fridays?",
    "How long can borrowers keep a book?", "What is the chemical symbol for tungsten?",
    "Who discovered penicillin?", "In which city was Mozart born?", "What is the tallest mountain in Africa?",
    "What language is spoken in Brazil?", "Who directed the film Jaws?", "What is the currency of Japan?",
    "What is the main ingredient of guacamole?", "How many strings does a cello have?",
    "Who composed the Four Seasons?", "Which river flows through Vienna?", "Who invented the telephone?",
    "How many vacation days do new employees get?", "What is the monthly rent in the contract?",
    "What is the dosage of ibuprofen for adults?", "What is the recommended tire pressure?",
    "How often is the engine serviced?", "When did chef Amira Solberg open her first restaurant?",
    "What is the budget for the dry dock repair?", "Where are the life jackets stored?",
    "What is the half-life of carbon-14?", "When did Apollo 11 land on the Moon?",
    "What is the national animal of Scotland?", "What is the population of Iceland?",
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pdf", default="/usr/share/debian-reference/debian-reference.en.pdf")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "relevance_threshold.json"))
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ragsvc-relevance-"))
    url = f"sqlite:///{tmp / 'r.db'}"
    upgrade(url)
    sessions = make_sessionmaker(make_engine(url))
    embedder = SentenceTransformerEmbedder("all-MiniLM-L6-v2")
    store, keywords = IndexStore(tmp / "indexes", embedder.dim), KeywordStore()
    data = Path(args.pdf).read_bytes()
    copy = tmp / "doc.pdf"
    copy.write_bytes(data)
    with sessions() as s, s.begin():
        coll = Collection(name="bench")
        s.add(coll)
        s.flush()
        doc = Document(collection_id=coll.id, filename=Path(args.pdf).name, kind="pdf", size_bytes=len(data),
                       sha256=hashlib.sha256(data).hexdigest(), storage_path=str(copy))
        s.add(doc)
        s.flush()
        s.add(Job(document_id=doc.id, status="done"))
        coll_id, doc_id = coll.id, doc.id
    print("ingesting…", file=sys.stderr)
    Pipeline(sessions, embedder, store, 200).process(doc_id)  # keyword entries are written as it turns ready

    def best(q: str) -> tuple[float, float]:
        with sessions() as s:
            hits = retrieve(s, embedder, store, keywords, coll_id, q, 5)
        return max((h.dense_score or 0 for h in hits), default=0.0), max((h.keyword_score or 0 for h in hits), default=0.0)

    on = [best(q) for q in ON_TOPIC]
    off = [best(q) for q in OFF_TOPIC]
    result = {"on_topic": dict(zip(ON_TOPIC, on)), "off_topic": dict(zip(OFF_TOPIC, off)), "thresholds": {}}
    print("| best dense similarity | min | median | max |\n|---|---:|---:|---:|")
    for name, vals in (("on-topic (answer in the manual)", on), ("off-topic", off)):
        d = [v[0] for v in vals]
        print(f"| {name} ({len(d)}) | {min(d):.3f} | {statistics.median(d):.3f} | {max(d):.3f} |")
    print("\n| threshold | on-topic answered | off-topic refused |\n|---:|---:|---:|")
    for t in (0.2, 0.25, 0.3, 0.35, 0.4, 0.45):
        kept = sum(v[0] >= t for v in on) / len(on)
        refused = sum(v[0] < t for v in off) / len(off)
        result["thresholds"][t] = {"on_topic_answered": kept, "off_topic_refused": refused}
        print(f"| {t:.2f} | {kept:.0%} | {refused:.0%} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
