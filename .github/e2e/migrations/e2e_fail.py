"""kind e2e only: a migration that always fails; the upgrade must stop, the old release serve."""

from alembic import op

revision = "e2e0002"
down_revision = "@DOWN_REVISION@"  # e2e0001, filled in by Dockerfile.migration
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("DO $$ BEGIN RAISE EXCEPTION 'e2e: this migration fails on purpose'; END $$")


def downgrade() -> None:
    pass
