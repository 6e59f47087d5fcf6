# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl-3.0).
from odoo.tests import tagged
from odoo.tools import mute_logger

from .. import compat
from .common import SENDER, GraphTransactionCase


@tagged("post_install", "-at_install", "mail_graph_api")
class TestGraphFailures(GraphTransactionCase):
    def setUp(self):
        super().setUp()
        self.connect_server()
        self.mark()  # count only what sending costs

    def _mail(self, **values):
        base = {
            "subject": "Failure case",
            "body_html": "<p>Hi</p>",
            "email_from": SENDER,
            "email_to": "alice@fabrikam.example",
            "mail_server_id": self.server.id,
        }
        base.update(values)
        return self.env["mail.mail"].sudo().create(base)

    def _logs(self):
        return self.env["mail.graph.api.log"].search([("mail_server_id", "=", self.server.id)])

    def test_refresh_on_expiry_then_replay(self):
        self.fake.expire_tokens()
        mail = self._mail()
        mail.send()
        self.assertEqual(mail.state, "sent", mail.failure_reason)
        self.assertEqual(len(self.sent()), 1)
        token_calls = self.graph_calls("token")
        self.assertEqual(len(token_calls), 1, "one refresh, then the replay succeeds")
        self.assertEqual(token_calls[0]["grant_type"], "refresh_token")
        statuses = [call["status"] for call in self.graph_calls("sendMail")]
        self.assertEqual(statuses, [401, 202])

    def test_rotated_refresh_token_is_stored(self):
        before = self.server.sudo().graph_refresh_token
        self.fake.expire_tokens()
        self._mail().send()
        compat.invalidate(self.server)
        after = self.server.sudo().graph_refresh_token
        self.assertTrue(after)
        self.assertNotEqual(before, after)

    @mute_logger("odoo.addons.mail.models.mail_mail", "odoo.addons.mail_graph_api.session")
    def test_invalid_grant_marks_reauthentication(self):
        self.fake.revoke_refresh_tokens()
        self.fake.expire_tokens()
        mail = self._mail()
        mail.send()
        self.assertEqual(mail.state, "exception")
        self.assertFailureType(mail, "mail_smtp")
        self.assertIn("Authenticate with Microsoft", mail.failure_reason)
        self.assertEqual(mail.failure_reason.count("Authenticate with Microsoft"), 1, "the hint is given once")
        token_rows = self._logs().filtered(lambda log: log.operation == "token")
        self.assertEqual(token_rows.mapped("code"), ["AADSTS50173"], "the sign-in failure has its log row")
        self.assertIn("invalid_grant", token_rows.message)
        compat.invalidate(self.server)
        self.assertEqual(self.server.graph_connection_state, "reauth")
        self.assertEqual(self.sent(), [])
        # Later mails fail at once with the same reason, without calling Microsoft again.
        calls = len(self.graph_calls())
        other = self._mail(subject="second")
        other.send()
        self.assertEqual(other.state, "exception")
        self.assertEqual(len(self.graph_calls()), calls)

    @mute_logger("odoo.addons.mail.models.mail_mail", "odoo.addons.mail_graph_api.session")
    def test_throttling_leaves_mail_retryable(self):
        self.server.graph_send_deadline = 2
        self.fake.inject("sendMail", status=429, count=10, retry_after="30", code="ApplicationThrottled")
        mail = self._mail()
        mail.send()
        self.assertEqual(mail.state, "outgoing", "throttled mail stays in the queue")
        self.assertIn("ApplicationThrottled", mail.failure_reason or "")
        self.assertEqual(self.sent(), [])
        self.fake.clear_faults()
        self.env["mail.mail"].process_email_queue(mail.ids)
        self.assertEqual(mail.state, "sent")
        self.assertEqual(len(self.sent()), 1)

    @mute_logger("odoo.addons.mail.models.mail_mail", "odoo.addons.mail_graph_api.session")
    def test_ambiguous_outcome_is_not_resent(self):
        self.fake.inject("sendMail", action="close_after_processing", count=1)
        mail = self._mail()
        mail.send()
        self.assertEqual(mail.state, "exception")
        self.assertIn("may have accepted", mail.failure_reason)
        self.assertEqual(len(self.graph_calls("sendMail")), 1, "never replayed")
        self.assertEqual(len(self.sent()), 1, "Microsoft got it once")

    @mute_logger("odoo.addons.mail.models.mail_mail", "odoo.addons.mail_graph_api.session")
    def test_server_error_is_ambiguous(self):
        self.fake.inject("sendMail", status=502, count=1)
        mail = self._mail()
        mail.send()
        self.assertEqual(mail.state, "exception")
        self.assertEqual(len(self.graph_calls("sendMail")), 1)

    @mute_logger("odoo.addons.mail.models.mail_mail", "odoo.addons.mail_graph_api.session")
    def test_permission_error_gives_admin_hint_and_request_id(self):
        self.fake.inject("sendMail", status=403, code="ErrorSendAsDenied", count=1)
        mail = self._mail()
        mail.send()
        self.assertEqual(mail.state, "exception")
        self.assertFailureType(mail, "mail_smtp")
        self.assertIn("ErrorSendAsDenied", mail.failure_reason)
        request_id = self.graph_calls("sendMail")[-1]["request_id"]
        self.assertIn(request_id, mail.failure_reason)

    @mute_logger("odoo.addons.mail.models.mail_mail", "odoo.addons.mail_graph_api.session")
    def test_fallback_to_smtp_when_nothing_was_sent(self):
        sink = self.smtp_fallback_sink()
        self.fake.inject("sendMail", status=403, code="ErrorAccessDenied", count=1)
        mail = self._mail(email_cc="cc@fabrikam.example")
        mail.send()
        self.assertEqual(mail.state, "sent", mail.failure_reason)
        self.assertEqual(self.sent(), [])
        self.assertEqual(len(sink.messages), 1)
        self.assertEqual(sorted(sink.messages[0]["to"]), ["alice@fabrikam.example", "cc@fabrikam.example"])
        self.assertIn("fallback", self._logs().mapped("outcome"))

    @mute_logger("odoo.addons.mail.models.mail_mail", "odoo.addons.mail_graph_api.session")
    def test_no_fallback_after_ambiguous_outcome(self):
        sink = self.smtp_fallback_sink()
        self.fake.inject("sendMail", status=504, count=1, code="GatewayTimeout")
        mail = self._mail()
        mail.send()
        self.assertEqual(mail.state, "exception")
        self.assertEqual(sink.messages, [])

    def test_log_rows_written_without_secrets(self):
        mail = self._mail()
        mail.send()
        (row,) = self._logs().filtered(lambda log: log.operation == "sendMail")
        self.assertEqual(row.http_status, 202)
        self.assertEqual(row.outcome, "ok")
        self.assertEqual(row.message_id, mail.message_id)
        self.assertTrue(row.request_id and row.client_request_id)
        self.assertEqual(row.mail_id, mail)
        server = self.server.sudo()
        for log in self._logs():
            text = " ".join(str(log[name] or "") for name in ("path", "message", "code"))
            for secret in (server.graph_access_token, server.graph_refresh_token, server.graph_client_secret):
                self.assertNotIn(secret, text)

    def test_log_retention(self):
        self._mail().send()
        logs = self._logs()
        self.assertTrue(logs)
        self.env.cr.execute("UPDATE mail_graph_api_log SET create_date = now() - interval '40 days' WHERE id IN %s",
                            [tuple(logs.ids)])  # fmt: skip
        self.env["ir.config_parameter"].sudo().set_param("mail_graph_api.log_retention_days", 30)
        self.env["mail.graph.api.log"]._gc_old_logs()
        self.assertFalse(self._logs().exists())
