"""OpenAI-compatible ``POST /v1/chat/completions`` over the ask service, so chat front ends that speak
that API work unchanged.

``model`` is ``ragsvc`` (the default collection) or ``ragsvc/<collection>``; the last user message is
the question. The answer comes back with its citation markers, followed by a "Sources" list in the
message itself, and as structured ``citations`` (plus the whole ask result under ``ragsvc``).
Streaming sends ``chat.completion.chunk`` events and ``[DONE]``, as the OpenAI API does.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from litestar import Request, Response, post
from litestar.openapi.spec import Example, OpenAPIMediaType, OpenAPIType, Operation, RequestBody, Schema
from litestar.response import ServerSentEvent, ServerSentEventMessage

from ragsvc.ask import AskRequest, AskService
from ragsvc.auth import Principal
from ragsvc.errors import InvalidInput, RagsvcError

MODEL = "ragsvc"


def _question(messages: Any) -> str:
    if not isinstance(messages, list) or not messages:
        raise InvalidInput("'messages' must be a non-empty list of chat messages.")
    for msg in reversed(messages):
        if isinstance(msg, dict) and msg.get("role") == "user":
            content = msg.get("content")
            if isinstance(content, list):  # content parts: keep the text ones
                content = " ".join(_part_text(p) for p in content)
            if isinstance(content, str) and content.strip():
                return content.strip()
    raise InvalidInput("No user message with text was found in 'messages'; the last user message is the question.")


def _part_text(part: Any) -> str:
    """The text of one content part; other kinds of part (images) are skipped, a malformed one refused."""
    if not isinstance(part, dict):
        raise InvalidInput("Each content part must be an object like {\"type\": \"text\", \"text\": \"...\"}.")
    if part.get("type", "text") != "text":
        return ""
    if not isinstance(part.get("text"), str):
        raise InvalidInput("A text content part needs a string 'text', like {\"type\": \"text\", \"text\": \"...\"}.")
    return part["text"]


def _collection(model: Any) -> str | None:
    if not isinstance(model, str) or not (model == MODEL or model.startswith(MODEL + "/")) or "\x00" in model:
        raise InvalidInput(f"'model' must be {MODEL!r} or '{MODEL}/<collection>'; got {model!r}.")
    return model.split("/", 1)[1] if "/" in model else None  # None: the key's collection, else default


def sources_text(citations: list[dict]) -> str:
    if not citations:
        return ""
    lines = []
    for c in citations:
        where = f", page {c['page']}" if c.get("page") else ""
        lines.append(f"[{c['n']}] {c['filename']}{where}")
    return "\n\nSources:\n" + "\n".join(lines)


def finish_reason(result: dict) -> str:
    """OpenAI's ``stop`` / ``length``, and ragsvc's own ``repetition``: the answer began to repeat itself and
    was cut there. A streamed answer's chunks may hold the start of that repeat; the last chunk's
    ``ragsvc.answer`` is the authoritative text."""
    reason = result.get("finish_reason")
    return reason if reason in ("length", "repetition") else "stop"


def related_text(result: dict) -> str:
    """For a non-answer: the closest passages, named as not answering (a chat client shows text only)."""
    related = result.get("related") or []
    if result.get("answered") or not related:
        return ""
    lines = [f"- {r['filename']}" + (f", page {r['page']}" if r.get("page") else "") for r in related]
    return "\n\nClosest passages (they do not answer the question):\n" + "\n".join(lines)


def _request(body: dict, principal: Principal) -> AskRequest:
    if not isinstance(body, dict):
        raise InvalidInput("The request body must be a JSON object.")
    mode = body.get("mode", "auto")
    if mode not in ("auto", "on", "off"):
        raise InvalidInput("'mode' must be 'auto', 'on' or 'off'.")
    return AskRequest(question=_question(body.get("messages")), mode=mode,
                      collection=principal.collection_for(_collection(body.get("model", MODEL)), "read", "asking"),
                      include_reasoning=bool(body.get("include_reasoning", False)),
                      max_tokens=_max_tokens(body))


def _max_tokens(body: dict) -> int | None:
    value = body.get("max_completion_tokens", body.get("max_tokens"))
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidInput(f"'max_tokens' must be a whole number; got {value!r}.")
    return value


@dataclass
class ChatOperation(Operation):
    """The request body, documented by hand (the handler reads the JSON itself so that unknown OpenAI
    fields are ignored and each malformed part gets its own sentence); the schema lets clients and the
    fuzzer build real message lists."""

    def __post_init__(self) -> None:
        text = Schema(type=OpenAPIType.STRING)
        part = Schema(type=OpenAPIType.OBJECT, required=["type", "text"], properties={
            "type": Schema(type=OpenAPIType.STRING, enum=["text"]), "text": text})
        message = Schema(type=OpenAPIType.OBJECT, required=["role", "content"], properties={
            "role": Schema(type=OpenAPIType.STRING, enum=["system", "user", "assistant"]),
            "content": Schema(one_of=[text, Schema(type=OpenAPIType.ARRAY, items=part)])})
        schema = Schema(type=OpenAPIType.OBJECT, required=["messages"], properties={
            "model": Schema(type=OpenAPIType.STRING, description=f"{MODEL!r} or '{MODEL}/<collection>'.",
                            examples=[MODEL, f"{MODEL}/manuals"]),
            "messages": Schema(type=OpenAPIType.ARRAY, items=message, min_items=1,
                               description="The last user message is the question."),
            "stream": Schema(type=OpenAPIType.BOOLEAN),
            "mode": Schema(type=OpenAPIType.STRING, enum=["auto", "on", "off"]),
            "include_reasoning": Schema(type=OpenAPIType.BOOLEAN),
            "max_tokens": Schema(type=OpenAPIType.INTEGER, minimum=1),
            "max_completion_tokens": Schema(type=OpenAPIType.INTEGER, minimum=1),
        })
        self.request_body = RequestBody(required=True, content={"application/json": OpenAPIMediaType(
            schema=schema, examples={"question": Example(summary="A question to the default collection", value={
                "model": MODEL, "messages": [{"role": "user", "content": "How do I change my login shell?"}]})})})


@post("/v1/chat/completions", status_code=200, tags=["openai"], operation_class=ChatOperation)
async def chat_completions(request: Request, asker: AskService, principal: Principal) -> Response:
    """OpenAI-compatible chat completion answered from a collection's documents."""
    try:
        body = await request.json()
    except Exception as exc:  # noqa: BLE001 - a malformed body is the client's to fix
        raise InvalidInput(f"The request body is not valid JSON ({exc}).") from exc
    req = _request(body, principal)
    model = body.get("model", MODEL)
    cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    if not body.get("stream"):
        result = await asker.ask(req)
        usage = result["usage"]
        return Response({
            "id": cid, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "finish_reason": finish_reason(result),
                         "message": {"role": "assistant",
                                     "content": result["answer"] + sources_text(result["citations"]) + related_text(result)}}],
            "usage": {"prompt_tokens": usage["prompt_tokens"], "completion_tokens": usage["completion_tokens"],
                      "total_tokens": usage["prompt_tokens"] + usage["completion_tokens"]},
            "citations": result["citations"], "ragsvc": result,
        })
    asker.validate(req)
    asker.engine.get()
    return ServerSentEvent(_stream(asker, req, cid, created, model))


def _chunk(cid: str, created: int, model: str, delta: dict, finish: str | None = None, **extra: Any) -> str:
    return json.dumps({"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                       "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra})


async def _stream(asker: AskService, req: AskRequest, cid: str, created: int, model: str):
    yield ServerSentEventMessage(data=_chunk(cid, created, model, {"role": "assistant", "content": ""}))
    streamed = False
    try:
        async for event, data in asker.events(req):
            if event == "answer":
                streamed = True
                yield ServerSentEventMessage(data=_chunk(cid, created, model, {"content": data["delta"]}))
            elif event == "final":
                tail = sources_text(data["citations"])
                if not data["answered"]:
                    # The whole non-answer goes here; when the model's text was streamed first and then judged
                    # not to answer (answerability.py), the verdict follows it as its own paragraph.
                    tail = ("\n\n" if streamed else "") + data["answer"] + related_text(data)
                yield ServerSentEventMessage(data=_chunk(
                    cid, created, model, {"content": tail}, finish_reason(data), citations=data["citations"],
                    ragsvc=data))
    except RagsvcError as exc:
        yield ServerSentEventMessage(data=json.dumps({"error": {"message": exc.detail, "code": exc.status_code}}))
    yield ServerSentEventMessage(data="[DONE]")
