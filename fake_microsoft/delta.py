"""``GET .../mailFolders/{folder}/messages/delta``: rounds of pages, skip tokens, delta tokens.

A round starts without a token (everything in the folder) or with a delta token (what changed since that
token's round started). Its entries are fixed when it starts; pages walk them through skip tokens, and the
last page hands out a delta token remembering the round's start in the change sequence (mailbox.py).
Tokens are opaque keys into ``state.delta_tokens``; they expire after ``delta_token_lifetime`` seconds.
"""

from __future__ import annotations

import calendar
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import quote

from .inbox import access, folder_of, prefer, properties, select
from .mailbox import Folder, Mailbox
from .state import State
from .web import GraphError, Request, Response, json_response

DELTA_DEFAULT = ["receivedDateTime", "subject", "internetMessageId", "isRead", "from", "parentFolderId"]
DEFAULT_PAGE = 10
SUPPORTED = {"$select", "$filter", "$top", "$skiptoken", "$deltatoken"}
SYNC_STATE_GONE = "The sync state generation is not found. Start the sync again without a delta token."
_FILTER = re.compile(r"^\s*receivedDateTime\s+(ge|gt)\s+(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?Z\s*$", re.IGNORECASE)
Entry = Tuple[str, str]  # ("message" | "removed", message id)


@dataclass
class DeltaToken:
    mailbox: str  # lowercased userPrincipalName
    folder_id: str
    watermark: int  # state.mail_seq when the round started
    issued_at: float
    entries: Optional[List[Entry]] = None  # skip tokens: the rest of the round; None for delta tokens
    expired: bool = False


def _received_filter(request: Request) -> Optional[Tuple[str, float]]:
    raw = request.arg("$filter")
    if raw is None:
        return None
    match = _FILTER.match(raw)
    if match is None:
        raise GraphError(400, "ErrorInvalidUrlQueryFilter", "The query filter contains one or more invalid nodes.")
    moment = calendar.timegm(time.strptime(match.group(2), "%Y-%m-%dT%H:%M:%S")) + float(match.group(3) or 0)
    return match.group(1).lower(), moment


def _matches(received: float, condition: Optional[Tuple[str, float]]) -> bool:
    if condition is None:
        return True
    seconds = int(received)  # Graph compares what it shows: receivedDateTime to the second
    return seconds >= condition[1] if condition[0] == "ge" else seconds > condition[1]


def _round(box: Mailbox, folder: Folder, since: Optional[int], condition: Optional[Tuple[str, float]]) -> List[Entry]:
    inside = [m for m in box.messages.values() if m.folder_id == folder.id]
    if since is None:
        # The first round lists the folder newest first, as Exchange does (hence $top keeps the newest).
        chosen = sorted((m for m in inside if _matches(m.received, condition)), key=lambda m: (m.received, m.seq))
        return [("message", m.id) for m in reversed(chosen)]
    changed = sorted((m for m in inside if m.seq > since and _matches(m.received, condition)), key=lambda m: m.seq)
    present = {m.id for m in inside}
    removed: List[str] = []
    for seq, folder_id, message_id in box.removals:
        if seq > since and folder_id == folder.id and message_id not in present and message_id not in removed:
            removed.append(message_id)
    return [("message", m.id) for m in changed] + [("removed", i) for i in removed]


def _load(state: State, value: str, kind: str, upn: str, folder: Folder) -> DeltaToken:
    record = state.delta_tokens.get(value)
    if (
        not isinstance(record, DeltaToken)
        or (record.entries is None) != (kind == "delta")
        or record.mailbox != upn.lower()
        or record.folder_id != folder.id
    ):
        raise GraphError(400, "BadRequest", f"The {kind} token is malformed or not valid for this folder.")
    if record.expired or state.clock() - record.issued_at >= float(state.config["delta_token_lifetime"]):
        raise GraphError(410, "SyncStateNotFound", SYNC_STATE_GONE)
    return record


def _issue(state: State, record: DeltaToken) -> str:
    value = "MCSAAA" + secrets.token_urlsafe(48)
    state.delta_tokens[value] = record
    return value


def _link(request: Request, token_name: str, token: str) -> str:
    # Graph keeps $select and $filter in its links (not $top, which only capped the round just ended).
    pairs = [(k, request.arg(k)) for k in ("$select", "$filter") if request.arg(k) is not None]
    pairs.append((token_name, token))
    query = "&".join(f"{k}={quote(str(v), safe=',:()')}" for k, v in pairs)
    return f"{request.http_base}{request.path}?{query}"


def _page_size(request: Request) -> Tuple[int, Optional[int]]:
    raw = prefer(request).get("odata.maxpagesize", "")
    if raw.isdigit() and int(raw) > 0:
        return int(raw), int(raw)
    return DEFAULT_PAGE, None


def _top(request: Request) -> Optional[int]:
    raw = request.arg("$top")
    if raw is None:
        return None
    if not raw.strip().isdigit():
        raise GraphError(400, "BadRequest", f"Invalid value '{raw}' for query option '$top'.")
    return int(raw)


def delta(state: State, request: Request, target: str, folder_key: str) -> Response:
    with state.lock:
        user, box, full = access(state, request, target, "read")
        folder = folder_of(box, folder_key)
        unsupported = sorted(k for k in request.query if k.startswith("$") and k not in SUPPORTED)
        if unsupported:
            raise GraphError(
                400, "ErrorInvalidUrlQuery", "The following parameters are not supported with change tracking over "
                f"the 'Messages' resource: '{', '.join(unsupported)}'."
            )  # fmt: skip
        names = select(request, DELTA_DEFAULT)
        condition = _received_filter(request)
        top = _top(request)
        page_size, applied = _page_size(request)
        skip_token, delta_token = request.arg("$skiptoken"), request.arg("$deltatoken")
        upn = user["userPrincipalName"]
        if skip_token is not None and delta_token is not None:
            raise GraphError(400, "BadRequest", "A request may carry $skiptoken or $deltatoken, not both.")
        if skip_token is not None:
            record = _load(state, skip_token, "skip", upn, folder)
            entries, watermark = record.entries or [], record.watermark
        else:
            since = _load(state, delta_token, "delta", upn, folder).watermark if delta_token is not None else None
            watermark = state.mail_seq
            entries = _round(box, folder, since, condition)
            if top is not None:
                entries = entries[:top]  # real Graph: $top ends the whole round; the rest is never sent
        page, rest = entries[:page_size], entries[page_size:]
        value: List[Dict[str, Any]] = []
        for kind, message_id in page:
            message = box.messages.get(message_id)
            if kind == "message" and message is not None and message.folder_id == folder.id:
                value.append(
                    {
                        "@odata.type": "#microsoft.graph.message",
                        "@odata.etag": f'W/"{message.change_key}"',
                        "id": message.id,
                        "changeKey": message.change_key,
                        **properties(message, names, full),
                    }
                )
            else:  # gone from the folder (moved) since the round started, or reported gone
                value.append({"id": message_id, "@removed": {"reason": "deleted"}})
        payload: Dict[str, Any] = {
            "@odata.context": f"{request.http_base}/v1.0/$metadata#Collection(message)",
            "value": value,
        }
        now = state.clock()
        if rest:
            token = _issue(state, DeltaToken(upn.lower(), folder.id, watermark, now, rest))
            payload["@odata.nextLink"] = _link(request, "$skiptoken", token)
        else:
            token = _issue(state, DeltaToken(upn.lower(), folder.id, watermark, now))
            payload["@odata.deltaLink"] = _link(request, "$deltatoken", token)
        headers = [("Preference-Applied", f"odata.maxpagesize={applied}")] if applied else []
        return json_response(200, payload, headers)


def expire_all(state: State) -> None:
    """Every token issued so far answers 410 SyncStateNotFound from now on."""
    with state.lock:
        for record in state.delta_tokens.values():
            record.expired = True
