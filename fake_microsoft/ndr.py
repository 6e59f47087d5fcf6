"""Exchange Online non-delivery reports (NDRs), built as raw MIME bytes.

Shaped like what Exchange Online puts in the sender's Inbox: ``multipart/report; report-type=delivery-status``
with a human part (text and HTML), a ``message/delivery-status`` part (one per-message block, then one block
per refused recipient) and the original (whole, or its headers only). Odoo's bounce parser reads the
``Final-Recipient`` of the second delivery-status block and the Message-Id of the original part.
"""

from __future__ import annotations

import email.header
import email.utils
import html
import re
import secrets
from typing import Any, Dict, List, Optional, Tuple

from . import mime

# (address, status, diagnostic without the "smtp;" prefix)
Refusal = Tuple[str, str, str]

SYSTEM_MAILBOX = "MicrosoftExchange329e71ec88ae4615bbc36ab6ce41109e"
DAILY_LIMIT_STATUS = "5.1.90"
DAILY_LIMIT_DIAGNOSTIC = (
    "550 5.1.90 Your message can't be sent because you've reached your daily limit for message recipients."
)


def recipient_not_found(address: str) -> Refusal:
    """The refusal Exchange reports for an address no one answers for."""
    return (
        address,
        "5.1.10",
        f"550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient {address} not found by SMTP address lookup",
    )


def daily_limit(address: str) -> Refusal:
    """The refusal past the rolling 24-hour recipient limit (config ``daily_recipient_limit``, limits.py)."""
    return address, DAILY_LIMIT_STATUS, DAILY_LIMIT_DIAGNOSTIC


def refused_addresses(config: Dict[str, Any], recipients: List[str]) -> List[str]:
    """Recipients matching config ``refused_recipients`` (addresses, or domains as "@d" or "d")."""
    rules = [str(r).lower().strip() for r in config.get("refused_recipients") or []]
    refused = []
    for address in recipients:
        lowered = address.lower()
        domain = lowered.rpartition("@")[2]
        for rule in rules:
            if lowered == rule or ("@" not in rule and domain == rule) or (rule.startswith("@") and domain == rule[1:]):
                refused.append(address)
                break
    return refused


def _header(name: str, value: str) -> bytes:
    if value.isascii():
        return f"{name}: {value}\r\n".encode("ascii")
    encoded = email.header.Header(value, "utf-8", header_name=name).encode(linesep="\r\n")
    return f"{name}: {encoded}\r\n".encode("ascii")


def _crlf(raw: bytes) -> bytes:
    # The report is CRLF throughout (as Exchange sends it); the embedded original follows suit.
    return re.sub(rb"\r?\n", b"\r\n", raw)


def _human(refused: List[Refusal], subject: str) -> Tuple[str, str]:
    lines: List[str] = []
    for address, status, diagnostic in refused:
        if status == "5.1.10":
            domain = address.rpartition("@")[2]
            line = f"{address} wasn't found at {domain}."
        else:
            # The diagnostic after "550 5.x.y " is the sentence Exchange shows people (once, not per recipient).
            line = diagnostic.split(" ", 2)[-1]
        if line not in lines:
            lines.append(line)
    to = ", ".join(a for a, _, _ in refused)
    if all(status == DAILY_LIMIT_STATUS for _, status, _ in refused):
        headline = "Your message wasn't delivered because you've exceeded your sending limit."
        fix = "Wait a day, then resend the message; the limit counts the recipients of the last 24 hours."
    else:
        headline = f"Your message to {to} couldn't be delivered."
        fix = "Check the address and resend the message."
    text = (
        f"{headline}\r\n\r\n"
        + "\r\n".join(lines)
        + f"\r\n\r\nAction Required\r\n\r\nHow to Fix It\r\n{fix}\r\n\r\n"
        + f"Original Message Details\r\nSubject: {subject}\r\n"
    )
    items = "".join(f"<p>{html.escape(line)}</p>" for line in lines)
    rich = (
        '<html><head><meta http-equiv="Content-Type" content="text/html; charset=utf-8"></head><body>'
        f"<p>{html.escape(headline)}</p>{items}"
        f"<p><b>Action Required</b></p><p>How to Fix It: {html.escape(fix)}</p>"
        f"<p>Original Message Details<br>Subject: {html.escape(subject)}</p></body></html>"
    )
    return text, rich


def _delivery_status(refused: List[Refusal], mta: str, arrival: str) -> bytes:
    blocks = [f"Reporting-MTA: dns;{mta}\r\nReceived-From-MTA: dns;{mta}\r\nArrival-Date: {arrival}\r\n"]
    for address, status, diagnostic in refused:
        blocks.append(
            f"Original-Recipient: rfc822;{address}\r\nFinal-Recipient: rfc822;{address}\r\nAction: failed\r\n"
            f"Status: {status}\r\nDiagnostic-Code: smtp;{diagnostic}\r\n"
        )
    return "\r\n".join(blocks).encode("utf-8")


def build_ndr(
    original_raw: bytes,
    mailbox_address: str,
    refused: List[Refusal],
    tenant_domain: str,
    when: float,
    original: str = "message",
) -> bytes:
    """The NDR for one message; ``original`` "message" embeds it whole, "headers" only its header block."""
    subject = mime.header_value(original_raw, "Subject") or ""
    try:
        subject = str(email.header.make_header(email.header.decode_header(subject)))
    except (LookupError, ValueError):
        pass  # keep the encoded form rather than fail the send
    original_id: Optional[str] = mime.header_value(original_raw, "Message-ID")
    # Exchange's servers are named like "DM6PR11MB4091.namprd11.prod.outlook.com".
    mta = f"DM6PR{secrets.randbelow(90) + 10}MB{secrets.randbelow(9000) + 1000}.namprd11.prod.outlook.com"
    date = email.utils.formatdate(when, usegmt=True)
    text, rich = _human(refused, subject)
    outer, alt = (("=_ndr_" + secrets.token_hex(12)).encode("ascii") for _ in range(2))

    head = b"".join(
        [
            _header("From", f"Microsoft Outlook <{SYSTEM_MAILBOX}@{tenant_domain}>"),
            _header("To", f"<{mailbox_address}>"),
            _header("Date", date),
            _header("Subject", f"Undeliverable: {subject}"),
            _header("Message-ID", f"<{secrets.token_hex(16).upper()}@{mta}>"),
            *([_header("In-Reply-To", original_id), _header("References", original_id)] if original_id else []),
            _header("Thread-Topic", subject),
            b"Content-Language: en-US\r\n",
            b"Auto-Submitted: auto-replied\r\n",
            b"X-MS-Exchange-Message-Is-Ndr:\r\n",
            b"X-MS-PublicTrafficType: Email\r\n",
            b"MIME-Version: 1.0\r\n",
            b'Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary="' + outer + b'"\r\n',
        ]
    )
    human = (
        b'Content-Type: multipart/alternative; boundary="' + alt + b'"\r\n\r\n'
        b"--" + alt + b"\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        + text.encode("utf-8") + b"\r\n"
        b"--" + alt + b"\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        + rich.encode("utf-8") + b"\r\n"
        b"--" + alt + b"--\r\n"
    )  # fmt: skip
    status = b"Content-Type: message/delivery-status\r\n\r\n" + _delivery_status(refused, mta, date)
    if original == "headers":
        block, _, _ = mime.split_message(original_raw)
        attached = b"Content-Type: text/rfc822-headers\r\n\r\n" + _crlf(block)
    else:
        attached = b"Content-Type: message/rfc822\r\n\r\n" + _crlf(original_raw)
    body = b"".join(b"--" + outer + b"\r\n" + part + b"\r\n" for part in (human, status, attached))
    return head + b"\r\n" + body + b"--" + outer + b"--\r\n"
