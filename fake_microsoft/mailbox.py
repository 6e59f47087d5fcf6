"""Mailbox contents: well-known and created folders, stored messages and the change sequence delta reads.

Every function expects ``state.lock`` held by the caller. Each change (arrival, isRead/categories change,
move) takes the next ``state.mail_seq``; a delta token remembers the sequence number of its round, so the
next round is "messages whose ``seq`` is newer" plus "removal events newer" (see inbox.py).
"""

from __future__ import annotations

import email
import email.policy
import email.utils
import secrets
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from . import mime
from .state import State, new_id
from .web import utcnow_iso

# Graph's well-known folder names (path segments) and the displayName Exchange gives them in English.
WELL_KNOWN = {
    "inbox": "Inbox",
    "sentitems": "Sent Items",
    "deleteditems": "Deleted Items",
    "junkemail": "Junk Email",
    "drafts": "Drafts",
    "archive": "Archive",
}


@dataclass
class Folder:
    id: str
    name: str  # displayName
    parent_id: str
    well_known: Optional[str] = None


@dataclass
class StoredMessage:
    id: str
    folder_id: str
    raw: bytes
    meta: Dict[str, Any]  # parsed once on arrival: subject, from, to, ..., see _meta
    received: float
    is_read: bool = False
    categories: List[str] = field(default_factory=list)
    change_key: str = ""
    seq: int = 0  # state.mail_seq of its last change
    modified: float = 0.0

    @property
    def internet_message_id(self) -> Optional[str]:
        return self.meta.get("internetMessageId")


@dataclass
class Mailbox:
    root_id: str
    folders: Dict[str, Folder] = field(default_factory=dict)  # by id, in creation order
    messages: Dict[str, StoredMessage] = field(default_factory=dict)  # by id
    removals: List[Tuple[int, str, str]] = field(default_factory=list)  # (seq, folder id, message id) left


def _folder_id() -> str:
    # Exchange folder ids are long base64 strings starting like message ids; opaque to clients.
    return new_id("AAMkAGI2AAEu")


def get_mailbox(state: State, upn: str) -> Mailbox:
    """The mailbox of a userPrincipalName, with its well-known folders created on first use."""
    key = upn.lower()
    box = state.mailboxes.get(key)
    if box is None:
        box = Mailbox(root_id=_folder_id())
        for well_known, name in WELL_KNOWN.items():
            folder = Folder(_folder_id(), name, box.root_id, well_known)
            box.folders[folder.id] = folder
        state.mailboxes[key] = box
    return box


def find_folder(box: Mailbox, key: str, by_name: bool = False) -> Optional[Folder]:
    """A folder by id or well-known name (case-insensitive), as Graph path segments allow;
    ``by_name`` also accepts a displayName (control API convenience, not Graph)."""
    if key in box.folders:
        return box.folders[key]
    for folder in box.folders.values():
        if folder.well_known and folder.well_known == key.lower():
            return folder
        if by_name and folder.name.lower() == key.lower():
            return folder
    return None


def create_folder(box: Mailbox, name: str) -> Folder:
    folder = Folder(_folder_id(), name, box.root_id)
    box.folders[folder.id] = folder
    return folder


def next_seq(state: State) -> int:
    state.mail_seq += 1
    return state.mail_seq


def _touch(state: State, message: StoredMessage) -> None:
    """Record a change: a fresh changeKey (and etag) and a new place in the change sequence."""
    message.change_key = "CQAAABYAAA" + secrets.token_urlsafe(12)
    message.seq = next_seq(state)
    message.modified = state.clock()


def _meta(raw: bytes) -> Dict[str, Any]:
    parsed = mime.parse(raw)
    message = email.message_from_bytes(raw, policy=email.policy.default)

    def people(name: str) -> List[Dict[str, Any]]:
        try:
            values = [str(v) for v in message.get_all(name, []) or []]
        except Exception:  # an unparseable header: Exchange would show nothing rather than fail
            values = []
        return [{"emailAddress": {"name": n or a, "address": a}} for n, a in email.utils.getaddresses(values) if a]

    date = mime.header_value(raw, "Date")
    try:
        sent = email.utils.parsedate_to_datetime(date).timestamp() if date else None
    except (TypeError, ValueError):
        sent = None
    body = parsed["html"] if parsed["html"] is not None else parsed["text"]
    return {
        "subject": parsed["subject"],
        "internetMessageId": parsed["internet_message_id"],
        "from": (people("From") or [None])[0],
        "sender": (people("Sender") or people("From") or [None])[0],
        "toRecipients": people("To"),
        "ccRecipients": people("Cc"),
        "replyTo": people("Reply-To"),
        "sent": sent,
        "body": {"contentType": "html" if parsed["html"] is not None else "text", "content": body or ""},
        "bodyPreview": " ".join((parsed["text"] or "").split())[:255],
        "hasAttachments": any(not a["is_inline"] for a in parsed["attachments"]),
        "headers": parsed["headers"],
    }


def store(
    state: State,
    upn: str,
    raw: bytes,
    folder_key: str = "inbox",
    is_read: bool = False,
    message_id: Optional[str] = None,
) -> StoredMessage:
    """File a message in a folder of a mailbox (arrival from outside, an NDR, the sender's Sent Items copy)."""
    box = get_mailbox(state, upn)
    folder = find_folder(box, folder_key, by_name=True)
    if folder is None:
        raise ValueError(f"no folder {folder_key!r} in mailbox {upn}")
    message = StoredMessage(
        id=message_id or new_id("AAMkAGI2"),
        folder_id=folder.id,
        raw=raw,
        meta=_meta(raw),
        received=state.clock(),
        is_read=is_read,
    )
    _touch(state, message)
    box.messages[message.id] = message
    return message


def update(state: State, message: StoredMessage, changes: Dict[str, Any]) -> None:
    """Apply writable properties; only a real change counts for delta (Exchange keeps the changeKey)."""
    changed = False
    if "isRead" in changes and changes["isRead"] != message.is_read:
        message.is_read = changes["isRead"]
        changed = True
    if "categories" in changes and changes["categories"] != message.categories:
        message.categories = list(changes["categories"])
        changed = True
    if changed:
        _touch(state, message)


def move(state: State, box: Mailbox, message: StoredMessage, destination: Folder, keep_id: bool) -> StoredMessage:
    """Move to another folder; Exchange gives the moved item a new id unless ids are immutable."""
    box.removals.append((next_seq(state), message.folder_id, message.id))
    del box.messages[message.id]
    if not keep_id:
        message.id = new_id("AAMkAGI2")
    message.folder_id = destination.id
    _touch(state, message)
    box.messages[message.id] = message
    return message


def folder_counts(box: Mailbox, folder: Folder) -> Tuple[int, int]:
    """(total, unread) messages in a folder."""
    inside = [m for m in box.messages.values() if m.folder_id == folder.id]
    return len(inside), sum(1 for m in inside if not m.is_read)


def summary(box: Mailbox, message: StoredMessage) -> Dict[str, Any]:
    """What the control API lists about a stored message."""
    return {
        "id": message.id,
        "folder": box.folders[message.folder_id].name,
        "isRead": message.is_read,
        "internetMessageId": message.internet_message_id,
        "subject": message.meta["subject"],
        "receivedDateTime": utcnow_iso(message.received),
        "from": ((message.meta["from"] or {}).get("emailAddress") or {}).get("address"),
    }
