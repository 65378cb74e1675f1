"""Outgoing email over SMTP (aiosmtplib). Sending is off until SMTP_HOST is set."""

from __future__ import annotations

from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formataddr

import aiosmtplib
import structlog

from service.core import metrics
from service.core.config import Settings

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Email:
    to: str
    subject: str
    html: str
    text: str
    kind: str = "other"  # the `kind` label of keelson_emails_total: a fixed word, never data


class EmailNotConfigured(RuntimeError):
    pass


class Mailer:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    @property
    def enabled(self) -> bool:
        return self._settings.emails_enabled

    def _message(self, email: Email) -> EmailMessage:
        s = self._settings
        message = EmailMessage()
        message["From"] = formataddr(
            (s.emails_from_name or s.project_name, str(s.emails_from_email))
        )
        message["To"] = email.to
        message["Subject"] = email.subject
        message.set_content(email.text)
        message.add_alternative(email.html, subtype="html")
        return message

    async def send(self, email: Email) -> None:
        """Send now; raises on any SMTP failure so callers decide whether it matters."""
        s = self._settings
        if s.smtp_host is None:
            metrics.EMAILS.labels(email.kind, "skipped").inc()
            raise EmailNotConfigured("SMTP_HOST is not set")
        try:
            await aiosmtplib.send(
                self._message(email),
                hostname=s.smtp_host,
                port=s.smtp_port,
                username=s.smtp_user,
                password=s.smtp_password.get_secret_value() if s.smtp_password else None,
                use_tls=s.smtp_ssl,
                start_tls=s.smtp_tls and not s.smtp_ssl,
                timeout=s.smtp_timeout_s,
            )
        except Exception:
            metrics.EMAILS.labels(email.kind, "failed").inc()
            raise
        metrics.EMAILS.labels(email.kind, "sent").inc()

    async def send_in_background(self, email: Email) -> None:
        """For mails sent after the response: failures are logged and counted, never raised."""
        if not self.enabled:
            metrics.EMAILS.labels(email.kind, "skipped").inc()
            log.info(
                "email_skipped",
                reason="smtp_not_configured",
                kind=email.kind,
                subject=email.subject,
            )
            return
        try:
            await self.send(email)
        except (aiosmtplib.SMTPException, OSError) as error:
            log.error(
                "email_failed", kind=email.kind, subject=email.subject, error=type(error).__name__
            )
        else:
            log.info("email_sent", kind=email.kind, subject=email.subject)
