"""The demo: real Odoo + PostgreSQL, the fake Microsoft, mail_graph_api configured and sending.

Run it with ``./dev demo`` (``--series 14.0`` to ``19.0``, ``--no-serve`` to stop at the end). It finds Odoo like
the tests do (see tools/odoo_tier.py): $MAIL_GRAPH_ODOO_<series>, else /opt/odoo/<series>, else what an earlier
run set up; with none, it downloads and sets Odoo up (tools/odoo_setup.py), and when that cannot be done it runs
the part that needs no Odoo (tools/demo_core.py) and says so.
"""

from __future__ import annotations

import argparse
import base64
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlparse

import requests

from fake_microsoft import DEFAULTS, FakeMicrosoft
from tools import demo_core
from tools.demo_core import step
from tools.odoo_harness import graph_server_values
from tools.odoo_setup import NIGHTLY, OdooUnavailable, SetupError, ensure_odoo
from tools.odoo_tier import REPO, addons_path, drop_database, ensure_core_installed, find_odoo

MB = 1024 * 1024
SENDER = DEFAULTS["signed_in_user"]
ADMIN = ("admin", "admin")


def run_with_progress(cmd: list[str], log: Path, label: str, env: dict) -> None:
    """Run a long Odoo command, showing elapsed time and the module being loaded."""
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    started = time.time()
    last = ""
    while proc.poll() is None:
        time.sleep(1)
        tail = log.read_text(errors="replace").splitlines()[-40:]
        modules = [line.split("Loading module ")[-1].split(" ")[0] for line in tail if "Loading module " in line]
        current = modules[-1] if modules else last
        last = current
        print(f"\r    {label}: {time.time() - started:4.0f} s {current:<40}", end="", flush=True)
    print(f"\r    {label}: done in {time.time() - started:.0f} s{' ' * 40}", flush=True)
    if proc.returncode != 0:
        sys.exit(f"{label} failed (exit {proc.returncode}); see {log}")


class Odoo:
    """Talks to the running Odoo like a browser and an RPC client would."""

    def __init__(self, url: str, db: str):
        self.url, self.db = url, db
        self.http = requests.Session()

    def login(self, login: str = ADMIN[0], password: str = ADMIN[1]) -> None:
        answer = self.http.post(
            f"{self.url}/web/session/authenticate",
            json={"jsonrpc": "2.0", "params": {"db": self.db, "login": login, "password": password}},
            timeout=60,
        )
        answer.raise_for_status()
        if answer.json().get("error"):
            sys.exit(f"Odoo login failed: {answer.json()['error']}")

    def call(self, model: str, method: str, *args, **kwargs):
        answer = self.http.post(
            f"{self.url}/web/dataset/call_kw/{model}/{method}",
            json={"jsonrpc": "2.0", "params": {"model": model, "method": method, "args": args, "kwargs": kwargs}},
            timeout=600,
        )
        body = answer.json()
        if body.get("error"):
            raise RuntimeError(body["error"]["data"].get("message") or body["error"])
        return body.get("result")  # Odoo omits the key when the method returns None

    def button(self, model: str, method: str, record_id: int):
        answer = self.http.post(
            f"{self.url}/web/dataset/call_button",
            json={"jsonrpc": "2.0", "params": {"model": model, "method": method, "args": [[record_id]], "kwargs": {}}},
            timeout=120,
        )
        body = answer.json()
        if body.get("error"):
            raise RuntimeError(body["error"]["data"].get("message") or body["error"])
        return body["result"]


def wait_port(url: str, proc: subprocess.Popen, seconds: int = 120) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit("Odoo stopped while starting; see var/logs/demo-server.log")
        try:
            requests.get(f"{url}/web/login", timeout=2)
            return
        except requests.RequestException:
            time.sleep(1)
    sys.exit("Odoo did not start listening in time")


def mail_set(odoo: Odoo, partner_id: int) -> list[tuple[str, dict]]:
    """The demo's mails, created as real mail.mail records in Odoo's queue."""

    def attachment(name: str, size: int) -> int:
        data = (name.encode() * (size // len(name) + 1))[:size]
        return odoo.call(
            "ir.attachment",
            "create",
            {"name": name, "datas": base64.b64encode(data).decode(), "mimetype": "application/octet-stream"},
        )

    pixel = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
    base = {"email_from": f"Contoso Sales <{SENDER}>", "auto_delete": False}
    mails = [
        (
            "plain text",
            {"subject": "Plain text", "body_html": "<p>Just text.</p>", "email_to": "alice@fabrikam.example"},
        ),
        (
            "HTML + inline image",
            {
                "subject": "HTML with an inline image",
                "body_html": f'<p>Logo: <img src="data:image/png;base64,{pixel}" alt="logo"/></p>',
                "email_to": "bob@fabrikam.example",
            },
        ),
        (
            "CC",
            {
                "subject": "CC",
                "body_html": "<p>Copies.</p>",
                "email_to": "carol@fabrikam.example",
                "email_cc": "dave@fabrikam.example",
            },
        ),
        (
            "10 MB attachment",
            {
                "subject": "10 MB",
                "body_html": "<p>Big.</p>",
                "email_to": "frank@fabrikam.example",
                "attachment_ids": [(6, 0, [attachment("ten.bin", 10 * MB)])],
            },
        ),
        (
            "40 MB attachment",
            {
                "subject": "40 MB",
                "body_html": "<p>Bigger.</p>",
                "email_to": "grace@fabrikam.example",
                "attachment_ids": [(6, 0, [attachment("forty.bin", 40 * MB)])],
            },
        ),
    ]
    created = []
    for label, values in mails:
        mail_id = odoo.call("mail.mail", "create", dict(base, **values))
        created.append((label, {"id": mail_id}))
    # A chatter message to a follower, then a reply to it: the reply must keep the thread.
    odoo.call(
        "res.partner",
        "message_post",
        [partner_id],
        body="<p>Your order shipped.</p>",
        subject="Order shipped",
        message_type="comment",
        subtype_xmlid="mail.mt_comment",
        partner_ids=[partner_id],
    )
    parent = odoo.call(
        "mail.message",
        "search_read",
        [("model", "=", "res.partner"), ("res_id", "=", partner_id)],
        ["message_id"],
        limit=1,
        order="id desc",
    )[0]
    reply = odoo.call(
        "mail.mail",
        "create",
        dict(
            base,
            subject="Re: Order shipped",
            body_html="<p>Tracking number attached.</p>",
            email_to="zoe@fabrikam.example",
            references=parent["message_id"],
            headers=repr({"In-Reply-To": parent["message_id"]}),
        ),
    )
    created.append(("reply in a thread", {"id": reply, "parent": parent["message_id"]}))
    return created


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--series", default=os.environ.get("MAIL_GRAPH_SERIES", "18.0"))
    parser.add_argument("--db", default="mail_graph_demo")
    parser.add_argument("--port", type=int, default=8069)
    parser.add_argument("--fake-port", type=int, default=8765)
    parser.add_argument("--no-serve", action="store_true", help="stop Odoo at the end instead of serving")
    args = parser.parse_args()

    found = find_odoo(args.series)
    if not found:
        try:
            found = ensure_odoo(args.series)  # a newcomer's machine: download and set Odoo up (tools/odoo_setup.py)
        except OdooUnavailable as error:
            print(f"==> No Odoo {args.series} here, and it cannot be set up now: {error}", flush=True)
            code = demo_core.run(args.fake_port)
            print(
                f"\nThe Odoo part did NOT run. To get it: let ./dev demo download Odoo {args.series} (it needs "
                f"{NIGHTLY.split('/{series}')[0]}), or set MAIL_GRAPH_ODOO_SOURCE to an Odoo {args.series} source "
                f"archive (URL or file), or install Odoo at /opt/odoo/{args.series} with /opt/odoo/venv-{args.series}; "
                "then run ./dev demo again."
            )
            return code
        except SetupError as error:
            sys.exit(f"Odoo {args.series} could not be set up: {error}")
    tree, python = found
    logs = REPO / "var" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    step(f"Odoo {args.series} at {tree}")
    ensure_core_installed(python)

    step(f"Starting the fake Microsoft on 127.0.0.1:{args.fake_port}")
    fake = FakeMicrosoft(port=args.fake_port).start()
    # Register this Odoo's callback with the fake, as an administrator does in Azure (any --port works).
    callback_uri = f"http://127.0.0.1:{args.port}/mail_graph_api/auth/callback"
    fake.configure(max_message_size=150 * MB, redirect_uris=[callback_uri])

    step(f"Creating database {args.db} with mail_graph_api (PostgreSQL on 127.0.0.1:5432)")
    drop_database(args.db)
    odoo_cmd = [
        str(python),
        str(tree / "odoo-bin"),
        "-d",
        args.db,
        "--db_host=127.0.0.1",
        "--db_user=root",
        f"--addons-path={addons_path(tree)}",
        "--http-interface=127.0.0.1",
    ]
    without_demo = ["--without-demo"] if args.series >= "19.0" else ["--without-demo=all"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    run_with_progress(
        [*odoo_cmd, "-i", "mail_graph_api", "--stop-after-init", *without_demo, f"--http-port={args.port}"],
        logs / "demo-install.log",
        "install",
        env,
    )

    url = f"http://127.0.0.1:{args.port}"
    step(f"Starting Odoo on {url}")
    with (logs / "demo-server.log").open("w") as out:
        server = subprocess.Popen(
            [*odoo_cmd, f"--http-port={args.port}", "--max-cron-threads=0"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        wait_port(url, server)
        odoo = Odoo(url, args.db)
        odoo.login()
        odoo.call("ir.config_parameter", "set_param", "web.base.url", url)
        odoo.call("ir.config_parameter", "set_param", "web.base.url.freeze", "True")
        odoo.call("ir.config_parameter", "set_param", "mail.catchall.domain", "contoso.onmicrosoft.com")
        odoo.call("res.users", "write", [2], {"email": "it@contoso.onmicrosoft.com"})

        step("Configuring an Outgoing Mail Server that uses Microsoft Graph")
        values = graph_server_values(fake.url, fake.graph_url, graph_max_email_size=60)
        server_id = odoo.call("ir.mail_server", "create", values)

        step("Authenticate with Microsoft (authorization code flow; the fake consents)")
        action = odoo.button("ir.mail_server", "action_graph_authenticate", server_id)
        consent = requests.get(action["url"], allow_redirects=False, timeout=30)
        callback = consent.headers["Location"]
        print(f"    Microsoft redirected to {urlparse(callback).path}")
        page = odoo.http.get(callback, timeout=60)
        state = odoo.call("ir.mail_server", "read", [server_id], ["graph_connection_state", "graph_account"])[0]
        print(
            f"    callback page: HTTP {page.status_code}; server state: {state['graph_connection_state']}, "
            f"account {state['graph_account']}"
        )
        result = odoo.button("ir.mail_server", "test_smtp_connection", server_id)
        print(f"    Test Connection: {result['params']['message']}")

        step("Queueing real Odoo mails")
        partner_id = odoo.call("res.partner", "create", {"name": "Zoë Customer", "email": "zoe@fabrikam.example"})
        token_calls_before = len(fake.calls("token"))
        mails = mail_set(odoo, partner_id)
        queued = odoo.call("mail.mail", "search_count", [("state", "=", "outgoing")])
        step(f"Processing the mail queue ({queued} mails) as the cron does")
        started = time.time()
        odoo.call("mail.mail", "process_email_queue")
        print(f"    queue processed in {time.time() - started:.1f} s")

        report(odoo, fake, mails, len(fake.calls("token")) - token_calls_before)
        bcc_through_send_email(args.series, args.db, server_id, fake)
        step("What comes back: a reply and a bounce read from the mailbox over Graph")
        what_comes_back(odoo, fake, partner_id, server_id)
    except BaseException:
        server.terminate()
        fake.stop()
        raise

    if args.no_serve:
        server.terminate()
        server.wait(30)
        fake.stop()
        step("Done (--no-serve: Odoo stopped)")
        return 0
    step(f"Odoo is serving on {url}  (database {args.db}, login admin / password admin)")
    print(f"    fake Microsoft on {fake.url} (control API {fake.url}/_fake/messages). Ctrl-C stops both.")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.is_set() and server.poll() is None:
            stop.wait(1)
    except KeyboardInterrupt:
        pass
    server.terminate()
    fake.stop()
    return 0


def report(odoo: Odoo, fake: FakeMicrosoft, mails: list, token_calls: int) -> None:
    received = {m["internet_message_id"]: m for m in fake.messages()}
    rows = []
    for label, info in mails:
        mail = odoo.call("mail.mail", "read", [info["id"]], ["state", "message_id", "failure_reason"])[0]
        logs = odoo.call(
            "mail.graph.api.log", "search_read", [("message_id", "=", mail["message_id"])], ["operation", "duration_ms"]
        )
        got = received.get(mail["message_id"])
        recipients = ""
        if got:
            recipients = ", ".join(got["to"] + [f"cc:{a}" for a in got["cc"]] + [f"bcc:{a}" for a in got["bcc"]])
        attachments = ", ".join(f"{a['name']} {a['size'] / MB:.1f}MB" for a in (got or {}).get("attachments", []))
        rows.append(
            (
                label,
                mail["state"],
                mail["message_id"],
                "yes" if got else "NO",
                len(logs),
                f"{sum(log['duration_ms'] for log in logs) / 1000:.2f}s",
                recipients,
                attachments or "-",
            )
        )
        if mail["state"] != "sent":
            print(f"    {label}: {mail['failure_reason']}")
    headers = ("mail", "Odoo state", "Message-ID", "at Microsoft", "Graph calls", "time", "delivered to", "attachments")
    demo_core.print_table(headers, rows)
    print(f"\n    token endpoint calls while sending: {token_calls}; messages at Microsoft: {len(received)}")
    print()


def send_with_bcc(env, server_id: int) -> dict:
    """Runs inside Odoo (tools/odoo_exec.py): Bcc as Odoo code gives it, to ir.mail_server.send_email().
    Odoo's own builder by name (19.0 renamed it), not our compat module: the benchmarks run this against a peer
    addon that is also called mail_graph_api."""
    server = env["ir.mail_server"].browse(server_id)
    build_email = getattr(server, "_build_email__", None) or server.build_email
    message = build_email(
        email_from=SENDER,
        email_to=["carol@fabrikam.example"],
        email_cc=["dave@fabrikam.example"],
        email_bcc=["erin@fabrikam.example"],
        subject="CC and BCC",
        body="<p>Copies, one of them blind.</p>",
        subtype="html",
    )
    return {"message_id": server.send_email(message, mail_server_id=server_id)}


def bcc_through_send_email(series: str, db: str, server_id: int, fake: FakeMicrosoft) -> None:
    """Odoo's mail queue has no Bcc (mail.mail keeps To and Cc in the envelope); code that needs one calls
    send_email() with email_bcc, as this does."""
    from tools.odoo_harness import OdooInstance

    message_id = OdooInstance(series, db).call("tools.demo:send_with_bcc", server_id=server_id)["message_id"]
    got = next((m for m in fake.messages() if m["internet_message_id"] == message_id), None)
    if not got:
        print(f"    CC and BCC through send_email(): {message_id} NOT at Microsoft")
        return
    hidden = b"erin@fabrikam.example" not in fake.raw(got["id"])
    print(
        f"    CC and BCC through send_email(): {message_id} at Microsoft, to {', '.join(got['to'])}, "
        f"cc {', '.join(got['cc'])}, bcc {', '.join(got['bcc'])}; Bcc hidden from what recipients get: "
        f"{'yes' if hidden else 'NO'}"
    )


def what_comes_back(odoo: Odoo, fake: FakeMicrosoft, partner_id: int, server_id: int) -> None:
    """A customer's reply and an Exchange bounce land in the mailbox's Inbox; Odoo reads them over Graph."""
    sent = [m for m in fake.messages() if m["subject"] == "Order shipped"]
    if not sent:
        print("    (no chatter mail found at Microsoft: reply check skipped)")
        return
    parent_id = sent[0]["internet_message_id"]
    reply = (
        f"From: Zoe <zoe@fabrikam.example>\r\nTo: {SENDER}\r\nSubject: Re: Order shipped\r\n"
        f"Message-ID: <{uuid.uuid4()}@fabrikam.example>\r\nIn-Reply-To: {parent_id}\r\nReferences: {parent_id}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\nThanks, received!\r\n"
    ).encode()
    fake.deliver(SENDER, reply)
    print("    a customer replied to the mailbox address (not to the catchall)")
    # Exchange refuses this domain: Graph answers 202, then an NDR arrives in the sender's Inbox.
    fake.configure(refused_recipients=["@nowhere.example"])
    ghost = odoo.call("res.partner", "create", {"name": "Ghost", "email": "ghost@nowhere.example"})
    odoo.call("res.partner", "message_post", [partner_id], body="<p>Invoice attached.</p>", subject="Invoice",
              message_type="comment", subtype_xmlid="mail.mt_comment", partner_ids=[ghost])  # fmt: skip
    odoo.call("mail.mail", "process_email_queue")
    print(f"    a mail to ghost@nowhere.example went out; Inbox now holds {len(inbox(fake, 'Inbox'))} message(s)")
    inbox_ids = odoo.call("mail.graph.inbox", "search", [("mail_server_id", "=", server_id)])
    result = odoo.button("mail.graph.inbox", "action_fetch_now", inbox_ids[0])
    print(f"    Fetch Now (Process bounces and replies): {result['params']['message']}")
    replies = odoo.call("mail.message", "search_count",
                        [("model", "=", "res.partner"), ("res_id", "=", partner_id), ("body", "ilike", "Thanks, received")])  # fmt: skip
    bounces = odoo.call("res.partner", "read", [ghost], ["message_bounce"])[0]["message_bounce"]
    print(f"    reply on res.partner #{partner_id}'s chatter: {'yes, thread kept' if replies else 'NO'}")
    print(
        f"    bounce counted on ghost@nowhere.example: message_bounce = {bounces} {'(ok)' if bounces == 1 else '(NOT ok)'}"
    )
    print(
        f"    mailbox folders: Inbox {len(inbox(fake, 'Inbox'))}, Odoo Processed {len(inbox(fake, 'Odoo Processed'))}"
    )


def inbox(fake: FakeMicrosoft, folder: str) -> list:
    return [m for m in fake.mailbox_messages(SENDER) if m["folder"] == folder]


if __name__ == "__main__":
    sys.exit(main())
