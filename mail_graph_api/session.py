# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl-3.0).
"""The virtual SMTP session Odoo gets from ``connect()`` for a Graph server.

``mail.mail.send()`` opens one session per batch, hands it to ``send_email()`` for every mail and calls
``quit()`` at the end, exactly as with ``smtplib.SMTP``: the batch shares one Graph client, hence one pooled
HTTP session and one access token.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import threading
import time
from dataclasses import dataclass
from email.utils import parseaddr

from odoo import _
from odoo.tools import formataddr

from odoo.addons.base.models.ir_mail_server import MailDeliveryException

from graph_mail import (
    Envelope,
    GraphMailClient,
    GraphMailError,
    InvalidGrantError,
    MessageRejected,
    Throttled,
    Timeouts,
)

from . import compat, deferred, quota
from .db import KeptCursor

_logger = logging.getLogger(__name__)


@dataclass
class Outcome:
    """How a failed Graph send should look in Odoo's mail queue."""

    failure_type: str
    retryable: bool
    reason: str
    not_before: datetime.datetime | None = None  # UTC: a mail waiting for the sending quota goes from then on


_outcomes = threading.local()


def remember_outcome(message_id: str, outcome: Outcome) -> None:
    if not hasattr(_outcomes, "by_message_id"):
        _outcomes.by_message_id = {}
    _outcomes.by_message_id[message_id] = outcome


def pop_outcome(message_id: str) -> Outcome | None:
    return getattr(_outcomes, "by_message_id", {}).pop(message_id, None)


def outcome_for(error: GraphMailError) -> Outcome:
    if isinstance(error, MessageRejected) and error.code == "ErrorInvalidRecipients":
        failure_type = "mail_email_invalid"
    elif error.may_have_been_sent:
        failure_type = "unknown"
    else:
        failure_type = "mail_smtp"  # Odoo's "outgoing mail server problem"
    # str(error) holds what failed, the hint for the administrator and Microsoft's request ids.
    reason = str(error)
    if isinstance(error, InvalidGrantError) and "Authenticate with Microsoft" not in reason:
        reason = _("%s Open the outgoing mail server and click “Authenticate with Microsoft”.", reason)
    if error.may_have_been_sent:
        reason = _(
            "Microsoft may have accepted this mail: it was NOT sent again automatically. Retry checks the "
            "sender's Sent Items for its Message-ID first and sends it only if it is not there. %s",
            reason,
        )
    return Outcome(
        failure_type=failure_type,
        retryable=bool(error.retryable and not error.may_have_been_sent),
        reason=reason,
        not_before=getattr(error, "next_slot", None),
    )


def recipients_key(recipients):
    """A short stable fingerprint of one copy's envelope recipients."""
    return hashlib.sha256("\n".join(recipients).encode()).hexdigest()[:32] if recipients else False


class AwaitingDecision(GraphMailError):
    """The duplicate guard cannot tell whether an earlier attempt went out: an administrator decides."""

    operation = "duplicate_guard"
    default_hint = "Check the sender's Sent Items, then send the mail again or cancel it."

    def __init__(self, message, hint=None):
        # Neither sent nor safe to send: no automatic retry, and no SMTP fallback either.
        super().__init__(message, hint=hint, nothing_sent=False, retryable=False)


class GraphSession:
    """Stands where Odoo expects an ``smtplib.SMTP`` connection."""

    def __init__(self, server, smtp_from=None, token_source=None):
        server = server.sudo()
        self._server = server
        self.mail_server_id = server.id
        self.from_filter = server.from_filter if compat.has_from_filter() else False
        self.smtp_from = smtp_from
        self.mailbox = server.graph_sender_email
        self._calls = []
        self._pending = []  # this mail's "pending" log row, replaced by its call rows
        self._recipients, self._recipients_key = [], False
        self._throttled_until = 0.0
        # Read once per batch (not per mail): another worker's verdict counts from the next batch on, ours at once.
        self._needs_reauth = server.graph_connection_state == "reauth"
        # Also once per batch: every mail's commit empties the ORM's cache, and reading one of these per mail
        # fetched the server's whole row again for every mail (docs/performance.md). Edits count from the next batch.
        self._force_from = server.graph_force_from
        self._rate_limit = server.graph_rate_limit
        self._daily_recipient_limit = server.graph_daily_recipient_limit
        self._stand_ins = set()  # deferred attachments of this batch, forgotten at quit()
        self._kept = None  # the batch's own cursor for log rows, closed at quit()
        self._members = {}  # sessions of the mailbox pool's other servers, opened when this quota is spent
        self._waiting = 0  # mails of this batch left waiting for the quota
        self._pool = None  # the mailbox pool's other servers, once needed
        self._client = GraphMailClient(
            server._graph_credentials(),
            token_provider=token_source,
            timeouts=Timeouts(
                connect=server.graph_connect_timeout,
                read=server.graph_read_timeout,
                total=server.graph_send_deadline,
            ),
            on_call=self._calls.append,
        )

    # smtplib-compatible surface used by Odoo ---------------------------------

    def quit(self):
        try:
            for member in self._members.values():
                member._kept = None  # ours, closed below
                member.quit()
            self._members.clear()
            self.flush_logs()
        finally:
            deferred.release(self._stand_ins)
            self._stand_ins.clear()
            if self._kept is not None:
                self._kept.close()
                self._kept = None

    close = quit

    def ehlo_or_helo_if_needed(self):
        return None

    def send_message(self, message, from_addr=None, to_addrs=None):
        message_id = message["Message-Id"]
        self._prepare(message, to_addrs)
        self._stand_ins.update(deferred.stand_ins_of(message))
        if self._kept is None and not compat.registry_in_test_mode(self._server.env):
            self._kept = KeptCursor(self._server.env.registry)  # in tests, the test's cursor serves instead
        try:
            self._send(message, to_addrs)
        except quota.QuotaWait as wait:
            self.flush_logs()
            if not self._send_through_pool(message, from_addr, to_addrs, wait):
                wait = self._place_in_line(wait)
                self.flush_logs(message_id=message_id, error=wait)
                self._handle_failure(message, from_addr, to_addrs, wait)
        except GraphMailError as error:
            self.flush_logs(message_id=message_id, error=error)
            self._handle_failure(message, from_addr, to_addrs, error)
        else:
            self.flush_logs(message_id=message_id)

    def _prepare(self, message, to_addrs):
        self._pending = []
        self._recipients = sorted({address.strip().lower() for address in to_addrs or []})
        self._recipients_key = recipients_key(self._recipients)

    # Mailbox pool ----------------------------------------------------------------

    def _send_through_pool(self, message, from_addr, to_addrs, wait):
        """This mailbox's quota is spent: the next server of its pool with room sends the mail (issue #16).
        The duplicate guard already ran for this mail; each member takes its own slot, so two workers never
        overfill a member either. True when a member sent it."""
        for member in self._pool_members():
            session = self._member_session(member)
            session._prepare(message, to_addrs)
            try:
                session._send(message, to_addrs, guarded=True)
            except quota.QuotaWait:
                session.flush_logs()
                continue
            except GraphMailError as error:
                session.flush_logs(message_id=message["Message-Id"], error=error)
                if error.nothing_sent and not isinstance(error, MessageRejected):
                    session._note_failure(error)
                    continue  # this member cannot send now (throttled, signed out): the next one may
                # Microsoft refused the mail itself, or may have taken it: the pool stops here.
                session._handle_failure(message, from_addr, to_addrs, error)
            session.flush_logs(message_id=message["Message-Id"])
            self._server.env["mail.graph.api.log"]._record_pool_failover(
                self._server, member, message["Message-Id"], wait, kept=self._kept
            )
            return True
        return False

    def _place_in_line(self, wait):
        """The n-th mail of this queue run that waits for a full mailbox (and pool) is scheduled for the minute
        its turn comes, not all for the first free slot: each later queue run then builds only the mails that
        can go. The daily limit frees its room as its oldest sends age out: those wait for the first slot."""
        self._waiting += 1
        now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
        if not wait.per_minute or wait.next_slot - now > quota.MINUTE:
            return wait
        per_minute = wait.per_minute + sum(member.graph_rate_limit for member in self._pool_members())
        return wait.later((self._waiting - 1) // per_minute)

    def _pool_members(self):
        """The pool's other servers, looked up once per batch (only once this mailbox is full)."""
        if self._pool is None:
            self._pool = self._server._graph_pool_members()
        return self._pool

    def _member_session(self, member):
        session = self._members.get(member.id)
        if session is None:
            session = self._members[member.id] = member._graph_session(smtp_from=self.smtp_from)
            session._kept = self._kept  # the batch's cursor: closed by this session's quit()
        return session

    # Graph -------------------------------------------------------------------

    def whoami(self):
        delegated = self._server.graph_auth_mode == "delegated"
        return self._client.whoami(None if delegated else self.mailbox)

    def _send(self, message, to_addrs, guarded=False):
        server = self._server
        if self._needs_reauth:
            raise InvalidGrantError(
                "Microsoft Graph needs a new sign-in for this mail server",
                hint="Open the outgoing mail server and click “Authenticate with Microsoft”.",
                nothing_sent=True,
            )
        if time.monotonic() < self._throttled_until:
            raise Throttled(
                "Microsoft Graph is throttling this mailbox",
                hint="Odoo will retry the mail on the next queue run.",
                retry_after=self._throttled_until - time.monotonic(),
                nothing_sent=True,
            )
        if not guarded and self._already_sent(message["Message-Id"]):
            return
        self._align_from(message)
        Log = server.env["mail.graph.api.log"].sudo()
        copies = len(self._recipients)
        limits = (
            self.mailbox,
            Log.SENDING_OPERATIONS,
            copies,
            self._rate_limit,
            self._daily_recipient_limit,
        )

        def take_slot(cr):
            quota.take_slot(cr, *limits)

        if message["Message-Id"]:
            self._pending.append(
                Log._mark_pending(
                    server, message["Message-Id"], self._recipients_key, kept=self._kept, recipients=copies,
                    before=take_slot,
                )
            )  # fmt: skip
        else:
            Log._in_own_transaction(take_slot, self._kept)
        envelope = Envelope(sender=self.mailbox, recipients=list(to_addrs or []))
        self._client.send(message, envelope, external=deferred.resolve)

    def _already_sent(self, message_id):
        """The duplicate guard. Odoo sends a mail again when an earlier attempt failed ambiguously and was
        retried, or when Microsoft accepted it but the commit that records it was lost. Our log rows outlive
        both (own cursor): a mail Microsoft accepted is not sent again; after an uncertain outcome the mailbox's
        Sent Items decide, or an administrator when they cannot be read."""
        if not message_id:
            return False
        Log = self._server.env["mail.graph.api.log"].sudo()
        key = self._recipients_key
        last = Log._last_guard_outcome(message_id, key)
        if last in (None, "decision"):
            return False
        if last in ("ok", "skipped"):
            Log._record_guard(
                self._server,
                message_id,
                "skipped",
                "Microsoft already accepted this mail: not sent again.",
                key,
                kept=self._kept,
            )
            return True
        found = self._client.find_sent(message_id, self.mailbox, self._recipients)
        if found:
            Log._record_guard(
                self._server,
                message_id,
                "skipped",
                "Found in the sender's Sent Items after an uncertain attempt.",
                key,
                kept=self._kept,
            )
            return True
        if found is None:
            raise AwaitingDecision(
                "An earlier attempt may have reached Microsoft and the Sent Items of "
                f"{self.mailbox} cannot be read to check it",
                hint="Look for this Message-ID in the sender's Sent Items. If it is not there, open the mail and "
                "click “Send Again (checked Sent Items)”; to let Odoo check by itself, grant Mail.ReadWrite.",
            )
        return False  # not in Sent Items: the earlier attempt did not go out

    def _align_from(self, message):
        """Exchange refuses a From the mailbox has no Send As right on (ErrorSendAsDenied). Odoo may have put
        its notifications address or an author's own address there: keep the name, use the mailbox."""
        if not self._force_from:
            return
        original = message["From"] or ""
        name, address = parseaddr(original)
        if address.lower() == self.mailbox.lower():
            return
        del message["From"]
        message["From"] = formataddr((name or address, self.mailbox))
        if not message["Reply-To"] and address:
            message["Reply-To"] = original

    def _note_failure(self, error):
        """What the rest of the batch must know: a lost grant, a throttled mailbox."""
        if isinstance(error, InvalidGrantError):
            self._needs_reauth = True
            self._server._graph_record_error(error)
        if isinstance(error, Throttled):
            self._throttled_until = time.monotonic() + float(error.retry_after or 60)

    def _handle_failure(self, message, from_addr, to_addrs, error):
        server = self._server
        self._note_failure(error)
        # A mail waiting for the mailbox's quota must not leave by SMTP: Exchange counts that mailbox's SMTP mail too.
        if error.nothing_sent and server.graph_smtp_fallback and not isinstance(error, quota.QuotaWait):
            self._send_by_smtp(message, from_addr, to_addrs, error)
            return
        outcome = outcome_for(error)
        remember_outcome(message["Message-Id"], outcome)
        _logger.warning(
            "Graph send of %s via mail server #%s failed: %s",
            message["Message-Id"],
            server.id,
            outcome.reason,
        )
        raise MailDeliveryException(self._t("Mail Delivery Failed"), outcome.reason)

    def _t(self, text):
        """Translated in the server's language: 18.0+ find the language only through an environment."""
        env = self._server.env
        return env._(text) if hasattr(env, "_") else _(text)

    def _send_by_smtp(self, message, from_addr, to_addrs, error):
        """Fallback: only reached when Graph proved nothing was sent, so the mail cannot go out twice."""
        server = self._server
        _logger.info("Graph refused %s before sending (%s): falling back to SMTP", message["Message-Id"], error.code)
        try:
            deferred.materialize(message)
            with compat.smtp_allowed_in_tests(server.env):
                odoo_connect = getattr(server.with_context(mail_graph_api_smtp=True), compat.CONNECT_METHOD)
                smtp = odoo_connect(**compat.fallback_connect_kwargs(server, from_addr))
                smtp.send_message(message, from_addr, to_addrs)
                smtp.quit()
        except Exception as smtp_error:
            server.env["mail.graph.api.log"]._record_fallback(server, message["Message-Id"], error, smtp_error)
            reason = _(
                "Microsoft Graph failed (%(graph)s) and the SMTP fallback failed too: %(smtp)s",
                graph=error,
                smtp=smtp_error,
            )
            remember_outcome(message["Message-Id"], Outcome("mail_smtp", False, reason))
            raise MailDeliveryException(self._t("Mail Delivery Failed"), reason)
        server.env["mail.graph.api.log"]._record_fallback(server, message["Message-Id"], error, None)

    # Logs ----------------------------------------------------------------------

    def flush_logs(self, message_id=None, error=None):
        calls, self._calls[:] = list(self._calls), []
        pending, self._pending = self._pending, []
        if calls or error or pending:
            self._server.env["mail.graph.api.log"]._record_calls(
                self._server,
                calls,
                message_id,
                error,
                pending,
                self._recipients_key if message_id else False,
                kept=self._kept,
                recipients=len(self._recipients) if message_id else 0,
            )
