# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl-3.0).
import datetime
import json
import logging
import re

from odoo import _, api, fields, models
from odoo.exceptions import AccessError, UserError, ValidationError
from odoo.tools import email_normalize

from graph_mail import (
    AuthMode,
    DelegatedAuthFlow,
    GraphMailError,
    InvalidGrantError,
    MailboxCredentials,
    certificate_expiry,
    resolve_cloud,
)

from .. import compat, db, quota
from ..oauth_state import make_state
from ..session import GraphSession
from ..tokens import ServerTokenSource

_logger = logging.getLogger(__name__)

GUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
DOMAIN_RE = re.compile(r"^(?=.{4,253}$)([a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\.)+[a-zA-Z]{2,63}$")
CALLBACK_PATH = "/mail_graph_api/auth/callback"
EXCHANGE_DEFAULT_MAX_MB = 35.0


class IrMailServer(models.Model):
    _inherit = "ir.mail_server"

    # 14.0-16.0 require an SMTP host on every server; a Graph server needs one only for the SMTP fallback (the
    # form requires it then, as 17.0+ does).
    smtp_host = fields.Char(required=False)
    use_graph_api = fields.Boolean(
        "Use Microsoft Graph API",
        help="Send through Microsoft Graph (HTTPS) instead of SMTP: works when SMTP AUTH is disabled in Microsoft 365.",
    )
    graph_auth_mode = fields.Selection(
        [
            ("delegated", "Delegated (sign in as the mailbox)"),
            ("application_secret", "Application (client secret)"),
            ("application_certificate", "Application (certificate)"),
        ],
        string="Graph Authentication",
        default="delegated",
        required=True,
    )
    graph_client_id = fields.Char("Client ID", help="Application (client) ID of the Azure app registration.")
    graph_client_secret = fields.Char(
        "Client Secret", groups="base.group_system", copy=False, help="The secret's VALUE, not its Secret ID."
    )
    graph_tenant_id = fields.Char("Tenant ID", help="Directory (tenant) ID, or the tenant's verified domain.")
    graph_sender_email = fields.Char("Sender Email", help="The Microsoft 365 mailbox that sends the mail.")
    graph_cloud = fields.Selection(
        [
            ("global", "Global (login.microsoftonline.com)"),
            ("usgov", "US Government (GCC High)"),
            ("usgov_dod", "US Government (DoD)"),
            ("china", "China (21Vianet)"),
            ("custom", "Custom endpoints"),
        ],
        string="Microsoft Cloud",
        default="global",
        required=True,
    )
    graph_authority_url = fields.Char(
        "Authority URL", help="Custom identity endpoint base, e.g. https://login.microsoftonline.com"
    )
    graph_api_url = fields.Char("Graph URL", help="Custom Graph base, e.g. https://graph.microsoft.com/v1.0")
    graph_certificate = fields.Text(
        "Certificate (PEM)",
        groups="base.group_system",
        copy=False,
        help="PEM private key and certificate uploaded to the app registration (application mode).",
    )
    graph_certificate_thumbprint = fields.Char("Certificate Thumbprint", groups="base.group_system", copy=False)
    graph_certificate_expiry = fields.Datetime(
        "Certificate Expires",
        compute="_compute_graph_certificate_expiry",
        store=True,
        help="Read from the certificate in the PEM (UTC). Upload a new certificate to the app registration before.",
    )
    graph_secret_expiry = fields.Date(
        "Client Secret Expires",
        copy=False,
        help="The Azure portal shows it: Entra ID > App registrations > this app > Certificates & secrets > "
        "Client secrets > Expires. Create the next secret before that day.",
    )
    graph_secret_expiry_read = fields.Datetime(
        "Secret Expiry Read From Microsoft",
        copy=False,
        readonly=True,
        help="When the client secret's end date was last read from the app registration (application mode, with "
        "the Graph permission Application.Read.All: daily, and at Test Connection). Empty: the date is yours.",
    )
    graph_refresh_token = fields.Char(groups="base.group_system", copy=False)
    graph_access_token = fields.Char(groups="base.group_system", copy=False)
    graph_access_token_expiry = fields.Datetime("Token Expiry", groups="base.group_system", copy=False, readonly=True)
    graph_oauth_flow = fields.Text(groups="base.group_system", copy=False)
    graph_token_version = fields.Integer(copy=False, default=0, readonly=True)
    graph_account = fields.Char("Connected Account", copy=False, readonly=True)
    graph_connection_state = fields.Selection(
        [
            ("not_connected", "Not connected"),
            ("connected", "Connected"),
            ("reauth", "Re-authentication needed"),
            ("error", "Error"),
        ],
        string="Connection Status",
        default="not_connected",
        copy=False,
        readonly=True,
    )
    graph_last_error = fields.Text("Last Error", copy=False, readonly=True)
    graph_max_email_size = fields.Float(
        "Max Email Size (MB)",
        default=EXCHANGE_DEFAULT_MAX_MB,
        help="Largest message the mailbox accepts (Exchange default 35 MB, up to 150 MB when raised by an admin).",
    )
    graph_connect_timeout = fields.Integer("Connect Timeout (s)", default=10)
    graph_read_timeout = fields.Integer("Read Timeout (s)", default=60)
    graph_send_deadline = fields.Integer(
        "Per-mail Deadline (s)", default=600, help="Give up on one mail (including retries) after this long."
    )
    graph_force_from = fields.Boolean(
        "Send as the Sender Email",
        default=True,
        help="Exchange refuses a From address the mailbox has no Send As right on. When set, the From address "
        "becomes the Sender Email (the author's name is kept and replies still go to the Reply-To).",
    )
    graph_smtp_fallback = fields.Boolean(
        "Fall back to SMTP",
        help="Send by the SMTP settings below when Graph fails in a way that proves nothing was sent.",
    )
    graph_rate_limit = fields.Integer(
        "Mails per minute",
        default=30,
        help="Exchange Online's limit per mailbox (tenants may set a lower one). A mail beyond it waits in the "
        "queue for its slot. 0: no limit.",
    )
    graph_daily_recipient_limit = fields.Integer(
        "Recipients per 24 hours",
        default=10000,
        help="Exchange Online's limit per mailbox over a rolling 24 hours, each recipient of each copy counted. "
        "Past it Exchange accepts and then bounces every mail (5.1.90): Odoo holds mail back instead. 0: no limit.",
    )
    graph_usage_minute = fields.Integer("Mails in the last minute", compute="_compute_graph_usage")
    graph_usage_day = fields.Integer("Recipients in the last 24 hours", compute="_compute_graph_usage")
    graph_usage_percent = fields.Float("Daily quota used (%)", compute="_compute_graph_usage", digits=(5, 1))
    graph_pool = fields.Char(
        "Mailbox Pool",
        help="Graph servers with the same pool name (without one: the same FROM filter) share their senders' mail: "
        "when this mailbox's sending quota is spent, the mail goes through the next server of the pool with room, "
        "by priority. The Graph API Logs say which.",
    )
    graph_pool_usage = fields.Char("Pool Use", compute="_compute_graph_usage")
    graph_alert_quota_minutes = fields.Integer(
        "Alert after waiting (minutes)",
        default=60,
        help="Alert the administrators when mail has waited longer than this for the mailbox's sending quota. 0: never.",
    )
    graph_alert_failures = fields.Integer(
        "Alert after failures in a row",
        default=5,
        help="Alert the administrators when this many mails in a row failed through this server. 0: never.",
    )
    graph_alert_text = fields.Text("Alerts", compute="_compute_graph_alert_text")
    graph_fetch_inbox = fields.Boolean(
        "Process bounces and replies from this mailbox",
        default=True,
        help="Graph cannot set the envelope sender: non-delivery reports and replies sent to this mailbox land in "
        "its Inbox. Read them over Graph (Mail.ReadWrite) and hand them to Odoo, so bounces are counted and "
        "replies reach their documents. Processed mail is marked read and moved to 'Odoo Processed'.",
    )
    graph_receive_only = fields.Boolean(
        "Reading only",
        readonly=True,
        copy=False,
        help="The sign-in of an Incoming Mail Server of type Microsoft Graph: archived, so Odoo never sends with it.",
    )
    graph_inbox_ids = fields.One2many("mail.graph.inbox", "mail_server_id", "Graph inboxes")
    graph_log_ids = fields.One2many("mail.graph.api.log", "mail_server_id", string="Graph API Logs")
    graph_log_count = fields.Integer(compute="_compute_graph_log_count")

    # ------------------------------------------------------------------
    # Validation
    # ------------------------------------------------------------------

    @api.constrains("use_graph_api", "graph_client_id", "graph_tenant_id", "graph_sender_email", "graph_auth_mode")
    def _check_graph_settings(self):
        for server in self.filtered("use_graph_api"):
            if not server.graph_client_id or not GUID_RE.match(server.graph_client_id.strip()):
                raise ValidationError(
                    _(
                        "Client ID of “%s” must be the Application (client) ID GUID from the Azure app "
                        "registration's Overview page, e.g. 2f9b8c7d-6e5a-4b3c-8d2e-1f0a9b8c7d6e.",
                        server.name,
                    )
                )
            tenant = (server.graph_tenant_id or "").strip()
            if not (GUID_RE.match(tenant) or DOMAIN_RE.match(tenant)):
                raise ValidationError(
                    _(
                        "Tenant ID of “%s” must be the Directory (tenant) ID GUID or a verified domain such as "
                        "contoso.onmicrosoft.com.",
                        server.name,
                    )
                )
            if not compat.normalize_single_email(server.graph_sender_email or ""):
                raise ValidationError(
                    _(
                        "Sender Email of “%s” must be a single mailbox address, e.g. sales@contoso.com.",
                        server.name,
                    )
                )

    @api.constrains(
        "graph_connect_timeout", "graph_read_timeout", "graph_send_deadline", "graph_max_email_size",
        "graph_rate_limit", "graph_daily_recipient_limit",
    )  # fmt: skip
    def _check_graph_limits(self):
        for server in self.filtered("use_graph_api"):
            if min(server.graph_connect_timeout, server.graph_read_timeout, server.graph_send_deadline) <= 0:
                raise ValidationError(_("Timeouts and the per-mail deadline must be positive numbers of seconds."))
            if not 0 < server.graph_max_email_size <= 150:
                raise ValidationError(_("Microsoft accepts messages up to 150 MB: set a size between 1 and 150."))
            if min(server.graph_rate_limit, server.graph_daily_recipient_limit) < 0:
                raise ValidationError(_("Sending limits are numbers of mails or recipients, 0 for none."))

    @api.onchange("graph_sender_email")
    def _onchange_graph_sender_email(self):
        if compat.has_from_filter() and self.use_graph_api and self.graph_sender_email and not self.from_filter:
            self.from_filter = email_normalize(self.graph_sender_email) or self.graph_sender_email

    @api.model_create_multi
    def create(self, vals_list):
        for vals in vals_list:
            self._graph_default_vals(vals)
        servers = super().create(vals_list)
        servers._graph_sync_inbox()
        return servers

    def write(self, vals):
        if any(key in vals for key in ("graph_client_id", "graph_tenant_id", "graph_cloud", "graph_auth_mode")):
            # Another app or tenant: the tokens we hold belong to the old one.
            self._graph_forget_tokens(vals)
        self._graph_default_vals(vals)
        result = super().write(vals)
        if any(key in vals for key in ("use_graph_api", "graph_fetch_inbox", "active")):
            self._graph_sync_inbox()
        return result

    def _graph_sync_inbox(self):
        """The option "Process bounces and replies" is one mail.graph.inbox on the mailbox's Inbox, active
        while the option is on (kept, with its sync state, while it is off)."""
        Inbox = self.env["mail.graph.inbox"].sudo().with_context(active_test=False)
        for server in self.sudo():
            inbox = Inbox.search([("mail_server_id", "=", server.id), ("origin", "=", "server")], limit=1)
            wanted = bool(server.active and server.use_graph_api and server.graph_fetch_inbox)
            if wanted and not inbox:
                Inbox.create({"mail_server_id": server.id, "origin": "server", "folder": "Inbox"})
            elif inbox and inbox.active != wanted:
                # Back on: from now, not from when it was switched off.
                restart = {"sync_since": fields.Datetime.now(), "delta_link": False} if wanted else {}
                inbox.write(dict(restart, active=wanted))

    @api.model
    def _graph_default_vals(self, vals):
        if vals.get("use_graph_api") or (self and any(self.mapped("use_graph_api"))):
            sender = vals.get("graph_sender_email") or (len(self) == 1 and self.graph_sender_email)
            has_filter = compat.has_from_filter()
            if has_filter and sender and not vals.get("from_filter") and not (len(self) == 1 and self.from_filter):
                vals["from_filter"] = email_normalize(sender) or sender
            if vals.get("graph_client_id"):
                vals["graph_client_id"] = vals["graph_client_id"].strip()
            if vals.get("graph_tenant_id"):
                vals["graph_tenant_id"] = vals["graph_tenant_id"].strip()

    def _graph_forget_tokens(self, vals):
        if not self:
            return
        vals.update(
            graph_refresh_token=False,
            graph_access_token=False,
            graph_access_token_expiry=False,
            graph_account=False,
            graph_connection_state="not_connected",
            graph_token_version=max(self.mapped("graph_token_version") or [0]) + 1,
        )

    @api.depends("smtp_authentication", "use_graph_api")  # 16.0+: Odoo's field (a new server's note follows)
    def _compute_smtp_authentication_info(self):
        graph = self.filtered("use_graph_api")
        for server in graph:
            server.smtp_authentication_info = _(
                "Mail goes through Microsoft Graph (HTTPS). The SMTP settings are used only as a fallback, "
                "when enabled."
            )
        super(IrMailServer, self - graph)._compute_smtp_authentication_info()

    def _compute_graph_usage(self):
        """Today's use of each server's mailbox (shared by every server sending as it), and of its pool."""
        Log = self.env["mail.graph.api.log"]
        usages = {}

        def usage_of(server):
            mailbox = server.graph_sender_email.lower()
            if mailbox not in usages:
                usages[mailbox] = quota.usage(self.env.cr, mailbox, Log.SENDING_OPERATIONS)
            return usages[mailbox]

        for server in self:
            server.graph_pool_usage = False
            if not (server.use_graph_api and server.graph_sender_email):
                server.graph_usage_minute = server.graph_usage_day = server.graph_usage_percent = 0
                continue
            used = usage_of(server)
            server.graph_usage_minute = used.messages_last_minute
            server.graph_usage_day = used.recipients_last_day
            limit = server.graph_daily_recipient_limit
            server.graph_usage_percent = 100.0 * used.recipients_last_day / limit if limit else 0.0
            members = server._graph_pool_members() if server.id else self.browse()
            if members:
                pool = server | members
                sent = sum(usage_of(member).recipients_last_day for member in pool)
                room = sum(member.graph_daily_recipient_limit for member in pool)
                share = (
                    f" ({100.0 * sent / room:.1f}%)" if room and all(pool.mapped("graph_daily_recipient_limit")) else ""
                )
                server.graph_pool_usage = _(
                    "%(count)s mailboxes: %(sent)s of %(room)s recipients in the last 24 hours%(share)s",
                    count=len(pool),
                    sent=f"{sent:,}",
                    room=f"{room:,}" if share else _("no limit"),
                    share=share,
                )

    def _graph_pool_key(self):
        """Servers with the same key form a mailbox pool: the pool name, else the FROM filter."""
        if self.graph_pool and self.graph_pool.strip():
            return ("pool", self.graph_pool.strip().lower())
        if compat.has_from_filter() and self.from_filter:
            return ("from_filter", self.from_filter.strip().lower())
        return None

    def _graph_pool_members(self):
        """The other servers of this server's pool that may send its mail when its quota is spent, in the
        order they are tried (priority, then id): one per other mailbox, none that needs a new sign-in."""
        self.ensure_one()
        key = self._graph_pool_key()
        if not key:
            return self.browse()
        mailboxes = {(self.graph_sender_email or "").lower()}
        members = self.browse()
        candidates = self.sudo().search(
            [("use_graph_api", "=", True), ("id", "!=", self.id), ("graph_sender_email", "!=", False)],
            order="sequence, id",
        )
        for server in candidates:
            mailbox = server.graph_sender_email.lower()
            if server._graph_pool_key() != key or mailbox in mailboxes or server.graph_connection_state == "reauth":
                continue
            mailboxes.add(mailbox)
            members |= server
        return members

    def _compute_graph_alert_text(self):
        """The banner: what is wrong now and how to fix it (live, whatever the alerts cron last saw)."""
        Alert = self.env["mail.graph.alert"].sudo()
        for server in self:
            conditions = Alert._conditions(server.sudo()) if server.use_graph_api and server.id else []
            server.graph_alert_text = "\n\n".join(f"{c['name']} {c['fix']}" for c in conditions) or False

    @api.depends("graph_certificate")
    def _compute_graph_certificate_expiry(self):
        for server in self:
            pem = server.sudo().graph_certificate
            try:
                server.graph_certificate_expiry = certificate_expiry(pem) if pem else False
            except GraphMailError:
                server.graph_certificate_expiry = False  # Test Connection says what is wrong with the PEM

    @api.depends("graph_log_ids")
    def _compute_graph_log_count(self):
        counts = {}
        if self.env.user.has_group("base.group_system") and self.ids:
            Log = self.env["mail.graph.api.log"].sudo()
            counts = compat.count_by(Log, [("mail_server_id", "in", self.ids)], "mail_server_id")
        for server in self:
            server.graph_log_count = counts.get(server.id, 0)

    def _get_max_email_size(self):
        if len(self) == 1 and self.use_graph_api:
            return self.graph_max_email_size or EXCHANGE_DEFAULT_MAX_MB
        if not compat.has_native_max_email_size():
            return EXCHANGE_DEFAULT_MAX_MB  # 17.0: Odoo itself never asks; our core enforces the limit
        return super()._get_max_email_size()

    # ------------------------------------------------------------------
    # Core mapping
    # ------------------------------------------------------------------

    def _graph_credentials(self):
        """The core library's view of this server. sudo: secrets are admin-only fields."""

        self.ensure_one()
        server = self.sudo()
        custom = server.graph_cloud == "custom"
        cloud = resolve_cloud(
            "global" if custom else server.graph_cloud,
            authority_url=server.graph_authority_url if custom else None,
            graph_url=server.graph_api_url if custom else None,
        )
        application = server.graph_auth_mode != "delegated"
        return MailboxCredentials(
            tenant_id=server.graph_tenant_id,
            client_id=server.graph_client_id,
            client_secret=server.graph_client_secret if server.graph_auth_mode != "application_certificate" else None,
            certificate_pem=server.graph_certificate if server.graph_auth_mode == "application_certificate" else None,
            certificate_thumbprint=server.graph_certificate_thumbprint or None,
            mode=AuthMode.APPLICATION if application else AuthMode.DELEGATED,
            cloud=cloud,
            refresh_token=server.graph_refresh_token or None,
        )

    def _graph_redirect_uri(self):
        base_url = self.env["ir.config_parameter"].sudo().get_param("web.base.url") or ""
        return base_url.rstrip("/") + CALLBACK_PATH

    def _graph_session(self, smtp_from=None):
        self.ensure_one()
        return GraphSession(self, smtp_from=smtp_from, token_source=ServerTokenSource.for_server(self))

    def _graph_check_admin(self):
        if not self.env.is_admin():
            raise AccessError(_("Only administrators can configure Microsoft Graph mail servers."))

    def _graph_check_configured(self):
        self.ensure_one()
        missing = [
            label
            for label, value in (
                (_("Client ID"), self.graph_client_id),
                (_("Tenant ID"), self.graph_tenant_id),
                (_("Sender Email"), self.graph_sender_email),
            )
            if not value
        ]
        server = self.sudo()
        if server.graph_auth_mode != "application_certificate" and not server.graph_client_secret:
            missing.append(_("Client Secret"))
        if server.graph_auth_mode == "application_certificate" and not server.graph_certificate:
            missing.append(_("Certificate (PEM)"))
        if missing:
            raise UserError(_("Fill in %s before connecting to Microsoft.", ", ".join(missing)))

    # ------------------------------------------------------------------
    # Buttons
    # ------------------------------------------------------------------

    def action_graph_authenticate(self):
        """Start the authorization code flow: Microsoft signs the mailbox in and sends us back a code."""

        self.ensure_one()
        self._graph_check_admin()
        self._graph_check_configured()
        if self.graph_auth_mode != "delegated":
            raise UserError(_("Application mode needs no sign-in: use Test Connection."))
        state = make_state(self.env, self.id)
        try:
            url, flow = DelegatedAuthFlow(self._graph_credentials(), self._graph_redirect_uri()).start(
                state, login_hint=self.graph_sender_email
            )
        except GraphMailError as error:
            raise UserError(_("Microsoft sign-in could not start: %s", error)) from error
        self.sudo().graph_oauth_flow = json.dumps(flow)
        return {"type": "ir.actions.act_url", "url": url, "target": "self"}

    def _graph_store_tokens(self, tokens):
        """Keep what the identity platform gave us: the rotated refresh token must never be lost."""
        self.ensure_one()
        values = {
            "graph_access_token": tokens.access_token,
            "graph_access_token_expiry": _utc_from_epoch(tokens.expires_at),
            "graph_connection_state": "connected",
            "graph_last_error": False,
            "graph_token_version": self.graph_token_version + 1,
        }
        if tokens.refresh_token:
            values["graph_refresh_token"] = tokens.refresh_token
        if tokens.account:
            values["graph_account"] = tokens.account
        signed_out = self.graph_connection_state == "reauth"
        # super().write: these are token fields, the client/tenant did not change.
        super(IrMailServer, self.sudo()).write(values)
        if signed_out:
            self.env["mail.graph.alert"].sudo()._sync(self)  # the "sign-in needed" alert clears at once

    def action_graph_disconnect(self):
        self._graph_check_admin()
        values = {}
        self._graph_forget_tokens(values)
        super(IrMailServer, self.sudo()).write(values)
        return True

    def test_smtp_connection(self, autodetect_max_email_size=False):
        graph = self.filtered("use_graph_api")
        if not graph:
            return super().test_smtp_connection(**compat.test_connection_kwargs(autodetect_max_email_size))
        if autodetect_max_email_size:
            # Graph does not publish the mailbox's limit: keep the configured value.
            message = _(
                "Microsoft Graph does not report the mailbox limit; %(size)s MB is used (Exchange default 35 MB).",
                size=graph[:1].graph_max_email_size,
            )
        else:
            lines = [graph_server._graph_test_connection() for graph_server in graph]
            message = "\n".join(lines)
        result = super(IrMailServer, self - graph).test_smtp_connection() if self - graph else None
        return result or {
            "type": "ir.actions.client",
            "tag": "display_notification",
            "params": {
                "title": _("Microsoft Graph"),
                "message": message,
                "type": "success",
                "sticky": False,
                "next": {"type": "ir.actions.act_window_close"},
            },
        }

    def _graph_test_connection(self):
        """Acquire a token and read the mailbox: proves credentials, consent and the mailbox's existence."""

        self.ensure_one()
        self._graph_check_configured()
        session = self._graph_session()
        try:
            identity = session.whoami()
        except GraphMailError as error:
            session.flush_logs()
            self._graph_record_error(error)
            raise UserError(
                _("Microsoft Graph connection failed for “%(name)s”: %(error)s", name=self.name, error=error)
            )
        session.flush_logs()
        address = identity.get("mail") or identity.get("userPrincipalName") or ""
        if email_normalize(address) != email_normalize(self.graph_sender_email):
            raise UserError(
                _(
                    "Connected, but as %(account)s while the Sender Email is %(sender)s. Sign in with the sender's "
                    "mailbox, or give %(account)s Send As rights on it in Exchange.",
                    account=address,
                    sender=self.graph_sender_email,
                )
            )
        if self.graph_connection_state == "error":
            # A passing test clears an earlier failure: the server works again (the Send Test Email button shows).
            super(IrMailServer, self.sudo()).write({"graph_connection_state": "connected", "graph_last_error": False})
        message = _("Connection to Microsoft Graph successful: sending as %s.", address)
        if self._graph_read_secret_expiry():
            message += " " + _("The client secret expires on %s (read from Microsoft).", self.graph_secret_expiry)
        return message

    def _graph_read_secret_expiry(self):
        """Where the app may read its own registration (Application.Read.All, application mode), the client
        secret's end date comes from Microsoft; without that permission the administrator's date stays.
        True when read."""
        self.ensure_one()
        server = self.sudo()
        if server.graph_auth_mode != "application_secret" or not server.graph_client_secret:
            return False  # a delegated sign-in does not carry Application.Read.All; a certificate has its PEM
        session = server._graph_session()
        try:
            expiry = session._client.credential_expiry()
        except GraphMailError as error:
            _logger.info("Mail server #%s: client secret expiry not read from Microsoft: %s", self.id, error)
            return False
        finally:
            session.quit()  # its call is in the Graph API Logs, either way
        secret = expiry.secret_for(server.graph_client_secret)
        if secret is None or secret.end is None:
            return False
        super(IrMailServer, server).write(
            {"graph_secret_expiry": secret.end.date(), "graph_secret_expiry_read": fields.Datetime.now()}
        )
        return True

    @api.model
    def _graph_read_expiry_dates(self):
        """Daily: the client secrets' end dates, from Microsoft where the app may read them (alerts use them)."""
        servers = self.sudo().search([("use_graph_api", "=", True), ("graph_auth_mode", "=", "application_secret")])
        return servers.filtered(lambda server: server._graph_read_secret_expiry())

    def _graph_record_error(self, error, own_cursor=True):
        """Show the failure on the server. By default through a cursor of our own, because the caller's
        transaction may roll back; own_cursor=False when the caller already writes this row (it would wait on
        its own lock)."""

        values = {
            "graph_connection_state": "reauth" if isinstance(error, InvalidGrantError) else "error",
            "graph_last_error": str(error)[:2000],
        }
        if not own_cursor or compat.registry_in_test_mode(self.env):
            # In test mode every cursor is the test's own transaction anyway.
            super(IrMailServer, self.sudo()).write(values)
            return
        # Plain SQL: on 14.0 every environment of a thread shares one cache and one queue of pending writes, so
        # an ORM write on this cursor would commit the caller's pending writes with ours.
        with self.env.registry.cursor() as cr:
            cr.execute(
                "UPDATE ir_mail_server SET graph_connection_state = %s, graph_last_error = %s, write_uid = %s, "
                "write_date = now() AT TIME ZONE 'UTC' WHERE id = %s",
                (values["graph_connection_state"], values["graph_last_error"], self.env.uid, self.id),
            )
        compat.invalidate(self, list(values))

    def action_graph_send_test_email(self):
        """Send a real test mail to the current user through Odoo's own send_email path."""
        self.ensure_one()
        self._graph_check_configured()
        recipient = self.env.user.email
        if not recipient:
            raise UserError(_("Set an email address on your user to receive the test mail."))
        message = compat.build_email(
            self,
            email_from=self.graph_sender_email,
            email_to=[recipient],
            subject=_("Microsoft Graph test mail from Odoo"),
            body=_("This mail was sent by Odoo through Microsoft Graph using the server “%s”.", self.name),
        )
        message_id = self.send_email(message, mail_server_id=self.id)
        return {
            "type": "ir.actions.client",
            "tag": "display_notification",
            "params": {
                "title": _("Microsoft Graph"),
                "message": _("Test mail sent to %(to)s (Message-ID %(id)s).", to=recipient, id=message_id),
                "type": "success",
                "sticky": False,
            },
        }

    @api.model
    def _graph_keep_alive(self, idle_days=30):
        """Daily cron: a delegated grant dies after 90 days without use (AADSTS700082), so renew the token of
        every signed-in server that has not renewed it for ``idle_days``: an idle server stays ready."""
        idle_since = fields.Datetime.now() - datetime.timedelta(days=idle_days)
        servers = (
            self.sudo()
            .with_context(active_test=False)
            .search(
                [
                    "|",
                    ("active", "=", True),
                    ("graph_receive_only", "=", True),
                    ("use_graph_api", "=", True),
                    ("graph_auth_mode", "=", "delegated"),
                    ("graph_connection_state", "in", ("connected", "error")),
                    "|",
                    ("graph_access_token_expiry", "=", False),
                    ("graph_access_token_expiry", "<", idle_since),
                ]
            )
        )
        Log = self.env["mail.graph.api.log"].sudo()
        renewed = self.browse()
        for server in servers.filtered("graph_refresh_token"):
            idle = server.graph_access_token_expiry
            try:
                ServerTokenSource.for_server(server).access_token()
            except GraphMailError as error:
                server._graph_record_error(error)
                text = f"Keep-alive could not renew the grant: {error}"
                Log._write_rows([Log._row(server, False, "keep_alive", "error", code=error.code, message=text[:500])])
                _logger.warning("Mail server #%s: %s", server.id, text)
                continue
            renewed |= server
            text = f"Renewed the delegated grant, unused since {idle or 'never'} (idle for {idle_days} days or more)"
            Log._write_rows([Log._row(server, False, "keep_alive", "ok", message=text)])
            _logger.info("Mail server #%s: %s", server.id, text)
        return renewed

    def _graph_form_record(self):
        """The record whose form the administrator came from: the incoming server for a reading-only connection."""
        if self.graph_receive_only and "fetchmail.server" in self.env:
            incoming = self.env["fetchmail.server"].sudo().search([("graph_mail_server_id", "=", self.id)], limit=1)
            if incoming:
                return incoming
        return self

    def action_open_graph_logs(self):
        self.ensure_one()
        action = self.env["ir.actions.act_window"]._for_xml_id("mail_graph_api.action_mail_graph_api_log")
        action["domain"] = [("mail_server_id", "=", self.id)]
        return action

    # ------------------------------------------------------------------
    # Sending: Odoo's hooks
    # ------------------------------------------------------------------

    def _graph_server_for(self, mail_server_id=None, host=None, smtp_from=None):
        """The Graph server Odoo would use for this call, or an empty recordset."""
        if self.env.context.get("mail_graph_api_smtp"):
            return self.browse()  # SMTP fallback in progress: plain Odoo behaviour
        if mail_server_id:
            server = self.sudo().browse(mail_server_id)
        elif host:
            return self.browse()
        else:
            server = compat.find_mail_server(self.sudo(), smtp_from)
        return server if server and server.use_graph_api else self.browse()

    def _graph_connect(self, odoo_connect, args, kwargs):
        """Odoo's connect(): a virtual session for a Graph server, Odoo's own SMTP connection otherwise (with
        Odoo's arguments as they came: their order differs between series, see compat.CONNECT_PARAMS)."""
        params = compat.named_arguments(compat.CONNECT_PARAMS, args, kwargs)
        smtp_from = params.get("smtp_from")
        server = self._graph_server_for(params.get("mail_server_id"), params.get("host"), smtp_from)
        if not server:
            return odoo_connect(*args, **kwargs)
        if compat.sending_disabled_by_test_mode(self.env):
            return None
        if not params.get("allow_archived") and not server.active:
            raise UserError(_('The server "%s" cannot be used because it is archived.', server.display_name))
        return server._graph_session(smtp_from=smtp_from)

    # Odoo calls one of these two, by series (compat.CONNECT_METHOD); the other is never called.
    def connect(self, *args, **kwargs):  # 14.0-18.0
        return self._graph_connect(super().connect, args, kwargs)

    def _connect__(self, *args, **kwargs):  # 19.0
        return self._graph_connect(super()._connect__, args, kwargs)

    @api.model
    def send_email(self, message, *args, **kwargs):
        db.count_send()  # an incoming batch commits at once when processing a message sent mail (inbox)
        params = compat.named_arguments(compat.SEND_EMAIL_PARAMS, args, kwargs)
        session = params.get("smtp_session")
        own_session = False
        if session is None and not params.get("smtp_server"):
            server = self._graph_server_for(params.get("mail_server_id"), None, message["From"])
            if server:
                if compat.sending_disabled_by_test_mode(self.env):
                    # Same contract as Odoo in test mode: prepare, do not send.
                    compat.prepare_email_message(self, message, server._graph_session())
                    return message["Message-Id"]
                session, own_session = server._graph_session(smtp_from=message["From"]), True
        if not isinstance(session, GraphSession):
            return super().send_email(message, *args, **kwargs)
        smtp_from, smtp_to_list, message = compat.prepare_email_message(self, message, session)
        # mail.mail._send() marks the mail before sending to lock it against a second worker, but ORM writes are
        # lazy: flush them, so a concurrent queue run waits on the row lock instead of sending the mail again.
        compat.flush_all(self.env)
        try:
            session.send_message(message, smtp_from, smtp_to_list)
        finally:
            if own_session:
                session.quit()  # as Odoo does with the SMTP connection it opens itself
        return message["Message-Id"]


def _utc_from_epoch(epoch):
    return datetime.datetime.fromtimestamp(epoch, tz=datetime.timezone.utc).replace(tzinfo=None)
