"""schemathesis against the service's own OpenAPI schema: every operation, generated requests (valid and
not), zero 5xx and every documented response matching its schema.

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

from tests.conftest import ROOT, start_service, stop_service

EXAMPLES = int(os.environ.get("RAGSVC_TEST_FUZZ_EXAMPLES", "40"))


@pytest.fixture(scope="module")
def fuzz_service(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("svc-fuzz")
    # Short answers: the fuzzer asks many questions and each one really runs the model.
    svc = start_service(tmp, None, "fuzz", extra_env={"RAGSVC_MAX_TOKENS_OFF": "16", "RAGSVC_MAX_TOKENS_ON": "16"})
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
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, cwd=tmp_path,
                         env=os.environ | {"NO_COLOR": "1"})
    artifacts = ROOT / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    (artifacts / "schemathesis.txt").write_text(out.stdout + out.stderr)
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
