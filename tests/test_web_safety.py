"""The service against a web page the user happens to visit, and the smaller holes (issue 12, items 4-5).

Two real services without a language model (``engine=False``): the loopback default (keys off, SQLite)
and one with keys on over PostgreSQL. Each test sends what a hostile page's browser would send (a
foreign ``Host`` after DNS rebinding, ``text/plain`` JSON, a multipart post with a foreign ``Origin``)
and checks it is refused with a problem and changed nothing, while the page's own requests and curl's
still work.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import update

from ragsvc.auth import SESSION_COOKIE, KeyStore
from ragsvc.db import WebSession
from ragsvc.db.session import make_engine, make_sessionmaker
from tests.conftest import new_pg_database, start_service, stop_service

FOREIGN = "http://evil.example"
DELETE_LIMIT = 3


@pytest.fixture(scope="module")
def open_svc(tmp_path_factory):
    """The embedded default: loopback, no keys, SQLite."""
    svc = start_service(tmp_path_factory.mktemp("svc-open"), None, "open", engine=False)
    yield svc
    stop_service(svc)


@pytest.fixture(scope="module")
def keyed_svc(tmp_path_factory):
    """Keys on, PostgreSQL (where NUL in text is an error), a small DELETE budget."""
    with new_pg_database() as url:
        svc = start_service(tmp_path_factory.mktemp("svc-keyed"), url, "keyed", engine=False, extra_env={
            "RAGSVC_AUTH": "on", "RAGSVC_RATE_LIMIT_DELETE_PER_MINUTE": str(DELETE_LIMIT)})
        engine = make_engine(url.replace("postgresql://", "postgresql+psycopg://"))
        try:
            svc.keys = KeyStore(make_sessionmaker(engine))
            svc.admin = svc.keys.create("admin", None, "web-safety admin")[0]
            svc.client.headers["authorization"] = f"Bearer {svc.admin}"
            yield svc
        finally:
            stop_service(svc)
            engine.dispose()


def assert_problem(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, (r.request.method, r.request.url, r.status_code, r.text[:300])
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers
    body = r.json()
    assert body["status"] == status and body["detail"]
    return body


def collections(svc) -> set[str]:
    return {c["name"] for c in svc.client.get("/v1/collections").json()["collections"]}


# --- item 4: the loopback default against web pages ------------------------------------------------
def test_a_foreign_host_is_refused_and_loopback_names_and_addresses_pass(open_svc):
    port = urlsplit(open_svc.url).port
    c = open_svc.client
    # A DNS-rebinding page reaches 127.0.0.1 under its own name: refused before any handler runs.
    body = assert_problem(c.post("/v1/collections", json={"name": "rebound"},
                                 headers={"host": f"attacker.example:{port}"}), 400)
    assert "RAGSVC_ALLOWED_HOSTS" in body["detail"]
    assert_problem(c.get("/v1/documents", headers={"host": "attacker.example"}), 400)
    assert "rebound" not in collections(open_svc)
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", "LOCALHOST", f"[::1]:{port}", f"10.1.2.3:{port}"):
        assert c.get("/v1/documents", headers={"host": host}).status_code == 200, host


def test_json_routes_refuse_text_plain(open_svc):
    c = open_svc.client
    # What a page can post without a CORS preflight: JSON text labelled text/plain.
    for path, doc in (("/v1/collections", {"name": "plain"}), ("/v1/ask", {"question": "hi"}),
                      ("/v1/chat/completions", {"model": "ragsvc", "messages": [{"role": "user", "content": "hi"}]})):
        body = assert_problem(c.post(path, content=json.dumps(doc), headers={"content-type": "text/plain"}), 415)
        assert "application/json" in body["detail"]
    assert "plain" not in collections(open_svc)
    assert c.post("/v1/collections", json={"name": "plain"}).status_code == 201  # real JSON: created


def test_a_cross_origin_upload_is_refused_without_keys(open_svc):
    c = open_svc.client
    files = [("files", ("drive-by.txt", b"Planted by another site's page."))]
    for origin in (FOREIGN, "null", f"http://localhost:{urlsplit(open_svc.url).port + 1}"):
        body = assert_problem(c.post("/v1/documents", files=files, headers={"origin": origin}), 403)
        assert "Cross-site" in body["detail"]
    assert not [d for d in c.get("/v1/documents").json()["documents"] if d["filename"] == "drive-by.txt"]
    # The page's own request (same origin) and curl (no Origin) are accepted.
    r = c.post("/v1/documents", files=[("files", ("own.txt", b"Sent by the service's own page."))],
               headers={"origin": open_svc.url})
    assert r.status_code == 202, r.text
    doc_id = r.json()["documents"][0]["id"]
    assert c.post("/v1/documents", files=[("files", ("curl.txt", b"Sent by curl."))]).status_code == 202
    assert_problem(c.delete(f"/v1/documents/{doc_id}", headers={"origin": FOREIGN}), 403)
    assert c.get(f"/v1/documents/{doc_id}").status_code == 200  # still there


@pytest.mark.parametrize("path", ["/", "/login"])
def test_pages_send_csp_nosniff_and_referrer_policy(open_svc, path):
    r = open_svc.client.get(path)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "same-origin"


# --- item 5: body limits ------------------------------------------------------------------------------
def raw_request(url: str, head: str) -> str:
    """Send only the request head (the body it announces never comes) and read the answer: a server
    that waited for the body before refusing would time out here."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=60) as s:
        s.sendall(head.encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return data.decode("latin-1")


@pytest.mark.parametrize("authorized", [True, False])
def test_big_json_and_login_bodies_get_413_before_they_are_read(keyed_svc, authorized):
    # 1 MB: over RAGSVC_MAX_JSON_BODY_KB (256), under the upload limit (5 MiB here), which used to be
    # every route's.
    auth = f"Authorization: Bearer {keyed_svc.admin}\r\n" if authorized else ""
    port = urlsplit(keyed_svc.url).port
    head = (f"POST /login HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            f"{auth}Content-Length: 1000000\r\nConnection: close\r\n\r\n")
    assert raw_request(keyed_svc.url, head).startswith("HTTP/1.1 413"), "login"
    if authorized:
        head = (f"POST /v1/collections HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
                f"{auth}Content-Length: 1000000\r\nConnection: close\r\n\r\n")
        assert raw_request(keyed_svc.url, head).startswith("HTTP/1.1 413"), "json"
        big = {"name": "big", "pad": "x" * 400_000}
        body = assert_problem(keyed_svc.client.post("/v1/collections", json=big), 413)
        assert "RAGSVC_MAX_JSON_BODY_KB" in body["detail"]
        assert "big" not in collections(keyed_svc)
        # The upload route still takes a body of megabytes (its own limit, RAGSVC_MAX_UPLOAD_MB=5 here).
        r = keyed_svc.client.post("/v1/documents", files=[("files", ("big.txt", b"Large upload line.\n" * 60_000))])
        assert r.status_code == 202, r.text


# --- item 5: web sessions ----------------------------------------------------------------------------
def sign_in(svc, key: str, **headers: str) -> httpx.Response:
    with httpx.Client(base_url=svc.url, timeout=60) as c:
        return c.post("/login", data={"key": key}, headers=headers)


def session_cookie(r: httpx.Response) -> str:
    cookie = r.headers["set-cookie"]
    name, _, rest = cookie.partition("=")
    assert name == SESSION_COOKIE, cookie
    attrs = cookie.lower()
    assert "httponly" in attrs and "samesite=strict" in attrs and "secure" in attrs and "path=/" in attrs
    assert "domain=" not in attrs
    return rest.split(";", 1)[0]


def as_cookie(svc, value: str, method: str, path: str, **kw) -> httpx.Response:
    with httpx.Client(base_url=svc.url, timeout=60) as c:  # httpx keeps no Secure cookie over http: by hand
        return c.request(method, path, headers={"cookie": f"{SESSION_COOKIE}={value}", **kw.pop("headers", {})},
                         **kw)


def test_sign_in_is_a_server_session_that_logout_ends(keyed_svc):
    key = keyed_svc.keys.create("read", None, "web")[0]
    r = sign_in(keyed_svc, key)
    assert r.status_code == 303 and r.headers["location"] == "/"
    token = session_cookie(r)
    assert key not in r.headers["set-cookie"] and key.split("_", 2)[2] not in token  # the key never travels
    assert as_cookie(keyed_svc, token, "GET", "/v1/documents").status_code == 200
    assert as_cookie(keyed_svc, token, "GET", "/", headers={"accept": "text/html"}).status_code == 200
    # The key itself is no cookie.
    assert_problem(as_cookie(keyed_svc, key, "GET", "/v1/documents"), 401)
    r = as_cookie(keyed_svc, token, "POST", "/logout", headers={"origin": keyed_svc.url})
    assert r.status_code == 303
    body = assert_problem(as_cookie(keyed_svc, token, "GET", "/v1/documents"), 401)  # ended on the server
    assert "signed out" in body["detail"]


def test_sign_in_from_another_origin_is_refused(keyed_svc):
    key = keyed_svc.keys.create("read", None, "web")[0]
    r = sign_in(keyed_svc, key, origin=FOREIGN)
    assert_problem(r, 403)
    assert "set-cookie" not in r.headers
    assert sign_in(keyed_svc, key, origin=keyed_svc.url).status_code == 303


def test_a_session_expires_and_a_revoked_key_ends_its_sessions(keyed_svc):
    key, row = keyed_svc.keys.create("read", None, "web")
    token = session_cookie(sign_in(keyed_svc, key))
    other = session_cookie(sign_in(keyed_svc, key))
    with keyed_svc.keys.sessions() as s:  # the clock moves on: the stored expiry is now in the past
        s.execute(update(WebSession).where(WebSession.id == hashlib.sha256(token.encode()).hexdigest())
                  .values(expires_at=datetime.now(timezone.utc) - timedelta(seconds=1)))
        s.commit()
    assert "expired" in assert_problem(as_cookie(keyed_svc, token, "GET", "/v1/documents"), 401)["detail"]
    assert as_cookie(keyed_svc, other, "GET", "/v1/documents").status_code == 200
    keyed_svc.keys.revoke(row["id"])
    assert "revoked" in assert_problem(as_cookie(keyed_svc, other, "GET", "/v1/documents"), 401)["detail"]


def test_a_cookie_request_from_another_origin_is_refused(keyed_svc):
    key = keyed_svc.keys.create("admin", None, "web")[0]
    token = session_cookie(sign_in(keyed_svc, key))
    r = as_cookie(keyed_svc, token, "POST", "/v1/collections", json={"name": "csrf"}, headers={"origin": FOREIGN})
    assert_problem(r, 403)
    assert "csrf" not in collections(keyed_svc)
    # A bearer key is never sent by a browser on its own: no Origin check needed, none done.
    r = keyed_svc.client.post("/v1/collections", json={"name": "with-key"}, headers={"origin": FOREIGN})
    assert r.status_code == 201, r.text


# --- item 5: fail closed, rate limits, public endpoints, bad shapes ----------------------------------
def test_delete_is_rate_limited_per_key(keyed_svc):
    key = keyed_svc.keys.create("write", None, "deleter")[0]
    with httpx.Client(base_url=keyed_svc.url, headers={"authorization": f"Bearer {key}"}, timeout=60) as c:
        for _ in range(DELETE_LIMIT):
            assert_problem(c.delete("/v1/documents/0123456789abcdef0123456789abcdef"), 404)
        r = c.delete("/v1/documents/0123456789abcdef0123456789abcdef")
        assert "RAGSVC_RATE_LIMIT_DELETE_PER_MINUTE" in assert_problem(r, 429)["detail"]
        assert c.get("/v1/documents").status_code == 200  # reading is not limited


def test_metrics_needs_a_key_with_keys_on(keyed_svc, open_svc):
    with httpx.Client(base_url=keyed_svc.url, timeout=60) as c:
        assert_problem(c.get("/metrics"), 401)
    assert keyed_svc.client.get("/metrics").status_code == 200
    assert open_svc.client.get("/metrics").status_code == 200  # loopback, keys off: the scraper is local


def test_ready_names_the_component_and_fix_but_no_path_url_or_exception(tmp_path):
    svc = start_service(tmp_path, None, "ready", engine=False)
    try:
        index_dir = tmp_path / "indexes"
        shutil.rmtree(index_dir, ignore_errors=True)
        index_dir.write_text("not a folder")  # the index folder is now unusable
        r = svc.client.get("/ready")
        body = assert_problem(r, 503)
        text = r.text
        assert body["checks"]["index_store"] != "ok" and "RAGSVC_INDEX_DIR" in body["checks"]["index_store"]
        assert body["checks"]["engine"] != "ok" and "RAGSVC_LLM_URL" in body["checks"]["engine"]
        for leak in (str(tmp_path), "http://", "127.0.0.1", "Errno", "Error", "refused", "File exists"):
            assert leak not in text, (leak, text)
        assert str(index_dir) in svc.log.read_text()  # the detail went to the log
    finally:
        stop_service(svc)


def test_nul_in_ids_names_and_filters_is_a_4xx_on_postgresql(keyed_svc):
    c = keyed_svc.client
    assert_problem(c.get("/v1/documents/abc%00def"), 404)
    assert_problem(c.delete("/v1/documents/abc%00def"), 404)
    assert_problem(c.get("/v1/collections/a%00b"), 422)
    assert_problem(c.delete("/v1/collections/a%00b"), 422)
    assert_problem(c.post("/v1/collections", json={"name": "a\u0000b"}), 422)
    assert_problem(c.get("/v1/documents", params={"collection": "a\u0000"}), 422)
    assert_problem(c.get("/v1/documents", params={"status": "\u0000"}), 422)
    assert_problem(c.get("/v1/jobs", params={"status": "ready\u0000"}), 422)
    assert_problem(c.post("/v1/ask", json={"question": "q", "collection": "a\u0000"}), 422)
    assert_problem(c.post("/v1/ask", json={"question": "q", "document_ids": ["a\u0000"]}), 422)
    assert_problem(c.post("/v1/chat/completions", json={"model": "ragsvc/a\u0000",
                                                        "messages": [{"role": "user", "content": "q"}]}), 422)
    assert_problem(c.post("/v1/documents", files=[("files", ("n.txt", b"nul"))], data={"replaces": "x\u0000"}), 422)
    assert c.get("/health").status_code == 200


@pytest.mark.parametrize("part", [{"type": "text", "text": 5}, {"type": "text"}, {"type": "text", "text": None},
                                  "just a string", {"type": "text", "text": ["a"]}])
def test_a_chat_content_part_without_string_text_is_a_422(open_svc, part):
    r = open_svc.client.post("/v1/chat/completions", json={"model": "ragsvc", "messages": [
        {"role": "user", "content": [part]}]})
    assert "content part" in assert_problem(r, 422)["detail"]


def test_chat_completions_declares_its_body_in_openapi(open_svc):
    op = open_svc.client.get("/schema/openapi.json").json()["paths"]["/v1/chat/completions"]["post"]
    schema = op["requestBody"]["content"]["application/json"]["schema"]
    assert schema["required"] == ["messages"] and schema["properties"]["messages"]["type"] == "array"


def test_a_websocket_is_refused_unless_its_path_is_public():
    """Unit test of the middleware around a route: a non-HTTP scope never reaches a protected app."""
    from ragsvc.api.security import auth_middleware
    from ragsvc.settings import Settings

    class App:
        state = type("State", (), {"settings": Settings(auth="off")})()

    reached, sent = [], []

    async def inner(scope, receive, send):  # noqa: ANN001
        reached.append(scope["path"])

    async def send(message):  # noqa: ANN001
        sent.append(message)

    mw = auth_middleware(inner)
    for path in ("/v1/documents", "/health"):
        asyncio.run(mw({"type": "websocket", "path": path, "headers": [], "litestar_app": App}, None, send))
    assert reached == ["/health"] and sent == [{"type": "websocket.close", "code": 1008}]


def test_a_request_without_a_principal_gets_no_access():
    from litestar.testing import RequestFactory

    from ragsvc.api.security import principal_of
    from ragsvc.errors import Unauthorized

    with pytest.raises(Unauthorized):
        principal_of(RequestFactory().get("/v1/documents"))


def test_key_checks_answer_while_the_default_executor_is_saturated(tmp_path):
    """Uploads fsync on the default executor (asyncio.to_thread). With every one of its threads blocked,
    a request with a key still gets its answer (401 for a wrong key; a valid key's request gets as far
    as the content-type check): authentication never queues behind them. Not a timing: the blocked
    threads are only released after the answers arrived (or after a minute, which fails the test)."""
    from litestar.testing import TestClient

    from ragsvc.app import create_app
    from ragsvc.db.migrate import upgrade
    from ragsvc.settings import Settings

    url = f"sqlite:///{tmp_path / 'starve.db'}"
    upgrade(url)
    settings = Settings(auth="on", data_dir=tmp_path / "data", index_dir=tmp_path / "indexes", database_url=url,
                        embedded_worker=False, llm_url="http://127.0.0.1:9/v1", orphan_grace_s=1e9,
                        allowed_hosts=["testserver.local"])  # the test client's Host
    key = KeyStore(make_sessionmaker(make_engine(url))).create("admin", None, "starve")[0]

    release = threading.Event()

    async def saturate() -> list:
        # In the app's own event loop: a default executor of 2 threads, both blocked (like 2 slow fsyncs).
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(max_workers=2))
        return [loop.run_in_executor(None, release.wait) for _ in range(2)]

    answers: list[int] = []

    def ask(client) -> None:  # noqa: ANN001
        answers.append(client.get("/v1/documents", headers={"authorization": "Bearer rsk_000000000000_no"})
                       .status_code)
        answers.append(client.post("/v1/collections", content="x", headers={
            "authorization": f"Bearer {key}", "content-type": "text/plain"}).status_code)

    with TestClient(create_app(settings)) as client:
        client.blocking_portal.call(saturate)
        asker = threading.Thread(target=ask, args=(client,), daemon=True)
        asker.start()
        asker.join(60)  # a deadlock detector, not a timing: the answers must come while all is blocked
        done = list(answers)
        release.set()
        asker.join()
    assert done == [401, 415]


def test_chromium_keeps_the_host_prefixed_cookie_on_loopback_http(keyed_svc):
    """The decision behind ``__Host-`` on plain http: Chromium treats http://127.0.0.1 as a secure
    context, keeps the Secure cookie and sends it back, so the web page signs in and works."""
    from tests.test_web_ui import CHROMIUM, FLAGS

    import os

    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (`.ci/run` does)")
    from playwright.sync_api import expect, sync_playwright

    key = keyed_svc.keys.create("read", None, "chromium")[0]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = browser.new_page()
            page.goto(keyed_svc.url + "/")
            expect(page).to_have_url(keyed_svc.url + "/login")
            page.fill("#key", key)
            page.click("button[type=submit]")
            expect(page).to_have_url(keyed_svc.url + "/")
            cookies = {c["name"]: c for c in page.context.cookies()}
            assert cookies[SESSION_COOKIE]["secure"] and cookies[SESSION_COOKIE]["httpOnly"]
            assert cookies[SESSION_COOKIE]["value"] != key
            # The page's own API calls carry it: it stays on the page instead of going back to /login.
            assert page.evaluate("fetch('/v1/collections').then(r => r.status)") == 200
            expect(page).to_have_url(keyed_svc.url + "/")
        finally:
            browser.close()
