"""Shared table plumbing: metadata naming convention, model discovery, batched purges."""

from __future__ import annotations

import importlib
import pkgutil
from datetime import UTC, datetime
from types import ModuleType
from typing import Any

from sqlalchemy import ColumnElement, Delete, MetaData, delete, select, tuple_
from sqlalchemy.orm import Mapped
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


type Column = ColumnElement[Any] | Mapped[Any]  # what sqlmodel's col() gives


def purge_batch(
    table: type[SQLModel],
    key: tuple[Column, ...],
    expired: ColumnElement[bool],
    limit: int | ColumnElement[int],
    *,
    oldest_first: Column | None = None,
) -> Delete:
    """DELETE up to `limit` rows matching `expired`, named by their `key` columns, skipping rows
    another transaction holds locked: bounded work per call whatever the table holds, and a
    purge never waits behind (or deadlocks with) the request using a row. `limit` is a
    `bindparam` when the statement is compiled once (core/statements.py)."""
    batch = select(*key).where(expired).limit(limit).with_for_update(skip_locked=True)
    if oldest_first is not None:
        batch = batch.order_by(oldest_first)
    target = key[0] if len(key) == 1 else tuple_(*key)
    return delete(table).where(target.in_(batch))
