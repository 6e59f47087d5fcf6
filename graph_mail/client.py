"""GraphMailClient: send a message through Microsoft Graph, check identity, look a mail up in Sent Items.

Every HTTP call produces a :class:`CallRecord` (handed to ``on_call`` as it happens, and returned in
:class:`SendResult` / attached to errors as ``error.calls``): operation, status, Microsoft's codes and
request ids, duration, size, attempt, outcome. Records never contain a token, a secret or a body.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from email.message import Message
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Set, Tuple, Union
from urllib.parse import quote, urlencode, urlsplit

import requests

from .auth import AuthMode, CredentialExpiry, MailboxCredentials, TokenProvider, credential_expiry_from_application
from .clouds import check_url
from .errors import (
    ConfigurationError,
    GraphApiError,
    GraphMailError,
    MessageTooLarge,
    PermissionDenied,
    TransportError,
    error_from_graph_response,
)
from .message import MAX_REQUEST_BYTES, Attachment, Envelope, Resolver, SendPlan, build_plan
from .redaction import install_log_redaction, redact
from .retry import RetryPolicy, parse_retry_after
from .transport import Timeouts, Transport

_log = logging.getLogger(__name__)


@dataclass
class CallRecord:
    """One HTTP call, safe to store: no token, secret, query string or body."""

    operation: str
    method: str
    path: str
    status: Optional[int]
    graph_code: Optional[str]
    request_id: Optional[str]
    client_request_id: Optional[str]
    duration_ms: float
    request_bytes: int
    attempt: int
    outcome: str  # "ok" | "retry" | "error"
    message: str = ""


@dataclass
class SendResult:
    internet_message_id: str
    path: str  # "mime" | "draft"
    calls: List[CallRecord] = field(default_factory=list)


class _Context:
    """State of one public operation: its deadline, its records, whether the one re-auth was used."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.calls: List[CallRecord] = []
        self.reauthenticated = False


Body = Union[bytes, None]


class GraphMailClient:
    """Sends mail for one mailbox connection (``credentials``); cheap to build per mail, since tokens, msal
    apps and the HTTP session are shared process-wide."""

    def __init__(
        self,
        credentials: MailboxCredentials,
        token_provider: Optional[TokenProvider] = None,
        transport: Optional[Transport] = None,
        timeouts: Optional[Timeouts] = None,
        retry: Optional[RetryPolicy] = None,
        on_call: Optional[Callable[[CallRecord], None]] = None,
        on_refresh_token: Optional[Callable[..., None]] = None,
    ) -> None:
        install_log_redaction()
        self.credentials = credentials
        self.transport = transport or Transport(timeouts=timeouts or Timeouts())
        self.token_provider = token_provider or TokenProvider(
            credentials, on_refresh_token=on_refresh_token, transport=self.transport
        )
        self.retry = retry or RetryPolicy()
        self.on_call = on_call

    # -- public API -------------------------------------------------------------------------------------

    def send(self, message: Message, envelope: Envelope, external: Optional[Resolver] = None) -> SendResult:
        """Send ``message`` to ``envelope.recipients`` from ``envelope.sender``; ``external`` resolves stand-in
        attachment parts to content kept outside the message (see :func:`build_plan`).

        Raises a :class:`GraphMailError`; its ``may_have_been_sent`` / ``nothing_sent`` / ``retryable``
        flags tell what the caller may do next, ``error.calls`` lists the calls made."""
        ctx = _Context(self.transport.deadline())
        try:
            plan = build_plan(message, envelope, external=external)
            base = self._mailbox_path(envelope.sender)
            if plan.path == "mime":
                try:
                    self._request(
                        ctx,
                        "sendMail",
                        "POST",
                        f"{base}/sendMail",
                        body=plan.mime_base64,
                        content_type="text/plain",
                        sending=True,
                    )
                except MessageTooLarge as exc:
                    # Graph's "about 4 MB" was smaller than our estimate: a 413 was not processed, so
                    # the same mail can safely go the draft way, with a stricter request size.
                    if exc.status != 413:
                        raise
                    limit = min(plan.request_bytes, MAX_REQUEST_BYTES) * 3 // 4
                    plan = build_plan(message, envelope, max_request_bytes=limit, external=external)
                    self._send_draft(ctx, base, plan)
            else:
                self._send_draft(ctx, base, plan)
        except GraphMailError as exc:
            exc.calls = ctx.calls  # type: ignore[attr-defined]
            raise
        _log.info(
            "Mail %s sent through Graph (%s path, %d call(s))",
            plan.internet_message_id,
            plan.path,
            len(ctx.calls),
        )
        return SendResult(plan.internet_message_id, plan.path, ctx.calls)

    def whoami(self, mailbox: Optional[str] = None) -> Dict[str, Any]:
        """The mailbox's identity: ``GET /me`` (delegated) or ``GET /users/{mailbox}``."""
        if self.credentials.mode is AuthMode.APPLICATION and not mailbox:
            raise ConfigurationError(
                "A mailbox address is needed in application mode", hint="Give the mailbox to send from."
            )
        path = "/me" if mailbox is None else self._mailbox_path(mailbox)
        ctx = _Context(self.transport.deadline())
        response = self._request(ctx, "whoami", "GET", path, idempotent=True)
        return _json(response)

    def find_sent(
        self, internet_message_id: str, mailbox: str, recipients: Optional[Sequence[str]] = None
    ) -> Optional[bool]:
        """Whether a mail with this Message-ID is in the mailbox's Sent Items; ``None`` when not allowed to
        read them (then nothing can be concluded). Use it before resending an ambiguous failure.

        ``recipients``: only a copy sent to all of them counts. Odoo sends one copy per recipient with the same
        Message-ID, so the Message-ID alone cannot tell which copy went out.
        """
        escaped = internet_message_id.strip().replace("'", "''")
        select = "id,toRecipients,ccRecipients,bccRecipients" if recipients else "id"
        query = urlencode(
            {"$filter": f"internetMessageId eq '{escaped}'", "$select": select, "$top": "50"}, quote_via=quote
        )
        path = f"{self._mailbox_path(mailbox)}/mailFolders/SentItems/messages?{query}"
        ctx = _Context(self.transport.deadline())
        try:
            response = self._request(ctx, "findSent", "GET", path, idempotent=True)
        except PermissionDenied:
            return None
        items = _json(response).get("value") or []
        if not recipients:
            return bool(items)
        wanted = {address.strip().lower() for address in recipients}
        return any(wanted <= _sent_to(item) for item in items if isinstance(item, dict))

    def credential_expiry(self) -> CredentialExpiry:
        """The app registration's client secrets and certificates with their end dates, read from the
        directory (``GET /applications(appId='{client id}')``), so the product can warn before one expires.

        Needs the Graph permission ``Application.Read.All`` (application, or delegated with admin consent): a
        403 raises :class:`PermissionDenied` whose hint says so and how to fill the date in by hand.
        """
        app_id = quote(self.credentials.client_id.strip(), safe="")
        query = urlencode({"$select": "passwordCredentials,keyCredentials,appId"}, quote_via=quote)
        path = f"/applications(appId='{app_id}')?{query}"
        ctx = _Context(self.transport.deadline())
        try:
            response = self._request(ctx, "credentialExpiry", "GET", path, idempotent=True)
        except PermissionDenied as exc:
            exc.hint = CREDENTIAL_EXPIRY_HINT
            raise
        except GraphApiError as exc:
            if exc.status != 404:
                raise
            # A multi-tenant app is registered in its home tenant only: this tenant has its service principal.
            raise GraphApiError(
                exc.message,
                hint=APPLICATION_NOT_FOUND_HINT,
                status=exc.status,
                code=exc.code,
                request_id=exc.request_id,
                client_request_id=exc.client_request_id,
            )
        return credential_expiry_from_application(_json(response), self.credentials.client_id)

    # -- plumbing ---------------------------------------------------------------------------------------

    def _mailbox_path(self, mailbox: str) -> str:
        """``/me`` when sending as the signed-in mailbox (delegated), else ``/users/{mailbox}``."""
        if self.credentials.mode is AuthMode.DELEGATED:
            account = self._account()
            if account and account.lower() == mailbox.strip().lower():
                return "/me"
        return "/users/" + quote(mailbox.strip(), safe="@")

    def _account(self) -> Optional[str]:
        try:
            return getattr(self.token_provider, "account", None)
        except GraphMailError as exc:
            raise exc.mark_unsent()

    def _token(self) -> str:
        try:
            return self.token_provider.access_token()
        except GraphMailError as exc:
            raise exc.mark_unsent()

    def _send_draft(self, ctx: _Context, base: str, plan: SendPlan) -> None:
        created = self._request(
            ctx, "createDraft", "POST", f"{base}/messages", body=plan.mime_base64, content_type="text/plain"
        )
        draft_id = _json(created).get("id")
        if not draft_id:
            raise GraphApiError("Graph created a draft without returning its id").mark_unsent()
        path = f"{base}/messages/{quote(str(draft_id), safe='')}"
        try:
            for attachment in plan.uploads:
                self._upload(ctx, path, attachment)
            for attachment in plan.attachments:
                self._request(
                    ctx,
                    "addAttachment",
                    "POST",
                    f"{path}/attachments",
                    json_body=attachment.file_attachment(),
                )
            self._request(ctx, "send", "POST", f"{path}/send", body=b"", sending=True)
        except GraphMailError as exc:
            if exc.may_have_been_sent:
                exc.hint = f"{exc.hint} The draft was kept for inspection."
            else:
                self._delete_draft(ctx, path)
            raise

    def _delete_draft(self, ctx: _Context, path: str) -> None:
        try:
            self._request(ctx, "deleteDraft", "DELETE", path, idempotent=True, policy=RetryPolicy(attempts=2))
        except GraphMailError as exc:
            _log.warning("Could not delete the unsent draft: %s", exc)

    def _upload(self, ctx: _Context, path: str, attachment: Attachment) -> None:
        """One attachment through an upload session, resuming from ``nextExpectedRanges`` after a failure, and
        once through a new session when Graph has forgotten this one (404: the session expired)."""
        upload_url = self._upload_session(ctx, path, attachment)
        renewed = False
        offset: Optional[int] = 0
        failures = 0
        while offset is not None and offset < attachment.size:
            try:
                for start, chunk in attachment.chunks(offset):
                    end = start + len(chunk) - 1
                    response = self._request(
                        ctx,
                        "uploadChunk",
                        "PUT",
                        upload_url,
                        body=chunk,
                        content_type="application/octet-stream",
                        headers={"Content-Range": f"bytes {start}-{end}/{attachment.size}"},
                        auth=False,  # the upload URL carries its own token; Authorization is refused
                        policy=_NO_RETRY,
                        final=failures + 1 >= self.retry.attempts,
                    )
                    offset = end + 1
                    expected = _next_expected(_json(response)) if response.status_code == 200 else None
                    if expected is not None and expected != offset:
                        offset = expected  # the server wants another range: follow it
                        break
                else:
                    return
            except GraphMailError as exc:
                if exc.status == 404 and not renewed:
                    renewed, offset = True, 0
                    upload_url = self._upload_session(ctx, path, attachment)
                    continue
                failures += 1
                if failures >= self.retry.attempts or not _resumable(exc):
                    raise exc.mark_unsent()
                self.transport.sleep(self.retry.backoff_delay(failures))
                status = self._request(ctx, "uploadStatus", "GET", upload_url, auth=False, idempotent=True)
                offset = _next_expected(_json(status))

    def _upload_session(self, ctx: _Context, path: str, attachment: Attachment) -> str:
        created = self._request(
            ctx,
            "createUploadSession",
            "POST",
            f"{path}/attachments/createUploadSession",
            json_body=attachment.attachment_item(),
        )
        upload_url = _json(created).get("uploadUrl")
        if not upload_url:
            raise GraphApiError("Graph returned no upload URL").mark_unsent()
        check_url(upload_url.split("?", 1)[0], "Upload URL")
        return upload_url

    def _request(
        self,
        ctx: _Context,
        operation: str,
        method: str,
        path_or_url: str,
        *,
        body: Body = None,
        json_body: Optional[Mapping[str, Any]] = None,
        content_type: Optional[str] = None,
        headers: Optional[Mapping[str, str]] = None,
        sending: bool = False,
        idempotent: bool = False,
        auth: bool = True,
        policy: Optional[RetryPolicy] = None,
        final: bool = True,
    ) -> requests.Response:
        """One logical call: retries per policy, one re-authentication + replay after a 401, a record per
        attempt. Errors of calls that cannot send the mail are marked ``nothing_sent``. ``final=False``
        means the caller resumes resumable failures itself (upload chunks): they are recorded as "retry".
        """
        policy = policy or self.retry
        url = path_or_url if "://" in path_or_url else self.credentials.cloud.graph_url + path_or_url
        if json_body is not None:
            body = json.dumps(json_body).encode("utf-8")
            content_type = "application/json"
        attempt = 0
        while True:
            attempt += 1
            sent_headers = dict(headers or {})
            if content_type:
                sent_headers["Content-Type"] = content_type
            token = None
            if auth:
                token = self._token()
                sent_headers["Authorization"] = f"Bearer {token}"
            started = self.transport.clock()
            response = None
            try:
                response = self.transport.request(method, url, headers=sent_headers, data=body, deadline=ctx.deadline)
            except TransportError as exc:
                error: GraphMailError = exc
            else:
                if response.status_code < 400:
                    self._record(ctx, operation, method, url, response, None, started, body, attempt, "ok")
                    return response
                retry_after = parse_retry_after(response.headers.get("Retry-After"), self.transport.wall_clock())
                error = error_from_graph_response(
                    response.status_code,
                    response.headers,
                    response.content,
                    sending=sending,
                    client_request_id=getattr(response, "client_request_id", None),
                    retry_after=retry_after,
                )
                if response.status_code == 401 and auth and not ctx.reauthenticated:
                    # An expired or revoked token: refresh once and replay once (401 = not processed).
                    ctx.reauthenticated = True
                    self._record(ctx, operation, method, url, response, error, started, body, attempt, "retry")
                    self.token_provider.invalidate(token)
                    continue
            delay = policy.next_delay(error, attempt, self.transport.clock(), ctx.deadline, idempotent)
            if delay is None:
                outcome = "error" if final or not _resumable(error) else "retry"
                self._record(ctx, operation, method, url, response, error, started, body, attempt, outcome)
                if not sending:
                    error.mark_unsent()
                raise error
            self._record(ctx, operation, method, url, response, error, started, body, attempt, "retry")
            _log.info("%s: retrying in %.1f s after %s", operation, delay, error.message)
            self.transport.sleep(delay)

    def _record(
        self,
        ctx: _Context,
        operation: str,
        method: str,
        url: str,
        response: Optional[requests.Response],
        error: Optional[GraphMailError],
        started: float,
        body: Body,
        attempt: int,
        outcome: str,
    ) -> None:
        headers = response.headers if response is not None else {}
        record = CallRecord(
            operation=operation,
            method=method,
            path=urlsplit(url).path,
            status=response.status_code if response is not None else None,
            graph_code=error.code if error is not None else None,
            request_id=(error.request_id if error is not None else None) or headers.get("request-id"),
            client_request_id=(getattr(response, "client_request_id", None) if response is not None else None)
            or (error.client_request_id if error is not None else None),
            duration_ms=round((self.transport.clock() - started) * 1000, 1),
            request_bytes=len(body or b""),
            attempt=attempt,
            outcome=outcome,
            message=redact(error.message)[:300] if error is not None else "",
        )
        ctx.calls.append(record)
        level = logging.INFO if outcome == "ok" else logging.WARNING
        _log.log(
            level,
            "graph %s %s %s -> %s %s (attempt %d, %s, request-id %s, client-request-id %s, %.0f ms)",
            operation,
            method,
            record.path,
            record.status if record.status is not None else "no answer",
            record.graph_code or "",
            attempt,
            outcome,
            record.request_id,
            record.client_request_id,
            record.duration_ms,
        )
        if self.on_call is not None:
            try:
                self.on_call(record)
            except Exception:
                _log.exception("on_call callback failed")


_NO_RETRY = RetryPolicy(attempts=1)
CREDENTIAL_EXPIRY_HINT = (
    "Grant the application permission Application.Read.All, or fill in the secret's expiry date by hand from "
    "Azure portal > App registrations > Certificates & secrets."
)
APPLICATION_NOT_FOUND_HINT = (
    "This tenant has no app registration with this client ID (a multi-tenant app is registered in its home "
    "tenant only): fill in the secret's expiry date by hand from Azure portal > App registrations > "
    "Certificates & secrets of the tenant that owns the app."
)


def _sent_to(item: Mapping[str, Any]) -> Set[str]:
    """Every recipient address of a Sent Items message (To, Cc and the sender's view of Bcc)."""
    addresses = set()
    for kind in ("toRecipients", "ccRecipients", "bccRecipients"):
        for recipient in item.get(kind) or []:
            address = (recipient.get("emailAddress") or {}).get("address") if isinstance(recipient, dict) else None
            if isinstance(address, str):
                addresses.add(address.strip().lower())
    return addresses


def _json(response: requests.Response) -> Dict[str, Any]:
    try:
        value = response.json()
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _next_expected(payload: Mapping[str, Any]) -> Optional[int]:
    """Start of the first range in ``nextExpectedRanges`` ("327680-" or "0-327679"); None when complete."""
    ranges = payload.get("nextExpectedRanges") or payload.get("NextExpectedRanges") or []
    if not ranges:
        return None
    try:
        return int(str(ranges[0]).split("-", 1)[0])
    except ValueError:
        return None


def _resumable(error: GraphMailError) -> bool:
    if isinstance(error, TransportError):
        return True
    return (error.status or 0) in (408, 409, 416, 429, 500, 502, 503, 504)


__all__: Tuple[str, ...] = ("CallRecord", "CredentialExpiry", "Envelope", "GraphMailClient", "SendResult")
