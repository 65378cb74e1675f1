"""Credentials generations (revocation that no racing refresh escapes) and normalised emails.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 10:00:00.000000+00:00

Expand-only: both columns have a server default, so code of revision 0004 keeps working on this
schema (it inserts without them and never reads them), and the emails it finds are normalised
forms it looks up exactly as before.
"""

import unicodedata
from collections import defaultdict
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Rows that may not be normalised yet: anything but printable ASCII without capitals. A row of
# lowercase printable ASCII is its own NFC + casefold form, so the bulk of a table is not read.
_CANDIDATES = sa.text(
    "SELECT id, email FROM users"
    " WHERE email <> lower(email) OR email ~ '[^ -~]' OR email <> btrim(email)"
)


def _normalized(email: str) -> str:
    """A frozen copy of service.users.models.normalize_email as of this revision (a migration
    must keep doing what it did when it shipped, whatever the code does later)."""
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", email.strip()).casefold())


class EmailCollision(RuntimeError):
    pass


def _normalize_emails() -> None:
    bind = op.get_bind()
    changes = {
        row.id: _normalized(row.email)
        for row in bind.execute(_CANDIDATES)
        if _normalized(row.email) != row.email
    }
    if not changes:
        return
    # Two accounts whose addresses are one identity once normalised cannot both keep it; which
    # one owns the mailbox is a decision for a person, so the migration stops and names them.
    owners: defaultdict[str, set[str]] = defaultdict(set)
    for user_id, email in changes.items():
        owners[email].add(str(user_id))
    existing = bind.execute(
        sa.text("SELECT id, email FROM users WHERE email = ANY(:emails)"),
        {"emails": list(owners)},
    )
    for row in existing:
        if row.id not in changes:  # a row that moves away keeps no claim on its old address
            owners[row.email].add(str(row.id))
    clashes = {email: ids for email, ids in owners.items() if len(ids) > 1}
    if clashes:
        listed = "; ".join(", ".join(sorted(ids)) for ids in clashes.values())
        raise EmailCollision(
            f"0005: {len(clashes)} email address(es) are held by more than one account once"
            f" normalised (NFC + casefold); user ids per address: {listed}. Change or delete"
            " all but one account of each address, then run the migration again."
        )
    bind.execute(
        sa.text("UPDATE users SET email = :email WHERE id = :id"),
        [{"id": user_id, "email": email} for user_id, email in changes.items()],
    )


def upgrade() -> None:
    op.add_column(
        "users",
        sa.Column(
            "credentials_generation", sa.Integer(), server_default=sa.text("0"), nullable=False
        ),
    )
    op.add_column(
        "refresh_tokens",
        sa.Column(
            "credentials_generation", sa.Integer(), server_default=sa.text("0"), nullable=False
        ),
    )
    _normalize_emails()


def downgrade() -> None:
    # Emails stay normalised: the address as first typed is not kept anywhere, and revision 0004
    # finds normalised addresses as it finds any other (lower() on both sides).
    op.drop_column("refresh_tokens", "credentials_generation")
    op.drop_column("users", "credentials_generation")
