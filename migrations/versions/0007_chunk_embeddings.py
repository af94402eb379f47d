"""chunk embeddings: each chunk's vector stored with its row (float32 bytes)

Revision ID: 0007
Revises: 0006

The database becomes the source of truth for the vectors too (issue 13, item 2): ``ragsvc index
rebuild`` recreates the FAISS segments from this column without embedding anything. Rows written
before this revision have no vector here; the first ``ragsvc index rebuild`` copies them from the
collection's FAISS index into the column (once), and ``ragsvc index check --repair`` embeds any that
the index lacks too. A plain ADD COLUMN (nullable) on both databases: SQLite needs no table copy for
it, so the AUTOINCREMENT of revision 0004 is kept.
"""
from alembic import op
import sqlalchemy as sa

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("chunks", sa.Column("embedding", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("chunks", recreate="auto") as batch:
        batch.drop_column("embedding")
