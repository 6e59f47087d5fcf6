"""The core library against the fake's limits: the app registration's credential expiry dates
(``GraphMailClient.credential_expiry``) and Graph's concurrency limit per mailbox (429, then a retry)."""

from __future__ import annotations

import base64
import datetime
import os
import threading
import time
from email.message import EmailMessage

import pytest
import requests
from cryptography.hazmat.primitives import hashes, serialization

from fake_microsoft.defaults import CLIENT_ID, CLIENT_SECRET, CLIENT_SECRET_ID, DEFAULTS, TENANT_ID
from fake_microsoft.testing import app_token, self_signed_certificate
from graph_mail import (
    AuthenticationError,
    AuthMode,
    CredentialExpiry,
    Envelope,
    ExpiringCredential,
    GraphMailClient,
    MailboxCredentials,
    PermissionDenied,
    RetryPolicy,
    Timeouts,
    Transport,
    resolve_cloud,
)

pytestmark = pytest.mark.usefixtures("graph_mail_reset")
SALES = "sales@contoso.onmicrosoft.com"
READ_ALL = [*DEFAULTS["app_roles"], "Application.Read.All"]


def client(fake, records=None, sleep=None, **changes) -> GraphMailClient:
    cloud = resolve_cloud(authority_url=fake.authority_url, graph_url=fake.graph_url)
    values = dict(client_secret=CLIENT_SECRET, mode=AuthMode.APPLICATION, cloud=cloud)
    values.update(changes)
    transport = Transport(timeouts=Timeouts(read=10, total=60), sleep=sleep or (lambda s: None))
    return GraphMailClient(
        MailboxCredentials(TENANT_ID, CLIENT_ID, **values),
        transport=transport,
        retry=RetryPolicy(backoff=0.01),
        on_call=records.append if records is not None else None,
    )


def naive_utc(epoch: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(int(epoch), datetime.timezone.utc).replace(tzinfo=None)


def test_credential_expiry_lists_the_secret_and_certificates(fake):
    _key, cert = self_signed_certificate("odoo-expiry")
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    end = fake.now() + 45 * 24 * 3600
    fake.configure(app_roles=READ_ALL, certificates=[cert_pem], client_secret_expires=end)
    records = []
    expiry = client(fake, records).credential_expiry()
    assert isinstance(expiry, CredentialExpiry) and expiry.app_id == CLIENT_ID
    (secret,) = expiry.secrets
    assert secret.key_id == CLIENT_SECRET_ID and secret.hint == CLIENT_SECRET[:3]
    assert secret.end == naive_utc(end) and secret.start is not None and secret.thumbprint is None
    assert not secret.expired() and secret.expired(naive_utc(end) + datetime.timedelta(seconds=1))
    (certificate,) = expiry.certificates
    thumbprint = cert.fingerprint(hashes.SHA1()).hex()  # noqa: S303
    assert certificate.thumbprint == thumbprint.upper() and certificate.hint is None
    assert certificate.display_name == "CN=odoo-expiry"
    after = getattr(cert, "not_valid_after_utc", None) or cert.not_valid_after
    assert certificate.end == after.replace(tzinfo=None, microsecond=0)
    assert expiry.secret_for(CLIENT_SECRET) == secret and expiry.secret_for("zzz-other") is None
    colons = ":".join(thumbprint[i : i + 2] for i in range(0, len(thumbprint), 2))
    assert expiry.certificate_for(colons) == certificate
    assert expiry.soonest == certificate  # 30 days beats 45
    # One logged call like any other, with the $select the product needs.
    (record,) = records
    assert record.operation == "credentialExpiry" and record.status == 200 and record.outcome == "ok"
    assert record.path == f"/v1.0/applications(appId='{CLIENT_ID}')"
    (call,) = fake.calls("getApplication")
    assert call["status"] == 200


def test_credential_expiry_with_a_certificate_credential(fake):
    key, cert = self_signed_certificate("odoo-cert-auth")
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    fake.configure(app_roles=READ_ALL, certificates=[cert_pem])
    expiry = client(fake, client_secret=None, certificate_pem=key_pem + cert_pem).credential_expiry()
    assert [c.display_name for c in expiry.certificates] == ["CN=odoo-cert-auth"]
    # No expiry date configured: the secret shows two years after the fake started.
    (secret,) = expiry.secrets
    assert secret.end == naive_utc(fake.state.started_at + 2 * 365 * 24 * 3600)


def test_credential_expiry_without_application_read_all_explains_what_to_do(fake):
    records = []
    with pytest.raises(PermissionDenied) as info:
        client(fake, records).credential_expiry()
    error = info.value
    assert error.status == 403 and error.code == "Authorization_RequestDenied"
    assert "Application.Read.All" in error.hint and "Certificates & secrets" in error.hint
    assert "Application.Read.All" in str(error)
    assert [r.outcome for r in records] == ["error"]  # a 403 is not retried


def test_expired_secret_date_is_reported_as_7000222(fake):
    fake.configure(app_roles=READ_ALL, client_secret_expires=fake.now() + 60)
    fake.advance_clock(120)
    with pytest.raises(AuthenticationError) as info:
        client(fake).credential_expiry()
    assert info.value.code == "AADSTS7000222" and "expired" in info.value.hint


def test_mailbox_concurrency_429_is_retried_after_retry_after(fake):
    token = app_token(fake.url)
    fake.inject("sendMail", delay=1.5, count=4)

    def blocker(i: int) -> None:
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = SALES, "bob@example.com", f"blocker {i}"
        message.set_content("x")
        requests.post(
            f"{fake.graph_url}/users/{SALES}/sendMail",
            data=base64.b64encode(message.as_bytes()),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "text/plain"},
            timeout=10,
        )

    threads = [threading.Thread(target=blocker, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 5
    while sum(fake.state.in_flight.values()) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sum(fake.state.in_flight.values()) == 4
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = SALES, "carol@example.com", "through"
    message["Message-ID"] = f"<{os.urandom(6).hex()}@odoo.example.com>"
    message.set_content("hello")
    records, waits = [], []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        time.sleep(seconds)

    result = client(fake, records, sleep=sleep).send(message, Envelope(SALES, ["carol@example.com"]))
    for thread in threads:
        thread.join(10)
    assert result.internet_message_id == message["Message-ID"]
    throttled = [r for r in records if r.status == 429]
    assert throttled and all(r.outcome == "retry" and r.graph_code == "ApplicationThrottled" for r in throttled)
    assert records[-1].status == 202 and waits and all(w >= 1 for w in waits)
    assert len(fake.messages()) == 5


def test_expiring_credential_helpers_without_dates():
    undated = ExpiringCredential(key_id="k", display_name=None, end=None)
    assert not undated.expired()
    assert CredentialExpiry("app", [undated], []).soonest == undated
    assert CredentialExpiry("app").soonest is None and CredentialExpiry("app").secret_for("abc") is None
