"""Keelson: a Kubernetes-native FastAPI + PostgreSQL service."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("keelson")
except PackageNotFoundError:  # pragma: no cover - only when run from a bare source tree
    __version__ = "0.0.0"
