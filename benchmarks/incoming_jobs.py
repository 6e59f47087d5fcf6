"""What the incoming benchmark runs inside Odoo (tools/odoo_exec.py; benchmarks/incoming.py drives it).

The same records in both databases (same Message-IDs), so that the same raw bytes route alike on both sides:
records with a chatter message that replies answer, partners whose address Exchange refused (their NDRs), and
a mail alias for new mail. Then one drain per half: the Graph inbox's fetch, or Odoo's own IMAP fetchmail.
"""

from __future__ import annotations

import datetime
import json
import os
import time
import urllib.request
from typing import Dict, List
from urllib.parse import parse_qs, urlparse

DOMAIN = "contoso.onmicrosoft.com"  # the tenant's domain: the catchall / alias domain
ALIAS = "inbound"
NO_SUBSCRIBE = {"mail_create_nosubscribe": True, "tracking_disable": True, "mail_notrack": True}


def thread_message_id(index: int) -> str:
    """The Message-ID of record ``index``'s chatter message, which the replies answer."""
    return f"<bench-thread-{index}@{DOMAIN}>"


def sent_message_id(index: int) -> str:
    """The Message-ID of the chatter message sent to refused partner ``index`` (its NDR refers to it)."""
    return f"<bench-sent-{index}@{DOMAIN}>"


def customer_email(index: int) -> str:
    return f"customer{index}@fabrikam.example"


def ghost_email(index: int) -> str:
    return f"ghost{index}@nowhere.example"


def setup_records(env, records: int, customers: int, ghosts: int) -> Dict:
    """Records with a chatter message each, customers (the replies' authors), refused partners with the message
    Exchange bounced, and the alias ``inbound@contoso.onmicrosoft.com`` creating partners. No followers, so a
    routed reply notifies nobody (on both sides alike)."""
    Partner = env["res.partner"].with_context(**NO_SUBSCRIBE)
    Message = env["mail.message"].with_context(**NO_SUBSCRIBE)
    env["ir.config_parameter"].set_param("mail.catchall.domain", DOMAIN)
    domain_values = {"name": DOMAIN}
    domain = env["mail.alias.domain"].search([("name", "=", DOMAIN)], limit=1) if "mail.alias.domain" in env else None
    if domain is not None and not domain:
        domain = env["mail.alias.domain"].create(domain_values)
    if domain is not None:
        env.company.alias_domain_id = domain
    deals = Partner.create([{"name": f"Deal {i} (a record with a chatter)"} for i in range(records)])
    Message.create(
        [
            {
                "model": "res.partner",
                "res_id": deal.id,
                "message_type": "comment",
                "subtype_id": env.ref("mail.mt_comment").id,
                "body": f"<p>Your quote {i} is ready.</p>",
                "subject": f"Quote {i}",
                "message_id": thread_message_id(i),
                "author_id": env.user.partner_id.id,
            }
            for i, deal in enumerate(deals)
        ]
    )
    Partner.create([{"name": f"Customer {i}", "email": customer_email(i)} for i in range(customers)])
    ghost_partners = Partner.create([{"name": f"Ghost {i}", "email": ghost_email(i)} for i in range(ghosts)])
    Message.create(
        [
            {
                "model": "res.partner",
                "res_id": ghost.id,
                "message_type": "comment",
                "subtype_id": env.ref("mail.mt_comment").id,
                "body": f"<p>Invoice {i} attached.</p>",
                "subject": f"Invoice {i}",
                "message_id": sent_message_id(i),
                "author_id": env.user.partner_id.id,
                "partner_ids": [(6, 0, ghost.ids)],
            }
            for i, ghost in enumerate(ghost_partners)
        ]
    )
    alias_values = {
        "alias_name": ALIAS,
        "alias_model_id": env["ir.model"]._get("res.partner").id,
        "alias_contact": "everyone",
    }
    if domain is not None:
        alias_values["alias_domain_id"] = domain.id
    alias = env["mail.alias"].create(alias_values)
    return {"alias": alias.display_name, "records": len(deals), "ghosts": len(ghost_partners)}


def _profiler():
    """MAIL_GRAPH_PROFILE=<dir>: cProfile statistics of each side's drains there (slower: not for figures)."""
    if not os.environ.get("MAIL_GRAPH_PROFILE"):
        return None
    import cProfile

    return cProfile.Profile(time.process_time)  # CPU, as the figures: not the wait for PostgreSQL or Graph


def _save_profile(profiler, side: str) -> None:
    if profiler is None:
        return
    profiler.disable()
    folder = os.environ["MAIL_GRAPH_PROFILE"]
    os.makedirs(folder, exist_ok=True)
    profiler.dump_stats(os.path.join(folder, f"{side}-{os.getpid()}.prof"))


def _commits(env) -> int:
    """Transactions committed in this database so far (PostgreSQL's statistics; nothing else works in this
    database during a drain). PostgreSQL 15 publishes a backend's counts when it goes idle, at most once a
    second, and an idle backend's within 10 s: waited for, outside the timed part."""
    env.cr.commit()
    time.sleep(11)
    env.cr.execute("SELECT 1")
    env.cr.commit()  # this backend's own counts are published now (more than a second since the last time)
    env.cr.execute("SELECT pg_stat_clear_snapshot()")
    env.cr.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
    return int(env.cr.fetchone()[0])


# --------------------------------------------------------------------------------------------------------
# The Graph side
# --------------------------------------------------------------------------------------------------------


def connect_graph(env, authority_url: str, graph_url: str, control_url: str) -> Dict:
    """A Graph server on the fake, signed in through the authorization code flow as the tests do it
    (mail_graph_api/tests/common.py, connect_server); its inbox reads mail received from now on."""
    import requests

    from graph_mail import DelegatedAuthFlow
    from tools.odoo_harness import graph_server_values

    server = env["ir.mail_server"].create(graph_server_values(authority_url, graph_url))
    redirect_uri = server._graph_redirect_uri()
    config = _control(control_url, "config")
    if redirect_uri not in config["redirect_uris"]:
        _control(control_url, "config", {"redirect_uris": [*config["redirect_uris"], redirect_uri]})
    action = server.action_graph_authenticate()
    answer = requests.get(action["url"], allow_redirects=False, timeout=30)
    if answer.status_code != 302:
        raise RuntimeError(f"the fake refused the sign-in: {answer.status_code} {answer.text[:200]}")
    query = {k: v[0] for k, v in parse_qs(urlparse(answer.headers["Location"]).query).items()}
    tokens = DelegatedAuthFlow(server._graph_credentials(), redirect_uri).finish(
        json.loads(server.graph_oauth_flow), query
    )
    server.graph_oauth_flow = False
    server._graph_store_tokens(tokens)
    inbox = server.graph_inbox_ids
    if len(inbox) != 1:
        raise RuntimeError(f"expected one Graph inbox on the new server, found {len(inbox)}")
    inbox.sync_since = datetime.datetime.utcnow().replace(microsecond=0)
    return {"server": server.id, "inbox": inbox.id, "state": server.graph_connection_state}


def _control(control_url: str, path: str, payload=None):
    data = json.dumps(payload).encode() if payload is not None else None
    request = urllib.request.Request(f"{control_url}/{path}", data=data, method="PATCH" if data else "GET")
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=60) as answer:
        return json.loads(answer.read())


def drain_graph(env, max_rounds: int = 50) -> Dict:
    """Fetch as the cron does (the inboxes of Graph servers) until a fetch finds nothing new."""
    from odoo.addons.mail_graph_api import compat

    Inbox = env["mail.graph.inbox"]
    env.cr.commit()
    inboxes = Inbox.search([("mail_server_id.use_graph_api", "=", True), ("origin", "!=", "fetchmail")])
    mails_before = env["mail.mail"].search_count([])
    env.cr.commit()
    commits = _commits(env)
    wall, cpu = time.perf_counter(), time.process_time()
    rounds: List[List[int]] = []
    errors: List[str] = []
    profiler = _profiler()
    if profiler is not None:
        profiler.enable()
    while len(rounds) < max_rounds:
        try:
            processed, failed = inboxes._fetch()
        except Exception as exc:  # what the cron would log before its next run
            env.cr.rollback()
            errors.append(f"{type(exc).__name__}: {str(exc).strip()[:200]}")
            processed = failed = -1
        rounds.append([processed, failed])
        if (processed, failed) == (0, 0):
            break
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    _save_profile(profiler, "graph")
    env.cr.commit()
    commits = _commits(env) - commits - 1
    compat.invalidate(inboxes)
    return {
        "commits": commits,
        "wall": wall,
        "cpu": cpu,
        "rounds": rounds,
        "errors": errors + [e for e in inboxes.mapped("last_error") if e],
        "processed": sum(max(r[0], 0) for r in rounds),
        "failed": sum(max(r[1], 0) for r in rounds),
        "mails_created": env["mail.mail"].search_count([]) - mails_before,
    }


# --------------------------------------------------------------------------------------------------------
# The IMAP side (Odoo's own fetchmail)
# --------------------------------------------------------------------------------------------------------


def create_imap_server(env, port: int, user: str, password: str) -> Dict:
    server = env["fetchmail.server"].create(
        {
            "name": "Local dovecot (benchmark)",
            "server_type": "imap",
            "server": "127.0.0.1",
            "port": port,
            "is_ssl": False,
            "user": user,
            "password": password,
        }
    )
    server.button_confirm_login()
    return {"server": server.id, "state": server.state}


def _unseen(server) -> int:
    connect = getattr(server, "_connect__", None) or server.connect  # 19.0 renamed it
    connection = connect()
    try:
        connection.select()
        _, data = connection.search(None, "(UNSEEN)")
        return len(data[0].split())
    finally:
        connection.close()
        connection.logout()


def drain_imap(env, server_id: int, max_rounds: int = 50) -> Dict:
    """fetch_mail() as the cron calls it, until nothing unseen is left; only the fetch_mail() calls are timed
    (the check between them is not)."""
    server = env["fetchmail.server"].browse(server_id)
    env.cr.commit()
    mails_before = env["mail.mail"].search_count([])
    env.cr.commit()
    commits = _commits(env)
    wall = cpu = 0.0
    rounds: List[int] = []
    errors: List[str] = []
    left = _unseen(server)
    profiler = _profiler()
    while left and len(rounds) < max_rounds:
        started_wall, started_cpu = time.perf_counter(), time.process_time()
        if profiler is not None:
            profiler.enable()
        try:
            server.fetch_mail()  # on every series (18.0's raise_exception only matters when a server fails)
        except Exception as exc:
            env.cr.rollback()
            errors.append(f"{type(exc).__name__}: {str(exc).strip()[:200]}")
        if profiler is not None:
            profiler.disable()
        wall += time.perf_counter() - started_wall
        cpu += time.process_time() - started_cpu
        now_left = _unseen(server)
        rounds.append(left - now_left)
        left = now_left
    _save_profile(profiler, "imap")
    env.cr.commit()
    commits = _commits(env) - commits - 1
    return {
        "commits": commits,
        "wall": wall,
        "cpu": cpu,
        "rounds": rounds,
        "errors": errors,
        "processed": sum(rounds),
        "left_unseen": left,
        "mails_created": env["mail.mail"].search_count([]) - mails_before,
    }


# --------------------------------------------------------------------------------------------------------
# What happened to each message
# --------------------------------------------------------------------------------------------------------


def outcomes(env, expected_file: str) -> Dict:
    """Per incoming message (kind, Message-ID, key): how many times its effect is in the database.

    reply: mail.message rows with its Message-ID (on the record it answers); alias: mail.message rows with its
    Message-ID and partners created with its subject; bounce: the refused partner's message_bounce (a bounce
    posts no message). Plus, on the Graph side, the inbox's outcome rows per Message-ID."""
    with open(expected_file) as source:
        expected = json.load(source)
    ids = [e["message_id"] for e in expected]
    parents = [e["key"] for e in expected if e["kind"] == "reply"]
    env.cr.execute("SELECT message_id, model || ',' || res_id FROM mail_message WHERE message_id = ANY(%s)", [parents])
    thread_of = dict(env.cr.fetchall())  # a reply belongs on the record of the message it answers
    env.cr.execute(
        "SELECT message_id, count(*), array_agg(DISTINCT model || ',' || res_id) FROM mail_message "
        "WHERE message_id = ANY(%s) GROUP BY message_id",
        [ids],
    )
    messages = {row[0]: (row[1], row[2]) for row in env.cr.fetchall()}
    subjects = [e["subject"] for e in expected if e["kind"] == "alias"]
    env.cr.execute("SELECT name, count(*) FROM res_partner WHERE name = ANY(%s) GROUP BY name", [subjects])
    created = dict(env.cr.fetchall())
    emails = [e["key"] for e in expected if e["kind"] == "bounce"]
    env.cr.execute("SELECT email, message_bounce FROM res_partner WHERE email = ANY(%s)", [emails])
    bounces = dict(env.cr.fetchall())
    rows: Dict[str, List[str]] = {}
    if "mail.graph.inbox.message" in env:
        env.cr.execute(
            "SELECT internet_message_id, state FROM mail_graph_inbox_message WHERE internet_message_id = ANY(%s)",
            [ids],
        )
        for message_id, state in env.cr.fetchall():
            rows.setdefault(message_id, []).append(state)
    per_kind: Dict[str, Dict[str, int]] = {}
    samples: Dict[str, List[str]] = {"missing": [], "twice": [], "misrouted": []}
    for item in expected:
        kind, message_id = item["kind"], item["message_id"]
        count, where = messages.get(message_id, (0, []))
        if kind == "reply":
            times = count
            if count and where != [thread_of.get(item["key"])] and len(samples["misrouted"]) < 5:
                samples["misrouted"].append(f"{message_id} -> {where}")
        elif kind == "alias":
            times = max(count, created.get(item["subject"], 0))
        else:
            times = bounces.get(item["key"], 0) or 0
            if count and len(samples["misrouted"]) < 5:
                samples["misrouted"].append(f"{message_id}: bounce posted as a message")
        tally = per_kind.setdefault(kind, {"messages": 0, "once": 0, "twice": 0, "missing": 0, "outcome_rows": 0})
        tally["messages"] += 1
        tally["outcome_rows"] += len(rows.get(message_id, []))
        if times == 1:
            tally["once"] += 1
        elif times == 0:
            tally["missing"] += 1
            if len(samples["missing"]) < 5:
                samples["missing"].append(f"{kind} {message_id}")
        else:
            tally["twice"] += 1
            if len(samples["twice"]) < 5:
                samples["twice"].append(f"{kind} {message_id} x{times}")
    outcome_states: Dict[str, int] = {}
    for states in rows.values():
        for state in states:
            outcome_states[state] = outcome_states.get(state, 0) + 1
    misrouted = 0
    for item in expected:
        count, where = messages.get(item["message_id"], (0, []))
        if item["kind"] == "reply" and count and where != [thread_of.get(item["key"])]:
            misrouted += 1
    return {
        "misrouted_replies": misrouted,
        "per_kind": per_kind,
        "samples": samples,
        "outcome_states": outcome_states,
        "outcome_rows_more_than_one": sum(1 for states in rows.values() if len(states) > 1),
        "bounce_total": sum(v or 0 for v in bounces.values()),
    }
