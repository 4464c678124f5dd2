"""Participants keep when they went offline (``participants.offline_at``; README "Liveness").

Null for the participants already there: live until they are found silent.

Revision ID: 0005_participant_offline
Revises: 0004_session_task_timeout
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_participant_offline"
down_revision = "0004_session_task_timeout"
branch_labels = None
depends_on = None


def upgrade() -> None:
    columns = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("participants")}
    if "offline_at" not in columns:
        op.add_column("participants", sa.Column("offline_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("participants") as batch:
        batch.drop_column("offline_at")
