"""Graph reading endpoints: mail folders, get a message (JSON or MIME ``$value``), mark read, move.

Same order of checks as the sending side (graph.py): token, mailbox, permission, then the item and payload.
The message delta query lives in delta.py and shares the helpers here.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Dict, List, Tuple

from . import graph
from . import mailbox as store
from .mailbox import Folder, Mailbox, StoredMessage
from .state import AccessToken, State
from .web import GraphError, Request, Response, json_response, utcnow_iso

NOT_FOUND = "The specified object was not found in the store."
FULL_SCOPES = ("Mail.Read", "Mail.ReadWrite")
FULL_SHARED_SCOPES = ("Mail.Read.Shared", "Mail.ReadWrite.Shared")
FULL_ROLES = ("Mail.Read", "Mail.ReadWrite")
# What Mail.ReadBasic does not let an app see (Microsoft: "except body, previewBody, attachments").
BASIC_HIDDEN = {"body", "bodyPreview", "uniqueBody"}
# Message properties $select may name; the GET default leaves out the two Graph only returns on request.
SELECTABLE = (
    "id", "createdDateTime", "lastModifiedDateTime", "changeKey", "categories", "receivedDateTime",
    "sentDateTime", "hasAttachments", "internetMessageId", "subject", "bodyPreview", "importance",
    "parentFolderId", "conversationId", "isDeliveryReceiptRequested", "isReadReceiptRequested", "isRead",
    "isDraft", "webLink", "inferenceClassification", "body", "sender", "from", "toRecipients", "ccRecipients",
    "bccRecipients", "replyTo", "flag", "uniqueBody", "internetMessageHeaders",
)  # fmt: skip
GET_DEFAULT = [p for p in SELECTABLE if p not in ("uniqueBody", "internetMessageHeaders")]
WRITABLE = {"isRead", "categories"}


# --- access ------------------------------------------------------------------------------------------


def _full_read(token: AccessToken, user: Dict[str, Any]) -> bool:
    """Mail.Read(Write) rather than only Mail.ReadBasic; the Send As grant was checked before."""
    if token.kind == "app":
        return any(r in token.roles for r in FULL_ROLES)
    if graph._is_self(token, user):
        return any(s in token.scopes for s in FULL_SCOPES)
    return any(s in token.scopes for s in FULL_SHARED_SCOPES)


def access(state: State, request: Request, target: str, need: str) -> Tuple[Dict[str, Any], Mailbox, bool]:
    """(user, mailbox, may see bodies) for ``need`` "read" (ReadBasic enough), "full" or "write"."""
    token = graph._authenticate(state, request)
    user = graph._resolve_user(state, token, target)
    graph._require_mail_permission(state, token, user, "write" if need == "write" else "read")
    full = need == "write" or _full_read(token, user)
    if need == "full" and not full:
        raise GraphError(403, "ErrorAccessDenied", graph.ACCESS_DENIED)
    return user, store.get_mailbox(state, user["userPrincipalName"]), full


def folder_of(box: Mailbox, key: str) -> Folder:
    folder = store.find_folder(box, key)
    if folder is None:
        raise GraphError(404, "ErrorItemNotFound", NOT_FOUND)
    return folder


def message_of(box: Mailbox, message_id: str) -> StoredMessage:
    message = box.messages.get(message_id)
    if message is None:
        raise GraphError(404, "ErrorItemNotFound", NOT_FOUND)
    return message


def prefer(request: Request) -> Dict[str, str]:
    """``Prefer: odata.maxpagesize=5, IdType="ImmutableId"`` as {lowercased name: unquoted value}."""
    found: Dict[str, str] = {}
    for item in (request.header("prefer") or "").split(","):
        name, _, value = item.partition("=")
        if name.strip():
            found[name.strip().lower()] = value.strip().strip('"')
    return found


def select(request: Request, default: List[str]) -> List[str]:
    raw = request.arg("$select")
    if raw is None:
        return default
    known = {p.lower(): p for p in SELECTABLE}
    chosen = []
    for name in (n.strip() for n in raw.split(",")):
        if not name:
            continue
        if name.lower() not in known:
            raise GraphError(
                400,
                "RequestBroker--ParseUri",
                f"Could not find a property named '{name}' on type 'microsoft.graph.message'.",
            )
        chosen.append(known[name.lower()])
    return chosen


# --- rendering ---------------------------------------------------------------------------------------


def properties(message: StoredMessage, names: List[str], full: bool) -> Dict[str, Any]:
    meta = message.meta
    received = utcnow_iso(message.received)
    thread = re.sub(r"^((re|fw|fwd|aw|wg)\s*:\s*)+", "", meta["subject"] or "", flags=re.IGNORECASE)
    values = {
        "id": message.id,
        "createdDateTime": received,
        "lastModifiedDateTime": utcnow_iso(message.modified),
        "changeKey": message.change_key,
        "categories": list(message.categories),
        "receivedDateTime": received,
        "sentDateTime": utcnow_iso(meta["sent"]) if meta["sent"] is not None else received,
        "hasAttachments": meta["hasAttachments"],
        "internetMessageId": meta["internetMessageId"],
        "subject": meta["subject"],
        "bodyPreview": meta["bodyPreview"],
        "importance": "normal",
        "parentFolderId": message.folder_id,
        # Exchange groups a conversation by its topic; a digest of the subject is stable the same way.
        "conversationId": "AAQkAGI2" + hashlib.sha256(thread.lower().encode()).hexdigest()[:40],
        "isDeliveryReceiptRequested": False,
        "isReadReceiptRequested": False,
        "isRead": message.is_read,
        "isDraft": False,
        "webLink": f"https://outlook.office365.com/owa/?ItemID={message.id}&exvsurl=1&viewmodel=ReadMessageItem",
        "inferenceClassification": "focused",
        "body": meta["body"],
        "sender": meta["sender"],
        "from": meta["from"],
        "toRecipients": meta["toRecipients"],
        "ccRecipients": meta["ccRecipients"],
        "bccRecipients": [],
        "replyTo": meta["replyTo"],
        "flag": {"flagStatus": "notFlagged"},
        "uniqueBody": meta["body"],
        "internetMessageHeaders": [{"name": n, "value": v} for n, v in meta["headers"]],
    }
    return {n: values[n] for n in names if full or n not in BASIC_HIDDEN}


def message_resource(
    request: Request, user: Dict[str, Any], message: StoredMessage, names: List[str], full: bool
) -> Dict[str, Any]:
    return {
        "@odata.context": f"{request.http_base}/v1.0/$metadata#users('{user['id']}')/messages/$entity",
        "@odata.etag": f'W/"{message.change_key}"',
        "id": message.id,
        **properties(message, names, full),
    }


def _folder_resource(box: Mailbox, folder: Folder) -> Dict[str, Any]:
    total, unread = store.folder_counts(box, folder)
    return {
        "id": folder.id,
        "displayName": folder.name,
        "parentFolderId": folder.parent_id,
        "childFolderCount": 0,
        "unreadItemCount": unread,
        "totalItemCount": total,
        "isHidden": False,
    }


# --- folders -----------------------------------------------------------------------------------------

_NAME_FILTER = re.compile(r"^\s*displayName\s+eq\s+'((?:[^']|'')*)'\s*$", re.IGNORECASE)


def _count_arg(request: Request, name: str, default: int) -> int:
    raw = request.arg(name)
    if raw is None:
        return default
    if not raw.strip().isdigit():
        raise GraphError(400, "BadRequest", f"Invalid value '{raw}' for query option '{name}'.")
    return int(raw)


def list_folders(state: State, request: Request, target: str) -> Response:
    with state.lock:
        user, box, _full = access(state, request, target, "read")
        folders = list(box.folders.values())
        raw_filter = request.arg("$filter")
        if raw_filter is not None:
            match = _NAME_FILTER.match(raw_filter)
            if match is None:
                raise GraphError(
                    400, "ErrorInvalidUrlQueryFilter", "The query filter contains one or more invalid nodes."
                )
            wanted = match.group(1).replace("''", "'").lower()
            folders = [f for f in folders if f.name.lower() == wanted]
        top, skip = _count_arg(request, "$top", 10), _count_arg(request, "$skip", 0)  # Graph pages folders by 10
        payload: Dict[str, Any] = {
            "@odata.context": f"{request.http_base}/v1.0/$metadata#users('{user['id']}')/mailFolders",
            "value": [_folder_resource(box, f) for f in folders[skip : skip + top]],
        }
        if len(folders) > skip + top:
            query = f"$top={top}&$skip={skip + top}" + (f"&$filter={raw_filter}" if raw_filter else "")
            payload["@odata.nextLink"] = f"{request.http_base}{request.path}?{query}"
        return json_response(200, payload)


def get_folder(state: State, request: Request, target: str, folder_key: str) -> Response:
    with state.lock:
        user, box, _full = access(state, request, target, "read")
        folder = folder_of(box, folder_key)
        context = f"{request.http_base}/v1.0/$metadata#users('{user['id']}')/mailFolders/$entity"
        return json_response(200, {"@odata.context": context, **_folder_resource(box, folder)})


def create_mail_folder(state: State, request: Request, target: str) -> Response:
    graph._check_size(request)
    with state.lock:
        user, box, _full = access(state, request, target, "write")
        payload = graph._parse_json(request)
        unknown = set(payload) - {"displayName", "isHidden"}
        if unknown:
            raise graph.unknown_property(sorted(unknown)[0], "mailFolder")
        name = payload.get("displayName")
        if not isinstance(name, str) or not name.strip():
            raise GraphError(400, "ErrorInvalidParameter", "The value of the parameter 'DisplayName' is empty.")
        if any(f.name.lower() == name.lower() for f in box.folders.values()):
            raise GraphError(409, "ErrorFolderExists", "A folder with the specified name already exists.")
        folder = store.create_folder(box, name)
        context = f"{request.http_base}/v1.0/$metadata#users('{user['id']}')/mailFolders/$entity"
        return json_response(201, {"@odata.context": context, **_folder_resource(box, folder)})


# --- messages ----------------------------------------------------------------------------------------


def get_message(state: State, request: Request, target: str, message_id: str) -> Response:
    with state.lock:
        user, box, full = access(state, request, target, "read")
        message = message_of(box, message_id)
        return json_response(200, message_resource(request, user, message, select(request, GET_DEFAULT), full))


def message_value(state: State, request: Request, target: str, message_id: str) -> Response:
    """The MIME exactly as stored; Mail.ReadBasic may not read it (it holds the body)."""
    with state.lock:
        _user, box, _full = access(state, request, target, "full")
        message = message_of(box, message_id)
        return Response(200, message.raw, [("Content-Type", "text/plain")])


def update_message(state: State, request: Request, target: str, message_id: str) -> Response:
    graph._check_size(request)
    with state.lock:
        user, box, full = access(state, request, target, "write")
        message = message_of(box, message_id)
        payload = graph._parse_json(request)
        for name in payload:
            if name not in SELECTABLE and name not in graph.MESSAGE_PROPERTIES:
                raise graph.unknown_property(name, "message", open_type_hint=True)
            if name not in WRITABLE:
                raise GraphError(400, "ErrorInvalidPropertySet", f"Set action is invalid for property '{name}'.")
        if "isRead" in payload and not isinstance(payload["isRead"], bool):
            raise GraphError(400, "RequestBodyRead", "Cannot convert the literal to the expected type 'Edm.Boolean'.")
        categories = payload.get("categories", [])
        if not isinstance(categories, list) or not all(isinstance(c, str) for c in categories):
            raise GraphError(400, "RequestBodyRead", "categories must be a collection of strings.")
        store.update(state, message, payload)
        return json_response(200, message_resource(request, user, message, GET_DEFAULT, full))


def move_message(state: State, request: Request, target: str, message_id: str) -> Response:
    graph._check_size(request)
    with state.lock:
        user, box, full = access(state, request, target, "write")
        message = message_of(box, message_id)
        payload = graph._parse_json(request)
        destination_key = payload.get("destinationId")
        if not isinstance(destination_key, str) or not destination_key:
            raise GraphError(400, "ErrorInvalidParameter", "The value of the parameter 'DestinationId' is empty.")
        destination = folder_of(box, destination_key)
        keep_id = prefer(request).get("idtype", "").lower() == "immutableid"
        moved = store.move(state, box, message, destination, keep_id)
        return json_response(201, message_resource(request, user, moved, GET_DEFAULT, full))
