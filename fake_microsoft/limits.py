"""Exchange Online's limits, on the fake's clock: concurrent requests per app and mailbox, the message rate and
the rolling 24-hour recipient count of a mailbox.

- ``mailbox_concurrency`` (Graph's Outlook limit: 4 requests in flight per app per mailbox): the request over it
  is answered 429 before anything runs, as Graph does, with ``Retry-After``.
- ``message_rate_limit`` (30 messages a minute): Graph still answers 202; the surplus waits in the Outbox and
  leaves when the rolling minute allows. Each sent message gets the moment it leaves (``delivered_at``).
- ``daily_recipient_limit`` (10,000 recipients a rolling day, To + Cc + Bcc counted per recipient): a message
  that does not fit is still answered 202, then refused whole with an NDR 5.1.90 in the sender's Inbox.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from .state import State
from .web import GraphError, Request

MINUTE = 60.0
DAY = 24 * 3600.0
CONCURRENCY_RETRY_AFTER = "1"
CONCURRENCY_MESSAGE = "Application is over its MailboxConcurrency limit."

# Graph routes under /me/... or /users/{id}/...: Outlook resources, counted against the mailbox.
MAILBOX_ROUTES = {
    "sendMail", "createDraft", "deleteDraft", "send", "createUploadSession", "addAttachment", "sentItems",
    "listFolders", "getFolder", "createFolder", "delta", "getMessage", "messageValue", "updateMessage",
    "moveMessage",
}  # fmt: skip

Key = Tuple[str, str]  # (client id, lowercased mailbox)


# --- concurrency ----------------------------------------------------------------------------------------


def concurrency_key(state: State, request: Request, route: Optional[str], params: Dict[str, Any]) -> Optional[Key]:
    """(client app, mailbox) of a mailbox request with a valid token; None when the limit does not apply (the
    handler then refuses the token or the path itself, as Graph's front door does before Exchange counts)."""
    if route not in MAILBOX_ROUTES:
        return None
    scheme, _, value = (request.header("authorization") or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    with state.lock:
        token = state.access_tokens.get(value.strip())
        if token is None or state.clock() >= token.expires_at:
            return None
        target = params.get("user")
        if target:
            user = state.find_user(target)
            mailbox = user["userPrincipalName"] if user is not None else target
        elif token.kind == "delegated" and token.user:
            mailbox = token.user
        else:
            return None
        return token.client_id, mailbox.lower()


def enter(state: State, key: Key) -> bool:
    """Count one more request in flight for ``key``; False (nothing counted) when the limit is reached."""
    with state.lock:
        limit = int(state.config["mailbox_concurrency"])
        current = state.in_flight.get(key, 0)
        if limit and current >= limit:
            return False
        state.in_flight[key] = current + 1
        return True


def leave(state: State, key: Key) -> None:
    with state.lock:
        remaining = state.in_flight.get(key, 0) - 1
        if remaining > 0:
            state.in_flight[key] = remaining
        else:
            state.in_flight.pop(key, None)


def concurrency_refusal() -> GraphError:
    """What Graph answers the request over the limit (seen in the wild: code ``ApplicationThrottled``)."""
    return GraphError(429, "ApplicationThrottled", CONCURRENCY_MESSAGE, [("Retry-After", CONCURRENCY_RETRY_AFTER)])


# --- sending limits (call with state.lock held) ---------------------------------------------------------


def fits_daily(state: State, mailbox: str, now: float, count: int) -> bool:
    """Whether ``count`` more recipients fit the mailbox's rolling 24 hours (only delivered mail counts)."""
    limit = int(state.config["daily_recipient_limit"])
    if not limit:
        return True
    log = [entry for entry in state.recipient_log.get(mailbox.lower(), []) if entry[0] > now - DAY]
    state.recipient_log[mailbox.lower()] = log
    return sum(n for _, n in log) + count <= limit


def count_recipients(state: State, mailbox: str, now: float, count: int) -> None:
    state.recipient_log.setdefault(mailbox.lower(), []).append((now, count))


def departure(state: State, mailbox: str, now: float) -> float:
    """When a message submitted ``now`` leaves the Outbox: at once while the rolling minute has room, else
    behind the messages queued before it, at the first moment the window allows (FIFO per mailbox)."""
    limit = int(state.config["message_rate_limit"])
    if not limit:  # no limit: nothing waits, whatever was queued before
        state.departures.pop(mailbox.lower(), None)
        return now
    queue: List[float] = [t for t in state.departures.get(mailbox.lower(), []) if t > now - MINUTE]
    leaves = max(now, queue[-1]) if queue else now
    if len(queue) >= limit:
        leaves = max(leaves, queue[-limit] + MINUTE)
    queue.append(leaves)
    state.departures[mailbox.lower()] = queue
    return leaves
