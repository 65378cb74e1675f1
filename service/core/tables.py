"""Shared table plumbing: the metadata with a constraint naming convention, and model discovery."""

from __future__ import annotations

import importlib
import pkgutil
from datetime import UTC, datetime
from types import ModuleType

from sqlalchemy import MetaData
from sqlmodel import SQLModel

# Stable, predictable constraint names: migrations can drop and rename them on every database.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata: MetaData = SQLModel.metadata
metadata.naming_convention = NAMING_CONVENTION


def utcnow() -> datetime:
    return datetime.now(UTC)


def discover_models(package: str = "service") -> list[ModuleType]:
    """Import every `<package>.<domain>.models` module, so a new domain needs no import list."""
    root = importlib.import_module(package)
    found = []
    for module in pkgutil.walk_packages(root.__path__, prefix=f"{package}."):
        if module.name.rsplit(".", 1)[-1] == "models":
            found.append(importlib.import_module(module.name))
    return found
