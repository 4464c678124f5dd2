"""Identity: users, the audit log, session owners, tokens indexed by their user.

``sessions.owner_id`` is null for the sessions already there (no user owned them); the
server's first start adopts the user-less tokens into the admin user. ``tokens.user_id``
widens from 64 to 200 characters to hold a generated user id.

A database made before migrations by a fedsilo with the identity work may already have any
part of this (``create_all`` made the new tables, a stopgap added ``owner_id``), so each step
runs only when its part is missing.

Revision ID: 0003_identity
Revises: 0002_participant_credentials
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_identity"
down_revision = "0002_participant_credentials"
branch_labels = None
depends_on = None

USER_ID_LENGTH = 200


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    tables = set(inspector.get_table_names())
    session_columns = {c["name"] for c in inspector.get_columns("sessions")}
    token_user_id = next(c for c in inspector.get_columns("tokens") if c["name"] == "user_id")
    token_indexes = {i["name"] for i in inspector.get_indexes("tokens")}

    if "owner_id" not in session_columns:
        op.add_column("sessions", sa.Column("owner_id", sa.String(USER_ID_LENGTH), nullable=True))
    if getattr(token_user_id["type"], "length", None) != USER_ID_LENGTH:
        with op.batch_alter_table("tokens") as batch:
            batch.alter_column(
                "user_id",
                existing_type=sa.String(64),
                type_=sa.String(USER_ID_LENGTH),
                existing_nullable=True,
            )
    if "ix_tokens_user_id" not in token_indexes:
        op.create_index("ix_tokens_user_id", "tokens", ["user_id"])
    if "users" not in tables:
        op.create_table(
            "users",
            sa.Column("id", sa.String(USER_ID_LENGTH), nullable=False),
            sa.Column("name", sa.String(200), nullable=False),
            sa.Column("user_type", sa.String(16), nullable=False),
            sa.Column("active", sa.Boolean(), nullable=False),
            sa.Column("created_by", sa.String(USER_ID_LENGTH), nullable=True),
            sa.Column("created_at", sa.DateTime(), nullable=False),
            sa.PrimaryKeyConstraint("id"),
            sa.UniqueConstraint("name"),
        )
    if "audit" not in tables:
        op.create_table(
            "audit",
            sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
            sa.Column("at", sa.DateTime(), nullable=False),
            sa.Column("action", sa.String(64), nullable=False),
            sa.Column("target", sa.Text(), nullable=False),
            sa.Column("outcome", sa.String(16), nullable=False),
            sa.Column("user_id", sa.String(USER_ID_LENGTH), nullable=True),
            sa.Column("token_id", sa.String(16), nullable=True),
            sa.Column("address", sa.String(64), nullable=True),
            sa.Column("detail", sa.Text(), nullable=True),
            sa.PrimaryKeyConstraint("seq"),
        )
        op.create_index("ix_audit_at", "audit", ["at"])
        op.create_index("ix_audit_action", "audit", ["action"])
        op.create_index("ix_audit_user_id", "audit", ["user_id"])


def downgrade() -> None:
    op.drop_table("audit")
    op.drop_table("users")
    op.drop_index("ix_tokens_user_id", table_name="tokens")
    with op.batch_alter_table("tokens") as batch:
        batch.alter_column(
            "user_id",
            existing_type=sa.String(USER_ID_LENGTH),
            type_=sa.String(64),
            existing_nullable=True,
        )
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("owner_id")
