"""The README stays true: every setting is documented, the quick start names real commands."""

from __future__ import annotations

import re
from pathlib import Path

from service.cli import _parser
from service.core.config import Settings

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_every_setting_is_in_the_readme_table() -> None:
    documented = set(re.findall(r"^\| `([A-Z0-9_]+)`", README, flags=re.MULTILINE))
    documented |= set(re.findall(r"\| `[A-Z0-9_]+` / `([A-Z0-9_]+)`", README))
    fields = {name.upper() for name in Settings.model_fields}
    assert fields - documented == set(), "settings missing from the README table"
    assert documented - fields - {"ENVIRONMENT"} <= set(), "README documents unknown settings"


def test_quick_start_commands_exist() -> None:
    assert "uv run keelson dev" in README
    assert "uv run pytest" in README
    commands = set(_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr,arg-type]
    for command in re.findall(r"\| `keelson (\w[\w-]*)", README):
        assert command in commands


def test_env_example_names_only_real_settings() -> None:
    example = (Path(__file__).resolve().parents[1] / ".env.example").read_text()
    names = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", example, flags=re.MULTILINE))
    fields = {name.upper() for name in Settings.model_fields}
    standard_otel = {"OTEL_EXPORTER_OTLP_ENDPOINT"}  # read by the OTLP exporter itself
    assert names, "no variables found"
    assert names - fields - standard_otel == set()
