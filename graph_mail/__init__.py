"""graph_mail: send RFC 5322 messages through Microsoft Graph on behalf of a mailbox.

Pure Python (never imports odoo). See docs/architecture.md for the contract.
"""

from __future__ import annotations

from .auth import (
    DEFAULT_DELEGATED_SCOPES,
    AuthMode,
    CredentialExpiry,
    DelegatedAuthFlow,
    ExpiringCredential,
    MailboxCredentials,
    TokenProvider,
    TokenSet,
    certificate_expiry,
)
from .client import CallRecord, GraphMailClient, SendResult
from .clouds import Cloud, resolve_cloud
from .errors import (
    AuthenticationError,
    ConfigurationError,
    GraphApiError,
    GraphMailError,
    InvalidGrantError,
    MailboxNotFound,
    MessageRejected,
    MessageTooLarge,
    MimeConversionError,
    PermissionDenied,
    ServiceUnavailable,
    SyncStateLost,
    Throttled,
    TooManyRecipients,
    TransportError,
)
from .inbox import DeltaPage, IncomingMessage, MailboxReader
from .message import ContentSource, Envelope
from .redaction import RedactingFilter, install_log_redaction, redact, register_secret
from .retry import RetryPolicy
from .transport import Timeouts, Transport

__version__ = "0.1.0"

# Tokens must never reach a log line, whoever logs them (msal and urllib3 included).
install_log_redaction()

__all__ = [
    "DEFAULT_DELEGATED_SCOPES",
    "AuthMode",
    "AuthenticationError",
    "CallRecord",
    "Cloud",
    "ConfigurationError",
    "ContentSource",
    "CredentialExpiry",
    "DelegatedAuthFlow",
    "DeltaPage",
    "Envelope",
    "ExpiringCredential",
    "GraphApiError",
    "GraphMailClient",
    "GraphMailError",
    "IncomingMessage",
    "InvalidGrantError",
    "MailboxCredentials",
    "MailboxNotFound",
    "MailboxReader",
    "MessageRejected",
    "MessageTooLarge",
    "MimeConversionError",
    "PermissionDenied",
    "RedactingFilter",
    "RetryPolicy",
    "SendResult",
    "ServiceUnavailable",
    "SyncStateLost",
    "Throttled",
    "Timeouts",
    "TokenProvider",
    "TokenSet",
    "TooManyRecipients",
    "Transport",
    "TransportError",
    "certificate_expiry",
    "install_log_redaction",
    "redact",
    "register_secret",
    "resolve_cloud",
]
