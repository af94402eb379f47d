"""`ragsvc db upgrade` creates the schema on SQLite and PostgreSQL, and the models match it."""

from __future__ import annotations

import subprocess

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from ragsvc.db.models import Base, include_name
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
            diff = compare_metadata(MigrationContext.configure(conn, opts={"include_name": include_name}),
                                    Base.metadata)
            assert diff == [], f"models and migrations disagree: {diff}"
    finally:
        engine.dispose()


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    from ragsvc.db.migrate import alembic_config

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def test_upgrade_on_empty_sqlite(tmp_path):
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    assert "revision 0010" in upgrade_via_cli(tmp_path, url)
    assert_schema_matches_models(url)
    # Idempotent: a second upgrade changes nothing and succeeds.
    upgrade_via_cli(tmp_path, url)


def test_upgrade_on_postgresql(tmp_path):
    with new_pg_database() as url:
        assert "revision 0010" in upgrade_via_cli(tmp_path, url)
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


def _insert_chunk(conn, ordinal: int) -> int:
    from sqlalchemy import text

    conn.execute(text("INSERT INTO chunks (document_id, ordinal, text, heading_path, char_start, char_end, "
                      "token_count, content_hash) VALUES ('d', :o, 't', '', 0, 1, 1, '')"), {"o": ordinal})
    return conn.execute(text("SELECT MAX(id) FROM chunks")).scalar()


@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_ids_never_reused_after_upgrade(tmp_path, db):
    """Rows written before 0004, then the newest deleted: the next id is above every id ever handed out.

    Before 0004, SQLite gave the deleted newest id to the next row; a vector left under that id in
    one collection's index then named a chunk of another collection (issue 12, item 3)."""
    from sqlalchemy import text

    from ragsvc.db.migrate import upgrade

    ctx = new_pg_database() if db == "postgresql" else None
    url = ctx.__enter__() if ctx else f"sqlite:///{tmp_path / 'ids.db'}"
    try:
        upgrade(url, "0003")
        engine = create_engine(url)
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO collections (id, name, created_at) VALUES ('c', 'c', '2026-01-01')"))
            conn.execute(text(
                "INSERT INTO documents (id, collection_id, filename, kind, size_bytes, sha256, storage_path, "
                "status, created_at, updated_at) VALUES ('d', 'c', 'f', 'text', 1, 's', 'p', 'ready', "
                "'2026-01-01', '2026-01-01')"))
            ids = [_insert_chunk(conn, i) for i in range(3)]
            conn.execute(text("INSERT INTO jobs (document_id, status, attempts, created_at, updated_at) "
                              "VALUES ('d', 'done', 1, '2026-01-01', '2026-01-01')"))
            job = conn.execute(text("SELECT MAX(id) FROM jobs")).scalar()
        engine.dispose()
        upgrade(url)
        engine = create_engine(url)
        with engine.begin() as conn:
            assert [r[0] for r in conn.execute(text("SELECT id FROM chunks ORDER BY id"))] == ids  # kept
            conn.execute(text("DELETE FROM chunks WHERE id = :i"), {"i": ids[-1]})
            assert _insert_chunk(conn, 7) > ids[-1]
            conn.execute(text("DELETE FROM jobs"))
            conn.execute(text("INSERT INTO jobs (document_id, status, attempts, created_at, updated_at) "
                              "VALUES ('d', 'queued', 0, '2026-01-01', '2026-01-01')"))
            assert conn.execute(text("SELECT MAX(id) FROM jobs")).scalar() > job
        engine.dispose()
        assert_schema_matches_models(url)
    finally:
        if ctx:
            ctx.__exit__(None, None, None)
