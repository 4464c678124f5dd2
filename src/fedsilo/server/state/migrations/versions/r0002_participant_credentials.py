"""Participants keep the hash of their credential and their X25519 public key (wire
protocol v2).

A participant of the first release had neither: it gets empty strings, which no presented
credential hashes to, so it must join again (its client spoke protocol v1 anyway). The empty
server default stays on the columns: rows are always written with both values.

Revision ID: 0002_participant_credentials
Revises: 0001_release_1
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_participant_credentials"
down_revision = "0001_release_1"
branch_labels = None
depends_on = None

COLUMNS = ("credential_hash", "public_key")


def upgrade() -> None:
    # A database made before migrations by a later fedsilo already has them (create_all).
    present = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("participants")}
    for name in COLUMNS:
        if name not in present:
            op.add_column(
                "participants",
                sa.Column(name, sa.String(64), nullable=False, server_default=""),
            )


def downgrade() -> None:
    with op.batch_alter_table("participants") as batch:
        for name in COLUMNS:
            batch.drop_column(name)
