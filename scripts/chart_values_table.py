"""Writes the values table of charts/keelson/README.md from the `# --` comments in values.yaml."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parents[1] / "charts" / "keelson"
START = "<!-- values-table:start (scripts/chart_values_table.py writes this table) -->"
END = "<!-- values-table:end -->"
HEADER = "| Key | Type | Default | Description |\n| --- | --- | --- | --- |"
KEY_LINE = re.compile(r"^(\s*)([A-Za-z0-9_.]+):")


def leaf_paths(values: Any, schema: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted paths of every documented value: descends only where the schema lists properties
    and the value has keys, so free-form maps (labels, selectors), empty objects and lists are
    one value each."""
    properties = schema.get("properties")
    if isinstance(values, dict) and values and properties:
        paths: list[str] = []
        for key, value in values.items():
            child = properties.get(key, {})
            paths.extend(leaf_paths(value, child, f"{prefix}.{key}" if prefix else str(key)))
        return paths
    return [prefix]


def descriptions(values_text: str) -> dict[str, str]:
    """Dotted path -> its `# --` comment, continuation comment lines joined by spaces."""
    found: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    comment: list[str] | None = None
    for line in values_text.splitlines():
        stripped = line.strip()
        if stripped.startswith("# --"):
            comment = [stripped.removeprefix("# --").strip()]
            continue
        if stripped.startswith("#"):
            if comment is not None:
                comment.append(stripped.removeprefix("#").strip())
            continue
        match = KEY_LINE.match(line)
        if not match or stripped.startswith("-"):
            continue
        indent = len(match.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match.group(2)))
        if comment is not None:
            found[".".join(key for _, key in stack)] = " ".join(comment)
            comment = None
    return found


def type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "map"
    return "string"


def table(chart: Path = CHART) -> str:
    text = (chart / "values.yaml").read_text()
    values = yaml.safe_load(text)
    schema = json.loads((chart / "values.schema.json").read_text())
    described = descriptions(text)
    rows = [HEADER]
    for path in leaf_paths(values, schema):
        if path not in described:
            raise SystemExit(f"values.yaml: {path} has no `# --` comment")
        node: Any = values
        for key in path.split("."):
            node = node[key]
        cell = described[path].replace("|", "\\|")
        rows.append(f"| `{path}` | {type_name(node)} | `{json.dumps(node)}` | {cell} |")
    return "\n".join(rows)


def with_table(readme: str, generated: str) -> str:
    if START not in readme or END not in readme:
        raise SystemExit(f"README.md needs the markers {START!r} and {END!r}")
    before, rest = readme.split(START, 1)
    _, after = rest.split(END, 1)
    return f"{before}{START}\n{generated}\n{END}{after}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if README.md is out of date")
    args = parser.parse_args(argv)
    readme_path = CHART / "README.md"
    readme = readme_path.read_text()
    updated = with_table(readme, table())
    if args.check:
        if updated != readme:
            print("charts/keelson/README.md: values table out of date;"
                  " run python3 scripts/chart_values_table.py", file=sys.stderr)  # fmt: skip
            return 1
        return 0
    readme_path.write_text(updated)
    return 0


if __name__ == "__main__":
    sys.exit(main())
