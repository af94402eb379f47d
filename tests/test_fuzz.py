"""schemathesis against the service's own OpenAPI schema: every operation, generated requests (valid and
not), zero 5xx and every documented response matching its schema. Twice: the loopback default (keys off,
SQLite) and keys on over PostgreSQL (where NUL characters in text are an error), with an admin key.

Runs schemathesis' own command line (its pytest plugin does not support this pytest yet) with a HAR
report, so the test can count the requests really sent and look at every status itself. Cases per
operation: RAGSVC_TEST_FUZZ_EXAMPLES (default 40: over 500 requests in all, as CI runs it); raise it
for a longer run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ragsvc.auth import KeyStore
from ragsvc.db.session import make_engine, make_sessionmaker
from tests.conftest import ROOT, new_pg_database, start_service, stop_service

EXAMPLES = int(os.environ.get("RAGSVC_TEST_FUZZ_EXAMPLES", "40"))


@pytest.fixture(scope="module", params=["sqlite-open", "postgresql-keys"])
def fuzz_service(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"svc-fuzz-{request.param}")
    # Short answers: the fuzzer asks many questions and each one really runs the model.
    env = {"RAGSVC_MAX_TOKENS_OFF": "16", "RAGSVC_MAX_TOKENS_ON": "16"}
    if request.param == "sqlite-open":
        svc = start_service(tmp, None, "fuzz", extra_env=env)
        svc.auth_header = None
        yield from _with_document(svc)
        return
    # No rate limits: the fuzzer sends hundreds of requests with one key.
    env |= {"RAGSVC_AUTH": "on", "RAGSVC_RATE_LIMIT_ASK_PER_MINUTE": "0", "RAGSVC_RATE_LIMIT_UPLOAD_PER_MINUTE": "0",
            "RAGSVC_RATE_LIMIT_DELETE_PER_MINUTE": "0"}
    with new_pg_database() as url:
        svc = start_service(tmp, url, "fuzz-pg", extra_env=env)
        engine = make_engine(url.replace("postgresql://", "postgresql+psycopg://"))
        try:
            key = KeyStore(make_sessionmaker(engine)).create("admin", None, "fuzz")[0]
            svc.auth_header = f"Authorization: Bearer {key}"
            svc.client.headers["authorization"] = f"Bearer {key}"
            yield from _with_document(svc)
        finally:
            engine.dispose()


def _with_document(svc):
    try:
        # One real document, so generated questions also reach retrieval and generation, not only 404s.
        r = svc.upload([("fuzz.txt", b"The Quintaro ferry leaves pier 6 at 23:40 every night.\n")])
        assert r.status_code == 202 and svc.wait_done(r.json()["documents"][0]["id"])["status"] == "ready"
        yield svc
    finally:
        stop_service(svc)


def test_no_server_error_and_responses_match_the_schema(fuzz_service, tmp_path):
    har = tmp_path / "fuzz.har"
    cmd = [str(Path(sys.executable).parent / "schemathesis"), "run", f"{fuzz_service.url}/schema/openapi.json",
           "--max-examples", str(EXAMPLES), "--seed", "20261129",
           "--checks", "not_a_server_error,response_schema_conformance",
           "--phases", "examples,coverage,fuzzing", "--request-timeout", "120",
           "--report", "har", "--report-har-path", str(har)]
    if fuzz_service.auth_header:
        cmd += ["--header", fuzz_service.auth_header]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, cwd=tmp_path,
                         env=os.environ | {"NO_COLOR": "1"})
    artifacts = ROOT / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    (artifacts / f"schemathesis-{fuzz_service.db}.txt").write_text(out.stdout + out.stderr)
    assert out.returncode == 0, (out.stdout + out.stderr)[-6000:]
    entries = json.loads(har.read_text())["log"]["entries"]
    statuses = [e["response"]["status"] for e in entries]
    assert not [s for s in statuses if s >= 500]
    assert len(entries) >= min(500, 12 * EXAMPLES), f"only {len(entries)} requests"
    selected = re.search(r"Selected: (\d+)/(\d+)", out.stdout)
    tested = re.search(r"Tested: (\d+)", out.stdout)
    assert selected and tested and selected[1] == selected[2] == tested[1], out.stdout[-2000:]
    assert int(tested[1]) >= 13  # every operation in the schema
    print(f"schemathesis: {len(entries)} requests over {tested[1]} operations, statuses {sorted(set(statuses))}")
