"""progress, document versions, chunk content hashes and page labels

Revision ID: 0002
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("documents", schema=None) as batch_op:
        batch_op.add_column(sa.Column("stage", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("progress", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("replaces_id", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("reused_chunks", sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f("ix_documents_replaces_id"), ["replaces_id"], unique=False)
        batch_op.create_foreign_key("fk_documents_replaces_id", "documents", ["replaces_id"], ["id"],
                                    ondelete="SET NULL")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("request_id", sa.String(length=64), nullable=True))
    with op.batch_alter_table("chunks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("content_hash", sa.String(length=64), nullable=False, server_default=""))
        batch_op.add_column(sa.Column("page_label", sa.String(length=32), nullable=True))
        batch_op.create_index(batch_op.f("ix_chunks_content_hash"), ["content_hash"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("request_id")
    with op.batch_alter_table("chunks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_chunks_content_hash"))
        batch_op.drop_column("page_label")
        batch_op.drop_column("content_hash")
    with op.batch_alter_table("documents", schema=None) as batch_op:
        batch_op.drop_constraint("fk_documents_replaces_id", type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_documents_replaces_id"))
        batch_op.drop_column("reused_chunks")
        batch_op.drop_column("replaces_id")
        batch_op.drop_column("progress")
        batch_op.drop_column("stage")
