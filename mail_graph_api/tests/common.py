# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl-3.0).
"""Shared set-up of the Odoo tier: a real Odoo, a real PostgreSQL and the fake Microsoft on 127.0.0.1."""

import socketserver
import threading
from unittest.mock import patch
from urllib.parse import parse_qs, urlparse

import requests

from odoo.tests import common
from odoo.tools import config

from fake_microsoft import DEFAULTS, FakeMicrosoft
from graph_mail import DelegatedAuthFlow
from graph_mail.auth import clear_caches

from .. import compat, tokens

SENDER = DEFAULTS["signed_in_user"]


# 17.0+ wraps requests in tests and keeps the original send; 14.0-16.0 leave requests alone.
_super_send = getattr(common, "_super_send", requests.Session.send)
BlockedRequest = getattr(common, "BlockedRequest", requests.exceptions.ConnectionError)


def _loopback_only_send(session, request, **kwargs):
    if urlparse(request.url).hostname not in ("127.0.0.1", "localhost"):
        raise BlockedRequest(f"External requests verboten (was {request.method} {request.url})")
    return _super_send(session, request, **kwargs)


# One transaction per test class: 15.0+ TransactionCase and HttpCase; 14.0 SavepointCase and HttpSavepointCase
# (its TransactionCase opens a cursor per test).
TransactionCase = common.TransactionCase if compat.SERIES >= 15 else common.SavepointCase
HttpCase = common.HttpCase if compat.SERIES >= 15 else common.HttpSavepointCase


class GraphCaseMixin:
    """Starts one fake Microsoft per test class and configures a Graph mail server against it."""

    @classmethod
    def odoo_base_url(cls):
        """Where the test's Odoo serves HTTP (14.0 has no HttpCase.base_url())."""
        if hasattr(cls, "base_url"):
            return cls.base_url()
        return f"http://{common.HOST}:{config['http_port']}"

    def assertFailureType(self, mail, failure_type):
        """mail.mail.failure_type; 14.0 has no such field (its notifications carry one)."""
        if compat.MAIL_HAS_FAILURE_TYPE:
            self.assertEqual(mail.failure_type, failure_type)

    @classmethod
    def setUpGraph(cls):
        # Odoo's test harness wraps requests to block the internet but compares timeouts as numbers; the core
        # sends (connect, read) tuples. Same rule (loopback only), tuple-aware.
        patcher = patch.object(requests.sessions.Session, "send", _loopback_only_send)
        patcher.start()
        cls.addClassCleanup(patcher.stop)
        # registry.cursor() must see the test transaction: our logs and token renewals use their own cursor.
        compat.enter_registry_test_mode(cls)
        cls.fake = FakeMicrosoft(port=0)
        cls.fake.start()
        cls.addClassCleanup(cls.fake.stop)
        cls.env = cls.env(context=dict(cls.env.context, mail_graph_api_send_in_tests=True))
        cls.env["ir.config_parameter"].sudo().set_param("mail.catchall.domain", "contoso.onmicrosoft.com")
        cls.env["ir.config_parameter"].sudo().set_param("mail.default.from", "notifications")
        cls.server = cls.env["ir.mail_server"].create(cls.graph_server_values())

    @classmethod
    def graph_server_values(cls, **overrides):
        values = {
            "name": "Microsoft Graph (fake)",
            "use_graph_api": True,
            "graph_client_id": DEFAULTS["client_id"],
            "graph_client_secret": DEFAULTS["client_secret"],
            "graph_tenant_id": DEFAULTS["tenant_id"],
            "graph_sender_email": SENDER,
            "graph_cloud": "custom",
            "graph_authority_url": cls.fake.url,
            "graph_api_url": cls.fake.graph_url,
            "graph_connect_timeout": 5,
            "graph_read_timeout": 60,  # a 40 MB draft send on a loaded machine takes seconds
            "graph_send_deadline": 120,
        }
        values.update(overrides)
        return values

    def setUp(self):
        super().setUp()
        # Each test rolls the database back and resets the fake: tokens cached in this process are stale.
        tokens._memory.clear()
        clear_caches()
        self.fake.reset()
        self._calls_mark = self._messages_mark = 0
        self.fake.configure(redirect_uris=[self.server._graph_redirect_uri()])

    def connect_server(self, server=None):
        """Walk the authorization code flow against the fake, as the callback would, and store the tokens."""
        server = server or self.server
        action = server.action_graph_authenticate()
        answer = requests.get(action["url"], allow_redirects=False, timeout=10)
        assert answer.status_code == 302, answer.text
        query = {k: v[0] for k, v in parse_qs(urlparse(answer.headers["Location"]).query).items()}
        flow = __import__("json").loads(server.graph_oauth_flow)
        tokens = DelegatedAuthFlow(server._graph_credentials(), server._graph_redirect_uri()).finish(flow, query)
        server.graph_oauth_flow = False
        server._graph_store_tokens(tokens)
        return tokens

    def mark(self):
        """Count only what happens from now on (the fake keeps its tokens, unlike reset())."""
        self._calls_mark = len(self.fake.calls())
        self._messages_mark = len(self.fake.messages())

    def sent(self):
        return self.fake.messages()[getattr(self, "_messages_mark", 0) :]

    def graph_calls(self, route=None):
        calls = self.fake.calls()[getattr(self, "_calls_mark", 0) :]
        return [call for call in calls if route is None or call["route"] == route]

    def smtp_fallback_sink(self):
        """Turn the SMTP fallback on, towards a local sink that keeps what it receives (stopped after the test)."""
        sink = SmtpSink().start()
        self.addCleanup(sink.stop)
        values = {"graph_smtp_fallback": True, "smtp_host": "127.0.0.1", "smtp_port": sink.port,
                  "smtp_encryption": "none"}  # fmt: skip
        if compat.SERIES >= 15:
            values["smtp_authentication"] = "login"  # 14.0 has no smtp_authentication
        self.server.write(values)
        return sink


class GraphTransactionCase(GraphCaseMixin, TransactionCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.setUpGraph()


class SmtpSink:
    """A minimal SMTP server on 127.0.0.1 for the fallback tests: accepts everything, keeps what it got."""

    def __init__(self):
        self.messages = []
        sink = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                envelope = {"from": None, "to": [], "data": b""}
                self.wfile.write(b"220 sink ESMTP\r\n")
                while True:
                    line = self.rfile.readline()
                    if not line:
                        return
                    verb = line[:4].upper()
                    if verb in (b"EHLO", b"HELO"):
                        self.wfile.write(b"250-sink\r\n250 SIZE 52428800\r\n")
                    elif verb == b"MAIL":
                        envelope["from"] = line.split(b":", 1)[1].strip().decode()
                        self.wfile.write(b"250 ok\r\n")
                    elif verb == b"RCPT":
                        envelope["to"].append(line.split(b":", 1)[1].strip().decode().strip("<>"))
                        self.wfile.write(b"250 ok\r\n")
                    elif verb == b"DATA":
                        self.wfile.write(b"354 go\r\n")
                        chunks = []
                        for data_line in iter(self.rfile.readline, b".\r\n"):
                            chunks.append(data_line)
                        envelope["data"] = b"".join(chunks)
                        sink.messages.append(dict(envelope))
                        envelope = {"from": None, "to": [], "data": b""}
                        self.wfile.write(b"250 queued\r\n")
                    elif verb == b"QUIT":
                        self.wfile.write(b"221 bye\r\n")
                        return
                    else:
                        self.wfile.write(b"250 ok\r\n")

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
