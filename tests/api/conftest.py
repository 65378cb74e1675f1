"""Fixtures for this directory: a real in-process SMTP server and apps that send mail to it."""

from tests.support.smtp import client_with as client_with
from tests.support.smtp import mail_client as mail_client
from tests.support.smtp import smtp_server as smtp_server
