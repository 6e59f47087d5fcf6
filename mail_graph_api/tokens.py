# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl-3.0).
"""Access tokens for a mail server, shared by every Odoo worker through the server's database row.

Per process, a token is kept in memory until a few minutes before it expires. When it must be renewed,
the worker locks the server row in its own transaction (``SELECT ... FOR UPDATE``), re-reads it (another
worker may have renewed it meanwhile), and only then asks Microsoft. The rotated refresh token is committed
at once, independently of the mail's transaction, so a rollback can never lose the newest one.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import threading
import time

from graph_mail import TokenProvider

from . import compat
from .db import retry_serialization

_logger = logging.getLogger(__name__)

REFRESH_MARGIN = 300  # seconds before expiry we stop using a token
_memory: dict = {}
_memory_lock = threading.Lock()


def _epoch(value: datetime.datetime | None) -> float:
    if not value:
        return 0.0
    return value.replace(tzinfo=datetime.timezone.utc).timestamp()


class ServerTokenSource:
    """The core's token provider protocol (``access_token()``, ``invalidate()``) backed by ir.mail_server."""

    def __init__(self, registry, server_id: int, token_version: int, credentials, clock=time.time):
        self._registry = registry
        self._server_id = server_id
        self._credentials = credentials
        self._clock = clock
        self._key = (registry.db_name, server_id, token_version)
        self._rejected: str | None = None

    @classmethod
    def for_server(cls, server):
        server = server.sudo()
        # The renewal reads the row through its own cursor: pending ORM writes (fresh tokens) must be visible.
        compat.flush_all(server.env)
        return cls(server.env.registry, server.id, server.graph_token_version, server._graph_credentials())

    def access_token(self) -> str:
        now = self._clock()
        with _memory_lock:
            cached = _memory.get(self._key)
        if cached and cached[1] - REFRESH_MARGIN > now:
            return cached[0]
        return self._renew()

    def invalidate(self, access_token: str | None = None) -> None:
        """Microsoft refused our token (401): the next access_token() renews it unless another worker did."""
        with _memory_lock:
            entry = _memory.pop(self._key, None)
        self._rejected = access_token or (entry[0] if entry else self._rejected)

    def _renew(self) -> str:
        from odoo import fields

        with self._registry.cursor() as cr:
            row = self._lock_row(cr)
            if not row:
                raise LookupError(f"mail server #{self._server_id} no longer exists")
            token, expiry, refresh_token = row
            if token and token != self._rejected and _epoch(expiry) - REFRESH_MARGIN > self._clock():
                self._remember(token, _epoch(expiry))  # another worker renewed it first
                return token
            credentials = self._credentials
            if refresh_token:
                credentials = dataclasses.replace(credentials, refresh_token=refresh_token)
            provider = TokenProvider(credentials)
            if self._rejected:
                provider.invalidate(self._rejected)  # the core's process cache may still hold it
            tokens = provider.token()
            values = {
                "graph_access_token": tokens.access_token,
                "graph_access_token_expiry": fields.Datetime.to_string(
                    datetime.datetime.fromtimestamp(tokens.expires_at, tz=datetime.timezone.utc).replace(tzinfo=None)
                ),
                "graph_connection_state": "connected",
            }
            if tokens.refresh_token:
                values["graph_refresh_token"] = tokens.refresh_token
            # Direct SQL: a token renewal must not bump write_date nor run the model's write() side effects.
            assignments = ", ".join(f"{column} = %s" for column in values)
            cr.execute(
                f"UPDATE ir_mail_server SET {assignments} WHERE id = %s",  # noqa: S608 - fixed column names
                [*values.values(), self._server_id],
            )
            _logger.info("Renewed the Microsoft Graph access token of mail server #%s", self._server_id)
        self._remember(tokens.access_token, tokens.expires_at)
        return tokens.access_token

    def _lock_row(self, cr):
        """Lock the server row and read it as the worker that held the lock left it (when that worker renewed
        the token meanwhile, the read is retried in a new snapshot: we then use its token, not renew again)."""

        def select():
            cr.execute(
                "SELECT graph_access_token, graph_access_token_expiry, graph_refresh_token "
                "FROM ir_mail_server WHERE id = %s FOR UPDATE",
                [self._server_id],
            )
            return cr.fetchone()

        return retry_serialization(select, before_retry=cr.rollback)

    def _remember(self, token: str, expires_at: float) -> None:
        with _memory_lock:
            _memory[self._key] = (token, expires_at)
