"""The Litestar app factory. Heavy resources start in the lifespan and always close.

Start order: database (migrated by the CLI), embedder and index store (seconds), then the vLLM
engine in the background (tens of seconds) so ``/health`` answers and ``/ready`` reports progress
while the model loads. ``ragsvc serve`` also supervises one ingestion worker process.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from typing import AsyncIterator

from litestar import Litestar
from litestar.datastructures.state import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig

from ragsvc.api.problems import exception_handlers
from ragsvc.api.routes import ROUTES
from ragsvc.api.routes import DocumentController
from ragsvc.api.security import LOGIN_CSS, SECURITY_ROUTES, auth_middleware, principal_of, rate_limits
from ragsvc.api.websafety import (allowed_hosts_middleware, body_content_type, content_security_policy,
                                  security_headers_middleware_for)
from ragsvc.ask import AskService
from ragsvc.auth import KeyStore
from ragsvc.db.session import make_engine, make_sessionmaker
from ragsvc.documents import DocumentService
from ragsvc.embedder import make_embedder
from ragsvc.generation import EngineSlot, VllmGenerator
from ragsvc.index_store import make_index_store
from ragsvc.keyword_index import KeywordStore
from ragsvc.observability import REGISTRY, DatabaseCollector, request_id_middleware
from ragsvc.settings import Settings
from ragsvc.storage import remove_orphans
from ragsvc.supervisor import WorkerSupervisor

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        state = app.state
        db_engine = make_engine(settings.resolved_database_url)
        state.sessions = make_sessionmaker(db_engine)
        state.api_keys = KeyStore(state.sessions)
        state.engine = EngineSlot()
        # The same constructor as the worker's (ragsvc/cli.py): questions and documents share a backend.
        embedder = await asyncio.to_thread(make_embedder, settings)
        state.index_store = make_index_store(settings, embedder.dim)
        state.documents = DocumentService(settings, state.sessions, state.index_store)
        state.asker = AskService(settings, state.sessions, embedder, state.index_store, KeywordStore(),
                                 state.engine)
        supervisor = WorkerSupervisor(settings) if settings.embedded_worker else None
        if supervisor:
            supervisor.start()
        loader = asyncio.create_task(_load_engine(settings, state.engine))
        reloads: list[asyncio.Task] = []

        def on_dead(dead, reason: str) -> None:  # noqa: ANN001 - the in-process engine died: load a new one
            log.error("%s; loading a new engine", reason)

            async def reload() -> None:
                await asyncio.to_thread(dead.close)
                await _load_engine(settings, state.engine)

            reloads.append(asyncio.get_running_loop().create_task(reload()))

        state.engine.on_dead = on_dead
        sweeper = asyncio.create_task(asyncio.to_thread(
            remove_orphans, state.sessions, settings.files_dir.resolve(), settings.orphan_grace_s))
        db_metrics = DatabaseCollector(state.sessions)
        REGISTRY.register(db_metrics)
        try:
            yield
        finally:
            REGISTRY.unregister(db_metrics)
            if supervisor:
                await supervisor.stop()
            if settings.llm_url:
                loader.cancel()  # a retry loop, not a load in progress
            elif not loader.done():
                log.info("waiting for the engine to finish loading before shutting it down")
            await asyncio.gather(loader, sweeper, *reloads, return_exceptions=True)
            if state.engine.generator:
                state.engine.generator.close()
            db_engine.dispose()

    # Only the upload takes large bodies; every other route (JSON, the sign-in form) the small limit,
    # checked against Content-Length before a byte is read.
    uploads = type("DocumentController", (DocumentController,),
                   {"request_max_body_size": settings.max_upload_mb * 1024 * 1024})
    routes = [uploads if r is DocumentController else r for r in ROUTES]
    return Litestar(
        route_handlers=[*routes, *SECURITY_ROUTES],
        lifespan=[lifespan],
        dependencies={
            "documents": Provide(_documents, sync_to_thread=False),
            "asker": Provide(_asker, sync_to_thread=False),
            "settings": Provide(lambda: settings, sync_to_thread=False),
            "principal": Provide(principal_of, sync_to_thread=False),
        },
        exception_handlers=exception_handlers,
        # Outermost first: the request id wraps everything, then the response headers (on refusals too),
        # the Host allow-list, who is asking (and from which origin), then how often.
        middleware=[request_id_middleware, security_headers_middleware_for(content_security_policy((LOGIN_CSS,))),
                    allowed_hosts_middleware, auth_middleware, *rate_limits(settings)],
        guards=[body_content_type],
        logging_config=None,  # the CLI configured logging (plain or JSON); Litestar must not replace it
        request_max_body_size=settings.max_json_body_kb * 1024,
        multipart_form_part_limit=settings.max_files_per_upload + 10,
        openapi_config=OpenAPIConfig(title="ragsvc", version="0.1.0", path="/schema"),
        state=State({"settings": settings}),
    )


async def _load_engine(settings: Settings, slot: EngineSlot) -> None:
    if settings.llm_url:
        # A remote vLLM server may start after us (compose): keep trying; /ready says why meanwhile.
        from ragsvc.remote_llm import RemoteVllmGenerator

        while slot.generator is None:
            try:
                slot.generator = await asyncio.to_thread(RemoteVllmGenerator.start, settings)
            except Exception as exc:  # noqa: BLE001 - reported on /ready and on every /v1/ask
                slot.error = f"Waiting for the vLLM server: {exc}"
                await asyncio.sleep(3)
        return
    try:
        slot.generator = await asyncio.to_thread(VllmGenerator.start, settings)
    except Exception as exc:  # noqa: BLE001 - reported on /ready and on every /v1/ask
        slot.error = f"The language model failed to load: {exc}"
        log.exception("engine failed to load")


def _documents(state: State) -> DocumentService:
    return state.documents


def _asker(state: State) -> AskService:
    return state.asker
