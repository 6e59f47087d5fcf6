"""Functions the suite runs inside a real Odoo process (tools/odoo_exec.py, via tools/odoo_harness.py).

Each gets a superuser ``env``; what it returns comes back as JSON; its transaction is committed when it returns.
"""

from __future__ import annotations

import time
from typing import Any, Dict, List

SECRET_FIELDS = (
    "graph_client_secret",
    "graph_refresh_token",
    "graph_access_token",
    "graph_certificate",
    "graph_oauth_flow",
)


def _states(env, mail_ids: List[int]) -> List[Dict[str, Any]]:
    mails = env["mail.mail"].browse(mail_ids)
    _compat().invalidate(mails)
    fields = ["state", "failure_reason", "message_id"] + (["failure_type"] if "failure_type" in mails._fields else [])
    return mails.read(fields)  # 14.0's mail.mail has no failure_type


def drain(env, mail_ids: List[int], start_at: float = 0.0) -> List[Dict[str, Any]]:
    """A mail worker: Odoo's cron entry point, restricted to these mails. ``start_at`` (epoch seconds) lines
    several workers up so that they really run at the same time."""
    time.sleep(max(0.0, start_at - time.time()))
    env["mail.mail"].process_email_queue(mail_ids)  # by position: 19.0 renamed it email_ids
    return _states(env, mail_ids)


def drain_until_empty(
    env, mail_ids: List[int], start_at: float = 0.0, descending: bool = False, chunk: int = 25, deadline: float = 900.0
) -> Dict[str, Any]:
    """A mail worker under load: Odoo's cron entry point (``process_email_queue``) over these mails, chunk by
    chunk, until none is left outgoing. Two of them start from opposite ends (``descending``) and meet in the
    middle, where they fight over the same rows.

    ``process_email_queue`` commits after every mail and logs, not raises, what stops it (a serialization
    failure when the other worker holds a mail): the transaction is then aborted. That is counted, rolled back,
    and the chunk tried again on the next round, as the next cron run would."""
    from psycopg2.extensions import TRANSACTION_STATUS_INERROR

    time.sleep(max(0.0, start_at - time.time()))
    Mail = env["mail.mail"]
    ordered = sorted(mail_ids, reverse=descending)
    pending = [ordered[i : i + chunk] for i in range(0, len(ordered), chunk)]
    aborted = rounds = 0
    started = time.time()
    while pending and time.time() - started < deadline:
        rounds += 1
        again = []
        for ids in pending:
            Mail.process_email_queue(ids)
            if env.cr._cnx.get_transaction_status() == TRANSACTION_STATUS_INERROR:
                aborted += 1
            env.cr.rollback()  # every mail it sent is committed already
            if Mail.search_count([("id", "in", ids), ("state", "=", "outgoing")]):
                again.append(ids)
        pending = again
        if pending:
            time.sleep(0.1)
    return {"aborted": aborted, "rounds": rounds, "seconds": round(time.time() - started, 1)}


def send_then_rollback(env, mail_ids: List[int]) -> Dict[str, Any]:
    """Graph accepts the mails, then the sending transaction rolls back (a serialization failure, a lost
    database connection, a crash before the commit): Odoo's records say nothing was sent."""
    mails = env["mail.mail"].browse(mail_ids)
    mails.send(auto_commit=False)
    inside = [row["state"] for row in _states(env, mail_ids)]
    env.cr.rollback()
    return {"inside_transaction": inside, "after_rollback": [row["state"] for row in _states(env, mail_ids)]}


def make_states(env, server_id: int, uid: int = 2, stale: int = 700) -> Dict[str, str]:
    """OAuth states this database signs for ``uid``: a fresh one and one older than its lifetime."""
    from odoo.addons.mail_graph_api.oauth_state import make_state

    user_env = env(user=uid)
    return {
        "fresh": make_state(user_env, server_id),
        "expired": make_state(user_env, server_id, now=time.time() - stale),
        "db": env.cr.dbname,
    }


def create_users(env, users: List[Dict[str, str]]) -> Dict[str, int]:
    """Users with a password, in the named groups (xml ids, comma separated)."""
    created = {}
    groups_field = "group_ids" if "group_ids" in env["res.users"]._fields else "groups_id"  # 19.0 renamed it
    for spec in users:
        groups = [env.ref(xmlid.strip()).id for xmlid in spec["group"].split(",")]
        user = (
            env["res.users"]
            .with_context(no_reset_password=True)
            .create(
                {
                    "name": spec["login"],
                    "login": spec["login"],
                    "password": spec["password"],
                    "email": f"{spec['login']}@contoso.example",
                    groups_field: [(6, 0, groups)],
                }
            )
        )
        created[spec["login"]] = user.id
    return created


def orm_access(env, server_id: int, logins: List[str]) -> Dict[str, Dict[str, str]]:
    """What each user gets from the ORM when reaching for secrets and logs: "refused ..." or "ALLOWED ..."."""
    from odoo.exceptions import AccessError, UserError

    server = env["ir.mail_server"].browse(server_id)
    secrets = [str(server[name]) for name in SECRET_FIELDS if server[name]]
    results: Dict[str, Dict[str, str]] = {}
    for login in logins:
        user = env["res.users"].search([("login", "=", login)])
        as_user = server.with_user(user)
        logs = env["mail.graph.api.log"].with_user(user)
        attempts = {
            "read secret fields": lambda as_user=as_user: [as_user.read([name]) for name in SECRET_FIELDS],
            "read all fields": lambda as_user=as_user: as_user.read(),
            "search by a secret (oracle)": lambda as_user=as_user: as_user.search_count(
                [("graph_refresh_token", "!=", False)]
            ),
            "export secret fields": lambda as_user=as_user: as_user.export_data(list(SECRET_FIELDS)),
            "search the log model": lambda logs=logs: logs.search_read([], ["message_id", "path"]),
            "export the log model": lambda logs=logs: logs.search([]).export_data(["message_id", "path"]),
        }
        outcome = {}
        for name, attempt in attempts.items():
            try:
                with env.cr.savepoint():
                    got = attempt()
            except (AccessError, UserError) as error:
                outcome[name] = f"refused ({type(error).__name__}: {str(error).splitlines()[0][:80]})"
                continue
            text = repr(got)
            leaked = [s for s in secrets if s in text]
            outcome[name] = f"ALLOWED, {'LEAKED a secret' if leaked else 'no secret in the answer'}: {text[:80]}"
        results[login] = outcome
    return results


def _compat():
    """The addon's series differences (imported inside Odoo only: this module is also imported without it)."""
    from odoo.addons.mail_graph_api import compat

    return compat


def fetch_inbox(
    env, inbox_id: int, die_after_commits: int = 0, die_before_commit: int = 0, refuse_snapshot_at: int = 0
) -> Dict[str, Any]:
    """A worker fetching a Graph inbox, as the cron does. ``die_after_commits``: the process dies (kill -9
    style, no cleanup) right after its Nth commit (the 2nd: a batch's processing, before it is filed);
    ``die_before_commit``: right before its Nth commit (Odoo's work on that batch is lost with it);
    ``refuse_snapshot_at``: PostgreSQL refuses the snapshot while the Nth message is processed, as when another
    worker changed the same record (the batch is rolled back)."""
    import os

    from psycopg2.errors import SerializationFailure

    from odoo.addons.mail_graph_api.models import mail_graph_inbox

    if refuse_snapshot_at:
        Thread = type(env["mail.thread"])
        process = Thread.message_process
        seen = {"n": 0}

        def message_process(thread, *args, **kwargs):
            seen["n"] += 1
            result = process(thread, *args, **kwargs)
            if seen["n"] == refuse_snapshot_at:
                raise SerializationFailure("could not serialize access due to concurrent update")
            return result

        Thread.message_process = message_process
    commits = {"n": 0}
    original = mail_graph_inbox.MailGraphInbox._commit

    def commit(self):
        commits["n"] += 1
        if die_before_commit and commits["n"] == die_before_commit:
            os._exit(9)
        original(self)
        if die_after_commits and commits["n"] == die_after_commits:
            os._exit(9)

    mail_graph_inbox.MailGraphInbox._commit = commit
    done, failed = env["mail.graph.inbox"].browse(inbox_id)._fetch()
    return {"processed": done, "failed": failed}
