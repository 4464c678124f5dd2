"""The schema of fedsilo's first release (tables.py at 877bfc6): sessions, participants,
tasks, rounds, models, session logs, tokens.

A database made before migrations has no ``alembic_version``; the store stamps it with this
revision and upgrades it from here. Written out rather than read from the models, so it stays
the first release's schema whatever the models become.

Revision ID: 0001_release_1
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_release_1"
down_revision = None
branch_labels = None
depends_on = None

#: the tables, children after their parents (the order to create them in)
TABLES = ("sessions", "participants", "tasks", "rounds", "models", "session_logs", "tokens")


def _session_fk() -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(["session_id"], ["sessions.id"], ondelete="CASCADE")


def upgrade() -> None:
    op.create_table(
        "sessions",
        sa.Column("id", sa.String(10), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("package_name", sa.String(100), nullable=False),
        sa.Column("min_num_clients", sa.Integer(), nullable=False),
        sa.Column("num_rounds", sa.Integer(), nullable=False),
        sa.Column("model_config", sa.JSON(), nullable=False),
        sa.Column("data_config", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("failure_reason", sa.Text(), nullable=True),
        sa.Column("created_by", sa.String(200), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("ended_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_sessions_status", "sessions", ["status"])
    op.create_table(
        "participants",
        sa.Column("id", sa.String(16), nullable=False),
        sa.Column("session_id", sa.String(10), nullable=False),
        sa.Column("client_name", sa.String(128), nullable=False),
        sa.Column("dataset", sa.JSON(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("joined_at", sa.DateTime(), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(), nullable=True),
        _session_fk(),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("session_id", "client_name"),
    )
    op.create_index("ix_participants_session_id", "participants", ["session_id"])
    op.create_table(
        "tasks",
        sa.Column("id", sa.String(16), nullable=False),
        sa.Column("session_id", sa.String(10), nullable=False),
        sa.Column("participant_id", sa.String(16), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("meta", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reply_meta", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("delivered_at", sa.DateTime(), nullable=True),
        sa.Column("replied_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["participant_id"], ["participants.id"], ondelete="CASCADE"),
        _session_fk(),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_tasks_session_id", "tasks", ["session_id"])
    op.create_index("ix_tasks_status", "tasks", ["status"])
    op.create_table(
        "rounds",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("session_id", sa.String(10), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("federated", sa.JSON(), nullable=False),
        sa.Column("per_client", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        _session_fk(),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("session_id", "round"),
    )
    op.create_index("ix_rounds_session_id", "rounds", ["session_id"])
    op.create_table(
        "models",
        sa.Column("session_id", sa.String(10), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(500), nullable=False),
        sa.Column("meta", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        _session_fk(),
        sa.PrimaryKeyConstraint("session_id"),
    )
    op.create_table(
        "session_logs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("session_id", sa.String(10), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        _session_fk(),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_session_logs_session_id", "session_logs", ["session_id"])
    op.create_table(
        "tokens",
        sa.Column("id", sa.String(16), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("user_id", sa.String(64), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=True),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
        sa.Column("last_used_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
    )


def downgrade() -> None:
    for table in reversed(TABLES):
        op.drop_table(table)
