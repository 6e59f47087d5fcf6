"""The app's own registration, as the directory API shows it, and when its credentials expire.

``GET /v1.0/applications(appId='{client id}')``, ``GET /v1.0/applications/{object id}`` and
``GET /v1.0/applications?$filter=appId eq '{client id}'`` return Graph's ``application`` resource built from the
config: one ``passwordCredentials`` entry for the client secret (``client_secret_expires``, else two years after
the fake started) and one ``keyCredentials`` entry per registered certificate (dates from the PEM). Reading it
needs ``Application.Read.All`` (application role or delegated scope, or a broader directory permission), else
403 ``Authorization_RequestDenied`` as the directory API answers.
"""

from __future__ import annotations

import base64
import calendar
import datetime
import re
import uuid
from typing import Any, Dict, List, Optional, Tuple, Union

from . import graph, jwt
from .state import State
from .web import GraphError, Request, Response, json_response, utcnow_iso

SECRET_LIFETIME = 2 * 365 * 24 * 3600  # what Entra ID offers at most for a new secret (24 months)
READ_ROLES = ("Application.Read.All", "Application.ReadWrite.All", "Directory.Read.All", "Directory.ReadWrite.All")
READ_SCOPES = (*READ_ROLES, "Directory.AccessAsUser.All")
INSUFFICIENT = "Insufficient privileges to complete the operation."
PROPERTIES = (
    "id", "deletedDateTime", "appId", "applicationTemplateId", "createdDateTime", "description", "displayName",
    "identifierUris", "isFallbackPublicClient", "notes", "publisherDomain", "signInAudience", "tags",
    "keyCredentials", "passwordCredentials", "requiredResourceAccess", "web",
)  # fmt: skip
_ISO = re.compile(r"^(\d{4}-\d\d-\d\d)(?:[T ](\d\d:\d\d(?::\d\d)?)(\.\d+)?)?\s*(Z|[+-]\d\d:?\d\d)?$", re.IGNORECASE)
_FILTER = re.compile(r"^\s*appId\s+eq\s+'((?:[^']|'')*)'\s*$", re.IGNORECASE)


# --- credential dates ------------------------------------------------------------------------------------


def parse_moment(value: Union[int, float, str, None]) -> Optional[float]:
    """Epoch seconds from a number or an ISO-8601 string (``2026-01-31``, ``...T10:00:00Z``, ``+02:00``, naive =
    UTC, any number of fraction digits); None stays None. ValueError for anything else."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError("expected epoch seconds or an ISO-8601 date")
    if isinstance(value, (int, float)):
        return float(value)
    match = _ISO.match(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"{value!r} is neither epoch seconds nor an ISO-8601 date")
    date, time_of_day, fraction, zone = match.groups()
    time_of_day = time_of_day or "00:00:00"
    if time_of_day.count(":") == 1:
        time_of_day += ":00"
    moment = datetime.datetime.strptime(f"{date}T{time_of_day}", "%Y-%m-%dT%H:%M:%S")
    epoch = calendar.timegm(moment.timetuple()) + float(fraction or 0)
    if zone and zone.upper() != "Z":
        sign = 1 if zone[0] == "+" else -1
        digits = zone[1:].replace(":", "")
        epoch -= sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)
    return float(epoch)


def secret_expired(state: State) -> bool:
    """The right secret is refused (AADSTS7000222): flagged expired, or its end date passed on the fake's clock."""
    expires = parse_moment(state.config["client_secret_expires"])
    return bool(state.config["client_secret_expired"]) or (expires is not None and state.clock() >= expires)


def secret_window(state: State) -> Tuple[float, float]:
    """(start, end) the application resource shows for the secret: created when the fake started (or two
    years before an end date older than that), ending at ``client_secret_expires``, else two years later (a
    day before the start when only ``client_secret_expired`` is set)."""
    end = parse_moment(state.config["client_secret_expires"])
    if end is None:
        expired = state.config["client_secret_expired"]
        end = state.started_at - 24 * 3600 if expired else state.started_at + SECRET_LIFETIME
    start = state.started_at if end > state.started_at else end - SECRET_LIFETIME
    return start, end


# --- the application resource ----------------------------------------------------------------------------


def application_object_id(client_id: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "fake-microsoft-app:" + client_id))


def _password_credentials(state: State) -> List[Dict[str, Any]]:
    config = state.config
    start, end = secret_window(state)
    return [
        {
            "customKeyIdentifier": None,
            "displayName": config["client_name"],
            "endDateTime": utcnow_iso(end),
            "hint": config["client_secret"][:3],
            "keyId": config["client_secret_id"],
            "secretText": None,
            "startDateTime": utcnow_iso(start),
        }
    ]


def _key_credentials(state: State, with_key: bool) -> List[Dict[str, Any]]:
    entries = []
    for pem in state.config["certificates"]:
        cert = jwt.Certificate(pem)
        thumbprint = cert.sha1.hex().upper()  # what Graph shows for a certificate uploaded in the portal
        entries.append(
            {
                "customKeyIdentifier": thumbprint,
                "displayName": cert.subject,
                "endDateTime": utcnow_iso(cert.not_valid_after),
                # The key itself only for $select=keyCredentials on one application, as Graph does.
                "key": base64.b64encode(cert.der).decode("ascii") if with_key else None,
                "keyId": str(uuid.uuid5(uuid.NAMESPACE_URL, "fake-microsoft-key:" + thumbprint)),
                "startDateTime": utcnow_iso(cert.not_valid_before),
                "type": "AsymmetricX509Cert",
                "usage": "Verify",
            }
        )
    return entries


def _resource(state: State, with_key: bool) -> Dict[str, Any]:
    config = state.config
    return {
        "id": application_object_id(config["client_id"]),
        "deletedDateTime": None,
        "appId": config["client_id"],
        "applicationTemplateId": None,
        "createdDateTime": utcnow_iso(state.started_at),
        "description": None,
        "displayName": config["client_name"],
        "identifierUris": [],
        "isFallbackPublicClient": None,
        "notes": None,
        "publisherDomain": config["tenant_domain"],
        "signInAudience": "AzureADMultipleOrgs" if config["multi_tenant"] else "AzureADMyOrg",
        "tags": [],
        "keyCredentials": _key_credentials(state, with_key),
        "passwordCredentials": _password_credentials(state),
        "requiredResourceAccess": [],
        "web": {"redirectUris": list(config["redirect_uris"]), "homePageUrl": None, "logoutUrl": None},
    }


def _selected(request: Request) -> Optional[List[str]]:
    raw = request.arg("$select")
    if raw is None:
        return None
    canonical = {p.lower(): p for p in PROPERTIES}
    names = []
    for name in (n.strip() for n in raw.split(",")):
        if name.lower() not in canonical:
            raise GraphError(
                400,
                "Request_BadRequest",
                f"Could not find a property named '{name}' on type 'microsoft.graph.application'.",
            )
        names.append(canonical[name.lower()])
    return names


def _authorize(state: State, request: Request) -> None:
    token = graph._authenticate(state, request)
    granted = token.roles if token.kind == "app" else token.scopes
    wanted = READ_ROLES if token.kind == "app" else READ_SCOPES
    if not any(p in granted for p in wanted):
        raise GraphError(403, "Authorization_RequestDenied", INSUFFICIENT)


def _shape(resource: Dict[str, Any], names: Optional[List[str]]) -> Dict[str, Any]:
    return resource if names is None else {n: resource[n] for n in names}


def _context(request: Request, names: Optional[List[str]], entity: bool) -> str:
    selection = f"({','.join(names)})" if names else ""
    return f"{request.http_base}/v1.0/$metadata#applications{selection}" + ("/$entity" if entity else "")


def get_application(
    state: State, request: Request, app_id: Optional[str] = None, object_key: Optional[str] = None
) -> Response:
    """``applications(appId='..')`` or ``applications/{object id}``."""
    with state.lock:
        _authorize(state, request)
        names = _selected(request)
        client_id = state.config["client_id"]
        key = app_id if app_id is not None else object_key
        known = client_id if app_id is not None else application_object_id(client_id)
        if key is None or key.lower() != known.lower():
            raise GraphError(
                404,
                "Request_ResourceNotFound",
                f"Resource '{key}' does not exist or one of its queried reference-property objects are not present.",
            )
        resource = _shape(_resource(state, with_key=names is not None and "keyCredentials" in names), names)
        return json_response(200, {"@odata.context": _context(request, names, True), **resource})


def list_applications(state: State, request: Request) -> Response:
    """``applications[?$filter=appId eq '..']``: the fake's tenant registers this one app."""
    with state.lock:
        _authorize(state, request)
        names = _selected(request)
        raw_filter = request.arg("$filter")
        resources = [_shape(_resource(state, with_key=False), names)]
        if raw_filter is not None:
            match = _FILTER.match(raw_filter)
            if match is None:
                prop = (raw_filter.strip().split() or [""])[0]
                raise GraphError(
                    400,
                    "Request_UnsupportedQuery",
                    f"Unsupported or invalid query filter clause specified for property '{prop}' of resource "
                    "'Application'.",
                )
            wanted = match.group(1).replace("''", "'").lower()
            resources = [r for r in resources if state.config["client_id"].lower() == wanted]
        return json_response(200, {"@odata.context": _context(request, names, False), "value": resources})
