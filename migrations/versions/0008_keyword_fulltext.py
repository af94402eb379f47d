"""keyword search in the database's full-text engine: SQLite FTS5 table, PostgreSQL tsvector + GIN

Entries of ready documents' chunks, written when a document turns ready and removed with its chunk rows
(ragsvc/keyword_index.py). Filled here from the chunks of documents that are already ready.

Revision ID: 0008
Revises: 0007
"""
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        # FTS5 has no foreign keys: a trigger removes a chunk's entry in the statement that deletes the row,
        # ON DELETE CASCADE of documents and collections included (SQLite fires triggers for FK actions).
        # The collection id is an indexed column, so the collection filter is part of the MATCH (as an
        # UNINDEXED column filtered in WHERE, each match would cost a content-row read: slower at 1M).
        op.execute("CREATE VIRTUAL TABLE keyword_fts USING fts5(collection_id, body)")
        # Each term's number of rows, read to prune a query's commonest terms (ragsvc/keyword_index.py).
        op.execute("CREATE VIRTUAL TABLE keyword_fts_vocab USING fts5vocab(keyword_fts, 'row')")
        op.execute("CREATE TRIGGER keyword_fts_chunk_deleted AFTER DELETE ON chunks "
                   "BEGIN DELETE FROM keyword_fts WHERE rowid = old.id; END")
        op.execute("INSERT INTO keyword_fts (rowid, collection_id, body) "
                   "SELECT c.id, d.collection_id, c.heading_path || char(10) || c.text "
                   "FROM chunks c JOIN documents d ON d.id = c.document_id WHERE d.status = 'ready'")
    else:
        op.execute("CREATE TABLE keyword_entries ("
                   "chunk_id BIGINT PRIMARY KEY REFERENCES chunks(id) ON DELETE CASCADE, "
                   "collection_id VARCHAR(32) NOT NULL, tsv TSVECTOR NOT NULL)")
        op.execute("CREATE INDEX ix_keyword_entries_tsv ON keyword_entries USING gin (tsv)")
        op.execute("INSERT INTO keyword_entries (chunk_id, collection_id, tsv) "
                   "SELECT c.id, d.collection_id, to_tsvector('simple', c.heading_path || E'\\n' || c.text) "
                   "FROM chunks c JOIN documents d ON d.id = c.document_id WHERE d.status = 'ready'")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS keyword_fts_chunk_deleted")
        op.execute("DROP TABLE IF EXISTS keyword_fts_vocab")
        op.execute("DROP TABLE IF EXISTS keyword_fts")
    else:
        op.execute("DROP TABLE IF EXISTS keyword_entries")
