"""Incoming mail (issue #15, point 6): N messages read by Odoo over Graph against the same N read by Odoo's own
IMAP fetchmail from a local dovecot, side by side in one run.

The message set (the same raw bytes on both sides): replies to records' chatter messages (In-Reply-To and
References name an existing mail.message), Exchange NDRs for mail Odoo sent (fake_microsoft.ndr.build_ndr on an
original whose Message-ID is an existing mail.message), and new mail to an alias
(inbound@contoso.onmicrosoft.com, creating partners). Each side has its own fresh database with the same
records (benchmarks/incoming_jobs.py: setup_records).

Graph: the messages are delivered into the fake mailbox of the Graph server's sender; a fresh Odoo process
fetches the inboxes as the cron does until a fetch finds nothing new. IMAP: the messages are APPENDed to
dovecot's INBOX; a fresh Odoo process calls fetch_mail() until nothing unseen is left. Each side gets its N in
four parts, in the order IMAP, Graph, Graph, IMAP, Graph, IMAP, IMAP, Graph (a drift of the shared machine
weighs on both alike). Counted: Graph requests at the fake (identity routes left out; calls the fake marks
"batched" are operations inside one HTTP request), Odoo CPU (time.process_time() in the Odoo process around the
draining), wall time, and what became of each message in the database.
"""

from __future__ import annotations

import base64
import email.utils
import json
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from benchmarks import incoming_jobs as shape
from benchmarks.dovecot import PASSWORD, USER, Dovecot
from fake_microsoft import FakeMicrosoft
from fake_microsoft.ndr import build_ndr, recipient_not_found
from tools.odoo_harness import OdooInstance
from tools.odoo_tier import REPO

JOBS = "benchmarks.incoming_jobs"
IDENTITY_ROUTES = {"openid", "instance", "keys", "authorize", "token"}
SENDER = "admin@contoso.onmicrosoft.com"  # the fake's default signed-in mailbox: the Graph server's sender
DATE = "Fri, 05 Dec 2026 09:00:00 +0000"
# Each side reads its N in four parts, in the order below (ABBA BAAB): a drift of the shared machine, and the
# first leg's warm-up, weigh on both sides alike.
PARTS = 4
LEG_ORDER = ("imap", "graph", "graph", "imap", "graph", "imap", "imap", "graph")
REQUESTS_TARGET = 1.05
CPU_TARGET = 1.0


# --------------------------------------------------------------------------------------------------------
# The message set
# --------------------------------------------------------------------------------------------------------


def plan(count: int) -> Tuple[int, int, int]:
    """(replies, bounces, alias mails): half replies, a quarter each bounces and new mail to the alias."""
    replies = count // 2
    bounces = count // 4
    return replies, bounces, count - replies - bounces


def records_for(replies: int) -> int:
    """One reply per record: Odoo makes a reply's author a follower of the record, so a second reply to the same
    record would notify the first author by mail (sent through Graph on one side, refused by the missing SMTP
    server on the other): outgoing mail this benchmark does not measure."""
    return max(1, replies)


def _reply(index: int, records: int) -> Tuple[bytes, Dict]:
    """A customer's answer to a record's chatter mail: text + HTML, 1 in 10 with a 20 KiB PDF."""
    parent = shape.thread_message_id(index % records)
    message_id = f"<in-reply-{index}@fabrikam.example>"
    boundary, alt = f"=_mix_{index:06d}", f"=_alt_{index:06d}"
    text = f"Hello,\r\n\r\nThanks for quote {index % records}. We agree with the terms.\r\n\r\nRegards,\r\nCustomer {index}\r\n"
    quoted = "".join(f"> line {n} of the quote you sent us, kept by the mail client.\r\n" for n in range(12))
    html = (
        "<html><body><p>" + text.replace("\r\n", "<br>") + "</p><blockquote>" + quoted + "</blockquote></body></html>"
    )
    body = (
        f"--{alt}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n{quoted}\r\n"
        f"--{alt}\r\nContent-Type: text/html; charset=utf-8\r\n\r\n{html}\r\n--{alt}--\r\n"
    )
    if index % 10 == 0:
        pdf = base64.encodebytes(b"%PDF-1.4 signed order " + bytes(range(256)) * 80).decode().replace("\n", "\r\n")
        content_type = f'multipart/mixed; boundary="{boundary}"'
        body = (
            f'--{boundary}\r\nContent-Type: multipart/alternative; boundary="{alt}"\r\n\r\n{body}\r\n'
            f'--{boundary}\r\nContent-Type: application/pdf; name="order-{index}.pdf"\r\n'
            f'Content-Disposition: attachment; filename="order-{index}.pdf"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
            f"{pdf}\r\n--{boundary}--\r\n"
        )
    else:
        content_type = f'multipart/alternative; boundary="{alt}"'
    head = (
        f"From: Customer {index} <{shape.customer_email(index)}>\r\nTo: Contoso Sales <{SENDER}>\r\n"
        f"Subject: Re: Quote {index % records}\r\nMessage-ID: {message_id}\r\nDate: {DATE}\r\n"
        f"In-Reply-To: {parent}\r\nReferences: {parent}\r\nMIME-Version: 1.0\r\nContent-Type: {content_type}\r\n"
    )
    return (head + "\r\n" + body).encode(), {"kind": "reply", "message_id": message_id, "key": parent}


def _bounce(index: int) -> Tuple[bytes, Dict]:
    """Exchange's NDR for the chatter mail Odoo sent to a refused partner (the original embedded whole)."""
    original = (
        f"From: Contoso Sales <{SENDER}>\r\nTo: Ghost {index} <{shape.ghost_email(index)}>\r\n"
        f"Subject: Invoice {index}\r\nMessage-ID: {shape.sent_message_id(index)}\r\nDate: {DATE}\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
        + "<p>Dear Ghost, your invoice is attached. Thank you for your business.</p>" * 20
        + "\r\n"
    ).encode()
    raw = build_ndr(
        original, SENDER, [recipient_not_found(shape.ghost_email(index))], shape.DOMAIN, 1_796_461_200.0 + index
    )
    message_id = email.message_from_bytes(raw)["Message-ID"]
    return raw, {"kind": "bounce", "message_id": message_id, "key": shape.ghost_email(index)}


def _alias(index: int) -> Tuple[bytes, Dict]:
    """New mail to the alias from someone Odoo does not know yet (one sender each: Odoo's loop guard counts
    records created per sender)."""
    message_id = f"<in-alias-{index}@fabrikam.example>"
    subject = f"Bench lead {index}: request for a quote"
    text = "".join(f"We would like a quote for item {n}, quantity {n * 10 + index % 7}.\r\n" for n in range(15))
    raw = (
        f"From: Prospect {index} <lead{index}@fabrikam.example>\r\nTo: <{shape.ALIAS}@{shape.DOMAIN}>\r\n"
        f"Subject: {subject}\r\nMessage-ID: {message_id}\r\nDate: {DATE}\r\nMIME-Version: 1.0\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\n\r\nHello,\r\n\r\n{text}\r\nBest regards\r\n"
    ).encode()
    return raw, {"kind": "alias", "message_id": message_id, "key": "", "subject": subject}


def message_set(count: int) -> List[Tuple[bytes, Dict]]:
    """``count`` raw messages, the three kinds interleaved (reply, reply, bounce, alias, ...)."""
    replies, bounces, aliases = plan(count)
    records = records_for(replies)
    queues = {
        "reply": [_reply(i, records) for i in range(replies)],
        "bounce": [_bounce(i) for i in range(bounces)],
        "alias": [_alias(i) for i in range(aliases)],
    }
    pattern = ["reply", "reply", "bounce", "alias"]
    out: List[Tuple[bytes, Dict]] = []
    while any(queues.values()):
        for kind in pattern:
            if queues[kind]:
                out.append(queues[kind].pop(0))
    for raw, item in out:
        item.setdefault("subject", "")
        item["bytes"] = len(raw)
    return out


# --------------------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------------------


def _calls_since(fake: FakeMicrosoft, mark: int) -> List[Dict]:
    with fake.state.lock:
        return [dict(c) for c in fake.state.calls[mark:]]


def _calls_mark(fake: FakeMicrosoft) -> int:
    with fake.state.lock:
        return len(fake.state.calls)


def _folders(fake: FakeMicrosoft) -> Dict[str, int]:
    counts: Dict[str, int] = {}
    for message in fake.mailbox_messages(SENDER):
        counts[message["folder"]] = counts.get(message["folder"], 0) + 1
    return counts


def _parallel(*jobs: Callable[[], None]) -> None:
    """Run blocking set-up steps (database installs) side by side; re-raise the first failure."""
    failures: List[BaseException] = []

    def run(job):
        try:
            job()
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]


def measure_incoming(
    count: int, series: str, fake: FakeMicrosoft, out: Path, keep: bool = False, say: Callable[[str], None] = print
) -> Dict:
    """Both sides, N = ``count``; the result dict render_rows() reads."""
    messages = message_set(count)
    expected = [item for _, item in messages]
    replies, bounces, aliases = plan(count)
    size = sum(len(raw) for raw, _ in messages)
    say(
        f"[incoming] {count} messages ({replies} replies, {bounces} NDR bounces, {aliases} new mail to an alias; "
        f"{size / 1024 / 1024:.1f} MB in all)"
    )
    pid = os.getpid()
    graph_db = OdooInstance(series, db=f"mga_bench_in_graph_{pid}", logdir=out / "logs")
    imap_db = OdooInstance(series, db=f"mga_bench_in_imap_{pid}", logdir=out / "logs")
    dovecot = Dovecot(out / "dovecot")
    results: Dict = {
        "code": _code_state(),
        "count": count,
        "mix": {"reply": replies, "bounce": bounces, "alias": aliases},
        "bytes": size,
        "graph": {},
        "imap": {},
    }
    try:
        started = time.time()
        say(f"[incoming] creating {graph_db.db} and {imap_db.db} (mail_graph_api in both) side by side")
        _parallel(graph_db.create_database, imap_db.create_database)
        say(f"[incoming] installed in {time.time() - started:.0f} s; records, alias and servers")
        for db in (graph_db, imap_db):
            results["setup"] = db.call(
                f"{JOBS}:setup_records", records=records_for(replies), customers=replies, ghosts=bounces
            )
        connection = graph_db.call(
            f"{JOBS}:connect_graph",
            authority_url=fake.url,
            graph_url=fake.graph_url,
            control_url=fake.control_url,
        )
        results["graph"]["connection"] = connection["state"]
        dovecot.start()
        results["imap"]["dovecot"] = {"port": dovecot.port, "conf": str(dovecot.conf), "mail_user": dovecot.mail_user}
        imap_server = imap_db.call(f"{JOBS}:create_imap_server", port=dovecot.port, user=USER, password=PASSWORD)
        results["imap"]["server_state"] = imap_server["state"]
        say(
            f"[incoming] Graph server {connection['state']}; dovecot on 127.0.0.1:{dovecot.port} "
            f"(conf {dovecot.conf}), fetchmail server {imap_server['state']}"
        )
        time.sleep(1.1)  # Odoo keeps datetimes to the second: every delivery comes after the inbox's sync_since
        parts = [messages[i * count // PARTS : (i + 1) * count // PARTS] for i in range(PARTS)]
        legs: Dict[str, List[Dict]] = {"graph": [], "imap": []}
        for path in LEG_ORDER:
            batch = parts[len(legs[path])]
            if not batch:
                continue
            say(f"[incoming] {path.upper()}: {len(batch)} of {count} messages")
            if path == "graph":
                leg = _graph_leg(graph_db, fake, batch)
            else:
                leg = _imap_leg(imap_db, dovecot, imap_server["server"], batch)
            legs[path].append(leg)
            say(
                f"    processed {leg['processed']} ({leg.get('failed', 0)} failed); {leg['wall']:.1f} s wall, "
                f"{leg['cpu']:.1f} s Odoo CPU"
                + (
                    f"; {leg['http_requests']} Graph requests, fake busy {leg['fake_seconds']:.1f} s"
                    if path == "graph"
                    else ""
                )
                + (f"; errors: {leg['errors'][:1]}" if leg["errors"] else "")
            )
        results["graph"].update(_merge(legs["graph"]))
        results["imap"].update(_merge(legs["imap"]))
        results["graph"]["folders"] = _folders(fake)
        results["imap"]["mailbox"] = dovecot.counts()
        expected_file = out / "incoming-expected.json"
        expected_file.write_text(json.dumps(expected))
        for path, db in (("graph", graph_db), ("imap", imap_db)):
            results[path]["outcomes"] = db.call(f"{JOBS}:outcomes", expected_file=str(expected_file))
    finally:
        dovecot.stop()
        if not keep:
            graph_db.drop_database()
            imap_db.drop_database()
    return results


def _code_state() -> str:
    """The commit measured, and whether the addon, the core or the fake had uncommitted changes then."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO).stdout
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--", "mail_graph_api", "graph_mail", "fake_microsoft"],
            capture_output=True,
            text=True,
            cwd=REPO,
        ).stdout.split("\n")
    except OSError:
        return "unknown"
    dirty = [line[3:] for line in changed if line.strip()]
    return head.strip() + (f" + uncommitted changes in {', '.join(dirty)}" if dirty else "")


def _graph_leg(db: OdooInstance, fake: FakeMicrosoft, batch: List[Tuple[bytes, Dict]]) -> Dict:
    for raw, _ in batch:
        fake.deliver(SENDER, raw)
    mark = _calls_mark(fake)
    leg = db.call(f"{JOBS}:drain_graph", timeout=3600)
    calls = [c for c in _calls_since(fake, mark) if c["route"] not in IDENTITY_ROUTES]
    http = [c for c in calls if not c.get("batched")]  # what went over the wire, $batch envelopes included
    operations = [c for c in calls if c["route"] != "batch"]  # what Graph did: inner requests, not envelopes
    routes: Dict[str, int] = {}
    for call in http:
        routes[call["route"]] = routes.get(call["route"], 0) + 1
    operation_routes: Dict[str, int] = {}
    for call in operations:
        operation_routes[call["route"]] = operation_routes.get(call["route"], 0) + 1
    leg.update(
        messages=len(batch),
        http_requests=len(http),
        operations=len(operations),
        routes=routes,
        operation_routes=operation_routes,
        refused=sum(1 for c in http if c["status"] and c["status"] >= 400),
        token_calls=sum(1 for c in _calls_since(fake, mark) if c["route"] == "token"),
        fake_seconds=sum(c["duration_ms"] or 0 for c in calls if not c.get("batched")) / 1000,
    )
    return leg


def _imap_leg(db: OdooInstance, dovecot: Dovecot, server_id: int, batch: List[Tuple[bytes, Dict]]) -> Dict:
    dovecot.append(raw for raw, _ in batch)
    leg = db.call(f"{JOBS}:drain_imap", server_id=server_id, timeout=3600)
    leg["messages"] = len(batch)
    return leg


def _merge(legs: List[Dict]) -> Dict:
    merged: Dict = {"errors": [], "legs": legs}
    for leg in legs:
        for key, value in leg.items():
            if key == "errors":
                merged["errors"].extend(value)
            elif key in ("routes", "operation_routes"):
                for route, number in value.items():
                    merged.setdefault(key, {})
                    merged[key][route] = merged[key].get(route, 0) + number
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                merged[key] = merged.get(key, 0) + value
    return merged


# --------------------------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------------------------


def _verdict(ok: bool) -> str:
    return "ok" if ok else "NOT ok"


def _fate(side: Dict) -> Dict[str, int]:
    kinds = side["outcomes"]["per_kind"].values()
    return {key: sum(k[key] for k in kinds) for key in ("messages", "once", "twice", "missing", "outcome_rows")}


def render_rows(incoming: Optional[Dict]) -> List[Tuple[str, str, str, str]]:
    """(benchmark, Graph inbox, IMAP fetchmail, target) rows; measured figures only, verdicts beside them."""
    if not incoming:
        return []
    if "error" in incoming:
        return [("incoming: not measured", incoming["error"][:120], "", "")]
    n = incoming["count"]
    graph, imap = incoming["graph"], incoming["imap"]
    rows: List[Tuple[str, str, str, str]] = []
    mix = incoming["mix"]
    rows.append(
        (
            f"incoming: N={n} messages",
            f"{mix['reply']} replies, {mix['bounce']} NDR bounces, {mix['alias']} to an alias; "
            f"{incoming['bytes'] / 1024 / 1024:.1f} MB",
            "the same raw bytes",
            "",
        )
    )
    try:
        per = graph["http_requests"] / n

        def listed(routes: Dict[str, int]) -> str:
            return ", ".join(f"{k} {v}" for k, v in sorted(routes.items(), key=lambda kv: -kv[1]))

        text = f"{per:.2f} {_verdict(per <= REQUESTS_TARGET)} ({graph['http_requests']} HTTP requests: "
        text += listed(graph.get("routes", {}))
        if graph.get("routes", {}).get("batch"):
            text += f"; {graph['operations']} operations, a batch's contents one by one: {listed(graph.get('operation_routes', {}))}"
        rows.append(
            (
                "incoming: Graph requests per message",
                text + ")",
                "- (IMAP: one connection per fetch)",
                f"<= {REQUESTS_TARGET}",
            )
        )
    except (KeyError, ZeroDivisionError):
        rows.append(("incoming: Graph requests per message", "not measured", "-", f"<= {REQUESTS_TARGET}"))
    try:
        g_cpu, i_cpu = graph["cpu"] / n * 1000, imap["cpu"] / n * 1000
        ratio = g_cpu / i_cpu
        rows.append(
            (
                "incoming: Odoo CPU per message Graph/IMAP",
                f"{ratio:.2f} {_verdict(ratio <= CPU_TARGET)} (Graph {g_cpu:.1f} ms)",
                f"IMAP {i_cpu:.1f} ms",
                f"<= {CPU_TARGET}",
            )
        )
        if "commits" in graph and "commits" in imap:
            rows.append(
                (
                    "incoming: database commits per message (drain)",
                    f"{graph['commits'] / n:.2f}",
                    f"{imap['commits'] / n:.2f}",
                    "",
                )
            )
        rows.append(
            (
                "incoming: wall time (messages/s)",
                f"{graph['wall']:.1f} s ({n / graph['wall']:.1f}/s; fake busy {graph['fake_seconds']:.1f} s)",
                f"{imap['wall']:.1f} s ({n / imap['wall']:.1f}/s)",
                "",
            )
        )
    except (KeyError, ZeroDivisionError):
        rows.append(("incoming: Odoo CPU per message Graph/IMAP", "not measured", "not measured", f"<= {CPU_TARGET}"))
    try:
        g_fate, i_fate = _fate(graph), _fate(imap)
        folders = graph.get("folders", {})
        mailbox = imap.get("mailbox", {})
        rows.append(
            (
                "incoming: processed once (effect in the database)",
                f"{g_fate['once']} of {n} (fetch said {graph['processed']} processed, {graph.get('failed', 0)} failed)",
                f"{i_fate['once']} of {n} (fetch_mail took {imap['processed']})",
                f"{n}",
            )
        )
        rows.append(
            (
                "incoming: lost / processed twice",
                f"{g_fate['missing']} / {g_fate['twice']} {_verdict(not g_fate['missing'] and not g_fate['twice'])}",
                f"{i_fate['missing']} / {i_fate['twice']} {_verdict(not i_fate['missing'] and not i_fate['twice'])}",
                "0 / 0",
            )
        )
        rows.append(
            (
                "incoming: left in the mailbox unprocessed",
                f"{folders.get('Inbox', 0)} in Inbox (Odoo Processed {folders.get('Odoo Processed', 0)}, "
                f"Odoo Errors {folders.get('Odoo Errors', 0)})",
                f"{mailbox.get('unseen', '?')} unseen of {mailbox.get('total', '?')} in INBOX",
                "0",
            )
        )
        if "misrouted_replies" in graph["outcomes"]:
            replies = incoming["mix"]["reply"]
            rows.append(
                (
                    "incoming: replies on the record they answer",
                    f"{replies - graph['outcomes']['misrouted_replies'] - graph['outcomes']['per_kind'].get('reply', {}).get('missing', 0)} of {replies}",
                    f"{replies - imap['outcomes']['misrouted_replies'] - imap['outcomes']['per_kind'].get('reply', {}).get('missing', 0)} of {replies}",
                    f"{replies}",
                )
            )
        states = graph["outcomes"]["outcome_states"]
        rows.append(
            (
                "incoming: Graph outcome rows (mail.graph.inbox.message)",
                f"{g_fate['outcome_rows']} rows ({', '.join(f'{k} {v}' for k, v in sorted(states.items()))}); "
                f"{graph['outcomes']['outcome_rows_more_than_one']} Message-IDs with more than one",
                "- (fetchmail keeps none)",
                f"{n}, one each",
            )
        )
        rows.append(
            (
                "incoming: bounces counted (message_bounce)",
                f"{graph['outcomes']['bounce_total']} of {incoming['mix']['bounce']}",
                f"{imap['outcomes']['bounce_total']} of {incoming['mix']['bounce']}",
                f"{incoming['mix']['bounce']}",
            )
        )
        rows.append(
            (
                "incoming: outgoing mail caused by processing",
                f"{graph.get('mails_created', '?')} queued, {graph.get('routes', {}).get('sendMail', 0)} sent (sendMail)",
                f"{imap.get('mails_created', '?')} queued",
                "0 (not measured here)",
            )
        )
    except KeyError as exc:
        rows.append(("incoming: outcomes", f"not measured ({exc})", "", ""))
    errors = [f"Graph: {e[:100]}" for e in graph.get("errors", [])[:2]] + [
        f"IMAP: {e[:100]}" for e in imap.get("errors", [])[:2]
    ]
    if errors:
        rows.append(("incoming: errors", "; ".join(errors), "", "none"))
    return rows


def columns(headers: Sequence[str], rows: List[Sequence[Any]]) -> List[str]:
    """A plain text table: a header, a rule, the rows, each column as wide as its widest cell."""
    widths = [max(len(str(row[i])) for row in [headers, *rows]) for i in range(len(headers))]
    line = " | ".join(f"{{:<{w}}}" for w in widths)
    return [line.format(*headers), line.format(*("-" * w for w in widths)), *(line.format(*row) for row in rows)]


def render_table(incoming: Optional[Dict]) -> List[str]:
    rows = render_rows(incoming)
    if not rows:
        return []
    headers = ("incoming benchmark", "Graph inbox (fake Microsoft)", "Odoo IMAP fetchmail (dovecot)", "target")
    out = columns(headers, rows)
    if incoming.get("code"):
        out.append(f"incoming: code measured: {incoming['code']}")
    dovecot = incoming.get("imap", {}).get("dovecot") if incoming else None
    if dovecot:
        out.append(
            f"incoming: dovecot {dovecot['conf']} on 127.0.0.1:{dovecot['port']}, no SSL, static passdb/userdb, "
            f"Maildir, mail user {dovecot['mail_user']}"
        )
    return out
