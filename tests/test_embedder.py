"""The embedding backends: OpenVINO must give torch's vectors, and torch must take over when it cannot load."""

from __future__ import annotations

import logging
import sys

import numpy as np
import pytest

from ragsvc.embedder import SentenceTransformerEmbedder, make_embedder
from ragsvc.settings import Settings

# Real sentences of the kinds the service embeds: manual passages, a question, a short and an
# over-long text (the last is truncated at the model limit by both backends alike).
SENTENCES = [
    "The directory /proc contains (among other things) one subdirectory for each process running on the system.",
    "Which file under /proc is an image of the system memory?",
    "apt-get install installs a package together with the packages it depends on.",
    "Hello.",
    "The kernel logs messages to the ring buffer, which dmesg prints. " * 30,
]


@pytest.fixture(scope="module")
def torch_embedder():
    return SentenceTransformerEmbedder("all-MiniLM-L6-v2", backend="torch")


@pytest.fixture(scope="module")
def ov_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("ragsvc-cache")


@pytest.fixture(scope="module")
def ov_embedder(ov_cache):
    pytest.importorskip("openvino")
    # float32 explicitly: these tests check OpenVINO against torch's own vectors, exactly.
    return SentenceTransformerEmbedder("all-MiniLM-L6-v2", backend="openvino", cache_dir=ov_cache, dtype="float32")


def test_openvino_vectors_agree_with_torch(torch_embedder, ov_embedder):
    assert ov_embedder.backend == "openvino"
    ref, vecs = torch_embedder.embed(SENTENCES), ov_embedder.embed(SENTENCES)
    assert vecs.shape == ref.shape == (len(SENTENCES), 384) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert (vecs * ref).sum(axis=1).min() > 0.99
    # Order is kept although the backend embeds in length-sorted batches (batch size 32 > 5 texts,
    # so embed one at a time too, which also checks that padding does not change a vector).
    one_by_one = np.vstack([ov_embedder.embed([s]) for s in SENTENCES])
    assert (one_by_one * vecs).sum(axis=1).min() > 0.9999


def test_openvino_model_is_converted_once_and_reused(ov_embedder, ov_cache, caplog):
    saved = list((ov_cache / "openvino").glob("*/model.xml"))
    assert len(saved) == 1
    mtime = saved[0].stat().st_mtime_ns
    again = SentenceTransformerEmbedder("all-MiniLM-L6-v2", backend="openvino", cache_dir=ov_cache, dtype="float32")
    assert again.backend == "openvino" and saved[0].stat().st_mtime_ns == mtime
    np.testing.assert_allclose(again.embed(SENTENCES[:2]), ov_embedder.embed(SENTENCES[:2]), atol=1e-6)


def test_falls_back_to_torch_when_openvino_cannot_load(torch_embedder, monkeypatch, tmp_path, caplog):
    monkeypatch.setitem(sys.modules, "openvino", None)  # makes `import openvino` raise ImportError
    with caplog.at_level(logging.WARNING, logger="ragsvc.embedder"):
        emb = SentenceTransformerEmbedder("all-MiniLM-L6-v2", backend="auto", cache_dir=tmp_path)
    assert emb.backend == "torch"
    assert "could not load" in caplog.text and "openvino" in caplog.text
    np.testing.assert_allclose(emb.embed(SENTENCES[:2]), torch_embedder.embed(SENTENCES[:2]), atol=1e-6)


def test_settings_choose_the_backend(tmp_path):
    emb = make_embedder(Settings(embedding_backend="torch", embedding_dtype="float32", cache_dir=tmp_path))
    assert emb.backend == "torch" and emb.precision == "f32"
    with pytest.raises(ValueError):
        SentenceTransformerEmbedder("all-MiniLM-L6-v2", backend="onnx")  # type: ignore[arg-type]


@pytest.mark.parametrize("backend", ["torch", "openvino"])
def test_bfloat16_stays_close_to_float32(torch_embedder, backend, tmp_path):
    if backend == "openvino":
        pytest.importorskip("openvino")
    emb = SentenceTransformerEmbedder("all-MiniLM-L6-v2", backend=backend, dtype="bfloat16", cache_dir=tmp_path)
    assert emb.backend == backend
    # OpenVINO computes in f32 on a CPU without bf16 support whatever is asked; torch always obeys.
    assert emb.precision in (("bf16",) if backend == "torch" else ("bf16", "f32"))
    vecs = emb.embed(SENTENCES)
    assert vecs.dtype == np.float32
    assert (vecs * torch_embedder.embed(SENTENCES)).sum(axis=1).min() > 0.99


# Texts whose tokenisation differs in ways a shortcut could get wrong: accents and CJK, control and
# zero-width characters, whitespace only, a word longer than any vocabulary piece, and over-long text.
TRICKY = SENTENCES + ["Ünïcödé façade — naïve café 東京 ½", "tab\there\u200bzero-width", "   ", "",
                      "x" * 300, "supercalifragilisticexpialidocious " * 200]


def test_token_counts_match_the_models_own_tokenizer_uncut(torch_embedder):
    # The chunker sizes chunks with these counts, so they must be transformers' exact counts, with the
    # special tokens and without truncation, even after an embed call set truncation on the tokenizer.
    torch_embedder.embed(SENTENCES)
    ref = [len(ids) for ids in torch_embedder._tokenizer(TRICKY, truncation=False, verbose=False)["input_ids"]]
    assert torch_embedder.count_tokens(TRICKY) == ref
    assert max(ref) > torch_embedder.max_tokens  # the long ones really are over the limit, and counted
    assert torch_embedder.count_tokens([]) == []


def test_openvino_model_inputs_match_the_tokenizers_padding(ov_embedder):
    # The encoder pads Rust encodings itself; they must be the arrays sentence-transformers would feed.
    enc = ov_embedder._ov
    ours = enc._pad(enc._tokenize(TRICKY))
    tok = ov_embedder._tokenizer
    ref = tok(TRICKY, truncation=True, max_length=ov_embedder.max_tokens, padding=True, return_tensors="np")
    assert set(ours) == set(enc._inputs)
    for name in enc._inputs:
        np.testing.assert_array_equal(ours[name], ref[name].astype(np.int64), err_msg=name)
    assert ours["input_ids"].shape[1] == ov_embedder.max_tokens


def test_auto_precision_is_bf16_only_where_the_cpu_computes_it_natively(tmp_path):
    from ragsvc.embedder import cpu_has_native_bf16, resolve_dtype

    zen5 = "processor : 0\nflags : fpu sse avx2 avx512f avx512_bf16 avx512_vnni\n"
    sapphire = "flags\t\t: fpu avx2 avx512f amx_bf16 amx_tile\n"
    avx2_only = "flags : fpu sse avx2 fma\nbugs : avx512_bf16_not_a_flag\n"
    assert cpu_has_native_bf16(zen5) and cpu_has_native_bf16(sapphire) and not cpu_has_native_bf16(avx2_only)
    assert resolve_dtype("float32", "cpu") == "float32" and resolve_dtype("bfloat16", "cuda") == "bfloat16"
    assert resolve_dtype("auto", "cuda") == "float32"
    native = cpu_has_native_bf16()
    assert resolve_dtype("auto", "cpu") == ("bfloat16" if native else "float32")
    with pytest.raises(ValueError):
        resolve_dtype("int8", "cpu")
    # The service's default: what this machine's CPU supports, on the backend the settings pick.
    emb = make_embedder(Settings(cache_dir=tmp_path))
    print(f"default embedder here: backend {emb.backend}, precision {emb.precision} (native bf16: {native})")
    if emb.backend == "openvino":
        assert emb.precision == ("bf16" if native else "f32")
