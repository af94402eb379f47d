"""The README is the front door: every setting is documented there, and its commands exist."""

from __future__ import annotations

import subprocess

from ragsvc.settings import Settings
from tests.conftest import RAGSVC, ROOT

README = (ROOT / "README.md").read_text()


def test_every_setting_is_in_the_readme_table():
    missing = [f"RAGSVC_{n.upper()}" for n in Settings.model_fields if f"`RAGSVC_{n.upper()}`" not in README]
    assert missing == [], f"settings missing from README's table: {missing}"


def test_settings_table_is_current():
    from ragsvc.settings import settings_table

    block = README.split("<!-- settings:start", 1)[1].split("-->", 1)[1].split("<!-- settings:end -->")[0]
    assert block.strip() == settings_table().strip(), "regenerate the table: python -m ragsvc.settings"


def test_readme_names_only_real_settings():
    import re

    named = set(re.findall(r"`RAGSVC_([A-Z_]+)`", README))
    test_knobs = {"TEST_PG", "TEST_READY_TIMEOUT", "TEST_FUZZ_EXAMPLES"}
    client_side = {"API_KEY"}  # read by the client commands (ask, ingest, eval), not by the service
    real = {n.upper() for n in Settings.model_fields} | test_knobs | client_side
    assert named <= real, f"README names settings that do not exist: {named - real}"


def test_two_commands_and_api_are_shown():
    assert "make run" in README and "make test" in README
    for call in ("/v1/documents", "/v1/ask", "/health", "/ready"):
        assert call in README


def test_cli_subcommands_exist():
    for args in (["--help"], ["serve", "--help"], ["worker", "--help"], ["db", "upgrade", "--help"], ["ask", "--help"]):
        out = subprocess.run([RAGSVC, *args], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, (args, out.stderr)


def test_openapi_has_examples_for_upload_and_ask():
    from ragsvc.app import create_app

    schema = create_app().openapi_schema.to_schema()
    upload = schema["paths"]["/v1/documents"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert upload["examples"] and "files" in upload["schema"]["properties"]
    ask = schema["paths"]["/v1/ask"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert len(ask["examples"]) >= 2
    assert "/v1/chat/completions" in schema["paths"]
