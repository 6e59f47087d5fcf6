"""``python -m benchmarks``: measure mail_graph_api (and a peer addon) in real Odoo against the fake Microsoft.

One run, one table. Every figure is a count or a ratio measured side by side in the same run on the same
machine; absolute times are printed for context only, never as targets.

1. Graph requests per mail for the demo's mail set (+ a 1 MB attachment), counted at the fake, and
   token-endpoint calls (one worker, then two worker processes draining one queue).
2. Throughput: N queued mail.mail (sizes mixed up to 1 MiB) drained by Odoo's own queue processing through a
   Graph server to the fake, then through a plain SMTP server to a local SMTP sink.
3. Scaling: per-mail cost at 100 and 1,000 queued mails (10,000 with --large).
4. Memory: peak RSS above baseline of a separate Odoo process sending one 100 MB attachment.
5. Peer: the same 1 and 2 for the addon in $MAIL_GRAPH_PEER_ADDON (its own database and addons path).
6. Incoming (``--incoming N``): N messages read over Graph against the same N read by Odoo's IMAP fetchmail
   from a local dovecot (benchmarks/incoming.py); ``--only incoming`` runs that alone.
7. Sending limits (``--quota N``): N recipient copies through one mailbox and through a pool of 4 against the
   fake's enforced limits (benchmarks/quota.py); ``--only quota`` runs that alone.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import json
import math
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import requests

from benchmarks import quota
from benchmarks.incoming import measure_incoming, render_table
from benchmarks.sink import SmtpSink
from fake_microsoft import DEFAULTS, FakeMicrosoft
from fake_microsoft.testing import delegated_tokens
from tools.demo import SENDER, Odoo, mail_set
from tools.odoo_harness import OdooInstance, graph_server_values, result_of
from tools.odoo_tier import REPO, free_port

MB = 1024 * 1024
CHUNK = 3_276_800  # the core's upload-session chunk (10 x 320 KiB)
IDENTITY_ROUTES = {"openid", "instance", "keys", "authorize", "token"}
CALLBACK = "/mail_graph_api/auth/callback"
OUT = REPO / "var" / "bench"
PEER_ENV = "MAIL_GRAPH_PEER_ADDON"
# The demo's mail set, plus a 1 MB attachment: label -> (attachment bytes, recipients Microsoft must deliver to)
EXPECTED = {
    "plain text": (0, {"alice@fabrikam.example"}),
    "HTML + inline image": (0, {"bob@fabrikam.example"}),
    "CC": (0, {"carol@fabrikam.example", "dave@fabrikam.example"}),
    # Odoo's mail queue has no Bcc (mail.mail's envelope is To + Cc): sent through ir.mail_server.send_email()
    # with email_bcc, as tools/demo.py does.
    "CC and BCC": (0, {"carol@fabrikam.example", "dave@fabrikam.example", "erin@fabrikam.example"}),
    "1 MB attachment": (MB, {"henry@fabrikam.example"}),
    "10 MB attachment": (10 * MB, {"frank@fabrikam.example"}),
    "40 MB attachment": (40 * MB, {"grace@fabrikam.example"}),
    "reply in a thread": (0, {"zoe@fabrikam.example"}),
}
SUBJECTS = {
    "plain text": "Plain text",
    "HTML + inline image": "HTML with an inline image",
    "CC": "CC",
    "CC and BCC": "CC and BCC",
    "1 MB attachment": "1 MB",
    "10 MB attachment": "10 MB",
    "40 MB attachment": "40 MB",
    "reply in a thread": "Re: Order shipped",
}


def say(text: str) -> None:
    print(f"==> {text}", flush=True)


def expected_requests(size: int) -> int:
    """1 when the request fits 4 MB (MIME base64 twice: about 2.3 MB of attachments), else draft + session +
    one PUT per chunk + send."""
    if size * 16 // 9 < 4 * MB - 64 * 1024 - 100 * 1024:
        return 1
    return 3 + math.ceil(size / CHUNK)


class Target:
    """One addon under test: its own database, addons path and (for the peer) Python start-up shim."""

    def __init__(self, key: str, label: str, series: str, db: str, peer_dir: Optional[Path], fake_url: str):
        self.key, self.label, self.peer = key, label, peer_dir is not None
        if peer_dir is None:
            self.instance = OdooInstance(series, db=db, logdir=OUT / "logs")
        else:
            self.instance = PeerInstance(series, db=db, logdir=OUT / "logs", peer_dir=peer_dir, fake_url=fake_url)
        self.graph_server = 0
        self.smtp_server = 0
        self.http: Optional[subprocess.Popen] = None
        self.url = ""

    def call(self, function: str, timeout: Optional[float] = None, **kwargs):
        return self.instance.call(f"benchmarks.jobs:{function}", timeout=timeout, **kwargs)

    def spawn(self, function: str, log_name: str, **kwargs):
        return self.instance.spawn(f"benchmarks.jobs:{function}", log_name=log_name, **kwargs)

    def start_http(self) -> Odoo:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        log = (OUT / "logs" / f"{self.instance.db}-http.log").open("w")
        self.http = subprocess.Popen(
            self.instance.command(f"--http-port={port}", "--max-cron-threads=0", "--workers=0"),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.instance.env,
        )
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.http.poll() is not None:
                raise RuntimeError(f"Odoo stopped while starting; see {log.name}")
            try:
                requests.get(f"{self.url}/web/login", timeout=2)
                break
            except requests.RequestException:
                time.sleep(0.5)
        odoo = Odoo(self.url, self.instance.db)
        odoo.login()
        odoo.call("ir.config_parameter", "set_param", "web.base.url", self.url)
        odoo.call("ir.config_parameter", "set_param", "web.base.url.freeze", "True")
        odoo.call("ir.config_parameter", "set_param", "mail.catchall.domain", "contoso.onmicrosoft.com")
        odoo.call("res.users", "write", [2], {"email": "it@contoso.onmicrosoft.com"})
        return odoo

    def stop_http(self) -> None:
        if self.http and self.http.poll() is None:
            self.http.terminate()
            self.http.wait(30)
        self.http = None


class PeerInstance(OdooInstance):
    """The peer's Odoo: Odoo's addons and the peer's folder only, and the start-up shim that sends its requests
    for Microsoft's hosts to the fake (benchmarks/peer_site/sitecustomize.py)."""

    def __init__(self, series: str, db: str, logdir: Path, peer_dir: Path, fake_url: str):
        super().__init__(series, db=db, logdir=logdir)
        self.addons_path = ",".join([str(self.tree / "addons"), str(self.tree / "odoo" / "addons"), str(peer_dir)])
        self.fake_url = fake_url
        self.coerce = True  # see peer_site/sitecustomize.py; off only for the as-is probe

    @property
    def env(self) -> dict:
        env = dict(super().env, MAIL_GRAPH_BENCH_FAKE_URL=self.fake_url)
        if self.coerce:
            env["MAIL_GRAPH_BENCH_PEER_COERCE"] = "1"
        env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent / "peer_site"), env["PYTHONPATH"]])
        return env


# --------------------------------------------------------------------------------------------------------
# Set-up of the Graph servers
# --------------------------------------------------------------------------------------------------------


def connect_ours(odoo: Odoo, fake: FakeMicrosoft, url: str) -> Tuple[int, str]:
    """The addon's Graph server on the fake, signed in through its own OAuth flow (as tools/demo.py does)."""
    uris = fake.config()["redirect_uris"]
    fake.configure(redirect_uris=[*uris, url + CALLBACK])
    # 150: the 100 MB mail. No sending limits: the throughput runs send thousands of mails a minute on purpose.
    values = graph_server_values(
        fake.url, fake.graph_url, graph_max_email_size=150, graph_rate_limit=0, graph_daily_recipient_limit=0
    )
    server_id = odoo.call("ir.mail_server", "create", values)
    action = odoo.button("ir.mail_server", "action_graph_authenticate", server_id)
    consent = requests.get(action["url"], allow_redirects=False, timeout=30)
    odoo.http.get(consent.headers["Location"], timeout=60)
    state = odoo.call("ir.mail_server", "read", [server_id], ["graph_connection_state"])[0]
    return server_id, f"signed in through the addon's OAuth flow: {state['graph_connection_state']}"


def connect_peer(odoo: Odoo, target: Target, fake: FakeMicrosoft) -> Tuple[int, str]:
    """The peer's server; its own sign-in first (hosts rewritten to the fake), else a seeded refresh token."""
    uris = fake.config()["redirect_uris"]
    fake.configure(redirect_uris=[*uris, target.url + CALLBACK])
    server_id = target.call(
        "create_peer_server",
        client_id=DEFAULTS["client_id"],
        client_secret=DEFAULTS["client_secret"],
        tenant_id=DEFAULTS["tenant_id"],
    )
    note = ""
    try:
        start = odoo.http.get(f"{target.url}/mail_graph_api/auth?id={server_id}", allow_redirects=False, timeout=30)
        location = start.headers.get("Location", "")
        if not location:
            said = re.findall(r"<p[^>]*>(.*?)</p>", start.text, re.S)
            raise RuntimeError(
                f"its /mail_graph_api/auth?id={server_id} answered HTTP {start.status_code} without sending the browser "
                f"to Microsoft: {' '.join(said)[:100] or 'no message'}"
            )
        for host in ("https://login.microsoftonline.com",):
            if location.startswith(host):
                location = fake.url + location[len(host) :]
        consent = requests.get(location, allow_redirects=False, timeout=30)
        callback = consent.headers.get("Location", "")
        if "code=" not in callback:
            raise RuntimeError(f"the fake refused its sign-in request: {callback or consent.status_code}")
        odoo.http.get(callback, timeout=60)
        values = odoo.call("ir.mail_server", "read", [server_id], ["ms_refresh_token"])[0]
        if not values.get("ms_refresh_token"):
            raise RuntimeError("its callback stored no refresh token")
        note = "signed in through its own OAuth flow (Microsoft hosts rewritten to the fake)"
    except (RuntimeError, requests.RequestException, KeyError) as exc:
        # What its callback would have stored after a successful sign-in.
        tokens = delegated_tokens(fake.url)
        expiry = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None) + datetime.timedelta(
            seconds=int(tokens["expires_in"])
        )
        odoo.call(
            "ir.mail_server",
            "write",
            [server_id],
            {
                "ms_refresh_token": tokens["refresh_token"],
                "ms_access_token": tokens["access_token"],
                "ms_token_expiry": expiry.strftime("%Y-%m-%d %H:%M:%S"),
            },
        )
        logged = [
            line.split(": ", 1)[-1].strip()
            for line in (OUT / "logs" / f"{target.instance.db}-http.log").read_text(errors="replace").splitlines()
            if " ERROR " in line and "controllers" in line
        ]
        note = f"its OAuth flow failed ({str(exc)[:120]}{'; its log: ' + logged[-1][:60] if logged else ''}); tokens seeded from the fake"
    return server_id, note


# --------------------------------------------------------------------------------------------------------
# 1. Requests per mail and token calls
# --------------------------------------------------------------------------------------------------------


def add_one_mb_mail(odoo: Odoo) -> int:
    data = (b"one.bin" * (MB // 7 + 1))[:MB]
    attachment = odoo.call(
        "ir.attachment",
        "create",
        {"name": "one.bin", "datas": base64.b64encode(data).decode(), "mimetype": "application/octet-stream"},
    )
    return odoo.call(
        "mail.mail",
        "create",
        {
            "email_from": f"Contoso Sales <{SENDER}>",
            "auto_delete": False,
            "subject": "1 MB",
            "body_html": "<p>One megabyte.</p>",
            "email_to": "henry@fabrikam.example",
            "attachment_ids": [(6, 0, [attachment])],
        },
    )


def delivered(fake: FakeMicrosoft, label: str, message_id: str) -> Tuple[bool, str]:
    """Did Microsoft get this mail whole: its recipients and its attachment?"""
    size, recipients = EXPECTED[label]
    found = [m for m in fake.messages() if m["internet_message_id"] == message_id]
    if not found:  # JSON senders get a Message-ID from Exchange: look the mail up by subject
        found = [m for m in fake.messages() if m["subject"] == SUBJECTS[label]]
    if not found:
        return False, "not at Microsoft"
    got = found[-1]
    problems = []
    missing = recipients - {a.lower() for a in got["recipients"]}
    if missing:
        problems.append("not delivered to " + ", ".join(sorted(missing)))
    if size:
        sizes = [a["size"] for a in got["attachments"] if not a["is_inline"]]
        if size not in sizes:
            problems.append("attachment dropped" if not sizes else f"attachment {sizes} bytes")
    inline = any(a["is_inline"] for a in got["attachments"]) or "data:image/png" in (got["html"] or "")
    if label == "HTML + inline image" and not inline:
        problems.append("image lost")
    if label == "CC and BCC" and b"erin@fabrikam.example" in fake.raw(got["id"]):
        problems.append("Bcc visible to the recipients")
    return not problems, "; ".join(problems)


def requests_per_mail(target: Target, odoo: Odoo, fake: FakeMicrosoft) -> Dict:
    mark = len(fake.calls())
    partner = odoo.call("res.partner", "create", {"name": "Zoë Customer", "email": "zoe@fabrikam.example"})
    mails = dict(mail_set(odoo, partner))
    mails["1 MB attachment"] = {"id": add_one_mb_mail(odoo)}
    posted = fake.calls()[mark:]
    order = [label for label in EXPECTED if label in mails]
    ids = [mails[label]["id"] for label in order]
    # Cold start: no access token stored. Sending must ask the token endpoint once, then reuse the token.
    target.call("clear_access_token", server_id=target.graph_server, peer=target.peer)
    each = target.call("send_each", ids=ids, fake_url=fake.url, peer=target.peer)
    # The Bcc case: Odoo code calling send_email() (tools/demo.py's; the peer has no compat module).
    before = len(fake.calls())
    if target.peer:
        sent = target.call("send_with_bcc", server_id=target.graph_server)
    else:
        sent = target.instance.call("tools.demo:send_with_bcc", server_id=target.graph_server)
    at = order.index("CC") + 1 if "CC" in order else len(order)
    order.insert(at, "CC and BCC")
    each.insert(
        at,
        {
            "state": "sent" if sent.get("message_id") else "exception",
            "message_id": sent.get("message_id") or "",
            "failure": sent.get("error", ""),
            "calls": fake.calls()[before:],
        },
    )
    calls = fake.calls()[mark:]
    rows = {}
    for label, result in zip(order, each):
        graph = [c for c in result["calls"] if c["route"] not in IDENTITY_ROUTES]
        ok, problem = delivered(fake, label, result["message_id"])
        failed = [c for c in graph if c["status"] and c["status"] >= 400]
        refused = ", ".join(f"{c['route']} {c['status']} {c['code'] or ''}".strip() for c in failed)
        if result["state"] != "sent":
            problem = f"Odoo: {result['state']}; " + (refused or result["failure"][:100])
        elif failed:
            problem = (problem + "; " if problem else "") + refused
        routes: Dict[str, int] = {}
        for c in graph:
            routes[c["route"]] = routes.get(c["route"], 0) + 1
        rows[label] = {
            "requests": len(graph),
            "expected": expected_requests(EXPECTED[label][0]),
            "routes": routes,
            "ok": ok and result["state"] == "sent" and not failed,
            "problem": problem,
        }
    chatter = [c for c in posted if c["route"] not in IDENTITY_ROUTES]
    return {
        "mails": rows,
        "chatter_requests": len(chatter),
        "token_calls": sum(1 for c in calls if c["route"] == "token"),
        "discovery_calls": sum(1 for c in calls if c["route"] in ("openid", "instance", "keys")),
    }


def as_is(target: Target, fake: FakeMicrosoft) -> Dict:
    """One plain mail with nothing of the benchmark's between the addon and the fake (no peer coercion)."""
    peer_instance = target.instance if isinstance(target.instance, PeerInstance) else None
    if peer_instance:
        peer_instance.coerce = False
    try:
        queued = target.call("queue_mails", count=1, server_id=target.graph_server, sizes="none")
        mark = len(fake.calls())
        run = target.call("drain", ids=queued["ids"], peer=target.peer)
        calls = [c for c in fake.calls()[mark:] if c["route"] not in IDENTITY_ROUTES]
        target.call("forget_mails", ids=queued["ids"])
    finally:
        if peer_instance:
            peer_instance.coerce = True
    refused = [c for c in calls if c["status"] and c["status"] >= 400]
    if refused:
        return {"text": f"refused: {refused[0]['route']} {refused[0]['status']} {refused[0]['code'] or ''}".strip()}
    return {"text": f"{'sent' if run['states'].get('sent') else run['states']} ({len(calls)} request)"}


def two_workers(target: Target, fake: FakeMicrosoft, count: int) -> Dict:
    target.call("clear_access_token", server_id=target.graph_server, peer=target.peer)
    queued = target.call("queue_mails", count=count, server_id=target.graph_server, sizes="none")
    ids = queued["ids"]
    mark = len(fake.calls())
    messages_before = len(fake.messages())
    start_at = time.time() + 15  # both processes have loaded the registry by then: they start together
    workers = [
        target.spawn("drain", f"worker{n}", ids=ids[n::2], peer=target.peer, start_at=start_at) for n in range(2)
    ]
    results = [result_of(w, "drain worker", timeout=900) for w in workers]
    calls = fake.calls()[mark:]
    graph = [c for c in calls if c["route"] not in IDENTITY_ROUTES]
    sent = sum(r["states"].get("sent", 0) for r in results)
    target.call("forget_mails", ids=ids)
    return {
        "mails": count,
        "sent": sent,
        "at_microsoft": len(fake.messages()) - messages_before,
        "token_calls": sum(1 for c in calls if c["route"] == "token"),
        "graph_requests": len(graph),
        "failures": [f for r in results for f in r["failures"]][:2],
        "errors": [e for r in results for e in r["errors"]][:2],
    }


# --------------------------------------------------------------------------------------------------------
# 2./3. Throughput and scaling
# --------------------------------------------------------------------------------------------------------


def _fake_message_count(fake: FakeMicrosoft) -> int:
    with fake.state.lock:  # the benchmark's own fake: read its count without copying every message
        return len(fake.state.messages)


def _fake_forget_messages(fake: FakeMicrosoft) -> None:
    with fake.state.lock:  # keep the driver's memory flat across runs of thousands of mails
        fake.state.messages.clear()
        fake.state.raw.clear()
        fake.state.sent_items.clear()


def throughput(target: Target, fake: FakeMicrosoft, sink: SmtpSink, path: str, count: int, **drain_args) -> Dict:
    server = target.graph_server if path == "graph" else target.smtp_server
    queued = target.call("queue_mails", count=count, server_id=server, sizes="mixed")
    before = _fake_message_count(fake) if path == "graph" else sink.messages
    mark = len(fake.calls())
    result = target.call("drain", ids=queued["ids"], peer=target.peer, **drain_args)
    after = _fake_message_count(fake) if path == "graph" else sink.messages
    calls = fake.calls()[mark:]
    # Time the fake spent answering (it shares this machine's cores with Odoo): reported, not subtracted.
    result["fake_seconds"] = sum(c["duration_ms"] or 0 for c in calls) / 1000
    result["graph_requests"] = sum(1 for c in calls if c["route"] not in IDENTITY_ROUTES)
    target.call("forget_mails", ids=queued["ids"])
    if path == "graph":
        _fake_forget_messages(fake)
    result.update(count=count, received=after - before, attachment_bytes=queued["attachment_bytes"])
    return result


def _merged(legs: List[Dict]) -> Dict:
    """The legs of one path as one run: times, counts and mail states added up, errors kept."""
    merged: Dict = {"states": {}, "errors": [], "failures": [], "wall": 0.0, "cpu": 0.0, "received": 0}
    for leg in legs:
        for key, value in leg.items():
            if key == "states":
                for state, number in value.items():
                    merged["states"][state] = merged["states"].get(state, 0) + number
            elif isinstance(value, list):
                merged.setdefault(key, []).extend(value)
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                merged[key] = merged.get(key, 0) + value
            else:
                merged.setdefault(key, value)
    return merged


# --------------------------------------------------------------------------------------------------------
# 4. Memory
# --------------------------------------------------------------------------------------------------------


def memory(target: Target, fake: FakeMicrosoft, path: str, size: int) -> Dict:
    """path: graph, smtp, or build (Odoo reads the attachment and builds the message, nothing is sent: the
    SMTP server's mail, so that no addon takes part)."""
    server = target.graph_server if path == "graph" else target.smtp_server
    made = target.call("create_big_mail", size=size, server_id=server)
    result = target.call("memory_send", warm=made["warm"], big=made["big"], build_only=path == "build", timeout=1800)
    target.call("forget_mails", ids=[made["warm"], made["big"]])
    _fake_forget_messages(fake)
    result["multiple"] = (result["peak_kb"] - result["baseline_kb"]) * 1024 / size
    return result


# --------------------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------------------


def install_pyinstrument(python: Path, series: str) -> str:
    site = OUT / f"pyinstrument-{series}"
    if not (site / "pyinstrument").is_dir():
        say(f"Installing pyinstrument for Odoo's Python into {site}")
        subprocess.check_call([str(python), "-m", "pip", "install", "-q", "--target", str(site), "pyinstrument"])
    return str(site)


def measure(target: Target, fake: FakeMicrosoft, sink: SmtpSink, args) -> Dict:
    results: Dict = {"label": target.label, "errors": {}}

    def phase(name: str, function, *fargs, **fkwargs):
        """One figure's measurement: its failure is reported in the table, the others still run."""
        try:
            return function(*fargs, **fkwargs)
        except Exception as exc:
            if target.key == "ours" and args.strict:
                raise
            results["errors"][name] = f"{type(exc).__name__}: {str(exc).strip()[:200]}"
            say(f"[{target.key}] {name} failed: {results['errors'][name]}")
            return None

    say(f"[{target.key}] creating database {target.instance.db} (addons: {target.instance.addons_path})")
    started = time.time()
    target.instance.create_database()
    say(f"[{target.key}] installed in {time.time() - started:.0f} s; starting Odoo's HTTP server for sign-in")
    odoo = target.start_http()
    try:
        if target.peer:
            target.graph_server, results["auth"] = connect_peer(odoo, target, fake)
        else:
            target.graph_server, results["auth"] = connect_ours(odoo, fake, target.url)
        say(f"[{target.key}] {results['auth']}")
        say(f"[{target.key}] 1. requests per mail (demo mail set, drained one mail at a time)")
        results["per_mail"] = phase("per_mail", requests_per_mail, target, odoo, fake)
    finally:
        target.stop_http()
    say(f"[{target.key}] 1. one plain mail exactly as the addon sends it")
    results["as_is"] = phase("as_is", as_is, target, fake)
    say(f"[{target.key}] 1. two worker processes draining one queue of {args.worker_mails} mails")
    results["two_workers"] = phase("two_workers", two_workers, target, fake, args.worker_mails)
    target.smtp_server = target.call("create_smtp_server", port=sink.port)
    results["throughput"] = {}
    for count in args.counts:
        # Each path drains the N mails in two halves, in the order SMTP, Graph, Graph, SMTP: the speed of a shared
        # machine drifts over minutes, and this way a drift weighs on both paths alike.
        legs: Dict[str, List[Dict]] = {"smtp": [], "graph": []}
        for path, size in (("smtp", count // 2), ("graph", count // 2), ("graph", count - count // 2),
                           ("smtp", count - count // 2)):  # fmt: skip
            say(f"[{target.key}] 2./3. {size} of {count} queued mails through {path.upper()}")
            run = phase(f"{path}:{count}", throughput, target, fake, sink, path, size)
            if run is None:
                legs[path].append({"states": {}, "errors": [f"{path}:{count} failed"], "failures": []})
                continue
            legs[path].append(run)
            say(
                f"    {run['states']} received {run['received']}; {run['wall']:.1f} s wall, {run['cpu']:.1f} s CPU "
                f"({size / run['wall']:.1f} mails/s); fake busy {run['fake_seconds']:.1f} s"
                + (f"; errors: {run['errors'][:1]}" if run["errors"] else "")
            )
        for path, runs in legs.items():
            results["throughput"][f"{path}:{count}"] = _merged(runs)
    if args.profile and not target.peer:
        site = install_pyinstrument(target.instance.python, target.instance.series)
        results["profile"] = {}
        for path in ("graph", "smtp"):
            profile = OUT / f"profile-{path}.txt"
            say(
                f"[{target.key}] profile: {args.counts[-1]} mails through {path.upper()} under pyinstrument -> {profile}"
            )
            run = throughput(target, fake, sink, path, args.counts[-1], profile=str(profile), profile_site=site)
            results["profile"][path] = {"file": str(profile), "wall": run["wall"], "count": run["count"]}
    if args.memory_mb and not target.peer:
        results["memory"] = {}
        for path in ("graph", "smtp", "build"):
            say(f"[{target.key}] 4. peak memory sending one {args.memory_mb} MB attachment: {path}")
            found = phase(f"memory:{path}", memory, target, fake, path, args.memory_mb * MB)
            if found is not None:
                results["memory"][path] = found
    return results


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--series", default=os.environ.get("MAIL_GRAPH_SERIES", "18.0"))
    parser.add_argument("--large", action="store_true", help="also drain 10,000 queued mails (scaling)")
    parser.add_argument("--counts", default="100,1000", help="queue lengths to drain (default 100,1000)")
    parser.add_argument("--worker-mails", type=int, default=40, help="mails drained by the two workers")
    parser.add_argument("--memory-mb", type=int, default=100, help="attachment size for the memory figure (0: skip)")
    parser.add_argument("--profile", action="store_true", help="profile one Graph drain with pyinstrument")
    parser.add_argument("--peer", default=os.environ.get(PEER_ENV, ""), help=f"peer addon folder (${PEER_ENV})")
    parser.add_argument("--keep", action="store_true", help="keep the databases")
    parser.add_argument(
        "--only", choices=("ours", "peer", "incoming", "quota"), help="measure one addon (or incoming, quota) only"
    )
    parser.add_argument(
        "--quota", type=int, default=0, metavar="N", help="also send N copies under the sending limits (7.)"
    )
    parser.add_argument("--quota-rate", type=int, default=120, help="mails a minute per mailbox in 7. (both sides)")
    parser.add_argument(
        "--incoming", type=int, default=0, metavar="N", help="also read N incoming messages: Graph vs IMAP (6.)"
    )
    parser.add_argument("--strict", action="store_true", help="stop at the first failure of our own addon")
    args = parser.parse_args(argv)
    args.counts = [int(c) for c in args.counts.split(",") if c]
    if args.large and 10_000 not in args.counts:
        args.counts.append(10_000)
    (OUT / "logs").mkdir(parents=True, exist_ok=True)
    started = time.time()
    load_before = os.getloadavg()[0]

    fake = FakeMicrosoft().start()
    # The throughput figures send hundreds of mails a minute through one mailbox on purpose: Exchange's limits,
    # which the fake enforces by default, are measured by the quota figures (7.), which set their own.
    fake.configure(max_message_size=150 * MB, message_rate_limit=0, daily_recipient_limit=0)
    sink = SmtpSink().start()
    say(f"fake Microsoft on {fake.url}; SMTP sink on 127.0.0.1:{sink.port}; {os.cpu_count()} cores")
    # The addons path needs the folder holding the addon: a checkout as is, the addon folder's parent.
    peer_dir = Path(args.peer).resolve() if args.peer else None
    if peer_dir is not None and (peer_dir / "__manifest__.py").is_file():
        peer_dir = peer_dir.parent
    targets = [Target("ours", "mail_graph_api", args.series, f"mga_bench_{os.getpid()}", None, fake.url)]
    if peer_dir is not None:
        targets.append(
            Target("peer", "ront85 mail_graph_api", args.series, f"mga_bench_peer_{os.getpid()}", peer_dir, fake.url)
        )
    if args.only == "incoming" and not args.incoming:
        args.incoming = 1000
    if args.only == "quota" and not args.quota:
        args.quota = 2000
    if args.only:
        targets = [t for t in targets if t.key == args.only]
    results: Dict = {}
    try:
        for target in targets:
            try:
                results[target.key] = measure(target, fake, sink, args)
            except Exception as exc:  # a broken peer must not hide our own figures
                if target.key == "ours":
                    raise
                results[target.key] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
                say(f"[{target.key}] stopped: {results[target.key]['error']}")
            finally:
                target.stop_http()
                if not args.keep:
                    target.instance.drop_database()
        if args.incoming:
            try:
                results["incoming"] = measure_incoming(args.incoming, args.series, fake, OUT, keep=args.keep, say=say)
            except Exception as exc:  # the outgoing figures above still get their table
                if args.strict:
                    raise
                results["incoming"] = {"error": f"{type(exc).__name__}: {str(exc).strip()[:300]}"}
                say(f"[incoming] stopped: {results['incoming']['error']}")
        if args.quota:
            try:
                results["quota"] = quota.measure_quota(
                    args.quota, args.quota_rate, args.series, fake, OUT, keep=args.keep, say=say
                )
            except Exception as exc:
                if args.strict:
                    raise
                results["quota"] = {"error": f"{type(exc).__name__}: {str(exc).strip()[:300]}"}
                say(f"[quota] stopped: {results['quota']['error']}")
    finally:
        sink.stop()
        fake.stop()
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cores": os.cpu_count(),
        "series": args.series,
        "seconds": round(time.time() - started),
        "peer": str(peer_dir) if peer_dir else "",
        "load": f"{load_before:.1f} at start, {os.getloadavg()[0]:.1f} at end",
    }
    table = render(results, meta, args)
    print()
    print(table)
    (OUT / "latest.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1, default=str))
    (OUT / "latest.txt").write_text(table + "\n")
    return 0


# --------------------------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------------------------


def _per_mail_cell(row: Dict) -> str:
    text = f"{row['requests']}"
    if row["requests"] != row["expected"] or not row["ok"]:
        text += f" ({row['problem'] or 'expected ' + str(row['expected'])})"
    return text


def per_mail(r: Dict, path: str, count: int, what: str = "wall") -> float:
    """Milliseconds per mail (wall, or CPU of the Odoo process) of one drain."""
    run = r["throughput"][f"{path}:{count}"]
    if run["states"].get("sent", 0) != count:
        raise KeyError("not every mail was sent: no cost to compare")
    if what == "odoo_wall":  # the wall time less the time the fake took to answer (it shares the cores)
        return (run["wall"] - run.get("fake_seconds", 0.0)) / count * 1000
    return run[what] / count * 1000


def rate(r: Dict, path: str, count: int) -> str:
    run = r["throughput"][f"{path}:{count}"]
    states = ", ".join(f"{k} {v}" for k, v in sorted(run["states"].items()))
    if run["states"].get("sent", 0) != count or run["received"] != count:
        first = (run["errors"] or run["failures"] or ["no error recorded"])[0]
        return f"NOT ALL SENT ({states}; received {run['received']}): {first[:80]}"
    busy = f"; fake busy {run['fake_seconds']:.1f} s" if path == "graph" else ""
    return f"{count / run['wall']:.1f} mails/s ({states}; received {run['received']}{busy})"


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "-"


def render(results: Dict, meta: Dict, args) -> str:
    title = (
        f"mail_graph_api benchmarks, {meta['date']}, Odoo {meta['series']}, {meta['cores']} cores, "
        f"run {meta['seconds']} s, load average {meta['load']}"
    )
    incoming = render_table(results.get("incoming"))
    limits = quota.render_table(results.get("quota"))
    extra = [*(["", *incoming] if incoming else []), *(["", *limits] if limits else [])]
    if getattr(args, "only", None) in ("incoming", "quota"):
        return "\n".join([title, *extra])
    return "\n".join([_render_outgoing(results, title, args), *extra])


def _render_outgoing(results: Dict, title: str, args) -> str:
    ours, peer = results.get("ours"), results.get("peer")
    rows: List[Tuple[str, str, str, str]] = []

    def cell(result: Optional[Dict], get, missing: str) -> str:
        if result is None:
            return missing
        if "error" in result:
            return "not measured: " + result["error"][:90]
        try:
            return get(result)
        except (KeyError, TypeError, ZeroDivisionError):
            errors = list((result.get("errors") or {}).values())
            return "not measured" + (": " + errors[0][:90] if errors else "")

    def add(name: str, get, target: str = "") -> None:
        peer_missing = f"not measured: set {PEER_ENV}=<folder>"
        rows.append((name, cell(ours, get, "not measured (--only peer)"), cell(peer, get, peer_missing), target))

    add("1. one plain mail, nothing altered", lambda r: r["as_is"]["text"], "sent, 1 request")
    for label in EXPECTED:
        expected = expected_requests(EXPECTED[label][0])
        detail = "1" if expected == 1 else f"{expected} = draft + session + {expected - 3} PUT + send"
        add(f"1. Graph requests: {label}", lambda r, lb=label: _per_mail_cell(r["per_mail"]["mails"][lb]), detail)
    add("1. Graph requests: chatter notification", lambda r: str(r["per_mail"]["chatter_requests"]), "1")
    add(
        "1. token-endpoint calls, one worker (cold)",
        lambda r: f"{r['per_mail']['token_calls']} (+{r['per_mail']['discovery_calls']} discovery)",
        "<= 1 per token lifetime",
    )
    n = args.worker_mails
    add(
        f"1. two workers, {n} mails: token calls",
        lambda r: str(r["two_workers"]["token_calls"]),
        "<= 1 per token lifetime",
    )
    add(
        f"1. two workers, {n} mails: requests/mail",
        lambda r: (
            f"{r['two_workers']['graph_requests'] / n:.2f} ({r['two_workers']['sent']} sent, "
            f"{r['two_workers']['at_microsoft']} at Microsoft)"
        ),
        "1.00, all sent once",
    )
    add(
        f"1. two workers, {n} mails: worker errors",
        lambda r: "; ".join(e[:60] for e in r["two_workers"]["errors"]) or "none",
        "none",
    )
    for count in args.counts:
        add(f"2. N={count}: Graph -> fake", lambda r, c=count: rate(r, "graph", c))
        add(f"2. N={count}: SMTP -> sink", lambda r, c=count: rate(r, "smtp", c))
        add(
            f"2. N={count}: per-mail cost Graph/SMTP",
            lambda r, c=count: (
                f"{_ratio(per_mail(r, 'graph', c), per_mail(r, 'smtp', c))} wall "
                f"({_ratio(per_mail(r, 'graph', c, 'odoo_wall'), per_mail(r, 'smtp', c))} without the fake's "
                f"answer time), {_ratio(per_mail(r, 'graph', c, 'cpu'), per_mail(r, 'smtp', c, 'cpu'))} Odoo CPU"
            ),
            "<= 1.0",
        )
    first, last = args.counts[0], args.counts[-1]
    for count in args.counts:
        add(
            f"3. per-mail ms at N={count}, wall (Odoo CPU)",
            lambda r, c=count: (
                f"Graph {per_mail(r, 'graph', c):.1f} ({per_mail(r, 'graph', c, 'cpu'):.1f}), "
                f"SMTP {per_mail(r, 'smtp', c):.1f} ({per_mail(r, 'smtp', c, 'cpu'):.1f})"
            ),
        )
    if len(args.counts) > 1:
        add(
            f"3. per-mail cost N={last} / N={first}, wall (Odoo CPU)",
            lambda r: (
                f"Graph {_ratio(per_mail(r, 'graph', last), per_mail(r, 'graph', first))} "
                f"({_ratio(per_mail(r, 'graph', last, 'cpu'), per_mail(r, 'graph', first, 'cpu'))}), "
                f"SMTP {_ratio(per_mail(r, 'smtp', last), per_mail(r, 'smtp', first))} "
                f"({_ratio(per_mail(r, 'smtp', last, 'cpu'), per_mail(r, 'smtp', first, 'cpu'))})"
            ),
            "~1.0 (flat)",
        )
    if args.memory_mb:
        for path, target in (
            ("graph", "<= 2"),
            ("smtp", "reference: Odoo's own SMTP path"),
            ("build", "reference: Odoo builds it, no send"),
        ):

            def mem(r, path=path):
                m = r["memory"][path]
                text = f"{m['multiple']:.2f} x ({(m['peak_kb'] - m['baseline_kb']) / 1024:.0f} MB over {m['baseline_kb'] / 1024:.0f} MB)"
                if m["state"] != "sent" and path != "build":
                    text += f" NOT SENT: {m['failure'][:80]}"
                return text

            rows.append(
                (
                    f"4. peak RSS - baseline, {args.memory_mb} MB attachment, "
                    + {"graph": "Graph", "smtp": "SMTP", "build": "build only"}[path],
                    cell(ours, mem, "not measured (--only peer)"),
                    "not measured (benchmarks 1 and 2 only)",
                    target,
                )
            )
    headers = ("benchmark", "mail_graph_api (this repo)", "peer: ront85/odoo-ms-graph-api", "target / expected")
    widths = [max(len(str(row[i])) for row in [headers, *rows]) for i in range(4)]
    line = " | ".join(f"{{:<{w}}}" for w in widths)
    out = [
        title,
        line.format(*headers),
        line.format(*("-" * w for w in widths)),
    ]
    out += [line.format(*row) for row in rows]
    out.append(
        "CC and BCC: Odoo's mail queue has no Bcc (a mail.mail's envelope is To + Cc), so this one goes through "
        "ir.mail_server.send_email(email_bcc=...) as tools/demo.py sends it; every other mail through the queue."
    )
    for key in ("ours", "peer"):
        if (results.get(key) or {}).get("auth"):
            out.append(f"{key}: {results[key]['auth']}")
    if peer and "error" not in peer:
        out.append(
            'peer: apart from the "nothing altered" row, the benchmark turns the string "saveToSentItems": "true" it '
            "sends into a boolean (Graph's schema: a boolean), else the fake refuses every mail (400 RequestBodyRead)."
        )
    return "\n".join(out)
