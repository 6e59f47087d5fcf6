"""MIME in and out: parse a message into the inspectable dict, strip Bcc byte-exactly, build Exchange-like
MIME for JSON-path mail, and add uploaded attachments to a MIME draft.

Header work is done on the raw bytes so that everything we do not deliberately change stays byte-exact.
"""

from __future__ import annotations

import base64
import email
import email.policy
import email.utils
import hashlib
import re
import secrets
from email.headerregistry import Address
from email.message import EmailMessage, Message, MIMEPart
from typing import Any, Dict, Iterable, List, Optional, Tuple

_FOLD = re.compile(rb"\r?\n(?=[ \t])")
_ADDRESS = re.compile(r"^[^@\s<>(),;:\"]+@[^@\s<>(),;:\"]+$")


def split_message(raw: bytes) -> Tuple[bytes, bytes, bytes]:
    """(header block, blank-line separator, body); the header block keeps its final line ending."""
    match = re.search(rb"\r?\n\r?\n", raw)
    if match is None:
        return raw, b"", b""
    first_newline = raw.index(b"\n", match.start()) + 1
    return raw[:first_newline], raw[first_newline : match.end()], raw[match.end() :]


def header_fields(header_block: bytes) -> List[Tuple[str, bytes]]:
    """Each field as (name, its exact bytes including continuation lines and line endings)."""
    fields: List[Tuple[str, bytes]] = []
    for line in header_block.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t") and fields:
            name, data = fields[-1]
            fields[-1] = (name, data + line)
        elif b":" in line:
            fields.append((line.split(b":", 1)[0].decode("ascii", "replace").strip(), line))
        elif fields:  # a malformed line: keep it with the previous field rather than lose bytes
            name, data = fields[-1]
            fields[-1] = (name, data + line)
    return fields


def field_value(field: bytes) -> str:
    """The value after the colon: unfolded, leading whitespace and final line ending removed."""
    value = field.split(b":", 1)[1]
    value = _FOLD.sub(b"", value).rstrip(b"\r\n").lstrip(b" \t")
    return value.decode("utf-8", "replace")


def newline_of(raw: bytes) -> bytes:
    end = raw.find(b"\n")
    return b"\r\n" if end > 0 and raw[end - 1 : end] == b"\r" else b"\n"


def remove_headers(raw: bytes, names: Iterable[str]) -> bytes:
    drop = {n.lower() for n in names}
    head, separator, body = split_message(raw)
    kept = b"".join(data for name, data in header_fields(head) if name.lower() not in drop)
    return kept + separator + body


def prepend_headers(raw: bytes, headers: List[Tuple[str, str]]) -> bytes:
    nl = newline_of(raw)
    lines = b"".join(f"{name}: {value}".encode() + nl for name, value in headers)
    return lines + raw


def header_value(raw: bytes, name: str) -> Optional[str]:
    head, _, _ = split_message(raw)
    for field_name, data in header_fields(head):
        if field_name.lower() == name.lower():
            return field_value(data)
    return None


def valid_address(address: str) -> bool:
    return bool(_ADDRESS.match(address))


def addresses(values: Iterable[str]) -> List[str]:
    return [addr for _, addr in email.utils.getaddresses(list(values)) if addr]


def generate_message_id(domain: str = "contoso.onmicrosoft.com") -> str:
    return f"<{secrets.token_hex(16).upper()}@{domain}>"


# --- parsing -----------------------------------------------------------------------------------------


def _decoded_headers(message: Message, headers: List[List[str]], name: str) -> List[str]:
    try:
        return [str(value) for value in message.get_all(name, []) or []]
    except Exception:  # a header the email package cannot model: fall back to its raw text
        return [value for field, value in headers if field.lower() == name.lower()]


def _leaves(part: Message) -> Iterable[Message]:
    """Leaf parts in order; an attached message/rfc822 counts as one leaf, not as our body."""
    if part.get_content_type() == "message/rfc822":
        yield part
        return
    if part.is_multipart():
        for child in part.get_payload():
            yield from _leaves(child)
    else:
        yield part


def parse(raw: bytes) -> Dict[str, Any]:
    """Everything a test wants to check about one message (Bcc comes from the caller, see graph.py)."""
    head, _, _ = split_message(raw)
    headers = [[name, field_value(data)] for name, data in header_fields(head)]
    message = email.message_from_bytes(raw, policy=email.policy.default)
    text: Optional[str] = None
    html: Optional[str] = None
    attachments: List[Dict[str, Any]] = []
    for part in _leaves(message):
        ctype = part.get_content_type()
        disposition = part.get_content_disposition()
        filename = part.get_filename()
        if ctype in ("text/plain", "text/html") and disposition != "attachment" and not filename:
            try:
                content = part.get_content()
            except (LookupError, ValueError):
                content = (part.get_payload(decode=True) or b"").decode("utf-8", "replace")
            if ctype == "text/plain" and text is None:
                text = content
                continue
            if ctype == "text/html" and html is None:
                html = content
                continue
        if ctype == "message/rfc822":
            inner = part.get_payload()
            data = inner[0].as_bytes() if isinstance(inner, list) and inner else b""
        else:
            data = part.get_payload(decode=True) or b""
        content_id = part.get("Content-ID")
        attachments.append(
            {
                "name": filename,
                "content_type": ctype,
                "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
                "is_inline": disposition == "inline" or (disposition is None and content_id is not None),
                "content_id": str(content_id).strip().strip("<>") if content_id else None,
            }
        )
    from_values = addresses(_decoded_headers(message, headers, "From"))
    message_id = header_value(raw, "Message-ID")
    return {
        "internet_message_id": message_id.strip() if message_id else None,
        "headers": headers,
        "from": from_values[0] if from_values else None,
        "to": addresses(_decoded_headers(message, headers, "To")),
        "cc": addresses(_decoded_headers(message, headers, "Cc")),
        "bcc": addresses(_decoded_headers(message, headers, "Bcc")),
        "reply_to": addresses(_decoded_headers(message, headers, "Reply-To")),
        "subject": (_decoded_headers(message, headers, "Subject") or [None])[0],
        "text": text,
        "html": html,
        "attachments": attachments,
        "size": len(raw),
    }


# --- building ----------------------------------------------------------------------------------------


def _address(entry: Dict[str, Any]) -> Address:
    email_address = entry.get("emailAddress") or {}
    addr = email_address.get("address") or ""
    name = email_address.get("name") or ""
    local, _, domain = addr.partition("@")
    return Address(display_name=name, username=local, domain=domain)


def build_from_json(
    message: Dict[str, Any],
    sender: Dict[str, Any],
    internet_message_id: str,
    attachments: List[Dict[str, Any]],
) -> bytes:
    """The MIME Exchange would produce for a JSON message (no Bcc header: Bcc is delivered, not shown).

    ``attachments``: dicts with name, content_type, data (bytes), is_inline, content_id.
    """
    out = EmailMessage(policy=email.policy.SMTP)
    from_entry = message.get("from") or {
        "emailAddress": {
            "address": sender.get("mail") or sender["userPrincipalName"],
            "name": sender.get("displayName"),
        }
    }
    out["From"] = _address(from_entry)
    for header, key in (("To", "toRecipients"), ("Cc", "ccRecipients"), ("Reply-To", "replyTo")):
        entries = message.get(key) or []
        if entries:
            out[header] = [_address(e) for e in entries]
    out["Subject"] = message.get("subject") or ""
    out["Date"] = email.utils.formatdate(usegmt=True)
    out["Message-ID"] = internet_message_id
    for item in message.get("internetMessageHeaders") or []:
        out[item["name"]] = item.get("value", "")
    body = message.get("body") or {}
    content = body.get("content") or ""
    subtype = "html" if str(body.get("contentType", "text")).lower() == "html" else "plain"
    out.set_content(content, subtype=subtype)
    for attachment in attachments:
        maintype, _, subtype = (attachment.get("content_type") or "application/octet-stream").partition("/")
        out.add_attachment(
            attachment["data"],
            maintype=maintype,
            subtype=subtype or "octet-stream",
            filename=attachment.get("name") or "attachment",
            disposition="inline" if attachment.get("is_inline") else "attachment",
            cid=f"<{attachment['content_id']}>" if attachment.get("content_id") else None,
        )
    return out.as_bytes()


def add_attachments(raw: bytes, attachments: List[Dict[str, Any]]) -> bytes:
    """Wrap a MIME message in multipart/mixed with the uploaded attachments appended.

    Every original header except the Content-* ones stays byte-exact at the top; the Content-* headers
    move to the first part, whose body is the original body untouched.
    """
    if not attachments:
        return raw
    nl = newline_of(raw)
    head, _, body = split_message(raw)
    fields = header_fields(head)
    top = [data for name, data in fields if not name.lower().startswith("content-")]
    inner = [data for name, data in fields if name.lower().startswith("content-")]
    if not any(name.lower() == "mime-version" for name, _ in fields):
        top.append(b"MIME-Version: 1.0" + nl)
    if not inner:
        inner = [b"Content-Type: text/plain; charset=us-ascii" + nl]
    boundary = ("=_fake_" + secrets.token_hex(12)).encode("ascii")
    out = b"".join(top) + b'Content-Type: multipart/mixed; boundary="' + boundary + b'"' + nl + nl
    out += b"--" + boundary + nl + b"".join(inner) + nl + body + nl
    for attachment in attachments:
        part = MIMEPart(policy=email.policy.SMTP)
        maintype, _, subtype = (attachment.get("content_type") or "application/octet-stream").partition("/")
        part.set_content(
            attachment["data"],
            maintype=maintype,
            subtype=subtype or "octet-stream",
            filename=attachment.get("name") or "attachment",
            disposition="inline" if attachment.get("is_inline") else "attachment",
            cid=f"<{attachment['content_id']}>" if attachment.get("content_id") else None,
        )
        rendered = part.as_bytes()
        if nl == b"\n":
            rendered = rendered.replace(b"\r\n", b"\n")
        out += b"--" + boundary + nl + rendered + nl
    out += b"--" + boundary + b"--" + nl
    return out


def decode_base64_strict(text: bytes) -> Optional[bytes]:
    """Graph accepts base64 with line breaks but nothing else; None when it is not valid base64."""
    compact = re.sub(rb"[\r\n\t ]", b"", text)
    if not compact:
        return None
    try:
        return base64.b64decode(compact, validate=True)
    except (ValueError, TypeError):
        return None
