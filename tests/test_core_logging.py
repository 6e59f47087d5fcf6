"""Nothing secret reaches a log line or an exception text, across complete flows at DEBUG level."""

from __future__ import annotations

import logging
import os
import re
from email.message import EmailMessage
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from fake_microsoft.defaults import CLIENT_ID, CLIENT_SECRET, CLIENT_SECRET_ID, DEFAULTS, TENANT_ID
from graph_mail import (
    DelegatedAuthFlow,
    Envelope,
    GraphMailClient,
    GraphMailError,
    MailboxCredentials,
    TokenProvider,
    resolve_cloud,
)
from graph_mail.message import build_plan

pytestmark = [
    pytest.mark.usefixtures("graph_mail_reset"),
    pytest.mark.filterwarnings("ignore:response_mode='form_post'"),
]
ADMIN = "admin@contoso.onmicrosoft.com"
BODY_MARKER = "Confidential-offer-body-7731"
SUBJECT_MARKER = "Private-subject-4412"


def test_no_secret_in_any_log_or_error(fake, caplog, certificate_pem):
    caplog.set_level(logging.DEBUG)  # root: graph_mail, msal, urllib3, requests, everything
    for name in ("urllib3", "urllib3.connectionpool", "msal", "requests"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    cloud = resolve_cloud(authority_url=fake.authority_url, graph_url=fake.graph_url)
    secrets = {CLIENT_SECRET, CLIENT_SECRET_ID}
    errors = []

    # delegated: authorize, code redemption, refresh with rotation
    creds = MailboxCredentials(TENANT_ID, CLIENT_ID, client_secret=CLIENT_SECRET, cloud=cloud)
    flow = DelegatedAuthFlow(creds, DEFAULTS["redirect_uris"][0])
    url, state = flow.start("state-xyz")
    location = requests.get(url, allow_redirects=False, timeout=10).headers["Location"]
    params = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
    secrets.add(params["code"])
    secrets.add(state["code_verifier"])
    first = flow.finish(state, params)
    secrets.update({first.access_token, first.refresh_token})
    rotated = []
    delegated = MailboxCredentials(
        TENANT_ID, CLIENT_ID, client_secret=CLIENT_SECRET, cloud=cloud, refresh_token=first.refresh_token
    )
    client = GraphMailClient(delegated, on_refresh_token=lambda rt, token: rotated.append(token))
    fake.expire_tokens()  # forces 401 -> refresh -> replay

    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = ADMIN, "bob@example.com", SUBJECT_MARKER
    msg.set_content(BODY_MARKER + " " + "x" * 200)
    client.send(msg, Envelope(ADMIN, ["bob@example.com"]))
    big = EmailMessage()
    big["From"], big["To"], big["Subject"] = ADMIN, "bob@example.com", SUBJECT_MARKER
    big.set_content(BODY_MARKER)
    big.add_attachment(os.urandom(4_500_000), maintype="application", subtype="pdf", filename="big.pdf")
    fake.inject("upload", action="close_after_processing", count=1)
    client.send(big, Envelope(ADMIN, ["bob@example.com"]))
    for token in rotated:
        secrets.update({token.access_token, token.refresh_token})
    mime_b64 = build_plan(msg, Envelope(ADMIN, ["bob@example.com"])).mime_base64.decode()

    # application: secret, certificate (client_assertion), wrong secret
    app = MailboxCredentials(TENANT_ID, CLIENT_ID, client_secret=CLIENT_SECRET, mode="app", cloud=cloud)
    secrets.add(TokenProvider(app).access_token())
    key_pem, cert_pem = certificate_pem
    fake.configure(certificates=[cert_pem])
    cert_creds = MailboxCredentials(TENANT_ID, CLIENT_ID, certificate_pem=key_pem + cert_pem, mode="app", cloud=cloud)
    secrets.add(TokenProvider(cert_creds).access_token())
    wrong = MailboxCredentials(TENANT_ID, CLIENT_ID, client_secret=CLIENT_SECRET_ID, mode="app", cloud=cloud)
    try:
        TokenProvider(wrong).access_token()
    except GraphMailError as exc:
        errors.append(exc)
    fake.revoke_refresh_tokens()
    fake.expire_tokens()
    try:
        client.send(msg, Envelope(ADMIN, ["bob@example.com"]))
    except GraphMailError as exc:
        errors.append(exc)
    assert len(errors) == 2

    text = caplog.text + "\n".join(r.getMessage() for r in caplog.records)
    text += "\n".join(str(e) + repr(e) + e.hint for e in errors)
    assert "tempauth=[REDACTED]" in text or "/upload/" in text  # upload calls were logged (urllib3)
    assert any(r.name.startswith("msal") for r in caplog.records)  # msal logged too
    for secret in secrets:
        assert secret not in text
    assert key_pem.splitlines()[1] not in text
    assert BODY_MARKER not in text and SUBJECT_MARKER not in text
    assert mime_b64[:40] not in text and mime_b64[-40:] not in text
    assert "eyJ" not in text  # no JWT (access token, id token, client assertion)
    for name in ("code", "client_secret", "refresh_token", "client_assertion", "tempauth", "access_token"):
        assert not re.search(rf"\b{name}=(?!\[REDACTED\])[^&\s]", text), name


@pytest.fixture(scope="module")
def certificate_pem():
    from test_core_auth import make_certificate

    key_pem, cert_pem, _ = make_certificate()
    return key_pem, cert_pem
