"""schemathesis against the service's own OpenAPI schema: every operation, generated requests (valid and
not), zero 5xx and every documented response matching its schema.

The number of cases per operation comes from RAGSVC_TEST_FUZZ_EXAMPLES (default 40: over 500 in all,
as CI runs it); raise it for a longer run. The last test checks the total really was reached.
"""

from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error, response_schema_conformance

from tests.conftest import start_service, stop_service

EXAMPLES = int(os.environ.get("RAGSVC_TEST_FUZZ_EXAMPLES", "40"))
CASES: dict[str, int] = {}


@pytest.fixture(scope="module")
def fuzz_service(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("svc-fuzz")
    # Short answers: the fuzzer asks many questions and each one really runs the model.
    svc = start_service(tmp, None, "fuzz", extra_env={"RAGSVC_MAX_TOKENS_OFF": "16", "RAGSVC_MAX_TOKENS_ON": "16"})
    # One real document, so generated questions also reach retrieval and generation, not only 404s.
    r = svc.upload([("fuzz.txt", b"The Quintaro ferry leaves pier 6 at 23:40 every night.\n")])
    assert r.status_code == 202 and svc.wait_done(r.json()["documents"][0]["id"])["status"] == "ready"
    yield svc
    stop_service(svc)


@pytest.fixture(scope="module")
def api_schema(fuzz_service):
    return schemathesis.openapi.from_url(fuzz_service.url + "/schema/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_error_and_responses_match_the_schema(case, fuzz_service):
    CASES[case.operation.label] = CASES.get(case.operation.label, 0) + 1
    response = case.call(base_url=fuzz_service.url, timeout=120)
    case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])


def test_enough_cases_ran(fuzz_service):
    if not CASES:
        pytest.fail("the fuzz test did not run (select the whole module)")
    total = sum(CASES.values())
    operations = {op for op in CASES}
    assert len(operations) >= 12, operations
    assert total >= min(500, 12 * EXAMPLES), CASES
    print(f"schemathesis: {total} cases over {len(operations)} operations")
