"""Faults, for real, against one service deployed as compose runs it: PostgreSQL, a separate vLLM server
(``RAGSVC_LLM_URL``), and here an index folder on its own small filesystem so it can fill up.

In order: the vLLM server is killed and comes back; PostgreSQL restarts while the worker embeds; the
index filesystem fills up during indexing; the API is SIGKILLed in the middle of storing an upload.
(The worker SIGKILLed mid-document is in test_worker_faults.py.)
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.conftest import RAGSVC, VllmServer, base_env, new_pg_database, start_service, stop_service

PG_VERSION_DIR = Path("/etc/postgresql")
FACT = b"The Quintaro lighthouse keeper logs the tide every 40 minutes from the north gallery.\n"


def varied_text(n: int, seed: str) -> bytes:
    words = ("harbour crane ferry lighthouse tide pier anchor rope gull kestrel heron otter salmon trout net "
             "buoy chart compass mast sail keel hull deck cabin galley").split()
    lines = [f"{seed} entry {i}: the {words[i % 25]} by the {words[(i * 7) % 25]} was logged at {i % 24}:"
             f"{(i * 13) % 60:02d} with {words[(i * 3) % 25]} notes about the {words[(i * 11) % 25]}." for i in range(n)]
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture(scope="module")
def tmpfs_index(tmp_path_factory):
    """A 48 MiB tmpfs for the index folder; without the right to mount, the disk-full test is skipped."""
    mnt = tmp_path_factory.mktemp("index-fs")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mnt)], capture_output=True, text=True)
    yield mnt if r.returncode == 0 else None
    if r.returncode == 0:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


@pytest.fixture(scope="module")
def own_database():
    """A database of its own: the session's PostgreSQL service runs a worker that would take these jobs."""
    with new_pg_database() as url:
        yield url


@pytest.fixture(scope="module")
def stack(tmp_path_factory, own_database, tmpfs_index):
    pg_database = own_database
    tmp = tmp_path_factory.mktemp("svc-faults")
    llm = VllmServer(tmp).start()
    env = {"RAGSVC_LLM_URL": llm.url + "/v1", "RAGSVC_WORKER_POLL_S": "0.3"}
    if tmpfs_index:
        env["RAGSVC_INDEX_DIR"] = str(tmpfs_index)
    try:
        svc = start_service(tmp, pg_database, "faults", extra_env=env)
        state = {"svc": svc, "llm": llm, "env": env, "tmp": tmp, "db": pg_database, "index_dir": tmpfs_index}
        yield state
        stop_service(state["svc"])
    finally:
        llm.kill()


def poll(fn, timeout: float, what: str):
    """Call fn until it returns something truthy; connection errors count as 'not yet'."""
    deadline, last = time.time() + timeout, None
    while time.time() < deadline:
        try:
            value = fn()
            if value:
                return value
        except (httpx.TransportError, ValueError) as exc:
            last = exc
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what} (last error: {last})")


def upload_one(svc, name: str, data: bytes, collection: str = "faults") -> str:
    r = svc.upload([(name, data)], collection=collection)
    assert r.status_code == 202, r.text
    return r.json()["documents"][0]["id"]


def test_generation_backend_dies_then_comes_back(stack):
    svc, llm = stack["svc"], stack["llm"]
    doc = upload_one(svc, "lighthouse.txt", FACT)
    assert svc.wait_done(doc)["status"] == "ready"
    question = {"question": "How often does the lighthouse keeper log the tide?", "collection": "faults", "mode": "off"}
    assert svc.client.post("/v1/ask", json=question).status_code == 200

    llm.kill()
    r = svc.client.post("/v1/ask", json=question)
    assert r.status_code == 503, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "vLLM server" in r.json()["detail"] and r.headers.get("retry-after")
    ready = svc.client.get("/ready")
    # /ready is public: it names the component and the setting to check, never the URL it failed on.
    assert ready.status_code == 503 and "RAGSVC_LLM_URL" in ready.json()["checks"]["engine"]
    assert "127.0.0.1" not in ready.text
    # Ingestion does not need the engine.
    other = upload_one(svc, "ferry.txt", b"The night ferry to Quintaro leaves at 23:40 from pier 6.\n")
    assert svc.wait_done(other)["status"] == "ready"

    llm.start()  # same port, new process; ragsvc is not restarted
    poll(lambda: svc.client.get("/ready").status_code == 200, 120, "ready again")
    r = svc.client.post("/v1/ask", json=question)
    assert r.status_code == 200, r.text
    assert r.json()["answered"] and r.json()["passages"]


def _restart_postgres() -> None:
    versions = [p.name for p in PG_VERSION_DIR.iterdir()] if PG_VERSION_DIR.is_dir() else []
    if not versions or not shutil.which("pg_ctlcluster"):
        pytest.skip("pg_ctlcluster is not available here, so PostgreSQL cannot be restarted by this test")
    r = subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", versions[0], "main", "restart"],
                       capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        pytest.skip(f"cannot restart PostgreSQL here ({r.stderr.strip()[:200]})")


def test_postgres_restart_while_the_worker_embeds(stack):
    svc = stack["svc"]
    doc = upload_one(svc, "log.txt", varied_text(3000, "pg"))
    poll(lambda: (d := svc.client.get(f"/v1/documents/{doc}").json())["stage"] == "embedding"
         and (d["progress"] or 0) > 0, 300, "embedding to start")
    _restart_postgres()
    final = poll(lambda: (d := svc.client.get(f"/v1/documents/{doc}").json())["status"] in ("ready", "failed")
                 and d, 600, "the document after the restart")
    assert final["status"] == "ready", final["error"]
    # Exactly one row per chunk, and the worker takes new work.
    engine = create_engine(stack["db"].replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT count(*), count(DISTINCT ordinal) FROM chunks WHERE document_id = :d"),
                            {"d": doc}).one()
    engine.dispose()
    assert rows[0] == rows[1] == final["chunks"]
    after = upload_one(svc, "after.txt", b"After the restart the harbour crane was repainted yellow.\n")
    assert poll(lambda: svc.wait_done(after), 300, "a new document")["status"] == "ready"
    assert svc.client.get("/ready").status_code == 200


def _index_file(index_dir: Path) -> Path:
    """The collection's segment manifest: what is served is exactly what it names."""
    files = list(index_dir.glob("*/manifest.log"))
    assert len(files) == 1, files
    return files[0]


def _served(manifest: Path) -> int:
    from ragsvc.index_store import IndexStore

    return len(IndexStore(manifest.parent.parent, 0).stored_ids(manifest.parent.name))


def test_full_index_disk_fails_the_document_and_keeps_the_index(stack):
    if stack["index_dir"] is None:
        pytest.skip("mounting a small tmpfs needs root; without one the full disk cannot be made safely")
    svc, index_dir = stack["svc"], stack["index_dir"]
    index = _index_file(index_dir)
    before_bytes, before_n = index.read_bytes(), _served(index)
    free = shutil.disk_usage(index_dir).free
    filler = index_dir / "filler"
    with open(filler, "wb") as f:  # leave no room for one more segment (a document's segment is small)
        try:
            f.write(b"\0" * free)
        except OSError:
            pass
    try:
        doc = upload_one(svc, "full.txt", varied_text(400, "disk"))
        final = svc.wait_done(doc)
        assert final["status"] == "failed"
        assert "could not be written" in final["error"] and "No space left" in final["error"], final["error"]
        assert "served index is unchanged" in final["error"]
        assert index.read_bytes() == before_bytes  # not one byte of the served index changed
        assert not list(index_dir.glob("*/.*.tmp"))  # no partial file left holding space
        r = svc.client.post("/v1/ask", json={"question": "How often is the tide logged?", "collection": "faults",
                                             "dry_run": True})
        assert r.status_code == 200 and r.json()["passages"], r.text  # search works on the old index
    finally:
        filler.unlink()
    again = upload_one(svc, "full.txt", varied_text(400, "disk"))
    assert svc.wait_done(again)["status"] == "ready"
    assert _served(index) > before_n


def test_api_sigkill_while_storing_an_upload(stack):
    """Kill the API the moment the first file of a 30-file upload reaches the disk (before the commit),
    and once more at a random later point; then restart it and sweep."""
    svc, tmp = stack["svc"], stack["tmp"]
    files_dir = tmp / "data" / "files"
    batch = [(f"kill-{i}.txt", varied_text(60, f"k{i}")) for i in range(30)]
    outcomes = []
    for delay in (None, 0.05):
        before = {p.name for p in files_dir.iterdir()}
        result: dict = {}

        def send() -> None:
            try:
                result["r"] = svc.upload(batch, collection="killed")
            except httpx.TransportError as exc:
                result["error"] = exc

        sender = threading.Thread(target=send)
        sender.start()
        if delay is None:  # wait for the first new upload folder, then kill at once
            deadline = time.time() + 60
            while not ({p.name for p in files_dir.iterdir()} - before) and time.time() < deadline:
                time.sleep(0.001)
        else:
            time.sleep(delay)
        os.kill(svc.proc.pid, signal.SIGKILL)
        sender.join(60)
        outcomes.append("answered" if "r" in result else "killed")
        svc.proc.wait(30)
        stop_service(svc)  # the worker and anything else in the group
        svc = start_service(tmp, stack["db"], "faults", extra_env=stack["env"])
        stack["svc"] = svc
    assert outcomes[0] == "killed"  # the first kill really landed mid-request

    env = base_env(tmp) | stack["env"] | {"RAGSVC_DATABASE_URL": stack["db"]}
    out = subprocess.run([RAGSVC, "cleanup", "--grace-s", "0"], env=env, cwd=tmp, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    docs = {d["id"]: d for d in svc.client.get("/v1/documents", params={"collection": "killed"}).json()["documents"]}
    everything = {d["id"] for d in svc.client.get("/v1/documents").json()["documents"]}
    folders = {p.name for p in files_dir.iterdir()}
    assert folders == everything  # nothing dangling, nothing missing
    assert not list(files_dir.glob("*/*.part"))
    for doc_id, doc in docs.items():  # every stored file is whole and queued (or already done)
        data = (files_dir / doc_id / "original").read_bytes()
        assert hashlib.sha256(data).hexdigest() == doc["sha256"] and len(data) == doc["size_bytes"]
        assert svc.wait_done(doc_id)["status"] == "ready"
