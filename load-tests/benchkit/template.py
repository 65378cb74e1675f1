"""--template-backend: the full-stack-fastapi-template's backend, run beside keelson in one run."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

from .machine import LOCAL

# The template's own defaults where the bench has no reason to differ: its .env's project name, and
# a non-local environment, as the reference figures were taken (its OpenAPI there has no /private).
PROJECT_NAME = "Full Stack FastAPI Project"
ENVIRONMENT = "staging"
DATABASE = "template"
READY_PATH = "/api/v1/utils/health-check/"
STEP_TIMEOUT_S = 180  # backend_pre_start retries for 5 minutes on a dead database: cap each step
# The steps of its scripts/prestart.sh, run from backend/ with the checkout's own virtualenv.
PRESTART = [
    ("backend_pre_start", ["app/backend_pre_start.py"]),
    ("migrate", ["-m", "alembic", "upgrade", "head"]),
    ("initial_data", ["app/initial_data.py"]),
]
# Environment the template's processes inherit from the bench's; Keelson's settings never leak in.
PASSED_THROUGH = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TZ")


@dataclass(frozen=True)
class TemplateCheckout:
    """Where the template's backend and its virtualenv are; `locate` checks them."""

    root: Path  # what --template-backend named
    backend: Path  # the directory holding app/main.py and alembic.ini
    venv: Path

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    def commit(self) -> str | None:
        """The checkout's git commit, when it is a clone (the report records it)."""
        for path in (self.root, self.backend):
            if (path / ".git").exists():
                result = subprocess.run(
                    ["git", "-C", str(path), "rev-parse", "HEAD"],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if result.returncode == 0:
                    return result.stdout.strip()
        return None


def locate(text: str) -> TemplateCheckout:
    """A clone of the template (DIR/backend/app/main.py) or its backend/ itself (DIR/app/main.py),
    with a virtualenv in backend/.venv or, as its uv workspace makes it, DIR/.venv. ValueError
    says what is missing, before anything starts."""
    what = f"--template-backend {text}"
    root = Path(text).expanduser().resolve()
    if not root.is_dir():
        raise ValueError(f"{what}: no such directory")
    backend = next((d for d in (root / "backend", root) if (d / "app" / "main.py").is_file()), None)
    if backend is None:
        raise ValueError(
            f"{what}: no app/main.py in it or in its backend/ (expected a checkout of"
            " fastapi/full-stack-fastapi-template or its backend/ directory)"
        )
    if not (backend / "alembic.ini").is_file():
        raise ValueError(
            f"{what}: {backend} has no alembic.ini (its migrations are run from there)"
        )
    venv = next(
        (d for d in (backend / ".venv", root / ".venv") if (d / "bin" / "python").exists()), None
    )
    if venv is None:
        raise ValueError(
            f"{what}: no virtualenv (.venv/bin/python in {backend} or {root});"
            " make one as docs/load-testing.md says"
        )
    missing = [tool for tool in ("uvicorn", "alembic") if not (venv / "bin" / tool).exists()]
    if missing:
        raise ValueError(
            f"{what}: its virtualenv {venv} has no {' or '.join(missing)}:"
            " install the template's dependencies into it"
        )
    return TemplateCheckout(root, backend, venv)


def template_env(
    checkout: TemplateCheckout, dsn: str, secret_key: str, email: str, password: str
) -> dict[str, str]:
    """The template's settings, through its own variables (app/core/config.py), for `dsn`."""
    url = make_url(dsn)
    env = {k: os.environ[k] for k in PASSED_THROUGH if k in os.environ}
    env.update(
        {
            "PATH": f"{checkout.venv / 'bin'}{os.pathsep}{env.get('PATH', os.defpath)}",
            "VIRTUAL_ENV": str(checkout.venv),
            "PROJECT_NAME": PROJECT_NAME,
            "ENVIRONMENT": ENVIRONMENT,
            "SECRET_KEY": secret_key,
            "POSTGRES_SERVER": url.host or LOCAL,
            "POSTGRES_PORT": str(url.port or 5432),
            "POSTGRES_USER": url.username or "",
            "POSTGRES_PASSWORD": url.password or "",
            "POSTGRES_DB": url.database or DATABASE,
            "FIRST_SUPERUSER": email,
            "FIRST_SUPERUSER_PASSWORD": password,
            "FRONTEND_HOST": f"http://{LOCAL}:5173",
        }
    )
    return env


def serve_argv(checkout: TemplateCheckout, port: int) -> list[str]:
    """One uvicorn process as `fastapi run` starts it (uvloop + httptools: uvicorn[standard])."""
    return [
        str(checkout.python),
        "-m",
        "uvicorn",
        "app.main:app",
        "--host",
        LOCAL,
        "--port",
        str(port),
        "--workers",
        "1",
    ]


def prestart(checkout: TemplateCheckout, env: dict[str, str], logdir: Path) -> None:
    """Its scripts/prestart.sh step by step: wait for the database, migrate, add the superuser."""
    for name, args in PRESTART:
        log_path = logdir / f"template-{name}.log"
        try:
            result = subprocess.run(
                [str(checkout.python), *args],
                env=env,
                cwd=checkout.backend,
                capture_output=True,
                text=True,
                timeout=STEP_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired:
            sys.exit(f"bench: template {name} did not finish within {STEP_TIMEOUT_S}s")
        log_path.write_text(result.stdout + result.stderr)
        if result.returncode != 0:
            tail = (result.stdout + result.stderr)[-2000:]
            sys.exit(f"bench: template {name} failed ({result.returncode}):\n{tail}")
