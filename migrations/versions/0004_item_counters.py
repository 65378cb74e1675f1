"""Item counters kept by triggers: counting a user's (or all) items is O(1) instead of count(*).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 01:00:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# One statement-level function for INSERT, UPDATE and DELETE on items: the statement's rows,
# aggregated per owner from the transition tables, become one upsert per owner (plus one for
# all items) into this backend's shard. A bulk INSERT ... SELECT of a million rows is one upsert.
# Upserts go in scope order, so two transactions on the same shard lock rows in the same order.
# An owner that no longer exists (its items are going by ON DELETE CASCADE) keeps no rows,
# whichever of this trigger and users' cleanup trigger runs first. The nil UUID is the scope of
# "all items" (service.items.models.ALL_ITEMS_SCOPE); users.id is a random UUID, never nil.
APPLY_FUNCTION = """
CREATE FUNCTION item_counters_apply() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    owners uuid[];
    deltas bigint[];
BEGIN
    IF TG_OP = 'INSERT' THEN
        SELECT array_agg(owner_id), array_agg(k) INTO owners, deltas
        FROM (SELECT owner_id, count(*) AS k FROM new_items GROUP BY owner_id) AS s;
    ELSIF TG_OP = 'DELETE' THEN
        SELECT array_agg(owner_id), array_agg(k) INTO owners, deltas
        FROM (SELECT owner_id, -count(*) AS k FROM old_items GROUP BY owner_id) AS s;
    ELSE
        SELECT array_agg(owner_id), array_agg(k) INTO owners, deltas
        FROM (
            SELECT owner_id, sum(k) AS k
            FROM (
                SELECT owner_id, 1 AS k FROM new_items
                UNION ALL
                SELECT owner_id, -1 AS k FROM old_items
            ) AS c
            GROUP BY owner_id
            HAVING sum(k) <> 0
        ) AS s;
    END IF;
    IF owners IS NULL THEN
        RETURN NULL;
    END IF;
    IF TG_OP <> 'INSERT' THEN
        DELETE FROM item_counters
        WHERE scope = ANY (owners)
          AND NOT EXISTS (SELECT 1 FROM users WHERE users.id = item_counters.scope);
    END IF;
    INSERT INTO item_counters AS c (scope, shard, n)
    SELECT d.scope, pg_backend_pid() % 16, d.delta
    FROM (
        SELECT u.scope, u.delta
        FROM unnest(owners, deltas) AS u (scope, delta)
        WHERE EXISTS (SELECT 1 FROM users WHERE users.id = u.scope)
        UNION ALL
        SELECT '00000000-0000-0000-0000-000000000000'::uuid, sum(t.delta)
        FROM unnest(deltas) AS t (delta)
    ) AS d
    WHERE d.delta <> 0
    ORDER BY d.scope
    ON CONFLICT (scope, shard) DO UPDATE SET n = c.n + excluded.n;
    RETURN NULL;
END
$$
"""

# TRUNCATE items (or users ... CASCADE) leaves no item: no counts.
RESET_FUNCTION = """
CREATE FUNCTION item_counters_reset() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM item_counters;
    RETURN NULL;
END
$$
"""

# A deleted user's counter rows go with it (a user whose items were all deleted earlier still
# has rows with n = 0).
FORGET_OWNER_FUNCTION = """
CREATE FUNCTION item_counters_forget_owners() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM item_counters WHERE scope IN (SELECT id FROM old_users);
    RETURN NULL;
END
$$
"""

TRIGGERS = [
    "CREATE TRIGGER items_count_insert AFTER INSERT ON items"
    " REFERENCING NEW TABLE AS new_items"
    " FOR EACH STATEMENT EXECUTE FUNCTION item_counters_apply()",
    "CREATE TRIGGER items_count_delete AFTER DELETE ON items"
    " REFERENCING OLD TABLE AS old_items"
    " FOR EACH STATEMENT EXECUTE FUNCTION item_counters_apply()",
    # Every UPDATE (transition tables cannot go with UPDATE OF owner_id); one that keeps the
    # owners nets to zero and writes nothing.
    "CREATE TRIGGER items_count_update AFTER UPDATE ON items"
    " REFERENCING OLD TABLE AS old_items NEW TABLE AS new_items"
    " FOR EACH STATEMENT EXECUTE FUNCTION item_counters_apply()",
    "CREATE TRIGGER items_count_truncate AFTER TRUNCATE ON items"
    " FOR EACH STATEMENT EXECUTE FUNCTION item_counters_reset()",
    "CREATE TRIGGER users_forget_item_counters AFTER DELETE ON users"
    " REFERENCING OLD TABLE AS old_users"
    " FOR EACH STATEMENT EXECUTE FUNCTION item_counters_forget_owners()",
]

BACKFILL = """
INSERT INTO item_counters (scope, shard, n)
SELECT owner_id, 0, count(*) FROM items GROUP BY owner_id
UNION ALL
SELECT '00000000-0000-0000-0000-000000000000'::uuid, 0, count(*) FROM items
"""


def upgrade() -> None:
    op.create_table(
        "item_counters",
        sa.Column("scope", sa.Uuid(), nullable=False),
        sa.Column("shard", sa.SmallInteger(), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("scope", "shard", name=op.f("pk_item_counters")),
    )
    # No write to items or users between the backfill and the triggers: taken up front (reads
    # go on), and strong enough for CREATE TRIGGER, so the lock is never upgraded mid-way.
    op.execute("LOCK TABLE users, items IN SHARE ROW EXCLUSIVE MODE")
    op.execute(APPLY_FUNCTION)
    op.execute(RESET_FUNCTION)
    op.execute(FORGET_OWNER_FUNCTION)
    for trigger in TRIGGERS:
        op.execute(trigger)
    op.execute(BACKFILL)


def downgrade() -> None:
    op.execute("DROP TRIGGER users_forget_item_counters ON users")
    for trigger in ("truncate", "update", "delete", "insert"):
        op.execute(f"DROP TRIGGER items_count_{trigger} ON items")
    for function in ("forget_owners", "reset", "apply"):
        op.execute(f"DROP FUNCTION item_counters_{function}()")
    op.drop_table("item_counters")
