"""The embedded registration the fake starts with (docs/architecture.md, "Embedded defaults")."""

from __future__ import annotations

import copy
from typing import Any, Dict

TENANT_ID = "7a3c6f0e-2b1d-4e5f-9a8b-0c1d2e3f4a5b"
TENANT_DOMAIN = "contoso.onmicrosoft.com"
CLIENT_ID = "2f9b8c7d-6e5a-4b3c-8d2e-1f0a9b8c7d6e"
CLIENT_SECRET = "fake-secret-3Qx~v8Lr"
CLIENT_SECRET_ID = "0d1c2b3a-4f5e-4d6c-8b7a-9e8f7d6c5b4a"

MB = 1024 * 1024
REQUEST_LIMIT = 4 * MB  # Graph refuses any request body above this (413)
INLINE_ATTACHMENT_LIMIT = 3 * MB  # file attachments inside one JSON request
UPLOAD_MIN = 3 * MB  # createUploadSession refuses smaller attachments
UPLOAD_MAX = 150 * MB
CHUNK_MULTIPLE = 327680  # 320 KiB: every upload chunk but the last
CHUNK_MAX = 4 * MB

DEFAULTS: Dict[str, Any] = {
    "tenant_id": TENANT_ID,
    "tenant_domain": TENANT_DOMAIN,
    "tenant_name": "Contoso",
    "multi_tenant": False,  # /common and /organizations answer AADSTS50194 like a single-tenant app
    "client_id": CLIENT_ID,
    "client_name": "Odoo Graph Mail",
    "client_secret": CLIENT_SECRET,
    "client_secret_id": CLIENT_SECRET_ID,
    "client_secret_expired": False,  # True: the right secret answers AADSTS7000222
    # When the secret expires (epoch seconds or ISO-8601, on the fake's clock); None: never (the application
    # resource then shows two years after the fake started, or yesterday when client_secret_expired is set)
    "client_secret_expires": None,
    "certificates": [],  # PEM certificates whose keys may sign client assertions
    "users": [
        {
            "id": "a1b2c3d4-0001-4a5b-8c9d-0e1f2a3b4c5d",
            "userPrincipalName": "admin@contoso.onmicrosoft.com",
            "mail": "admin@contoso.onmicrosoft.com",
            "displayName": "Contoso Admin",
            "mailbox_enabled": True,
        },
        {
            "id": "a1b2c3d4-0002-4a5b-8c9d-0e1f2a3b4c5d",
            "userPrincipalName": "sales@contoso.onmicrosoft.com",
            "mail": "sales@contoso.onmicrosoft.com",
            "displayName": "Contoso Sales",
            "mailbox_enabled": True,
        },
        {
            "id": "a1b2c3d4-0003-4a5b-8c9d-0e1f2a3b4c5d",
            "userPrincipalName": "noreply@contoso.onmicrosoft.com",
            "mail": "noreply@contoso.onmicrosoft.com",
            "displayName": "Contoso No Reply",
            "mailbox_enabled": True,
        },
    ],
    "signed_in_user": "admin@contoso.onmicrosoft.com",  # who "signs in" at authorize without login_hint
    "redirect_uris": [
        "http://127.0.0.1:8069/mail_graph_api/auth/callback",
        "http://localhost:8069/mail_graph_api/auth/callback",
    ],
    "delegated_scopes": [
        "Mail.Send",
        "Mail.Send.Shared",
        "Mail.ReadWrite",
        "Mail.Read",
        "Mail.ReadBasic",
        "User.Read",
        "offline_access",
        "openid",
        "profile",
    ],
    "app_roles": ["Mail.Send", "Mail.ReadWrite", "Mail.ReadBasic.All", "User.Read.All"],
    "allowed_mailboxes": None,  # application access policy: None = every mailbox
    "send_as": {},  # {"admin@..": ["sales@.."]}: who may send as (and use the mailbox of) whom
    "token_lifetime": 3600,
    "code_lifetime": 600,
    "refresh_token_lifetime": 90 * 24 * 3600,
    "upload_session_lifetime": 3600,
    "max_message_size": 35 * MB,
    "refused_recipients": [],  # addresses or domains ("@example.com"/"example.com") that bounce with an NDR
    "ndr_original": "message",  # NDR part 3: "message" (message/rfc822) or "headers" (text/rfc822-headers)
    "delta_token_lifetime": 7 * 24 * 3600,  # seconds a delta or skip token stays usable (then 410)
    # Exchange Online's limits (docs/architecture.md, "Limits"); 0 turns one off.
    "mailbox_concurrency": 4,  # requests in flight per app and mailbox; the next one is 429 MailboxConcurrency
    "message_rate_limit": 30,  # messages leaving a mailbox per rolling minute; the surplus waits in the Outbox
    "daily_recipient_limit": 10000,  # recipients per mailbox per rolling 24 hours; past it: NDR 5.1.90
}


def default_config() -> Dict[str, Any]:
    """A fresh, independent copy of DEFAULTS (callers mutate it)."""
    return copy.deepcopy(DEFAULTS)
