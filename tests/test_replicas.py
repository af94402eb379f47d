"""Several API processes and workers on one PostgreSQL database (issue 13, items 4 and 5).

Two `ragsvc serve --no-worker` replicas (A and B) and two `ragsvc worker` processes share one fresh
PostgreSQL database, one files folder and one index folder, as docs/deploy.md tells a deployment to run
them; both replicas generate on one real vLLM server (RAGSVC_LLM_URL, the compose topology). The
questions are asked with ``dry_run`` (retrieval and packing, no generation), which still needs the
engine to be up, so that the test checks what each replica *retrieves*, not what the small model says.

Bounds: a document is retrievable through the other replica within 2 s of turning ready, and gone
from it within 2 s of its DELETE returning (the issue's visibility bound; polled, never timed otherwise).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import RAGSVC, READY_TIMEOUT_S, Service, base_env, free_port, new_pg_database

VISIBLE_WITHIN_S = 2.0
DELETE_LIMIT = 5  # per key per minute, counted over both replicas

DOCS = {
    "lighthouse.md": "# Zephyrine lighthouse\n\nThe keeper of the Zephyrine lighthouse has a cat named "
                     "Marmalade Quince, who sleeps beside the great lamp every night.\n",
    "orchard.md": "# Vellmoor orchard\n\nThe Vellmoor orchard grows a blue pear called the Sapphire Drop, "
                  "picked only in the second week of October.\n",
    "harbour.md": "# Quillon harbour\n\nQuillon harbour's tide bell was cast from bronze in 1871 and rings "
                  "eleven times at every high tide.\n",
}


class Stack:
    def __init__(self, tmp: Path, url: str, env: dict[str, str]) -> None:
        self.tmp, self.url, self.env = tmp, url, env
        self.procs: list[subprocess.Popen] = []
        self.log = tmp / "stack.log"

    def spawn(self, *args: str) -> subprocess.Popen:
        proc = subprocess.Popen([RAGSVC, *args], env=self.env, cwd=self.tmp, stdout=self.log.open("a"),
                                stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        return proc

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([RAGSVC, *args], env=self.env, capture_output=True, text=True, timeout=300)

    def replica(self, key: str) -> Service:
        port = free_port()
        proc = self.spawn("serve", "--no-worker", "--port", str(port))
        svc = Service(f"http://127.0.0.1:{port}", proc, self.tmp, self.log, "postgresql")
        svc.client.headers["authorization"] = f"Bearer {key}"
        return svc

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in self.procs:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _wait_ready(*services: Service) -> None:
    deadline = time.time() + READY_TIMEOUT_S
    for svc in services:
        while True:
            assert svc.proc.poll() is None, f"a replica exited:\n{svc.log_tail()}"
            try:
                if svc.client.get("/ready", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.time() < deadline, f"replica not ready:\n{svc.log_tail()}"
            time.sleep(1)


@pytest.fixture(scope="module")
def stack(vllm_server, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("replicas")
    with new_pg_database() as url:
        env = base_env(tmp) | {
            "RAGSVC_DATABASE_URL": url, "RAGSVC_LLM_URL": vllm_server, "RAGSVC_AUTH": "on",
            "RAGSVC_RATE_LIMIT_STORE": "database", "RAGSVC_RATE_LIMIT_DELETE_PER_MINUTE": str(DELETE_LIMIT),
            "RAGSVC_RATE_LIMIT_ASK_PER_MINUTE": "0",  # the visibility polls ask often
            "RAGSVC_AUTO_MIGRATE": "false",  # migrated once, below, as compose's `migrate` does
        }
        s = Stack(tmp, url, env)
        assert s.cli("db", "upgrade").returncode == 0
        s.keys = []
        for name in ("main", "limits"):
            made = s.cli("keys", "create", "--all-collections", "--scope", "admin", "--name", name)
            assert made.returncode == 0, made.stderr
            s.keys.append(made.stdout.strip())
        try:
            s.a, s.b = s.replica(s.keys[0]), s.replica(s.keys[0])
            s.workers = [s.spawn("worker"), s.spawn("worker")]
            _wait_ready(s.a, s.b)
            yield s
        finally:
            s.stop()


def _retrieved(svc: Service, question: str, collection: str) -> httpx.Response:
    return svc.client.post("/v1/ask", json={"question": question, "collection": collection, "dry_run": True,
                                            "include_retrieved": True, "mode": "off"})


def _documents(resp: httpx.Response) -> set[str]:
    assert resp.status_code == 200, resp.text
    return {p["document_id"] for p in resp.json()["retrieved"]}


def _poll(svc: Service, question: str, collection: str, since: float, want) -> set[str]:  # noqa: ANN001
    """Ask until ``want(documents)`` holds; a try that starts after ``since`` + the bound fails the test."""
    while True:
        started = time.time()
        docs = _documents(_retrieved(svc, question, collection))
        if want(docs):
            return docs
        assert started - since < VISIBLE_WITHIN_S, f"not visible within {VISIBLE_WITHIN_S} s: {docs}"
        time.sleep(0.1)


def _upload(svc: Service, name: str, collection: str) -> str:
    resp = svc.upload([(name, DOCS[name].encode(), "text/markdown")], collection=collection)
    assert resp.status_code == 202, resp.text
    doc_id = resp.json()["documents"][0]["id"]
    assert svc.wait_done(doc_id, timeout=300)["status"] == "ready"
    return doc_id


def test_upload_ask_delete_and_drop_across_replicas(stack):
    a, b = stack.a, stack.b
    q_cat = "What is the Zephyrine lighthouse keeper's cat called?"

    # Upload through A (a worker ingests it), ask through B: B's index picks up the worker's write.
    cat = _upload(a, "lighthouse.md", "shared")
    _poll(b, q_cat, "shared", time.time(), lambda docs: cat in docs)

    # Delete through B: A stops returning it.
    pear = _upload(b, "orchard.md", "shared")
    _poll(a, "Which pear is blue?", "shared", time.time(), lambda docs: pear in docs)
    assert b.client.delete(f"/v1/documents/{cat}").status_code == 204
    deleted = time.time()
    docs = _poll(a, q_cat, "shared", deleted, lambda docs: cat not in docs)
    assert pear in docs  # the rest of the collection is still there

    # Drop the collection through B: A answers 404 for it at once, as B does.
    assert b.client.delete("/v1/collections/shared").status_code == 204
    for svc in (a, b):
        gone = _retrieved(svc, "Which pear is blue?", "shared")
        assert gone.status_code == 404 and "no collection named 'shared'" in gone.json()["detail"], gone.text
    # Recreated under the same name it is a new, empty collection on both replicas: A had the old one's
    # indexes cached, but caches are keyed by the collection's id, and the new one has a new id.
    bell = _upload(a, "harbour.md", "shared")
    for svc in (b, a):
        docs = _poll(svc, "When was the Quillon tide bell cast?", "shared", time.time(), lambda d: bell in d)
        assert docs == {bell}, docs

    # The shared index agrees with the database, and both workers and replicas are still up.
    check = stack.cli("index", "check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert all(p.poll() is None for p in stack.procs), a.log_tail()


def test_rate_limit_holds_across_replicas(stack):
    """DELETE_LIMIT requests per key per minute in all: spread over A and B, the one after them is refused,
    though neither replica alone has seen more than the limit (each counting alone would allow 2x)."""
    statuses, remaining = [], []
    for i in range(DELETE_LIMIT + 1):
        svc = (stack.a, stack.b)[i % 2]
        resp = svc.client.delete("/v1/documents/no-such-document",
                                 headers={"authorization": f"Bearer {stack.keys[1]}"})
        statuses.append(resp.status_code)
        remaining.append(resp.headers.get("ratelimit-remaining"))
    assert 429 not in statuses[:DELETE_LIMIT], statuses
    # Each replica reports what is left of the one shared count, not of its own.
    assert remaining[:DELETE_LIMIT] == [str(DELETE_LIMIT - n) for n in range(1, DELETE_LIMIT + 1)], remaining
    assert statuses[DELETE_LIMIT] == 429, statuses
    assert resp.headers["content-type"].startswith("application/problem+json")
    assert "try again in" in resp.json()["detail"] and int(resp.headers["retry-after"]) <= 60
    # The key that hit its limit is the only one limited: the other key still deletes on both replicas.
    for svc in (stack.a, stack.b):
        assert svc.client.delete("/v1/documents/no-such-document").status_code == 404
