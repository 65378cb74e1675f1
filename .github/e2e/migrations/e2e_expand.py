"""kind e2e only: an expand-only migration (a new table), applied by the upgrade under load."""

import sqlalchemy as sa
from alembic import op

revision = "e2e0001"
down_revision = "@DOWN_REVISION@"  # the image's head, filled in by Dockerfile.migration
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("e2e_probe", sa.Column("id", sa.Integer, primary_key=True))


def downgrade() -> None:
    op.drop_table("e2e_probe")
