"""Sessions may set their own task timeout (``sessions.task_timeout``, seconds).

Null for the sessions already there: they wait the server's ``task_timeout``, as before.

Revision ID: 0004_session_task_timeout
Revises: 0003_identity
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_session_task_timeout"
down_revision = "0003_identity"
branch_labels = None
depends_on = None


def upgrade() -> None:
    columns = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("sessions")}
    if "task_timeout" not in columns:
        op.add_column("sessions", sa.Column("task_timeout", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("task_timeout")
