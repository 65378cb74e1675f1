"""The dependency direction (docs/architecture.md) checked: import contracts, no import cycle."""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import grimp
import pytest

from service.api.v1 import API_PREFIX, API_ROUTERS, NO_STORE_ROUTES

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


# -- docs/architecture.md, "Add a domain": the example is what the code does

DOC = ROOT / "docs" / "architecture.md"
_BLOCK = re.compile(r'^```(\w+) title="([^"]+)"\n(.*?)^```$', re.MULTILINE | re.DOTALL)


def _doc_blocks() -> dict[str, tuple[str, str]]:
    """path -> (language, text) of every titled code block on the page."""
    return {path: (lang, body) for lang, path, body in _BLOCK.findall(DOC.read_text())}


def _apply_diff(original: str, diff: str) -> str:
    """Apply the page's diff: context (' ') and removed ('-') lines must be the file's own lines,
    in order; each hunk (split by '@@') starts where its first such line is."""
    lines = original.splitlines()
    for hunk in diff.split("@@\n"):
        rows = [row for row in hunk.splitlines() if row]
        anchor = next(row[1:] for row in rows if row[0] in " -")
        at = lines.index(anchor)  # ValueError: the page quotes a line the file no longer has
        out: list[str] = []
        for row in rows:
            mark, text = row[0], row[1:]
            if mark == "+":
                out.append(text)
                continue
            assert lines[at] == text, (lines[at], text)
            at += 1
            if mark == " ":
                out.append(text)
        start = lines.index(anchor)
        lines[start:at] = out
    return "\n".join(lines) + "\n"


_PROBE = """
import asyncio, json, httpx
from service.core.config import load_settings
from service.core.db import Database
from service.core.tables import metadata
from service.main import create_app

settings = load_settings(
    _env_file=None, environment="local", secret_key="doc-example-secret-0123456789-abcdefghij",
    first_superuser="admin@example.com", first_superuser_password="doc-example-password-1",
    database_url="postgresql://keelson@127.0.0.1:9/keelson",
)
app = create_app(settings, database=Database.from_settings(settings))

async def unauthenticated() -> int:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return (await client.get("/api/v1/notes/")).status_code

notes = metadata.tables.get("notes")
print(json.dumps({
    "columns": sorted(notes.columns.keys()) if notes is not None else None,
    "operation": app.openapi()["paths"].get("/api/v1/notes/", {}).get("get", {}).get("operationId"),
    "status": asyncio.run(unauthenticated()),
}))
"""


def test_the_add_a_domain_example_is_what_the_code_does(tmp_path: Path) -> None:
    blocks = _doc_blocks()
    new_files = {p: body for p, (lang, body) in blocks.items() if p.startswith("service/notes/")}
    # The files the page says to create are the files a real domain has.
    names = {Path(p).name for p in new_files}
    assert names == {
        "__init__.py",
        "models.py",
        "schemas.py",
        "repository.py",
        "service.py",
        "routes.py",
    }
    assert all((ROOT / "service" / "items" / name).is_file() for name in names)

    shutil.copytree(ROOT / "service", tmp_path / "service", ignore=shutil.ignore_patterns("*.pyc"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    for path, body in new_files.items():
        (tmp_path / path).parent.mkdir(exist_ok=True)
        (tmp_path / path).write_text(body)
    lang, diff = blocks["service/api/v1.py"]
    assert lang == "diff"
    v1 = tmp_path / "service" / "api" / "v1.py"
    v1.write_text(_apply_diff(v1.read_text(), diff))

    probe = subprocess.run(
        [sys.executable, "-c", _PROBE],
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert probe.returncode == 0, probe.stderr
    seen = json.loads(probe.stdout.splitlines()[-1])
    assert seen == {
        "columns": ["id", "owner_id", "text"],  # discovered without an import list
        "operation": "notes-read_notes",  # registered under /api/v1 with its tag
        "status": 401,  # behind CurrentUser
    }
    contracts = lint_imports(tmp_path)
    assert contracts.returncode == 0, contracts.stdout


def test_each_domain_declares_its_no_store_routes_and_each_names_a_real_route() -> None:
    routes = {
        API_PREFIX + route.path  # type: ignore[attr-defined]  # every route here is an APIRoute
        for router in API_ROUTERS
        for route in router.routes
    }
    assert NO_STORE_ROUTES - routes == set()
    # The answers that carry credentials or account data, as auth/routes.py listed them for all
    # domains before each domain declared its own.
    assert {
        "/api/v1/login/access-token",
        "/api/v1/login/refresh",
        "/api/v1/login/test-token",
        "/api/v1/logout",
        "/api/v1/password-recovery/{email}",
        "/api/v1/reset-password/",
        "/api/v1/password-recovery-html-content/{email}",
        "/api/v1/users/me",
        "/api/v1/users/me/password",
        "/api/v1/users/signup",
    } == NO_STORE_ROUTES, "a credential-carrying answer lost (or gained) its no-store"


# A session method that runs (or stages) an ORM statement. The domains reach the database only
# through named statements (core/statements.py): one data-access style (docs/architecture.md).
_ORM_CALLS = frozenset(
    {
        "add",
        "add_all",
        "begin_nested",
        "delete",
        "exec",
        "execute",
        "flush",
        "get",
        "merge",
        "refresh",
        "scalar",
        "scalars",
        "stream",
    }
)


def orm_statements(root: Path) -> list[str]:
    """Where a module of service/ outside core/ runs an ORM statement on a session, or imports
    SQLModel's query builders (`select`, `col`)."""
    found: list[tuple[Path, int, str]] = []
    for path in sorted((root / "service").rglob("*.py")):
        if "core" in path.relative_to(root / "service").parts:
            continue
        where = path.relative_to(root)
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in _ORM_CALLS
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "session"
            ):
                found.append((where, node.lineno, f"session.{node.func.attr}()"))
            elif isinstance(node, ast.ImportFrom) and node.module == "sqlmodel":
                builders = sorted({alias.name for alias in node.names} & {"select", "col"})
                if builders:
                    found.append((where, node.lineno, f"from sqlmodel import {builders}"))
    return [f"{where}:{line}: {what}" for where, line, what in sorted(found)]


def test_the_domains_query_only_through_named_statements() -> None:
    assert orm_statements(ROOT) == []


def test_an_orm_query_in_a_domain_is_found(tmp_path: Path) -> None:
    domain = tmp_path / "service" / "things"
    domain.mkdir(parents=True)
    (domain / "repository.py").write_text(
        "from sqlmodel import col, select\n"
        "async def get(session, thing_id):\n"
        "    return (await session.exec(select(Thing).where(col(Thing.id) == thing_id))).first()\n"
        "async def add(session, thing):\n"
        "    session.add(thing)\n"
    )
    core = tmp_path / "service" / "core"
    core.mkdir()
    (core / "db.py").write_text("async def end(session):\n    await session.execute(x)\n")
    assert orm_statements(tmp_path) == [
        "service/things/repository.py:1: from sqlmodel import ['col', 'select']",
        "service/things/repository.py:3: session.exec()",
        "service/things/repository.py:5: session.add()",
    ]
