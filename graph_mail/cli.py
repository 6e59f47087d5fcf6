"""Admin command line: ``python -m graph_mail check|send``.

``check`` acquires a token, reads the mailbox identity and the token's permissions, and prints what works
and what to fix (exit 0 when ready to send, 1 otherwise). ``send`` sends an .eml file. Secrets can come from
the environment (``GRAPH_MAIL_CLIENT_SECRET``, ``GRAPH_MAIL_REFRESH_TOKEN``) or a prompt (``-``) so they
stay out of shell history; nothing secret is ever printed.
"""

from __future__ import annotations

import argparse
import base64
import email
import email.policy
import getpass
import json
import logging
import os
import sys
from typing import Any, Dict, List, Optional, Sequence, TextIO

from .auth import AuthMode, MailboxCredentials, TokenProvider
from .client import GraphMailClient
from .clouds import CLOUDS, resolve_cloud
from .errors import GraphMailError
from .message import Envelope
from .redaction import install_log_redaction, redact
from .transport import Transport

ENV_SECRET = "GRAPH_MAIL_CLIENT_SECRET"  # noqa: S105 - a variable name, not a secret
ENV_REFRESH_TOKEN = "GRAPH_MAIL_REFRESH_TOKEN"  # noqa: S105


class _Report:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.failures = 0
        encoding = getattr(out, "encoding", None) or "utf-8"
        try:
            "✓✗→".encode(encoding)
            self.ok_mark, self.ko_mark, self.warn_mark, self.arrow = "✓", "✗", "!", "→"
        except (UnicodeEncodeError, LookupError):
            self.ok_mark, self.ko_mark, self.warn_mark, self.arrow = "OK", "FAIL", "WARN", "->"

    def ok(self, text: str) -> None:
        self.out.write(f"{self.ok_mark} {text}\n")

    def fail(self, text: str, hint: Optional[str] = None) -> None:
        self.failures += 1
        self.out.write(f"{self.ko_mark} {redact(text)}\n")
        if hint:
            self.out.write(f"  {self.arrow} {redact(hint)}\n")

    def warn(self, text: str, hint: Optional[str] = None) -> None:
        self.out.write(f"{self.warn_mark} {redact(text)}\n")
        if hint:
            self.out.write(f"  {self.arrow} {redact(hint)}\n")

    def error(self, error: GraphMailError) -> None:
        codes = " ".join(str(x) for x in (error.code, f"HTTP {error.status}" if error.status else None) if x)
        ids = ", ".join(
            f"{k} {v}"
            for k, v in (("request-id", error.request_id), ("client-request-id", error.client_request_id))
            if v
        )
        text = error.message + (f" [{codes}]" if codes else "") + (f" ({ids})" if ids else "")
        self.fail(text, error.hint)


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--tenant", required=True, help="directory (tenant) ID or verified domain")
    common.add_argument("--client-id", required=True, help="application (client) ID")
    common.add_argument("--client-secret", help=f"the secret's value; '-' to prompt; default: ${ENV_SECRET}")
    common.add_argument("--certificate", help="PEM file with the private key (and the certificate)")
    common.add_argument("--thumbprint", help="certificate SHA-1 thumbprint (else computed from the PEM)")
    common.add_argument(
        "--mode",
        choices=("app", "application", "delegated"),
        help="default: app, or delegated when a refresh token is given",
    )
    common.add_argument("--refresh-token", help=f"delegated mode; '-' to prompt; default: ${ENV_REFRESH_TOKEN}")
    common.add_argument("--mailbox", help="mailbox to check or send from (required in app mode)")
    common.add_argument("--cloud", default="global", choices=sorted(CLOUDS))
    common.add_argument("--authority-url", help="override the identity host (e.g. http://127.0.0.1:8765)")
    common.add_argument("--graph-url", help="override the Graph URL (e.g. http://127.0.0.1:8765/v1.0)")
    common.add_argument("-v", "--verbose", action="store_true", help="log HTTP calls (redacted)")

    parser = argparse.ArgumentParser(prog="python -m graph_mail", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check", parents=[common], help="check credentials, mailbox and permissions")
    send = sub.add_parser("send", parents=[common], help="send an .eml file")
    send.add_argument("--from", dest="sender", help="mailbox to send from (default: --mailbox)")
    send.add_argument("--to", action="append", default=[], help="recipient (repeat or comma-separate)")
    send.add_argument("--cc", action="append", default=[])
    send.add_argument("--bcc", action="append", default=[])
    send.add_argument("eml", help="RFC 5322 message file")
    return parser


def _secret(value: Optional[str], env: str, prompt: str) -> Optional[str]:
    if value == "-":
        return getpass.getpass(prompt)
    return value or os.environ.get(env) or None


def _credentials(args: argparse.Namespace) -> MailboxCredentials:
    refresh_token = _secret(args.refresh_token, ENV_REFRESH_TOKEN, "Refresh token: ")
    mode = args.mode or ("delegated" if refresh_token else "application")
    certificate = None
    if args.certificate:
        with open(args.certificate, encoding="ascii") as handle:
            certificate = handle.read()
    secret = None if certificate else _secret(args.client_secret, ENV_SECRET, "Client secret: ")
    return MailboxCredentials(
        tenant_id=args.tenant,
        client_id=args.client_id,
        client_secret=secret,
        certificate_pem=certificate,
        certificate_thumbprint=args.thumbprint,
        mode=AuthMode.parse(mode),
        cloud=resolve_cloud(args.cloud, args.authority_url, args.graph_url),
        refresh_token=refresh_token,
    )


def _claims(access_token: str) -> Dict[str, Any]:
    """The (unverified) claims of a JWT access token, to report its permissions; {} if opaque."""
    try:
        payload = access_token.split(".")[1]
        return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return {}


def check(args: argparse.Namespace, out: TextIO) -> int:
    report = _Report(out)
    try:
        credentials = _credentials(args)
    except GraphMailError as exc:
        report.error(exc)
        return 1
    except OSError as exc:
        report.fail(f"Cannot read the certificate file: {exc.strerror}")
        return 1
    cloud = credentials.cloud
    report.ok(
        f"Configuration: {credentials.mode.value} mode, authority {credentials.authority}, Graph {cloud.graph_url}"
    )
    transport = Transport()
    provider = TokenProvider(credentials, transport=transport)
    try:
        token = provider.token()
    except GraphMailError as exc:
        report.error(exc)
        return 1
    claims = _claims(token.access_token)
    if credentials.mode is AuthMode.APPLICATION:
        granted = set(claims.get("roles") or [])
        kind = "application permissions"
    else:
        granted = set(str(claims.get("scp") or " ".join(token.scopes)).split())
        granted = {g.rsplit("/", 1)[-1] for g in granted}
        kind = "delegated permissions"
    who = f" for {token.account}" if token.account else ""
    report.ok(f"Token acquired{who} ({kind}: {', '.join(sorted(granted)) or 'unknown'})")
    if granted:
        if "Mail.Send" not in granted:
            report.fail("Permission Mail.Send is missing", "Add Microsoft Graph > Mail.Send and grant admin consent.")
        if not granted & {"Mail.ReadWrite"}:
            report.warn(
                "Permission Mail.ReadWrite is missing: mail over 4 MB (drafts + upload sessions) will fail",
                "Add Microsoft Graph > Mail.ReadWrite and grant admin consent.",
            )

    client = GraphMailClient(credentials, token_provider=provider, transport=transport)
    mailbox = args.mailbox or (None if credentials.mode is AuthMode.DELEGATED else "")
    if mailbox == "":
        report.fail("No mailbox to check", "Application mode: give --mailbox user@yourdomain.")
    else:
        try:
            identity = client.whoami(mailbox)
        except GraphMailError as exc:
            report.error(exc)
        else:
            address = identity.get("mail") or identity.get("userPrincipalName") or mailbox
            name = identity.get("displayName")
            report.ok(f"Mailbox {address}" + (f" ({name})" if name else "") + " is reachable")
            try:
                readable = client.find_sent("<graph-mail-check@invalid>", address)
            except GraphMailError as exc:
                report.warn(f"Sent Items lookup failed: {exc.message}", exc.hint)
            else:
                if readable is None:
                    report.warn(
                        "Sent Items cannot be read: ambiguous failures cannot be checked before a resend",
                        "Add Mail.ReadBasic (or Mail.ReadWrite) and grant admin consent.",
                    )
                else:
                    report.ok("Sent Items can be read (duplicate check after ambiguous failures)")
    if report.failures:
        out.write(f"{report.failures} problem(s) to fix.\n")
        return 1
    out.write("Ready to send.\n")
    return 0


def _split(values: Sequence[str]) -> List[str]:
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


def send(args: argparse.Namespace, out: TextIO) -> int:
    report = _Report(out)
    try:
        credentials = _credentials(args)
        with open(args.eml, "rb") as handle:
            message = email.message_from_binary_file(handle, policy=email.policy.default)
    except GraphMailError as exc:
        report.error(exc)
        return 1
    except OSError as exc:
        report.fail(f"Cannot read {exc.filename}: {exc.strerror}")
        return 1
    sender = args.sender or args.mailbox
    if not sender:
        addresses = email.utils.getaddresses([str(message.get("From", ""))])
        sender = addresses[0][1] if addresses else ""
    recipients = _split(args.to + args.cc + args.bcc)
    if not recipients:
        recipients = [
            a
            for _, a in email.utils.getaddresses([str(v) for h in ("To", "Cc", "Bcc") for v in message.get_all(h, [])])
            if a
        ]
    client = GraphMailClient(credentials)
    try:
        result = client.send(message, Envelope(sender, recipients))
    except GraphMailError as exc:
        report.error(exc)
        return 1
    report.ok(
        f"Sent {result.internet_message_id} from {sender} to {len(recipients)} recipient(s) "
        f"({result.path} path, {len(result.calls)} call(s))"
    )
    return 0


def main(argv: Optional[Sequence[str]] = None, out: Optional[TextIO] = None) -> int:
    args = _parser().parse_args(argv)
    out = out or sys.stdout
    if args.verbose:
        logging.basicConfig(level=logging.DEBUG, format="%(levelname)s %(name)s: %(message)s")
    install_log_redaction()
    return check(args, out) if args.command == "check" else send(args, out)
