# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl-3.0).
from odoo.exceptions import UserError, ValidationError
from odoo.tests import Form, tagged

from .. import compat
from .common import SENDER, GraphTransactionCase


@tagged("post_install", "-at_install", "mail_graph_api")
class TestGraphConfig(GraphTransactionCase):
    def test_from_filter_defaults_to_sender(self):
        if not compat.has_from_filter():
            self.skipTest("14.0 has no from_filter: Odoo sends through the first server by sequence")
        self.assertEqual(self.server.from_filter, SENDER)
        server = self.env["ir.mail_server"].create(self.graph_server_values(name="other", from_filter="contoso.com"))
        self.assertEqual(server.from_filter, "contoso.com", "an explicit filter is kept")

    def test_validation_messages(self):
        cases = {
            "graph_tenant_id": ("not a tenant!", "Tenant ID"),
            "graph_client_id": ("my-app", "Client ID"),
            "graph_sender_email": ("sales at contoso", "Sender Email"),
        }
        for field, (value, label) in cases.items():
            with self.subTest(field=field), self.assertRaises(ValidationError) as caught:
                self.env["ir.mail_server"].create(self.graph_server_values(name=field, **{field: value}))
            self.assertIn(label, str(caught.exception))

    def test_domain_tenant_accepted(self):
        server = self.env["ir.mail_server"].create(self.graph_server_values(graph_tenant_id="contoso.onmicrosoft.com"))
        self.assertTrue(server)

    def test_form_hides_smtp_fields(self):
        with Form(self.env["ir.mail_server"]) as form:
            form.name = "Graph via form"
            form.use_graph_api = True
            form.graph_client_id = self.server.graph_client_id
            form.graph_client_secret = "x"
            form.graph_tenant_id = self.server.graph_tenant_id
            form.graph_sender_email = "noreply@contoso.onmicrosoft.com"
            if compat.has_from_filter():
                self.assertEqual(form.from_filter, "noreply@contoso.onmicrosoft.com")
        server = form.save()
        self.assertFalse(server.smtp_host, "no SMTP host needed without fallback")

    def test_max_email_size(self):
        self.assertEqual(self.server._get_max_email_size(), 35.0)
        self.server.graph_max_email_size = 150
        self.assertEqual(self.server._get_max_email_size(), 150.0)
        with self.assertRaises(ValidationError):
            self.server.graph_max_email_size = 200

    def test_changing_tenant_forgets_tokens(self):
        self.connect_server()
        self.server.graph_tenant_id = "contoso.onmicrosoft.com"
        self.assertFalse(self.server.sudo().graph_refresh_token)
        self.assertEqual(self.server.graph_connection_state, "not_connected")

    def test_test_connection_success_and_wrong_secret(self):
        self.connect_server()
        action = self.server.test_smtp_connection()
        self.assertEqual(action["params"]["type"], "success")
        self.assertIn(SENDER, action["params"]["message"])
        app = self.env["ir.mail_server"].create(
            self.graph_server_values(name="app", graph_auth_mode="application_secret", graph_client_secret="bad")
        )
        with self.assertRaises(UserError) as caught:
            app.test_smtp_connection()
        self.assertIn("AADSTS7000215", str(caught.exception))
        # What the failed test left on the server (written through its own cursor, which assertRaises' savepoint
        # cannot show here).
        app.write({"graph_connection_state": "error", "graph_last_error": str(caught.exception)})
        app.graph_client_secret = self.graph_server_values()["graph_client_secret"]
        app.test_smtp_connection()
        self.assertEqual(app.graph_connection_state, "connected", "a passing test clears the earlier failure")
        self.assertFalse(app.graph_last_error)

    def test_application_mode_sends(self):
        app = self.env["ir.mail_server"].create(
            self.graph_server_values(name="app", graph_auth_mode="application_secret",
                                     graph_sender_email="noreply@contoso.onmicrosoft.com")
        )  # fmt: skip
        message = compat.build_email(app, "noreply@contoso.onmicrosoft.com", ["x@fabrikam.example"], "app mode", "body")
        app.send_email(message, mail_server_id=app.id)
        (received,) = self.sent()
        self.assertEqual(received["mailbox"], "noreply@contoso.onmicrosoft.com")
        self.assertEqual([c["grant_type"] for c in self.graph_calls("token")], ["client_credentials"])

    def test_the_server_form_has_each_graph_element_once_on_this_series(self):
        """One view source serves every series (legacy_views.py): what is marked for older series only must be
        gone here, and nothing may appear twice."""
        from lxml import etree

        Server = self.env["ir.mail_server"]
        view = (
            Server.get_view(view_type="form")
            if hasattr(Server, "get_view")
            else Server.fields_view_get(view_type="form")
        )
        arch = view["arch"]
        self.assertNotIn("mail_graph_api_until", arch)
        self.assertNotIn("mail_graph_api_since", arch)
        form = etree.fromstring(arch.encode() if isinstance(arch, str) else arch)
        for xpath in (
            "//field[@name='use_graph_api']",
            "//field[@name='graph_client_id']",
            "//header//button[@name='test_smtp_connection']",  # 14.0/15.0: Odoo's own stays in its SMTP block
            "//button[@name='action_graph_authenticate']",
            "//notebook",
            "//header",
        ):
            self.assertEqual(len(form.xpath(xpath)), 1, xpath)

    def test_the_authentication_note_follows_the_graph_switch_on_a_new_server(self):
        if "smtp_authentication_info" not in self.env["ir.mail_server"]._fields:
            self.skipTest("Odoo's authentication note exists from 16.0 on")
        with Form(self.env["ir.mail_server"]) as form:
            form.name = "New Graph server"
            form.use_graph_api = True
            self.assertIn("Microsoft Graph (HTTPS)", form.smtp_authentication_info)
            form.use_graph_api = False
            self.assertNotIn("Microsoft Graph", form.smtp_authentication_info or "")
            form.smtp_host = "smtp.example.com"
