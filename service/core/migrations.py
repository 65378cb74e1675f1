"""Where the Alembic scripts live and which revision the code expects."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory

PROJECT_ROOT = Path(__file__).resolve().parents[2]
MIGRATIONS_DIR = PROJECT_ROOT / "migrations"
ALEMBIC_INI = PROJECT_ROOT / "alembic.ini"
# One fixed 64-bit key: every replica's `keelson migrate` queues on the same advisory lock.
MIGRATION_LOCK_KEY = 0x6B65656C736F6E  # "keelson"


def alembic_config(database_url: str | None = None) -> Config:
    config = Config(str(ALEMBIC_INI)) if ALEMBIC_INI.exists() else Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if database_url is not None:
        # configparser treats % as interpolation; escape it so passwords with % survive.
        config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


@cache
def expected_heads() -> frozenset[str]:
    return frozenset(ScriptDirectory.from_config(alembic_config()).get_heads())


@cache
def known_revisions() -> frozenset[str]:
    scripts = ScriptDirectory.from_config(alembic_config())
    return frozenset(script.revision for script in scripts.walk_revisions())


def schema_is_compatible(revisions: set[str]) -> bool:
    """At our head, or ahead of it (a revision this code does not know).

    During `helm upgrade` the hook migrates before the new pods start; the old pods must stay
    ready on the newer schema, which holds as long as migrations are backward compatible
    (expand now, contract in a later release). Behind head means migrations are pending.
    """
    if revisions == expected_heads():
        return True
    return bool(revisions) and not revisions <= known_revisions()
