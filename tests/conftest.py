"""Shared fixtures: the real service (``ragsvc serve``) on a free port, on SQLite and on PostgreSQL.

The service runs exactly as users run it: a subprocess of the ``ragsvc`` console script, with the
real vLLM engine on the small model, the real embedder, FAISS and an embedded ingestion worker.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
RAGSVC = str(Path(sys.executable).parent / "ragsvc")
PG_ADMIN_URL = os.environ.get("RAGSVC_TEST_PG", "postgresql://127.0.0.1:5432/test")
READY_TIMEOUT_S = float(os.environ.get("RAGSVC_TEST_READY_TIMEOUT", "900"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def base_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAGSVC_")}
    env.update({
        "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
        "RAGSVC_DATA_DIR": str(tmp / "data"), "RAGSVC_INDEX_DIR": str(tmp / "indexes"),
        # Small KV cache: the test machines share 2 cores and the model is tiny.
        "VLLM_CPU_KVCACHE_SPACE": "1", "RAGSVC_WORKER_POLL_S": "0.3",
        "RAGSVC_MAX_UPLOAD_MB": "5",  # small, so the 413 test sends little
        "RAGSVC_LOG_JSON": "true",  # the logs are checked for the request id
    })
    return env


@contextmanager
def new_pg_database():
    """A fresh PostgreSQL database, dropped afterwards; yields its SQLAlchemy URL."""
    import psycopg

    name = f"ragsvc_test_{uuid.uuid4().hex[:8]}"
    try:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL at {PG_ADMIN_URL} is required for these tests: {exc}")
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    try:
        yield f"{base}/{name}"
    finally:
        # A new connection: the fault tests restart PostgreSQL, which ends any connection held meanwhile.
        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=30) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """A fresh database for one test, SQLite (a file in its tmp_path) and then PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.db'}"
    else:
        with new_pg_database() as url:
            yield url


@pytest.fixture(scope="session")
def embedder():
    """The real embedding model (the packaged all-MiniLM-L6-v2), loaded once for the whole run."""
    from ragsvc.embedder import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder("all-MiniLM-L6-v2")


@pytest.fixture(scope="session")
def pg_database():
    with new_pg_database() as url:
        yield url


class Service:
    def __init__(self, url: str, proc: subprocess.Popen, tmp: Path, log: Path, db: str) -> None:
        self.url, self.proc, self.tmp, self.log, self.db = url, proc, tmp, log, db
        self.client = httpx.Client(base_url=url, timeout=600)

    def upload(self, files: list[tuple[str, bytes]], collection: str | None = None) -> httpx.Response:
        data = {"collection": collection} if collection else None
        return self.client.post("/v1/documents", files=[("files", f) for f in files], data=data)

    def wait_done(self, doc_id: str, timeout: float = 600) -> dict:
        deadline = time.time() + timeout
        seen = []
        while time.time() < deadline:
            doc = self.client.get(f"/v1/documents/{doc_id}").json()
            if not seen or seen[-1] != doc["status"]:
                seen.append(doc["status"])
            if doc["status"] in ("ready", "failed") and self._job_finished(doc_id):
                doc["_seen"] = seen
                return doc
            time.sleep(0.3)
        raise AssertionError(f"document {doc_id} not done after {timeout}s (states seen: {seen})")

    def _job_finished(self, doc_id: str) -> bool:
        """The worker marks the job done after the document is ready: then all work is over."""
        jobs = self.client.get("/v1/jobs", params={"limit": 1000}).json()["jobs"]
        mine = [j for j in jobs if j["document_id"] == doc_id]
        return not mine or mine[0]["status"] in ("done", "failed")

    def log_tail(self, n: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])


def start_service(tmp: Path, database_url: str | None, db_label: str,
                  extra_env: dict[str, str] | None = None, engine: bool = True) -> Service:
    """``engine=False``: no language model (generation points at a closed port, so ``/ready`` stays 503 and
    asking answers 503); the API, the embedder, the indexes and the worker are real. For tests of
    uploads, ingestion, access and limits, which need no answers: it starts in seconds and saves the
    engine's memory and CPU."""
    port = free_port()
    env = base_env(tmp) | (extra_env or {})
    if not engine:
        env["RAGSVC_LLM_URL"] = f"http://127.0.0.1:{free_port()}/v1"
    if database_url:
        env["RAGSVC_DATABASE_URL"] = database_url
    log = tmp / "service.log"
    proc = subprocess.Popen([RAGSVC, "serve", "--port", str(port)], env=env, cwd=tmp,
                            stdout=log.open("a"), stderr=subprocess.STDOUT, start_new_session=True)
    svc = Service(f"http://127.0.0.1:{port}", proc, tmp, log, db_label)
    deadline = time.time() + READY_TIMEOUT_S
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ragsvc serve exited with {proc.returncode}:\n{svc.log_tail()}")
        try:
            if svc.client.get("/ready" if engine else "/health", timeout=5).status_code == 200:
                return svc
        except httpx.TransportError:
            pass
        time.sleep(1)
    stop_service(svc)
    raise RuntimeError(f"ragsvc serve not ready after {READY_TIMEOUT_S}s:\n{svc.log_tail()}")


def stop_service(svc: Service) -> None:
    svc.client.close()
    if svc.proc.poll() is None:
        svc.proc.send_signal(signal.SIGINT)
        try:
            svc.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(svc.proc.pid, signal.SIGKILL)
            svc.proc.wait()
    # Make sure the worker and the engine core (same process group) are gone too.
    try:
        os.killpg(svc.proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def service(request, tmp_path_factory) -> Service:
    """The running service; every test using it runs once on SQLite and once on PostgreSQL."""
    tmp = tmp_path_factory.mktemp(f"svc-{request.param}")
    url = request.getfixturevalue("pg_database") if request.param == "postgresql" else None
    svc = start_service(tmp, url, request.param)
    yield svc
    stop_service(svc)
    artifacts = ROOT / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    shutil.copy(svc.log, artifacts / f"service-{request.param}.log")


class VllmServer:
    """A real vLLM OpenAI-compatible server (vllm-cpu, the small model) on loopback, as compose runs one.
    It can be killed and started again on the same port (the fault tests do)."""

    def __init__(self, tmp: Path, port: int | None = None) -> None:
        self.tmp, self.port = tmp, port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp / "vllm.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "VllmServer":
        from ragsvc.local_models import ensure_smollm2
        from ragsvc.settings import Settings

        model_dir = ensure_smollm2(Settings().cache_dir)
        # vllm-cpu's `vllm` console script looks for a distribution named `vllm` and crashes; the module runs.
        cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
               "--served-model-name", "smollm2-135m-instruct", "--enforce-eager", "--max-model-len", "4096",
               "--dtype", "float32", "--host", "127.0.0.1", "--port", str(self.port)]
        self.proc = subprocess.Popen(cmd, env=base_env(self.tmp), cwd=self.tmp, stdout=self.log.open("a"),
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + READY_TIMEOUT_S
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vLLM server exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=5).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(2)
        self.kill()
        raise RuntimeError(f"vLLM server not up after {READY_TIMEOUT_S}s:\n{self.log.read_text()[-3000:]}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc = None


@pytest.fixture(scope="session")
def vllm_server(tmp_path_factory):
    server = VllmServer(tmp_path_factory.mktemp("vllm-server"))
    try:
        yield server.start().url + "/v1"
    finally:
        server.kill(signal.SIGTERM)
        artifacts = ROOT / "test-artifacts"
        artifacts.mkdir(exist_ok=True)
        if server.log.exists():
            shutil.copy(server.log, artifacts / "vllm-server.log")


@pytest.fixture(scope="session")
def remote_service(vllm_server, tmp_path_factory) -> Service:
    """``ragsvc serve`` generating on the remote vLLM server instead of an in-process engine."""
    tmp = tmp_path_factory.mktemp("svc-remote")
    svc = start_service(tmp, None, "remote", extra_env={"RAGSVC_LLM_URL": vllm_server})
    yield svc
    stop_service(svc)
