# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl-3.0).
"""What comes back (#15): bounces and replies read from the mailbox over Graph and handed to Odoo's gateway."""

import datetime
import email.utils
import time
from unittest.mock import patch

from psycopg2.errors import SerializationFailure

from odoo.exceptions import UserError
from odoo.tests import tagged
from odoo.tools import mute_logger

from fake_microsoft import DEFAULTS

from .. import compat
from .common import SENDER, GraphTransactionCase

REFUSED_DOMAIN = "nowhere.example"
# An incoming server's own sign-in: the fake's app, application mode, another mailbox than the outgoing server's
OWN_SIGN_IN = {
    "graph_credentials": "own",
    "graph_own_auth_mode": "application_secret",
    "graph_own_client_id": DEFAULTS["client_id"],
    "graph_own_client_secret": DEFAULTS["client_secret"],
    "graph_own_tenant_id": DEFAULTS["tenant_id"],
    "graph_own_mailbox": "sales@contoso.onmicrosoft.com",
}


def _reply(to, in_reply_to, subject, body, sender="zoe@fabrikam.example", message_id=None):
    """A customer's answer as it arrives in the mailbox (plain RFC 5322)."""
    message_id = message_id or email.utils.make_msgid(domain="fabrikam.example")
    headers = [
        f"From: Zoe Client <{sender}>",
        f"To: {to}",
        f"Subject: {subject}",
        f"Message-ID: {message_id}",
        f"Date: {email.utils.formatdate(usegmt=True)}",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
    ]
    if in_reply_to:
        headers += [f"In-Reply-To: {in_reply_to}", f"References: {in_reply_to}"]
    return ("\r\n".join(headers) + "\r\n\r\n" + body + "\r\n").encode()


@tagged("post_install", "-at_install", "mail_graph_api")
class TestGraphIncoming(GraphTransactionCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        Partner = cls.env["res.partner"]
        cls.customer = Partner.create({"name": "Zoë Client", "email": "zoe@fabrikam.example"})
        cls.ghost = Partner.create({"name": "Ghost", "email": f"ghost@{REFUSED_DOMAIN}"})
        cls.deal = Partner.create({"name": "Deal 42 (a record with a chatter)"})

    def setUp(self):
        super().setUp()
        self.connect_server()
        self.fake.configure(refused_recipients=["@" + REFUSED_DOMAIN])
        self.inbox = self.server.graph_inbox_ids
        # The inbox was connected when the server was created (setUpClass): earlier mail is history.
        self.inbox.sync_since = datetime.datetime.utcnow().replace(microsecond=0) - datetime.timedelta(seconds=5)

    def _post_and_send(self, partners, body="<p>Your quote</p>"):
        message = self.deal.message_post(
            body=body, partner_ids=partners.ids, message_type="comment", subtype_xmlid="mail.mt_comment"
        )
        # Sent at once or queued, depending on the series: send what is still queued.
        queued = self.env["mail.mail"].sudo().search([("mail_message_id", "=", message.id), ("state", "=", "outgoing")])
        if queued:
            self.env["mail.mail"].process_email_queue(queued.ids)
        sent = [m for m in self.fake.messages() if m["internet_message_id"] == message.message_id]
        self.assertEqual(len(sent), len(partners), "one mail per recipient went through Graph")
        return message

    def _folder(self, name):
        return [m for m in self.fake.mailbox_messages(SENDER) if m["folder"] == name]

    def _outcomes(self):
        """What the inbox recorded per message (written by plain SQL: read from the database)."""
        compat.invalidate_all(self.env)
        return self.env["mail.graph.inbox.message"].search([("inbox_id", "=", self.inbox.id)])

    def _thread_messages(self, record):
        return self.env["mail.message"].search([("model", "=", record._name), ("res_id", "=", record.id)])

    def test_bounce_of_a_mail_sent_through_graph_is_counted(self):
        """Exchange's NDR lands in the sending mailbox; read over Graph, Odoo's own bounce handling counts it."""
        message = self._post_and_send(self.customer | self.ghost)
        self.assertEqual(len(self._folder("Inbox")), 1, "the fake returned one NDR for the refused domain")
        processed, failed = self.inbox._fetch()
        self.assertEqual((processed, failed), (1, 0))
        compat.invalidate_all(self.env)
        notifications = {n.res_partner_id: n.notification_status for n in message.notification_ids}
        self.assertEqual(notifications[self.ghost], "bounce")
        self.assertEqual(notifications[self.customer], "sent")
        self.assertEqual(self.ghost.message_bounce, 1)
        self.assertEqual(self.customer.message_bounce, 0)
        # Filed, read, never deleted; the Inbox is empty again.
        self.assertEqual(self._folder("Inbox"), [])
        filed = self._folder("Odoo Processed")
        self.assertEqual(len(filed), 1)
        self.assertTrue(filed[0]["isRead"])
        self.assertTrue(filed[0]["subject"].startswith("Undeliverable"))
        # Nothing is processed twice.
        self.assertEqual(self.inbox._fetch(), (0, 0))
        self.assertEqual(self.ghost.message_bounce, 1)
        # Every call is in the Graph API Logs, with Microsoft's request ids.
        logs = self.env["mail.graph.api.log"].search([("mail_server_id", "=", self.server.id)])
        operations = set(logs.mapped("operation"))
        self.assertTrue({"delta", "messageValue", "fileMessages", "receive"} <= operations)
        self.assertTrue(all(log.request_id for log in logs if log.operation == "delta"))

    def test_reply_to_the_mailbox_reaches_its_record(self):
        """A reply sent to the mailbox address (not to the catchall) lands in the record's chatter."""
        message = self._post_and_send(self.customer)
        before = len(self._thread_messages(self.deal))
        self.fake.deliver(SENDER, _reply(SENDER, message.message_id, "Re: Your quote", "Yes, let's go."))
        self.assertEqual(self.inbox._fetch(), (1, 0))
        messages = self._thread_messages(self.deal)
        self.assertEqual(len(messages), before + 1)
        reply = messages.sorted("id")[-1]
        self.assertIn("let's go", reply.body)
        self.assertEqual(reply.author_id, self.customer)
        self.assertEqual(len(self._folder("Odoo Processed")), 1)

    def test_unroutable_mail_is_filed_in_errors_and_does_not_block_the_rest(self):
        message = self._post_and_send(self.customer)
        with mute_logger("odoo.addons.mail.models.mail_thread", "odoo.addons.mail_graph_api.models.mail_graph_inbox"):
            self.fake.deliver(SENDER, _reply(SENDER, None, "Hello?", "Nobody expects this mail."))
            self.fake.deliver(SENDER, _reply(SENDER, message.message_id, "Re: Your quote", "Second answer"))
            self.assertEqual(self.inbox._fetch(), (1, 1))
        failed = self._outcomes().filtered(lambda m: m.state == "failed")
        self.assertEqual(failed.subject, "Hello?")
        self.assertIn("route", failed.detail.lower())
        self.assertEqual([m["subject"] for m in self._folder("Odoo Errors")], ["Hello?"])
        self.assertEqual([m["subject"] for m in self._folder("Odoo Processed")], ["Re: Your quote"])
        # The administrator creates a record model for such mail and moves the message back to the Inbox.
        self.inbox.model_id = self.env["ir.model"]._get("res.partner")
        self._reader().move(self._folder("Odoo Errors")[0]["id"], "inbox")
        self.assertEqual(self.inbox._fetch(), (1, 0))
        self.assertTrue(self.env["res.partner"].search([("name", "=", "Hello?")]))
        self.assertEqual(self._outcomes().mapped("state"), ["processed", "processed"])

    def test_history_before_the_connection_is_never_imported(self):
        self.fake.deliver(SENDER, _reply(SENDER, None, "Old mail", "From last year"))
        self.inbox.sync_since = datetime.datetime.utcnow() + datetime.timedelta(minutes=1)
        self.assertEqual(self.inbox._fetch(), (0, 0))
        self.assertEqual([m["subject"] for m in self._folder("Inbox")], ["Old mail"])
        self.assertFalse(self._folder("Inbox")[0]["isRead"])

    def test_filing_failure_then_expired_delta_token_neither_loses_nor_repeats(self):
        """Graph fails after Odoo committed a message (it stays in the Inbox), then Microsoft forgets the delta
        token: the next fetch files the first message without processing it again and processes the new one."""
        message = self._post_and_send(self.customer)
        self.fake.deliver(SENDER, _reply(SENDER, message.message_id, "Re: first", "First answer"))
        self.fake.inject("moveMessage", status=503, count=50)
        with mute_logger("odoo.addons.mail_graph_api.models.mail_graph_inbox", "graph_mail.client"):
            self.inbox._fetch()
        self.assertIn("503", self.inbox.last_error)
        self.assertEqual(len(self._folder("Inbox")), 1, "not filed: Graph failed")
        self.assertFalse(self._outcomes().filtered("filed"))
        count = len(self._thread_messages(self.deal))
        self.fake.clear_faults()
        self.fake.deliver(SENDER, _reply(SENDER, message.message_id, "Re: second", "Second answer"))
        self.fake.expire_delta_tokens()
        self.assertEqual(self.inbox._fetch(), (1, 0))
        self.assertEqual(len(self._thread_messages(self.deal)), count + 1, "the first answer was not posted twice")
        self.assertEqual(sorted(m["subject"] for m in self._folder("Odoo Processed")), ["Re: first", "Re: second"])
        self.assertFalse(self.inbox.last_error)
        self.assertEqual(len(self._outcomes()), 2)

    def test_throttled_read_is_retried(self):
        message = self._post_and_send(self.customer)
        self.fake.deliver(SENDER, _reply(SENDER, message.message_id, "Re: quote", "Answer"))
        self.fake.inject("messageValue", status=429, retry_after=0, code="ApplicationThrottled")
        self.assertEqual(self.inbox._fetch(), (1, 0))
        retried = self.env["mail.graph.api.log"].search(
            [("mail_server_id", "=", self.server.id), ("operation", "=", "messageValue"), ("outcome", "=", "retry")]
        )
        self.assertEqual(retried.http_status, 429)

    def test_an_expired_token_is_renewed_while_reading(self):
        message = self._post_and_send(self.customer)
        self.fake.deliver(SENDER, _reply(SENDER, message.message_id, "Re: quote", "Answer"))
        self.fake.expire_tokens()  # Microsoft answers 401 to the token Odoo holds
        self.mark()
        self.assertEqual(self.inbox._fetch(), (1, 0))
        self.assertEqual(len(self.graph_calls("token")), 1, "one renewal, then the fetch went on")
        self.assertEqual([c["status"] for c in self.graph_calls("delta")], [401, 200])

    def test_a_message_is_processed_once_even_when_handed_over_twice(self):
        """Two workers reading the same page: the outcome row is written with Odoo's processing, and a second
        identical one is refused by the database."""
        message = self._post_and_send(self.customer)
        self.fake.deliver(SENDER, _reply(SENDER, message.message_id, "Re: once", "Only once"))
        page = self._reader().delta_page(self._reader().start_link("inbox", self.inbox.sync_since))
        incoming = page.messages[0]
        mime = self._reader().fetch_mime(incoming.id)
        before = len(self._thread_messages(self.deal))
        self.assertEqual(self.inbox._process(mime, incoming, self.inbox._options())[0], "processed")
        with mute_logger("odoo.sql_db"):
            self.assertEqual(self.inbox._process(mime, incoming, self.inbox._options())[0], "skipped")
        self.assertEqual(len(self._thread_messages(self.deal)), before + 1)

    def _replies(self, *subjects):
        message = self._post_and_send(self.customer)
        for subject in subjects:
            self.fake.deliver(SENDER, _reply(SENDER, message.message_id, subject, f"Answer {subject}"))

    def _around_processing(self, before):
        """Odoo's gateway, with ``before(thread, subject)`` called first for each message."""
        Thread = type(self.env["mail.thread"])
        original = Thread.message_process

        def message_process(thread, model, message, *args, **kwargs):
            before(thread, email.message_from_bytes(message)["Subject"])
            return original(thread, model, message, *args, **kwargs)

        return patch.object(Thread, "message_process", message_process)

    def test_a_batch_is_one_transaction_committed_at_once_when_a_message_sent_mail(self):
        """Messages share one transaction per batch (Odoo's caches stay warm), but a message whose processing
        sent mail (an auto-reply, a bounce to its author) is committed at once: a crash cannot send it again."""
        self._replies("Re: A", "Re: B", "Re: C")
        processed, commits = [], []

        def before(thread, subject):
            processed.append(subject)
            if subject == "Re: B":  # as Odoo's _routing_create_bounce_email does: a mail sent while processing
                Server = thread.env["ir.mail_server"]
                Server.send_email(compat.build_email(Server, SENDER, ["zoe@fabrikam.example"], "Auto-reply", "Hi"))

        Inbox = type(self.inbox)
        with self._around_processing(before), patch.object(
            Inbox, "_commit", lambda inbox: commits.append(processed[:])
        ):
            self.assertEqual(self.inbox._fetch(), (3, 0))
        self.assertEqual(sorted(processed), ["Re: A", "Re: B", "Re: C"])
        during = [done for done in commits if 0 < len(done) < 3]
        self.assertEqual(len(during), 1, f"one commit inside the batch, right after the mail was sent: {commits}")
        self.assertEqual(during[0][-1], "Re: B")
        self.assertEqual(len(self._folder("Odoo Processed")), 3)

    def test_a_concurrent_update_takes_the_batch_back_instead_of_failing_its_messages(self):
        """PostgreSQL refuses the batch's snapshot (another worker changed the same record): nothing is marked
        failed nor filed in errors; the next fetch reads the messages again and processes each once."""
        self._replies("Re: one", "Re: two")
        refused = []

        def before(thread, subject):
            if subject == "Re: two" and not refused:
                refused.append(subject)
                raise SerializationFailure("could not serialize access due to concurrent update")

        link = self.inbox.delta_link
        with self._around_processing(before), mute_logger("odoo.addons.mail_graph_api.models.mail_graph_inbox"):
            self.assertEqual(self.inbox._fetch(), (0, 0), "nothing counted: the batch was taken back")
        self.assertIn("concurrent update", self.inbox.last_error)
        self.assertEqual(self.inbox.delta_link, link, "the delta link did not move past the batch")
        self.assertFalse(self._outcomes().filtered(lambda m: m.state == "failed"))
        self.assertEqual(self._folder("Odoo Errors"), [])
        self.assertEqual(len(self._folder("Inbox")), 2, "both still in the Inbox")
        count = len(self._thread_messages(self.deal))
        # In tests the transaction cannot be rolled back: the first message stays processed (and is skipped);
        # in production it is rolled back with the batch and processed again here.
        processed, failed = self.inbox._fetch()
        self.assertEqual(failed, 0)
        self.assertFalse(self.inbox.last_error)
        self.assertEqual(len(self._thread_messages(self.deal)), count + processed)
        self.assertEqual(sorted(self._outcomes().mapped("subject")), ["Re: one", "Re: two"])
        self.assertEqual(len(self._folder("Odoo Processed")), 2)

    def test_option_off_switches_reading_off_and_back_from_now(self):
        self.assertTrue(self.server.graph_fetch_inbox, "on by default")
        self.server.graph_fetch_inbox = False
        self.assertFalse(self.inbox.active)
        self.inbox.delta_link = "https://stale.example/link"
        self.server.graph_fetch_inbox = True
        self.assertTrue(self.inbox.active)
        self.assertFalse(self.inbox.delta_link, "switched back on: a fresh sync from now")

    def test_test_reading_says_what_to_grant(self):
        app = self.env["ir.mail_server"].create(
            self.graph_server_values(name="app reader", graph_auth_mode="application_secret")
        )
        self.fake.configure(app_roles=["Mail.Send"])
        with self.assertRaises(UserError) as caught, mute_logger("graph_mail.client"):
            app.graph_inbox_ids.action_test()
        self.assertIn("Mail.ReadWrite", str(caught.exception))
        self.fake.configure(app_roles=["Mail.Send", "Mail.ReadWrite"])
        self.fake.expire_tokens()  # the next token carries the new role
        self.assertEqual(app.graph_inbox_ids.action_test()["params"]["sticky"], False)

    def _reader(self):
        from graph_mail import GraphMailClient, MailboxReader

        from ..tokens import ServerTokenSource

        client = GraphMailClient(
            self.server._graph_credentials(), token_provider=ServerTokenSource.for_server(self.server)
        )
        return MailboxReader(client, SENDER)


@tagged("post_install", "-at_install", "mail_graph_api")
class TestGraphIncomingMailServer(GraphTransactionCase):
    """Settings > Technical > Incoming Mail Servers, type "Microsoft Graph" (14.0/15.0: with fetchmail)."""

    def setUp(self):
        super().setUp()
        if "fetchmail.server" not in self.env:
            self.skipTest("Incoming Mail Servers need the fetchmail module on this series")
        self.connect_server()
        self.incoming = self.env["fetchmail.server"].create(
            {
                "name": "Sales mailbox over Graph",
                "server_type": "graph",
                "graph_mail_server_id": self.server.id,
                "graph_processed_folder": "Done by Odoo",
                "object_id": self.env["ir.model"]._get("res.partner").id,
            }
        )

    def test_confirm_then_fetch_creates_records_and_files_the_mail(self):
        inbox = self.incoming.graph_inbox_id
        self.assertEqual(inbox.origin, "fetchmail")
        self.assertEqual(inbox.processed_folder, "Done by Odoo")
        self.fake.deliver(SENDER, _reply(SENDER, None, "Old, before the confirmation", "history"))
        time.sleep(1.1)  # Odoo keeps datetimes to the second: the confirmation comes strictly after that mail
        self.incoming.button_confirm_login()
        self.assertEqual(self.incoming.state, "done")
        self.fake.deliver(SENDER, _reply(SENDER, None, "Lead from the website", "Call me back"))
        if compat.SERIES >= 19:
            self.incoming._fetch_mail()  # what the cron calls (19.0's fetch_mail() is the button on one server)
        else:
            self.env["fetchmail.server"]._fetch_mails()  # the cron
        created = self.env["res.partner"].search([("name", "=", "Lead from the website")])
        self.assertEqual(len(created), 1, "a new record per new mail, as with IMAP")
        self.assertFalse(self.env["res.partner"].search([("name", "=", "Old, before the confirmation")]))
        folders = {m["subject"]: m["folder"] for m in self.fake.mailbox_messages(SENDER)}
        self.assertEqual(folders["Lead from the website"], "Done by Odoo")
        self.assertEqual(folders["Old, before the confirmation"], "Inbox")
        self.assertTrue(self.incoming.date)
        # "Fetch Now" again: nothing new, nothing twice.
        self.incoming.fetch_mail()
        self.assertEqual(len(self.env["res.partner"].search([("name", "=", "Lead from the website")])), 1)

    def test_test_and_confirm_needs_a_connection_that_can_read(self):
        self.fake.configure(delegated_scopes=["Mail.Send", "User.Read", "offline_access", "openid", "profile"])
        self.fake.revoke_refresh_tokens()
        self.fake.expire_tokens()
        with self.assertRaises(UserError), mute_logger("graph_mail.client", "odoo.addons.mail_graph_api.tokens"):
            self.incoming.button_confirm_login()
        self.assertEqual(self.incoming.state, "draft")

    def _own(self, **values):
        """An incoming server that signs in by itself (no outgoing server involved)."""
        defaults = dict(
            OWN_SIGN_IN,
            name="Support over Graph",
            server_type="graph",
            object_id=self.env["ir.model"]._get("res.partner").id,
        )
        defaults.update(values)
        incoming = self.env["fetchmail.server"].create(defaults)
        connection = incoming.graph_mail_server_id
        # Against the fake, as every test server (the Azure defaults are Microsoft's real hosts).
        connection.write(
            {
                k: v
                for k, v in self.graph_server_values().items()
                if k.startswith(("graph_cloud", "graph_authority", "graph_api"))
            }
        )
        return incoming, connection

    def test_an_incoming_server_with_its_own_application_sign_in_reads_the_mailbox(self):
        incoming, connection = self._own()
        self.assertTrue(connection.graph_receive_only)
        self.assertEqual(connection.graph_sender_email, "sales@contoso.onmicrosoft.com")
        self.assertEqual(
            connection.sudo().graph_client_secret, DEFAULTS["client_secret"], "kept once, on the connection"
        )
        self.assertFalse(connection.active, "archived: Odoo never picks it to send")
        self.assertNotIn(connection, self.env["ir.mail_server"].search([]))
        self.assertFalse(connection.graph_fetch_inbox, "the incoming server is the one reader of the mailbox")
        self.assertEqual(incoming.graph_inbox_id.mail_server_id, connection)
        incoming.button_confirm_login()
        self.assertEqual(incoming.state, "done")
        self.fake.deliver(
            "sales@contoso.onmicrosoft.com",
            _reply("sales@contoso.onmicrosoft.com", None, "Question from a prospect", "Hello"),
        )
        incoming._fetch_mail() if compat.SERIES >= 19 else incoming.fetch_mail()
        self.assertEqual(len(self.env["res.partner"].search([("name", "=", "Question from a prospect")])), 1)
        logs = self.env["mail.graph.api.log"].sudo().search([("mail_server_id", "=", connection.id)])
        self.assertIn("delta", logs.mapped("operation"), "its own calls, in its own logs")
        self.assertFalse(self.server.graph_log_ids.filtered(lambda row: row.operation == "receive"))
        # Edited on the incoming server, changed on its connection (one place for credentials).
        incoming.graph_own_client_secret = "a-new-secret"
        self.assertEqual(connection.sudo().graph_client_secret, "a-new-secret")

    def test_an_incoming_server_with_its_own_delegated_sign_in_uses_the_authenticate_flow(self):
        self.fake.configure(redirect_uris=[self.server._graph_redirect_uri()])
        incoming, connection = self._own(graph_own_auth_mode="delegated", graph_own_mailbox=SENDER)
        action = incoming.action_graph_authenticate()
        self.assertIn("login_hint=", action["url"])
        self.connect_server(connection)
        self.assertEqual(incoming.graph_connection_state, "connected")
        self.assertEqual(connection._graph_form_record(), incoming, "after sign-in the browser returns to it")
        incoming.button_confirm_login()
        self.assertEqual(incoming.state, "done")

    def test_switching_an_incoming_server_to_its_own_sign_in(self):
        self.incoming.write(OWN_SIGN_IN)
        connection = self.incoming.graph_mail_server_id
        self.assertTrue(connection.graph_receive_only)
        self.assertEqual(self.server.graph_sender_email, SENDER, "the outgoing server it used is untouched")
        self.assertEqual(self.incoming.graph_inbox_id.mail_server_id, connection)


@tagged("post_install", "-at_install", "mail_graph_api")
class TestGraphMailingBounces(GraphTransactionCase):
    """With mass_mailing: a mailing's statistics count the bounces read back over Graph (the tier installs
    mass_mailing for this class on every series: its "mailing" run)."""

    def setUp(self):
        super().setUp()
        if "mailing.mailing" not in self.env:
            self.skipTest("mass_mailing is not installed")
        self.connect_server()
        self.fake.configure(refused_recipients=["@" + REFUSED_DOMAIN])
        inbox = self.server.graph_inbox_ids
        inbox.sync_since = datetime.datetime.utcnow().replace(microsecond=0) - datetime.timedelta(seconds=5)
        self.inbox = inbox

    def test_mailing_to_three_shows_two_delivered_and_one_bounced(self):
        contacts = self.env["mailing.contact"].create(
            [
                {"name": "Ann", "email": "ann@fabrikam.example"},
                {"name": "Ben", "email": "ben@fabrikam.example"},
                {"name": "Ghost", "email": f"ghost@{REFUSED_DOMAIN}"},
            ]
        )
        mailing_list = self.env["mailing.list"].create({"name": "Customers", "contact_ids": [(6, 0, contacts.ids)]})
        mailing = self.env["mailing.mailing"].create(
            {
                "subject": "Our new catalogue",
                "body_html": "<p>Hello</p>",
                "email_from": SENDER,
                "mailing_model_id": self.env["ir.model"]._get("mailing.list").id,
                "contact_list_ids": [(6, 0, mailing_list.ids)],
                "mail_server_id": self.server.id,
            }
        )
        mailing.action_send_mail()
        queued = self.env["mail.mail"].sudo().search([("mailing_id", "=", mailing.id), ("state", "=", "outgoing")])
        if queued:
            self.env["mail.mail"].process_email_queue(queued.ids)
        self.assertEqual(len([m for m in self.fake.messages() if m["subject"] == "Our new catalogue"]), 3)
        compat.invalidate_all(self.env)
        self.assertEqual((mailing.sent, mailing.bounced), (3, 0), "before the fetch Odoo believes all went out")
        self.assertEqual(self.inbox._fetch(), (1, 0))
        compat.invalidate_all(self.env)
        self.assertEqual((mailing.delivered, mailing.bounced), (2, 1))
        ghost_partner = self.env["res.partner"].search([("email", "=", f"ghost@{REFUSED_DOMAIN}")])
        if ghost_partner:  # a mailing to a list has contacts, not partners; a partner with that address counts too
            self.assertEqual(ghost_partner.message_bounce, 1)
