"""The bench-managed environment: PostgreSQL, migrate + seed, keelson, baselines, the template."""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import sys
import tempfile
from pathlib import Path

from service.embedded_postgres import free_port

from .machine import LOAD_TESTS, LOCAL, log
from .postgres import BenchPostgres
from .processes import Server, keelson_argv, run_keelson
from .target import BENCH_EMAIL, Target
from .template import DATABASE as TEMPLATE_DATABASE
from .template import READY_PATH as TEMPLATE_READY_PATH
from .template import TemplateCheckout, prestart, serve_argv, template_env

BASELINE_SCRIPTS = {"hello": "hello_app.py", "lean": "lean_app.py"}


class Managed:
    """Owns the throwaway PostgreSQL and the servers; everything is stopped on exit."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.workdir = Path(tempfile.mkdtemp(prefix="keelson-bench-"))
        self.logdir = self.workdir
        self.password = "bench-" + secrets.token_urlsafe(12)
        self.postgres = BenchPostgres(args.pg_os_user, keep=args.keep_workdir)
        self.keelson: Server | None = None
        self.aux: Server | None = None
        self.template: Server | None = None
        self.secret_key = secrets.token_urlsafe(48)

    def base_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("WRK_", "OTEL_"))}
        env.update(
            {
                "DATABASE_URL": self.postgres.dsn,
                "SECRET_KEY": self.secret_key,
                "ENVIRONMENT": "local",
                "FIRST_SUPERUSER": BENCH_EMAIL,
                "FIRST_SUPERUSER_PASSWORD": self.password,
                "SERVER_HOST": LOCAL,
                "LOG_FORMAT": "json",
                # 32 clients logging in to one account from one address is the benchmark, not an
                # attack: in-flight attempts count against these limits until they succeed, so the
                # defaults (10 per account) would answer 429 and lock the account for later cases.
                "LOGIN_MAX_FAILURES_PER_ACCOUNT": "10000",
                "LOGIN_MAX_FAILURES_PER_IP": "1000000",
            }
        )
        for item in self.args.service_env:
            key, _, value = item.partition("=")
            env[key] = value
        return env

    def __enter__(self) -> Managed:
        log(f"work dir {self.workdir}; starting PostgreSQL from {self.postgres.bindir}")
        try:
            self.postgres.start()
            log(
                f"{self.postgres.version} in {self.postgres.directory}"
                f" (postmaster pid {self.postgres.postmaster_pid})"
            )
            env = self.base_env()
            run_keelson("migrate", env, self.logdir)
            run_keelson("seed", env, self.logdir)
        except BaseException:  # sys.exit included: `with` calls __exit__ only after __enter__
            self.__exit__()
            raise
        return self

    def start_keelson(self, extra_env: dict[str, str] | None = None) -> Target:
        self.stop_keelson()
        port, metrics_port = free_port(), free_port()
        # A free METRICS_PORT too: the default 9090 would collide with another server's.
        env = {
            **self.base_env(),
            "SERVER_PORT": str(port),
            "METRICS_PORT": str(metrics_port),
            **(extra_env or {}),
        }
        self.keelson = Server("keelson", keelson_argv("serve"), env, port, self.logdir)
        self.keelson.start("/readyz")
        target = Target(
            label="keelson",
            base_url=self.keelson.base_url,
            email=BENCH_EMAIL,
            password=self.password,
            dsn=self.postgres.dsn,
            server=self.keelson,
            postgres=self.postgres,
            metrics_url=f"http://127.0.0.1:{env['METRICS_PORT']}/metrics",
            quiet_wait_s=self.args.quiet_wait,
            retry_noisy=self.args.retry_noisy,
        )
        target.login()
        return target

    def stop_keelson(self) -> None:
        if self.keelson is not None:
            self.keelson.stop()
            self.keelson = None

    def start_aux(self, kind: str) -> Server:
        """The hello-world or lean baseline, as one process on 127.0.0.1, only while measured."""
        self.stop_aux()
        port = free_port()
        script = LOAD_TESTS / BASELINE_SCRIPTS[kind]
        argv = [sys.executable, str(script), "--host", LOCAL, "--port", str(port)]
        env = {**os.environ, "DATABASE_URL": self.postgres.dsn, "SECRET_KEY": self.secret_key}
        self.aux = Server(kind, argv, env, port, self.logdir)
        self.aux.start("/")
        return self.aux

    def stop_aux(self) -> None:
        if self.aux is not None:
            self.aux.stop()
            self.aux = None

    def start_template(self, checkout: TemplateCheckout) -> Target:
        """The template's backend on its own database in this cluster, prepared by its own
        prestart steps (migrations, FIRST_SUPERUSER), as one uvicorn process; logged in."""
        dsn = self.postgres.create_database(TEMPLATE_DATABASE)
        # Its own key: its tokens and Keelson's must not be interchangeable by accident.
        env = template_env(checkout, dsn, secrets.token_urlsafe(48), BENCH_EMAIL, self.password)
        prestart(checkout, env, self.logdir)
        port = free_port()
        self.template = Server(
            "template", serve_argv(checkout, port), env, port, self.logdir, cwd=checkout.backend
        )
        self.template.start(TEMPLATE_READY_PATH)
        target = Target(
            label="template",
            base_url=self.template.base_url,
            email=BENCH_EMAIL,
            password=self.password,
            dsn=dsn,
            server=self.template,
            postgres=self.postgres,
            quiet_wait_s=self.args.quiet_wait,
            retry_noisy=self.args.retry_noisy,
            items_table="item",
        )
        target.login()
        return target

    def stop_template(self) -> None:
        if self.template is not None:
            self.template.stop()
            self.template = None

    def __exit__(self, *exc: object) -> None:
        self.stop_aux()
        self.stop_template()
        self.stop_keelson()
        cluster = self.postgres.directory
        self.postgres.stop()
        if self.args.keep_workdir:
            log(f"kept {self.workdir} (server logs) and {cluster} (PostgreSQL data and log)")
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)
