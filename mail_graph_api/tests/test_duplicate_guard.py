# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl-3.0).
from odoo.exceptions import AccessError
from odoo.tests import new_test_user, tagged
from odoo.tools import mute_logger

from .common import SENDER, GraphTransactionCase


@tagged("post_install", "-at_install", "mail_graph_api")
class TestDuplicateGuard(GraphTransactionCase):
    """Odoo resends a mail whose earlier attempt was uncertain (after Retry) or whose sending commit was lost:
    the guard keeps Microsoft from getting it twice."""

    def setUp(self):
        super().setUp()
        self.connect_server()
        self.mark()

    def _mail(self):
        return (
            self.env["mail.mail"]
            .sudo()
            .create(
                {
                    "subject": "Guarded",
                    "body_html": "<p>Once</p>",
                    "email_from": SENDER,
                    "email_to": "alice@fabrikam.example",
                    "mail_server_id": self.server.id,
                    "auto_delete": False,
                }
            )
        )

    def _received(self, mail):
        return [m for m in self.sent() if m["internet_message_id"] == mail.message_id]

    def _guard_rows(self, mail):
        return self.env["mail.graph.api.log"].search(
            [("message_id", "=", mail.message_id), ("operation", "=", "duplicate_guard")]
        )

    def test_accepted_mail_whose_commit_was_lost_is_not_sent_again(self):
        mail = self._mail()
        mail.send()
        self.assertEqual(mail.state, "sent")
        mail.write({"state": "outgoing"})  # what a crash before Odoo's commit leaves behind
        mail.send()
        self.assertEqual(mail.state, "sent")
        self.assertEqual(len(self._received(mail)), 1, "Microsoft got it once")
        self.assertEqual(len(self.graph_calls("sendMail")), 1, "the second run did not call Microsoft")
        self.assertEqual(self._guard_rows(mail).mapped("outcome"), ["skipped"])

    def test_worker_killed_while_sending_checks_sent_items(self):
        mail = self._mail()
        mail.send()
        self.assertFalse(
            self.env["mail.graph.api.log"].search([("message_id", "=", mail.message_id), ("outcome", "=", "pending")]),
            "the pending marker is replaced by the call rows",
        )
        # What a worker killed after Microsoft accepted the mail leaves: only the marker, the mail outgoing.
        rows = self.env["mail.graph.api.log"].search([("message_id", "=", mail.message_id)])
        key = rows[0].recipients_key
        self.assertTrue(key)
        rows.unlink()
        self.env["mail.graph.api.log"].create(
            {
                "mail_server_id": self.server.id,
                "message_id": mail.message_id,
                "recipients_key": key,
                "operation": "send",
                "outcome": "pending",
            }
        )
        mail.write({"state": "outgoing"})
        mail.send()
        self.assertEqual(mail.state, "sent")
        self.assertEqual(len(self._received(mail)), 1, "found in Sent Items, not sent again")
        self.assertEqual(len(self.graph_calls("sentItems")), 1)

    @mute_logger("odoo.addons.mail.models.mail_mail", "odoo.addons.mail_graph_api.session")
    def test_copies_sharing_a_message_id_are_told_apart(self):
        """Odoo sends one copy per recipient partner with the same Message-ID: each copy is guarded alone."""
        partner = self.env["res.partner"].create({"name": "Zoë", "email": "zoe@fabrikam.example"})
        mail = self._mail()
        mail.recipient_ids = partner
        self.fake.inject("sendMail", status=504, count=1, skip=1, code="GatewayTimeout")  # the 2nd copy: uncertain
        mail.send()
        self.assertEqual(mail.state, "exception")
        (first,) = self._received(mail)
        mail.mark_outgoing()  # Retry: Odoo sends both copies again
        mail.send()
        self.assertEqual(mail.state, "sent", mail.failure_reason)
        copies = self._received(mail)
        self.assertEqual(len(copies), 2, "the first copy was not sent again, the uncertain one went once")
        self.assertEqual({c["to"][0] for c in copies}, {"alice@fabrikam.example", "zoe@fabrikam.example"})
        self.assertIn(first, copies)

    @mute_logger("odoo.addons.mail.models.mail_mail", "odoo.addons.mail_graph_api.session")
    def test_retry_after_uncertain_outcome_finds_it_in_sent_items(self):
        self.fake.inject("sendMail", action="close_after_processing", count=1)
        mail = self._mail()
        mail.send()
        self.assertEqual(mail.state, "exception")
        mail.mark_outgoing()  # the administrator clicks Retry
        mail.send()
        self.assertEqual(mail.state, "sent")
        self.assertEqual(len(self._received(mail)), 1, "not sent twice")
        self.assertEqual(len(self.graph_calls("sentItems")), 1, "Sent Items were checked")
        self.assertEqual(len(self.graph_calls("sendMail")), 1)

    @mute_logger("odoo.addons.mail.models.mail_mail", "odoo.addons.mail_graph_api.session")
    def test_retry_after_uncertain_outcome_sends_when_not_in_sent_items(self):
        self.fake.inject("sendMail", status=504, count=1, code="GatewayTimeout")
        mail = self._mail()
        mail.send()
        self.assertEqual(mail.state, "exception")
        self.assertIn("may have accepted", mail.failure_reason)
        self.assertEqual(self._received(mail), [])
        mail.mark_outgoing()
        mail.send()
        self.assertEqual(mail.state, "sent", mail.failure_reason)
        self.assertEqual(len(self._received(mail)), 1, "sent once, after the check")
        self.assertEqual(len(self.graph_calls("sentItems")), 1)

    @mute_logger("odoo.addons.mail.models.mail_mail", "odoo.addons.mail_graph_api.session")
    def test_without_permission_to_read_sent_items_an_administrator_decides(self):
        self.server.graph_smtp_fallback = True  # even with a fallback: an uncertain mail never goes by SMTP
        self.fake.inject("sendMail", status=504, count=1, code="GatewayTimeout")
        self.fake.inject("sentItems", status=403, count=5, code="ErrorAccessDenied")
        mail = self._mail()
        mail.send()
        mail.mark_outgoing()
        mail.send()
        self.assertEqual(mail.state, "exception", "waits for an administrator instead of being resent")
        self.assertIn("cannot be read", mail.failure_reason)
        self.assertIn("Send Again", mail.failure_reason)
        self.assertEqual(self._received(mail), [])
        self.assertEqual(len(self.graph_calls("sendMail")), 1)

        clerk = new_test_user(self.env, "clerk_guard", groups="base.group_user")
        with self.assertRaises(AccessError):
            mail.with_user(clerk).action_graph_send_again()

        mail.action_graph_send_again()  # the administrator checked Sent Items
        mail.send()
        self.assertEqual(mail.state, "sent", mail.failure_reason)
        self.assertEqual(len(self._received(mail)), 1)
        self.assertEqual(self._guard_rows(mail).mapped("outcome"), ["decision"])
