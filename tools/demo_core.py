"""The part of the demo that needs no Odoo: the fake Microsoft, the sign-in, and the demo's mails through the core
library (graph_mail), with the same table of what Microsoft received.

``./dev demo`` runs it when Odoo can be neither found nor downloaded; ``python -m tools.demo_core`` runs it alone.
It never claims that the Odoo part ran.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from email.message import EmailMessage
from email.utils import make_msgid
from typing import List, Optional, Tuple
from urllib.parse import parse_qs, urlparse

import requests

from fake_microsoft import DEFAULTS, FakeMicrosoft
from graph_mail import DelegatedAuthFlow, Envelope, GraphMailClient, MailboxCredentials, resolve_cloud

MB = 1024 * 1024
SENDER = DEFAULTS["signed_in_user"]
CALLBACK = "http://127.0.0.1:8069/mail_graph_api/auth/callback"  # registered with the fake, as in Azure
PIXEL = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


def step(text: str) -> None:
    print(f"==> {text}", flush=True)


def print_table(headers: Tuple[str, ...], rows: List[tuple]) -> None:
    """The demo's table: one column per header, as wide as its widest cell."""
    widths = [max(len(str(row[i])) for row in [headers, *rows]) for i in range(len(headers))]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    print()
    print(line.format(*headers))
    print(line.format(*("-" * w for w in widths)))
    for row in rows:
        print(line.format(*row))


def sign_in(fake: FakeMicrosoft) -> MailboxCredentials:
    """Authorization code + PKCE against the fake, as the addon's Authenticate button does: the refresh token."""
    credentials = MailboxCredentials(
        tenant_id=DEFAULTS["tenant_id"],
        client_id=DEFAULTS["client_id"],
        client_secret=DEFAULTS["client_secret"],
        cloud=resolve_cloud("global", authority_url=fake.url, graph_url=fake.graph_url),
    )
    flow_api = DelegatedAuthFlow(credentials, CALLBACK)
    url, flow = flow_api.start(state=uuid.uuid4().hex, login_hint=SENDER)
    consent = requests.get(url, allow_redirects=False, timeout=30)
    callback = urlparse(consent.headers["Location"])
    print(f"    Microsoft redirected to {callback.path}")
    tokens = flow_api.finish(flow, {key: values[0] for key, values in parse_qs(callback.query).items()})
    print(f"    signed in as {tokens.account}; refresh token kept for sending")
    return MailboxCredentials(
        tenant_id=credentials.tenant_id,
        client_id=credentials.client_id,
        client_secret=credentials.client_secret,
        cloud=credentials.cloud,
        refresh_token=tokens.refresh_token,
    )


def message(subject: str, to: List[str], html: str, cc: Optional[List[str]] = None, **headers) -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = f"Contoso Sales <{SENDER}>"
    mail["To"] = ", ".join(to)
    if cc:
        mail["Cc"] = ", ".join(cc)
    mail["Subject"] = subject
    mail["Message-Id"] = make_msgid(domain="contoso.onmicrosoft.com")
    for name, value in headers.items():
        mail[name.replace("_", "-")] = value
    mail.set_content("See the HTML part.")
    mail.add_alternative(html, subtype="html")
    return mail


def attached(mail: EmailMessage, name: str, size: int) -> EmailMessage:
    data = (name.encode() * (size // len(name) + 1))[:size]
    mail.add_attachment(data, maintype="application", subtype="octet-stream", filename=name)
    return mail


def mail_set() -> List[Tuple[str, EmailMessage, List[str]]]:
    """The Odoo demo's mails, built as Odoo would build them: (label, message, envelope recipients)."""
    parent = make_msgid(domain="contoso.onmicrosoft.com")
    cc_bcc = message(
        "CC and BCC", ["carol@fabrikam.example"], "<p>Copies, one of them blind.</p>", ["dave@fabrikam.example"]
    )
    return [
        ("plain text", message("Plain text", ["alice@fabrikam.example"], "<p>Just text.</p>"), []),
        (
            "HTML + inline image",
            message(
                "HTML with an inline image",
                ["bob@fabrikam.example"],
                f'<p>Logo: <img src="data:image/png;base64,{PIXEL}" alt="logo"/></p>',
            ),
            [],
        ),
        ("CC and BCC", cc_bcc, ["erin@fabrikam.example"]),  # Bcc: in the envelope, never in the headers
        (
            "10 MB attachment",
            attached(message("10 MB", ["frank@fabrikam.example"], "<p>Big.</p>"), "ten.bin", 10 * MB),
            [],
        ),
        (
            "40 MB attachment",
            attached(message("40 MB", ["grace@fabrikam.example"], "<p>Bigger.</p>"), "forty.bin", 40 * MB),
            [],
        ),
        (
            "reply in a thread",
            message(
                "Re: Order shipped",
                ["zoe@fabrikam.example"],
                "<p>Tracking number attached.</p>",
                In_Reply_To=parent,
                References=parent,
            ),
            [],
        ),
    ]


def visible_recipients(mail: EmailMessage) -> List[str]:
    from email.utils import getaddresses

    return [address for _name, address in getaddresses(mail.get_all("To", []) + mail.get_all("Cc", []))]


def run(fake_port: int = 0) -> int:
    step(f"Starting the fake Microsoft on 127.0.0.1:{fake_port or 'a free port'}")
    fake = FakeMicrosoft(port=fake_port).start()
    try:
        fake.configure(max_message_size=150 * MB, redirect_uris=[CALLBACK])
        step("Signing in (authorization code flow with PKCE; the fake consents)")
        credentials = sign_in(fake)
        client = GraphMailClient(credentials)
        step("Sending the demo's mails through the core library (graph_mail), as the addon does for Odoo")
        rows = []
        for label, mail, hidden in mail_set():
            started = time.time()
            envelope = Envelope(sender=SENDER, recipients=visible_recipients(mail) + hidden)
            result = client.send(mail, envelope)
            got = next((m for m in fake.messages() if m["internet_message_id"] == result.internet_message_id), None)
            recipients = ""
            if got:
                recipients = ", ".join(got["to"] + [f"cc:{a}" for a in got["cc"]] + [f"bcc:{a}" for a in got["bcc"]])
            attachments = ", ".join(f"{a['name']} {a['size'] / MB:.1f}MB" for a in (got or {}).get("attachments", []))
            threaded = ""
            if mail["In-Reply-To"] and got:
                headers = {name.lower(): value for name, value in got["headers"]}
                threaded = " (In-Reply-To kept)" if headers.get("in-reply-to") == mail["In-Reply-To"] else " (LOST)"
            rows.append(
                (
                    label + threaded,
                    result.path,
                    result.internet_message_id[:16] + "...>",
                    "yes" if got else "NO",
                    len(result.calls),
                    f"{time.time() - started:.2f}s",
                    recipients,
                    attachments or "-",
                )
            )
        headers = (
            "mail",
            "Graph path",
            "Message-ID",
            "at Microsoft",
            "Graph calls",
            "time",
            "delivered to",
            "attachments",
        )
        print_table(headers, rows)
        bcc_row = next(m for m in fake.messages() if m["subject"] == "CC and BCC")
        hidden = b"erin@fabrikam.example" not in fake.raw(bcc_row["id"])
        print(
            f"\n    messages at Microsoft: {len(fake.messages())}; Bcc hidden from what recipients get: {'yes' if hidden else 'NO'}"
        )
        delivered = all(row[3] == "yes" for row in rows)
        return 0 if delivered and hidden else 1
    finally:
        fake.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fake-port", type=int, default=0)
    return run(parser.parse_args().fake_port)


if __name__ == "__main__":
    sys.exit(main())
