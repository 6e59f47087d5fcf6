"""Control API: faults (status, Retry-After, delay, dropped connections), call log, reset, config, the HTTP
client ``FakeControl`` and the command line."""

from __future__ import annotations

import base64
import signal
import subprocess
import sys
import threading
import time
from email.message import EmailMessage
from pathlib import Path

import pytest
import requests

from fake_microsoft import DEFAULTS, FakeControl
from fake_microsoft.testing import app_token, delegated_token, token_request

ROOT = Path(__file__).resolve().parents[1]


def mime(subject: str = "hello") -> bytes:
    message = EmailMessage()
    message["From"] = "admin@contoso.onmicrosoft.com"
    message["To"] = "alice@example.com"
    message["Subject"] = subject
    message.set_content("body")
    return base64.b64encode(message.as_bytes())


def send(fake, token: str, subject: str = "hello") -> requests.Response:
    return requests.post(
        fake.graph_url + "/me/sendMail",
        data=mime(subject),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "text/plain"},
        timeout=10,
    )


@pytest.mark.parametrize("retry_after", ["2", "0.5", "Wed, 21 Oct 2015 07:28:00 GMT"])
def test_status_fault_passes_retry_after_through(fake, retry_after):
    token = delegated_token(fake.url)
    fake.inject("sendMail", status=429, code="ApplicationThrottled", retry_after=retry_after)
    answer = send(fake, token)
    assert answer.status_code == 429
    assert answer.headers["Retry-After"] == retry_after
    assert answer.json()["error"]["code"] == "ApplicationThrottled"
    assert answer.headers["request-id"]
    assert fake.messages() == []  # nothing processed
    assert send(fake, token).status_code == 202  # count defaults to 1


def test_numeric_retry_after_is_written_as_given(fake):
    token = delegated_token(fake.url)
    fake.inject("sendMail", status=503, retry_after=0.5)
    answer = send(fake, token)
    assert answer.headers["Retry-After"] == "0.5"
    assert answer.json()["error"]["code"] == "ServiceUnavailable"


def test_fault_count_applies_to_the_next_k_calls(fake):
    token = delegated_token(fake.url)
    fake.inject("sendMail", status=503, count=2)
    assert [send(fake, token).status_code for _ in range(3)] == [503, 503, 202]
    assert [c["fault"] for c in fake.calls("sendMail")] == ["status", "status", None]


def test_token_route_fault_uses_the_identity_error_shape(fake):
    fake.inject("token", status=503, retry_after="1")
    status, answer = token_request(
        fake.url,
        {"client_id": DEFAULTS["client_id"], "client_secret": DEFAULTS["client_secret"],
         "grant_type": "client_credentials", "scope": "https://graph.microsoft.com/.default"},
    )  # fmt: skip
    assert status == 503
    assert answer["error"] == "temporarily_unavailable"
    assert answer["error_description"].startswith("AADSTS")


def test_delay_fault_then_normal_processing(fake):
    token = delegated_token(fake.url)
    fake.inject("sendMail", delay=0.3)
    started = time.monotonic()
    assert send(fake, token).status_code == 202
    assert time.monotonic() - started >= 0.3
    assert len(fake.messages()) == 1


def test_close_before_processing_sends_nothing(fake):
    token = delegated_token(fake.url)
    fake.inject("sendMail", action="close_before_processing")
    with pytest.raises(requests.ConnectionError):
        send(fake, token)
    assert fake.messages() == []
    [call] = fake.calls("sendMail")
    assert call["fault"] == "close_before_processing" and call["status"] is None
    assert call["request_bytes"] > 0


def test_close_after_processing_accepts_the_mail_but_never_answers(fake):
    token = delegated_token(fake.url)
    fake.inject("sendMail", action="close_after_processing")
    with pytest.raises(requests.ConnectionError):
        send(fake, token, subject="ambiguous")
    assert [m["subject"] for m in fake.messages()] == ["ambiguous"]  # the dangerous case: it went out


def test_unknown_fault_route_or_action_is_refused(fake):
    with pytest.raises(ValueError):
        fake.inject("sendmail", status=500)
    with pytest.raises(ValueError):
        fake.inject("sendMail", action="explode")


def test_clear_faults(fake):
    token = delegated_token(fake.url)
    fake.inject("sendMail", status=500, count=5)
    fake.clear_faults()
    assert send(fake, token).status_code == 202


def test_call_log_records_what_matters(fake):
    token = app_token(fake.url)
    requests.get(
        fake.graph_url + "/users/sales@contoso.onmicrosoft.com",
        headers={"Authorization": f"Bearer {token}", "client-request-id": "abc"},
        timeout=10,
    )
    [token_call] = fake.calls("token")
    assert token_call["grant_type"] == "client_credentials"
    assert token_call["authorization"] is False
    [users_call] = fake.calls("users")
    assert users_call["authorization"] is True
    assert users_call["client_request_id"] == "abc"
    assert users_call["status"] == 200
    assert users_call["method"] == "GET"


def test_reset_forgets_everything_and_restores_defaults(fake):
    token = delegated_token(fake.url)
    send(fake, token)
    fake.configure(token_lifetime=5)
    fake.inject("me", status=500)
    fake.reset()
    assert fake.messages() == [] and fake.calls() == [] and fake.faults() == []
    assert fake.config()["token_lifetime"] == 3600
    assert (
        requests.get(fake.graph_url + "/me", headers={"Authorization": f"Bearer {token}"}, timeout=10).status_code
        == 401
    )


def test_configure_refuses_unknown_keys_and_bad_values(fake):
    with pytest.raises(ValueError):
        fake.configure(token_lifetyme=5)
    with pytest.raises(ValueError):
        fake.configure(max_message_size=151 * 1024 * 1024)
    with pytest.raises(ValueError):
        fake.configure(redirect_uris="http://x")


def test_fake_control_over_http(fake):
    control = FakeControl(fake.url)
    assert control.config()["client_id"] == DEFAULTS["client_id"]
    assert control.configure(token_lifetime=60)["token_lifetime"] == 60
    with pytest.raises(ValueError):
        control.configure(nope=1)
    token = delegated_token(fake.url)
    assert send(fake, token).status_code == 202
    [message] = control.messages()
    assert control.raw(message["id"]) == fake.raw(message["id"])
    assert control.calls(route="sendMail")[0]["status"] == 202
    fault = control.inject("me", status=500, count=3)
    assert fault["remaining"] == 3
    control.clear_faults()
    assert control.faults() == []
    control.expire_tokens()
    assert send(fake, token).status_code == 401
    refresh = delegated_token(fake.url) and control.tokens()
    assert any(t["kind"] == "refresh" for t in refresh)
    control.revoke_refresh_tokens()
    assert all(t["revoked"] for t in control.tokens() if t["kind"] == "refresh")
    control.reset()
    assert control.messages() == []


def test_concurrent_sends_are_all_recorded(fake):
    # 12 at once on one mailbox: over Graph's 4 in flight, so the limit is lifted here (test_fake_limits.py
    # covers it); this test is about the fake's own thread safety.
    fake.configure(mailbox_concurrency=0)
    token = delegated_token(fake.url)
    results = []

    def worker(i: int) -> None:
        results.append(send(fake, token, subject=f"m{i}").status_code)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [202] * 12
    assert sorted(m["subject"] for m in fake.messages()) == sorted(f"m{i}" for i in range(12))


def test_command_line_prints_configuration_and_serves(tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-m", "fake_microsoft", "--port", "0"],
        cwd=str(ROOT),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = process.stdout.readline()
        assert first.startswith("Fake Microsoft listening on http://127.0.0.1:")
        url = first.strip().rsplit(" ", 1)[-1]
        lines = [process.stdout.readline() for _ in range(8)]
        printed = "".join(lines)
        for value in (DEFAULTS["tenant_id"], DEFAULTS["client_id"], DEFAULTS["client_secret"], url + "/v1.0",
                      "admin@contoso.onmicrosoft.com", DEFAULTS["redirect_uris"][0], url + "/_fake"):  # fmt: skip
            assert value in printed
        answer = requests.get(f"{url}/{DEFAULTS['tenant_id']}/v2.0/.well-known/openid-configuration", timeout=10)
        assert answer.status_code == 200
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
    assert process.returncode == 0
