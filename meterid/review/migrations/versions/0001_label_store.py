"""The label store's first schema: the review queue and the reviewers' verdicts.

Revision ID: 0001_label_store
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001_label_store"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "review_queue",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("run_id", sa.String(64), nullable=False, index=True),
        sa.Column("sha256", sa.String(64), nullable=False, index=True),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("model_version", sa.Integer),
        sa.Column("label", sa.Text),
        sa.Column("auto_accepted", sa.Boolean, nullable=False),
        sa.Column("prediction_set", sa.JSON, nullable=False),
        sa.Column("top_labels", sa.JSON, nullable=False),
        sa.Column("open_set_score", sa.Float),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("queued_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("run_id", "sha256"))
    op.create_table(
        "review_verdicts",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("sha256", sa.String(64), nullable=False, index=True),
        sa.Column("reviewer", sa.String(128), nullable=False),
        sa.Column("verdict", sa.Text, nullable=False),
        sa.Column("labelled_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("sha256", "reviewer"))


def downgrade() -> None:
    op.drop_table("review_verdicts")
    op.drop_table("review_queue")
