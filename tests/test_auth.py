"""API keys, scopes, collection isolation and rate limits, against the real service with authentication on
(PostgreSQL, as compose runs it).

The route lists are taken from the app's own route table, so a route added later without protection, or
without an isolation case here, fails these tests.
"""

from __future__ import annotations

import re
import subprocess

import httpx
import pytest

from ragsvc.app import create_app
from ragsvc.auth import KeyStore, is_public
from ragsvc.db.session import make_engine, make_sessionmaker
from ragsvc.settings import Settings
from tests.conftest import RAGSVC, base_env, new_pg_database, start_service, stop_service

ASK_LIMIT = 4
UPLOAD_LIMIT = 3
A_TEXT = b"The Zorblax reactor on planet Quintaro was commissioned in 2091 by engineer Mira Okafor.\n"
B_TEXT = b"The secret recipe of the Vellmoor bakery uses saffron, cardamom and black salt.\n"


@pytest.fixture(scope="module")
def pg_database():
    """A database of its own (shadowing the session one): the session's PostgreSQL service runs a worker
    that would otherwise take this module's jobs and index them elsewhere."""
    with new_pg_database() as url:
        yield url


@pytest.fixture(scope="module")
def auth_svc(tmp_path_factory, pg_database):
    tmp = tmp_path_factory.mktemp("svc-auth")
    svc = start_service(tmp, pg_database, "auth", extra_env={
        "RAGSVC_AUTH": "on", "RAGSVC_RATE_LIMIT_ASK_PER_MINUTE": str(ASK_LIMIT),
        "RAGSVC_RATE_LIMIT_UPLOAD_PER_MINUTE": str(UPLOAD_LIMIT)})
    engine = make_engine(pg_database.replace("postgresql://", "postgresql+psycopg://"))
    try:
        svc.keys = KeyStore(make_sessionmaker(engine))
        admin, _ = svc.keys.create("admin", None, "test admin")
        svc.client.headers["authorization"] = f"Bearer {admin}"  # wait_done and setup use it
        svc.docs = {}
        for coll, text in (("alpha", A_TEXT), ("beta", B_TEXT)):
            r = svc.upload([(f"{coll}.txt", text)], collection=coll)
            assert r.status_code == 202, r.text
            doc = r.json()["documents"][0]
            assert svc.wait_done(doc["id"])["status"] == "ready"
            svc.docs[coll] = doc["id"]
        yield svc
    finally:  # also when the setup itself failed: no service left running
        stop_service(svc)
        engine.dispose()


def client(svc, key: str | None) -> httpx.Client:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=svc.url, headers=headers, timeout=600)


def key_for(svc, scope: str, collection: str | None) -> str:
    return svc.keys.create(scope, collection, f"{scope}-{collection}")[0]


def routes() -> list[tuple[str, str]]:
    """(method, path) of every route the app serves, path parameters filled with plausible values."""
    app = create_app(Settings())
    out = []
    for route in app.routes:
        path = re.sub(r"\{file_path:path\}", "style.css", route.path)
        path = re.sub(r"\{[^}]+\}", "x", path)
        for method in sorted(route.methods - {"HEAD", "OPTIONS"}):
            out.append((method, path))
    return out


def assert_problem(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, (r.request.method, r.request.url, r.status_code, r.text[:300])
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["status"] == status and body["detail"]
    return body


def test_public_routes_are_only_probes_schema_and_sign_in():
    public = {p for _, p in routes() if is_public(p)}
    assert {p for p in public if not p.startswith("/schema")} == {"/health", "/ready", "/login", "/logout"}


@pytest.mark.parametrize("key", [None, "rsk_000000000000_wrong", "not-a-key-at-all"])
def test_every_protected_route_refuses_a_missing_or_wrong_key(auth_svc, key):
    protected = [(m, p) for m, p in routes() if not is_public(p)]
    assert len(protected) >= 12  # the table really was read
    with client(auth_svc, key) as c:
        for method, path in protected:
            r = c.request(method, path, headers={"accept": "application/json"},
                          json={} if method in ("POST", "PUT", "PATCH") else None)
            body = assert_problem(r, 401)
            assert r.headers["www-authenticate"].startswith("Bearer")
            assert "API key" in body["detail"]


def test_public_routes_answer_without_a_key(auth_svc):
    with client(auth_svc, None) as c:
        assert c.get("/health").status_code == 200
        assert c.get("/ready").status_code == 200
        assert c.get("/schema/openapi.json").status_code == 200


def test_key_is_stored_hashed_and_revocation_is_immediate(auth_svc):
    key, row = auth_svc.keys.create("read", "alpha", "to revoke")
    with auth_svc.keys.sessions() as s:
        from ragsvc.db import ApiKey

        stored = s.get(ApiKey, row["id"])
        assert key not in (stored.key_hash, stored.id) and len(stored.key_hash) == 64
    with client(auth_svc, key) as c:
        assert c.get("/v1/documents").status_code == 200
        auth_svc.keys.revoke(row["id"])
        body = assert_problem(c.get("/v1/documents"), 401)
        assert "revoked" in body["detail"]


def test_keys_cli_create_list_revoke(auth_svc, tmp_path, pg_database):
    env = base_env(tmp_path) | {"RAGSVC_DATABASE_URL": pg_database.replace("postgresql://", "postgresql+psycopg://")}
    out = subprocess.run([RAGSVC, "keys", "create", "--collection", "alpha", "--scope", "read", "--name", "cli"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    key = out.stdout.strip()
    assert key.startswith("rsk_") and "only time" in out.stderr
    with client(auth_svc, key) as c:
        assert c.get("/v1/documents").status_code == 200
    listed = subprocess.run([RAGSVC, "keys", "list"], env=env, capture_output=True, text=True, timeout=120)
    assert key not in listed.stdout and '"name": "cli"' in listed.stdout
    key_id = key.split("_")[1]
    assert subprocess.run([RAGSVC, "keys", "revoke", key_id], env=env, capture_output=True,
                          timeout=120).returncode == 0
    with client(auth_svc, key) as c:
        assert_problem(c.get("/v1/documents"), 401)
    bad = subprocess.run([RAGSVC, "keys", "create", "--scope", "read"], env=env, capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 2 and "--collection" in bad.stderr


def test_scopes(auth_svc):
    read, write = key_for(auth_svc, "read", "alpha"), key_for(auth_svc, "write", "alpha")
    with client(auth_svc, read) as c:
        assert c.get("/v1/documents").status_code == 200
        assert "scope 'write'" in assert_problem(
            c.post("/v1/documents", files=[("files", ("r.txt", b"read scope upload"))]), 403)["detail"]
        assert_problem(c.delete(f"/v1/documents/{auth_svc.docs['alpha']}"), 403)
        assert_problem(c.post("/v1/collections", json={"name": "alpha"}), 403)
    with client(auth_svc, write) as c:
        r = c.post("/v1/documents", files=[("files", ("w.txt", b"A document the write key may add."))])
        assert r.status_code == 202, r.text
        assert r.json()["documents"][0]["collection"] == "alpha"  # the key's collection by default
        auth_svc.wait_done(r.json()["documents"][0]["id"])
        assert c.delete(f"/v1/documents/{r.json()['documents'][0]['id']}").status_code == 204
        assert_problem(c.delete("/v1/collections/alpha"), 403)


# Every /v1 route, and how a key for collection alpha tries to reach collection beta through it.
# The test below checks this table covers the app's route table.
def isolation_cases(svc) -> dict[tuple[str, str], list]:
    b_doc = svc.docs["beta"]
    return {
        ("GET", "/v1/documents"): [("GET", "/v1/documents", {"params": {"collection": "beta"}}, 403)],
        ("POST", "/v1/documents"): [
            ("POST", "/v1/documents", {"files": [("files", ("x.txt", b"into beta"))], "data": {"collection": "beta"}}, 403),
            ("POST", "/v1/documents", {"files": [("files", ("x.txt", b"replace beta's"))], "data": {"replaces": b_doc}}, 404)],
        ("GET", "/v1/documents/x"): [("GET", f"/v1/documents/{b_doc}", {}, 404)],
        ("DELETE", "/v1/documents/x"): [("DELETE", f"/v1/documents/{b_doc}", {}, 404)],
        ("GET", "/v1/collections"): [],  # checked below: beta is not listed
        ("POST", "/v1/collections"): [("POST", "/v1/collections", {"json": {"name": "beta"}}, 403)],
        ("GET", "/v1/collections/x"): [("GET", "/v1/collections/beta", {}, 403)],
        ("DELETE", "/v1/collections/x"): [("DELETE", "/v1/collections/beta", {}, 403)],
        ("GET", "/v1/jobs"): [],  # checked below: no job of beta is listed
        ("POST", "/v1/ask"): [("POST", "/v1/ask", {"json": {"question": "What does the bakery use?",
                                                            "collection": "beta"}}, 403)],
        ("POST", "/v1/chat/completions"): [("POST", "/v1/chat/completions", {"json": {
            "model": "ragsvc/beta", "messages": [{"role": "user", "content": "What does the bakery use?"}]}}, 403)],
    }


def test_isolation_table_covers_every_v1_route(auth_svc):
    v1 = {(m, p) for m, p in routes() if p.startswith("/v1")}
    assert v1 == set(isolation_cases(auth_svc)), "add an isolation case for the new route"


def test_a_key_for_one_collection_reaches_nothing_of_another(auth_svc):
    key = key_for(auth_svc, "admin", "alpha")  # the widest scope: only the collection binding protects beta
    with client(auth_svc, key) as c:
        for cases in isolation_cases(auth_svc).values():
            for method, path, kwargs, status in cases:
                r = c.request(method, path, **kwargs)
                assert_problem(r, status)
        docs = c.get("/v1/documents").json()["documents"]
        assert {d["collection"] for d in docs} == {"alpha"}
        assert [x["name"] for x in c.get("/v1/collections").json()["collections"]] == ["alpha"]
        jobs = c.get("/v1/jobs").json()["jobs"]
        assert jobs and {j["collection"] for j in jobs} == {"alpha"}
        # Asking without naming a collection uses the key's; beta's text never comes back, even when
        # its document id is passed as a filter.
        r = c.post("/v1/ask", json={"question": "Which spices does the Vellmoor bakery recipe use?",
                                    "document_ids": [auth_svc.docs["beta"]], "dry_run": True})
        assert r.status_code == 200, r.text
        assert all(p["document_id"] != auth_svc.docs["beta"] for p in r.json()["passages"])
        r = c.post("/v1/chat/completions", json={"model": "ragsvc", "messages": [
            {"role": "user", "content": "Which spices does the Vellmoor bakery recipe use?"}]})
        assert r.status_code == 200, r.text
        assert "saffron" not in r.text
    # beta is untouched.
    assert auth_svc.client.get(f"/v1/documents/{auth_svc.docs['beta']}").json()["status"] == "ready"


def test_web_page_sign_in_with_a_cookie(auth_svc):
    """The cookie is a server-side session (tests/test_web_safety.py has the rest: logout, expiry,
    Origin). httpx keeps no Secure cookie over plain http, so the test carries it by hand."""
    key = key_for(auth_svc, "read", "alpha")
    with httpx.Client(base_url=auth_svc.url, timeout=60) as c:
        r = c.get("/", headers={"accept": "text/html"})
        assert r.status_code == 303 and r.headers["location"] == "/login"
        assert "API key" in c.get("/login").text
        r = c.post("/login", data={"key": "rsk_000000000000_nope"})
        assert r.status_code == 401 and "not valid" in r.text
        r = c.post("/login", data={"key": key})
        assert r.status_code == 303
        cookie = r.headers["set-cookie"]
        assert cookie.startswith("__Host-ragsvc_session=") and key not in cookie
        assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower() and "secure" in cookie.lower()
        jar = {"cookie": cookie.split(";", 1)[0]}
        assert c.get("/", headers=jar).status_code == 200
        assert c.get("/static/app.js", headers=jar).status_code == 200
        assert c.get("/v1/documents", headers=jar).status_code == 200
        assert c.post("/logout", headers=jar).status_code == 303
        assert_problem(c.get("/v1/documents", headers=jar), 401)


def test_rate_limits_per_key(auth_svc):
    key, other = key_for(auth_svc, "write", "alpha"), key_for(auth_svc, "write", "alpha")
    with client(auth_svc, key) as c, client(auth_svc, other) as o:
        # Empty questions are refused cheaply (422) but still count: the limit is on requests.
        for _ in range(ASK_LIMIT):
            assert c.post("/v1/ask", json={"question": ""}).status_code == 422
        r = c.post("/v1/ask", json={"question": "Who commissioned the reactor?"})
        body = assert_problem(r, 429)
        assert int(r.headers["retry-after"]) > 0 and "try again" in body["detail"]
        assert c.post("/v1/chat/completions", json={"model": "ragsvc", "messages": []}).status_code == 429
        assert o.post("/v1/ask", json={"question": ""}).status_code == 422  # another key: its own budget
        assert c.get("/v1/documents").status_code == 200  # reading is not limited
        for _ in range(UPLOAD_LIMIT):
            assert c.post("/v1/documents", files=[("files", ("e.txt", b""))]).status_code == 422
        assert_problem(c.post("/v1/documents", files=[("files", ("e.txt", b"x"))]), 429)
