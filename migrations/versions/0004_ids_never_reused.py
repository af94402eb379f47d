"""chunk and job ids are never reused (AUTOINCREMENT on SQLite)

Revision ID: 0004
Revises: 0003

Without AUTOINCREMENT, SQLite gives a new row max(rowid)+1, so the ids of the newest rows come back after
they are deleted. A chunk id is the key of its vector in FAISS: an orphan vector left in collection A
would then name a new chunk of collection B. PostgreSQL's sequences never go back; nothing changes there.
"""
from alembic import op
import sqlalchemy as sa

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TABLES = ("chunks", "jobs")


def _seed_sequence(table: str) -> None:
    """Start the table's sequence at the largest id it holds (never below what SQLite recorded).

    Copying the rows into the rebuilt table records their largest id already; stating it keeps the
    guarantee independent of how the copy was made. Ids above it that only an orphan vector still
    holds (their rows were deleted before this migration) are not known here: ``ragsvc index check
    --repair`` removes such vectors, and retrieval filters every hit by collection in SQL meanwhile.
    """
    conn = op.get_bind()
    top = conn.execute(sa.text(f"SELECT COALESCE(MAX(id), 0) FROM {table}")).scalar()
    seen = conn.execute(sa.text("SELECT seq FROM sqlite_sequence WHERE name = :t"), {"t": table}).scalar()
    conn.execute(sa.text("DELETE FROM sqlite_sequence WHERE name = :t"), {"t": table})
    conn.execute(sa.text("INSERT INTO sqlite_sequence (name, seq) VALUES (:t, :s)"),
                 {"t": table, "s": max(top, seen or 0)})


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return  # BIGSERIAL / identity sequences never hand an id out twice
    for table in TABLES:
        # SQLite cannot add AUTOINCREMENT to a table: rebuild it (rows, indexes and constraints kept).
        with op.batch_alter_table(table, recreate="always", table_kwargs={"sqlite_autoincrement": True}):
            pass
        _seed_sequence(table)


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for table in TABLES:
        with op.batch_alter_table(table, recreate="always", table_kwargs={"sqlite_autoincrement": False}):
            pass
