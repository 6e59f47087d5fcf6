"""Functions the process tests run inside a real Odoo (through tools/odoo_harness.py), one process each.

They use the ORM as an Odoo worker does: no test transaction, real commits, real sending.
"""

from __future__ import annotations

import json
import time
from urllib.parse import parse_qs, urlparse

import requests

from fake_microsoft import DEFAULTS
from graph_mail import DelegatedAuthFlow
from tools.odoo_harness import graph_server_values

BASE_URL = "http://127.0.0.1:8069"  # web.base.url of the test database: the redirect URI the fake accepts
SENDER = DEFAULTS["signed_in_user"]


def configure_server(env, authority_url: str, graph_url: str) -> dict:
    """A Graph mail server against the fake, signed in through the authorization code flow."""
    params = env["ir.config_parameter"].sudo()
    params.set_param("web.base.url", BASE_URL)
    params.set_param("mail.catchall.domain", "contoso.onmicrosoft.com")
    server = env["ir.mail_server"].create(graph_server_values(authority_url, graph_url, graph_read_timeout=60))
    action = server.action_graph_authenticate()
    answer = requests.get(action["url"], allow_redirects=False, timeout=10)
    query = {k: v[0] for k, v in parse_qs(urlparse(answer.headers["Location"]).query).items()}
    tokens = DelegatedAuthFlow(server._graph_credentials(), server._graph_redirect_uri()).finish(
        json.loads(server.graph_oauth_flow), query
    )
    server.graph_oauth_flow = False
    server._graph_store_tokens(tokens)
    return {"server_id": server.id}


def _mail_values(server_id: int, subject: str) -> dict:
    return {
        "email_from": SENDER,
        "email_to": "alice@fabrikam.example",
        "subject": subject,
        "body_html": f"<p>{subject}</p>",
        "mail_server_id": server_id,
        "auto_delete": False,
    }


def send_then_roll_back(env, server_id: int, subject: str) -> dict:
    """Send one mail, then roll the sending transaction back, as a crash before Odoo's commit would."""
    mail = env["mail.mail"].create(_mail_values(server_id, subject))
    env.cr.commit()  # the mail exists, as it does when the queue picks it up
    mail.write({"subject": subject})  # the transaction the rollback will undo
    mail.send(auto_commit=False)
    state, message_id = mail.state, mail.message_id
    env.cr.rollback()
    _compat().invalidate_all(env)
    logs = env["mail.graph.api.log"].search_read([("message_id", "=", message_id)], ["operation", "outcome"])
    return {
        "mail_id": mail.id,
        "state_before_rollback": state,
        "state_after_rollback": mail.state,
        "message_id": message_id,
        "logs": [{"operation": log["operation"], "outcome": log["outcome"]} for log in logs],
    }


def queue_mails(env, server_id: int, subjects: list) -> list:
    return env["mail.mail"].create([_mail_values(server_id, subject) for subject in subjects]).ids


def expire_stored_token(env, server_id: int) -> None:
    """The access token every worker shares is past its expiry: the next send must renew it."""
    env.cr.execute(
        "UPDATE ir_mail_server SET graph_access_token_expiry = now() at time zone 'UTC' - interval '1 hour' "
        "WHERE id = %s",
        [server_id],
    )


def send_at(env, mail_ids: list, start_at: float) -> dict:
    """A worker: wait for the common start, then send its own mails (so both renew the token at once)."""
    time.sleep(max(0.0, start_at - time.time()))
    mails = env["mail.mail"].browse(mail_ids)
    mails.send(auto_commit=True)
    _compat().invalidate_all(env)
    return {"states": mails.mapped("state")}


def stored_tokens(env, server_id: int) -> dict:
    server = env["ir.mail_server"].sudo().browse(server_id)
    return {
        "refresh_token": server.graph_refresh_token,
        "state": server.graph_connection_state,
        "token_version": server.graph_token_version,
    }


def uninstall_addon(env) -> dict:
    """Uninstall mail_graph_api the way Apps does, then render what it had extended."""
    module = env["ir.module.module"].search([("name", "=", "mail_graph_api")])
    module.button_immediate_uninstall()
    from odoo import SUPERUSER_ID, api

    env = api.Environment(env.cr, SUPERUSER_ID, {})  # the registry was rebuilt without the addon
    Server = env["ir.mail_server"]
    if hasattr(Server, "get_views"):  # 16.0+
        views = Server.get_views([(False, "form"), (False, "list")])["views"]
    else:  # 14.0, 15.0
        views = Server.load_views([(False, "form"), (False, "list")])["fields_views"]
    views["list"] = views.get("list") or views["tree"]  # 17.0 answers "tree"
    env.cr.execute(
        "SELECT count(*) FROM ir_ui_view WHERE strpos(arch_db::text, 'use_graph_api') > 0 "
        "OR strpos(arch_db::text, 'mail.graph.api.log') > 0 OR model = 'mail.graph.api.log'"
    )
    leftover_views = env.cr.fetchone()[0]
    env.cr.execute("SELECT column_name FROM information_schema.columns WHERE table_name = 'ir_mail_server'")
    columns = [name for (name,) in env.cr.fetchall() if name.startswith("graph_") or name == "use_graph_api"]
    return {
        "state": module.state,
        "form_renders": "smtp_host" in views["form"]["arch"] and "graph_" not in views["form"]["arch"],
        "list_renders": "smtp_host" in views["list"]["arch"],
        "log_model_left": "mail.graph.api.log" in env,
        "leftover_views": leftover_views,
        "leftover_columns": columns,
    }


def _compat():
    """The addon's series differences (imported inside Odoo only: this module is also imported without it)."""
    from odoo.addons.mail_graph_api import compat

    return compat
