"""Controllers: documents, collections, jobs, ask, metrics, health. Each handler is a few lines over a service."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Annotated

from litestar import Controller, Request, Response, delete, get, post
from litestar.datastructures import UploadFile
from litestar.datastructures.state import State
from litestar.openapi.spec import Example, Operation, RequestBody, Schema
from litestar.openapi.spec import OpenAPIFormat, OpenAPIMediaType, OpenAPIType
from litestar.params import Body
from litestar.response import ServerSentEvent, ServerSentEventMessage
from litestar.status_codes import HTTP_201_CREATED, HTTP_202_ACCEPTED, HTTP_204_NO_CONTENT
from sqlalchemy import text

from ragsvc.api.executors import UPLOAD_EXECUTOR, run_in
from ragsvc.api.openai_compat import chat_completions
from ragsvc.api.problems import problem
from ragsvc.api.web import index, static
from ragsvc.ask import AskRequest, AskService
from ragsvc.auth import Principal
from ragsvc.documents import DocumentService, Upload
from ragsvc.errors import InvalidInput, NotFound, RagsvcError
from ragsvc.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class AskBody(AskRequest):
    """Body of ``POST /v1/ask``: the ask request plus ``stream`` for server-sent events."""

    stream: bool = False


PATH_DOC = (
    "One or more files (repeat the field). Each part's multipart filename is the document's path in the "
    "collection, its identity: a base name (`README.md`, what curl and browsers send by default) or a "
    "relative path (`guide/README.md`, e.g. `curl -F \"files=@guide/README.md;filename=guide/README.md\"`). "
    "Backslashes become slashes, `.` and empty segments and a leading `/` are dropped, Unicode is NFC; a "
    "`..` segment, a control character, over 512 characters or over 64 segments is refused with 422. "
    "A path already in the collection with the same bytes is a duplicate (`duplicate: true`); with other "
    "bytes a new version (`replaces: <old id>`) that replaces the old document once it is ready. The same "
    "bytes at another path are a new document.")


@dataclass
class UploadOperation(Operation):
    """The upload's multipart body, documented by hand: the handler reads the form itself so that a bad
    file refuses the whole request with a clear problem before anything is stored."""

    def __post_init__(self) -> None:
        schema = Schema(type=OpenAPIType.OBJECT, required=["files"], properties={
            "files": Schema(type=OpenAPIType.ARRAY, items=Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.BINARY),
                            description=PATH_DOC),
            "collection": Schema(type=OpenAPIType.STRING, description="Collection name (default `default`)."),
            "replaces": Schema(type=OpenAPIType.STRING, description=(
                "Id of a document this one replaces, whatever its path (a rename); one file only.")),
        })
        self.request_body = RequestBody(required=True, content={"multipart/form-data": OpenAPIMediaType(
            schema=schema, examples={"pdf": Example(
                summary="A PDF into the `manuals` collection",
                description="curl -F files=@manual.pdf -F collection=manuals http://127.0.0.1:8000/v1/documents",
                value={"files": ["manual.pdf"], "collection": "manuals"}), "path": Example(
                summary="A file under its path in a folder tree",
                description=('curl -F "files=@docs/guide/README.md;filename=guide/README.md" '
                             "http://127.0.0.1:8000/v1/documents"),
                value={"files": ["guide/README.md"]})})})


class DocumentController(Controller):
    path = "/v1/documents"
    tags = ["documents"]

    # The one route with large bodies: its limit (RAGSVC_MAX_UPLOAD_MB) is set on this controller by
    # create_app; every other route has the small RAGSVC_MAX_JSON_BODY_KB.
    @post("/", status_code=HTTP_202_ACCEPTED, operation_class=UploadOperation, opt={"body": "form"})
    async def upload(self, request: Request, documents: DocumentService, settings: Settings,
                     principal: Principal) -> dict:
        """Upload files as ``multipart/form-data``: one or more ``files`` fields, an optional ``collection``
        (default ``default``) and an optional ``replaces`` (a document id). Each file's multipart filename
        is its path in the collection (``guide/README.md``), its identity: the same path with new bytes is
        a new version (``replaces: <old id>``), with the same bytes a duplicate. Example:
        ``curl -F files=@manual.pdf -F collection=manuals http://127.0.0.1:8000/v1/documents``.
        Answers 202 with each document's id and status; ingestion is queued."""
        principal.require("write", "uploading documents")  # before the body is read
        form = await request.form()
        files = form.getall("files") if "files" in form else []
        if len(files) > settings.max_files_per_upload:
            raise InvalidInput(f"{len(files)} files in one request; send at most {settings.max_files_per_upload}.")
        uploads = []
        for item in files:
            if isinstance(item, UploadFile):
                uploads.append(Upload(item.filename or "upload", await item.read()))
        collection = principal.collection_for(str(form.get("collection") or "") or None, "write",
                                              "uploading documents")
        replaces = no_nul(str(form.get("replaces") or ""), "replaces") or None
        # Storing and fsyncing on the upload pool (bounded): a burst of uploads waits there, not in the
        # default executor the other handlers use.
        created = await run_in(UPLOAD_EXECUTOR, documents.create, collection, uploads,
                               str(replaces) if replaces else None)
        return {"documents": created}

    @get("/", sync_to_thread=True)
    def list_documents(self, documents: DocumentService, principal: Principal, collection: str | None = None,
                       status: str | None = None) -> dict:
        if collection or principal.collection:
            collection = principal.collection_for(no_nul(collection, "collection"), "read", "listing documents")
        return {"documents": documents.list(collection, no_nul(status, "status"))}

    @get("/{document_id:str}", sync_to_thread=True)
    def get_document(self, document_id: str, documents: DocumentService, principal: Principal) -> dict:
        return _visible_document(documents, principal, document_id)

    @delete("/{document_id:str}", status_code=HTTP_204_NO_CONTENT, sync_to_thread=True)
    def delete_document(self, document_id: str, documents: DocumentService, principal: Principal) -> None:
        principal.require("write", "deleting documents")
        _visible_document(documents, principal, document_id)
        documents.delete(document_id)


def no_nul(value: str | None, what: str) -> str | None:
    """Refuse a NUL character in a name or filter: PostgreSQL cannot store one, so the query would fail."""
    if value and "\x00" in value:
        raise InvalidInput(f"'{what}' contains a NUL character (\\u0000); names and ids never do.")
    return value


def _visible_document(documents: DocumentService, principal: Principal, document_id: str) -> dict:
    if "\x00" in document_id:  # PostgreSQL refuses NUL in text: no such id can exist
        raise NotFound(f"There is no document with id {document_id.replace(chr(0), '')!r}.")
    doc = documents.get(document_id)
    principal.check_visible(doc["collection"], f"document with id {document_id!r}")
    return doc


@dataclass
class CollectionBody:
    name: str


class CollectionController(Controller):
    path = "/v1/collections"
    tags = ["collections"]

    @get("/", sync_to_thread=True)
    def list_collections(self, documents: DocumentService, principal: Principal) -> dict:
        return {"collections": [c for c in documents.collections() if principal.sees(c["name"])]}

    @post("/", status_code=HTTP_201_CREATED, sync_to_thread=True)
    def create_collection(self, data: CollectionBody, documents: DocumentService, principal: Principal) -> dict:
        return documents.create_collection(principal.collection_for(data.name, "admin", "creating a collection"))

    @get("/{name:str}", sync_to_thread=True)
    def get_collection(self, name: str, documents: DocumentService, principal: Principal) -> dict:
        return documents.get_collection(principal.collection_for(no_nul(name, "collection name"), "read",
                                                                 "reading a collection"))

    @delete("/{name:str}", status_code=HTTP_204_NO_CONTENT, sync_to_thread=True)
    def delete_collection(self, name: str, documents: DocumentService, principal: Principal) -> None:
        """Delete the collection with all its documents, chunks, vectors and stored files."""
        documents.delete_collection(principal.collection_for(no_nul(name, "collection name"), "admin",
                                                             "deleting a collection"))


@get("/v1/jobs", sync_to_thread=True, tags=["documents"])
def list_jobs(documents: DocumentService, principal: Principal, status: str | None = None,
              limit: int = 200) -> dict:
    """The ingestion queue, newest first: status, stage, progress, attempts, worker, and each job's
    history of attempts (worker, start, end, outcome: done, failed, lost, abandoned or requeued)."""
    return {"jobs": documents.jobs(no_nul(status, "status"), limit, principal.collection)}


ASK_EXAMPLES = [
    Example(summary="A quick lookup", value={"question": "Which file under /proc is an image of the system's memory?"}),
    Example(summary="A multi-hop question, streamed, with reasoning",
            value={"question": "Which is older, the Zorblax reactor or the Quintaro bridge?", "mode": "auto",
                   "stream": True, "include_reasoning": True}),
    Example(summary="Only retrieve and pack (no generation)",
            value={"question": "How do I change my login shell?", "collection": "manuals", "top_k": 8,
                   "dry_run": True}),
]


@post("/v1/ask", status_code=200, tags=["ask"])
async def ask(data: Annotated[AskBody, Body(title="Question", examples=ASK_EXAMPLES)],
              asker: AskService, principal: Principal) -> Response:
    """Answer a question from the collection's documents, with citations; ``stream: true`` for SSE."""
    fields = {k: v for k, v in data.__dict__.items() if k != "stream"}
    no_nul(data.collection, "collection")
    for doc_id in data.document_ids or []:
        no_nul(doc_id if isinstance(doc_id, str) else "", "document_ids")
    fields["collection"] = principal.collection_for(data.collection, "read", "asking")
    req = AskRequest(**fields)
    if not data.stream:
        return Response(await asker.ask(req))
    asker.validate(req)  # bad input is a problem+json answer, not a broken stream
    asker.engine.get()
    return ServerSentEvent(_sse(asker, req))


async def _sse(asker: AskService, req: AskRequest):
    try:
        async for event, payload in asker.events(req):
            yield ServerSentEventMessage(event=event, data=json.dumps(payload))
    except RagsvcError as exc:  # after the 200 has gone out, errors travel as an event
        yield ServerSentEventMessage(event="error", data=json.dumps(
            {"title": exc.title, "status": exc.status_code, "detail": exc.detail}))


@get("/metrics", tags=["ops"], include_in_schema=False)
async def metrics() -> Response:
    """Prometheus metrics: request latency per route, answers, modes, tokens, queue depth, documents."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    from ragsvc.observability import REGISTRY

    body = await asyncio.to_thread(generate_latest, REGISTRY)  # the queue gauges read the database
    return Response(body, media_type=CONTENT_TYPE_LATEST)


@get("/health", tags=["ops"])
async def health() -> dict:
    """200 while the process lives."""
    return {"status": "ok"}


@get("/ready", tags=["ops"])
async def ready(request: Request, state: State) -> Response:
    """200 once the database, the index store and the engine are ready; 503 naming what is missing and
    what to do. Public, so it names components and settings only: the exception text (paths, URLs,
    driver messages) goes to the log."""
    checks = await asyncio.to_thread(_checks, state)
    missing = {k: v for k, v in checks.items() if v != "ok"}
    if missing:
        return problem(request, 503, "Not ready", "Not ready yet: " + "; ".join(
            f"{k}: {v}" for k, v in missing.items()), checks=checks, retry_after=5)
    return Response({"status": "ready", "checks": checks})


READY_FIXES = {
    "database": "the database does not answer; check RAGSVC_DATABASE_URL and that the database server runs "
                "(details in the server log)",
    "index_store": "the index folder cannot be used; check that RAGSVC_INDEX_DIR exists and is writable "
                   "(details in the server log)",
    "engine": "the language model is not available; check RAGSVC_LLM_URL or RAGSVC_LLM_MODEL (details in "
              "the server log)",
}
_last_logged: dict[str, str] = {}


def _failed(component: str, reason: str) -> str:
    """Log the real reason (once per change, probes come every few seconds); answer the fix."""
    if _last_logged.get(component) != reason:
        _last_logged[component] = reason
        log.warning("/ready: %s is not ready: %s", component, reason)
    return READY_FIXES[component]


def _checks(state: State) -> dict[str, str]:
    checks = {}
    try:
        with state.sessions() as session:
            session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        checks["database"] = _failed("database", f"{type(exc).__name__}: {exc}")
    try:
        state.index_store.check()
        checks["index_store"] = "ok"
    except Exception as exc:  # noqa: BLE001
        checks["index_store"] = _failed("index_store", f"{type(exc).__name__}: {exc}")
    slot = state.engine
    gen = slot.generator
    if gen is None:
        checks["engine"] = _failed("engine", slot.error) if slot.error else "loading the model"
    else:
        checks["engine"] = _failed("engine", problem_text) if (problem_text := gen.health()) else "ok"
    for name, value in checks.items():
        if value == "ok":
            _last_logged.pop(name, None)
    return checks


ROUTES = [DocumentController, CollectionController, list_jobs, ask, chat_completions, metrics, health, ready,
          index, static]
