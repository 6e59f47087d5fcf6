"""Identity platform strictness: authorize, the three grants, and Microsoft's error shapes."""

from __future__ import annotations

import base64
import json
import time
import uuid

import pytest
import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from fake_microsoft import DEFAULTS
from fake_microsoft.testing import authorize, delegated_tokens, self_signed_certificate, token_request

TENANT = DEFAULTS["tenant_id"]
CLIENT = DEFAULTS["client_id"]
SECRET = DEFAULTS["client_secret"]
REDIRECT = DEFAULTS["redirect_uris"][0]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims_of(jwt: str) -> dict:
    part = jwt.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def code_grant(code: str, verifier: str = "v" * 43, **overrides: str) -> dict:
    form = {
        "client_id": CLIENT,
        "client_secret": SECRET,
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "code_verifier": verifier,
    }
    form.update(overrides)
    return form


def assert_aad_error(answer: dict, error: str, code: int) -> None:
    assert answer["error"] == error
    assert answer["error_description"].startswith(f"AADSTS{code}:")
    assert answer["error_codes"] == [code]
    for key in ("timestamp", "trace_id", "correlation_id"):
        assert answer[key]


@pytest.fixture(scope="module")
def certificate():
    key, cert = self_signed_certificate("fake-test")
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    der = cert.public_bytes(serialization.Encoding.DER)
    return key, pem, der


def make_assertion(key, der: bytes, audience: str, alg: str = "RS256", issuer: str = CLIENT) -> str:
    import hashlib

    header = {"alg": alg, "typ": "JWT"}
    if alg == "RS256":
        header["x5t"] = b64url(hashlib.sha1(der).digest())  # noqa: S324
    else:
        header["x5t#S256"] = b64url(hashlib.sha256(der).digest())
    now = int(time.time())
    claims = {"aud": audience, "iss": issuer, "sub": issuer, "jti": str(uuid.uuid4()), "nbf": now, "exp": now + 600}
    signing_input = (b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())).encode()
    if alg == "RS256":
        signature = key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    else:
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)
        signature = key.sign(signing_input, pss, hashes.SHA256())
    return signing_input.decode() + "." + b64url(signature)


# --- discovery ---------------------------------------------------------------------------------------


def test_openid_configuration_names_https_endpoints_on_the_asked_host(fake):
    answer = requests.get(f"{fake.url}/{DEFAULTS['tenant_domain']}/v2.0/.well-known/openid-configuration")
    assert answer.status_code == 200
    document = answer.json()
    base = f"https://127.0.0.1:{fake.port}/{TENANT}"
    assert document["issuer"] == base + "/v2.0"
    assert document["token_endpoint"] == base + "/oauth2/v2.0/token"
    assert document["authorization_endpoint"] == base + "/oauth2/v2.0/authorize"
    keys = requests.get(f"{fake.url}/{TENANT}/discovery/v2.0/keys").json()
    assert keys["keys"][0]["kty"] == "RSA"


def test_instance_discovery_points_at_the_fake_with_its_port(fake):
    answer = requests.get(
        f"{fake.url}/common/discovery/instance",
        params={"api-version": "1.1", "authorization_endpoint": f"https://127.0.0.1/{TENANT}/oauth2/v2.0/authorize"},
    )
    assert answer.status_code == 200
    assert answer.json()["tenant_discovery_endpoint"] == (
        f"https://127.0.0.1:{fake.port}/{TENANT}/v2.0/.well-known/openid-configuration"
    )
    unknown = requests.get(
        f"{fake.url}/common/discovery/instance",
        params={"authorization_endpoint": f"https://evil.example/{TENANT}/oauth2/v2.0/authorize"},
    )
    assert unknown.status_code == 400 and unknown.json()["error"] == "invalid_instance"


def test_unknown_tenant_is_aadsts90002(fake):
    status, answer = token_request(fake.url, code_grant("x"), tenant="nobody.onmicrosoft.com")
    assert status == 400
    assert_aad_error(answer, "invalid_request", 90002)
    assert requests.get(f"{fake.url}/nobody/v2.0/.well-known/openid-configuration").status_code == 400


def test_common_endpoint_refused_for_single_tenant_app(fake):
    status, answer = token_request(fake.url, code_grant("x"), tenant="common")
    assert status == 400
    assert_aad_error(answer, "invalid_request", 50194)


# --- authorize ---------------------------------------------------------------------------------------


def test_authorize_redirects_with_code_and_state(fake):
    status, headers, query = authorize(fake.url, state="s-123", verifier="v" * 43)
    assert status == 302
    assert headers["Location"].startswith(REDIRECT + "?")
    assert query["state"] == "s-123" and query["code"]


def test_authorize_redirect_uri_must_match_exactly(fake):
    status, headers, _ = authorize(fake.url, redirect_uri=REDIRECT + "/")
    assert status == 400 and "Location" not in headers
    page = requests.get(
        f"{fake.url}/{TENANT}/oauth2/v2.0/authorize",
        params={"client_id": CLIENT, "response_type": "code", "redirect_uri": "http://evil/cb", "scope": "Mail.Send"},
        allow_redirects=False,
    )
    assert page.status_code == 400 and "AADSTS50011" in page.text


def test_authorize_unknown_client_is_an_error_page(fake):
    status, _, _ = authorize(fake.url, extra={"client_id": str(uuid.uuid4())})
    assert status == 400
    assert fake.calls("authorize")[-1]["code"] == "unauthorized_client/AADSTS700016"


def test_authorize_refuses_scope_not_allowed(fake):
    status, _, query = authorize(fake.url, scopes="Mail.Send Files.ReadWrite.All offline_access")
    assert status == 302
    assert query["error"] == "invalid_scope"
    assert query["error_description"].startswith("AADSTS70011:")
    assert query["state"] == "xyz"


def test_authorize_error_fault_consent_required(fake):
    fake.inject("authorize", action="authorize_error", error="consent_required")
    status, _, query = authorize(fake.url, state="st")
    assert status == 302
    assert query["error"] == "consent_required"
    assert query["error_description"].startswith("AADSTS65001: ")
    assert query["state"] == "st" and "code" not in query
    status, _, query = authorize(fake.url)  # the fault was for one call only
    assert "code" in query


def test_authorize_error_fault_access_denied_with_custom_code(fake):
    fake.inject("authorize", error="access_denied", aadsts=65004)
    _, _, query = authorize(fake.url)
    assert query["error"] == "access_denied"
    assert query["error_description"].startswith("AADSTS65004:")


# --- authorization code grant -------------------------------------------------------------------------


def test_code_grant_returns_tokens_id_token_and_client_info(fake):
    verifier = "a" * 50
    _, _, query = authorize(fake.url, nonce="n-1", verifier=verifier, login_hint="sales@contoso.onmicrosoft.com")
    status, answer = token_request(fake.url, code_grant(query["code"], verifier, client_info="1"))
    assert status == 200, answer
    assert answer["token_type"] == "Bearer"
    assert answer["refresh_token"] and answer["access_token"]
    assert answer["expires_in"] == 3600
    claims = claims_of(answer["id_token"])
    assert claims["aud"] == CLIENT
    assert claims["tid"] == TENANT
    assert claims["nonce"] == "n-1"
    assert claims["preferred_username"] == "sales@contoso.onmicrosoft.com"
    assert claims["iss"] == f"https://127.0.0.1:{fake.port}/{TENANT}/v2.0"
    for key in ("oid", "name", "iat", "exp", "nbf"):
        assert key in claims
    info = json.loads(base64.urlsafe_b64decode(answer["client_info"] + "=="))
    assert info == {"uid": claims["oid"], "utid": TENANT}


def test_code_grant_wrong_pkce_verifier(fake):
    _, _, query = authorize(fake.url, verifier="a" * 50)
    status, answer = token_request(fake.url, code_grant(query["code"], "b" * 50))
    assert status == 400
    assert_aad_error(answer, "invalid_grant", 50148)


def test_code_is_single_use(fake):
    _, _, query = authorize(fake.url, verifier="a" * 50)
    status, first = token_request(fake.url, code_grant(query["code"], "a" * 50))
    assert status == 200
    assert "client_info" not in first  # only when client_info=1 was sent
    status, answer = token_request(fake.url, code_grant(query["code"], "a" * 50))
    assert status == 400
    assert_aad_error(answer, "invalid_grant", 54005)


def test_code_expires(fake):
    fake.configure(code_lifetime=0)
    _, _, query = authorize(fake.url, verifier="a" * 50)
    status, answer = token_request(fake.url, code_grant(query["code"], "a" * 50))
    assert status == 400
    assert_aad_error(answer, "invalid_grant", 70008)


def test_code_redemption_redirect_uri_must_match_authorize(fake):
    other = "http://localhost:8069/mail_graph_api/auth/callback"
    _, _, query = authorize(fake.url, verifier="a" * 50)
    status, answer = token_request(fake.url, code_grant(query["code"], "a" * 50, redirect_uri=other))
    assert status == 400
    assert_aad_error(answer, "invalid_grant", 50011)


def test_wrong_secret_is_7000215(fake):
    _, _, query = authorize(fake.url, verifier="a" * 50)
    status, answer = token_request(fake.url, code_grant(query["code"], "a" * 50, client_secret="nope"))
    assert status == 401
    assert_aad_error(answer, "invalid_client", 7000215)
    assert answer["error_description"].startswith(
        "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client "
        "secret value, not the client secret ID"
    )


def test_pasting_the_secret_id_is_7000215(fake):
    status, answer = token_request(
        fake.url,
        {"client_id": CLIENT, "client_secret": DEFAULTS["client_secret_id"], "grant_type": "client_credentials",
         "scope": "https://graph.microsoft.com/.default"},
    )  # fmt: skip
    assert status == 401
    assert answer["error_codes"] == [7000215]


def test_expired_secret_is_7000222(fake):
    fake.configure(client_secret_expired=True)
    status, answer = token_request(
        fake.url,
        {"client_id": CLIENT, "client_secret": SECRET, "grant_type": "client_credentials",
         "scope": "https://graph.microsoft.com/.default"},
    )  # fmt: skip
    assert status == 401
    assert_aad_error(answer, "invalid_client", 7000222)


def test_unknown_client_is_700016(fake):
    status, answer = token_request(
        fake.url,
        {"client_id": str(uuid.uuid4()), "client_secret": SECRET, "grant_type": "client_credentials",
         "scope": "https://graph.microsoft.com/.default"},
    )  # fmt: skip
    assert status == 400
    assert_aad_error(answer, "unauthorized_client", 700016)


# --- refresh tokens ----------------------------------------------------------------------------------


def refresh(fake, token: str, scope: str = "Mail.Send offline_access openid"):
    return token_request(
        fake.url,
        {"client_id": CLIENT, "client_secret": SECRET, "grant_type": "refresh_token", "refresh_token": token,
         "scope": scope},
    )  # fmt: skip


def test_refresh_rotates_and_old_token_keeps_working(fake):
    first = delegated_tokens(fake.url)["refresh_token"]
    status, answer = refresh(fake, first)
    assert status == 200
    second = answer["refresh_token"]
    assert second != first
    assert refresh(fake, first)[0] == 200  # still valid, as on Microsoft
    described = next(t for t in fake.tokens() if t["kind"] == "refresh" and t["token_tail"] == first[-8:])
    assert second[-8:] in described["rotated_to_tails"]


def test_revoked_refresh_token_is_50173(fake):
    token = delegated_tokens(fake.url)["refresh_token"]
    fake.revoke_refresh_tokens()
    status, answer = refresh(fake, token)
    assert status == 400
    assert_aad_error(answer, "invalid_grant", 50173)


def test_refresh_token_expires_after_its_lifetime(fake):
    fake.configure(refresh_token_lifetime=0)
    token = delegated_tokens(fake.url)["refresh_token"]
    status, answer = refresh(fake, token)
    assert status == 400
    assert_aad_error(answer, "invalid_grant", 700082)


def test_unknown_refresh_token_is_invalid_grant(fake):
    status, answer = refresh(fake, "0.garbage")
    assert status == 400 and answer["error"] == "invalid_grant"


def test_no_refresh_token_without_offline_access(fake):
    answer = delegated_tokens(fake.url, scopes="Mail.Send openid")
    assert "refresh_token" not in answer
    assert "id_token" in answer


def test_no_id_token_without_openid(fake):
    answer = delegated_tokens(fake.url, scopes="https://graph.microsoft.com/Mail.Send offline_access")
    assert "id_token" not in answer and answer["refresh_token"]


def test_refresh_scope_not_allowed_is_70011(fake):
    token = delegated_tokens(fake.url)["refresh_token"]
    status, answer = refresh(fake, token, "Sites.FullControl.All offline_access")
    assert status == 400
    assert_aad_error(answer, "invalid_scope", 70011)


def test_token_lifetime_is_configurable(fake):
    fake.configure(token_lifetime=120)
    assert delegated_tokens(fake.url)["expires_in"] == 120


# --- client credentials ------------------------------------------------------------------------------


def test_client_credentials_with_secret(fake):
    status, answer = token_request(
        fake.url,
        {"client_id": CLIENT, "client_secret": SECRET, "grant_type": "client_credentials",
         "scope": "https://graph.microsoft.com/.default"},
    )  # fmt: skip
    assert status == 200
    assert "refresh_token" not in answer and "id_token" not in answer
    assert claims_of(answer["access_token"])["roles"] == DEFAULTS["app_roles"]


def test_client_credentials_needs_dot_default(fake):
    status, answer = token_request(
        fake.url,
        {"client_id": CLIENT, "client_secret": SECRET, "grant_type": "client_credentials", "scope": "Mail.Send"},
    )
    assert status == 400 and answer["error"] == "invalid_scope"


@pytest.mark.parametrize("alg", ["RS256", "PS256"])
def test_client_credentials_with_certificate_assertion(fake, certificate, alg):
    key, pem, der = certificate
    fake.configure(certificates=[pem])
    audience = f"https://127.0.0.1:{fake.port}/{TENANT}/oauth2/v2.0/token"
    status, answer = token_request(
        fake.url,
        {
            "client_id": CLIENT,
            "grant_type": "client_credentials",
            "scope": "https://graph.microsoft.com/.default",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": make_assertion(key, der, audience, alg),
        },
    )
    assert status == 200, answer


def test_assertion_from_unregistered_certificate_is_refused(fake, certificate):
    key, _, der = certificate
    audience = f"https://127.0.0.1:{fake.port}/{TENANT}/oauth2/v2.0/token"
    status, answer = token_request(
        fake.url,
        {
            "client_id": CLIENT,
            "grant_type": "client_credentials",
            "scope": "https://graph.microsoft.com/.default",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": make_assertion(key, der, audience),
        },
    )
    assert status == 401
    assert_aad_error(answer, "invalid_client", 700027)


def test_assertion_with_bad_signature_is_refused(fake, certificate):
    key, pem, der = certificate
    fake.configure(certificates=[pem])
    audience = f"https://127.0.0.1:{fake.port}/{TENANT}/oauth2/v2.0/token"
    assertion = make_assertion(key, der, audience)
    head, body, _ = assertion.split(".")
    forged = head + "." + body + "." + b64url(b"\x00" * 256)
    status, answer = token_request(
        fake.url,
        {"client_id": CLIENT, "grant_type": "client_credentials", "scope": "https://graph.microsoft.com/.default",
         "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
         "client_assertion": forged},
    )  # fmt: skip
    assert status == 401 and answer["error_codes"] == [700027]


def test_no_credential_at_all_is_7000218(fake):
    status, answer = token_request(
        fake.url,
        {"client_id": CLIENT, "grant_type": "client_credentials", "scope": "https://graph.microsoft.com/.default"},
    )
    assert status == 401
    assert_aad_error(answer, "invalid_client", 7000218)
