"""The ``ragsvc`` command: serve, worker, db upgrade, ask, ingest, keys, cleanup, index check.

Settings are built once here, from the environment (``RAGSVC_*``) and the command's flags, and passed down.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import urllib.error
import urllib.request

from ragsvc.settings import Settings


def _setup_logging(settings: Settings) -> None:
    from ragsvc.observability import setup_logging

    setup_logging(settings.log_level, settings.log_json)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from ragsvc.app import create_app
    from ragsvc.db.migrate import upgrade

    if settings.auto_migrate:
        upgrade(settings.resolved_database_url)
    app = create_app(settings)
    # log_config=None: uvicorn's access and error lines go through our handler (JSON when asked).
    uvicorn.run(app, host=settings.host, port=settings.port, log_config=None, timeout_graceful_shutdown=30)
    return 0


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    from ingest.pipeline import Pipeline
    from ingest.sandbox import ParseLimits
    from ingest.worker import Worker
    from ragsvc.db.migrate import upgrade
    from ragsvc.db.session import make_engine, make_sessionmaker
    from ragsvc.embedder import make_embedder
    from ragsvc.index_store import make_index_store

    if settings.auto_migrate:
        upgrade(settings.resolved_database_url)
    engine = make_engine(settings.resolved_database_url)
    sessions = make_sessionmaker(engine)
    embedder = make_embedder(settings)  # the same constructor as the API's (ragsvc/app.py)
    store = make_index_store(settings, embedder.dim)
    pipeline = Pipeline(sessions, embedder, store, settings.chunk_tokens, settings.files_dir.resolve(),
                        ParseLimits.from_settings(settings))
    worker = Worker(settings, sessions, pipeline)

    def _stop(signum, _frame):  # noqa: ANN001
        logging.getLogger(__name__).info("signal %s: finishing the current job, then stopping", signum)
        worker.stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    if settings.worker_metrics_port:
        from prometheus_client import start_http_server

        start_http_server(settings.worker_metrics_port)
    try:
        if args.once:
            while worker.run_one():
                pass
        else:
            worker.run_forever()
    finally:
        engine.dispose()
    return 0


def cmd_db(settings: Settings, args: argparse.Namespace) -> int:
    from ragsvc.db.migrate import current_revision, upgrade

    url = settings.resolved_database_url
    if args.db_command == "upgrade":
        upgrade(url, args.revision)
    print(f"database at revision {current_revision(url)}")
    return 0


def cmd_ask(settings: Settings, args: argparse.Namespace) -> int:
    """Ask a running service (``--url``) and print the answer with its sources."""
    body = {"question": args.question, "mode": args.mode, "collection": args.collection}
    headers = {"content-type": "application/json"}
    if args.api_key:
        headers["authorization"] = f"Bearer {args.api_key}"
    req = urllib.request.Request(args.url.rstrip("/") + "/v1/ask", data=json.dumps(body).encode(),
                                 headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=900) as resp:
            result = json.load(resp)
    except urllib.error.HTTPError as exc:
        print(json.load(exc).get("detail", exc), file=sys.stderr)
        return 1
    except urllib.error.URLError as exc:
        print(f"cannot reach ragsvc at {args.url}: {exc.reason}; is `ragsvc serve` running?", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(result["answer"])
    for c in result["citations"]:
        page = f", page {c['page']}" if c["page"] else ""
        print(f"  [{c['n']}] {c['filename']}{page}{' (inferred)' if c.get('inferred') else ''}")
    return 0


def cmd_ingest(settings: Settings, args: argparse.Namespace) -> int:
    """Upload files and folders to a running service, wait until each is ready or failed, print a table."""
    import time

    from ragsvc.bulk import ingest
    from ragsvc.bulk_report import make_progress, print_summary

    started = time.monotonic()
    try:
        summary = ingest(args.url, args.paths, args.collection, api_key=args.api_key,
                         progress=make_progress(sys.stderr))
    except httpx_errors() as exc:
        print(f"cannot reach ragsvc at {args.url}: {exc}; is `ragsvc serve` running?", file=sys.stderr)
        return 1
    print_summary(summary, time.monotonic() - started, args.collection, sys.stdout)
    return 0 if not summary.failed and not summary.refused and not summary.missing else 2


def cmd_keys(settings: Settings, args: argparse.Namespace) -> int:
    """API keys, straight in the database (so the first admin key needs no key)."""
    from ragsvc.auth import KeyStore
    from ragsvc.db.migrate import upgrade
    from ragsvc.db.session import make_engine, make_sessionmaker
    from ragsvc.errors import RagsvcError

    if settings.auto_migrate:
        upgrade(settings.resolved_database_url)
    engine = make_engine(settings.resolved_database_url)
    keys = KeyStore(make_sessionmaker(engine))
    try:
        if args.keys_command == "create":
            if not args.collection and not args.all_collections:
                print("name the key's collection with --collection NAME, or give --all-collections", file=sys.stderr)
                return 2
            key, row = keys.create(args.scope, None if args.all_collections else args.collection, args.name)
            where = "every collection" if row["collection"] is None else f"collection {row['collection']!r}"
            print(key)
            print(f"# id {row['id']}, scope {row['scope']}, {where}. This is the only time the key is shown.",
                  file=sys.stderr)
        elif args.keys_command == "list":
            for row in keys.list():
                print(json.dumps(row))
        else:
            print(json.dumps(keys.revoke(args.key_id)))
    except RagsvcError as exc:
        print(exc.detail, file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    return 0


def cmd_cleanup(settings: Settings, args: argparse.Namespace) -> int:
    """Remove stored files no document owns (left by an upload the API died in the middle of)."""
    from ragsvc.db.session import make_engine, make_sessionmaker
    from ragsvc.storage import remove_orphans

    engine = make_engine(settings.resolved_database_url)
    try:
        removed = remove_orphans(make_sessionmaker(engine), settings.files_dir, args.grace_s)
    finally:
        engine.dispose()
    print(f"removed {len(removed)} orphaned upload folder(s)")
    return 0


def cmd_index(settings: Settings, args: argparse.Namespace) -> int:
    """Compare every collection's FAISS index with its ready rows; with --repair, make them agree."""
    from ragsvc.db.session import make_engine, make_sessionmaker
    from ragsvc.embedder import make_embedder
    from ragsvc.errors import RagsvcError
    from ragsvc.index_check import check, collection_exists, repair
    from ragsvc.index_store import make_index_store

    engine = make_engine(settings.resolved_database_url)
    sessions = make_sessionmaker(engine)
    try:
        if args.collection is not None and not collection_exists(sessions, args.collection):
            print(f"There is no collection named {args.collection!r}; `ragsvc index check` without "
                  "--collection checks them all.", file=sys.stderr)
            return 2
        # Only a repair needs the embedding model (to embed missing rows again; it also refuses an index
        # of another dimension). A check only reads ids, so it starts in a second, not in ten.
        embedder = make_embedder(settings) if args.repair else None
        store = make_index_store(settings, embedder.dim if embedder else 0)
        try:
            reports = check(sessions, store, args.collection, args.garbage_age_s)
            for report in reports:
                if args.repair and report.problems:
                    repair(sessions, store, embedder, report)
        except RagsvcError as exc:
            print(exc.detail, file=sys.stderr)
            return 2
    finally:
        engine.dispose()
    for report in reports:
        print(json.dumps(report.as_dict()) if args.json else report.describe())
    problems = sum(r.problems for r in reports)
    if not args.json:
        verb = "repaired" if args.repair else "found"
        print(f"{problems} problem(s) {verb} in {len(reports)} index(es)" if problems else
              f"{len(reports)} index(es) agree with the database")
    return 1 if problems and not args.repair else 0


def cmd_index_rebuild(settings: Settings, args: argparse.Namespace) -> int:
    """Recreate collections' FAISS segments from ``chunks.embedding``; prints one JSON line each."""
    from sqlalchemy import func, select

    from ragsvc.db import Chunk
    from ragsvc.db.session import make_engine, make_sessionmaker
    from ragsvc.index_check import collection_exists
    from ragsvc.index_rebuild import rebuild
    from ragsvc.index_store import make_index_store

    engine = make_engine(settings.resolved_database_url)
    sessions = make_sessionmaker(engine)
    try:
        if args.collection is not None and not collection_exists(sessions, args.collection):
            print(f"There is no collection named {args.collection!r}; `ragsvc index rebuild` without a name "
                  "rebuilds them all.", file=sys.stderr)
            return 2
        with sessions() as session:  # the dimension from a stored vector: no model to load
            size = session.scalar(select(func.length(Chunk.embedding)).where(Chunk.embedding.is_not(None)).limit(1))
        if size is None:
            from ragsvc.embedder import make_embedder
            dim = make_embedder(settings).dim
        else:
            dim = size // 4
        store = make_index_store(settings, dim)
        for line in rebuild(sessions, store, dim, args.collection):
            print(json.dumps(line))
    finally:
        engine.dispose()
    return 0


def cmd_eval(settings: Settings, args: argparse.Namespace) -> int:
    """Answer-quality evaluation of a question file against a running (or in-process) service."""
    from ragsvc.evaluation import command

    return command(settings, args.questions, args.collection, args.mode, args.out, args.url, args.api_key,
                   args.in_process, args.limit, args.name, args.max_tokens)


def httpx_errors() -> tuple[type[Exception], ...]:
    import httpx

    return (httpx.TransportError,)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ragsvc", description="Question answering over your own documents.")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run the API with an ingestion worker and the vLLM engine")
    s.add_argument("--host", help="listen address (RAGSVC_HOST)")
    s.add_argument("--port", type=int, help="listen port (RAGSVC_PORT)")
    s.add_argument("--no-worker", action="store_true", help="do not start the embedded ingestion worker")
    s.set_defaults(func=cmd_serve)
    w = sub.add_parser("worker", help="run an ingestion worker on the database job queue")
    w.add_argument("--once", action="store_true", help="process the queued jobs, then exit")
    w.set_defaults(func=cmd_worker)
    d = sub.add_parser("db", help="database schema")
    dsub = d.add_subparsers(dest="db_command", required=True)
    up = dsub.add_parser("upgrade", help="apply migrations (default: to the newest)")
    up.add_argument("revision", nargs="?", default="head")
    dsub.add_parser("current", help="print the current revision")
    d.set_defaults(func=cmd_db)
    i = sub.add_parser("ingest", help="upload files and folders to a running service and wait for them")
    i.add_argument("paths", nargs="+", metavar="PATH")
    i.add_argument("--collection", default="default")
    i.add_argument("--url", default="http://127.0.0.1:8000")
    i.add_argument("--api-key", default=os.environ.get("RAGSVC_API_KEY", ""), help="(env RAGSVC_API_KEY)")
    i.set_defaults(func=cmd_ingest)
    a = sub.add_parser("ask", help="ask a running service a question")
    a.add_argument("question")
    a.add_argument("--mode", choices=["auto", "off", "on"], default="auto")
    a.add_argument("--collection", default="default")
    a.add_argument("--url", default="http://127.0.0.1:8000")
    a.add_argument("--json", action="store_true", help="print the whole JSON response")
    a.add_argument("--api-key", default=os.environ.get("RAGSVC_API_KEY", ""), help="(env RAGSVC_API_KEY)")
    a.set_defaults(func=cmd_ask)
    e = sub.add_parser("eval", help="evaluate answer quality on a question file (JSON, Markdown, PNG reports)")
    e.add_argument("questions", nargs="+", metavar="QUESTIONS.jsonl")
    e.add_argument("--collection", required=True)
    e.add_argument("--mode", choices=["auto", "off", "on"], default="auto")
    e.add_argument("--out", default="eval-results", help="folder for the reports (default eval-results)")
    e.add_argument("--name", help="file name prefix of the reports (default eval_<mode>)")
    e.add_argument("--url", default="http://127.0.0.1:8000")
    e.add_argument("--api-key", default=os.environ.get("RAGSVC_API_KEY", ""), help="(env RAGSVC_API_KEY)")
    e.add_argument("--in-process", action="store_true",
                   help="run the service inside this process (settings from RAGSVC_*) instead of --url")
    e.add_argument("--limit", type=int, help="only the first N questions")
    e.add_argument("--max-tokens", type=int, help="cap each answer's output tokens (the request's max_tokens)")
    e.set_defaults(func=cmd_eval)
    k = sub.add_parser("keys", help="create, list and revoke API keys")
    ksub = k.add_subparsers(dest="keys_command", required=True)
    kc = ksub.add_parser("create", help="create a key and print it (shown only this once)")
    kc.add_argument("--collection", help="the collection the key is for")
    kc.add_argument("--all-collections", action="store_true", help="a key for every collection")
    kc.add_argument("--scope", choices=["read", "write", "admin"], required=True,
                    help="read: list and ask; write: also upload and delete documents; admin: also collections")
    kc.add_argument("--name", default="", help="a label to recognise the key by")
    ksub.add_parser("list", help="list keys (never the keys themselves)")
    kr = ksub.add_parser("revoke", help="revoke a key at once")
    kr.add_argument("key_id", help="the key's id (or the whole key)")
    k.set_defaults(func=cmd_keys)
    x = sub.add_parser("index", help="the FAISS indexes against the database")
    xsub = x.add_subparsers(dest="index_command", required=True)
    xc = xsub.add_parser("check", help="report vectors without a ready row and ready rows without a vector "
                                       "(exit status 1 when there are any and --repair is not given)")
    xc.add_argument("--repair", action="store_true",
                    help="remove vectors without a ready row; embed ready rows without a vector again and add them")
    xc.add_argument("--collection", help="only this collection (default: all, and stray index folders)")
    xc.add_argument("--json", action="store_true", help="one JSON object per index instead of a sentence")
    xc.add_argument("--garbage-age-s", type=float, default=600.0,
                    help="report segment files not in the manifest once they are this old (a younger one may "
                         "be a write in progress)")
    xc.set_defaults(func=cmd_index)
    xr = xsub.add_parser("rebuild", help="recreate the FAISS segments from the vectors stored in the database "
                                         "(nothing is embedded)")
    xr.add_argument("collection", nargs="?", help="only this collection (default: all)")
    xr.set_defaults(func=cmd_index_rebuild)
    c = sub.add_parser("cleanup", help="remove stored upload files that no document owns")
    c.add_argument("--grace-s", type=float, default=3600.0,
                   help="only files older than this many seconds (an upload may be in flight)")
    c.set_defaults(func=cmd_cleanup)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    overrides = {}
    if getattr(args, "host", None):
        overrides["host"] = args.host
    if getattr(args, "port", None):
        overrides["port"] = args.port
    if getattr(args, "no_worker", False):
        overrides["embedded_worker"] = False
    settings = Settings(**overrides)
    _setup_logging(settings)
    return args.func(settings, args)


if __name__ == "__main__":
    sys.exit(main())
