"""msal (unmodified) against the fake: discovery, auth code + PKCE, refresh, client credentials.

msal refuses http:// authorities, so it gets ``https://127.0.0.1:<port>/<tenant>`` and an http_client that
rewrites that prefix to http:// (what the core library does).
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import msal
import pytest
import requests
from cryptography.hazmat.primitives import hashes, serialization

from fake_microsoft import DEFAULTS
from fake_microsoft.testing import self_signed_certificate

REDIRECT = "http://localhost:5000/callback"


class LoopbackSession(requests.Session):
    """Rewrites https://127.0.0.1:<port> (and, optionally, msal's instance discovery host) to the fake."""

    def __init__(self, port: int, discovery: bool = False) -> None:
        super().__init__()
        self.prefixes = [f"https://127.0.0.1:{port}"]
        if discovery:
            self.prefixes.append("https://login.microsoftonline.com")
        self.target = f"http://127.0.0.1:{port}"

    def request(self, method, url, *args, **kwargs):
        for prefix in self.prefixes:
            if url.startswith(prefix):
                url = self.target + url[len(prefix) :]
                break
        else:
            raise AssertionError(f"msal tried to reach {url} outside the fake")
        return super().request(method, url, *args, **kwargs)


def authority(fake) -> str:
    return f"https://127.0.0.1:{fake.port}/{DEFAULTS['tenant_id']}"


def test_msal_auth_code_flow_then_refresh(fake):
    fake.configure(redirect_uris=[*DEFAULTS["redirect_uris"], REDIRECT])
    http = LoopbackSession(fake.port, discovery=True)
    app = msal.ConfidentialClientApplication(
        DEFAULTS["client_id"], client_credential=DEFAULTS["client_secret"], authority=authority(fake), http_client=http
    )
    flow = app.initiate_auth_code_flow(
        ["Mail.Send", "User.Read"], redirect_uri=REDIRECT, login_hint="sales@contoso.onmicrosoft.com"
    )
    browser = http.get(flow["auth_uri"], allow_redirects=False)  # the "browser" visit; consent is automatic
    assert browser.status_code == 302
    location = browser.headers["Location"]
    assert location.startswith(REDIRECT + "?")
    query = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}

    result = app.acquire_token_by_auth_code_flow(flow, query)
    assert "access_token" in result, result
    assert result["id_token_claims"]["preferred_username"] == "sales@contoso.onmicrosoft.com"
    assert result["id_token_claims"]["nonce"]  # msal checked it against the flow
    assert [a["username"] for a in app.get_accounts()] == ["sales@contoso.onmicrosoft.com"]

    refreshed = app.acquire_token_by_refresh_token(result["refresh_token"], ["Mail.Send"])
    assert "access_token" in refreshed, refreshed
    assert refreshed["refresh_token"] != result["refresh_token"]
    assert {c["route"] for c in fake.calls()} >= {"instance", "openid", "authorize", "token"}


def test_msal_sees_revoked_refresh_token_as_invalid_grant(fake):
    fake.configure(redirect_uris=[*DEFAULTS["redirect_uris"], REDIRECT])
    http = LoopbackSession(fake.port)
    app = msal.ConfidentialClientApplication(
        DEFAULTS["client_id"],
        client_credential=DEFAULTS["client_secret"],
        authority=authority(fake),
        http_client=http,
        instance_discovery=False,
    )
    flow = app.initiate_auth_code_flow(["Mail.Send"], redirect_uri=REDIRECT)
    location = http.get(flow["auth_uri"], allow_redirects=False).headers["Location"]
    query = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
    result = app.acquire_token_by_auth_code_flow(flow, query)
    fake.revoke_refresh_tokens()
    refused = app.acquire_token_by_refresh_token(result["refresh_token"], ["Mail.Send"])
    assert refused["error"] == "invalid_grant"
    assert 50173 in refused["error_codes"]


def test_msal_client_credentials_with_secret(fake):
    app = msal.ConfidentialClientApplication(
        DEFAULTS["client_id"],
        client_credential=DEFAULTS["client_secret"],
        authority=authority(fake),
        http_client=LoopbackSession(fake.port),
        instance_discovery=False,
    )
    result = app.acquire_token_for_client(["https://graph.microsoft.com/.default"])
    assert "access_token" in result, result


def test_msal_wrong_secret_surfaces_7000215(fake):
    app = msal.ConfidentialClientApplication(
        DEFAULTS["client_id"],
        client_credential=DEFAULTS["client_secret_id"],
        authority=authority(fake),
        http_client=LoopbackSession(fake.port),
        instance_discovery=False,
    )
    result = app.acquire_token_for_client(["https://graph.microsoft.com/.default"])
    assert result["error"] == "invalid_client"
    assert result["error_codes"] == [7000215]


@pytest.mark.parametrize("with_public_certificate", [False, True])  # RS256 + x5t, then PS256 + x5t#S256
def test_msal_client_credentials_with_certificate(fake, with_public_certificate):
    key, cert = self_signed_certificate("odoo-graph")
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    fake.configure(certificates=[cert_pem])
    credential = {"private_key": key_pem, "thumbprint": cert.fingerprint(hashes.SHA1()).hex()}  # noqa: S303
    if with_public_certificate:
        credential = {"private_key": key_pem, "public_certificate": cert_pem}
    app = msal.ConfidentialClientApplication(
        DEFAULTS["client_id"],
        client_credential=credential,
        authority=authority(fake),
        http_client=LoopbackSession(fake.port),
        instance_discovery=False,
    )
    result = app.acquire_token_for_client(["https://graph.microsoft.com/.default"])
    assert "access_token" in result, result
