"""msal flows against the fake Microsoft: PKCE, code redemption, refresh rotation, client credentials."""

from __future__ import annotations

import datetime
import hashlib
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from cryptography.hazmat.primitives import serialization

from fake_microsoft.defaults import CLIENT_ID, CLIENT_SECRET, CLIENT_SECRET_ID, DEFAULTS, TENANT_ID
from fake_microsoft.testing import self_signed_certificate
from graph_mail import (
    AuthenticationError,
    ConfigurationError,
    DelegatedAuthFlow,
    InvalidGrantError,
    MailboxCredentials,
    TokenProvider,
    TransportError,
    resolve_cloud,
)
from graph_mail import auth as auth_module

pytestmark = [
    pytest.mark.usefixtures("graph_mail_reset"),
    pytest.mark.filterwarnings("ignore:response_mode='form_post'"),
]
REDIRECT = DEFAULTS["redirect_uris"][0]
ADMIN = "admin@contoso.onmicrosoft.com"


def cloud_of(fake):
    return resolve_cloud(authority_url=fake.authority_url, graph_url=fake.graph_url)


def credentials(fake, **changes):
    values = dict(tenant_id=TENANT_ID, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, cloud=cloud_of(fake))
    values.update(changes)
    return MailboxCredentials(**values)


def follow(url):
    """Play the browser: GET the authorize URL, return the redirect's query parameters."""
    answer = requests.get(url, allow_redirects=False, timeout=10)
    assert answer.status_code == 302, answer.text
    location = answer.headers["Location"]
    assert location.startswith(REDIRECT)
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def sign_in(fake, **changes):
    flow = DelegatedAuthFlow(credentials(fake, **changes), REDIRECT)
    url, state = flow.start("caller-state-123", login_hint=ADMIN)
    return flow.finish(state, follow(url))


def token_calls(fake, grant=None):
    return [c for c in fake.calls(route="token") if grant is None or c["grant_type"] == grant]


# -- authorization code + PKCE ----------------------------------------------------------------------


def test_authorize_url_has_pkce_and_the_callers_state(fake):
    url, flow = DelegatedAuthFlow(credentials(fake), REDIRECT).start("caller-state-123", login_hint=ADMIN)
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert url.startswith(f"{fake.url}/{TENANT_ID}/oauth2/v2.0/authorize?")  # loopback stays http
    assert query["state"] == "caller-state-123" and flow["state"] == "caller-state-123"
    assert query["code_challenge_method"] == "S256" and len(query["code_challenge"]) >= 43
    assert query["redirect_uri"] == REDIRECT and query["login_hint"] == ADMIN
    assert query["response_type"] == "code"
    scopes = set(query["scope"].split())
    assert {"Mail.Send", "Mail.ReadWrite", "User.Read", "offline_access", "openid"} <= scopes
    assert "code_verifier" in flow  # kept server-side by the caller, never in the URL
    assert flow["code_verifier"] not in url


def test_code_redemption_returns_tokens_and_account(fake):
    token = sign_in(fake)
    assert token.access_token and token.refresh_token and token.account == ADMIN
    assert token.expires_at > 0 and "Mail.Send" in " ".join(token.scopes)
    redemption = token_calls(fake, "authorization_code")
    assert len(redemption) == 1 and redemption[0]["status"] == 200


def test_state_mismatch_is_refused(fake):
    flow = DelegatedAuthFlow(credentials(fake), REDIRECT)
    url, state = flow.start("good-state")
    params = follow(url)
    params["state"] = "forged"
    with pytest.raises(AuthenticationError, match="state"):
        flow.finish(state, params)
    assert not token_calls(fake, "authorization_code")


def test_error_callback_maps_the_aadsts_hint(fake):
    fake.inject("authorize", action="authorize_error", error="consent_required", aadsts=65001)
    flow = DelegatedAuthFlow(credentials(fake), REDIRECT)
    url, state = flow.start("s1")
    with pytest.raises(AuthenticationError) as info:
        flow.finish(state, follow(url))
    assert info.value.code == "AADSTS65001" and "consent" in info.value.hint.lower()


def test_code_reuse_is_refused_with_a_hint(fake):
    flow = DelegatedAuthFlow(credentials(fake), REDIRECT)
    url, state = flow.start("s1")
    params = follow(url)
    flow.finish(dict(state), params)
    with pytest.raises(InvalidGrantError) as info:
        flow.finish(dict(state), params)
    assert info.value.code in ("AADSTS54005", "AADSTS70008") and info.value.hint


def test_unregistered_redirect_uri_gets_aadsts50011(fake):
    flow = DelegatedAuthFlow(credentials(fake), "http://127.0.0.1:1/not/registered")
    url, _ = flow.start("s1")
    answer = requests.get(url, allow_redirects=False, timeout=10)
    assert answer.status_code == 400 and "AADSTS50011" in answer.text


# -- refresh + rotation -----------------------------------------------------------------------------


def test_refresh_rotation_is_handed_to_the_callback(fake):
    first = sign_in(fake)
    stored = []
    provider = TokenProvider(
        credentials(fake, refresh_token=first.refresh_token),
        on_refresh_token=lambda rt, token: stored.append((rt, token)),
    )
    provider.invalidate()  # force a refresh now
    token = provider.token()
    assert len(token_calls(fake, "refresh_token")) == 1
    assert len(stored) == 1
    new_rt, handed = stored[0]
    assert new_rt != first.refresh_token and new_rt == token.refresh_token and handed is token
    # a provider built later from the stored (rotated) token reuses the cached access token
    again = TokenProvider(credentials(fake, refresh_token=new_rt)).access_token()
    assert again == token.access_token and len(token_calls(fake, "refresh_token")) == 1


def test_revoked_refresh_token_is_invalid_grant(fake):
    first = sign_in(fake)
    fake.revoke_refresh_tokens()
    provider = TokenProvider(credentials(fake, refresh_token=first.refresh_token))
    provider.invalidate()
    with pytest.raises(InvalidGrantError) as info:
        provider.access_token()
    assert info.value.code == "AADSTS50173" and "sign in again" in info.value.hint.lower()
    assert "re-authentication needed" in str(info.value).lower()


def test_missing_refresh_token_is_invalid_grant(fake):
    with pytest.raises(InvalidGrantError):
        TokenProvider(credentials(fake)).access_token()


# -- client credentials ------------------------------------------------------------------------------


def test_client_credentials_with_a_secret(fake):
    token = TokenProvider(credentials(fake, mode="application")).token()
    assert token.access_token and token.refresh_token is None
    call = token_calls(fake, "client_credentials")[0]
    assert call["status"] == 200


def test_wrong_secret_id_pasted_gives_the_7000215_hint(fake):
    provider = TokenProvider(credentials(fake, mode="application", client_secret=CLIENT_SECRET_ID))
    with pytest.raises(AuthenticationError) as info:
        provider.access_token()
    assert info.value.code == "AADSTS7000215"
    assert "Secret ID" in info.value.hint and not isinstance(info.value, InvalidGrantError)


def test_unknown_tenant_gives_a_tenant_hint(fake):
    provider = TokenProvider(credentials(fake, mode="application", tenant_id="nope.onmicrosoft.com"))
    with pytest.raises(AuthenticationError) as info:
        provider.access_token()
    assert "tenant" in info.value.hint.lower()


def make_certificate():
    key, cert = self_signed_certificate("graph-mail-test")
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    return key_pem, cert_pem, hashlib.sha1(cert.public_bytes(serialization.Encoding.DER)).hexdigest()  # noqa: S324


@pytest.fixture(scope="module")
def certificate():
    return make_certificate()


def test_client_credentials_with_certificate_and_thumbprint(fake, certificate):
    key_pem, cert_pem, sha1 = certificate
    fake.configure(certificates=[cert_pem])
    creds = credentials(
        fake, mode="application", client_secret=None, certificate_pem=key_pem, certificate_thumbprint=sha1.upper()
    )
    assert TokenProvider(creds).access_token()
    assert token_calls(fake, "client_credentials")[0]["status"] == 200


def test_client_credentials_with_certificate_thumbprint_computed(fake, certificate):
    key_pem, cert_pem, _ = certificate
    fake.configure(certificates=[cert_pem])
    creds = credentials(fake, mode="application", client_secret=None, certificate_pem=key_pem + cert_pem)
    assert TokenProvider(creds).access_token()


def test_unregistered_certificate_is_refused(fake, certificate):
    key_pem, _, sha1 = certificate
    creds = credentials(
        fake, mode="application", client_secret=None, certificate_pem=key_pem, certificate_thumbprint=sha1
    )
    with pytest.raises(AuthenticationError) as info:
        TokenProvider(creds).access_token()
    assert info.value.code == "AADSTS700027" and "certificate" in info.value.hint.lower()


def test_bad_certificate_inputs_are_configuration_errors(certificate):
    key_pem, cert_pem, _ = certificate
    cloud = resolve_cloud()
    with pytest.raises(ConfigurationError, match="private key"):
        auth_module._certificate_credential(cert_pem, "AB")
    with pytest.raises(ConfigurationError, match="thumbprint"):
        auth_module._certificate_credential(key_pem, None)
    with pytest.raises(ConfigurationError):
        MailboxCredentials(TENANT_ID, CLIENT_ID, cloud=cloud)  # neither secret nor certificate
    with pytest.raises(ConfigurationError):
        MailboxCredentials("", CLIENT_ID, client_secret="x", cloud=cloud)


# -- cache, early refresh, one msal app ---------------------------------------------------------------


def test_token_cached_and_refreshed_five_minutes_early(fake):
    now = [1_000_000.0]
    creds = credentials(fake, mode="application")
    provider = TokenProvider(creds, clock=lambda: now[0])
    first = provider.token()
    assert first.expires_at == now[0] + 3600
    assert provider.access_token() == first.access_token
    now[0] = first.expires_at - 301
    assert TokenProvider(creds, clock=lambda: now[0]).access_token() == first.access_token  # shared cache
    assert len(token_calls(fake)) == 1
    now[0] = first.expires_at - 300
    assert provider.access_token() != first.access_token
    assert len(token_calls(fake)) == 2


def test_one_msal_app_per_authority_and_client(fake):
    creds = credentials(fake, mode="application")
    for _ in range(3):
        TokenProvider(creds).invalidate()
        TokenProvider(creds).access_token()
    assert len(auth_module._apps) == 1
    assert len(fake.calls(route="openid")) == 1  # discovery once, not per mail
    assert len(token_calls(fake)) == 3


def test_reserved_scopes_are_never_passed_to_msal(fake):
    creds = credentials(fake, scopes=("openid", "Mail.Send", "offline_access", "profile", "User.Read"))
    assert creds.graph_scopes == ["Mail.Send", "User.Read"]
    url, _ = DelegatedAuthFlow(creds, REDIRECT).start("s")  # msal would raise on reserved scopes
    assert "Mail.Send" in url


def test_msal_gets_a_timeout_and_the_shared_session(fake, monkeypatch):
    seen = {}
    real = auth_module.msal.ConfidentialClientApplication

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(auth_module.msal, "ConfidentialClientApplication", spy)
    TokenProvider(credentials(fake, mode="application")).access_token()
    assert seen["timeout"] and isinstance(seen["http_client"], auth_module.MsalHttpClient)
    assert seen["authority"] == f"https://{urlsplit(fake.url).netloc}/{TENANT_ID}"  # msal sees https
    assert seen["instance_discovery"] is False


def test_loopback_mapping_never_applies_to_other_hosts():
    client = auth_module.MsalHttpClient(transport=None, loopback_origin="127.0.0.1:8765")
    assert client._wire_url("https://127.0.0.1:8765/t/oauth2/v2.0/token").startswith("http://127.0.0.1:8765/")
    assert client._wire_url("https://login.microsoftonline.com/t").startswith("https://")
    assert client._wire_url("https://127.0.0.1:8766/t").startswith("https://")
    assert auth_module._msal_authority(MailboxCredentials(TENANT_ID, CLIENT_ID, client_secret="x"))[1] is None


def test_identity_platform_down_is_a_retryable_transport_error():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cloud = resolve_cloud(authority_url=f"http://127.0.0.1:{port}", graph_url=f"http://127.0.0.1:{port}")
    creds = MailboxCredentials(TENANT_ID, CLIENT_ID, client_secret="x" * 10, mode="application", cloud=cloud)
    with pytest.raises(TransportError) as info:
        TokenProvider(creds).access_token()
    assert info.value.nothing_sent and info.value.retryable
    assert "Identity platform unreachable" in str(info.value)
    assert not auth_module._apps  # a failed construction is not cached


def test_certificate_expiry_is_read_from_the_pem(certificate):
    from graph_mail import certificate_expiry

    key_pem, cert_pem, _sha1 = certificate
    expiry = certificate_expiry(key_pem + cert_pem)
    in_a_month = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None) + datetime.timedelta(days=30)
    assert expiry is not None and abs((expiry - in_a_month).total_seconds()) < 120
    assert certificate_expiry(key_pem) is None, "a PEM with only the key names no expiry"
    broken = "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----"
    with pytest.raises(ConfigurationError, match="cannot be read"):
        certificate_expiry(broken)
