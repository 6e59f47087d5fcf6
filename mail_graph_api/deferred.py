# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl-3.0).
"""Large attachments go from Odoo's filestore to Microsoft without being loaded.

Odoo reads every attachment of a mail into memory and base64-encodes it into the MIME message: a 100 MB file
costs the worker about 4.8 times its size at peak (``docs/performance.md``). Attachments that can only travel
to Graph by upload session anyway (3 MB and more) need none of that: while a mail is prepared for a Graph
session, ``ir.attachment`` hands Odoo a short stand-in instead of such a file's bytes, and the session resolves
the stand-in to the file and uploads it chunk by chunk from disk.

A stand-in is a random token known only to this process, kept for its batch (an hour at most): content a
user attaches cannot pass for one (it would otherwise send someone else's file), an unknown token is sent as
the plain bytes it is.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Dict, Iterable, Iterator, List, Optional, Tuple

from graph_mail import MimeConversionError
from graph_mail.message import UPLOAD_SESSION_MIN

DEFER_FROM = UPLOAD_SESSION_MIN  # files of this size or more are handed out as stand-ins
_PREFIX = b"mail_graph_api deferred attachment "
_MAX_PAYLOAD = 128  # a stand-in's base64 text is far shorter: larger parts are not looked at
_LIFETIME = 3600.0

_lock = threading.Lock()
_stand_ins: Dict[bytes, Tuple[float, FileContent]] = {}
_state = threading.local()  # this thread's batch: Odoo prepares and sends a batch's mails in one thread


@dataclass(frozen=True)
class FileContent:
    """A filestore file as a :class:`graph_mail.ContentSource`."""

    path: str
    size: int

    def open(self):
        return open(self.path, "rb")


def stand_in(path: str, size: int) -> bytes:
    token = _PREFIX + secrets.token_hex(16).encode("ascii")
    now = time.monotonic()
    with _lock:
        for old in [key for key, (born, _) in _stand_ins.items() if now - born > _LIFETIME]:
            del _stand_ins[old]
        _stand_ins[token] = (now, FileContent(path, size))
    return token


def _token(part) -> Optional[bytes]:
    payload = part.get_payload()
    if not isinstance(payload, str) or len(payload) > _MAX_PAYLOAD:
        return None
    data = part.get_payload(decode=True)
    return data if isinstance(data, bytes) and data.startswith(_PREFIX) else None


def resolve(part) -> Optional[FileContent]:
    """The file behind a stand-in part, ``None`` for any other part."""
    token = _token(part)
    if token is None:
        return None
    with _lock:
        entry = _stand_ins.get(token)
    if entry is None:
        # Not one of ours (a stand-in lives as long as its batch): content a user attached, sent as it is.
        return None
    content = entry[1]
    if not os.path.isfile(content.path) or os.path.getsize(content.path) != content.size:
        raise MimeConversionError(
            f"The file of attachment {part.get_filename()!r} is missing from the filestore or changed size",
            hint="Check the filestore (data_dir) of this database; nothing was sent.",
            nothing_sent=True,
        )
    return content


def stand_ins_of(message) -> List[bytes]:
    return [token for token in map(_token, _leaves(message)) if token]


def release(tokens: Iterable[bytes]) -> None:
    """Forget stand-ins once their batch is over (the copies of one mail share them until then)."""
    with _lock:
        for token in tokens:
            _stand_ins.pop(token, None)


def materialize(message) -> None:
    """Put the files back into ``message`` (the SMTP fallback sends the whole MIME message)."""
    for part in _leaves(message):
        content = resolve(part)
        if content is not None:
            with content.open() as fp:
                part.set_payload(base64.encodebytes(fp.read()).decode("ascii"))
            del part["Content-Transfer-Encoding"]
            part["Content-Transfer-Encoding"] = "base64"


def _leaves(message) -> Iterator:
    return (part for part in message.walk() if not part.is_multipart())


@contextlib.contextmanager
def graph_batch(active: bool):
    """Mark that the mails prepared in this block go to a Graph session (see ``mail.mail._send``)."""
    previous = getattr(_state, "graph_batch", False)
    _state.graph_batch = active
    try:
        yield
    finally:
        _state.graph_batch = previous


@contextlib.contextmanager
def preparing():
    """While a mail of a Graph batch is prepared: ``threshold()`` is set, and the block yields the ids of the
    attachments handed out as stand-ins (the caller drops them from the ORM cache afterwards)."""
    handed_out: List[int] = []
    active = getattr(_state, "graph_batch", False)
    _state.handed_out = handed_out if active else None
    try:
        yield handed_out
    finally:
        _state.handed_out = None


def threshold() -> Optional[int]:
    """The size from which ``ir.attachment`` hands out stand-ins right now, or None."""
    return DEFER_FROM if getattr(_state, "handed_out", None) is not None else None


def note_handed_out(attachment_id: int) -> None:
    _state.handed_out.append(attachment_id)
