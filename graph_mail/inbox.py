"""MailboxReader: what comes back. Finds new mail in a mailbox folder with a delta query, reads each message
as MIME, marks it read and files it in another folder.

Every call goes through :class:`GraphMailClient` (same tokens, retries, records, redaction). The reader keeps
no state: the caller stores the delta link it returns and decides, per message, what is done.

Requests: a delta page lists up to ``page_size`` messages; their MIME is read 20 at a time and they are
filed 10 at a time (mark read, then move: 20 operations) through Graph's JSON batching (``POST /$batch``),
so a message costs far less than one HTTP request. Items Microsoft throttles inside a batch are retried
alone, after their ``Retry-After``.

Ids: every request asks for immutable ids (``Prefer: IdType="ImmutableId"``), so a message keeps its id when
it is moved and the caller can tell "already handled" from "new" across crashes and restarts.
"""

from __future__ import annotations

import base64
import datetime
import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union
from urllib.parse import quote, urlencode

from .client import CallRecord, GraphMailClient, _Context, _json
from .errors import GraphApiError, PermissionDenied, error_from_graph_response
from .retry import parse_retry_after

BATCH_LIMIT = 20  # Graph's maximum of requests in one $batch
# Inside a batch: statuses Microsoft answers before doing anything (or for an item that depended on one).
RETRY_IN_BATCH = (424, 429, 503)
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

    # -- many messages at once ($batch) ----------------------------------------------------------------------

    def fetch_mimes(self, message_ids: Sequence[str]) -> Dict[str, Union[bytes, GraphApiError]]:
        """The MIME of each message (or the error Microsoft gave for it), 20 per HTTP request."""
        results: Dict[str, Union[bytes, GraphApiError]] = {}
        for start in range(0, len(message_ids), BATCH_LIMIT):
            chunk = message_ids[start : start + BATCH_LIMIT]
            items = [
                {"id": str(n), "method": "GET", "url": f"{self._mailbox()}/messages/{quote(m, safe='')}/$value",
                 "headers": {"Prefer": IMMUTABLE_IDS}}
                for n, m in enumerate(chunk)
            ]  # fmt: skip
            answers = self._batch(items, "messageValue")
            for n, message_id in enumerate(chunk):
                answer = answers[str(n)]
                results[message_id] = answer if isinstance(answer, GraphApiError) else _bytes(answer)
        return results

    def file_many(self, moves: Sequence[Tuple[str, str]]) -> Dict[str, Optional[GraphApiError]]:
        """Mark read then move each (message id, folder id); None where it worked, else Microsoft's error."""
        results: Dict[str, Optional[GraphApiError]] = {}
        per_batch = BATCH_LIMIT // 2
        for start in range(0, len(moves), per_batch):
            chunk = moves[start : start + per_batch]
            items: List[Dict[str, Any]] = []
            for n, (message_id, folder_id) in enumerate(chunk):
                path = f"{self._mailbox()}/messages/{quote(message_id, safe='')}"
                headers = {"Prefer": IMMUTABLE_IDS, "Content-Type": "application/json"}
                items.append({"id": f"r{n}", "method": "PATCH", "url": path, "headers": headers,
                              "body": {"isRead": True}})  # fmt: skip
                items.append({"id": f"m{n}", "method": "POST", "url": f"{path}/move", "headers": headers,
                              "body": {"destinationId": folder_id}, "dependsOn": [f"r{n}"]})  # fmt: skip
            answers = self._batch(items, "fileMessages")
            for n, (message_id, _folder) in enumerate(chunk):
                failed = [a for a in (answers[f"r{n}"], answers[f"m{n}"]) if isinstance(a, GraphApiError)]
                results[message_id] = failed[0] if failed else None
        return results

    def _batch(self, items: List[Dict[str, Any]], operation: str) -> Dict[str, Any]:
        """Run ``items`` as one $batch; retry the items Microsoft throttled (with what they depend on)."""
        pending = {item["id"]: item for item in items}
        answers: Dict[str, Any] = {}
        policy = self.client.retry
        attempt = 0
        while pending:
            attempt += 1
            requests = []
            for item in pending.values():
                request = {k: v for k, v in item.items() if k != "dependsOn"}
                # What an item depends on may have succeeded in an earlier round: only pending ones count.
                depends = [d for d in item.get("dependsOn", []) if d in pending]
                if depends:
                    request["dependsOn"] = depends
                requests.append(request)
            response = self._call(
                operation, "POST", self.client.credentials.cloud.graph_url + "/$batch", json_body={"requests": requests}
            )
            wait = 0.0
            for answer in _json(response).get("responses") or []:
                item_id = str(answer.get("id"))
                if item_id not in pending:
                    continue
                status = int(answer.get("status") or 0)
                headers = answer.get("headers") or {}
                retry = status in RETRY_IN_BATCH and attempt < policy.attempts
                if status >= 400:
                    error = error_from_graph_response(status, headers, json.dumps(answer.get("body") or {}).encode())
                    self._record_item(operation, pending[item_id], error, response, attempt, retry)
                if retry:
                    delay = parse_retry_after(headers.get("Retry-After"), self.client.transport.wall_clock())
                    wait = max(wait, delay if delay is not None else policy.backoff_delay(attempt))
                    continue
                pending.pop(item_id)
                if status >= 400:
                    if isinstance(error, PermissionDenied):
                        error.hint = READ_HINT
                    answers[item_id] = error
                else:
                    answers[item_id] = answer
            if pending and attempt >= policy.attempts:  # never answered: give up on these for this run
                for item_id in list(pending):
                    answers[item_id] = GraphApiError("Microsoft gave no answer for this batched request", status=502)
                pending.clear()
            if pending and wait > policy.max_retry_after:
                for item_id in list(pending):  # not worth waiting for: the caller resumes at its next run
                    answers[item_id] = GraphApiError(
                        "Microsoft throttled this request", status=429, code="ApplicationThrottled", retry_after=wait
                    )
                pending.clear()
            elif pending:
                self.client.transport.sleep(wait)
        return answers

    def _record_item(self, operation, item, error, response, attempt, retry) -> None:
        """A batched request Microsoft refused gets its own record (the batch itself answered 200)."""
        if self.client.on_call is None:
            return
        record = CallRecord(
            operation=operation,
            method=item["method"],
            path=item["url"].split("?", 1)[0],
            status=error.status,
            graph_code=error.code,
            request_id=error.request_id or response.headers.get("request-id"),
            client_request_id=error.client_request_id or getattr(response, "client_request_id", None),
            duration_ms=0.0,
            request_bytes=0,
            attempt=attempt,
            outcome="retry" if retry else "error",
            message=error.message[:300],
        )
        self.client.on_call(record)

    def _mailbox(self) -> str:
        return self.client._mailbox_path(self.mailbox)

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


def _bytes(answer: Dict[str, Any]) -> bytes:
    """A batch item's body: non-JSON content (the MIME of $value) comes base64-encoded."""
    body = answer.get("body")
    if isinstance(body, str):
        return base64.b64decode(body)
    return json.dumps(body).encode() if body is not None else b""


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
