"""Shortcuts for tests: obtain tokens from a running fake through its real endpoints (standard library only).

They drive the same authorize and token endpoints a client would, so the call log shows them too.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import urllib.error
import urllib.request
from typing import Any, Dict, Optional, Tuple
from urllib.parse import parse_qs, urlencode, urlsplit

from .defaults import DEFAULTS

DELEGATED_SCOPES = "Mail.Send Mail.Send.Shared Mail.ReadWrite Mail.Read User.Read offline_access openid profile"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _open(request: urllib.request.Request) -> Tuple[int, Dict[str, str], bytes]:
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(request, timeout=10) as answer:
            return answer.status, dict(answer.headers.items()), answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers.items()), exc.read()


def token_request(base_url: str, form: Dict[str, str], tenant: Optional[str] = None) -> Tuple[int, Dict[str, Any]]:
    """POST the form to the token endpoint; (status, JSON answer)."""
    url = f"{base_url}/{tenant or DEFAULTS['tenant_id']}/oauth2/v2.0/token"
    request = urllib.request.Request(url, data=urlencode(form).encode(), method="POST")  # noqa: S310
    request.add_header("Content-Type", "application/x-www-form-urlencoded")
    status, _, body = _open(request)
    return status, json.loads(body)


def authorize(
    base_url: str,
    scopes: str = DELEGATED_SCOPES,
    login_hint: Optional[str] = None,
    redirect_uri: Optional[str] = None,
    state: str = "xyz",
    nonce: Optional[str] = None,
    verifier: Optional[str] = None,
    extra: Optional[Dict[str, str]] = None,
) -> Tuple[int, Dict[str, str], Dict[str, str]]:
    """GET the authorize endpoint without following the redirect: (status, headers, redirect query)."""
    params = {
        "client_id": DEFAULTS["client_id"],
        "response_type": "code",
        "redirect_uri": redirect_uri or DEFAULTS["redirect_uris"][0],
        "scope": scopes,
        "state": state,
    }
    if nonce is not None:
        params["nonce"] = nonce
    if verifier is not None:
        digest = hashlib.sha256(verifier.encode("ascii")).digest()
        params["code_challenge"] = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        params["code_challenge_method"] = "S256"
    if login_hint is not None:
        params["login_hint"] = login_hint
    params.update(extra or {})
    url = f"{base_url}/{DEFAULTS['tenant_id']}/oauth2/v2.0/authorize?{urlencode(params)}"
    status, headers, _ = _open(urllib.request.Request(url))  # noqa: S310 - loopback URL
    location = headers.get("Location", "")
    query = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
    return status, headers, query


def delegated_tokens(base_url: str, scopes: str = DELEGATED_SCOPES, login_hint: Optional[str] = None) -> Dict[str, Any]:
    """Authorization code + PKCE with the default secret; the token endpoint's JSON answer."""
    verifier = secrets.token_urlsafe(48)
    status, _, query = authorize(base_url, scopes, login_hint=login_hint, verifier=verifier)
    if status != 302 or "code" not in query:
        raise RuntimeError(f"authorize refused: {status} {query}")
    status, answer = token_request(
        base_url,
        {
            "client_id": DEFAULTS["client_id"],
            "client_secret": DEFAULTS["client_secret"],
            "grant_type": "authorization_code",
            "code": query["code"],
            "redirect_uri": DEFAULTS["redirect_uris"][0],
            "code_verifier": verifier,
            "client_info": "1",
        },
    )
    if status != 200:
        raise RuntimeError(f"token refused: {status} {answer}")
    return answer


def delegated_token(base_url: str, scopes: str = DELEGATED_SCOPES, login_hint: Optional[str] = None) -> str:
    return str(delegated_tokens(base_url, scopes, login_hint)["access_token"])


def app_token(base_url: str) -> str:
    """Client credentials with the default secret."""
    status, answer = token_request(
        base_url,
        {
            "client_id": DEFAULTS["client_id"],
            "client_secret": DEFAULTS["client_secret"],
            "grant_type": "client_credentials",
            "scope": "https://graph.microsoft.com/.default",
        },
    )
    if status != 200:
        raise RuntimeError(f"token refused: {status} {answer}")
    return str(answer["access_token"])


def self_signed_certificate(common_name: str = "graph-mail-test") -> Tuple[Any, Any]:
    """A fresh RSA key and a self-signed certificate valid for a month: what an admin uploads to an app."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return key, cert


def assert_graph_error(answer: Any, status: int, code: str) -> Dict[str, Any]:
    """A Graph error answer (a ``requests`` response) as Graph shapes it: status, code and the request id inside
    the body matching the header. Returns the body's ``error``."""
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert error["code"] == code
    assert error["innerError"]["request-id"] == answer.headers["request-id"]
    return error
