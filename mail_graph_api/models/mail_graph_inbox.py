# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl-3.0).
"""Where a mail comes back in: a mailbox folder read over Microsoft Graph and handed to Odoo's mail gateway.

One ``mail.graph.inbox`` per mailbox folder. A fetch (cron, "Fetch Now", or an Incoming Mail Server of type
"Microsoft Graph") walks Graph's delta query from the stored link, reads each new message as MIME and gives it
to ``mail.thread.message_process`` exactly as fetchmail does with IMAP: aliases, replies, loops and bounces
behave as they do there. Then the message is marked read and filed (processed or errors folder), never deleted.

Nothing lost, nothing processed twice (docs/architecture.md, "What comes back"):
- a message's outcome row (unique per inbox and Graph id) is written in the SAME transaction as Odoo's
  processing: after a crash either both exist or neither, and a second worker's identical insert fails;
- one transaction per batch of messages (a savepoint each), not per message as fetchmail: Odoo's caches stay
  warm across the batch. A message whose processing sent mail is committed at once, so a crash cannot send it
  again; a concurrent update (serialization failure) rolls the batch back for the next fetch;
- the delta link only advances after a whole page is handled; a page read again skips what has an outcome;
- filing (mark read, move) happens after the commit and is retried at the next fetch until it succeeds;
- the first sync reads only mail received from the moment the inbox was connected.
"""

import datetime
import logging

from psycopg2 import IntegrityError
from psycopg2.extensions import TransactionRollbackError

from odoo import _, api, fields, models
from odoo.exceptions import UserError

from graph_mail import GraphApiError, GraphMailClient, GraphMailError, MailboxReader, SyncStateLost, Timeouts
from graph_mail.inbox import BATCH_LIMIT, parse_received

from .. import compat, db
from ..db import KeptCursor
from ..tokens import ServerTokenSource

_logger = logging.getLogger(__name__)

# After a lost delta token the new round starts this long before the last message processed: Graph's
# receivedDateTime is the Exchange arrival time, and mail delivered concurrently may carry a slightly older one.
RESYNC_MARGIN = datetime.timedelta(hours=1)
LOCK_NAMESPACE = 7_356_001  # pg advisory lock key space of this model
_ONCE_INDEX = "mail_graph_inbox_message_once"


class MailGraphInbox(models.Model):
    _name = "mail.graph.inbox"
    _description = "Mailbox folder read over Microsoft Graph"
    _order = "id"

    name = fields.Char(compute="_compute_name", store=True)
    active = fields.Boolean(default=True)
    mail_server_id = fields.Many2one(
        "ir.mail_server",
        "Microsoft Graph connection",
        required=True,
        ondelete="cascade",
        domain=[("use_graph_api", "=", True)],
        help="The Graph mail server whose app registration, sign-in and logs this inbox uses.",
    )
    origin = fields.Selection(
        [
            ("server", "Outgoing server: bounces and replies"),
            ("fetchmail", "Incoming Mail Server"),
            ("manual", "Manual"),
        ],
        default="manual",
        required=True,
        readonly=True,
    )
    mailbox = fields.Char(help="The mailbox to read; empty: the connection's Sender Email.")
    folder = fields.Char(default="Inbox", required=True, help="Well-known name (Inbox) or a top-level folder name.")
    processed_folder = fields.Char(default="Odoo Processed", required=True)
    error_folder = fields.Char(default="Odoo Errors", required=True)
    model_id = fields.Many2one(
        "ir.model",
        "Create a new record",
        ondelete="cascade",
        help="Mail that is neither a reply nor addressed to an alias creates a record of this model; empty: "
        "such mail is filed in the errors folder.",
    )
    save_original = fields.Boolean(help="Attach the original message to the record (as fetchmail does).")
    strip_attachments = fields.Boolean()
    sync_since = fields.Datetime(
        default=fields.Datetime.now,
        help="Mail received before this moment is never imported: the first sync starts when the inbox is connected.",
    )
    delta_link = fields.Char(groups="base.group_system", copy=False)
    last_received = fields.Datetime(copy=False, readonly=True)
    last_fetch = fields.Datetime(copy=False, readonly=True)
    last_error = fields.Text(copy=False, readonly=True)
    message_ids = fields.One2many("mail.graph.inbox.message", "inbox_id")

    @api.depends("mail_server_id.graph_sender_email", "mailbox", "folder")
    def _compute_name(self):
        for inbox in self:
            inbox.name = f"{inbox._mailbox() or '?'} / {inbox.folder}"

    def _mailbox(self):
        return (self.mailbox or self.mail_server_id.graph_sender_email or "").strip()

    # -- fetching -------------------------------------------------------------------------------------------

    @api.model
    def _cron_fetch(self):
        # Inboxes behind an Incoming Mail Server are fetched by Odoo's own fetchmail cron.
        self.search([("mail_server_id.use_graph_api", "=", True), ("origin", "!=", "fetchmail")])._fetch()

    def _fetch(self, limit=None, fetchmail_server=None):
        """Read what is new in each inbox (at most ``limit`` messages each). Returns (processed, failed)."""
        totals = [0, 0]
        for inbox in self.sudo():
            done, failed = inbox._fetch_one(limit, fetchmail_server)
            totals[0] += done
            totals[1] += failed
        return tuple(totals)

    def _fetch_one(self, limit, fetchmail_server):
        if not self._try_lock():
            _logger.info("Graph inbox %s is being fetched by another worker: skipped", self.name)
            return 0, 0
        calls = []
        server = self.mail_server_id
        client = GraphMailClient(
            server._graph_credentials(),
            token_provider=ServerTokenSource.for_server(server),
            timeouts=Timeouts(connect=server.graph_connect_timeout, read=server.graph_read_timeout),
            on_call=calls.append,
        )
        run = _Run(self, MailboxReader(client, self._mailbox()), calls, limit, fetchmail_server)
        try:
            run.file_pending()
            run.walk()
        except GraphMailError as error:
            run.commit()  # what the batch processed before Graph failed is kept
            run.log(None, error)
            self._write_state({"last_error": str(error)[:2000], "last_fetch": fields.Datetime.now()})
            # Nothing is lost: the delta link did not move past what failed; the next fetch resumes there.
            _logger.warning("Graph inbox %s: fetch stopped: %s", self.name, error)
        except TransactionRollbackError as error:
            # Another worker changed a row this batch also changes: the batch (processing and outcome rows) is
            # rolled back whole and read again at the next fetch, not marked failed.
            run.rolled_back()
            self._write_state({"last_error": _("Stopped by a concurrent update: %s", error)[:2000]})
            _logger.info("Graph inbox %s: batch rolled back after a concurrent update: %s", self.name, error)
        else:
            run.log(None)
            self._write_state({"last_error": False, "last_fetch": fields.Datetime.now()})
        finally:
            run.close()
            self._unlock()
        _logger.info("Graph inbox %s: %d processed, %d failed", self.name, run.processed, run.failed)
        return run.processed, run.failed

    def _write_state(self, values):
        self.write(values)
        self._commit()

    def _commit(self):
        if not compat.registry_in_test_mode(self.env):
            self.env.cr.commit()

    def _rollback(self):
        if not compat.registry_in_test_mode(self.env):
            self.env.cr.rollback()

    def _try_lock(self):
        self.env.cr.execute("SELECT pg_try_advisory_lock(%s, %s)", (LOCK_NAMESPACE, self.id))
        return self.env.cr.fetchone()[0]

    def _unlock(self):
        self.env.cr.execute("SELECT pg_advisory_unlock(%s, %s)", (LOCK_NAMESPACE, self.id))

    # -- one message ----------------------------------------------------------------------------------------

    def _options(self, fetchmail_server=None):
        """How Odoo's gateway is called and the messages filed, read once per fetch (every commit empties the
        ORM's cache)."""
        options = {
            "inbox_id": self.id,
            "processed_folder": self.processed_folder,
            "error_folder": self.error_folder,
            "routed": _("routed to %s"),
            "handled": _("handled (reply, bounce or loop)"),
        }
        if fetchmail_server:
            return dict(
                options,
                context={"default_fetchmail_server_id": fetchmail_server.id},
                model=fetchmail_server.object_id.model or False,
                save_original=fetchmail_server.original,
                strip_attachments=not fetchmail_server.attach,
            )
        return dict(
            options,
            context={},
            model=self.model_id.model or False,
            save_original=self.save_original,
            strip_attachments=self.strip_attachments,
        )

    def _process(self, mime, incoming, options):
        """Hand one message to Odoo's gateway and write its outcome in the same transaction (savepoint);
        returns (state, detail). ``options``: :meth:`_options`."""
        values = {
            "inbox_id": options["inbox_id"],
            "graph_id": incoming.id,
            "internet_message_id": incoming.internet_message_id,
            "received": parse_received(incoming.received),
            "subject": (incoming.subject or "")[:250],
        }
        try:
            with self.env.cr.savepoint():
                thread_id = (
                    self.env["mail.thread"]
                    .with_context(**options["context"])
                    .message_process(
                        options["model"],
                        mime,
                        save_original=options["save_original"],
                        strip_attachments=options["strip_attachments"],
                    )
                )
                detail = options["routed"] % thread_id if thread_id else options["handled"]
                # In the same savepoint: a second worker's row for this message makes this one fail and
                # takes Odoo's processing back with it.
                self._insert_outcome(dict(values, state="processed", detail=detail))
        except IntegrityError as exc:
            if _ONCE_INDEX not in str(exc):
                return self._failed(values, exc)
            return "skipped", _("already processed by another worker")
        except TransactionRollbackError:
            raise  # not the message's fault: the whole batch is taken back (_fetch_one)
        except Exception as exc:  # Odoo's gateway raises anything; one message must not block the rest
            return self._failed(values, exc)
        return "processed", detail

    def _insert_outcome(self, values):
        """Plain SQL, once per message (the ORM's create() costs more than the row: docs/performance.md)."""
        self.env.cr.execute(
            "INSERT INTO mail_graph_inbox_message (inbox_id, graph_id, internet_message_id, received, subject, state, "
            "detail, filed, create_uid, write_uid, create_date, write_date) VALUES (%(inbox_id)s, %(graph_id)s, "
            "%(internet_message_id)s, %(received)s, %(subject)s, %(state)s, %(detail)s, false, %(uid)s, %(uid)s, "
            "now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC')",
            dict(values, uid=self.env.uid, detail=str(values["detail"])[:1000]),
        )

    def _failed(self, values, exc):
        detail = f"{type(exc).__name__}: {exc}"[:1000]
        _logger.info(
            "Graph inbox #%s: message %s not processed: %s", values["inbox_id"], values["internet_message_id"], detail
        )
        try:
            with self.env.cr.savepoint():
                self._insert_outcome(dict(values, state="failed", detail=detail))
        except IntegrityError:
            return "skipped", _("already processed by another worker")
        return "failed", detail

    def action_fetch_now(self):
        processed, failed = self._fetch()
        return self._notification(_("Fetched: %(done)s processed, %(failed)s failed.", done=processed, failed=failed))

    def action_test(self):
        """Prove the read permission and the folders, and say what to grant when they are missing."""
        self.ensure_one()
        server = self.sudo().mail_server_id
        client = GraphMailClient(server._graph_credentials(), token_provider=ServerTokenSource.for_server(server))
        reader = MailboxReader(client, self._mailbox())
        try:
            reader.folder_id(self.folder)
            reader.delta_page(reader.start_link(self.folder, fields.Datetime.now()))
            for name in (self.processed_folder, self.error_folder):
                reader.ensure_folder(name)
        except GraphMailError as error:
            raise UserError(_("Reading %(mailbox)s failed: %(error)s", mailbox=self._mailbox(), error=error))
        return self._notification(_("%s can be read: new mail will be fetched and filed.", self._mailbox()))

    def _notification(self, message):
        return {
            "type": "ir.actions.client",
            "tag": "display_notification",
            "params": {"title": _("Microsoft Graph"), "message": message, "sticky": False},
        }


class _Run:
    """One fetch of one inbox: walks the delta rounds and files each message."""

    def __init__(self, inbox, reader, calls, limit, fetchmail_server):
        self.inbox, self.reader, self.calls = inbox, reader, calls
        self.limit, self.fetchmail_server = limit, fetchmail_server
        self.processed = self.failed = 0
        self._folders = {}
        self.server = inbox.mail_server_id  # only its id is used from here on: no read after a commit
        self.options = inbox._options(fetchmail_server)
        self.rows = []
        self.uncommitted = []  # (message, state, detail) processed in the open transaction
        self.last_received = None
        # One cursor of our own for the log rows of the whole run (in tests the test's transaction serves).
        in_tests = compat.registry_in_test_mode(inbox.env)
        self.kept = None if in_tests else KeptCursor(inbox.env.registry)

    def walk(self):
        inbox = self.inbox
        link = inbox.delta_link or self.reader.start_link(inbox.folder, inbox.sync_since)
        while link:
            try:
                page = self.reader.delta_page(link)
            except SyncStateLost as lost:
                # Microsoft forgot the round: start again from just before the last message processed; the
                # outcome rows skip what was already done.
                since = (inbox.last_received or inbox.sync_since) - RESYNC_MARGIN
                self.log(None, lost)
                _logger.info("Graph inbox %s: delta token expired, resyncing from %s", inbox.name, since)
                link = self.reader.start_link(inbox.folder, max(since, inbox.sync_since))
                inbox._write_state({"delta_link": False})
                continue
            if not self.handle_page(page.messages):
                return  # the limit was reached: this page's link is not stored, the next fetch reads it again
            link = page.next_link
            inbox._write_state({"delta_link": page.next_link or page.delta_link})
            if page.delta_link:
                return

    def handle_page(self, messages):
        """Process what is new on a page (MIME read 20 per request), then file it; False if the limit cut it."""
        inbox = self.inbox
        Outcome = inbox.env["mail.graph.inbox.message"]
        known = {
            outcome.graph_id: outcome
            for outcome in Outcome.search([("inbox_id", "=", inbox.id), ("graph_id", "in", [m.id for m in messages])])
        }
        new = []
        for incoming in messages:
            outcome = known.get(incoming.id)
            if outcome and outcome.state == "failed" and outcome.filed:
                outcome.unlink()  # filed in the errors folder, then moved back by an administrator: try again
                outcome = None
            if not outcome:
                new.append(incoming)
        complete = True
        if self.limit is not None and len(new) > self.limit - self.processed - self.failed:
            new, complete = new[: max(0, self.limit - self.processed - self.failed)], False
        for start in range(0, len(new), BATCH_LIMIT):
            chunk = new[start : start + BATCH_LIMIT]
            mimes = self.reader.fetch_mimes([incoming.id for incoming in chunk])
            for incoming in chunk:
                mime = mimes[incoming.id]
                if isinstance(mime, GraphApiError):
                    if mime.status != 404:
                        raise mime
                    self.log(incoming.internet_message_id, mime)  # deleted or moved away by someone meanwhile
                    continue
                self.process(incoming, mime)
            self.commit()  # the batch's processing and outcome rows, before anything is filed
            self.file_pending()
            self.flush_logs()
        self.file_pending()  # processed earlier on this page, not filed yet
        return complete

    def process(self, incoming, mime):
        inbox = self.inbox
        sends = db.sends_so_far()
        state, detail = inbox._process(mime, incoming, self.options)
        self.log(incoming.internet_message_id)
        self.uncommitted.append((incoming, state, detail))
        if db.sends_so_far() != sends:
            self.commit()  # it sent mail (an auto-reply, a bounce to the author): never again after a crash

    def commit(self):
        """Commit the batch so far; only then do its messages count and get their outcome log rows."""
        self.inbox._commit()
        Log = self.inbox.env["mail.graph.api.log"]
        for incoming, state, detail in self.uncommitted:
            received = parse_received(incoming.received)
            if received and (not self.last_received or received > self.last_received):
                self.last_received = received  # written once per batch (file_pending)
            outcome = {"processed": "ok", "failed": "error", "skipped": "skipped"}[state]
            self.rows.append(
                Log._row(self.server, incoming.internet_message_id, "receive", outcome, message=(detail or "")[:500])
            )
            if state == "processed":
                self.processed += 1
            elif state == "failed":
                self.failed += 1
        self.uncommitted = []

    def rolled_back(self):
        """Take back what the batch did since its last commit: it is read again at the next fetch."""
        self.inbox._rollback()
        self.uncommitted = []

    def file_pending(self):
        """Mark read and move what was processed and not filed yet (also what Graph failed to file at an
        earlier fetch): 10 messages per request. A message gone from the folder counts as filed."""
        inbox = self.inbox
        if self.last_received and (not inbox.last_received or self.last_received > inbox.last_received):
            inbox.last_received = self.last_received
        # Plain SQL: a handful of columns of the batch's rows, read and marked once (the ORM would read
        # each field of each row again after the commit emptied its cache).
        cr = inbox.env.cr
        cr.execute(
            "SELECT id, graph_id, state, internet_message_id FROM mail_graph_inbox_message "
            "WHERE inbox_id = %s AND NOT filed ORDER BY id",
            [inbox.id],
        )
        pending = cr.fetchall()
        if not pending:
            inbox._commit()
            return
        moves = []
        for _id, graph_id, state, _message_id in pending:
            name = self.options["processed_folder"] if state == "processed" else self.options["error_folder"]
            if name not in self._folders:
                self._folders[name] = self.reader.ensure_folder(name)
            moves.append((graph_id, self._folders[name]))
        errors = self.reader.file_many(moves)
        blocking, filed = None, []
        for outcome_id, graph_id, _state, message_id in pending:
            error = errors.get(graph_id)
            if error is not None and error.status != 404:
                blocking = blocking or error  # stays unfiled: filed at the next fetch
                continue
            if error is not None:
                self.log(message_id, error)  # gone from the folder: nothing left to file
            filed.append(outcome_id)
        if filed:
            cr.execute(
                "UPDATE mail_graph_inbox_message SET filed = true, write_uid = %s, "
                "write_date = now() AT TIME ZONE 'UTC' WHERE id = ANY(%s)",
                [inbox.env.uid, filed],
            )
            compat.invalidate(inbox.env["mail.graph.inbox.message"].browse(filed), ["filed"])
        inbox._commit()
        if blocking is not None:
            raise blocking

    def log(self, message_id, error=None):
        """This run's Graph calls, for the Graph API Logs: written by :meth:`flush_logs` on a cursor of the
        run's own, once per batch of messages (with the messages' outcomes, :meth:`commit`)."""
        calls, self.calls[:] = list(self.calls), []
        self.rows += self.inbox.env["mail.graph.api.log"]._call_rows(self.server, calls, message_id, error)

    def flush_logs(self):
        rows, self.rows = self.rows, []
        if rows:
            self.inbox.env["mail.graph.api.log"]._write_rows(rows, kept=self.kept)

    def close(self):
        try:
            self.flush_logs()
        finally:
            if self.kept is not None:
                self.kept.close()


class MailGraphInboxMessage(models.Model):
    _name = "mail.graph.inbox.message"
    _description = "A message read over Microsoft Graph and what Odoo did with it"
    _order = "id desc"

    inbox_id = fields.Many2one("mail.graph.inbox", required=True, ondelete="cascade", index=True)
    graph_id = fields.Char("Graph ID", required=True)
    internet_message_id = fields.Char("Message-ID", index=True)
    received = fields.Datetime()
    subject = fields.Char()
    state = fields.Selection([("processed", "Processed"), ("failed", "Failed")], required=True)
    detail = fields.Char()
    filed = fields.Boolean(help="Marked read and moved to the processed or errors folder.")

    def init(self):
        # The guarantee against processing a message twice (two workers, a replayed page): plain SQL, the
        # same on every series (19.0 replaced _sql_constraints).
        self.env.cr.execute(
            f"CREATE UNIQUE INDEX IF NOT EXISTS {_ONCE_INDEX} ON mail_graph_inbox_message (inbox_id, graph_id)"
        )
