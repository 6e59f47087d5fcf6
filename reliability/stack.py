"""The stack every section runs against: the fake Microsoft in this process, a fresh Odoo database with the
addon, a real Odoo HTTP server (its log is what the security section greps), an admin JSON-RPC client and a
Graph mail server connected through the real OAuth callback.

Reuses tools/demo.py (the RPC client, waiting for the port) and tools/odoo_harness.py (database, code run
inside Odoo, workers).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional
from urllib.parse import parse_qs, unquote, urlparse

import requests

from fake_microsoft import DEFAULTS, FakeMicrosoft
from fake_microsoft.state import Fault
from tools.demo import Odoo, wait_port
from tools.odoo_harness import OdooInstance, graph_server_values
from tools.odoo_tier import drop_database

SENDER = DEFAULTS["signed_in_user"]
CALLBACK_PATH = "/mail_graph_api/auth/callback"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def odoo_as(url: str, db: str, login: str, password: str) -> Odoo:
    """A tools.demo.Odoo client logged in as another user (tools.demo.Odoo.login knows only admin)."""
    client = Odoo(url, db)
    answer = client.http.post(
        f"{url}/web/session/authenticate",
        json={"jsonrpc": "2.0", "params": {"db": db, "login": login, "password": password}},
        timeout=60,
    )
    answer.raise_for_status()
    if answer.json().get("error"):
        raise RuntimeError(f"login as {login} failed: {answer.json()['error']}")
    return client


MAILBOX_PATH = re.compile(r"^/v1\.0/(?:me|users/(?P<user>[^/]+))/(?:sendMail|messages|mailFolders)", re.IGNORECASE)


class FakeSpy:
    """Watches the running fake without changing its code.

    - It wraps the ``take_fault`` method of the fake's State *instance*, which the server calls for every
      routed request right after reading the request body. That tells when a body has reached Microsoft (to
      kill a worker mid-send, or to wait until a delayed request was processed), and lets a scenario act on the
      Nth call of a route (expire tokens mid-batch, expire an upload session mid-upload).
    - It gives the running server instance a request handler class of its own (a subclass of the fake's) that
      counts the Graph requests in flight per mailbox (``/me/...`` or ``/users/{id}/...``: sendMail, drafts,
      attachments, Sent Items), from the parsed request line until the answer is written: the peak is what
      Microsoft's limit of 4 concurrent requests per mailbox is checked against."""

    def __init__(self, fake: FakeMicrosoft) -> None:
        self.fake = fake
        self.arrived: Counter = Counter()
        self.lock = threading.Lock()
        self.events: Dict[str, threading.Event] = {}
        self.hooks: Dict[str, Callable[[int], Optional[Fault]]] = {}
        self.tempauths: set = set()  # upload URL tokens (the fake forgets finished sessions)
        self._original = fake.state.take_fault
        fake.state.take_fault = self._take_fault  # type: ignore[method-assign]
        self.in_flight: Counter = Counter()
        self.peak: Counter = Counter()  # highest in-flight count per mailbox since reset_peaks()
        self._count_in_flight(fake)

    def _count_in_flight(self, fake: FakeMicrosoft) -> None:
        server = fake._server  # the running ThreadingHTTPServer; it builds one handler per connection
        if server is None:
            raise RuntimeError("start the fake before spying on it")
        spy, base = self, server.RequestHandlerClass

        class Counting(base):  # type: ignore[valid-type, misc]
            def _handle(self) -> None:
                found = MAILBOX_PATH.match(unquote(self.path.split("?", 1)[0]))
                if found is None:
                    return super()._handle()
                mailbox = (found.group("user") or "me").lower()
                with spy.lock:
                    spy.in_flight[mailbox] += 1
                    spy.peak[mailbox] = max(spy.peak[mailbox], spy.in_flight[mailbox])
                try:
                    return super()._handle()
                finally:
                    with spy.lock:
                        spy.in_flight[mailbox] -= 1

        server.RequestHandlerClass = Counting

    def reset_peaks(self) -> None:
        with self.lock:
            self.peak = Counter(self.in_flight)

    def peaks(self) -> Dict[str, int]:
        """The highest number of Graph requests in flight at once, per mailbox, since reset_peaks()."""
        with self.lock:
            return dict(self.peak)

    def _take_fault(self, route: str) -> Optional[Fault]:
        if route == "upload":
            with self.fake.state.lock:
                self.tempauths.update(upload.tempauth for upload in self.fake.state.uploads.values())
        with self.lock:
            self.arrived[route] += 1
            nth = self.arrived[route]
            hook = self.hooks.get(route)
            event = self.events.get(route)
        if event is not None:
            event.set()
        if hook is not None:
            injected = hook(nth)
            if injected is not None:
                return injected
        return self._original(route)

    def on(self, route: str, hook: Callable[[int], Optional[Fault]]) -> None:
        """Call ``hook(n)`` at the n-th arrival of ``route`` counted from now; a returned Fault is applied."""
        with self.lock:
            base = self.arrived[route]
            self.hooks[route] = lambda nth: hook(nth - base)

    def event(self, route: str) -> threading.Event:
        with self.lock:
            event = self.events[route] = threading.Event()
            return event

    def clear(self) -> None:
        with self.lock:
            self.hooks.clear()
            self.events.clear()

    def settle(self, limit: float = 60.0) -> None:
        """Wait until every request that reached the fake has been processed and logged (a ``delay`` fault
        keeps processing after the client gave up). Bounded, never asserted on."""
        stop = time.monotonic() + limit
        while time.monotonic() < stop:
            logged = Counter(call["route"] for call in self.fake.calls())
            with self.lock:
                pending = any(logged[route] < count for route, count in self.arrived.items())
            if not pending:
                return
            time.sleep(0.05)


class Stack:
    def __init__(self, series: str = "18.0", db: Optional[str] = None, logdir: Optional[Path] = None) -> None:
        self.series = series
        self.db = db or f"mga_rel_{os.getpid()}"
        self.instance = OdooInstance(series, self.db, logdir=logdir)
        self.logdir = self.instance.logdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.fake = FakeMicrosoft(port=0).start()
        self.spy = FakeSpy(self.fake)
        self.server_proc: Optional[subprocess.Popen] = None
        self.server_log = self.logdir / f"{self.db}-server.log"
        self.admin: Optional[Odoo] = None
        self.server_id = 0
        self.pool_member_id = 0  # the faults section's mailbox pool row
        self.secrets: List[str] = [DEFAULTS["client_secret"]]  # every secret value ever handed to Odoo
        self.extra_dbs: List[str] = []

    # -- life cycle -------------------------------------------------------------------------------------

    def create_database(self) -> None:
        self.instance.create_database()

    def copy_database(self, suffix: str) -> OdooInstance:
        """A copy of the database (same database.secret, other name): what a staging clone looks like."""
        name = f"{self.db}_{suffix}"
        drop_database(name)
        subprocess.check_call(["createdb", "-h", "127.0.0.1", "-U", "root", "-T", self.db, name])
        self.extra_dbs.append(name)
        return OdooInstance(self.series, name, logdir=self.logdir)

    def start_server(self) -> None:
        cmd = self.instance.command(
            f"--http-port={self.port}",
            "--max-cron-threads=0",
            "--workers=0",
            # What an administrator turns on to investigate: our own packages at DEBUG.
            "--log-handler=odoo.addons.mail_graph_api:DEBUG",
            "--log-handler=graph_mail:DEBUG",
        )
        with self.server_log.open("w") as out:
            self.server_proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=self.instance.env)
        wait_port(self.url, self.server_proc)
        self.admin = Odoo(self.url, self.db)
        self.admin.login()

    def configure(self) -> None:
        """Base URL, catchall and a Graph mail server against the fake, connected through the callback."""
        odoo = self.admin
        assert odoo is not None
        odoo.call("ir.config_parameter", "set_param", "web.base.url", self.url)
        odoo.call("ir.config_parameter", "set_param", "web.base.url.freeze", "True")
        odoo.call("ir.config_parameter", "set_param", "mail.catchall.domain", "contoso.onmicrosoft.com")
        odoo.call("res.users", "write", [2], {"email": "it@contoso.onmicrosoft.com"})
        self.fake.configure(redirect_uris=[self.url + CALLBACK_PATH], max_message_size=150 * 1024 * 1024)
        self.server_id = odoo.call("ir.mail_server", "create", self.server_values())
        page = self.authenticate()
        if page.status_code != 200 or self.read_server()["graph_connection_state"] != "connected":
            raise RuntimeError(f"OAuth walk failed: HTTP {page.status_code}; see {self.server_log}")

    def server_values(self) -> Dict[str, Any]:
        return graph_server_values(
            self.fake.url,
            self.fake.graph_url,
            name="Microsoft 365 (fake, reliability)",
            graph_connect_timeout=5,
            graph_read_timeout=3,
            graph_send_deadline=30,
            # The suite sends hundreds of mails a minute through one mailbox to test other things; the sending
            # limits have their own tests (mail_graph_api/tests/test_unattended.py).
            graph_rate_limit=0,
            graph_daily_recipient_limit=0,
        )

    def stop_server(self) -> None:
        if self.server_proc is not None and self.server_proc.poll() is None:
            self.server_proc.terminate()
            try:
                self.server_proc.wait(30)
            except subprocess.TimeoutExpired:
                self.server_proc.kill()
                self.server_proc.wait(10)

    def stop(self, keep: bool = False) -> None:
        self.stop_server()
        self.fake.stop()
        if not keep:
            for name in [*self.extra_dbs, self.db]:
                drop_database(name)

    # -- OAuth ----------------------------------------------------------------------------------------

    def start_auth(self, client: Optional[Odoo] = None) -> str:
        """Click "Authenticate with Microsoft": the authorize URL the browser is sent to."""
        client = client or self.admin
        assert client is not None
        return client.button("ir.mail_server", "action_graph_authenticate", self.server_id)["url"]

    def consent(self, authorize_url: str) -> str:
        """The fake signs the mailbox in and consents: the callback URL Microsoft redirects to."""
        answer = requests.get(authorize_url, allow_redirects=False, timeout=30)
        if answer.status_code != 302:
            raise RuntimeError(f"authorize answered {answer.status_code}: {answer.text[:300]}")
        return answer.headers["Location"]

    def authenticate(self, client: Optional[Odoo] = None) -> requests.Response:
        """The whole walk, as an administrator's browser does it (tools/demo.py does the same steps)."""
        client = client or self.admin
        assert client is not None
        return client.http.get(self.consent(self.start_auth(client)), timeout=60)

    @staticmethod
    def state_of(url: str) -> str:
        return parse_qs(urlparse(url).query)["state"][0]

    # -- helpers --------------------------------------------------------------------------------------

    def read_server(self, *fields: str) -> Dict[str, Any]:
        assert self.admin is not None
        names = list(fields) or ["graph_connection_state", "graph_token_version", "graph_last_error"]
        return self.admin.call("ir.mail_server", "read", [self.server_id], names)[0]

    def write_server(self, values: Dict[str, Any]) -> None:
        assert self.admin is not None
        self.admin.call("ir.mail_server", "write", [self.server_id], values)

    def sql(self, statement: str) -> None:
        """One statement on the database, outside Odoo (what a concurrent process or an operator does)."""
        subprocess.check_call(
            ["psql", "-h", "127.0.0.1", "-U", "root", "-d", self.db, "-v", "ON_ERROR_STOP=1", "-qc", statement],
            stdout=subprocess.DEVNULL,
        )

    def issued_values(self) -> Dict[str, List[str]]:
        """Every token, code and secret the fake issued or Odoo was given, by kind: none may reach a log."""
        state = self.fake.state
        with state.lock:
            kinds = {
                "access token": list(state.access_tokens),
                "refresh token": list(state.refresh_tokens),
                "authorization code": list(state.codes),
                "upload URL tempauth": [upload.tempauth for upload in state.uploads.values()],
            }
        kinds["upload URL tempauth"] += list(self.spy.tempauths)
        kinds["client secret"] = list(self.secrets)
        return {kind: sorted({v for v in values if v and len(v) >= 8}) for kind, values in kinds.items()}
