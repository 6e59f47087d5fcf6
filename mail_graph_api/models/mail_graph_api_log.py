# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl-3.0).
import logging
from datetime import timedelta

from odoo import api, fields, models

from graph_mail import AuthenticationError

from ..db import KeptCursor

_logger = logging.getLogger(__name__)

# The calls that hand a mail to Microsoft for delivery: one MIME sendMail, or the send of a draft.
SENDING_OPERATIONS = ("sendMail", "send")
# What a row holds, written by plain INSERTs (_insert).
LOG_COLUMNS = (
    "mail_server_id",
    "message_id",
    "recipients_key",
    "operation",
    "method",
    "path",
    "http_status",
    "code",
    "request_id",
    "client_request_id",
    "duration_ms",
    "request_bytes",
    "attempt",
    "outcome",
    "message",
    "recipients",
)
INSERT_LOG = (
    "INSERT INTO mail_graph_api_log (create_uid, create_date, write_uid, write_date, "  # noqa: S608 - fixed names
    + ", ".join(LOG_COLUMNS)
    + ") VALUES (%(uid)s, now() at time zone 'UTC', %(uid)s, now() at time zone 'UTC', "
    + ", ".join(f"%({column})s" for column in LOG_COLUMNS)
    + ") RETURNING id"
)

# The duplicate guard's question, asked once per mail: what did the last attempt at this copy come to?
# An administrator's decision covers every copy of the mail.
GUARD_LOOKUP = """
SELECT outcome FROM mail_graph_api_log
 WHERE message_id = %(message_id)s
   AND (outcome = 'decision'
        OR (recipients_key IS NOT DISTINCT FROM %(key)s
            AND (outcome = 'skipped'
                 OR (operation IN %(sending)s AND outcome IN ('ok', 'ambiguous', 'pending')))))
 ORDER BY id DESC
 LIMIT 1
"""


class MailGraphApiLog(models.Model):
    """One row per Microsoft Graph or identity call worth keeping. Nothing secret is ever stored here."""

    _name = "mail.graph.api.log"
    _description = "Microsoft Graph API Log"
    _order = "id desc"
    _rec_name = "operation"
    SENDING_OPERATIONS = SENDING_OPERATIONS

    mail_server_id = fields.Many2one("ir.mail_server", "Mail Server", index=True, ondelete="cascade", readonly=True)
    message_id = fields.Char("Message-ID", index=True, readonly=True)
    # Odoo sends one copy per recipient with the same Message-ID: the duplicate guard tells copies apart by this.
    recipients_key = fields.Char(readonly=True)
    mail_id = fields.Many2one("mail.mail", "Mail", compute="_compute_mail_id")
    operation = fields.Char(required=True, readonly=True, help="e.g. sendMail, createDraft, upload, token")
    method = fields.Char(readonly=True)
    path = fields.Char(readonly=True)
    http_status = fields.Integer("HTTP Status", readonly=True)
    code = fields.Char("Microsoft Code", readonly=True, help="Graph error code or AADSTS code")
    request_id = fields.Char("request-id", readonly=True)
    client_request_id = fields.Char("client-request-id", readonly=True)
    duration_ms = fields.Integer("Duration (ms)", readonly=True)
    request_bytes = fields.Integer("Size (bytes)", readonly=True)
    attempt = fields.Integer(readonly=True, default=1)
    outcome = fields.Selection(
        [
            ("ok", "OK"),
            ("retry", "Retried"),
            ("error", "Error"),
            ("ambiguous", "Outcome unknown (may have been sent)"),
            ("pending", "Being sent (or interrupted)"),
            ("fallback", "Sent by SMTP fallback"),
            ("pool", "Sent by another mailbox of the pool"),
            ("skipped", "Not sent again (already accepted)"),
            ("decision", "Administrator: send again"),
        ],
        readonly=True,
        required=True,
    )
    message = fields.Char("Details", readonly=True)
    recipients = fields.Integer(readonly=True, help="Recipient copies of a mail handed to Microsoft (sending limits).")

    def _compute_mail_id(self):
        ids = [log.message_id for log in self if log.message_id]
        mails = self.env["mail.mail"].sudo().search([("message_id", "in", ids)]) if ids else self.env["mail.mail"]
        by_message_id = {mail.message_id: mail.id for mail in mails}
        for log in self:
            log.mail_id = by_message_id.get(log.message_id, False)

    @api.model
    def _write_rows(self, rows, replace_ids=(), kept=None):
        """Write through a cursor of our own: the rows survive a rollback of the sending transaction.
        ``replace_ids``: rows these replace (a mail's "pending" marker), removed in the same transaction."""
        if not rows and not replace_ids:
            return

        def write(cr):
            self._insert(cr, rows)
            if replace_ids:
                cr.execute("DELETE FROM mail_graph_api_log WHERE id IN %s", [tuple(replace_ids)])

        try:
            self._in_own_transaction(write, kept)
        except Exception:
            # A log must never make a mail fail; the _logger line below still tells the story.
            _logger.exception("Could not write Microsoft Graph log rows")

    @api.model
    def _last_guard_outcome(self, message_id, recipients_key):
        """Plain SQL (once per mail, see GUARD_LOOKUP): the outcome, or None when this copy was never tried."""
        self.env.cr.execute(
            GUARD_LOOKUP, {"message_id": message_id, "key": recipients_key or None, "sending": SENDING_OPERATIONS}
        )
        row = self.env.cr.fetchone()
        return row[0] if row else None

    @api.model
    def _mark_pending(self, server, message_id, recipients_key=False, kept=None, recipients=0, before=None):
        """Committed before a mail goes to Microsoft, replaced by the call rows after: if the worker dies in
        between, the duplicate guard finds this row and checks Sent Items before sending the mail again.
        ``before(cr)`` runs in the same transaction first (the sending quota takes its slot there)."""
        row = self._row(server, message_id, "send", "pending", recipients_key, recipients=recipients)

        def mark(cr):
            if before is not None:
                before(cr)
            return self._insert(cr, [row])[0]

        return self._in_own_transaction(mark, kept)

    @api.model
    def _insert(self, cr, rows):
        """Plain INSERTs: these rows are written for every mail, on a cursor of their own, where the ORM's
        create() would rebuild an environment and read defaults each time (see docs/performance.md)."""
        ids = []
        for row in rows:
            # The ORM's False is SQL's NULL.
            values = {column: (None if row.get(column) is False else row.get(column)) for column in LOG_COLUMNS}
            values["attempt"] = values["attempt"] or 1
            cr.execute(INSERT_LOG, dict(values, uid=self.env.uid))
            ids.append(cr.fetchone()[0])
        return ids

    @api.model
    def _in_own_transaction(self, work, kept=None):
        """Run ``work(cr)`` in a committed transaction of its own (a row's foreign key locks the mail server
        row, which another worker may be updating: see db.retry_serialization), on the ``kept`` cursor of a
        sending batch when there is one."""
        if kept is not None:
            return kept.run(work)
        once = KeptCursor(self.env.registry)
        try:
            return once.run(work)
        finally:
            once.close()

    @api.model
    def _row(self, server, message_id, operation, outcome, recipients_key=False, **values):
        """A log row's values; columns not given are NULL (see _insert)."""
        return dict(
            values,
            mail_server_id=server.id,
            message_id=message_id,
            recipients_key=recipients_key,
            operation=operation,
            outcome=outcome,
        )

    @api.model
    def _record_calls(
        self, server, calls, message_id=None, error=None, replace_ids=(), recipients_key=False, kept=None, recipients=0
    ):
        rows = self._call_rows(server, calls, message_id, error, recipients_key, recipients)
        self._write_rows(rows, replace_ids, kept)

    @api.model
    def _call_rows(self, server, calls, message_id=None, error=None, recipients_key=False, recipients=0):
        """The rows of these calls (and of an error no call shows), logged at INFO as they are made."""
        rows = []
        ambiguous = error is not None and error.may_have_been_sent
        for call in calls:
            outcome = call.outcome
            if ambiguous and outcome == "error" and call.operation in SENDING_OPERATIONS:
                outcome = "ambiguous"  # the duplicate guard checks Sent Items before this mail goes again
            rows.append(
                self._row(
                    server,
                    message_id,
                    call.operation,
                    outcome,
                    recipients_key,
                    method=call.method,
                    path=call.path,
                    http_status=call.status or 0,
                    code=call.graph_code,
                    request_id=call.request_id,
                    client_request_id=call.client_request_id,
                    duration_ms=int(call.duration_ms or 0),
                    request_bytes=int(call.request_bytes or 0),
                    attempt=call.attempt,
                    message=(call.message or "")[:500] or False,
                    recipients=recipients if call.operation in SENDING_OPERATIONS else 0,
                )
            )
            _logger.info(
                "Graph %s %s -> %s %s (request-id %s, client-request-id %s, %d ms, attempt %s) for %s",
                call.method,
                call.operation,
                call.status,
                call.graph_code or "",
                call.request_id,
                call.client_request_id,
                call.duration_ms or 0,
                call.attempt,
                message_id or "-",
            )
        if error is not None and not any(call.outcome == "error" for call in calls):
            # The failure happened before or outside a recorded Graph call (the sign-in at the identity
            # platform: AADSTS codes, or the network): one row so the log shows why the mail failed.
            rows.append(
                self._row(
                    server,
                    message_id,
                    getattr(error, "operation", None)
                    or ("token" if isinstance(error, AuthenticationError) else "send"),
                    "ambiguous" if error.may_have_been_sent else "error",
                    recipients_key,
                    http_status=error.status or 0,
                    code=error.code or type(error).__name__,
                    request_id=error.request_id,
                    client_request_id=error.client_request_id,
                    message=str(error)[:500],
                )
            )
            _logger.info("Graph %s for %s failed: %s", rows[-1]["operation"], message_id or "-", error.code or error)
        return rows

    @api.model
    def _record_guard(self, server, message_id, outcome, text, recipients_key=False, kept=None):
        """What the duplicate guard decided for a mail (skipped as already sent, or an administrator's go)."""
        _logger.info("Mail %s: %s", message_id, text)
        self._write_rows(
            [self._row(server, message_id, "duplicate_guard", outcome, recipients_key, message=text[:500])], (), kept
        )

    @api.model
    def _record_pool_failover(self, server, member, message_id, wait, kept=None):
        """A mail this server's quota could not take went through another mailbox of its pool."""
        text = f"{wait} Sent through {member.graph_sender_email} ({member.name}) of the same mailbox pool."
        _logger.info("Mail %s: %s", message_id, text)
        row = self._row(server, message_id, "mailbox_pool", "pool", code=wait.code, message=text[:500])
        self._write_rows([row], (), kept)

    @api.model
    def _record_fallback(self, server, message_id, graph_error, smtp_error):
        ok = smtp_error is None
        text = f"Graph failed before sending ({graph_error.code or type(graph_error).__name__}); " + (
            "sent by SMTP" if ok else f"SMTP failed too: {smtp_error}"
        )
        _logger.info("Mail %s: %s", message_id, text)
        row = self._row(
            server,
            message_id,
            "smtp_fallback",
            "fallback" if ok else "error",
            code=graph_error.code,
            request_id=graph_error.request_id,
            message=text[:500],
        )
        self._write_rows([row])

    @api.model
    def _gc_old_logs(self):
        days = int(self.env["ir.config_parameter"].sudo().get_param("mail_graph_api.log_retention_days", 30))
        if days <= 0:
            return 0
        limit = fields.Datetime.now() - timedelta(days=days)
        old = self.sudo().search([("create_date", "<", limit)])
        count = len(old)
        old.unlink()
        _logger.info("Removed %d Microsoft Graph log rows older than %d days", count, days)
        return count
