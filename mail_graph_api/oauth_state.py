# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl-3.0).
"""Signed, short-lived OAuth ``state``: bound to the database, the user and the mail server."""

from __future__ import annotations

import base64
import json
import secrets
import time

from odoo.tools import consteq
from odoo.tools.misc import hmac

STATE_LIFETIME = 600  # seconds; Microsoft's authorization codes live about as long
_SCOPE = "mail_graph_api.oauth_state"


class InvalidState(Exception):
    """The callback's state is not one this database issued for this user and server (or is stale)."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def make_state(env, server_id: int, now: float | None = None) -> str:
    payload = {
        "db": env.cr.dbname,
        "uid": env.uid,
        "sid": server_id,
        "exp": int((now or time.time()) + STATE_LIFETIME),
        "nonce": secrets.token_urlsafe(16),
    }
    body = _b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
    return f"{body}.{hmac(env(su=True), _SCOPE, body)}"


def read_state(env, state: str, now: float | None = None) -> dict:
    """Return the payload of a state this database signed for the current user, or raise InvalidState."""
    try:
        body, signature = (state or "").split(".", 1)
        payload = json.loads(_unb64(body))
        if not isinstance(payload, dict):
            raise ValueError(payload)
    except Exception:
        raise InvalidState("the sign-in request is malformed")
    # The claim is read before the signature only to word the error: another database signs with its own secret.
    if payload.get("db") != env.cr.dbname:
        raise InvalidState("the sign-in was started from another database")
    if not consteq(signature, hmac(env(su=True), _SCOPE, body)):
        raise InvalidState("the sign-in request was altered (bad signature)")
    if payload.get("uid") != env.uid:
        raise InvalidState("the sign-in was started by another user")
    if payload.get("exp", 0) < (now or time.time()):
        raise InvalidState("the sign-in request expired; start it again from the mail server")
    return payload
