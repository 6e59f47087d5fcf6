# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl-3.0).
from odoo.exceptions import AccessError
from odoo.tests import new_test_user, tagged

from .common import GraphTransactionCase

SECRET_FIELDS = ("graph_client_secret", "graph_refresh_token", "graph_access_token", "graph_certificate",
                 "graph_oauth_flow")  # fmt: skip


@tagged("post_install", "-at_install", "mail_graph_api")
class TestGraphSecurity(GraphTransactionCase):
    def test_secret_fields_admin_only(self):
        fields = self.env["ir.mail_server"]._fields
        for name in SECRET_FIELDS:
            self.assertEqual(fields[name].groups, "base.group_system", name)
            self.assertFalse(fields[name].copy, name)

    def test_internal_user_cannot_read_secrets_or_logs(self):
        self.connect_server()
        self.env["mail.mail"].sudo().create(
            {"email_to": "a@fabrikam.example", "subject": "s", "mail_server_id": self.server.id}
        ).send()
        user = new_test_user(self.env(context={}), login="mail_graph_api_clerk", groups="base.group_user")
        with self.assertRaises(AccessError):
            self.server.with_user(user).read(["graph_refresh_token"])
        with self.assertRaises(AccessError):
            self.env["mail.graph.api.log"].with_user(user).search([]).read(["message_id"])
        with self.assertRaises(AccessError):
            self.env["mail.graph.api.log"].with_user(user).search_count([])

    def test_portal_user_refused(self):
        user = new_test_user(self.env(context={}), login="mail_graph_api_portal", groups="base.group_portal")
        with self.assertRaises(AccessError):
            self.env["mail.graph.api.log"].with_user(user).search([])
        with self.assertRaises(AccessError):
            self.server.with_user(user).read(["graph_client_secret"])

    def test_admin_cannot_copy_tokens(self):
        self.connect_server()
        copy = self.server.copy()
        self.assertFalse(copy.sudo().graph_refresh_token)
        self.assertFalse(copy.sudo().graph_client_secret)

    def test_logs_are_read_only(self):
        self.connect_server()
        admin = self.env.ref("base.user_admin")
        with self.assertRaises(AccessError):
            self.env["mail.graph.api.log"].with_user(admin).create({"operation": "x", "outcome": "ok"})
