# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl-3.0).
from odoo.tests import tagged

from .. import compat
from .common import GraphCaseMixin, HttpCase


@tagged("post_install", "-at_install", "mail_graph_api")
class TestGraphTour(GraphCaseMixin, HttpCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.env["ir.config_parameter"].sudo().set_param("web.base.url", cls.odoo_base_url())
        cls.setUpGraph()
        # The fake listens on a random port: new mail servers default to its endpoints, as an administrator
        # of a national cloud would set them by hand.
        defaults = cls.env["ir.default"].sudo()
        defaults.set("ir.mail_server", "graph_cloud", "custom")
        defaults.set("ir.mail_server", "graph_authority_url", cls.fake.url)
        defaults.set("ir.mail_server", "graph_api_url", cls.fake.graph_url)

    def test_configure_authenticate_and_test_connection(self):
        self.start_tour(compat.new_mail_server_url(), "mail_graph_api_tour", login="admin", timeout=90)
        compat.invalidate_all(self.env)
        server = self.env["ir.mail_server"].sudo().search([("id", "!=", self.server.id)])
        self.assertEqual(len(server), 1, server.read(["name", "use_graph_api"]))
        self.assertEqual(server.name, "Microsoft Graph tour")
        self.assertTrue(server.use_graph_api)
        self.assertEqual(server.graph_cloud, "custom")
        self.assertEqual(server.graph_connection_state, "connected")
        self.assertEqual(server.graph_account, "admin@contoso.onmicrosoft.com")
