# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl-3.0).
import base64
import html
import json
from urllib.parse import parse_qs, urlencode, urlparse

import requests

from odoo.tests import new_test_user, tagged
from odoo.tools import mute_logger

from .. import compat
from ..oauth_state import make_state
from .common import GraphCaseMixin, HttpCase

CALLBACK = "/mail_graph_api/auth/callback"


@tagged("post_install", "-at_install", "mail_graph_api")
class TestGraphOAuth(GraphCaseMixin, HttpCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.env["ir.config_parameter"].sudo().set_param("web.base.url", cls.odoo_base_url())
        cls.setUpGraph()

    def _authorize(self):
        """Click the button as the admin user, let the fake consent, return the query Microsoft sent back."""
        action = self.server.with_user(self.env.ref("base.user_admin")).action_graph_authenticate()
        self.assertEqual(action["type"], "ir.actions.act_url")
        answer = requests.get(action["url"], allow_redirects=False, timeout=10)
        self.assertEqual(answer.status_code, 302, answer.text)
        location = urlparse(answer.headers["Location"])
        self.assertEqual(location.path, CALLBACK)
        return {k: v[0] for k, v in parse_qs(location.query).items()}

    def _callback(self, query):
        return self.url_open(f"{CALLBACK}?{urlencode(query)}", allow_redirects=False)

    def test_authorize_url_carries_pkce_and_signed_state(self):
        action = self.server.action_graph_authenticate()
        query = parse_qs(urlparse(action["url"]).query)
        self.assertEqual(query["code_challenge_method"], ["S256"])
        self.assertTrue(query["code_challenge"][0])
        self.assertIn("Mail.Send", query["scope"][0])
        self.assertEqual(query["redirect_uri"], [self.server._graph_redirect_uri()])
        self.assertIn(".", query["state"][0])

    def test_happy_path_stores_tokens(self):
        self.authenticate("admin", "admin")
        query = self._authorize()
        page = self._callback(query)
        self.assertEqual(page.status_code, 200)
        self.assertIn("Connected to Microsoft", page.text)
        compat.invalidate(self.server)
        server = self.server.sudo()
        self.assertEqual(server.graph_connection_state, "connected")
        self.assertEqual(server.graph_account, self.fake.config()["signed_in_user"])
        self.assertTrue(server.graph_refresh_token)
        self.assertTrue(server.graph_access_token_expiry)
        self.assertFalse(server.graph_oauth_flow, "the pending flow is single use")
        self.assertIn(html.escape(compat.form_url(server)), page.text, "the link back goes to this server's form")

    @mute_logger("odoo.addons.mail_graph_api.controllers.main")
    def test_replayed_callback_refused(self):
        self.authenticate("admin", "admin")
        query = self._authorize()
        self._callback(query)
        compat.invalidate(self.server)
        refresh_token = self.server.sudo().graph_refresh_token
        page = self._callback(query)
        self.assertIn("already used", page.text)
        compat.invalidate(self.server)
        self.assertEqual(self.server.sudo().graph_refresh_token, refresh_token)

    @mute_logger("odoo.addons.mail_graph_api.controllers.main")
    def test_tampered_state_refused(self):
        self.authenticate("admin", "admin")
        query = self._authorize()
        body, signature = query["state"].split(".", 1)
        payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        payload["sid"] = payload["sid"] + 1
        forged = base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")
        page = self._callback(dict(query, state=f"{forged}.{signature}"))
        self.assertIn("altered", page.text)
        self._assert_nothing_stored()

    @mute_logger("odoo.addons.mail_graph_api.controllers.main")
    def test_expired_state_refused(self):
        self.authenticate("admin", "admin")
        query = self._authorize()
        admin_env = self.env(user=self.env.ref("base.user_admin"))
        old_state = make_state(admin_env, self.server.id, now=1_000_000)
        page = self._callback(dict(query, state=old_state))
        self.assertIn("expired", page.text)
        self._assert_nothing_stored()

    @mute_logger("odoo.addons.mail_graph_api.controllers.main")
    def test_other_users_state_refused(self):
        other_admin = new_test_user(
            self.env(context={}), login="mail_graph_api_admin2", groups="base.group_system", password="admin2pass!"
        )
        self.authenticate("mail_graph_api_admin2", "admin2pass!")
        query = self._authorize()  # state signed for base.user_admin, callback by admin2
        self.assertNotEqual(other_admin, self.env.ref("base.user_admin"))
        page = self._callback(query)
        self.assertIn("another user", page.text)
        self._assert_nothing_stored()

    @mute_logger("odoo.addons.mail_graph_api.controllers.main", "odoo.http")
    def test_non_admin_refused(self):
        new_test_user(
            self.env(context={}), login="mail_graph_api_clerk", groups="base.group_user", password="clerkpass!"
        )
        self.authenticate("mail_graph_api_clerk", "clerkpass!")
        query = self._authorize()
        page = self._callback(query)
        self.assertEqual(page.status_code, 403)
        self._assert_nothing_stored()

    @mute_logger("odoo.addons.mail_graph_api.controllers.main")
    def test_consent_denied_shows_hint(self):
        self.authenticate("admin", "admin")
        self.fake.inject("authorize", action="authorize_error", error="consent_required", aadsts=65001)
        query = self._authorize()
        self.assertEqual(query["error"], "consent_required")
        page = self._callback(query)
        self.assertIn("AADSTS65001", page.text)
        self.assertIn("consent", page.text.lower())
        self._assert_nothing_stored()

    @mute_logger("odoo.addons.mail_graph_api.controllers.main")
    def test_wrong_secret_shows_hint(self):
        self.authenticate("admin", "admin")
        query = self._authorize()
        self.server.sudo().graph_client_secret = "0d1c2b3a-4f5e-4d6c-8b7a-9e8f7d6c5b4a"  # the secret's ID
        page = self._callback(query)
        self.assertIn("AADSTS7000215", page.text)
        self._assert_nothing_stored()

    def test_callback_has_no_open_redirect(self):
        self.authenticate("admin", "admin")
        query = self._authorize()
        page = self._callback(dict(query, redirect="https://evil.example/", next="https://evil.example/"))
        self.assertNotIn("evil.example", page.text)

    def _assert_nothing_stored(self):
        compat.invalidate(self.server)
        server = self.server.sudo()
        self.assertFalse(server.graph_refresh_token)
        self.assertNotEqual(server.graph_connection_state, "connected")
