# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl-3.0).
"""Running unattended: grants kept alive while idle, expiry dates of secrets and certificates."""

import datetime

from cryptography.hazmat.primitives import serialization

from odoo import fields
from odoo.tests import Form, tagged
from odoo.tools import mute_logger

from fake_microsoft.testing import self_signed_certificate
from graph_mail.auth import clear_caches

from .. import compat, tokens
from .common import SENDER, GraphTransactionCase

SALES = "sales@contoso.onmicrosoft.com"
NOREPLY = "noreply@contoso.onmicrosoft.com"


@tagged("post_install", "-at_install", "mail_graph_api")
class TestGraphUnattended(GraphTransactionCase):
    def _idle(self, server, days):
        """As if the server had last renewed its token ``days`` ago: its stored token long expired, and no
        worker still holding one in memory."""
        server.sudo().graph_access_token_expiry = fields.Datetime.now() - datetime.timedelta(days=days)
        compat.flush_all(self.env)
        tokens._memory.clear()
        clear_caches()

    def _keep_alive_rows(self, server):
        return (
            self.env["mail.graph.api.log"]
            .sudo()
            .search([("mail_server_id", "=", server.id), ("operation", "=", "keep_alive")])
        )

    def test_keep_alive_renews_only_grants_idle_for_30_days(self):
        self.connect_server()
        busy = self.env["ir.mail_server"].create(self.graph_server_values(name="busy"))
        self.connect_server(busy)
        self._idle(self.server, 31)
        self._idle(busy, 29)
        self.mark()
        renewed = self.env["ir.mail_server"]._graph_keep_alive()
        self.assertEqual(renewed, self.server)
        refreshes = [call for call in self.graph_calls("token") if call["grant_type"] == "refresh_token"]
        self.assertEqual(len(refreshes), 1, "one refresh, for the idle server only")
        compat.invalidate(self.server | busy)
        self.assertGreater(self.server.sudo().graph_access_token_expiry, fields.Datetime.now())
        self.assertEqual(self.server.graph_connection_state, "connected")
        (row,) = self._keep_alive_rows(self.server)
        self.assertEqual(row.outcome, "ok")
        self.assertIn("Renewed the delegated grant", row.message)
        self.assertFalse(self._keep_alive_rows(busy))

    @mute_logger("odoo.addons.mail_graph_api.models.ir_mail_server")
    def test_keep_alive_reports_a_revoked_grant(self):
        self.connect_server()
        self._idle(self.server, 40)
        self.fake.revoke_refresh_tokens()
        self.assertFalse(self.env["ir.mail_server"]._graph_keep_alive())
        compat.invalidate(self.server)
        self.assertEqual(self.server.graph_connection_state, "reauth")
        (row,) = self._keep_alive_rows(self.server)
        self.assertEqual(row.outcome, "error")
        self.assertIn("could not renew", row.message)

    def test_keep_alive_leaves_application_mode_and_signed_out_servers_alone(self):
        app = self.env["ir.mail_server"].create(
            self.graph_server_values(name="app", graph_auth_mode="application_secret")
        )
        self._idle(app, 60)
        self._idle(self.server, 60)  # never signed in: nothing to renew
        self.mark()
        self.assertFalse(self.env["ir.mail_server"]._graph_keep_alive())
        self.assertFalse(self.graph_calls("token"))

    def test_keep_alive_cron_runs_daily_forever(self):
        cron = self.env.ref("mail_graph_api.ir_cron_mail_graph_api_keep_alive")
        self.assertTrue(cron.active)
        self.assertEqual((cron.interval_number, cron.interval_type), (1, "days"))
        self.assertIn("_graph_keep_alive", cron.code)
        if "numbercall" in cron._fields:  # up to 17.0 a cron stops after numbercall runs
            self.assertEqual(cron.numbercall, -1)
            cleanup = self.env.ref("mail_graph_api.ir_cron_mail_graph_api_log_cleanup")
            self.assertEqual(cleanup.numbercall, -1)

    def test_certificate_expiry_read_from_the_pem(self):
        key, cert = self_signed_certificate("odoo-graph")
        pem = (
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ).decode()
            + cert.public_bytes(serialization.Encoding.PEM).decode()
        )
        server = self.env["ir.mail_server"].create(
            self.graph_server_values(name="cert", graph_auth_mode="application_certificate", graph_certificate=pem)
        )
        expected = getattr(cert, "not_valid_after_utc", None)
        expected = expected.replace(tzinfo=None) if expected else cert.not_valid_after
        self.assertEqual(server.graph_certificate_expiry, expected.replace(microsecond=0))
        server.graph_certificate = False
        self.assertFalse(server.graph_certificate_expiry)

    def test_secret_expiry_is_entered_on_the_form(self):
        help_text = self.env["ir.mail_server"]._fields["graph_secret_expiry"].help
        self.assertIn("Certificates & secrets", help_text, "the form says where Azure shows the date")
        with Form(self.server) as form:
            form.graph_secret_expiry = datetime.date(2027, 3, 31)
        self.assertEqual(self.server.graph_secret_expiry, datetime.date(2027, 3, 31))

    def test_secret_expiry_is_read_from_microsoft_where_the_app_may_read_its_registration(self):
        ends = datetime.datetime(2027, 5, 17, 9, 30)
        self.fake.configure(client_secret_expires=ends.strftime("%Y-%m-%dT%H:%M:%SZ"))
        self.server.write({"graph_auth_mode": "application_secret", "graph_secret_expiry": datetime.date(2027, 1, 1)})
        with mute_logger("odoo.addons.mail_graph_api.models.ir_mail_server"):
            self.assertFalse(self.env["ir.mail_server"]._graph_read_expiry_dates(), "no Application.Read.All yet")
        self.assertEqual(self.server.graph_secret_expiry, datetime.date(2027, 1, 1), "the administrator's date stays")
        self.assertFalse(self.server.graph_secret_expiry_read)
        self.fake.configure(app_roles=[*self.fake.config()["app_roles"], "Application.Read.All"])
        self._idle(self.server, 0)  # the permission comes with the next access token
        self.assertIn("expires on 2027-05-17 (read from Microsoft)", self.server._graph_test_connection())
        self.assertEqual(self.server.graph_secret_expiry, ends.date())
        self.assertTrue(self.server.graph_secret_expiry_read)
        self.server.graph_secret_expiry = False
        self.assertEqual(self.env["ir.mail_server"]._graph_read_expiry_dates(), self.server, "and daily, by the cron")
        self.assertEqual(self.server.graph_secret_expiry, ends.date())
        cron = self.env.ref("mail_graph_api.ir_cron_mail_graph_api_keep_alive")
        self.assertIn("_graph_read_expiry_dates", cron.code)

    def test_more_than_500_recipients_is_refused_before_anything_is_sent(self):
        self.connect_server()
        self.mark()
        recipients = ",".join(f"r{n}@fabrikam.example" for n in range(501))
        mail = (
            self.env["mail.mail"]
            .sudo()
            .create({"subject": "To everyone", "body_html": "<p>Hi</p>", "email_from": self.server.graph_sender_email,
                     "email_to": recipients, "mail_server_id": self.server.id})
        )  # fmt: skip
        with mute_logger("odoo.addons.mail.models.mail_mail", "odoo.addons.mail_graph_api.session"):
            self.env["mail.mail"].process_email_queue(mail.ids)
        self.assertEqual(mail.state, "exception")
        self.assertIn("at most 500", mail.failure_reason)
        self.assertEqual(self.sent(), [], "nothing reached Microsoft")
        self.assertEqual(self.graph_calls("sendMail"), [])

    def _pool(self, **overrides):
        """This test's server and two more mailboxes, all in application mode (the app may send as each)."""
        values = dict(graph_auth_mode="application_secret", graph_rate_limit=1, graph_daily_recipient_limit=0)
        values.update(overrides)
        self.server.write(dict(values, sequence=10))
        Server = self.env["ir.mail_server"]
        late = Server.create(
            self.graph_server_values(name="pool late", graph_sender_email=NOREPLY, sequence=30, **values)
        )
        early = Server.create(
            self.graph_server_values(name="pool early", graph_sender_email=SALES, sequence=20, **values)
        )
        return early, late

    def _pool_rows(self):
        Log = self.env["mail.graph.api.log"].sudo()
        return Log.search([("operation", "=", "mailbox_pool")], order="id")

    def test_a_spent_mailbox_hands_its_mail_to_the_next_of_its_pool_by_priority(self):
        early, late = self._pool(graph_pool="Sales team")
        outsider = self.env["ir.mail_server"].create(
            self.graph_server_values(name="other pool", graph_sender_email="it@contoso.onmicrosoft.com",
                                     graph_auth_mode="application_secret", graph_pool="IT", sequence=1)
        )  # fmt: skip
        self.mark()
        mails = self._queue(4)
        with mute_logger("odoo.addons.mail.models.mail_mail", "odoo.addons.mail_graph_api.session"):
            self.env["mail.mail"].process_email_queue(mails.ids)
        self.assertEqual(mails.mapped("state"), ["sent", "sent", "sent", "outgoing"])
        senders = [message["mailbox"] for message in self.sent()]
        self.assertEqual(senders, [SENDER, SALES, NOREPLY], "one mail per mailbox, in the pool's order")
        self.assertIn("Waiting for the sending quota", mails[3].failure_reason, "the whole pool is spent")
        rows = self._pool_rows()
        self.assertEqual(rows.mapped("mail_server_id"), self.server | self.server)
        self.assertEqual(rows.mapped("outcome"), ["pool", "pool"])
        self.assertIn(f"Sent through {SALES}", rows[0].message)
        self.assertIn(f"Sent through {NOREPLY}", rows[1].message)
        sent_by = (
            self.env["mail.graph.api.log"]
            .sudo()
            .search(
                [("operation", "in", list(self.env["mail.graph.api.log"].SENDING_OPERATIONS)), ("outcome", "=", "ok")]
            )
        )
        self.assertEqual(
            sorted(sent_by.mapped("mail_server_id.name")), sorted([self.server.name, early.name, late.name])
        )
        self.assertFalse(outsider.graph_log_ids, "another pool is never used")
        compat.invalidate(self.server | early | late)
        self.assertIn("3 mailboxes: 3 of", self.server.graph_pool_usage)
        self.assertEqual(early.graph_usage_minute, 1)
        self.assertFalse(outsider.graph_pool_usage, "alone in its pool")
        # The next minute the first mailbox has room again: the waiting mail goes once, through it.
        for server in self.server | early | late:
            self._age_sends(datetime.timedelta(minutes=2), server)
        self.env["mail.mail"].process_email_queue(mails[3].ids)
        self.assertEqual(mails[3].state, "sent")
        self.assertEqual([message["mailbox"] for message in self.sent()], [SENDER, SALES, NOREPLY, SENDER])

    def test_servers_with_one_from_filter_form_a_pool_without_a_name(self):
        if not compat.has_from_filter():
            self.skipTest("14.0 has no FROM filter: pools are named there")
        early, late = self._pool(from_filter="contoso.onmicrosoft.com", graph_pool=False)
        late.from_filter = "fabrikam.example"  # serves other senders: not in the pool
        self.mark()
        mails = self._queue(3)
        with mute_logger("odoo.addons.mail.models.mail_mail", "odoo.addons.mail_graph_api.session"):
            self.env["mail.mail"].process_email_queue(mails.ids)
        self.assertEqual(mails.mapped("state"), ["sent", "sent", "outgoing"])
        self.assertEqual([message["mailbox"] for message in self.sent()], [SENDER, SALES])
        self.assertEqual(self.server._graph_pool_members(), early)

    def test_a_pool_member_that_cannot_send_is_passed_over(self):
        early, _late = self._pool(graph_pool="Sales team")
        early.graph_client_secret = "not the secret"  # signs in with nothing sent: the next member takes the mail
        self.mark()
        mails = self._queue(2)
        with mute_logger("odoo.addons.mail.models.mail_mail", "odoo.addons.mail_graph_api.session",
                         "odoo.addons.mail_graph_api.models.ir_mail_server", "graph_mail"):  # fmt: skip
            self.env["mail.mail"].process_email_queue(mails.ids)
        self.assertEqual(mails.mapped("state"), ["sent", "sent"])
        self.assertEqual([message["mailbox"] for message in self.sent()], [SENDER, NOREPLY])
        self.assertIn(f"Sent through {NOREPLY}", self._pool_rows().message)

    def _queue(self, count, recipients=1, subject="Quota"):
        mails = self.env["mail.mail"].sudo()
        for n in range(count):
            to = ",".join(f"q{n}-{r}@fabrikam.example" for r in range(recipients))
            mails |= mails.create({"subject": f"{subject} {n}", "body_html": "<p>Hi</p>", "email_to": to,
                                   "email_from": self.server.graph_sender_email, "mail_server_id": self.server.id})  # fmt: skip
        return mails

    def _age_sends(self, delta, server=None):
        """As if the mailbox's sends so far had happened ``delta`` earlier (and the waiting mails' slots came)."""
        compat.flush_all(self.env)
        self.env.cr.execute(
            "UPDATE mail_graph_api_log SET create_date = create_date - %s WHERE mail_server_id = %s",
            (delta, (server or self.server).id),
        )
        self.env.cr.execute(
            "UPDATE mail_mail SET scheduled_date = NULL WHERE state = 'outgoing' AND failure_reason LIKE %s",
            ("%Waiting for the sending quota%",),
        )
        compat.invalidate_all(self.env)

    def test_a_mail_beyond_the_rate_limit_waits_queued_then_goes(self):
        self.connect_server()
        self.server.graph_rate_limit = 2
        self.fake.configure(message_rate_limit=2)  # Exchange's side: a surplus would leave late
        self.mark()
        mails = self._queue(3)
        with mute_logger("odoo.addons.mail.models.mail_mail", "odoo.addons.mail_graph_api.session"):
            self.env["mail.mail"].process_email_queue(mails.ids)
        self.assertEqual(mails.mapped("state"), ["sent", "sent", "outgoing"])
        waiting = mails[2]
        self.assertIn("Waiting for the sending quota", waiting.failure_reason)
        self.assertIn("next slot at", waiting.failure_reason)
        self.assertEqual(len(self.sent()), 2, "nothing beyond the limit reached Microsoft")
        compat.invalidate(self.server)
        self.assertEqual(self.server.graph_usage_minute, 2)
        self._age_sends(datetime.timedelta(minutes=2))
        self.fake.advance_clock(120)  # the same two minutes at Microsoft
        self.env["mail.mail"].process_email_queue(waiting.ids)
        self.assertEqual(waiting.state, "sent")
        self.assertEqual(len(self.sent()), 3, "sent once, when its slot came")
        self.assertEqual([m["delayed"] for m in self.sent()], [False] * 3, "Exchange never had to hold one back")

    def test_mails_waiting_for_the_quota_are_scheduled_in_line_and_skipped_until_then(self):
        self.connect_server()
        self.server.graph_rate_limit = 2
        self.mark()
        mails = self._queue(7)
        with mute_logger("odoo.addons.mail.models.mail_mail", "odoo.addons.mail_graph_api.session"):
            self.env["mail.mail"].process_email_queue(mails.ids)
        self.assertEqual(mails.mapped("state"), ["sent"] * 2 + ["outgoing"] * 5)
        slots = [fields.Datetime.to_datetime(mail.scheduled_date) for mail in mails[2:]]
        first = slots[0]
        self.assertGreater(first, fields.Datetime.now() - datetime.timedelta(seconds=5))
        minute = datetime.timedelta(minutes=1)
        self.assertEqual(slots, [first, first, first + minute, first + minute, first + 2 * minute])
        self.assertIn(f"next slot at {slots[-1]:%Y-%m-%d %H:%M} UTC", mails[6].failure_reason)
        calls = len(self.graph_calls())
        self.env["mail.mail"].process_email_queue(mails.ids)  # before their slots: not even built
        self.assertEqual(len(self.graph_calls()), calls)
        self.assertEqual(mails.mapped("state").count("outgoing"), 5)

    def test_the_daily_recipient_limit_counts_each_recipient_and_is_shared_by_the_mailbox(self):
        self.connect_server()
        self.fake.configure(daily_recipient_limit=5)  # Exchange's side: past it, an NDR 5.1.90 for the whole mail
        self.server.write({"graph_rate_limit": 0, "graph_daily_recipient_limit": 5})
        twin = self.env["ir.mail_server"].create(
            self.graph_server_values(name="same mailbox", graph_rate_limit=0, graph_daily_recipient_limit=5)
        )
        self.connect_server(twin)
        first = self._queue(1, recipients=3, subject="three")
        self.env["mail.mail"].process_email_queue(first.ids)
        self.assertEqual(first.state, "sent")
        second = self._queue(1, recipients=3, subject="three more")
        second.mail_server_id = twin  # another server, same mailbox: same Exchange quota
        with mute_logger("odoo.addons.mail.models.mail_mail", "odoo.addons.mail_graph_api.session"):
            self.env["mail.mail"].process_email_queue(second.ids)
        self.assertEqual(second.state, "outgoing")
        self.assertIn("recipients a day", second.failure_reason)
        compat.invalidate(self.server)
        self.assertEqual(self.server.graph_usage_day, 3)
        self.assertAlmostEqual(self.server.graph_usage_percent, 60.0)
        self._age_sends(datetime.timedelta(hours=25))
        self.fake.advance_clock(25 * 3600)
        self.env["mail.mail"].process_email_queue(second.ids)
        self.assertEqual(second.state, "sent")
        self.assertEqual([m["ndr"] for m in self.sent()], [None, None], "no mail bounced for the daily limit")


@tagged("post_install", "-at_install", "mail_graph_api")
class TestGraphAlerts(GraphTransactionCase):
    """One alert per event for the administrators (activity, banner, e-mail through a working server), cleared
    when its cause is gone."""

    def setUp(self):
        super().setUp()
        self.Alert = self.env["mail.graph.alert"].sudo()
        self.admin = self.env.ref("base.user_admin")
        if not self.admin.email:
            self.admin.email = "admin@example.com"
        self.smtp = self.env["ir.mail_server"].create(
            {"name": "Working SMTP", "smtp_host": "127.0.0.1", "smtp_port": 2525, "sequence": 50}
        )

    def _alerts(self, **domain):
        return self.Alert.with_context(active_test=False).search(
            [("mail_server_id", "=", self.server.id)] + [(k, "=", v) for k, v in domain.items()], order="id"
        )

    def _alert_mails(self):
        return self.env["mail.mail"].sudo().search([("subject", "like", "Odoo mail:")])

    def _queue(self, count, subject="Alert"):
        mails = self.env["mail.mail"].sudo()
        for n in range(count):
            mails |= mails.create({"subject": f"{subject} {n}", "body_html": "<p>Hi</p>", "email_to": f"a{n}@fabrikam.example",
                                   "email_from": self.server.graph_sender_email, "mail_server_id": self.server.id})  # fmt: skip
        return mails

    def test_a_server_signed_out_alerts_once_and_clears_when_signed_in_again(self):
        self.connect_server()
        self.fake.revoke_refresh_tokens()
        self.fake.expire_tokens()
        tokens._memory.clear()
        clear_caches()
        self.server.sudo().graph_access_token_expiry = fields.Datetime.now() - datetime.timedelta(hours=2)
        mails = self._queue(2)
        with mute_logger("odoo.addons.mail.models.mail_mail", "odoo.addons.mail_graph_api.session", "graph_mail"):
            self.env["mail.mail"].process_email_queue(mails.ids)
        compat.invalidate(self.server)
        self.assertEqual(self.server.graph_connection_state, "reauth")
        with mute_logger("odoo.addons.mail_graph_api.models.mail_graph_alert"):
            opened = self.Alert._cron_check()
            self.Alert._cron_check()  # still true: nothing new
        alert = self._alerts()
        self.assertEqual(opened, alert)
        self.assertEqual(alert.kind, "reauth")
        self.assertIn("Authenticate with Microsoft", alert.fix)
        self.assertIn(self.admin, alert.activity_ids.mapped("user_id"), "the administrator has a to-do")
        self.assertEqual(len(alert.activity_ids.filtered(lambda a: a.user_id == self.admin)), 1)
        (mail,) = self._alert_mails()
        self.assertEqual(mail.mail_server_id, self.smtp, "the alert goes through the server that works")
        self.assertIn(self.admin.email, mail.email_to)
        self.assertIn("Authenticate with Microsoft", self.server.graph_alert_text, "the form's banner")
        self.connect_server()  # signed in again: the alert clears at once
        self.assertFalse(alert.active)
        self.assertTrue(alert.cleared_date)
        self.assertFalse(alert.activity_ids)
        compat.invalidate(self.server)
        self.assertFalse(self.server.graph_alert_text)

    def test_secret_expiry_alerts_at_30_7_and_1_days(self):
        today = fields.Date.context_today(self.Alert)
        steps = []
        with mute_logger("odoo.addons.mail_graph_api.models.mail_graph_alert"):
            for days in (45, 20, 15, 5, 1, -1, 400):
                self.server.graph_secret_expiry = today + datetime.timedelta(days=days)
                self.Alert._cron_check()
                steps.append(self._alerts(active=True).mapped("key"))
        self.assertEqual(
            steps,
            [[], ["secret_expiry:30"], ["secret_expiry:30"], ["secret_expiry:7"], ["secret_expiry:1"],
             ["secret_expiry:expired"], []],
        )  # fmt: skip
        self.assertEqual(len(self._alerts()), 4, "one event per step, not one per check")
        self.assertEqual(len(self._alert_mails()), 4)

    def test_quota_waits_and_failures_in_a_row_alert_and_clear(self):
        self.connect_server()
        self.server.write({"graph_rate_limit": 1, "graph_alert_quota_minutes": 30, "graph_alert_failures": 2})
        mails = self._queue(2)
        with mute_logger("odoo.addons.mail.models.mail_mail", "odoo.addons.mail_graph_api.session"):
            self.env["mail.mail"].process_email_queue(mails.ids)
        self.assertEqual(mails[1].state, "outgoing")
        compat.flush_all(self.env)
        self.env.cr.execute(
            "UPDATE mail_mail SET create_date = create_date - interval '1 hour' WHERE id = %s", (mails[1].id,)
        )
        self.env.cr.execute(
            "UPDATE mail_graph_api_log SET create_date = create_date - interval '2 minutes' WHERE mail_server_id = %s",
            (self.server.id,),
        )
        with mute_logger("odoo.addons.mail_graph_api.models.mail_graph_alert"):
            self.Alert._cron_check()
        self.assertEqual(self._alerts(active=True).mapped("kind"), ["quota_wait"])
        self.assertIn("1 mails of", self._alerts(active=True).name)
        self.server.graph_rate_limit = 0
        mails[1].scheduled_date = False  # its slot came
        self.fake.inject("sendMail", status=400, count=2, code="ErrorInvalidRecipients")
        failing = self._queue(2, subject="Refused")
        with mute_logger("odoo.addons.mail.models.mail_mail", "odoo.addons.mail_graph_api.session", "graph_mail"):
            self.env["mail.mail"].process_email_queue(failing.ids)
        self.env["mail.mail"].process_email_queue(mails[1].ids)  # goes: the quota wait is over
        self.assertEqual(mails[1].state, "sent")
        self.assertEqual(failing.mapped("state"), ["exception", "exception"])
        with mute_logger("odoo.addons.mail_graph_api.models.mail_graph_alert"):
            self.Alert._cron_check()
        self.assertEqual(self._alerts(active=True).mapped("kind"), [], "the last mail went: nothing in a row")
        failing = self._queue(2, subject="Refused again")
        self.fake.inject("sendMail", status=400, count=2, code="ErrorInvalidRecipients")
        with mute_logger("odoo.addons.mail.models.mail_mail", "odoo.addons.mail_graph_api.session", "graph_mail"):
            self.env["mail.mail"].process_email_queue(failing.ids)
        with mute_logger("odoo.addons.mail_graph_api.models.mail_graph_alert"):
            self.Alert._cron_check()
        self.assertEqual(self._alerts(active=True).mapped("kind"), ["failures"], "two refused in a row")
        self.assertIn("The last 2 mails", self._alerts(active=True).name)
        self.env["mail.mail"].process_email_queue(self._queue(1, subject="Works again").ids)
        self.Alert._cron_check()
        self.assertFalse(self._alerts(active=True), "a mail went through: the failures alert cleared")
