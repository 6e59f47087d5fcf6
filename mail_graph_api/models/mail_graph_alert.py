# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl-3.0).
"""Alerts before anything breaks (issue #16): a server that needs a new sign-in, a secret or certificate about to
expire (30, 7 and 1 days), mail waiting for the sending quota too long, several sends failed in a row.

One alert per event and server (not one per mail): the cron "Microsoft Graph: alerts" compares what is true now
with the open alerts, opens what is new (an activity for each Settings administrator, and an e-mail through
another working server when there is one) and closes what is gone (its activities removed). The server form shows
what is true now, with the fix, whatever the cron last saw.
"""

import logging

from markupsafe import escape

from odoo import _, api, fields, models

_logger = logging.getLogger(__name__)

EXPIRY_STEPS = (1, 7, 30)  # days before an expiry that each open an alert of their own
QUOTA_WAIT_TEXT = "Waiting for the sending quota of "


class MailGraphAlert(models.Model):
    _name = "mail.graph.alert"
    _inherit = ["mail.thread", "mail.activity.mixin"]
    _description = "Microsoft Graph alert"
    _order = "id desc"

    name = fields.Char("Alert", required=True, readonly=True)
    fix = fields.Text("What to do", readonly=True)
    mail_server_id = fields.Many2one("ir.mail_server", "Mail Server", required=True, index=True, ondelete="cascade")
    kind = fields.Selection(
        [
            ("reauth", "Sign-in needed"),
            ("secret_expiry", "Client secret expiry"),
            ("certificate_expiry", "Certificate expiry"),
            ("quota_wait", "Waiting for the sending quota"),
            ("failures", "Failures in a row"),
        ],
        required=True,
        readonly=True,
    )
    key = fields.Char(required=True, readonly=True, help="One open alert per server and key (the event).")
    active = fields.Boolean(default=True, help="Archived when its cause is gone.")
    cleared_date = fields.Datetime("Cleared", readonly=True)
    notified_by_email = fields.Boolean(readonly=True)

    # ------------------------------------------------------------------
    # What is true now
    # ------------------------------------------------------------------

    @api.model
    def _conditions(self, server):
        """The events true now for one Graph server: dicts with kind, key, name and fix."""
        found = []
        name = server.display_name
        if server.graph_connection_state == "reauth":
            found.append(
                dict(
                    kind="reauth",
                    key="reauth",
                    name=_("%s needs a new Microsoft sign-in: its mail is not sent.", name),
                    fix=_(
                        "Open the server and click “Authenticate with Microsoft” (signed in as %s).",
                        server.graph_sender_email,
                    ),
                )
            )
        today = fields.Date.context_today(self)
        if server.graph_auth_mode != "application_certificate" and server.graph_secret_expiry:
            found += self._expiry(
                "secret_expiry",
                _("The client secret of %s", name),
                server.graph_secret_expiry,
                today,
                _(
                    "In the Azure portal, App registrations > your app > Certificates & secrets: add a new client "
                    "secret, paste its value into the server's Client Secret and its expiry date into Client "
                    "Secret Expires."
                ),
            )
        if server.graph_auth_mode == "application_certificate" and server.graph_certificate_expiry:
            found += self._expiry(
                "certificate_expiry",
                _("The certificate of %s", name),
                server.graph_certificate_expiry.date(),
                today,
                _(
                    "Create a new certificate, upload its public part in the Azure portal (App registrations > your "
                    "app > Certificates & secrets > Certificates) and paste key and certificate into the server."
                ),
            )
        waiting = self._quota_waiting(server)
        if waiting:
            found.append(
                dict(
                    kind="quota_wait",
                    key="quota_wait",
                    name=_(
                        "%(count)s mails of %(mailbox)s have waited for its sending quota for more than %(minutes)s "
                        "minutes.",
                        count=waiting,
                        mailbox=server.graph_sender_email,
                        minutes=server.graph_alert_quota_minutes,
                    ),
                    fix=_(
                        "Spread the sending: add servers with other mailboxes to this server's Mailbox Pool, or send "
                        "large mailings through a mailbox meant for them. Raise the limits only if Exchange allows "
                        "more for this mailbox."
                    ),
                )
            )
        failed = self._failures_in_a_row(server)
        if failed:
            found.append(
                dict(
                    kind="failures",
                    key="failures",
                    name=_("The last %(count)s mails through %(server)s failed.", count=failed, server=name),
                    fix=_(
                        "Open the server's Graph API Logs for Microsoft's error and what to do, fix it, then click "
                        "Test Connection. Last error: %s",
                        server.graph_last_error or _("see the logs"),
                    ),
                )
            )
        return found

    @api.model
    def _expiry(self, kind, what, end, today, fix):
        days = (end - today).days
        if days < 0:
            return [
                dict(
                    kind=kind,
                    key=f"{kind}:expired",
                    name=_("%(what)s expired on %(end)s: sending fails (AADSTS7000222).", what=what, end=end),
                    fix=fix,
                )
            ]
        step = next((step for step in EXPIRY_STEPS if days <= step), None)
        if step is None:
            return []
        return [
            dict(
                kind=kind,
                key=f"{kind}:{step}",
                name=_("%(what)s expires on %(end)s, in %(days)s days.", what=what, end=end, days=days),
                fix=fix,
            )
        ]

    @api.model
    def _quota_waiting(self, server):
        minutes = server.graph_alert_quota_minutes
        if not minutes:
            return 0
        self.env.cr.execute(
            "SELECT count(*) FROM mail_mail WHERE state = 'outgoing' AND failure_reason LIKE %s "
            "AND create_date < (now() AT TIME ZONE 'UTC') - %s * interval '1 minute'",
            ("%" + QUOTA_WAIT_TEXT + server.graph_sender_email + "%", minutes),
        )
        return self.env.cr.fetchone()[0]

    @api.model
    def _failures_in_a_row(self, server):
        """How many of the server's last mails failed, when it is at least the server's alert threshold."""
        threshold = server.graph_alert_failures
        if not threshold:
            return 0
        Log = self.env["mail.graph.api.log"]
        self.env.cr.execute(
            "SELECT outcome FROM mail_graph_api_log WHERE mail_server_id = %s AND operation IN %s "
            "AND outcome IN ('ok', 'error', 'ambiguous') ORDER BY id DESC LIMIT %s",
            (server.id, Log.SENDING_OPERATIONS, threshold),
        )
        outcomes = [row[0] for row in self.env.cr.fetchall()]
        return len(outcomes) if len(outcomes) == threshold and set(outcomes) == {"error"} else 0

    # ------------------------------------------------------------------
    # Opening and closing
    # ------------------------------------------------------------------

    @api.model
    def _cron_check(self):
        servers = (
            self.env["ir.mail_server"]
            .sudo()
            .with_context(active_test=False)
            .search([("use_graph_api", "=", True), "|", ("active", "=", True), ("graph_receive_only", "=", True)])
        )
        return self.sudo()._sync(servers)

    @api.model
    def _sync(self, servers):
        """Open the alerts that are new, close those whose cause is gone. Returns the alerts opened."""
        opened = self.browse()
        for server in servers:
            working = server.active or server.graph_receive_only  # archived: no alert, unless it reads mail
            conditions = {c["key"]: c for c in self._conditions(server)} if working else {}
            open_alerts = self.search([("mail_server_id", "=", server.id)])
            for alert in open_alerts:
                if alert.key not in conditions:
                    alert._close()
            known = set(open_alerts.mapped("key"))
            for key, condition in conditions.items():
                if key not in known:
                    opened |= self._open(server, condition)
        return opened

    @api.model
    def _open(self, server, condition):
        alert = self.create(dict(condition, mail_server_id=server.id))
        _logger.warning("Microsoft Graph alert on mail server #%s: %s %s", server.id, alert.name, alert.fix)
        # quick_update: no "activity assigned" mail through whichever server Odoo picks (maybe the failing one);
        # the alert's own e-mail goes through a server that works (_email).
        for admin in self._administrators():
            alert.with_context(mail_activity_quick_update=True).activity_schedule(
                "mail.mail_activity_data_todo", user_id=admin.id, summary=alert.name[:250], note=alert.fix
            )
        alert._email(server)
        return alert

    def _close(self):
        _logger.info("Microsoft Graph alert on mail server #%s cleared: %s", self.mail_server_id.id, self.name)
        self.activity_ids.unlink()
        self.write({"active": False, "cleared_date": fields.Datetime.now()})

    @api.model
    def _administrators(self):
        users = self.env["res.users"].sudo().search([("share", "=", False)])
        return users.filtered(lambda user: user._is_system() and not user._is_superuser())

    def _email(self, server):
        """The alert by e-mail to the administrators, through another server that works (never the failing one)."""
        other = self._working_server(server)
        recipients = [admin.email_formatted for admin in self._administrators() if admin.email]
        if not other or not recipients:
            return
        sender = (
            other.graph_sender_email if other.use_graph_api else (self.env.company.email_formatted or recipients[0])
        )
        self.env["mail.mail"].sudo().create(
            {
                "subject": _("Odoo mail: %s", self.name),
                "body_html": f"<p>{escape(self.name)}</p><p>{escape(self.fix or '')}</p>",
                "email_from": sender,
                "email_to": ",".join(recipients),
                "mail_server_id": other.id,
                "auto_delete": True,
            }
        )
        self.notified_by_email = True

    @api.model
    def _working_server(self, server):
        """Another outgoing server with no open alert that stops its mail, Graph servers first."""
        blocked = self.search([("kind", "in", ("reauth", "failures"))]).mapped("mail_server_id") | server
        candidates = self.env["ir.mail_server"].sudo().search([("id", "not in", blocked.ids)], order="sequence, id")
        for candidate in candidates:
            if candidate.use_graph_api and candidate.graph_connection_state == "connected":
                return candidate
        return candidates.filtered(lambda candidate: not candidate.use_graph_api and candidate.smtp_host)[:1]
