"""Tokens on msal: authorization code + PKCE, refresh (with rotation handed back), client credentials.

One msal app per (authority, client, credential) and one token cache per process: a batch of mails reuses
a token until 5 minutes before it expires instead of refreshing per mail. msal gets an ``http_client``
built on the shared pooled session (and our timeouts: msal ignores ``timeout=`` once given a client).

msal refuses ``http://`` authorities. For a loopback identity server (tests, the fake) msal is given
``https://127.0.0.1:<port>/<tenant>`` and the http client maps that exact origin back to ``http://``
(loopback only), also turning ``http://`` URLs of the discovery document into ``https://`` so msal accepts
them. Instance discovery is off for hosts that are not Microsoft's.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union
from urllib.parse import urlsplit

import msal

from .clouds import CLOUDS, Cloud, resolve_cloud
from .errors import (
    AuthenticationError,
    ConfigurationError,
    GraphMailError,
    InvalidGrantError,
    ServiceUnavailable,
    Throttled,
    TransportError,
    aadsts_code,
    error_from_token_response,
    hint_for,
)
from .redaction import install_log_redaction, redact, register_secret
from .transport import Transport

_log = logging.getLogger(__name__)

# What sending needs: Mail.Send (own mailbox), Mail.Send.Shared (another mailbox with Send As rights),
# Mail.ReadWrite (drafts for mail over 4 MB, Sent Items lookup), User.Read (identity check).
DEFAULT_DELEGATED_SCOPES: Tuple[str, ...] = ("Mail.Send", "Mail.Send.Shared", "Mail.ReadWrite", "User.Read")
# msal adds these itself and raises if they are passed.
RESERVED_SCOPES = frozenset(("openid", "profile", "offline_access"))
REFRESH_MARGIN = 300.0  # refresh access tokens 5 minutes before they expire

_MICROSOFT_AUTHORITY_HOSTS = frozenset(urlsplit(v[0]).hostname for v in CLOUDS.values()) | frozenset(
    ("login.microsoft.com", "login.windows.net", "login.chinacloudapi.cn", "login.usgovcloudapi.net")
)


class AuthMode(str, Enum):
    DELEGATED = "delegated"  # a user signed in once; we hold their refresh token
    APPLICATION = "application"  # app-only (client credentials), may send as any allowed mailbox

    @classmethod
    def parse(cls, value: Union[str, AuthMode]) -> AuthMode:
        if isinstance(value, AuthMode):
            return value
        text = str(value).strip().lower()
        if text in ("app", "application", "app_only", "client_credentials"):
            return cls.APPLICATION
        if text in ("delegated", "user"):
            return cls.DELEGATED
        raise ConfigurationError(f"Unknown auth mode {value!r}", hint="Use 'delegated' or 'application'.")


@dataclass(frozen=True)
class MailboxCredentials:
    """How to get tokens for one mailbox connection. Secrets are kept out of ``repr``."""

    tenant_id: str
    client_id: str
    client_secret: Optional[str] = field(default=None, repr=False)
    certificate_pem: Optional[str] = field(default=None, repr=False)
    certificate_thumbprint: Optional[str] = None
    mode: AuthMode = AuthMode.DELEGATED
    cloud: Cloud = field(default_factory=resolve_cloud)
    refresh_token: Optional[str] = field(default=None, repr=False)
    scopes: Tuple[str, ...] = DEFAULT_DELEGATED_SCOPES

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", AuthMode.parse(self.mode))
        object.__setattr__(self, "tenant_id", (self.tenant_id or "").strip())
        object.__setattr__(self, "client_id", (self.client_id or "").strip())
        object.__setattr__(self, "scopes", tuple(self.scopes or ()))
        register_secret(self.client_secret, self.refresh_token)
        if not self.tenant_id or "/" in self.tenant_id:
            raise ConfigurationError(
                "The tenant ID is missing or invalid", hint="Use the directory (tenant) ID from Entra ID."
            )
        if not self.client_id:
            raise ConfigurationError(
                "The client ID is missing", hint="Use the application (client) ID of the app registration."
            )
        if not (self.client_secret or self.certificate_pem):
            raise ConfigurationError(
                "No client secret or certificate", hint="Configure the app's client secret or certificate."
            )

    @property
    def authority(self) -> str:
        return self.cloud.authority(self.tenant_id)

    @property
    def graph_scopes(self) -> List[str]:
        """Delegated scopes as msal wants them: no reserved OIDC scopes, qualified for national clouds."""
        return [self.cloud.scope(s) for s in self.scopes if s.lower() not in RESERVED_SCOPES]

    def credential_digest(self) -> str:
        material = "\0".join((self.client_secret or "", self.certificate_pem or "", self.certificate_thumbprint or ""))
        return hashlib.sha256(material.encode("utf-8")).hexdigest()


@dataclass
class TokenSet:
    """An access token (``expires_at`` is an epoch), the newest refresh token and the signed-in account."""

    access_token: str = field(repr=False)
    expires_at: float
    refresh_token: Optional[str] = field(default=None, repr=False)
    account: Optional[str] = None
    scopes: Tuple[str, ...] = ()

    def expires_within(self, seconds: float, now: float) -> bool:
        return now >= self.expires_at - seconds


# -- msal plumbing --------------------------------------------------------------------------------------


class _MsalResponse:
    """The minimal response msal reads: status_code, text, headers, raise_for_status()."""

    def __init__(self, status_code: int, text: str, headers: Mapping[str, str]) -> None:
        self.status_code = status_code
        self.text = text
        self.headers = dict(headers)

    def raise_for_status(self) -> None:
        if self.status_code >= 400:
            raise AuthenticationError(f"Identity platform answered HTTP {self.status_code}")


class MsalHttpClient:
    """msal's ``http_client``: the shared session with token timeouts and the loopback http mapping."""

    def __init__(self, transport: Transport, loopback_origin: Optional[str] = None) -> None:
        self._transport = transport
        self._origin = loopback_origin  # "127.0.0.1:8765" when msal must see https for an http server

    def _wire_url(self, url: str) -> str:
        if self._origin and url.startswith(f"https://{self._origin}/"):
            return "http://" + url[len("https://") :]
        return url

    def _call(self, method: str, url: str, params=None, data=None, headers=None) -> _MsalResponse:
        response = self._transport.request(
            method,
            self._wire_url(url),
            params=params,
            data=data,
            headers=headers,
            read_timeout=self._transport.timeouts.token,
        )
        text = response.text
        if self._origin and method == "GET":
            # Discovery documents list http:// endpoints; msal insists on https://
            text = text.replace(f"http://{self._origin}/", f"https://{self._origin}/")
            text = text.replace(json.dumps(f"http://{self._origin}/")[1:-1], f"https://{self._origin}/")
        return _MsalResponse(response.status_code, text, response.headers)

    def post(self, url: str, params=None, data=None, headers=None, **kwargs: Any) -> _MsalResponse:
        return self._call("POST", url, params=params, data=data, headers=headers)

    def get(self, url: str, params=None, headers=None, **kwargs: Any) -> _MsalResponse:
        return self._call("GET", url, params=params, headers=headers)

    def close(self) -> None:  # msal may call it; the shared session outlives any app
        pass


def _msal_authority(credentials: MailboxCredentials) -> Tuple[str, Optional[str]]:
    """(authority msal accepts, loopback origin to map back to http or None)."""
    authority = credentials.authority
    parts = urlsplit(authority)
    if parts.scheme == "http":  # clouds.check_url allowed it: loopback only
        return "https://" + authority[len("http://") :], parts.netloc
    return authority, None


def _client_credential(credentials: MailboxCredentials) -> Union[str, Dict[str, str]]:
    if credentials.certificate_pem:
        return _certificate_credential(credentials.certificate_pem, credentials.certificate_thumbprint)
    return credentials.client_secret or ""


_KEY_RE = re.compile(r"-----BEGIN ([A-Z ]*)PRIVATE KEY-----.+?-----END \1PRIVATE KEY-----", re.S)
_CERT_RE = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


def _certificate_credential(pem: Union[str, bytes], thumbprint: Optional[str]) -> Dict[str, str]:
    """msal's certificate credential from a PEM holding the private key (and optionally the certificate).

    With a thumbprint msal signs RS256 with ``x5t`` (SHA-1); without one it computes the SHA-256
    thumbprint from the certificate in the PEM (PS256, ``x5t#S256``)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    text = pem.decode("ascii", "replace") if isinstance(pem, bytes) else pem
    key = _KEY_RE.search(text)
    if not key:
        raise ConfigurationError("The certificate PEM has no private key", hint="Give the PEM with its private key.")
    key_pem = key.group(0)
    register_secret(key_pem)
    try:
        serialization.load_pem_private_key(key_pem.encode("ascii"), password=None)
    except (ValueError, TypeError):
        raise ConfigurationError(
            "The certificate's private key cannot be read",
            hint="Give an unencrypted PEM private key (PKCS#8 or RSA).",
        )
    credential = {"private_key": key_pem}
    if thumbprint:
        credential["thumbprint"] = thumbprint.replace(":", "").replace(" ", "").upper()
        return credential
    cert = _CERT_RE.search(text)
    if not cert:
        raise ConfigurationError(
            "No certificate thumbprint and no certificate in the PEM",
            hint="Give the thumbprint shown in Certificates & secrets, or a PEM including the certificate.",
        )
    try:
        x509.load_pem_x509_certificate(cert.group(0).encode("ascii"))
    except ValueError:
        raise ConfigurationError("The certificate in the PEM cannot be read")
    credential["public_certificate"] = cert.group(0)
    return credential


def certificate_expiry(pem: Union[str, bytes]) -> Optional[datetime.datetime]:
    """When the certificate in ``pem`` stops being valid (naive UTC), or None when the PEM holds none."""
    from cryptography import x509

    text = pem.decode("ascii", "replace") if isinstance(pem, bytes) else (pem or "")
    cert = _CERT_RE.search(text)
    if not cert:
        return None
    try:
        certificate = x509.load_pem_x509_certificate(cert.group(0).encode("ascii"))
    except ValueError:
        raise ConfigurationError("The certificate in the PEM cannot be read")
    expiry = getattr(certificate, "not_valid_after_utc", None)  # cryptography 42+; older: naive UTC
    return expiry.replace(tzinfo=None) if expiry is not None else certificate.not_valid_after


@dataclass(frozen=True)
class ExpiringCredential:
    """One credential of the app registration as Graph lists it (never its value). Dates are naive UTC, like
    :func:`certificate_expiry`."""

    key_id: str
    display_name: Optional[str]
    end: Optional[datetime.datetime]
    start: Optional[datetime.datetime] = None
    hint: Optional[str] = None  # client secrets: the first 3 characters of the value
    thumbprint: Optional[str] = None  # certificates: SHA-1 thumbprint, hex (Graph's customKeyIdentifier)

    def expired(self, now: Optional[datetime.datetime] = None) -> bool:
        """Past its end date (``now``: naive UTC, default the current time)."""
        moment = now if now is not None else datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
        return self.end is not None and moment >= self.end


@dataclass(frozen=True)
class CredentialExpiry:
    """The app registration's client secrets and certificates with their end dates (``credential_expiry()``)."""

    app_id: str
    secrets: List[ExpiringCredential] = field(default_factory=list)
    certificates: List[ExpiringCredential] = field(default_factory=list)

    def secret_for(self, secret: str) -> Optional[ExpiringCredential]:
        """The secret whose hint (first 3 characters) matches ``secret``; the one ending first when several do."""
        found = [c for c in self.secrets if c.hint and secret.startswith(c.hint)]
        return _soonest(found)

    def certificate_for(self, thumbprint: str) -> Optional[ExpiringCredential]:
        """The certificate with this SHA-1 thumbprint (hex, any case, ``:`` or spaces allowed)."""
        wanted = re.sub(r"[^0-9a-fA-F]", "", thumbprint or "").upper()
        return next((c for c in self.certificates if (c.thumbprint or "").upper() == wanted), None)

    @property
    def soonest(self) -> Optional[ExpiringCredential]:
        """The credential (secret or certificate) ending first."""
        return _soonest([*self.secrets, *self.certificates])


def _soonest(credentials: List[ExpiringCredential]) -> Optional[ExpiringCredential]:
    dated = [c for c in credentials if c.end is not None]
    if dated:
        return min(dated, key=lambda c: c.end or datetime.datetime.max)
    return credentials[0] if credentials else None


_GRAPH_TIME = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:?\d\d)?$", re.IGNORECASE)


def _graph_time(value: Any) -> Optional[datetime.datetime]:
    """Graph's DateTimeOffset (``2026-01-31T10:00:00Z``, 7 fraction digits or an offset allowed) as naive UTC."""
    match = _GRAPH_TIME.match(value.strip()) if isinstance(value, str) else None
    if match is None:
        return None
    base, fraction, zone = match.groups()
    moment = datetime.datetime.strptime(base, "%Y-%m-%dT%H:%M:%S")
    if fraction:
        moment += datetime.timedelta(microseconds=int(fraction[:6].ljust(6, "0")))
    if zone and zone.upper() != "Z":
        digits = zone[1:].replace(":", "")
        offset = datetime.timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
        moment = moment - offset if zone[0] == "+" else moment + offset
    return moment


def credential_expiry_from_application(payload: Mapping[str, Any], app_id: str = "") -> CredentialExpiry:
    """Read Graph's ``application`` resource (``passwordCredentials``, ``keyCredentials``); unknown shapes are
    skipped rather than trusted."""

    def entries(name: str) -> List[Mapping[str, Any]]:
        value = payload.get(name)
        return [e for e in value if isinstance(e, Mapping)] if isinstance(value, list) else []

    def text(entry: Mapping[str, Any], name: str) -> Optional[str]:
        value = entry.get(name)
        return value if isinstance(value, str) else None

    secrets = [
        ExpiringCredential(
            key_id=text(e, "keyId") or "",
            display_name=text(e, "displayName"),
            end=_graph_time(e.get("endDateTime")),
            start=_graph_time(e.get("startDateTime")),
            hint=text(e, "hint"),
        )
        for e in entries("passwordCredentials")
    ]
    certificates = [
        ExpiringCredential(
            key_id=text(e, "keyId") or "",
            display_name=text(e, "displayName"),
            end=_graph_time(e.get("endDateTime")),
            start=_graph_time(e.get("startDateTime")),
            thumbprint=text(e, "customKeyIdentifier"),
        )
        for e in entries("keyCredentials")
        if e.get("type") in (None, "AsymmetricX509Cert")
    ]
    return CredentialExpiry(text(payload, "appId") or app_id, secrets, certificates)


_apps: Dict[Tuple[str, str, str], msal.ConfidentialClientApplication] = {}
_apps_lock = threading.Lock()


def msal_app(credentials: MailboxCredentials, transport: Transport) -> msal.ConfidentialClientApplication:
    """The process-wide msal app for these credentials; built once (it fetches discovery metadata)."""
    authority, origin = _msal_authority(credentials)
    key = (authority, credentials.client_id, credentials.credential_digest())
    app = _apps.get(key)
    if app is not None:
        return app
    with _apps_lock:
        app = _apps.get(key)
        if app is None:
            host = urlsplit(authority).hostname
            try:
                app = msal.ConfidentialClientApplication(
                    credentials.client_id,
                    client_credential=_client_credential(credentials),
                    authority=authority,
                    http_client=MsalHttpClient(transport, origin),
                    timeout=(transport.timeouts.connect, transport.timeouts.token),
                    instance_discovery=None if host in _MICROSOFT_AUTHORITY_HOSTS else False,
                    token_cache=msal.TokenCache(),
                )
            except GraphMailError as exc:
                raise _token_phase(exc)
            except ValueError as exc:
                raise _discovery_error(exc, credentials)
            except Exception as exc:  # msal choking on a malformed discovery or instance answer
                raise _msal_failure(exc)
            _apps[key] = app
    return app


def _msal_failure(exc: Exception, credentials: Optional[MailboxCredentials] = None) -> GraphMailError:
    """msal raised something of its own (MsalServiceError on a 5xx or 429, or an error on a malformed answer):
    nothing was sent, and the identity platform is the one failing. Forget the msal app: its state may be
    broken, and the next attempt should start clean."""
    if credentials is not None:
        forget_app(credentials)
    text = redact(str(exc))[:300]
    status = _status_in(text)
    if status == 429:
        error: GraphMailError = Throttled(f"The identity platform is throttling sign-ins: {text}", status=429)
    elif status is not None and status >= 500:
        error = ServiceUnavailable(f"The identity platform is unavailable: {text}", status=status)
    else:
        error = ServiceUnavailable(
            f"The identity platform gave an answer msal cannot use ({type(exc).__name__}: {text})",
            hint="A temporary fault at Microsoft or a proxy in between: the mail is retried later.",
        )
    return error.mark_unsent()


def _status_in(text: str) -> Optional[int]:
    match = re.search(r"\b(429|5\d\d)\b", text)
    return int(match.group(1)) if match else None


def forget_app(credentials: MailboxCredentials) -> None:
    authority, _origin = _msal_authority(credentials)
    with _apps_lock:
        _apps.pop((authority, credentials.client_id, credentials.credential_digest()), None)


def _discovery_error(exc: Exception, credentials: MailboxCredentials) -> GraphMailError:
    text = str(exc)
    number = aadsts_code(text)
    if number is None and ("tenant" in text.lower() or "OIDC" in text):
        number = 90002
    return AuthenticationError(
        f"Cannot use the authority for tenant {credentials.tenant_id!r}",
        hint=hint_for(number) if number else "Check the tenant ID and the cloud.",
        code=f"AADSTS{number}" if number else None,
    )


def _token_phase(exc: GraphMailError) -> GraphMailError:
    """A token call cannot send mail: transport failures there are safe to retry later."""
    if isinstance(exc, TransportError):
        exc.message = "Identity platform unreachable: " + exc.message
        exc.args = (exc.message,)
        exc.mark_unsent()
    return exc


def _token_set(result: Mapping[str, Any], now: float, previous_refresh: Optional[str] = None) -> TokenSet:
    claims = result.get("id_token_claims") or {}
    account = claims.get("preferred_username") or claims.get("email") or claims.get("upn")
    token = TokenSet(
        access_token=result["access_token"],
        expires_at=now + float(result.get("expires_in") or 3600),
        refresh_token=result.get("refresh_token") or previous_refresh,
        account=account,
        scopes=tuple(str(result.get("scope") or "").split()),
    )
    register_secret(token.access_token, token.refresh_token)
    return token


def _check(result: Optional[Mapping[str, Any]]) -> Mapping[str, Any]:
    if not result:
        raise AuthenticationError("No token returned by the identity platform")
    if "access_token" not in result:
        raise error_from_token_response(result)
    return result


# -- process-wide token cache ---------------------------------------------------------------------------


class _Entry:
    def __init__(self, refresh_token: Optional[str] = None) -> None:
        self.lock = threading.Lock()
        self.token: Optional[TokenSet] = None
        self.refresh_token = refresh_token
        self.aliases: List[Tuple[Any, ...]] = []


_entries: Dict[Tuple[Any, ...], _Entry] = {}
_entries_lock = threading.Lock()
_MAX_ALIASES = 4  # older refresh-token keys of one mailbox kept resolvable (callers storing late)


def _rt_key(credentials: MailboxCredentials, refresh_token: str) -> Tuple[Any, ...]:
    digest = hashlib.sha256(refresh_token.encode("utf-8")).hexdigest()
    return ("delegated", credentials.authority, credentials.client_id, digest)


def _entry_for(credentials: MailboxCredentials, refresh_token: Optional[str] = None) -> _Entry:
    if credentials.mode is AuthMode.APPLICATION:
        key: Tuple[Any, ...] = (
            "application",
            credentials.authority,
            credentials.client_id,
            credentials.credential_digest(),
        )
    else:
        refresh_token = refresh_token or credentials.refresh_token
        if not refresh_token:
            raise InvalidGrantError(
                "No refresh token for this mailbox: re-authentication needed",
                hint="Sign in to connect the mailbox (delegated mode).",
            )
        key = _rt_key(credentials, refresh_token)
    with _entries_lock:
        entry = _entries.get(key)
        if entry is None:
            entry = _entries[key] = _Entry(refresh_token)
            entry.aliases.append(key)
        return entry


def _alias(entry: _Entry, key: Tuple[Any, ...]) -> None:
    """Make ``key`` (a rotated refresh token's) find ``entry``; forget the oldest aliases."""
    with _entries_lock:
        _entries[key] = entry
        if key not in entry.aliases:
            entry.aliases.append(key)
        while len(entry.aliases) > _MAX_ALIASES:
            _entries.pop(entry.aliases.pop(0), None)


def clear_caches() -> None:
    """Forget every cached token and msal app (tests, credential changes)."""
    with _entries_lock:
        _entries.clear()
    with _apps_lock:
        _apps.clear()


RefreshCallback = Callable[[str, TokenSet], None]


class TokenProvider:
    """Hands out a valid access token for one mailbox connection.

    ``on_refresh_token(new_refresh_token, token_set)`` is called whenever Microsoft rotates the refresh
    token: store it, it is the one to use next time. ``clock`` is wall-clock epoch seconds.
    """

    def __init__(
        self,
        credentials: MailboxCredentials,
        on_refresh_token: Optional[RefreshCallback] = None,
        clock: Callable[[], float] = time.time,
        transport: Optional[Transport] = None,
    ) -> None:
        install_log_redaction()
        self.credentials = credentials
        self.on_refresh_token = on_refresh_token
        self.clock = clock
        self.transport = transport or Transport()

    def token(self) -> TokenSet:
        entry = _entry_for(self.credentials)
        with entry.lock:
            cached = entry.token
            if cached is not None and not cached.expires_within(REFRESH_MARGIN, self.clock()):
                return cached
            token = self._acquire(entry)
            entry.token = token
            return token

    def access_token(self) -> str:
        return self.token().access_token

    @property
    def account(self) -> Optional[str]:
        return self.token().account

    def invalidate(self, access_token: Optional[str] = None) -> None:
        """Drop the cached access token (after a 401) so the next call fetches a new one.

        With ``access_token``, only if it is still the cached one (another thread may have refreshed)."""
        try:
            entry = _entry_for(self.credentials)
        except GraphMailError:
            return
        with entry.lock:
            if entry.token is not None and access_token in (None, entry.token.access_token):
                entry.token = None

    def _acquire(self, entry: _Entry) -> TokenSet:
        credentials = self.credentials
        app = msal_app(credentials, self.transport)
        now = self.clock()
        try:
            if credentials.mode is AuthMode.APPLICATION:
                app.remove_tokens_for_client()  # our cache decides when to fetch, not msal's
                result = _check(app.acquire_token_for_client(scopes=[credentials.cloud.default_scope]))
                return _token_set(result, now)
            used = entry.refresh_token or credentials.refresh_token
            assert used is not None  # _entry_for refuses delegated entries without one
            result = _check(app.acquire_token_by_refresh_token(used, scopes=credentials.graph_scopes))
        except GraphMailError as exc:
            raise _token_phase(exc)
        except ValueError as exc:  # msal's own validation (bad key, bad scopes)
            raise ConfigurationError(f"Token request refused by msal: {exc}")
        except Exception as exc:
            raise _msal_failure(exc, credentials)
        token = _token_set(result, now, previous_refresh=used)
        if token.refresh_token and token.refresh_token != used:
            entry.refresh_token = token.refresh_token
            _alias(entry, _rt_key(credentials, token.refresh_token))
            if self.on_refresh_token is not None:
                try:
                    self.on_refresh_token(token.refresh_token, token)
                except Exception:
                    # The previous refresh token stays valid; do not fail the mail for a storage error.
                    _log.exception("Storing the rotated refresh token failed")
        return token


class DelegatedAuthFlow:
    """Authorization code flow with PKCE for one mailbox connection.

    ``start(state)`` gives the URL to send the browser to and a flow dict to keep server-side until the
    callback; ``finish(flow, query_params)`` redeems the code and returns the tokens (store the refresh
    token)."""

    def __init__(
        self,
        credentials: MailboxCredentials,
        redirect_uri: str,
        transport: Optional[Transport] = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        install_log_redaction()
        self.credentials = credentials
        self.redirect_uri = redirect_uri
        self.transport = transport or Transport()
        self.clock = clock

    def start(
        self,
        state: str,
        login_hint: Optional[str] = None,
        prompt: Optional[str] = None,
        response_mode: Optional[str] = None,
    ) -> Tuple[str, Dict[str, Any]]:
        """``state`` is the caller's (signed, bound to user/database/server); ``prompt`` e.g.
        ``select_account``; ``response_mode="form_post"`` makes Microsoft POST the answer to the callback."""
        app = msal_app(self.credentials, self.transport)
        flow = app.initiate_auth_code_flow(
            scopes=self.credentials.graph_scopes,
            redirect_uri=self.redirect_uri,
            state=state,
            login_hint=login_hint,
            prompt=prompt,
            response_mode=response_mode,
        )
        url = flow["auth_uri"]
        _, origin = _msal_authority(self.credentials)
        if origin and url.startswith(f"https://{origin}/"):
            url = "http://" + url[len("https://") :]  # the browser talks to the loopback server directly
        return url, flow

    def finish(self, flow: Mapping[str, Any], query_params: Mapping[str, Any]) -> TokenSet:
        params = dict(query_params)
        if params.get("error"):
            raise error_from_token_response(params)
        if not flow or params.get("state") != flow.get("state"):
            raise AuthenticationError(
                "The sign-in answer does not match the sign-in request (state mismatch)",
                hint="Start the sign-in again from the same browser session.",
            )
        app = msal_app(self.credentials, self.transport)
        now = self.clock()
        try:
            result = _check(
                app.acquire_token_by_auth_code_flow(dict(flow), params, scopes=self.credentials.graph_scopes)
            )
        except GraphMailError as exc:
            raise _token_phase(exc)
        except ValueError as exc:
            raise AuthenticationError(f"The sign-in answer was refused: {exc}", hint="Start the sign-in again.")
        except Exception as exc:
            raise _msal_failure(exc, self.credentials)
        token = _token_set(result, now)
        if token.refresh_token:
            entry = _entry_for(self.credentials, token.refresh_token)
            with entry.lock:
                entry.token = token
                entry.refresh_token = token.refresh_token
        return token
