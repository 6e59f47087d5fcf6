"""Microsoft Graph mail endpoints: users, sendMail (JSON and MIME), drafts, upload sessions, Sent Items.

Each handler checks what Graph checks, in Graph's order: size, token, mailbox, permission, payload.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import json
import re
import secrets
from typing import Any, Dict, List, Optional, Tuple

from . import limits, mime, ndr
from . import mailbox as mailbox_store
from .defaults import (
    CHUNK_MAX,
    CHUNK_MULTIPLE,
    INLINE_ATTACHMENT_LIMIT,
    REQUEST_LIMIT,
    UPLOAD_MAX,
    UPLOAD_MIN,
)
from .state import AccessToken, Draft, State, UploadSession, new_id
from .web import GraphError, Request, Response, json_response, utcnow_iso

READ_SCOPES = ("Mail.Read", "Mail.ReadBasic", "Mail.ReadWrite")
READ_SHARED_SCOPES = ("Mail.Read.Shared", "Mail.ReadBasic.Shared", "Mail.ReadWrite.Shared")
READ_ROLES = ("Mail.Read", "Mail.ReadBasic", "Mail.ReadBasic.All", "Mail.ReadWrite")
USER_READ_SCOPES = ("User.Read", "User.ReadBasic.All", "User.Read.All", "Directory.Read.All")
USER_READ_ROLES = ("User.Read.All", "User.ReadBasic.All", "Directory.Read.All")
MESSAGE_PROPERTIES = {
    "@odata.type", "subject", "body", "bodyPreview", "toRecipients", "ccRecipients", "bccRecipients", "replyTo",
    "from", "sender", "attachments", "internetMessageHeaders", "importance", "isDeliveryReceiptRequested",
    "isReadReceiptRequested", "categories", "flag", "internetMessageId", "conversationId", "inferenceClassification",
    "singleValueExtendedProperties", "multiValueExtendedProperties", "mentions", "uniqueBody", "isRead",
}  # fmt: skip
FILE_ATTACHMENT_PROPERTIES = {
    "@odata.type", "id", "name", "contentType", "contentBytes", "contentId", "contentLocation", "isInline", "size",
    "lastModifiedDateTime",
}  # fmt: skip
ACCESS_DENIED = "Access is denied. Check credentials and try again."
SEND_AS_DENIED = (
    "The user account which was used to submit this request does not have the right to send mail on behalf of "
    "the specified sending account., Cannot submit message."
)


# --- request checks ---------------------------------------------------------------------------------


def _check_size(request: Request) -> None:
    if len(request.body) > REQUEST_LIMIT:
        raise GraphError(
            413,
            "RequestBodyTooLarge",
            f"The maximum request length supported is 4MB. The request body is {len(request.body)} bytes.",
        )


def _authenticate(state: State, request: Request) -> AccessToken:
    header = request.header("authorization")
    www = [
        (
            "WWW-Authenticate",
            'Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", client_id="00000003-0000-0000-c000-000000000000"',
        )
    ]
    if not header or not header.strip():
        raise GraphError(401, "InvalidAuthenticationToken", "Access token is empty.", www)
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() != "bearer" or not value:
        raise GraphError(401, "InvalidAuthenticationToken", "Access token is empty.", www)
    token = state.access_tokens.get(value)
    if token is None:
        if value.count(".") != 2:
            raise GraphError(
                401, "InvalidAuthenticationToken", "IDX14100: JWT is not well formed, there are no dots (.).", www
            )
        raise GraphError(401, "InvalidAuthenticationToken", "Access token validation failure. Invalid signature.", www)
    if state.clock() >= token.expires_at:
        raise GraphError(401, "InvalidAuthenticationToken", "Lifetime validation failed, the token is expired.", www)
    return token


def _resolve_user(state: State, token: AccessToken, target: str, mail: bool = True) -> Dict[str, Any]:
    """The user a path names: ``me`` or ``users/{id-or-upn}``."""
    if target == "me":
        if token.kind != "delegated":
            raise GraphError(400, "BadRequest", "/me request is only valid with delegated authentication flow.")
        user = state.find_user(token.user or "")
    else:
        user = state.find_user(target)
    if user is None:
        if mail:
            raise GraphError(404, "ResourceNotFound", f"The requested user '{target}' is invalid.")
        raise GraphError(
            404,
            "Request_ResourceNotFound",
            f"Resource '{target}' does not exist or one of its queried reference-property objects are not present.",
        )
    if mail and not user.get("mailbox_enabled", True):
        raise GraphError(
            404, "MailboxNotEnabledForRESTAPI", "The mailbox is either inactive, soft-deleted, or is hosted on-premise."
        )
    return user


def _is_self(token: AccessToken, user: Dict[str, Any]) -> bool:
    return token.kind == "delegated" and (token.user or "").lower() == user["userPrincipalName"].lower()


def _mailbox_names(user: Dict[str, Any]) -> List[str]:
    return [str(user.get(k)).lower() for k in ("userPrincipalName", "mail", "id") if user.get(k)]


def _require_mail_permission(state: State, token: AccessToken, user: Dict[str, Any], need: str) -> None:
    """need: "send" (Mail.Send), "write" (Mail.ReadWrite: drafts, uploads) or "read" (Sent Items)."""
    if token.kind == "app":
        wanted = {"send": ("Mail.Send",), "write": ("Mail.ReadWrite",), "read": READ_ROLES}[need]
        if not any(r in token.roles for r in wanted):
            raise GraphError(403, "ErrorAccessDenied", ACCESS_DENIED)
        allowed = state.config["allowed_mailboxes"]
        if allowed is not None and not set(_mailbox_names(user)) & {a.lower() for a in allowed}:
            raise GraphError(
                403,
                "ErrorAccessDenied",
                "Access to OData is disabled: [RAOP] : Blocked by tenant configured AppOnly AccessPolicy settings.",
            )
        return
    if _is_self(token, user):
        wanted = {"send": ("Mail.Send",), "write": ("Mail.ReadWrite",), "read": READ_SCOPES}[need]
        if not any(s in token.scopes for s in wanted):
            raise GraphError(403, "ErrorAccessDenied", ACCESS_DENIED)
        return
    granted = set(_mailbox_names(user)) & set(state.send_as_grants(token.user or ""))
    if need == "send":
        if "Mail.Send.Shared" not in token.scopes or not granted:
            raise GraphError(403, "ErrorSendAsDenied", SEND_AS_DENIED)
        return
    wanted = ("Mail.ReadWrite.Shared",) if need == "write" else READ_SHARED_SCOPES
    if not any(s in token.scopes for s in wanted) or not granted:
        raise GraphError(403, "ErrorAccessDenied", ACCESS_DENIED)


def _check_from(state: State, token: AccessToken, user: Dict[str, Any], from_address: Optional[str]) -> None:
    """Exchange refuses a From the mailbox has no Send As right for."""
    if not from_address:
        return
    address = from_address.lower()
    if address in _mailbox_names(user):
        return
    grants = state.send_as_grants(user["userPrincipalName"])
    if token.kind == "delegated":
        grants = grants + state.send_as_grants(token.user or "")
    if address not in grants:
        raise GraphError(403, "ErrorSendAsDenied", SEND_AS_DENIED)


def unknown_property(name: str, type_name: str, open_type_hint: bool = False) -> GraphError:
    """Graph's answer to a property its type does not have (``type_name``: "message", "mailFolder", ...)."""
    hint = " or mark the type as open type" if open_type_hint else ""
    return GraphError(
        400,
        "RequestBodyRead",
        f"The property '{name}' does not exist on type 'microsoft.graph.{type_name}'. "
        f"Make sure to only use property names that are defined by the type{hint}.",
    )


def _parse_json(request: Request) -> Dict[str, Any]:
    if request.media_type() != "application/json":
        raise GraphError(
            415, "UnsupportedMediaType", f"Content-Type '{request.header('content-type') or ''}' is not supported here."
        )
    try:
        payload = json.loads(request.body.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise GraphError(
            400,
            "BadRequest",
            "Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of "
            "valid JSON format.",
        )
    if not isinstance(payload, dict):
        raise GraphError(400, "BadRequest", "The request payload must be a JSON object.")
    return payload


def _decode_mime(request: Request) -> bytes:
    raw = mime.decode_base64_strict(request.body)
    if raw is None:
        raise GraphError(400, "ErrorMimeContentInvalidBase64String", "Invalid base64 string for MIME content.")
    return raw


def _is_mime(request: Request) -> bool:
    media = request.media_type()
    if media == "text/plain":
        return True
    if media == "application/json":
        return False
    raise GraphError(
        415, "UnsupportedMediaType", f"Content-Type '{request.header('content-type') or ''}' is not supported here."
    )


# --- JSON message validation -------------------------------------------------------------------------


def _recipients(message: Dict[str, Any], key: str) -> List[str]:
    entries = message.get(key) or []
    if not isinstance(entries, list):
        raise GraphError(400, "RequestBodyRead", f"'{key}' must be a collection of recipients.")
    result = []
    for entry in entries:
        address = ((entry or {}).get("emailAddress") or {}).get("address") if isinstance(entry, dict) else None
        if not isinstance(address, str) or not mime.valid_address(address):
            raise GraphError(400, "ErrorInvalidRecipients", "At least one recipient is not valid., Recipient '"
                             f"{address}' is not resolved. All recipients must be resolved before a message can be "
                             "submitted.")  # fmt: skip
        result.append(address)
    return result


def _validate_message(message: Any) -> List[Dict[str, Any]]:
    """Graph's checks on a JSON message; returns its decoded file attachments."""
    if not isinstance(message, dict):
        raise GraphError(400, "ErrorInvalidParameter", "The value of the parameter 'Message' is empty.")
    unknown = set(message) - MESSAGE_PROPERTIES
    if unknown:
        raise unknown_property(sorted(unknown)[0], "message", open_type_hint=True)
    for key in ("toRecipients", "ccRecipients", "bccRecipients", "replyTo"):
        _recipients(message, key)
    if message.get("from"):
        _recipients({"from": [message["from"]]}, "from")
    for header in message.get("internetMessageHeaders") or []:
        name = header.get("name") if isinstance(header, dict) else None
        if not isinstance(name, str) or not name.lower().startswith("x-"):
            raise GraphError(
                400,
                "InvalidInternetMessageHeader",
                f"The internet message header name '{name}' should start with 'x-' or 'X-'.",
            )
    body = message.get("body")
    if body is not None and (
        not isinstance(body, dict) or str(body.get("contentType", "text")).lower() not in ("text", "html")
    ):
        raise GraphError(400, "RequestBodyRead", "body.contentType must be 'Text' or 'HTML'.")
    attachments = []
    for item in message.get("attachments") or []:
        if not isinstance(item, dict) or item.get("@odata.type", "").lower() != "#microsoft.graph.fileattachment":
            raise GraphError(
                400, "ErrorInvalidAttachmentType", "Only #microsoft.graph.fileAttachment is supported here."
            )
        try:
            data = base64.b64decode(item.get("contentBytes") or "", validate=True)
        except (binascii.Error, ValueError):
            raise GraphError(400, "ErrorInvalidRequest", "The attachment's contentBytes is not valid base64.")
        if len(data) > INLINE_ATTACHMENT_LIMIT:
            raise GraphError(
                413,
                "RequestBodyTooLarge",
                f"File attachment '{item.get('name')}' is {len(data)} bytes: attachments over 3 MB must be "
                "uploaded through an upload session.",
            )
        attachments.append(
            {
                "name": item.get("name"),
                "content_type": item.get("contentType") or "application/octet-stream",
                "data": data,
                "is_inline": bool(item.get("isInline")),
                "content_id": item.get("contentId"),
            }
        )
    return attachments


# --- delivery ----------------------------------------------------------------------------------------


def _check_message_size(state: State, size: int) -> None:
    if size > int(state.config["max_message_size"]):
        raise GraphError(
            400,
            "ErrorMessageSizeExceeded",
            f"The message exceeds the maximum supported size of {state.config['max_message_size']} bytes "
            f"(it is {size} bytes).",
        )


def _deliver(
    state: State,
    request: Request,
    mailbox: Dict[str, Any],
    raw_with_bcc: bytes,
    bcc: Optional[List[str]],
    via: str,
    save: bool,
) -> Dict[str, Any]:
    """Accept a message: store the copy without Bcc, record who Bcc went to, file it in Sent Items."""
    additions: List[Tuple[str, str]] = []
    if mime.header_value(raw_with_bcc, "Message-ID") is None:
        additions.append(("Message-ID", mime.generate_message_id()))
    if mime.header_value(raw_with_bcc, "From") is None:
        additions.append(("From", mailbox.get("mail") or mailbox["userPrincipalName"]))
    if mime.header_value(raw_with_bcc, "Date") is None:
        additions.append(("Date", email.utils.formatdate(state.clock(), usegmt=True)))
    if additions:
        raw_with_bcc = mime.prepend_headers(raw_with_bcc, additions)
    bcc_list = bcc if bcc is not None else mime.parse(raw_with_bcc)["bcc"]
    raw = mime.remove_headers(raw_with_bcc, ["Bcc"])
    parsed = mime.parse(raw)
    parsed["bcc"] = bcc_list
    envelope: List[str] = []
    for address in [*parsed["to"], *parsed["cc"], *bcc_list]:
        if address.lower() not in (a.lower() for a in envelope):
            envelope.append(address)
    parsed["recipients"] = envelope  # everyone it was addressed to, Bcc included
    message_id = new_id("AAMkAGI2")
    upn = mailbox["userPrincipalName"]
    now = state.clock()
    # Exchange's sending limits: past the rolling day's recipients the whole message is refused (NDR 5.1.90);
    # else it leaves when the rolling minute's message rate allows (the surplus waits in the Outbox).
    if limits.fits_daily(state, upn, now, len(envelope)):
        limits.count_recipients(state, upn, now, len(envelope))
        delivered_at: Optional[float] = limits.departure(state, upn, now)
        refusals = [ndr.recipient_not_found(a) for a in ndr.refused_addresses(state.config, envelope)]
    else:
        delivered_at = None
        refusals = [ndr.daily_limit(a) for a in envelope]
    record = {
        "id": message_id,
        "mailbox": upn,
        "via": via,
        **parsed,
        "saved_to_sent_items": save,
        "client_request_id": request.client_request_id,
        "request_id": request.request_id,
        "received_at": utcnow_iso(now),
        "delivered_at": delivered_at,
        "delayed": delivered_at is not None and delivered_at > now,
        "refused": [address for address, _, _ in refusals],
        "ndr": refusals[0][1] if refusals else None,
    }
    state.messages.append(record)
    state.raw[message_id] = raw
    if save:  # the sender's copy, readable like any message (same id as the sentItems route shows)
        mailbox_store.store(state, upn, raw, "sentitems", is_read=True, message_id=message_id)
    if refusals:
        # Graph answered 202 already in spirit: refusal comes later, as an NDR in the sender's Inbox.
        report = ndr.build_ndr(
            raw,
            mailbox.get("mail") or upn,
            refusals,
            state.config["tenant_domain"],
            now,
            state.config["ndr_original"],
        )
        mailbox_store.store(state, upn, report, "inbox")
    if save:
        state.sent_items.setdefault(mailbox["userPrincipalName"].lower(), []).append(
            {
                "id": message_id,
                "internetMessageId": parsed["internet_message_id"],
                "subject": parsed["subject"],
                "sentDateTime": record["received_at"],
                # The sender's copy keeps every recipient, Bcc included.
                "toRecipients": _sent_item_recipients(parsed["to"]),
                "ccRecipients": _sent_item_recipients(parsed["cc"]),
                "bccRecipients": _sent_item_recipients(parsed["bcc"]),
            }
        )
    return record


def _sent_item_recipients(addresses: List[str]) -> List[Dict[str, Any]]:
    return [{"emailAddress": {"address": address}} for address in addresses]


def _all_recipients(parsed: Dict[str, Any], bcc: List[str]) -> List[str]:
    return list(parsed["to"]) + list(parsed["cc"]) + list(bcc)


def _require_recipients(recipients: List[str]) -> None:
    if not recipients:
        raise GraphError(
            400,
            "ErrorInvalidRecipients",
            "At least one recipient is not valid., A message can't be sent because it contains no recipients.",
        )
    for address in recipients:
        if not mime.valid_address(address):
            raise GraphError(
                400,
                "ErrorInvalidRecipients",
                f"At least one recipient is not valid., Recipient '{address}' is not resolved. All recipients "
                "must be resolved before a message can be submitted.",
            )


def _mime_envelope(raw: bytes) -> Tuple[Dict[str, Any], List[str]]:
    parsed = mime.parse(raw)
    return parsed, parsed["bcc"]


# --- users -------------------------------------------------------------------------------------------


def _user_resource(request: Request, user: Dict[str, Any]) -> Dict[str, Any]:
    display = user.get("displayName") or ""
    given, _, surname = display.partition(" ")
    return {
        "@odata.context": f"{request.http_base}/v1.0/$metadata#users/$entity",
        "businessPhones": [],
        "displayName": display,
        "givenName": given or None,
        "jobTitle": None,
        "mail": user.get("mail"),
        "mobilePhone": None,
        "officeLocation": None,
        "preferredLanguage": None,
        "surname": surname or None,
        "userPrincipalName": user["userPrincipalName"],
        "id": user["id"],
    }


def me(state: State, request: Request) -> Response:
    with state.lock:
        token = _authenticate(state, request)
        user = _resolve_user(state, token, "me", mail=False)
        if not any(s in token.scopes for s in USER_READ_SCOPES):
            raise GraphError(403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation.")
        return json_response(200, _user_resource(request, user))


def users(state: State, request: Request, user_key: str) -> Response:
    with state.lock:
        token = _authenticate(state, request)
        user = _resolve_user(state, token, user_key, mail=False)
        if token.kind == "app":
            allowed = any(r in token.roles for r in USER_READ_ROLES)
        elif _is_self(token, user):
            allowed = any(s in token.scopes for s in USER_READ_SCOPES)
        else:
            allowed = any(s in token.scopes for s in USER_READ_SCOPES[1:])
        if not allowed:
            raise GraphError(403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation.")
        return json_response(200, _user_resource(request, user))


# --- sendMail ----------------------------------------------------------------------------------------


def send_mail(state: State, request: Request, target: str) -> Response:
    _check_size(request)
    with state.lock:
        token = _authenticate(state, request)
        user = _resolve_user(state, token, target)
        _require_mail_permission(state, token, user, "send")
        if _is_mime(request):
            raw = _decode_mime(request)
            parsed, bcc = _mime_envelope(raw)
            _require_recipients(_all_recipients(parsed, bcc))
            _check_from(state, token, user, parsed["from"])
            _check_message_size(state, len(raw))
            _deliver(state, request, user, raw, bcc, "sendMail-mime", True)
            return Response(202)
        payload = _parse_json(request)
        unknown = set(payload) - {"message", "saveToSentItems"}
        if unknown:
            raise GraphError(
                400,
                "RequestBodyRead",
                f"The parameter '{sorted(unknown)[0]}' in the request payload is not a valid parameter for the "
                "operation 'sendMail'.",
            )
        message = payload.get("message")
        attachments = _validate_message(message)
        to_cc = _recipients(message, "toRecipients") + _recipients(message, "ccRecipients")
        bcc = _recipients(message, "bccRecipients")
        _require_recipients(to_cc + bcc)
        from_address = ((message.get("from") or {}).get("emailAddress") or {}).get("address")
        _check_from(state, token, user, from_address)
        save = payload.get("saveToSentItems", True)
        if not isinstance(save, bool):
            raise GraphError(400, "RequestBodyRead", "saveToSentItems must be a boolean.")
        raw = mime.build_from_json(message, user, mime.generate_message_id(), attachments)
        _check_message_size(state, len(raw))
        _deliver(state, request, user, raw, bcc, "sendMail-json", save)
        return Response(202)


# --- drafts ------------------------------------------------------------------------------------------


def _draft_resource(request: Request, draft: Draft, user: Dict[str, Any]) -> Dict[str, Any]:
    if draft.kind == "mime":
        parsed = mime.parse(draft.raw)
        subject, to, cc, bcc = parsed["subject"], parsed["to"], parsed["cc"], parsed["bcc"]
        has_attachments = bool(parsed["attachments"])
    else:
        subject = draft.message.get("subject")
        to = _recipients(draft.message, "toRecipients")
        cc = _recipients(draft.message, "ccRecipients")
        bcc = _recipients(draft.message, "bccRecipients")
        has_attachments = bool(draft.message.get("attachments"))

    def entries(items: List[str]) -> List[Dict[str, Any]]:
        return [{"emailAddress": {"address": a, "name": a}} for a in items]

    stamp = utcnow_iso(draft.created_at)
    return {
        "@odata.context": f"{request.http_base}/v1.0/$metadata#users('{user['id']}')/messages/$entity",
        "@odata.etag": 'W/"' + secrets.token_hex(8) + '"',
        "id": draft.id,
        "createdDateTime": stamp,
        "lastModifiedDateTime": stamp,
        "hasAttachments": has_attachments or bool(draft.attachments),
        "internetMessageId": draft.internet_message_id,
        "subject": subject,
        "isDraft": True,
        "isRead": True,
        "parentFolderId": "Drafts",
        "from": {"emailAddress": {"address": user.get("mail"), "name": user.get("displayName")}},
        "toRecipients": entries(to),
        "ccRecipients": entries(cc),
        "bccRecipients": entries(bcc),
    }


def create_draft(state: State, request: Request, target: str) -> Response:
    _check_size(request)
    with state.lock:
        token = _authenticate(state, request)
        user = _resolve_user(state, token, target)
        _require_mail_permission(state, token, user, "write")
        now = state.clock()
        if _is_mime(request):
            raw = _decode_mime(request)
            message_id = mime.header_value(raw, "Message-ID")
            draft = Draft(new_id("AAMkAGI2"), user["userPrincipalName"], "mime", {}, raw,
                          message_id.strip() if message_id else mime.generate_message_id(), now)  # fmt: skip
        else:
            message = _parse_json(request)
            _validate_message(message)
            imid = message.get("internetMessageId") or mime.generate_message_id()
            draft = Draft(new_id("AAMkAGI2"), user["userPrincipalName"], "json", message, b"", imid, now)
        state.drafts[draft.id] = draft
        return json_response(201, _draft_resource(request, draft, user))


def _find_draft(state: State, user: Dict[str, Any], draft_id: str) -> Draft:
    draft = state.drafts.get(draft_id)
    if draft is None or draft.mailbox.lower() != user["userPrincipalName"].lower():
        raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")
    return draft


def _authorized_draft(
    state: State, request: Request, target: str, draft_id: str, need: str
) -> Tuple[Any, Dict[str, Any], Draft]:
    """Token, mailbox and draft of a request on a draft (call with ``state.lock`` held), checked in
    Microsoft's order: token, mailbox, permission, then the item."""
    token = _authenticate(state, request)
    user = _resolve_user(state, token, target)
    _require_mail_permission(state, token, user, need)
    return token, user, _find_draft(state, user, draft_id)


def delete_draft(state: State, request: Request, target: str, draft_id: str) -> Response:
    with state.lock:
        _token, _user, draft = _authorized_draft(state, request, target, draft_id, "write")
        del state.drafts[draft.id]
        for session_id in [s.id for s in state.uploads.values() if s.draft_id == draft.id]:
            del state.uploads[session_id]
        return Response(204)


def send_draft(state: State, request: Request, target: str, draft_id: str) -> Response:
    if request.content_length is None:
        raise GraphError(411, "LengthRequired", "Length Required: send with 'Content-Length: 0'.")
    if request.body:
        raise GraphError(400, "ErrorInvalidRequest", "The send action takes no request body; send 'Content-Length: 0'.")
    with state.lock:
        token, user, draft = _authorized_draft(state, request, target, draft_id, "send")
        if draft.kind == "mime":
            parsed, bcc = _mime_envelope(draft.raw)
            raw = mime.add_attachments(draft.raw, draft.attachments)
            recipients = _all_recipients(parsed, bcc)
            from_address = parsed["from"]
        else:
            inline = _validate_message(draft.message)
            bcc = _recipients(draft.message, "bccRecipients")
            recipients = _recipients(draft.message, "toRecipients") + _recipients(draft.message, "ccRecipients") + bcc
            from_address = ((draft.message.get("from") or {}).get("emailAddress") or {}).get("address")
            raw = mime.build_from_json(draft.message, user, draft.internet_message_id, inline + draft.attachments)
        _require_recipients(recipients)
        _check_from(state, token, user, from_address)
        _check_message_size(state, len(raw))
        _deliver(state, request, user, raw, bcc, "draft-send", True)
        del state.drafts[draft.id]
        for session_id in [s.id for s in state.uploads.values() if s.draft_id == draft.id]:
            del state.uploads[session_id]
        return Response(202)


# --- small attachments ------------------------------------------------------------------------------


def add_attachment(state: State, request: Request, target: str, draft_id: str) -> Response:
    """``POST .../messages/{id}/attachments`` with a ``#microsoft.graph.fileAttachment`` (under 3 MB)."""
    _check_size(request)
    with state.lock:
        _token, user, draft = _authorized_draft(state, request, target, draft_id, "write")
        item = _parse_json(request)
        if str(item.get("@odata.type", "")).lower() != "#microsoft.graph.fileattachment":
            raise GraphError(
                400, "ErrorInvalidAttachmentType", "Only #microsoft.graph.fileAttachment is supported here."
            )
        unknown = set(item) - FILE_ATTACHMENT_PROPERTIES
        if unknown:
            raise unknown_property(sorted(unknown)[0], "fileAttachment")
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise GraphError(400, "ErrorInvalidParameter", "The attachment name is required.")
        content = item.get("contentBytes")
        if not isinstance(content, str):
            raise GraphError(400, "ErrorInvalidParameter", "The attachment's contentBytes is required.")
        try:
            data = base64.b64decode(content, validate=True)
        except (binascii.Error, ValueError):
            raise GraphError(400, "ErrorInvalidRequest", "The attachment's contentBytes is not valid base64.")
        if len(data) > INLINE_ATTACHMENT_LIMIT:
            raise GraphError(
                413,
                "RequestBodyTooLarge",
                f"File attachment '{name}' is {len(data)} bytes: attachments over 3 MB must be uploaded through "
                "an upload session.",
            )
        content_type = item.get("contentType") or "application/octet-stream"
        attachment = {
            "id": new_id("AAMkAGI2"),
            "name": name,
            "content_type": content_type,
            "data": data,
            "is_inline": bool(item.get("isInline")),
            "content_id": item.get("contentId"),
        }
        draft.attachments.append(attachment)
        return json_response(
            201,
            {
                "@odata.context": f"{request.http_base}/v1.0/$metadata#users('{user['id']}')/messages('{draft.id}')"
                "/attachments/$entity",
                "@odata.type": "#microsoft.graph.fileAttachment",
                "id": attachment["id"],
                "lastModifiedDateTime": utcnow_iso(state.clock()),
                "name": name,
                "contentType": content_type,
                "size": len(data),
                "isInline": attachment["is_inline"],
                "contentId": attachment["content_id"],
                "contentLocation": None,
                "contentBytes": content,
            },
        )


# --- upload sessions ---------------------------------------------------------------------------------


def create_upload_session(state: State, request: Request, target: str, draft_id: str) -> Response:
    _check_size(request)
    with state.lock:
        _token, user, draft = _authorized_draft(state, request, target, draft_id, "write")
        payload = _parse_json(request)
        item = payload.get("AttachmentItem")
        if not isinstance(item, dict):
            raise GraphError(400, "ErrorInvalidParameter", "The value of the parameter 'AttachmentItem' is empty.")
        if str(item.get("attachmentType", "")).lower() != "file":
            raise GraphError(400, "ErrorInvalidParameter", "AttachmentItem.attachmentType must be 'file'.")
        name = item.get("name")
        size = item.get("size")
        if not isinstance(name, str) or not name:
            raise GraphError(400, "ErrorInvalidParameter", "AttachmentItem.name is required.")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise GraphError(400, "ErrorInvalidParameter", "AttachmentItem.size must be a number of bytes.")
        if size < UPLOAD_MIN:
            raise GraphError(
                400,
                "ErrorAttachmentSizeShouldNotBeLessThanMinimumSize",
                "Attachment size must be greater than the minimum size.",
            )
        if size > UPLOAD_MAX or size > state.max_upload():
            raise GraphError(
                400,
                "ErrorMessageSizeExceeded",
                f"The attachment of {size} bytes exceeds the maximum supported message size of "
                f"{state.max_upload()} bytes.",
            )
        now = state.clock()
        session = UploadSession(
            id=new_id("AAMkAGI2"),
            tempauth=secrets.token_urlsafe(48),
            draft_id=draft.id,
            mailbox=user["userPrincipalName"],
            name=name,
            size=size,
            content_type=item.get("contentType") or "application/octet-stream",
            is_inline=bool(item.get("isInline")),
            content_id=item.get("contentId"),
            expires_at=now + float(state.config["upload_session_lifetime"]),
        )
        state.uploads[session.id] = session
        return json_response(
            201,
            {
                "@odata.context": f"{request.http_base}/v1.0/$metadata#microsoft.graph.uploadSession",
                "uploadUrl": f"{request.http_base}/upload/{session.id}?tempauth={session.tempauth}",
                "expirationDateTime": utcnow_iso(session.expires_at),
                "nextExpectedRanges": ["0-"],
            },
        )


_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+)$")


def _session_state(session: UploadSession, request: Request) -> Dict[str, Any]:
    return {
        "@odata.context": f"{request.http_base}/$metadata#Users/Messages/AttachmentSessions/$entity",
        "expirationDateTime": utcnow_iso(session.expires_at),
        "nextExpectedRanges": [f"{len(session.data)}-"],
    }


def upload(state: State, request: Request, session_id: str) -> Response:
    """PUT a chunk, GET the expected ranges, DELETE to cancel. The URL carries its own token."""
    if request.header("authorization") is not None:
        raise GraphError(
            401,
            "InvalidAuthenticationToken",
            "The upload URL is pre-authenticated: do not send an Authorization header to it.",
        )
    with state.lock:
        session = state.uploads.get(session_id)
        if session is None or state.clock() >= session.expires_at:
            raise GraphError(404, "ErrorItemNotFound", "The upload session was not found or has expired.")
        if not secrets.compare_digest((request.arg("tempauth") or "").encode(), session.tempauth.encode()):
            raise GraphError(401, "InvalidAuthenticationToken", "The upload URL's token is missing or invalid.")
        if request.method == "GET":
            return json_response(200, _session_state(session, request))
        if request.method == "DELETE":
            del state.uploads[session.id]
            return Response(204)
        return _put_chunk(state, request, session)


def _put_chunk(state: State, request: Request, session: UploadSession) -> Response:
    if request.content_length is None:
        raise GraphError(411, "LengthRequired", "Content-Length is required.")
    if len(request.body) > CHUNK_MAX:
        raise GraphError(
            413, "RequestBodyTooLarge", f"A chunk may carry at most 4 MB; this one carries {len(request.body)} bytes."
        )
    header = request.header("content-range") or ""
    match = _RANGE.match(header.strip())
    if match is None:
        raise GraphError(
            400,
            "ErrorInvalidRequest",
            f"Content-Range '{header}' is not of the form 'bytes {{start}}-{{end}}/{{total}}'.",
        )
    start, end, total = (int(g) for g in match.groups())
    expected = len(session.data)
    if total != session.size:
        raise GraphError(
            400,
            "ErrorInvalidRequest",
            f"Content-Range total {total} differs from the session's declared size {session.size}.",
        )
    if end < start or end >= total:
        raise GraphError(400, "ErrorInvalidRequest", f"Content-Range '{header}' is not a valid range of {total} bytes.")
    if start != expected:
        raise GraphError(
            416, "InvalidRange", f"Content-Range starts at {start}; the next expected range is '{expected}-'."
        )
    length = end - start + 1
    if request.content_length != length or len(request.body) != length:
        raise GraphError(
            400,
            "ErrorInvalidRequest",
            f"Content-Length {request.content_length} (body {len(request.body)} bytes) does not match the "
            f"{length} bytes of Content-Range '{header}'.",
        )
    last = end + 1 == total
    if not last and length % CHUNK_MULTIPLE != 0:
        raise GraphError(
            400,
            "ErrorInvalidRequest",
            f"Chunk of {length} bytes: every chunk but the last must be a multiple of 320 KiB (327680 bytes).",
        )
    session.data.extend(request.body)
    if not last:
        return json_response(200, _session_state(session, request))
    draft = state.drafts.get(session.draft_id)
    del state.uploads[session.id]
    if draft is None:
        raise GraphError(404, "ErrorItemNotFound", "The message of this upload session no longer exists.")
    attachment_id = new_id("AAMkAGI2")
    draft.attachments.append(
        {
            "id": attachment_id,
            "name": session.name,
            "content_type": session.content_type,
            "data": bytes(session.data),
            "is_inline": session.is_inline,
            "content_id": session.content_id,
        }
    )
    user = state.find_user(session.mailbox) or {"id": session.mailbox}
    location = f"{request.http_base}/v1.0/users('{user['id']}')/messages('{draft.id}')/attachments('{attachment_id}')"
    return Response(201, b"", [("Location", location)])


# --- Sent Items --------------------------------------------------------------------------------------

_FILTER = re.compile(r"^\s*internetMessageId\s+eq\s+'((?:[^']|'')*)'\s*$", re.IGNORECASE)


def sent_items(state: State, request: Request, target: str, folder: str) -> Response:
    with state.lock:
        token = _authenticate(state, request)
        user = _resolve_user(state, token, target)
        _require_mail_permission(state, token, user, "read")
        items = state.sent_items.get(user["userPrincipalName"].lower(), []) if folder.lower() == "sentitems" else []
        wanted: Optional[str] = None
        raw_filter = request.arg("$filter")
        if raw_filter is not None:
            match = _FILTER.match(raw_filter)
            if match is None:
                raise GraphError(400, "BadRequest", f"Invalid filter clause: '{raw_filter}'.")
            wanted = match.group(1).replace("''", "'")
        value = [
            {"@odata.etag": 'W/"' + item["id"][-12:] + '"', "isDraft": False, **item}
            for item in items
            if wanted is None or item["internetMessageId"] == wanted
        ]
        return json_response(
            200,
            {"@odata.context": f"{request.http_base}/v1.0/$metadata#users('{user['id']}')/mailFolders('{folder}')/messages",
             "value": value},
        )  # fmt: skip


def not_found(state: State, request: Request) -> Response:
    segment = request.path.rstrip("/").rsplit("/", 1)[-1]
    parts = request.path.strip("/").split("/")
    if len(parts) > 1 and parts[1].lower() in ("v1.0", "beta"):
        segment = parts[1]  # "/v1.0/v1.0/me": Graph names the version repeated (a batch item's url with /v1.0)
    raise GraphError(400, "BadRequest", f"Resource not found for the segment '{segment}'.")
