"""`keelson` as the "new release" of the drill: the same code, plus the drill's test-only
migration in an extra Alembic version location (KEELSON_DRILL_VERSIONS), so it expects that
revision as head and `migrate` can apply or undo it. Run: python -m drill.new_code serve ..."""

from __future__ import annotations

import os
import sys

from alembic.config import Config

import service.cli
import service.core.migrations as migrations

_original = migrations.alembic_config


def alembic_config_with_drill_versions(database_url: str | None = None) -> Config:
    config = _original(database_url)
    extra = os.environ["KEELSON_DRILL_VERSIONS"]
    config.set_main_option(
        "version_locations", os.pathsep.join([str(migrations.MIGRATIONS_DIR / "versions"), extra])
    )
    return config


migrations.alembic_config = alembic_config_with_drill_versions
service.cli.alembic_config = alembic_config_with_drill_versions

if __name__ == "__main__":
    sys.exit(service.cli.main())
