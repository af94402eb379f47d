"""keyword search on PostgreSQL: entries parsed into plain words, and statistics of 10,000 terms

Two changes to keyword_entries (ragsvc/keyword_index.py; SQLite needs neither):

1. Entries are rewritten from their chunks with "/.@<>_:\\" turned into spaces before parsing. PostgreSQL's
   parser kept paths, URLs, e-mail addresses, versions and decimals whole ("/var/log/dpkg.log" was one
   lexeme) and dropped tag-like text ("<package>"), so a question's words ("dpkg", "log") missed them.
   The GIN index is dropped for the rewrite and built again afterwards (much faster than updating it row
   by row on a large table).
2. The tsv column's statistics target goes from 100 to 1,000: ANALYZE then keeps the 10,000 commonest
   terms (was 1,000) in pg_stats, which the query reads to prune a question's commonest terms; every
   other term is known to hold fewer rows than the least common kept (~0.06% of a 1M-chunk table, was
   ~0.7%). ANALYZE then samples 300,000 rows (~5 s at 1M chunks; autovacuum runs it).

Revision ID: 0010
Revises: 0009
"""
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

# As ragsvc/keyword_index.py's PG_CHUNK_TSVECTOR at this revision (copied: a migration must not change
# when the application code does).
SPLIT = "translate(c.heading_path || E'\\n' || c.text, '/.@<>_:\\', '        ')"
OLD = "c.heading_path || E'\\n' || c.text"


def _rewrite(expr: str) -> None:
    op.execute("DROP INDEX IF EXISTS ix_keyword_entries_tsv")
    op.execute(f"UPDATE keyword_entries e SET tsv = to_tsvector('simple', {expr}) "
               "FROM chunks c WHERE c.id = e.chunk_id")
    op.execute("CREATE INDEX ix_keyword_entries_tsv ON keyword_entries USING gin (tsv)")


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    op.execute("ALTER TABLE keyword_entries ALTER COLUMN tsv SET STATISTICS 1000")
    _rewrite(SPLIT)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    op.execute("ALTER TABLE keyword_entries ALTER COLUMN tsv SET STATISTICS -1")
    _rewrite(OLD)
