"""MailboxReader: what comes back. Finds new mail in a mailbox folder with a delta query, reads each message
as MIME, marks it read and files it in another folder.

Every call goes through :class:`GraphMailClient` (same tokens, retries, records, redaction). The reader keeps
no state: the caller stores the delta link it returns and decides, per message, what is done.

Ids: every request asks for immutable ids (``Prefer: IdType="ImmutableId"``), so a message keeps its id when
it is moved and the caller can tell "already handled" from "new" across crashes and restarts.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional
from urllib.parse import quote, urlencode

from .client import GraphMailClient, _Context, _json
from .errors import GraphApiError, PermissionDenied

WELL_KNOWN_FOLDERS = ("inbox", "archive", "deleteditems", "junkemail", "sentitems", "drafts")
IMMUTABLE_IDS = 'IdType="ImmutableId"'
DELTA_SELECT = "id,internetMessageId,receivedDateTime,subject,from,isRead"
READ_HINT = (
    "Reading the mailbox needs the Graph permission Mail.ReadWrite (delegated: sign in again after adding it; "
    "application: grant admin consent, and allow the mailbox in the application access policy)."
)


@dataclass
class IncomingMessage:
    """A message a delta round reported, without its content."""

    id: str
    internet_message_id: Optional[str] = None
    received: Optional[str] = None  # ISO 8601, as Graph gives it
    subject: str = ""
    sender: Optional[str] = None
    is_read: bool = False


@dataclass
class DeltaPage:
    messages: List[IncomingMessage] = field(default_factory=list)
    removed: List[str] = field(default_factory=list)
    next_link: Optional[str] = None  # more pages in this round
    delta_link: Optional[str] = None  # the round is complete: keep this for the next one


class MailboxReader:
    """Reads one mailbox (``mailbox``: its address) through ``client``."""

    def __init__(self, client: GraphMailClient, mailbox: str, page_size: int = 50) -> None:
        self.client = client
        self.mailbox = mailbox
        self.page_size = page_size

    # -- folders ------------------------------------------------------------------------------------------

    def folder_id(self, name: str) -> Optional[str]:
        """The id of a well-known folder ("inbox") or of a top-level folder with this display name."""
        if name.strip().lower() in WELL_KNOWN_FOLDERS:
            return str(self._get(f"/mailFolders/{name.strip().lower()}", "getFolder")["id"])
        escaped = name.strip().replace("'", "''")
        query = urlencode({"$filter": f"displayName eq '{escaped}'", "$select": "id,displayName"}, quote_via=quote)
        found = self._get(f"/mailFolders?{query}", "listFolders").get("value") or []
        return str(found[0]["id"]) if found else None

    def ensure_folder(self, name: str) -> str:
        """The id of the folder ``name``, created at the top level when missing (never duplicated)."""
        existing = self.folder_id(name)
        if existing:
            return existing
        try:
            response = self._call("createFolder", "POST", "/mailFolders", json_body={"displayName": name.strip()})
        except GraphApiError as exc:
            if exc.code != "ErrorFolderExists":  # another worker created it meanwhile
                raise
            return self.folder_id(name) or ""
        return str(_json(response)["id"])

    # -- delta rounds ---------------------------------------------------------------------------------------

    def start_link(self, folder: str, since: Optional[datetime.datetime] = None) -> str:
        """The first page of a new round over ``folder`` (id or well-known name): only mail received at or
        after ``since`` (UTC), so a first sync never imports the mailbox's history."""
        args = {"$select": DELTA_SELECT}
        if since is not None:
            args["$filter"] = f"receivedDateTime ge {_iso(since)}"
        return f"{self._base()}/mailFolders/{quote(folder, safe='')}/messages/delta?" + urlencode(args, quote_via=quote)

    def delta_page(self, link: str) -> DeltaPage:
        """One page of a round (``link``: from :meth:`start_link`, or a next/delta link Graph gave).

        Raises :class:`SyncStateLost` when Graph no longer knows the token: start a new round."""
        response = self._call(
            "delta", "GET", link, headers={"Prefer": f"odata.maxpagesize={self.page_size}, {IMMUTABLE_IDS}"}
        )
        payload = _json(response)
        page = DeltaPage(next_link=payload.get("@odata.nextLink"), delta_link=payload.get("@odata.deltaLink"))
        for item in payload.get("value") or []:
            if not isinstance(item, dict) or not item.get("id"):
                continue
            if "@removed" in item:
                page.removed.append(str(item["id"]))
            else:
                page.messages.append(_incoming(item))
        return page

    # -- one message ----------------------------------------------------------------------------------------

    def fetch_mime(self, message_id: str) -> bytes:
        """The message exactly as received (RFC 5322), for Odoo's mail gateway."""
        return self._call("messageValue", "GET", f"/messages/{quote(message_id, safe='')}/$value").content

    def mark_read(self, message_id: str) -> None:
        self._call("updateMessage", "PATCH", f"/messages/{quote(message_id, safe='')}", json_body={"isRead": True})

    def move(self, message_id: str, folder_id: str) -> str:
        """Move into ``folder_id``; returns the message's id there (unchanged: immutable ids)."""
        response = self._call(
            "moveMessage",
            "POST",
            f"/messages/{quote(message_id, safe='')}/move",
            json_body={"destinationId": folder_id},
        )
        return str(_json(response).get("id") or message_id)

    # -- plumbing -----------------------------------------------------------------------------------------

    def _base(self) -> str:
        return self.client.credentials.cloud.graph_url + self.client._mailbox_path(self.mailbox)

    def _get(self, path: str, operation: str) -> Dict[str, Any]:
        return _json(self._call(operation, "GET", path))

    def _call(self, operation: str, method: str, path: str, json_body: Any = None, headers: Any = None):
        url = path if "://" in path else self._base() + path
        ctx = _Context(self.client.transport.deadline())
        try:
            return self.client._request(
                ctx,
                operation,
                method,
                url,
                json_body=json_body,
                headers=headers or {"Prefer": IMMUTABLE_IDS},
                # Reads, PATCH isRead and move to a fixed folder change nothing when repeated.
                idempotent=True,
            )
        except PermissionDenied as exc:
            exc.hint = READ_HINT
            raise


def _incoming(item: Dict[str, Any]) -> IncomingMessage:
    sender = ((item.get("from") or {}).get("emailAddress") or {}).get("address")
    return IncomingMessage(
        id=str(item["id"]),
        internet_message_id=item.get("internetMessageId"),
        received=item.get("receivedDateTime"),
        subject=item.get("subject") or "",
        sender=sender,
        is_read=bool(item.get("isRead")),
    )


def _iso(moment: datetime.datetime) -> str:
    if moment.tzinfo is not None:
        moment = moment.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    return moment.replace(microsecond=0).isoformat() + "Z"


def parse_received(value: Optional[str]) -> Optional[datetime.datetime]:
    """Graph's ``receivedDateTime`` ("2026-12-06T07:00:00Z") as a naive UTC datetime."""
    if not value:
        return None
    try:
        parsed = datetime.datetime.strptime(value.rstrip("Z")[:19], "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        return None
    return parsed
