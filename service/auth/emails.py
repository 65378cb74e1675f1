"""The emails the auth domain sends, rendered from Jinja2 templates (HTML autoescaped)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from service.core.config import Settings
from service.core.mailer import Email

_templates = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(["html"]),
    undefined=StrictUndefined,
)


def _render(name: str, **context: object) -> tuple[str, str]:
    html = _templates.get_template(f"{name}.html").render(**context)
    text = _templates.get_template(f"{name}.txt").render(**context)
    return html, text


def _frontend(settings: Settings) -> str:
    return str(settings.frontend_host).rstrip("/")


def reset_password_email(settings: Settings, email: str, token: str) -> Email:
    link = f"{_frontend(settings)}/reset-password?token={quote(token)}"
    html, text = _render(
        "reset_password",
        email=email,
        link=link,
        project_name=settings.project_name,
        valid_hours=settings.email_reset_token_expire_hours,
    )
    return Email(
        to=email,
        subject=f"{settings.project_name} - Password recovery",
        html=html,
        text=text,
        kind="reset_password",
    )


def new_account_email(settings: Settings, email: str) -> Email:
    """Tells the owner of the address an account exists; never carries a password."""
    html, text = _render(
        "new_account", email=email, link=_frontend(settings), project_name=settings.project_name
    )
    return Email(
        to=email,
        subject=f"{settings.project_name} - New account for {email}",
        html=html,
        text=text,
        kind="new_account",
    )


def test_email(settings: Settings, email: str) -> Email:
    html, text = _render("test_email", project_name=settings.project_name)
    return Email(
        to=email,
        subject=f"{settings.project_name} - Test email",
        html=html,
        text=text,
        kind="test",
    )
