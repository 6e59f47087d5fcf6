"""Identity platform (Entra ID v2.0): discovery, authorize, token; errors worded like AADSTS's."""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import secrets
import uuid
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import unquote_plus, urlsplit

from . import directory, jwt
from .state import AccessToken, AuthCode, Fault, RefreshToken, State, new_id
from .web import AadError, AadErrorPage, AadRedirectError, Request, Response, json_response, redirect

OIDC_SCOPES = ("openid", "profile", "offline_access", "email")
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
GRAPH_RESOURCES = (
    "https://graph.microsoft.com",
    "https://graph.microsoft.us",
    "https://dod-graph.microsoft.us",
    "https://microsoftgraph.chinacloudapi.cn",
    GRAPH_APP_ID,
)
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
MULTI_TENANT_ALIASES = ("common", "organizations", "consumers")

# Default wording for authorize errors injected through a fault (error -> AADSTS code, message).
AUTHORIZE_ERRORS: Dict[str, Tuple[int, str]] = {
    "access_denied": (65004, "User declined to consent to access the app."),
    "consent_required": (
        65001,
        "The user or administrator has not consented to use the application with ID '{client_id}' named "
        "'{client_name}'. Send an interactive authorization request for this user and resource.",
    ),
    "interaction_required": (
        50076,
        "Due to a configuration change made by your administrator, or because you moved to a new location, "
        "you must use multi-factor authentication to access '{resource}'.",
    ),
    "invalid_request": (900144, "The request body must contain the following parameter: 'scope'."),
    "server_error": (50000, "There was an error issuing a token or an issue with our sign-in service."),
    "temporarily_unavailable": (
        50196,
        "The server terminated an operation because it encountered a client request loop.",
    ),
}


# --- helpers ---------------------------------------------------------------------------------------


def _resolve_tenant(state: State, tenant: str, error_cls: type = AadError, error: str = "invalid_request") -> str:
    """The tenant id for a path segment (id or domain), or Microsoft's refusal."""
    config = state.config
    if state.tenant_matches(tenant):
        return config["tenant_id"]
    if tenant.lower() in MULTI_TENANT_ALIASES:
        if config["multi_tenant"]:
            return config["tenant_id"]
        raise error_cls(
            400,
            "invalid_request",
            50194,
            f"Application '{config['client_id']}'({config['client_name']}) is not configured as a "
            "multi-tenant application. Usage of the /common endpoint is not supported for such applications "
            "created after '10/15/2018'. Use a tenant-specific endpoint or configure the application to be "
            "multi-tenant.",
        )
    raise error_cls(
        400,
        error,
        90002,
        f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into "
        "the correct cloud. Check with your subscription administrator, this may happen if there are no "
        "active subscriptions for the tenant.",
    )


def _unknown_client(state: State, client_id: str) -> str:
    return (
        f"Application with identifier '{client_id}' was not found in the directory "
        f"'{state.config['tenant_name']}'. This can happen if the application has not been installed by the "
        "administrator of the tenant or consented to by any user in the tenant. You may have sent your "
        "authentication request to the wrong tenant."
    )


def _missing(name: str) -> AadError:
    return AadError(400, "invalid_request", 900144, f"The request body must contain the following parameter: '{name}'.")


def _strip_resource(scope: str, request: Request) -> Optional[str]:
    """``https://graph.microsoft.com/Mail.Send`` -> ``Mail.Send``; None for another resource."""
    lowered = scope.lower()
    resources = (*GRAPH_RESOURCES, request.http_base, request.https_base)
    for resource in resources:
        prefix = resource.lower() + "/"
        if lowered.startswith(prefix):
            return scope[len(prefix) :]
    if "://" in scope or "/" in scope:
        return None
    return scope


def _delegated_scopes(state: State, request: Request, raw: str) -> List[str]:
    """Validate a space-separated delegated scope list; return it normalized to the registered casing."""
    allowed = {s.lower(): s for s in state.config["delegated_scopes"]}
    result: List[str] = []
    for scope in raw.split():
        if scope.lower() in OIDC_SCOPES:
            name: Optional[str] = scope.lower()
        else:
            name = _strip_resource(scope, request)
        if name == ".default":
            result.extend(s for s in state.config["delegated_scopes"] if s.lower() not in OIDC_SCOPES)
            continue
        if name is None or name.lower() not in allowed:
            raise AadError(
                400,
                "invalid_scope",
                70011,
                f"The provided request must include a 'scope' input parameter. The provided value for the "
                f"input parameter 'scope' is not valid. The scope '{scope}' is not valid or not granted to "
                f"application '{state.config['client_id']}'.",
            )
        if name.lower() in OIDC_SCOPES:
            result.append(name.lower())
        else:
            result.append(allowed[name.lower()])
    unique: List[str] = []
    for scope in result:
        if scope not in unique:
            unique.append(scope)
    return unique


def _resource_scopes(scopes: List[str]) -> List[str]:
    return [s for s in scopes if s.lower() not in OIDC_SCOPES]


def _now(state: State) -> float:
    return state.clock()


def _service_principal_id(client_id: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "fake-microsoft-sp:" + client_id))


# --- discovery -------------------------------------------------------------------------------------


def openid_configuration(state: State, request: Request, tenant: str) -> Response:
    with state.lock:
        if tenant.lower() in MULTI_TENANT_ALIASES:
            segment, issuer_tenant = tenant.lower(), "{tenantid}"
        else:
            segment = issuer_tenant = _resolve_tenant(state, tenant, error="invalid_tenant")
    base = request.https_base
    document = {
        "token_endpoint": f"{base}/{segment}/oauth2/v2.0/token",
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": f"{base}/{segment}/discovery/v2.0/keys",
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": f"{base}/{issuer_tenant}/v2.0",
        "request_uri_parameter_supported": False,
        "userinfo_endpoint": f"{request.http_base}/oidc/userinfo",
        "authorization_endpoint": f"{base}/{segment}/oauth2/v2.0/authorize",
        "device_authorization_endpoint": f"{base}/{segment}/oauth2/v2.0/devicecode",
        "http_logout_supported": True,
        "frontchannel_logout_supported": True,
        "end_session_endpoint": f"{base}/{segment}/oauth2/v2.0/logout",
        "claims_supported": [
            "sub",
            "iss",
            "cloud_instance_name",
            "cloud_instance_host_name",
            "cloud_graph_host_name",
            "msgraph_host",
            "aud",
            "exp",
            "iat",
            "auth_time",
            "acr",
            "nonce",
            "preferred_username",
            "name",
            "tid",
            "ver",
            "at_hash",
            "c_hash",
            "email",
        ],
        "kerberos_endpoint": f"{base}/{segment}/kerberos",
        "tenant_region_scope": "EU",
        "cloud_instance_name": "microsoftonline.com",
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": request.host,
        "rbac_url": "https://pas.windows.net",
    }
    return json_response(200, document)


def keys(state: State, request: Request, tenant: str) -> Response:
    with state.lock:
        if tenant.lower() not in MULTI_TENANT_ALIASES:
            _resolve_tenant(state, tenant, error="invalid_tenant")
    return json_response(200, jwt.jwks())


def instance_discovery(state: State, request: Request) -> Response:
    """msal's instance discovery: which hosts are aliases, where the tenant's metadata lives.

    msal names the authority by hostname only (it drops the port), so the answer points at the host
    that was actually asked, port included.
    """
    endpoint = request.arg("authorization_endpoint")
    if not endpoint:
        raise _missing("authorization_endpoint")
    parts = urlsplit(endpoint)
    segments = [s for s in parts.path.split("/") if s]
    asked_host = request.host.rsplit(":", 1)[0] if request.host else ""
    if (
        parts.scheme != "https"
        or not segments
        or parts.hostname not in (asked_host, "127.0.0.1", "localhost", "::1", "login.microsoftonline.com")
    ):
        raise AadError(400, "invalid_instance", 50049, "Unknown or invalid instance.")
    hosts: List[str] = []
    for host in (parts.hostname, asked_host):
        if host and host not in hosts:
            hosts.append(host)
    payload = {
        "tenant_discovery_endpoint": f"{request.https_base}/{segments[0]}/v2.0/.well-known/openid-configuration",
        "api-version": "1.1",
        "metadata": [{"preferred_network": h, "preferred_cache": h, "aliases": [h]} for h in hosts],
    }
    return json_response(200, payload)


# --- authorize -------------------------------------------------------------------------------------


def authorize(state: State, request: Request, tenant: str, fault: Optional[Fault] = None) -> Response:
    with state.lock:
        config = state.config
        _resolve_tenant(state, tenant, error_cls=AadErrorPage)
        client_id = request.arg("client_id")
        if not client_id:
            raise AadErrorPage(
                400, "invalid_request", 900144, "The request body must contain the following parameter: 'client_id'."
            )
        if client_id != config["client_id"]:
            raise AadErrorPage(400, "unauthorized_client", 700016, _unknown_client(state, client_id))
        redirect_uri = request.arg("redirect_uri")
        if not redirect_uri or redirect_uri not in config["redirect_uris"]:
            raise AadErrorPage(
                400,
                "invalid_request",
                50011,
                f"The redirect URI '{redirect_uri or ''}' specified in the request does not match the redirect "
                f"URIs configured for the application '{client_id}'. Make sure the redirect URI sent in the "
                "request matches one added to your application in the Azure portal. Navigate to "
                "https://aka.ms/redirectUriMismatchError to learn more about how to fix this.",
            )
        state_param = request.arg("state")
        mode = request.arg("response_mode") or "query"
        if mode not in ("query", "fragment", "form_post"):
            mode = "query"

        def refuse(error: str, aadsts: int, message: str) -> AadRedirectError:
            return AadRedirectError(error, aadsts, message, redirect_uri or "", state_param, mode)

        if fault is not None and fault.action == "authorize_error":
            error = fault.error or "access_denied"
            default_code, default_message = AUTHORIZE_ERRORS.get(error, (65001, "The request was refused."))
            message = fault.error_description or fault.message or default_message
            message = message.format(client_id=client_id, client_name=config["client_name"], resource=GRAPH_APP_ID)
            raise refuse(error, fault.aadsts or default_code, message)
        if request.arg("response_type") != "code":
            raise refuse(
                "unsupported_response_type",
                700054,
                f"response_type '{request.arg('response_type') or ''}' is not enabled for the application.",
            )
        raw_scope = request.arg("scope")
        if not raw_scope:
            raise refuse("invalid_request", 900144, "The request body must contain the following parameter: 'scope'.")
        try:
            scopes = _delegated_scopes(state, request, raw_scope)
        except AadError as exc:
            raise refuse(exc.error, exc.aadsts, exc.message)
        challenge = request.arg("code_challenge")
        method = request.arg("code_challenge_method")
        if challenge is not None:
            method = method or "plain"
            if method not in ("S256", "plain"):
                raise refuse("invalid_request", 501491, f"Invalid code_challenge_method '{method}'.")
            if not 43 <= len(challenge) <= 128:
                raise refuse("invalid_request", 501491, "Invalid size of Code_Challenge parameter.")
        hint = request.arg("login_hint")
        user = state.find_user(hint) if hint else None
        if user is None:
            user = state.find_user(config["signed_in_user"])
        if user is None:
            raise refuse("invalid_request", 50034, "The user account does not exist in the directory.")
        now = _now(state)
        code = AuthCode(
            code="1.AQ" + secrets.token_urlsafe(48),
            client_id=client_id,
            redirect_uri=redirect_uri,
            scopes=scopes,
            user=user["userPrincipalName"],
            nonce=request.arg("nonce"),
            code_challenge=challenge,
            code_challenge_method=method if challenge is not None else None,
            issued_at=now,
            expires_at=now + float(config["code_lifetime"]),
        )
        state.codes[code.code] = code
    params = {"code": code.code}
    if state_param is not None:
        params["state"] = state_param
    params["session_state"] = str(uuid.uuid4())
    return redirect(redirect_uri, params, mode)


# --- token -----------------------------------------------------------------------------------------


def token(state: State, request: Request, tenant: str) -> Response:
    with state.lock:
        tid = _resolve_tenant(state, tenant)
        if request.media_type() != "application/x-www-form-urlencoded":
            raise _missing("grant_type")
        form = request.form()
        basic_id, basic_secret = _basic_credentials(request)
        client_id = form.get("client_id") or basic_id
        grant_type = form.get("grant_type")
        if not grant_type:
            raise _missing("grant_type")
        if not client_id:
            raise _missing("client_id")
        if client_id != state.config["client_id"]:
            raise AadError(400, "unauthorized_client", 700016, _unknown_client(state, client_id))
        if grant_type not in ("authorization_code", "refresh_token", "client_credentials"):
            raise AadError(
                400, "unsupported_grant_type", 70003, f"The app requested an unsupported grant type '{grant_type}'."
            )
        _authenticate_client(state, request, form, basic_secret, tenant)
        if grant_type == "authorization_code":
            payload = _redeem_code(state, request, form, tid)
        elif grant_type == "refresh_token":
            payload = _redeem_refresh_token(state, request, form, tid)
        else:
            payload = _client_credentials(state, request, form, tid)
    return json_response(200, payload, [("Cache-Control", "no-store, no-cache"), ("Pragma", "no-cache")])


def _basic_credentials(request: Request) -> Tuple[Optional[str], Optional[str]]:
    header = request.header("authorization") or ""
    if not header.lower().startswith("basic "):
        return None, None
    try:
        decoded = base64.b64decode(header[6:].strip()).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None, None
    client_id, _, secret = decoded.partition(":")
    return unquote_plus(client_id), unquote_plus(secret)


def _authenticate_client(
    state: State, request: Request, form: Dict[str, str], basic_secret: Optional[str], tenant: str
) -> None:
    """A confidential client proves itself with its secret or a certificate-signed assertion."""
    config = state.config
    client_id = config["client_id"]
    assertion = form.get("client_assertion")
    secret = form.get("client_secret", basic_secret)
    if assertion is not None:
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            raise AadError(
                400,
                "invalid_request",
                700026,
                f"Client assertion type '{form.get('client_assertion_type') or ''}' is not supported; use "
                f"'{ASSERTION_TYPE}'.",
            )
        _verify_assertion(state, assertion, tenant)
        return
    if secret is None:
        raise AadError(
            401,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        )
    if not secrets.compare_digest(secret.encode("utf-8"), config["client_secret"].encode("utf-8")):
        raise AadError(
            401,
            "invalid_client",
            7000215,
            "Invalid client secret provided. Ensure the secret being sent in the request is the client secret "
            f"value, not the client secret ID, for a secret added to app '{client_id}'.",
        )
    if directory.secret_expired(state):
        raise AadError(
            401,
            "invalid_client",
            7000222,
            f"The provided client secret keys for app '{client_id}' are expired. Visit the Azure portal to "
            "create new keys for your app: https://aka.ms/NewClientSecret, or consider using certificate "
            "credentials for added security: https://aka.ms/certCreds.",
        )


def _verify_assertion(state: State, assertion: str, tenant: str) -> None:
    client_id = state.config["client_id"]
    try:
        header, claims, signing_input, signature = jwt.split(assertion)
    except ValueError:
        raise AadError(400, "invalid_request", 50027, "JWT token is invalid or malformed.")
    cert, thumbprint = jwt.find_certificate(header, state.config["certificates"])
    if cert is None:
        raise AadError(
            401,
            "invalid_client",
            700027,
            "The certificate with identifier used to sign the client assertion is not registered on "
            f"application. [Reason - The key was not found., Thumbprint of key used by client: '{thumbprint}', "
            "Please visit the Azure Portal, Graph Explorer or directly use MS Graph to see configured keys for "
            f"app Id '{client_id}'.]",
        )
    now = _now(state)
    if cert.not_valid_after < now:
        # Entra ID does not verify with a key past its end date; worded as Microsoft's (Learn) samples show it.
        raise AadError(
            401,
            "invalid_client",
            700027,
            "Client assertion contains an invalid signature. [Reason - The key used is expired., Thumbprint of "
            f"key used by client: '{cert.sha1.hex().upper()}', Found key 'Start={_stamp(cert.not_valid_before)}, "
            f"End={_stamp(cert.not_valid_after)}', Please visit the Azure Portal, Graph Explorer or directly use MS "
            f"Graph to see configured keys for app Id '{client_id}'.]",
        )
    if not cert.verify(str(header.get("alg")), signing_input, signature):
        raise AadError(401, "invalid_client", 700027, "Client assertion failed signature validation.")
    if claims.get("iss") != client_id or claims.get("sub") != client_id:
        raise AadError(
            401,
            "invalid_client",
            700023,
            "Client assertion's issuer and subject must both be the client id of the application.",
        )
    audience = claims.get("aud")
    audiences = audience if isinstance(audience, list) else [audience]
    if not any(_is_token_endpoint(state, a) for a in audiences):
        raise AadError(
            401,
            "invalid_client",
            700021,
            f"Client assertion audience claim does not match Realm issuer. Audience: '{audience}'.",
        )
    exp = claims.get("exp")
    nbf = claims.get("nbf", 0)
    if not isinstance(exp, (int, float)) or exp < now - 300 or (isinstance(nbf, (int, float)) and nbf > now + 300):
        raise AadError(401, "invalid_client", 700024, "Client assertion is not within its valid time range.")


def _is_token_endpoint(state: State, audience: Any) -> bool:
    if not isinstance(audience, str):
        return False
    segments = [s for s in urlsplit(audience).path.split("/") if s]
    return (
        len(segments) == 4
        and segments[1:] == ["oauth2", "v2.0", "token"]
        and (state.tenant_matches(segments[0]) or segments[0].lower() in MULTI_TENANT_ALIASES)
    )


def _redeem_code(state: State, request: Request, form: Dict[str, str], tid: str) -> Dict[str, Any]:
    value = form.get("code")
    if not value:
        raise _missing("code")
    code = state.codes.get(value)
    if code is None:
        raise AadError(400, "invalid_grant", 9002313, "Invalid request. Request is malformed or invalid.")
    if code.redeemed:
        raise AadError(
            400,
            "invalid_grant",
            54005,
            "OAuth2 Authorization code was already redeemed, please retry with a new valid code or use an "
            "existing refresh token.",
        )
    if _now(state) >= code.expires_at:
        raise AadError(
            400,
            "invalid_grant",
            70008,
            "The provided authorization code or refresh token has expired due to inactivity. Send a new "
            "interactive authorization request for this user and resource.",
        )
    if code.client_id != form.get("client_id", code.client_id):
        raise AadError(
            400,
            "invalid_grant",
            700005,
            "Provided Authorization Code is intended to use against other tenant, thus rejected.",
        )
    redirect_uri = form.get("redirect_uri")
    if not redirect_uri:
        raise _missing("redirect_uri")
    if redirect_uri != code.redirect_uri:
        raise AadError(
            400,
            "invalid_grant",
            50011,
            f"The redirect URI '{redirect_uri}' specified in the request does not match the redirect URI "
            f"'{code.redirect_uri}' used when the authorization code was requested.",
        )
    if code.code_challenge is not None:
        verifier = form.get("code_verifier") or ""
        if code.code_challenge_method == "S256":
            expected = jwt.b64url(hashlib.sha256(verifier.encode("ascii", "replace")).digest())
        else:
            expected = verifier
        if not secrets.compare_digest(expected.encode(), code.code_challenge.encode()):
            raise AadError(
                400,
                "invalid_grant",
                50148,
                "The code_verifier does not match the code_challenge supplied in the authorization request for PKCE.",
            )
    if form.get("scope"):
        _delegated_scopes(state, request, form["scope"])  # must still be valid; the grant is the code's
    code.redeemed = True
    return _delegated_tokens(
        state, request, tid, code.user, code.scopes, code.scopes, code.nonce, form.get("client_info") == "1"
    )


def _redeem_refresh_token(state: State, request: Request, form: Dict[str, str], tid: str) -> Dict[str, Any]:
    value = form.get("refresh_token")
    if not value:
        raise _missing("refresh_token")
    grant = state.refresh_tokens.get(value)
    if grant is None:
        raise AadError(400, "invalid_grant", 9002313, "Invalid request. Request is malformed or invalid.")
    if grant.client_id != form.get("client_id", grant.client_id):
        raise AadError(400, "invalid_grant", 70000, "Provided grant is invalid or malformed.")
    if grant.revoked:
        issued = _stamp(grant.issued_at)
        raise AadError(
            400,
            "invalid_grant",
            50173,
            "The provided grant has expired due to it being revoked, a fresh auth token is needed. The user "
            f"might have changed or reset their password. The grant was issued on '{issued}' and the "
            f"TokensValidFrom date (before which tokens are not valid) for this user is '{_stamp(_now(state))}'.",
        )
    if _now(state) >= grant.expires_at:
        raise AadError(
            400,
            "invalid_grant",
            700082,
            f"The refresh token has expired due to inactivity. The token was issued on '{_stamp(grant.issued_at)}' "
            "and was inactive for 90.00:00:00.",
        )
    requested = _delegated_scopes(state, request, form["scope"]) if form.get("scope") else list(grant.scopes)
    grant.uses += 1
    # The grant keeps what was consented; the access token carries what this refresh asked for.
    oidc = [s for s in grant.scopes if s in OIDC_SCOPES]
    access_scopes = _resource_scopes(requested) or _resource_scopes(grant.scopes)
    payload = _delegated_tokens(
        state,
        request,
        tid,
        grant.user,
        access_scopes + oidc,
        grant.scopes,
        None,
        form.get("client_info") == "1",
        parent=grant,
    )
    return payload


def _client_credentials(state: State, request: Request, form: Dict[str, str], tid: str) -> Dict[str, Any]:
    scope = form.get("scope")
    if not scope:
        raise _missing("scope")
    parts = scope.split()
    if len(parts) != 1 or not parts[0].endswith("/.default"):
        raise AadError(
            400,
            "invalid_scope",
            1002012,
            f"The provided value for scope {scope} is not valid. Client credential flows must have a scope "
            "value with /.default suffixed to the resource identifier (application ID URI).",
        )
    if _strip_resource(parts[0], request) != ".default":
        resource = parts[0][: -len("/.default")]
        raise AadError(
            400,
            "invalid_resource",
            500011,
            f"The resource principal named {resource} was not found in the tenant named "
            f"{state.config['tenant_name']}. This can happen if the application has not been installed by the "
            "administrator of the tenant or consented to by any user in the tenant.",
        )
    now = _now(state)
    lifetime = int(state.config["token_lifetime"])
    client_id = state.config["client_id"]
    roles = list(state.config["app_roles"])
    claims = {
        "aud": "https://graph.microsoft.com",
        "iss": f"https://sts.windows.net/{tid}/",
        "iat": int(now),
        "nbf": int(now),
        "exp": int(now + lifetime),
        "app_displayname": state.config["client_name"],
        "appid": client_id,
        "idtyp": "app",
        "oid": _service_principal_id(client_id),
        "roles": roles,
        "sub": _service_principal_id(client_id),
        "tid": tid,
        "uti": secrets.token_urlsafe(16),
        "ver": "1.0",
    }
    access = AccessToken(jwt.encode(claims), "app", client_id, None, [], roles, now, now + lifetime)
    state.access_tokens[access.token] = access
    return {
        "token_type": "Bearer",
        "expires_in": lifetime,
        "ext_expires_in": lifetime,
        "access_token": access.token,
    }


def _delegated_tokens(
    state: State,
    request: Request,
    tid: str,
    upn: str,
    scopes: List[str],
    grant_scopes: List[str],
    nonce: Optional[str],
    client_info: bool,
    parent: Optional[RefreshToken] = None,
) -> Dict[str, Any]:
    config = state.config
    user = state.find_user(upn) or {"id": str(uuid.uuid5(uuid.NAMESPACE_URL, upn)), "userPrincipalName": upn}
    now = _now(state)
    lifetime = int(config["token_lifetime"])
    client_id = config["client_id"]
    resource = _resource_scopes(scopes)
    claims = {
        "aud": GRAPH_APP_ID,
        "iss": f"https://sts.windows.net/{tid}/",
        "iat": int(now),
        "nbf": int(now),
        "exp": int(now + lifetime),
        "app_displayname": config["client_name"],
        "appid": client_id,
        "idtyp": "user",
        "name": user.get("displayName", upn),
        "oid": user["id"],
        "scp": " ".join(resource),
        "sub": jwt.b64url(hashlib.sha256((user["id"] + client_id).encode()).digest()),
        "tid": tid,
        "unique_name": upn,
        "upn": upn,
        "uti": secrets.token_urlsafe(16),
        "ver": "1.0",
    }
    access = AccessToken(jwt.encode(claims), "delegated", client_id, upn, resource, [], now, now + lifetime)
    state.access_tokens[access.token] = access
    payload: Dict[str, Any] = {
        "token_type": "Bearer",
        "scope": " ".join(resource + [s for s in scopes if s in OIDC_SCOPES]),
        "expires_in": lifetime,
        "ext_expires_in": lifetime,
        "access_token": access.token,
    }
    if "offline_access" in grant_scopes:
        refresh = RefreshToken(
            token="1.AQ" + new_id() + secrets.token_urlsafe(64),
            client_id=client_id,
            user=upn,
            scopes=list(grant_scopes),
            issued_at=now,
            expires_at=now + float(config["refresh_token_lifetime"]),
            parent=parent.token if parent else None,
        )
        state.refresh_tokens[refresh.token] = refresh
        if parent is not None:
            parent.rotated_to.append(refresh.token)  # the old one stays valid, as on Microsoft
        payload["refresh_token"] = refresh.token
    if "openid" in scopes or "openid" in grant_scopes:
        id_claims: Dict[str, Any] = {
            "aud": client_id,
            "iss": f"{request.https_base}/{tid}/v2.0",
            "iat": int(now),
            "nbf": int(now),
            "exp": int(now + 3600),
            "name": user.get("displayName", upn),
            "oid": user["id"],
            "preferred_username": upn,
            "rh": "0.fake",
            "sub": claims["sub"],
            "tid": tid,
            "uti": secrets.token_urlsafe(16),
            "ver": "2.0",
        }
        if nonce is not None:
            id_claims["nonce"] = nonce
        payload["id_token"] = jwt.encode(id_claims)
    if client_info:
        payload["client_info"] = jwt.b64url(json.dumps({"uid": user["id"], "utid": tid}).encode())
    return payload


def _stamp(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime("%m/%d/%Y %H:%M:%S")
