"""`ragsvc db upgrade` creates the schema on SQLite and PostgreSQL, and the models match it."""

from __future__ import annotations

import subprocess

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from ragsvc.db.models import Base
from tests.conftest import RAGSVC, base_env, new_pg_database


def upgrade_via_cli(tmp_path, url: str) -> str:
    env = base_env(tmp_path) | {"RAGSVC_DATABASE_URL": url}
    out = subprocess.run([RAGSVC, "db", "upgrade"], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def assert_schema_matches_models(url: str) -> None:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            assert set(inspect(conn).get_table_names()) >= {"collections", "documents", "chunks", "jobs", "api_keys"}
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
            assert diff == [], f"models and migrations disagree: {diff}"
    finally:
        engine.dispose()


def test_upgrade_on_empty_sqlite(tmp_path):
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    assert "revision 0005" in upgrade_via_cli(tmp_path, url)
    assert_schema_matches_models(url)
    # Idempotent: a second upgrade changes nothing and succeeds.
    upgrade_via_cli(tmp_path, url)


def test_upgrade_on_postgresql(tmp_path):
    with new_pg_database() as url:
        assert "revision 0005" in upgrade_via_cli(tmp_path, url)
        assert_schema_matches_models(url)


@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_downgrade_to_base_and_back(tmp_path, db):
    from ragsvc.db.migrate import alembic_config
    from alembic import command

    ctx = new_pg_database() if db == "postgresql" else None
    url = ctx.__enter__() if ctx else f"sqlite:///{tmp_path / 'd.db'}"
    try:
        upgrade_via_cli(tmp_path, url)
        command.downgrade(alembic_config(url), "base")
        engine = create_engine(url)
        with engine.connect() as conn:
            assert set(inspect(conn).get_table_names()) <= {"alembic_version"}
        engine.dispose()
        upgrade_via_cli(tmp_path, url)
        assert_schema_matches_models(url)
    finally:
        if ctx:
            ctx.__exit__(None, None, None)
