"""From an ``email.message.EmailMessage`` and an envelope to the Graph requests that send it.

MIME path (default): the message's own bytes, base64, as one ``sendMail`` request. Every header survives
byte for byte (Message-ID, In-Reply-To, References, Reply-To, encoded words, inline images): the only
change is header lines *added* in front, a ``Bcc`` for envelope recipients absent from To/Cc (Graph reads
it, delivers, strips it) and a ``Message-ID`` when the message had none.

Draft path (request over ~4 MB): the same MIME minus its largest attachments becomes a draft; each removed
attachment of 3 MB or more goes through an upload session, smaller ones (only when the draft still does not
fit) through a plain attachment POST. Attachments stream in chunks decoded from the part's base64 payload,
so no full decoded copy of a large file is built.

External content: a caller that keeps large files elsewhere (Odoo's filestore) puts a small stand-in part in
the message and gives ``build_plan`` a resolver from such a part to a :class:`ContentSource`; that attachment
then always leaves the draft and its chunks are read from the source as they are uploaded, so the file is
never held in memory, encoded or not.
"""

from __future__ import annotations

import base64
import copy
import email.policy
import io
from dataclasses import dataclass, field
from email.generator import BytesGenerator
from email.message import Message
from email.parser import BytesHeaderParser
from email.utils import getaddresses, make_msgid
from typing import BinaryIO, Callable, Iterator, List, Optional, Protocol, Sequence, Tuple

from .errors import GraphMailError, MessageTooLarge, MimeConversionError, TooManyRecipients

MAX_REQUEST_BYTES = 4 * 1024 * 1024  # Graph refuses bigger requests with 413
MAX_RECIPIENTS = 500  # Exchange Online's limit per message (To + Cc + Bcc)
REQUEST_MARGIN = 64 * 1024  # headroom for Graph's own accounting of the request
UPLOAD_SESSION_MIN = 3 * 1024 * 1024  # Microsoft: upload sessions are for 3 MB to 150 MB
UPLOAD_SESSION_MAX = 150 * 1024 * 1024
CHUNK_UNIT = 327_680  # upload chunks must be multiples of 320 KiB (except the last)
CHUNK_SIZE = 10 * CHUNK_UNIT


@dataclass(frozen=True)
class Envelope:
    """Who sends (the mailbox Graph sends from) and who receives (To + Cc + Bcc as the caller resolved)."""

    sender: str
    recipients: Sequence[str] = ()

    def __post_init__(self) -> None:
        recipients = (self.recipients,) if isinstance(self.recipients, str) else tuple(self.recipients)
        object.__setattr__(self, "sender", (self.sender or "").strip())
        object.__setattr__(self, "recipients", tuple(r.strip() for r in recipients if r and r.strip()))


class ContentSource(Protocol):
    """Attachment content kept outside the message, read as it is uploaded."""

    size: int

    def open(self) -> BinaryIO:
        """A fresh binary file object positioned at the start of the content."""


Resolver = Callable[[Message], Optional[ContentSource]]


@dataclass
class Attachment:
    """An attachment taken out of the MIME draft, to be added through its own request(s)."""

    part: Message = field(repr=False)
    name: str
    content_type: str
    size: int
    is_inline: bool
    content_id: Optional[str]
    source: Optional[ContentSource] = field(default=None, repr=False)

    def attachment_item(self) -> dict:
        """Body of ``createUploadSession``."""
        item = {
            "attachmentType": "file",
            "name": self.name,
            "size": self.size,
            "contentType": self.content_type,
            "isInline": self.is_inline,
        }
        if self.content_id:
            item["contentId"] = self.content_id
        return {"AttachmentItem": item}

    def file_attachment(self) -> dict:
        """Body of ``POST .../attachments`` (small files only: the content travels inline, base64)."""
        payload = self.part.get_payload()
        if self.source is not None:
            with self.source.open() as fp:
                content = base64.b64encode(fp.read()).decode("ascii")
        elif _is_base64(self.part) and isinstance(payload, str):
            content = "".join(payload.split())
        else:
            content = base64.b64encode(_decoded(self.part)).decode("ascii")
        body = {
            "@odata.type": "#microsoft.graph.fileAttachment",
            "name": self.name,
            "contentType": self.content_type,
            "isInline": self.is_inline,
            "contentBytes": content,
        }
        if self.content_id:
            body["contentId"] = self.content_id
        return body

    def chunks(self, start: int = 0, chunk_size: int = CHUNK_SIZE) -> Iterator[Tuple[int, bytes]]:
        """``(offset, bytes)`` pieces of the decoded content from ``start``, each ``chunk_size`` long but
        the last. Restartable at any offset (resume after a failed chunk)."""
        if self.source is not None:
            yield from _file_chunks(self.source, start, chunk_size)
            return
        buffer = bytearray()
        position = 0  # decoded bytes consumed from the source so far
        offset = start
        for piece in _decoded_pieces(self.part):
            end = position + len(piece)
            if end <= start:
                position = end
                continue
            buffer += piece[max(0, start - position) :]
            position = end
            while len(buffer) >= chunk_size:
                yield offset, bytes(buffer[:chunk_size])
                del buffer[:chunk_size]
                offset += chunk_size
        if buffer:
            yield offset, bytes(buffer)


@dataclass
class SendPlan:
    """What to send: ``mime_base64`` is the request body of ``sendMail`` (path "mime") or of the draft
    creation (path "draft"), then ``uploads`` (upload sessions) and ``attachments`` (plain POSTs)."""

    path: str
    mime_base64: bytes = field(repr=False)
    internet_message_id: str
    bcc: List[str]
    uploads: List[Attachment] = field(default_factory=list)
    attachments: List[Attachment] = field(default_factory=list)

    @property
    def request_bytes(self) -> int:
        return len(self.mime_base64)


def build_plan(
    message: Message,
    envelope: Envelope,
    *,
    max_request_bytes: int = MAX_REQUEST_BYTES - REQUEST_MARGIN,
    upload_min: int = UPLOAD_SESSION_MIN,
    external: Optional[Resolver] = None,
) -> SendPlan:
    """Decide the requests for ``message``; raise :class:`MimeConversionError` when Graph cannot send it
    as the envelope says, :class:`MessageTooLarge` when no split fits Graph's limits.

    ``external`` maps a stand-in attachment part to the source of its real content (or ``None``)."""
    try:
        return _build_plan(
            message, envelope, max_request_bytes=max_request_bytes, upload_min=upload_min, external=external
        )
    except GraphMailError:
        raise
    except (ValueError, TypeError, LookupError, AttributeError, UnicodeError) as exc:
        # The email package gives up on some malformed messages (odd encodings, broken headers).
        raise MimeConversionError(
            f"The message cannot be converted for Microsoft Graph ({type(exc).__name__}: {exc})",
            hint="A header or a part of this mail is malformed: check how it was built.",
        ) from exc


def _build_plan(
    message: Message,
    envelope: Envelope,
    *,
    max_request_bytes: int,
    upload_min: int,
    external: Optional[Resolver] = None,
) -> SendPlan:
    if not isinstance(message, Message):
        raise MimeConversionError(f"Expected an email.message.EmailMessage, got {type(message).__name__}")
    if "@" not in envelope.sender:
        raise MimeConversionError(
            f"Invalid sender address {envelope.sender!r}", hint="Set the mailbox address to send from."
        )
    if not envelope.recipients:
        raise MimeConversionError("The envelope has no recipient", hint="Give at least one To/Cc/Bcc address.")

    distinct = {recipient.lower() for recipient in envelope.recipients}
    if len(distinct) > MAX_RECIPIENTS:
        raise TooManyRecipients(len(distinct), MAX_RECIPIENTS)
    bcc = _bcc_for(message, envelope)
    message_id = str(message.get("Message-ID") or "").strip()
    prefix = []
    if not message_id:
        message_id = make_msgid(domain=envelope.sender.rsplit("@", 1)[-1])
        prefix.append(f"Message-ID: {message_id}")
    if bcc:
        prefix.append(_bcc_field(bcc))
    prefix_bytes = "".join(line + "\r\n" for line in prefix).encode("utf-8")
    drop_bcc = message.get("Bcc") is not None  # the merged Bcc replaces the message's own

    def fits(candidate: Message) -> bool:
        # The encoded payloads alone are a lower bound of the message's size: when they are already too big,
        # skip building the whole text (for a 100 MB attachment that is hundreds of MB).
        if _b64_len(len(prefix_bytes) + _payload_size(candidate)) > max_request_bytes:
            return False
        return _b64_len(len(prefix_bytes) + _serialized_size(candidate)) <= max_request_bytes

    has_external = external is not None and any(
        external(part) is not None for part in message.walk() if not part.is_multipart()
    )
    if not has_external and _b64_len(len(prefix_bytes) + _payload_size(message)) <= max_request_bytes:
        raw = _serialize(message)  # built once: it is both the size check and the request
        if _b64_len(len(prefix_bytes) + len(raw)) <= max_request_bytes:
            raw = _rewrite_headers(raw, prefix_bytes, drop_bcc)
            return SendPlan("mime", base64.b64encode(raw), message_id, bcc)
        del raw

    # Too big for one request, or content kept outside: move attachments out of the draft, external ones
    # first, then the largest, big ones by upload session.
    found = list(_attachments(message, external))
    too_big = [a for a in found if a.size > UPLOAD_SESSION_MAX]
    if too_big:
        raise MessageTooLarge(
            f"Attachment {too_big[0].name!r} is {too_big[0].size} bytes: over Graph's 150 MB limit",
            hint="Share large files by link instead of attaching them.",
        )
    uploads = [a for a in found if a.source is not None and a.size >= upload_min]
    posts = [a for a in found if a.source is not None and a.size < upload_min]
    inside = [a for a in found if a.source is None]
    large = sorted((a for a in inside if a.size >= upload_min), key=lambda a: -a.size)
    small = sorted((a for a in inside if a.size < upload_min), key=lambda a: -a.size)
    candidates = [(a, uploads) for a in large] + [(a, posts) for a in small]
    while True:
        draft = _without(message, {id(a.part) for a in uploads + posts})
        if (uploads or posts) and fits(draft):
            break
        if not candidates:
            raise MessageTooLarge(
                "The message body alone exceeds Graph's 4 MB request limit",
                hint="Reduce the size of the message text or inline content.",
            )
        attachment, bucket = candidates.pop(0)
        bucket.append(attachment)
    raw = _rewrite_headers(_serialize(draft), prefix_bytes, drop_bcc)
    return SendPlan("draft", base64.b64encode(raw), message_id, bcc, uploads, posts)


# -- recipients ---------------------------------------------------------------------------------------


def _addresses(message: Message, *names: str) -> List[str]:
    values = []
    for name in names:
        values.extend(str(v) for v in message.get_all(name, []))
    return [addr for _, addr in getaddresses(values) if addr]


_RECIPIENT_FIELDS = ("to", "cc", "bcc")


def _as_sent(message: Message) -> Message:
    """The root headers as a receiver parses them from the bytes we send.

    Graph delivers to what it parses, and the stdlib's folding can mangle long non-ASCII address lists
    (an encoded comma merges two addresses into one): recipients are reckoned from the bytes, not the object.
    """
    policy = message.policy.clone(linesep="\r\n")
    raw = b"".join(
        policy.fold_binary(name, value) for name, value in message.items() if name.lower() in _RECIPIENT_FIELDS
    )
    return BytesHeaderParser(policy=email.policy.default).parsebytes(raw + b"\r\n")


def _bcc_for(message: Message, envelope: Envelope) -> List[str]:
    """Envelope recipients not visible in To/Cc: they go in the Bcc header Graph reads and strips."""
    sent = _as_sent(message)
    visible = {a.lower() for a in _addresses(sent, "To", "Cc")}
    header_bcc = {a.lower() for a in _addresses(sent, "Bcc")}
    wanted = {r.lower() for r in envelope.recipients}
    unexpected = sorted((visible | header_bcc) - wanted)
    if unexpected:
        # Graph delivers to every address of the MIME headers: it cannot honour a narrower envelope.
        raise MimeConversionError(
            f"{len(unexpected)} address(es) in To/Cc/Bcc are not in the envelope",
            hint="Graph delivers to every To/Cc/Bcc address: include them in the recipients or drop them "
            "from the headers.",
        )
    bcc, seen = [], set()
    for recipient in envelope.recipients:
        key = recipient.lower()
        if key not in visible and key not in seen:
            seen.add(key)
            bcc.append(recipient)
    return bcc


def _bcc_field(addresses: Sequence[str]) -> str:
    encoded = []
    for address in addresses:
        if "\r" in address or "\n" in address or "," in address:
            raise MimeConversionError("Invalid recipient address in the envelope")
        local, _, domain = address.rpartition("@")
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            pass
        encoded.append(f"{local}@{domain}")
    # One address per line keeps every line far below RFC 5322's 998 characters.
    return "Bcc: " + ",\r\n ".join(encoded)


# -- serialization ------------------------------------------------------------------------------------


class _Counter:
    """A write-only sink that only counts (measuring a 40 MB message costs no memory)."""

    def __init__(self) -> None:
        self.size = 0

    def write(self, data: bytes) -> int:
        self.size += len(data)
        return len(data)


def _generator(message: Message, fp) -> BytesGenerator:
    # The message's own policy with CRLF: the same bytes smtplib.send_message would put on the wire.
    return BytesGenerator(fp, mangle_from_=False, policy=message.policy.clone(linesep="\r\n"))


def _payload_size(message: Message) -> int:
    """The length of every leaf part's payload as stored (already transfer-encoded): no copy is made."""
    size = 0
    for part in message.walk():
        if part.is_multipart():
            continue
        payload = part.get_payload()
        if isinstance(payload, (str, bytes)):
            size += len(payload)
    return size


def _serialized_size(message: Message) -> int:
    counter = _Counter()
    _generator(message, counter).flatten(message)
    return counter.size


def _serialize(message: Message) -> bytes:
    buffer = io.BytesIO()
    _generator(message, buffer).flatten(message)
    return buffer.getvalue()


def _rewrite_headers(raw: bytes, prefix: bytes, drop_bcc: bool) -> bytes:
    """Put ``prefix`` header lines first; drop the message's own Bcc field when a merged one replaces it."""
    if drop_bcc:
        end = raw.find(b"\r\n\r\n")
        end = len(raw) if end < 0 else end + 2
        kept, skipping = [], False
        for line in raw[:end].split(b"\r\n")[:-1]:
            if line[:1] in (b" ", b"\t"):
                if not skipping:
                    kept.append(line)
                continue
            skipping = line.lower().startswith(b"bcc:")
            if not skipping:
                kept.append(line)
        raw = b"".join(line + b"\r\n" for line in kept) + raw[end:]
    return prefix + raw


def _b64_len(size: int) -> int:
    return 4 * ((size + 2) // 3)


def _without(message: Message, removed: set) -> Message:
    """A copy of ``message`` without the parts in ``removed``: containers are shallow-copied, leaves (and
    their payloads) shared, so the caller's message is untouched and nothing large is duplicated."""
    if not message.is_multipart():
        return message
    clone = copy.copy(message)
    clone.set_payload([_without(p, removed) for p in message.get_payload() if id(p) not in removed])
    return clone


# -- attachments --------------------------------------------------------------------------------------


def _is_base64(part: Message) -> bool:
    return str(part.get("Content-Transfer-Encoding", "")).strip().lower() == "base64"


def _decoded(part: Message) -> bytes:
    data = part.get_payload(decode=True)
    return data if isinstance(data, bytes) else b""


def _decoded_size(part: Message) -> int:
    payload = part.get_payload()
    if _is_base64(part) and isinstance(payload, str):
        length = len(payload) - sum(payload.count(c) for c in "\r\n \t")
        if length % 4 == 0:
            tail = payload.rstrip()[-2:]
            return length // 4 * 3 - tail.count("=")
    return len(_decoded(part))


def _decoded_pieces(part: Message, piece: int = 1 << 16) -> Iterator[bytes]:
    """The decoded content, piece by piece, straight from the base64 text (no full copy)."""
    payload = part.get_payload()
    if not (_is_base64(part) and isinstance(payload, str)):
        data = _decoded(part)
        for i in range(0, len(data), piece):
            yield data[i : i + piece]
        return
    carry = ""
    for i in range(0, len(payload), piece):
        text = carry + "".join(payload[i : i + piece].split())
        cut = len(text) - len(text) % 4
        carry = text[cut:]
        if cut:
            yield base64.b64decode(text[:cut])
    if carry.strip("="):
        yield base64.b64decode(carry + "=" * (-len(carry) % 4))


def _is_attachment(part: Message) -> bool:
    disposition = part.get_content_disposition()
    if disposition == "attachment" or part.get_filename() or part.get("Content-ID"):
        return True
    return part.get_content_maintype() not in ("text", "multipart", "message")


def _attachments(message: Message, external: Optional[Resolver] = None) -> Iterator[Attachment]:
    """Leaf attachment parts below the root, in document order."""
    if not message.is_multipart():
        return
    for part in message.get_payload():
        if part.is_multipart():
            yield from _attachments(part, external)
        elif _is_attachment(part) and part.get_content_maintype() != "message":
            content_id = str(part.get("Content-ID") or "").strip().strip("<>") or None
            disposition = part.get_content_disposition()
            source = external(part) if external else None
            yield Attachment(
                part=part,
                name=part.get_filename() or content_id or "attachment",
                content_type=part.get_content_type(),
                size=source.size if source is not None else _decoded_size(part),
                is_inline=disposition == "inline" or (bool(content_id) and disposition != "attachment"),
                content_id=content_id,
                source=source,
            )


def _file_chunks(source: ContentSource, start: int, chunk_size: int) -> Iterator[Tuple[int, bytes]]:
    """Chunks read from the source as they go: one chunk in memory at a time."""
    offset = start
    with source.open() as fp:
        fp.seek(start)
        while offset < source.size:
            data = fp.read(min(chunk_size, source.size - offset))
            if not data:
                raise MimeConversionError(
                    f"Attachment content ended at byte {offset} of {source.size}",
                    hint="The attachment's file changed or was truncated while the mail was being sent.",
                )
            yield offset, data
            offset += len(data)
