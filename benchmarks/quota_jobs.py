"""What the sending-limits benchmark runs inside Odoo (tools/odoo_exec.py; benchmarks/quota.py drives it)."""

from __future__ import annotations

import time
from typing import Dict, List

MAILBOXES = [
    "admin@contoso.onmicrosoft.com",
    "sales@contoso.onmicrosoft.com",
    "noreply@contoso.onmicrosoft.com",
    "support@contoso.onmicrosoft.com",
]


def create_servers(env, authority_url: str, graph_url: str, mailboxes: int, rate: int, daily: int) -> List[int]:
    """``mailboxes`` Graph servers in one pool (application mode: the app may send as each mailbox), with the
    given limits; the first one is the one the mail names."""
    from tools.odoo_harness import graph_server_values

    Server = env["ir.mail_server"]
    Server.search([]).write({"active": False})
    ids = []
    for index, mailbox in enumerate(MAILBOXES[:mailboxes]):
        values = graph_server_values(
            authority_url,
            graph_url,
            name=f"Graph {mailbox}",
            graph_auth_mode="application_secret",
            graph_sender_email=mailbox,
            graph_pool="bench" if mailboxes > 1 else False,
            graph_rate_limit=rate,
            graph_daily_recipient_limit=daily,
            graph_fetch_inbox=False,
            sequence=10 + index,
        )
        ids.append(Server.create(values).id)
    return ids


def queue(env, count: int, server_id: int, label: str) -> Dict:
    """``count`` mails of one recipient each, in the queue, naming the pool's first server."""
    Mail = env["mail.mail"].sudo()
    values = [
        {
            "subject": f"[quota bench {label}] #{n}",
            "body_html": f"<p>Quota benchmark mail {n}.</p>",
            "email_from": "admin@contoso.onmicrosoft.com",
            "email_to": f"reader{n}@fabrikam.example",
            "mail_server_id": server_id,
            "auto_delete": False,
        }
        for n in range(count)
    ]
    mails = Mail.create(values)
    env.cr.commit()
    return {"ids": mails.ids}


def drain(env, ids: List[int], tick: float = 1.0, timeout: float = 3600) -> Dict:
    """Queue runs one after the other (``tick`` seconds apart when one sent nothing), as a busy cron would, until
    every mail is sent or failed. Wall time from the first run to the last mail sent, and this process's CPU."""
    Mail = env["mail.mail"].sudo()
    started, cpu = time.monotonic(), time.process_time()
    runs = idle_runs = 0
    last_sent_at = started
    done = 0
    while time.monotonic() - started < timeout:
        Mail.process_email_queue(ids)  # by position: 19.0 renamed the argument
        env.cr.commit()
        runs += 1
        env.cr.execute("SELECT count(*) FROM mail_mail WHERE id IN %s AND state != 'outgoing'", (tuple(ids),))
        now_done = env.cr.fetchone()[0]
        if now_done > done:
            last_sent_at, done = time.monotonic(), now_done
        else:
            idle_runs += 1
            time.sleep(tick)
        if done == len(ids):
            break
    env.cr.execute("SELECT state, count(*) FROM mail_mail WHERE id IN %s GROUP BY state", (tuple(ids),))
    states = dict(env.cr.fetchall())
    return {
        "wall": last_sent_at - started,
        "cpu": time.process_time() - cpu,
        "runs": runs,
        "idle_runs": idle_runs,
        "states": states,
    }


def message_ids(env, label: str) -> List[str]:
    """The Message-IDs of one leg's mails (by subject: 2,000 of them do not fit on a command line)."""
    mails = env["mail.mail"].sudo().search([("subject", "=like", f"[quota bench {label}] #%")])
    return mails.mapped("message_id")  # subject and Message-ID live on mail.message (_inherits)


def pool_rows(env, label: str) -> Dict:
    sent = tuple(message_ids(env, label))
    env.cr.execute(
        "SELECT s.graph_sender_email, count(*) FROM mail_graph_api_log l JOIN ir_mail_server s "
        "ON s.id = l.mail_server_id WHERE l.operation = 'sendMail' AND l.outcome = 'ok' AND l.message_id IN %s "
        "GROUP BY 1",
        (sent,),
    )
    by_mailbox = dict(env.cr.fetchall())
    env.cr.execute(
        "SELECT count(*) FROM mail_graph_api_log WHERE operation = 'mailbox_pool' AND message_id IN %s",
        (sent,),
    )
    return {"sent_by": by_mailbox, "failovers": env.cr.fetchone()[0]}
