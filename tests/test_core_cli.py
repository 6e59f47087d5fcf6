"""``python -m graph_mail check|send`` against the fake Microsoft."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from email.message import EmailMessage

import pytest

from fake_microsoft.defaults import CLIENT_ID, CLIENT_SECRET, CLIENT_SECRET_ID, TENANT_ID
from graph_mail.cli import main

pytestmark = [pytest.mark.usefixtures("graph_mail_reset")]
SALES = "sales@contoso.onmicrosoft.com"


def base_args(fake, *extra):
    return [
        "--tenant",
        TENANT_ID,
        "--client-id",
        CLIENT_ID,
        "--authority-url",
        fake.authority_url,
        "--graph-url",
        fake.graph_url,
        *extra,
    ]


def run(argv):
    out = io.StringIO()
    code = main(argv, out=out)
    return code, out.getvalue()


def test_check_with_good_credentials(fake, monkeypatch):
    monkeypatch.setenv("GRAPH_MAIL_CLIENT_SECRET", CLIENT_SECRET)  # secrets stay out of argv / history
    code, out = run(["check", *base_args(fake, "--mode", "app", "--mailbox", SALES)])
    assert code == 0, out
    assert "✓ Token acquired" in out and f"✓ Mailbox {SALES}" in out and "Mail.Send" in out
    assert "Ready to send." in out and "✗" not in out
    assert CLIENT_SECRET not in out


def test_check_with_the_secret_id_instead_of_its_value(fake):
    code, out = run(["check", *base_args(fake, "--client-secret", CLIENT_SECRET_ID, "--mailbox", SALES)])
    assert code == 1
    assert "✗" in out and "AADSTS7000215" in out
    assert "Value" in out and "Secret ID" in out  # the hint says what to fix


def test_check_reports_a_missing_permission(fake):
    fake.configure(app_roles=["User.Read.All"])
    code, out = run(["check", *base_args(fake, "--client-secret", CLIENT_SECRET, "--mailbox", SALES)])
    assert code == 1 and "✗ Permission Mail.Send is missing" in out


def test_check_app_mode_needs_a_mailbox(fake):
    code, out = run(["check", *base_args(fake, "--client-secret", CLIENT_SECRET)])
    assert code == 1 and "--mailbox" in out


def test_check_refuses_plain_http_to_a_remote_host():
    code, out = run(
        ["check", "--tenant", "t", "--client-id", "c", "--client-secret", "x", "--authority-url", "http://example.com"]
    )
    assert code == 1 and "plain http" in out


def test_send_an_eml_file(fake, tmp_path):
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = SALES, "bob@example.com", "CLI ✓"
    msg["Message-ID"] = "<cli-1@test>"
    msg.set_content("hello from the command line")
    path = tmp_path / "mail.eml"
    path.write_bytes(bytes(msg))
    argv = ["send", *base_args(fake, "--client-secret", CLIENT_SECRET, "--from", SALES)]
    code, out = run([*argv, "--to", "bob@example.com", "--bcc", "hidden@example.com", str(path)])
    assert code == 0, out
    assert "✓ Sent <cli-1@test>" in out
    (stored,) = fake.messages()
    assert stored["bcc"] == ["hidden@example.com"] and stored["subject"] == "CLI ✓"


def test_module_entry_point(fake):
    env = dict(os.environ, GRAPH_MAIL_CLIENT_SECRET=CLIENT_SECRET, PYTHONIOENCODING="utf-8")
    answer = subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "graph_mail", "check", *base_args(fake, "--mailbox", SALES)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert answer.returncode == 0, answer.stdout + answer.stderr
    assert "Ready to send." in answer.stdout
