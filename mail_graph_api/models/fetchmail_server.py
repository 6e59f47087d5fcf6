# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl-3.0).
"""Incoming Mail Servers of type "Microsoft Graph": Odoo's fetchmail front for a ``mail.graph.inbox``.

The server holds what fetchmail holds (the model for new records, keep original, attachments, the cron and
"Fetch Now"); the credentials, sign-in and logs are those of a Graph outgoing server it links to, and the
reading itself is ``mail.graph.inbox`` (models/mail_graph_inbox.py).

``fetchmail.server`` lives in ``mail`` from 16.0 on, and in the separate ``fetchmail`` module on 14.0/15.0.
The model extension is therefore defined by :func:`define` for the module that carries it: this one from
16.0, the auto-installed bridge ``mail_graph_api_fetchmail`` (depends on fetchmail) on 14.0/15.0.
"""

from odoo import _, api, fields, models
from odoo.exceptions import UserError

from .. import compat

GRAPH = "graph"
# Its own sign-in: these fields of the incoming server are those of its reading-only connection (ir.mail_server).
OWN_CONNECTION_FIELDS = {
    "graph_own_auth_mode": "graph_auth_mode",
    "graph_own_client_id": "graph_client_id",
    "graph_own_client_secret": "graph_client_secret",
    "graph_own_certificate": "graph_certificate",
    "graph_own_tenant_id": "graph_tenant_id",
    "graph_own_mailbox": "graph_sender_email",
}


def define(module_name):
    """Define the fetchmail.server extension as part of ``module_name`` (Odoo files a model class under the
    module its ``_module`` names)."""

    class FetchmailServer(models.Model):
        _inherit = "fetchmail.server"
        _module = module_name

        server_type = fields.Selection(selection_add=[(GRAPH, "Microsoft Graph")], ondelete={GRAPH: "set default"})
        graph_mail_server_id = fields.Many2one(
            "ir.mail_server",
            "Microsoft Graph connection",
            domain=[("use_graph_api", "=", True)],
            help="A Graph outgoing mail server: its app registration and sign-in read this mailbox too.",
        )
        graph_credentials = fields.Selection(
            [("link", "Those of a Graph outgoing server"), ("own", "Its own app registration")],
            "Sign in with",
            default="link",
            help="Linked: one app registration and one sign-in serve sending and reading. Its own: this server "
            "signs in by itself (delegated or application), kept in a reading-only connection that never sends.",
        )
        graph_own_auth_mode = fields.Selection(
            string="Authentication", related="graph_mail_server_id.graph_auth_mode", readonly=False
        )
        graph_own_client_id = fields.Char(
            string="Client ID", related="graph_mail_server_id.graph_client_id", readonly=False
        )
        graph_own_client_secret = fields.Char(
            string="Client Secret",
            related="graph_mail_server_id.graph_client_secret",
            readonly=False,
            groups="base.group_system",
        )
        graph_own_certificate = fields.Text(
            string="Certificate (PEM)",
            related="graph_mail_server_id.graph_certificate",
            readonly=False,
            groups="base.group_system",
        )
        graph_own_tenant_id = fields.Char(
            string="Tenant ID", related="graph_mail_server_id.graph_tenant_id", readonly=False
        )
        graph_own_mailbox = fields.Char(
            string="Mailbox", related="graph_mail_server_id.graph_sender_email", readonly=False
        )
        graph_connection_state = fields.Selection(related="graph_mail_server_id.graph_connection_state")
        graph_mailbox = fields.Char("Mailbox", help="Empty: the connection's Sender Email.")
        graph_folder = fields.Char("Folder", default="Inbox")
        graph_processed_folder = fields.Char("Move processed mail to", default="Odoo Processed")
        graph_error_folder = fields.Char("Move failed mail to", default="Odoo Errors")
        graph_inbox_id = fields.Many2one("mail.graph.inbox", "Graph inbox", readonly=True, copy=False)

        @api.model_create_multi
        def create(self, vals_list):
            for vals in vals_list:
                self._graph_own_connection(vals)
            servers = super().create(vals_list)
            servers._graph_sync_inbox()
            return servers

        def write(self, vals):
            if vals.get("graph_credentials") == "own" and "graph_mail_server_id" not in vals:
                # Switched to its own sign-in: a connection of its own first, then the rest as usual.
                needing = self.filtered(lambda server: not server.graph_mail_server_id.graph_receive_only)
                for server in needing:
                    own = dict(vals, name=vals.get("name") or server.name)
                    self._graph_own_connection(own)
                    if "name" not in vals:
                        del own["name"]
                    server.write(own)
                if not self - needing:
                    return True
                return (self - needing).write(vals)
            result = super().write(vals)
            if any(key.startswith("graph_") or key in ("server_type", "active") for key in vals):
                self._graph_sync_inbox()
            return result

        @api.model
        def _graph_own_connection(self, vals):
            """An incoming server that signs in by itself: its credentials, tokens and logs live in a connection
            of its own (an archived, reading-only Graph server), so sign-in and logs are written once."""
            if vals.get("graph_credentials") != "own" or vals.get("graph_mail_server_id"):
                return
            values = {target: vals.pop(source) for source, target in OWN_CONNECTION_FIELDS.items() if source in vals}
            connection = (
                self.env["ir.mail_server"]
                .sudo()
                .create(
                    dict(
                        values,
                        name=_("%s (reading)", vals.get("name") or _("Incoming Mail Server")),
                        use_graph_api=True,
                        graph_receive_only=True,
                        graph_fetch_inbox=False,  # this incoming server reads the mailbox
                        graph_rate_limit=0,
                        graph_daily_recipient_limit=0,
                        active=False,  # never chosen to send
                    )
                )
            )
            vals["graph_mail_server_id"] = connection.id

        def action_graph_authenticate(self):
            self.ensure_one()
            return self.graph_mail_server_id.action_graph_authenticate()

        def action_graph_open_logs(self):
            self.ensure_one()
            return self.graph_mail_server_id.action_open_graph_logs()

        def _graph_sync_inbox(self):
            for server in self.sudo():
                wanted = server.server_type == GRAPH and server.graph_mail_server_id
                values = {
                    "mail_server_id": server.graph_mail_server_id.id,
                    "mailbox": server.graph_mailbox or False,
                    "folder": server.graph_folder or "Inbox",
                    "processed_folder": server.graph_processed_folder or "Odoo Processed",
                    "error_folder": server.graph_error_folder or "Odoo Errors",
                    "active": bool(server.active),
                }
                inbox = server.graph_inbox_id
                if wanted and not inbox:
                    inbox = inbox.create(dict(values, origin="fetchmail"))
                    super(FetchmailServer, server).write({"graph_inbox_id": inbox.id})
                elif wanted:
                    changed = {
                        k: v
                        for k, v in values.items()
                        if inbox[k] != v and not (k == "mail_server_id" and inbox[k].id == v)
                    }
                    if changed:
                        inbox.write(changed)
                elif inbox:
                    inbox.active = False

        def _graph_split(self):
            graph = self.filtered(lambda server: server.server_type == GRAPH)
            return graph, self - graph

        def _graph_fetch(self):
            for server in self:
                if not server.graph_inbox_id:
                    raise UserError(_("Choose the Microsoft Graph connection of “%s” first.", server.name))
                server.graph_inbox_id._fetch(fetchmail_server=server)
                server.write({"date": fields.Datetime.now()})

        def button_confirm_login(self):
            graph, others = self._graph_split()
            for server in graph:
                if not server.graph_inbox_id:
                    raise UserError(_("Choose the Microsoft Graph connection of “%s” first.", server.name))
                server.graph_inbox_id.action_test()  # raises with what to grant
                # From now on: the mailbox's history is never imported.
                server.graph_inbox_id.write({"sync_since": fields.Datetime.now(), "delta_link": False})
                server.write({"state": "done"})
            return super(FetchmailServer, others).button_confirm_login() if others else True

        if compat.SERIES >= 19:
            # 19.0: the cron and "Fetch Now" both go through _fetch_mail (one server connection per call).
            def _fetch_mail(self, *args, **kwargs):
                graph, others = self._graph_split()
                graph._graph_fetch()
                return super(FetchmailServer, others)._fetch_mail(*args, **kwargs) if others else None

        else:

            def fetch_mail(self, *args, **kwargs):
                graph, others = self._graph_split()
                graph._graph_fetch()
                return super(FetchmailServer, others).fetch_mail(*args, **kwargs) if others else True

        if compat.SERIES <= 15:
            # 14.0/15.0: the cron and its toggle only know POP and IMAP servers.
            @api.model
            def _fetch_mails(self):
                result = super()._fetch_mails()
                self.search([("state", "=", "done"), ("server_type", "=", GRAPH)]).fetch_mail()
                return result

            @api.model
            def _update_cron(self):
                super()._update_cron()
                if self.env.context.get("fetchmail_cron_running"):
                    return
                cron = self.env.ref("fetchmail.ir_cron_mail_gateway_action", raise_if_not_found=False)
                if (
                    cron
                    and not cron.active
                    and self.search_count([("state", "=", "done"), ("server_type", "=", GRAPH)])
                ):
                    cron.active = True

    return FetchmailServer
