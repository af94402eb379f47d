"""Generation on a remote vLLM OpenAI-compatible server (``RAGSVC_LLM_URL``), as ``docker compose`` runs it.

Same contract as the in-process engine: the prompt is rendered with the *server's* chat template
through its ``/tokenize`` endpoint (exact token counts), the assistant-turn prefill is appended as
token ids, and ``/v1/completions`` streams the continuation with the mode's sampling set explicitly.
"""

from __future__ import annotations

import json
import logging
from typing import AsyncIterator

import httpx

from ragsvc.errors import RagsvcError
from ragsvc.generation import EngineDown, Generation
from ragsvc.prompts import ModePlan
from ragsvc.settings import Settings

log = logging.getLogger(__name__)


class RemoteVllmGenerator:
    def __init__(self, base_url: str, model: str, max_model_len: int, timeout: float = 600.0) -> None:
        self.v1 = base_url.rstrip("/")
        self.root = self.v1[: -len("/v1")] if self.v1.endswith("/v1") else self.v1
        self.model_name = model
        self.max_model_len = max_model_len
        self._sync = httpx.Client(timeout=timeout)
        self._async = httpx.AsyncClient(timeout=timeout)

    @classmethod
    def start(cls, settings: Settings) -> "RemoteVllmGenerator":
        """Ask the server which model it serves and its context length (blocking: call from a thread)."""
        url = settings.llm_url.rstrip("/")
        try:
            with httpx.Client(timeout=30) as c:
                models = c.get(f"{url}/models").raise_for_status().json()["data"]
                model = settings.llm_model if settings.llm_model not in ("auto", "") else models[0]["id"]
                gen = cls(url, model, 0)
                probe = c.post(f"{gen.root}/tokenize", json={"model": model, "prompt": "x"}).raise_for_status().json()
        except (httpx.HTTPError, KeyError, IndexError, ValueError) as exc:
            raise RagsvcError(f"The vLLM server at {url} is not usable yet: {exc}") from exc
        gen.max_model_len = int(probe["max_model_len"])
        log.info("remote vLLM server %s serves %s (max_model_len %d)", url, model, gen.max_model_len)
        return gen

    def _tokenize(self, payload: dict) -> list[int]:
        try:
            r = self._sync.post(f"{self.root}/tokenize", json={"model": self.model_name, **payload})
            return r.raise_for_status().json()["tokens"]
        except httpx.TransportError as exc:
            raise self._down(exc) from exc
        except httpx.HTTPError as exc:
            raise RagsvcError(f"The vLLM server could not tokenize the prompt: {exc}") from exc

    def render(self, messages: list[dict], prefill: str) -> list[int]:
        ids = self._tokenize({"messages": messages, "add_generation_prompt": True})
        if prefill:
            ids += self._tokenize({"prompt": prefill, "add_special_tokens": False})
        return ids

    def count_prompt(self, messages: list[dict], prefill: str) -> int:
        return len(self.render(messages, prefill))

    def count_tokens(self, texts: list[str]) -> list[int]:
        return [len(self._tokenize({"prompt": t, "add_special_tokens": False})) for t in texts]

    async def stream(self, messages: list[dict], prefill: str, plan: ModePlan) -> AsyncIterator[tuple[str, Generation]]:
        import asyncio

        ids = await asyncio.to_thread(self.render, messages, prefill)
        if len(ids) + 1 > self.max_model_len:
            raise RagsvcError(f"The prompt has {len(ids)} tokens, over the model's {self.max_model_len}.")
        body = {"model": self.model_name, "prompt": ids, "stream": True, "temperature": plan.temperature,
                "top_p": plan.top_p, "max_tokens": min(plan.max_tokens, self.max_model_len - len(ids)),
                "stream_options": {"include_usage": True}}
        if plan.seed is not None:
            body["seed"] = plan.seed
        if plan.repetition_penalty != 1.0:  # vLLM's own extension of the OpenAI request
            body["repetition_penalty"] = plan.repetition_penalty
        if plan.frequency_penalty:
            body["frequency_penalty"] = plan.frequency_penalty
        totals = Generation(prompt_tokens=len(ids))
        try:
            async with self._async.stream("POST", f"{self.v1}/completions", json=body) as resp:
                if resp.status_code != 200:
                    detail = (await resp.aread()).decode(errors="replace")[:300]
                    raise RagsvcError(f"The vLLM server answered {resp.status_code}: {detail}")
                async for line in resp.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    chunk = json.loads(data)
                    if chunk.get("usage"):
                        totals.completion_tokens = chunk["usage"].get("completion_tokens", totals.completion_tokens)
                    for choice in chunk.get("choices", []):
                        text = choice.get("text") or ""
                        totals.text += text
                        totals.finish_reason = choice.get("finish_reason") or totals.finish_reason
                        if text:
                            yield text, totals
        except httpx.TransportError as exc:
            raise self._down(exc) from exc
        except httpx.HTTPError as exc:
            raise RagsvcError(f"Generation failed on the vLLM server: {exc}") from exc
        yield "", totals

    def _down(self, exc: Exception) -> EngineDown:
        # Nothing to restart on our side: the next request tries the server again.
        return EngineDown(f"The generation engine (the vLLM server at {self.v1}) is unreachable: "
                          f"{type(exc).__name__}: {exc}. Check that it runs; asking works again once it answers.",
                          retry_after=10)

    def health(self) -> str | None:
        try:
            self._sync.get(f"{self.root}/health", timeout=3).raise_for_status()
            return None
        except httpx.HTTPError as exc:
            return f"the vLLM server at {self.v1} does not answer ({type(exc).__name__})"

    def close(self) -> None:
        self._sync.close()
        try:
            import asyncio

            asyncio.get_running_loop().create_task(self._async.aclose())
        except RuntimeError:
            pass
