"""One error tree for everything the library can report.

Every error carries a one-line ``hint`` for an administrator (what to fix in Entra ID / Exchange), the raw
Microsoft codes and request ids (support asks for them), and three flags that drive the caller:

- ``may_have_been_sent``: the request body may have reached Microsoft; never resend blindly.
- ``nothing_sent``: proof that nothing went out; an SMTP fallback or a later retry is safe.
- ``retryable``: a later retry is expected to succeed and cannot duplicate the mail.

No secret ever enters an error text: messages pass through :func:`graph_mail.redaction.redact`.
"""

from __future__ import annotations

import json
import re
from typing import Any, Dict, Mapping, Optional

from .redaction import redact

# AADSTS codes an administrator meets, each with one sentence on what to fix.
AADSTS_HINTS: Dict[int, str] = {
    7000215: (
        "The client secret is wrong: paste the secret's Value (shown once when created), "
        "not its Secret ID, from Entra ID > App registrations > Certificates & secrets."
    ),
    7000222: ("The client secret has expired: create a new one under Certificates & secrets and update it here."),
    700016: (
        "Application not found in this tenant: check the client (application) ID and the tenant ID, "
        "and that the app is registered in (or consented to by) this tenant."
    ),
    90002: "Tenant not found: use the directory (tenant) ID GUID or a verified domain of your tenant.",
    50011: (
        "Redirect URI mismatch: add this exact redirect URI (scheme, host, port, path) to the app's "
        "Authentication > Web platform."
    ),
    65001: "Consent missing: grant admin consent for the app's Graph permissions in API permissions.",
    50076: "Multi-factor authentication required: sign in again interactively to complete MFA.",
    50079: "MFA registration required: the user must register for MFA, then sign in again.",
    53003: "Blocked by Conditional Access: ask an admin to allow this app/location in Conditional Access.",
    700082: "The refresh token expired after inactivity: sign in again to reconnect the mailbox.",
    50173: "The grant was revoked (password changed or sessions revoked): sign in again to reconnect.",
    70008: "The authorization code or refresh token expired: sign in again.",
    50057: "The user account is disabled: enable it in Entra ID or use another mailbox.",
    54005: "The authorization code was already redeemed: start the sign-in again (codes are single use).",
    50194: (
        "The app is single-tenant: use the tenant ID instead of 'common'/'organizations', "
        "or make the app registration multi-tenant."
    ),
    500112: "The tenant in the request does not match the account: use the tenant ID the mailbox belongs to.",
    700027: (
        "The certificate assertion was rejected: upload the certificate's public key to the app "
        "registration and check the thumbprint."
    ),
    700024: "The client assertion is outside its validity window: check this server's clock (NTP).",
    7000218: "No client credential was sent: configure a client secret or a certificate.",
    50126: "Invalid username or password.",
    900971: "No reply address registered: add the redirect URI to the app registration.",
}

# Graph error codes, each with one sentence on what to fix.
GRAPH_HINTS: Dict[str, str] = {
    "InvalidAuthenticationToken": (
        "The access token was refused: check the tenant/cloud and that the token is for Microsoft Graph; "
        "reconnect if it persists."
    ),
    "ErrorAccessDenied": (
        "Access denied: grant the Graph permission Mail.Send (and Mail.ReadWrite for large mail) and "
        "admin consent; for app-only check the application access policy in Exchange."
    ),
    "AccessDenied": "Access denied: grant the missing Graph permission and admin consent in API permissions.",
    "Authorization_RequestDenied": ("Insufficient privileges: grant User.Read (delegated) or User.Read.All (app)."),
    "ErrorSendAsDenied": (
        "Not allowed to send as this address: grant Send As (or Send on Behalf) on that mailbox in "
        "Exchange admin center, or send from the connected mailbox."
    ),
    "MailboxNotEnabledForRESTAPI": (
        "The mailbox is not reachable through Graph: it must be an Exchange Online mailbox with a "
        "license (not on-premises, inactive or unlicensed)."
    ),
    "ResourceNotFound": "Not found: check the mailbox address (user principal name or primary SMTP address).",
    "ErrorInvalidUser": "Unknown mailbox: check the sender address exists in this tenant.",
    "Request_ResourceNotFound": "Unknown user: check the mailbox address exists in this tenant.",
    "ErrorItemNotFound": "The item no longer exists (draft deleted or moved); send the mail again.",
    "ErrorInvalidRecipients": "A recipient address is invalid: fix the To/Cc/Bcc addresses.",
    "ErrorInvalidInternetMessageHeader": (
        "A custom header was refused: Graph only accepts a few headers starting with 'x-'."
    ),
    "InvalidInternetMessageHeader": (
        "A custom header was refused: Graph only accepts a few headers starting with 'x-'."
    ),
    "RequestBodyRead": "Graph could not read the request body: the MIME message is malformed.",
    "ErrorMimeContentInvalidBase64String": "Graph could not decode the MIME body: report this as a bug.",
    "ErrorAttachmentSizeShouldNotBeLessThanMinimumSize": (
        "Upload sessions take attachments of 3 MB or more: report this as a bug."
    ),
    "LengthRequired": "Graph wants a Content-Length on this request: report this as a bug.",
    "RequestBodyTooLarge": ("The request exceeds Graph's 4 MB limit: large attachments need an upload session."),
    "ErrorMessageSizeExceeded": (
        "The message exceeds the mailbox's maximum size (35 MB by default): reduce attachments or raise "
        "the limit in Exchange."
    ),
    "ApplicationThrottled": "Microsoft is throttling this app: the mail will be retried after the wait.",
    "MailboxConcurrency": "Too many concurrent requests on this mailbox (limit 4): lower the parallelism.",
    "ErrorSubmissionQuotaExceeded": (
        "The mailbox hit Exchange's sending limit (30 mails a minute, 10,000 recipients a day): send later."
    ),
    "ServiceUnavailable": "Microsoft Graph is temporarily unavailable: retry later.",
    "GatewayTimeout": "Microsoft Graph timed out: check Sent Items before resending.",
    "InternalServerError": "Microsoft Graph failed internally: check Sent Items before resending.",
    "BadGateway": "Microsoft Graph gateway error: check Sent Items before resending.",
    "SyncStateNotFound": (
        "Microsoft forgot the mailbox's change tracking (the delta token expired): the next fetch restarts "
        "from the last message processed; nothing is lost."
    ),
    "ErrorFolderExists": "A folder with this name already exists in the mailbox.",
    "invalidRange": "The upload range was refused: the upload resumes from the server's expected range.",
    "InvalidRange": "The upload range was refused: the upload resumes from the server's expected range.",
}

# Hints when neither code is known: by HTTP status.
STATUS_HINTS: Dict[int, str] = {
    400: "Graph refused the request as malformed.",
    401: "Authentication failed: reconnect the mailbox or check the app credentials.",
    403: "Permission missing: check the app's Graph permissions and admin consent.",
    404: "Mailbox or item not found: check the address.",
    413: "The request is too large for Graph.",
    429: "Throttled by Microsoft: retry after the indicated wait.",
    500: "Microsoft Graph failed internally: check Sent Items before resending.",
    502: "Microsoft Graph gateway error: check Sent Items before resending.",
    503: "Microsoft Graph is temporarily unavailable: retry later.",
    504: "Microsoft Graph timed out: check Sent Items before resending.",
}

_AADSTS_RE = re.compile(r"AADSTS(\d+)")


class GraphMailError(Exception):
    """Base of every error raised by graph_mail."""

    default_hint = "See the logged Microsoft codes and request ids."
    #: whether a later retry may succeed when nothing was sent (subclasses override)
    transient = False

    def __init__(
        self,
        message: str,
        hint: Optional[str] = None,
        status: Optional[int] = None,
        code: Optional[str] = None,
        request_id: Optional[str] = None,
        client_request_id: Optional[str] = None,
        may_have_been_sent: bool = False,
        retry_after: Optional[float] = None,
        nothing_sent: Optional[bool] = None,
        retryable: Optional[bool] = None,
    ) -> None:
        self.message = redact(str(message))
        self.hint = redact(str(hint)) if hint else self.default_hint
        self.status = status if isinstance(status, int) else None
        # Microsoft's answers are data, not promises: keep only well-typed ids and codes.
        self.code = _text_or_none(code)
        self.request_id = _text_or_none(request_id)
        self.client_request_id = _text_or_none(client_request_id)
        self.may_have_been_sent = may_have_been_sent
        self.retry_after = retry_after
        # Proof that nothing went out is the default unless the body may have left.
        self.nothing_sent = (not may_have_been_sent) if nothing_sent is None else nothing_sent
        self._retryable = retryable
        self.calls: list = []  # CallRecords of the operation that failed (set by the client)
        super().__init__(self.message)

    @property
    def retryable(self) -> bool:
        """A later retry cannot duplicate the mail and may succeed."""
        if self._retryable is not None:
            return self._retryable
        return self.transient and not self.may_have_been_sent

    @retryable.setter
    def retryable(self, value: Optional[bool]) -> None:
        self._retryable = value

    def mark_unsent(self) -> GraphMailError:
        """The failing step could not have sent the mail (e.g. a draft step): say so."""
        self.may_have_been_sent = False
        self.nothing_sent = True
        return self

    def __str__(self) -> str:
        parts = [self.message]
        codes = ", ".join(x for x in (f"HTTP {self.status}" if self.status else "", self.code or "") if x)
        if codes:
            parts.append(f"[{codes}]")
        if self.hint:
            parts.append(f"Hint: {self.hint}")
        if self.may_have_been_sent:
            parts.append("The mail may have been sent: check Sent Items before resending.")
        ids = ", ".join(
            f"{k}: {v}"
            for k, v in (("request-id", self.request_id), ("client-request-id", self.client_request_id))
            if v
        )
        if ids:
            parts.append(f"({ids})")
        return " ".join(parts).replace("\n", " ")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"


class ConfigurationError(GraphMailError):
    default_hint = "Fix the mail server configuration."


class MimeConversionError(GraphMailError):
    default_hint = "The message could not be converted for Microsoft Graph."


class TooManyRecipients(GraphMailError):
    """Exchange Online takes at most 500 recipients per message: refused before anything is sent."""

    default_hint = (
        "Exchange Online accepts at most 500 recipients (To + Cc + Bcc) per message: split the recipients "
        "over several mails, or use a mailing (one mail per recipient)."
    )

    def __init__(self, count: int, limit: int) -> None:
        super().__init__(f"This mail has {count} recipients; Exchange Online accepts at most {limit} per message")
        self.count, self.limit = count, limit


class TransportError(GraphMailError):
    """The HTTP exchange failed: see ``nothing_sent`` / ``may_have_been_sent`` for which side of the body."""

    default_hint = "Check network access (DNS, proxy, firewall, TLS) to Microsoft's endpoints."
    transient = True


class GraphApiError(GraphMailError):
    """Microsoft answered with an error."""


class AuthenticationError(GraphApiError):
    default_hint = "Check the tenant ID, client ID and client secret or certificate."


class InvalidGrantError(AuthenticationError):
    """The refresh token or code is no longer valid: re-authentication needed."""

    default_hint = "Re-authentication needed: sign in again to reconnect the mailbox."


class PermissionDenied(GraphApiError):
    default_hint = STATUS_HINTS[403]


class MailboxNotFound(GraphApiError):
    default_hint = STATUS_HINTS[404]


class MessageRejected(GraphApiError):
    default_hint = STATUS_HINTS[400]


class MessageTooLarge(GraphApiError):
    default_hint = STATUS_HINTS[413]


class Throttled(GraphApiError):
    default_hint = STATUS_HINTS[429]
    transient = True


class SyncStateLost(GraphApiError):
    """A delta token Microsoft no longer knows (410 ``SyncStateNotFound``): start the sync again."""

    default_hint = GRAPH_HINTS["SyncStateNotFound"]


class ServiceUnavailable(GraphApiError):
    default_hint = STATUS_HINTS[503]
    transient = True


def _text_or_none(value: Any) -> Optional[str]:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return None


def aadsts_code(text: Optional[str]) -> Optional[int]:
    """The first ``AADSTSnnnn`` number in ``text``."""
    match = _AADSTS_RE.search(text or "")
    return int(match.group(1)) if match else None


def hint_for(code: Any, status: Optional[int] = None) -> Optional[str]:
    """The administrator hint for an AADSTS number, a Graph code or an HTTP status."""
    if isinstance(code, int) or (isinstance(code, str) and code.isdigit()):
        return AADSTS_HINTS.get(int(code))
    if isinstance(code, str):
        found = aadsts_code(code)
        if found is not None and found in AADSTS_HINTS:
            return AADSTS_HINTS[found]
        if code in GRAPH_HINTS:
            return GRAPH_HINTS[code]
    return STATUS_HINTS.get(status) if status else None


def _header(headers: Mapping[str, str], name: str) -> Optional[str]:
    # requests' headers are case-insensitive already; plain dicts (tests) may not be.
    value = headers.get(name)
    if value is None:
        lower = name.lower()
        for key, val in headers.items():
            if key.lower() == lower:
                return val
    return value


def error_from_graph_response(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    sending: bool = False,
    client_request_id: Optional[str] = None,
    retry_after: Optional[float] = None,
) -> GraphApiError:
    """Build the right error for a Graph HTTP error response.

    ``sending`` tells whether the request itself would have sent the mail (sendMail, draft send): only
    then can a server error mean "may have been sent".
    """
    code = None
    message = ""
    request_id = _header(headers, "request-id")
    try:
        payload = json.loads(body.decode("utf-8")) if body else {}
        error = payload.get("error") if isinstance(payload, dict) else None
        if isinstance(error, dict):
            code = error.get("code")
            message = error.get("message") or ""
            inner = error.get("innerError") or error.get("innererror") or {}
            if isinstance(inner, dict):
                request_id = request_id or inner.get("request-id")
                client_request_id = client_request_id or inner.get("client-request-id")
    except (ValueError, UnicodeDecodeError, AttributeError):
        pass
    client_request_id = client_request_id or _header(headers, "client-request-id")
    cls = _graph_error_class(status, code)
    # A rejected request (4xx) was not processed; a 503 announcing Retry-After is Microsoft's "not now".
    ambiguous = sending and status >= 500 and not (status == 503 and retry_after is not None)
    text = f"Microsoft Graph answered {status}" + (f": {message}" if message else "")
    # Graph names the concurrency limit in the message only (code ApplicationThrottled): say which limit it is.
    hint_code = "MailboxConcurrency" if "MailboxConcurrency" in str(message) else code
    return cls(
        text[:500],
        hint=hint_for(hint_code, status),
        status=status,
        code=code,
        request_id=request_id,
        client_request_id=client_request_id,
        may_have_been_sent=ambiguous,
        retry_after=retry_after,
    )


def _graph_error_class(status: int, code: Optional[str]) -> type:
    if code in ("RequestBodyTooLarge", "ErrorMessageSizeExceeded") or status == 413:
        return MessageTooLarge
    if status == 401:
        return AuthenticationError
    if status == 403 or code in ("ErrorAccessDenied", "AccessDenied", "ErrorSendAsDenied"):
        return PermissionDenied
    if status == 404 and code in (
        "MailboxNotEnabledForRESTAPI",
        "ResourceNotFound",
        "Request_ResourceNotFound",
        "ErrorInvalidUser",
    ):
        return MailboxNotFound
    if status == 410 or code == "SyncStateNotFound":
        return SyncStateLost
    if status == 429 or code in ("ApplicationThrottled", "MailboxConcurrency"):
        return Throttled
    if status >= 500:
        return ServiceUnavailable
    if status == 400:
        return MessageRejected
    return GraphApiError


def error_from_token_response(result: Mapping[str, Any], *, status: Optional[int] = None) -> GraphApiError:
    """Build the right error from an msal / token-endpoint error dict (``error``, ``error_description``)."""
    error = str(result.get("error") or "unknown_error")
    description = str(result.get("error_description") or "")
    raw_codes = result.get("error_codes")
    raw_codes = raw_codes if isinstance(raw_codes, list) else []
    codes = [c for c in raw_codes if isinstance(c, int) and not isinstance(c, bool)]
    number = codes[0] if codes else aadsts_code(description)
    if number is None:
        number = aadsts_code(error)
    # Keep only the first line of Microsoft's description: the rest is trace/correlation noise.
    first_line = description.splitlines()[0] if description else ""
    hint = AADSTS_HINTS.get(int(number)) if number is not None else None
    code = f"AADSTS{number}" if number is not None else error
    reauth = error in ("invalid_grant", "interaction_required") or number in (700082, 50173, 70008, 54005)
    if reauth:
        message = f"Re-authentication needed: {error}" + (f": {first_line}" if first_line else "")
        return InvalidGrantError(
            message[:500],
            hint=hint or InvalidGrantError.default_hint,
            status=status,
            code=code,
            request_id=result.get("trace_id"),
            client_request_id=result.get("correlation_id"),
        )
    if error in ("temporarily_unavailable", "server_error"):
        # OAuth's words for an outage at the identity platform: nothing was sent, try again later.
        return ServiceUnavailable(
            f"The identity platform is unavailable: {error}" + (f": {first_line}" if first_line else ""),
            status=status,
            code=code,
            request_id=result.get("trace_id"),
            client_request_id=result.get("correlation_id"),
            nothing_sent=True,
        )
    message = f"Sign-in refused: {error}" + (f": {first_line}" if first_line else "")
    return AuthenticationError(
        message[:500],
        hint=hint,
        status=status,
        code=code,
        request_id=result.get("trace_id"),
        client_request_id=result.get("correlation_id"),
    )
