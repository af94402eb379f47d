"""The ingestion users would otherwise write with LangChain, timed once; prints one JSON line.

``PyPDFLoader`` -> ``RecursiveCharacterTextSplitter`` (its defaults as tutorials show them:
1,000 characters, 200 overlap) -> ``HuggingFaceEmbeddings`` (same all-MiniLM-L6-v2 folder, CPU,
library defaults) -> ``FAISS.from_documents``. The model is loaded and warmed up before the clock
starts, as ragsvc's pipeline has its embedder loaded at process start.

It runs in its own virtual environment (LangChain's packages would move huggingface_hub away from
what transformers 5.19 in ragsvc's venv needs); ``bench/ingest_pipeline.py`` creates that venv
under ``.cache/`` and starts this script as a subprocess once per run.

Also reported: how many chunks exceed the model's token limit, i.e. lose their tail silently.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from importlib.metadata import version

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pdf", required=True)
    ap.add_argument("--model", required=True, help="sentence-transformers model folder")
    args = ap.parse_args()

    import torch
    from langchain_community.document_loaders import PyPDFLoader
    from langchain_community.vectorstores import FAISS
    from langchain_huggingface import HuggingFaceEmbeddings
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    embeddings = HuggingFaceEmbeddings(model_name=args.model, model_kwargs={"device": "cpu"})
    embeddings.embed_documents(["warm-up sentence for the embedding model"] * 8)

    # Time spent inside the embedding calls FAISS.from_documents makes, to split the wall time.
    embed_s = 0.0
    inner = embeddings.embed_documents

    def timed_embed(texts):  # noqa: ANN001, ANN202
        nonlocal embed_s
        t = time.perf_counter()
        try:
            return inner(texts)
        finally:
            embed_s += time.perf_counter() - t

    object.__setattr__(embeddings, "embed_documents", timed_embed)

    t0 = time.perf_counter()
    pages = PyPDFLoader(args.pdf).load()
    t_load = time.perf_counter()
    chunks = RecursiveCharacterTextSplitter(chunk_size=1000, chunk_overlap=200).split_documents(pages)
    t_split = time.perf_counter()
    store = FAISS.from_documents(chunks, embeddings)
    wall = time.perf_counter() - t0
    assert store.index.ntotal == len(chunks)

    # Not timed: how many chunks the model silently cuts at its limit (special tokens included).
    model = embeddings._client
    tokenizer, limit = model.tokenizer, int(model.max_seq_length)
    counts = [len(ids) for ids in tokenizer([c.page_content for c in chunks], truncation=False, verbose=False)["input_ids"]]
    truncated = sum(1 for n in counts if n > limit)
    print(json.dumps({
        "wall_s": wall, "load_s": t_load - t0, "split_s": t_split - t_load, "embed_s": embed_s,
        "index_s": wall - (t_split - t0) - embed_s,
        "pages": len(pages), "chunks": len(chunks), "model_limit": limit,
        "mean_tokens": sum(counts) / len(counts), "max_tokens": max(counts),
        "truncated": truncated, "truncated_share": truncated / len(chunks),
        "torch_threads": torch.get_num_threads(),
        "packages": {p: version(p) for p in ("langchain-community", "langchain-text-splitters",
                                             "langchain-huggingface", "langchain-core", "pypdf",
                                             "sentence-transformers", "transformers", "torch", "faiss-cpu")},
    }))


if __name__ == "__main__":
    sys.exit(main())
