"""The dependency direction (docs/architecture.md) checked: import contracts, no import cycle."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
CONTRACTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """import-linter over the `service` package found under root, with the contracts in root."""
    # --no-cache: no cache directory left in the checkout (or a stale one trusted).
    command = [str(Path(sys.executable).with_name("lint-imports")), "--no-cache", "--no-logo"]
    return subprocess.run(
        [*command, str(root / "pyproject.toml")],
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )


def test_every_dependency_contract_is_kept() -> None:
    result = lint_imports(ROOT)
    count = len(CONTRACTS["contracts"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Contracts: {count} kept, 0 broken." in result.stdout, result.stdout


def test_the_service_modules_import_each_other_without_a_cycle() -> None:
    graph = grimp.build_graph("service", cache_dir=None)
    cycles = [
        (module, imported)
        for module in sorted(graph.modules)
        for imported in sorted(graph.find_modules_directly_imported_by(module))
        if graph.chain_exists(importer=imported, imported=module)
    ]
    assert cycles == []


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        (
            "service/users/service.py",
            "from service.auth.service import revoke_credentials",
            "users' domain code never imports auth",
        ),
        ("service/core/db.py", "import service.items.models", "core knows no domain"),
        ("service/items/service.py", "import fastapi", "import no web framework"),
        ("service/auth/routes.py", "import service.api.v1", "domains do not import api/"),
    ],
)
def test_a_forbidden_import_breaks_its_contract(
    tmp_path: Path, module: str, line: str, broken: str
) -> None:
    """The contracts bite: the same check over a copy of the code with one forbidden import
    added reports that contract broken (and maybe others the import reaches through)."""
    shutil.copytree(ROOT / "service", tmp_path / "service", ignore=shutil.ignore_patterns("*.pyc"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / module
    target.write_text(target.read_text() + f"\n{line}  # noqa\n")
    result = lint_imports(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    # A summary row reads "<contract name> BROKEN", maybe followed by "(n ignored imports)".
    broken_names = [row for row in result.stdout.splitlines() if " BROKEN" in row]
    assert any(broken in name for name in broken_names), result.stdout
