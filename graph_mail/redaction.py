"""Keep tokens, secrets and codes out of log lines and exception texts.

Patterns catch what has a recognisable shape (JWTs, ``Bearer`` values, OAuth form/query parameters, JSON
token fields, PEM private keys); :func:`register_secret` covers opaque values (a client secret, a refresh
token) wherever they appear. Message bodies are never logged by this library at all, so nothing here tries
to recognise them.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import OrderedDict
from typing import Dict, Iterable, Optional
from urllib.parse import quote, quote_plus

REDACTED = "[REDACTED]"

# Parameter names whose values are credentials, in forms, query strings, JSON and Python reprs.
_SECRET_NAMES = (
    "code",
    "client_secret",
    "refresh_token",
    "access_token",
    "id_token",
    "client_assertion",
    "code_verifier",
    "tempauth",
    "authtoken",
    "password",
    "assertion",
    "client_info",
)
_NAMES = "|".join(_SECRET_NAMES)
# In JSON, "code" is Graph's error code (useful, public): only the token-ish names are redacted there.
_JSON_NAMES = "|".join(n for n in _SECRET_NAMES if n != "code")

_PATTERNS = (
    # PEM private keys (any flavour), possibly truncated at the end of the text.
    (
        re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)", re.S),
        "[REDACTED PRIVATE KEY]",
    ),
    (re.compile(r"(?i)\b(Bearer)\s+[^\s,;\"']+"), r"\1 " + REDACTED),
    # name=value in query strings and form bodies (also percent-encoded `=`)
    (re.compile(rf"(?i)\b({_NAMES})(=|%3D)[^&\s\"'<>]+"), r"\1\2" + REDACTED),
    # "name": "value" (JSON) and 'name': 'value' (Python reprs)
    (
        re.compile(rf"(?i)([\"'])({_JSON_NAMES})\1(\s*:\s*)([\"'])(?:(?!\4).)*\4"),
        r"\1\2\1\3\4" + REDACTED + r"\4",
    ),
    # "code": an authorization code (msal logs them), unless shaped like a Graph error code (CamelCase)
    (
        re.compile(r"([\"'])code\1(\s*:\s*)([\"'])(?![A-Za-z_]*\3)(?:(?!\3).)+\3"),
        r"\1code\1\2\3" + REDACTED + r"\3",
    ),
    # JWTs (access tokens, id tokens, client assertions): three base64url segments starting with {"
    (re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"), "[REDACTED JWT]"),
)

_lock = threading.Lock()
# Insertion-ordered and bounded: rotated refresh tokens keep arriving in a long-lived process.
_secrets: Dict[str, None] = OrderedDict()
_MAX_SECRETS = 1024
_by_length: list = []  # _secrets sorted longest first (so a secret containing another goes first)
_MIN_SECRET_LENGTH = 6  # shorter values would redact ordinary words


def register_secret(*values: Optional[str]) -> None:
    """Redact these exact values (and their URL-encoded forms) from every text from now on.

    JWTs (access tokens) need no registration: the JWT pattern catches them."""
    global _by_length
    with _lock:
        for value in values:
            if value and len(value) >= _MIN_SECRET_LENGTH and not value.startswith("eyJ"):
                encoded = quote(value, safe="")
                for form in (value, encoded, encoded.replace("~", "%7E"), quote_plus(value)):
                    _secrets.pop(form, None)
                    _secrets[form] = None
        while len(_secrets) > _MAX_SECRETS:
            _secrets.popitem(last=False)
        _by_length = sorted(_secrets, key=len, reverse=True)


def redact(text: Optional[str]) -> str:
    """``text`` with every credential-shaped or registered value replaced by ``[REDACTED]``."""
    if not text:
        return text or ""
    text = str(text)
    for value in _by_length:  # replaced wholesale on registration: safe to iterate without the lock
        if value in text:
            text = text.replace(value, REDACTED)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactingFilter(logging.Filter):
    """A logging filter that rewrites each record's message (and traceback) through :func:`redact`."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string must not break logging
            message = str(record.msg)
        record.msg = redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


_FILTER = RedactingFilter()
# Loggers whose records may carry URLs, headers or token responses: ours, msal's, the HTTP stack's.
WATCHED_LOGGERS = ("graph_mail", "msal", "urllib3", "requests")


_installed_for = -1  # size of the logger registry at the last full install


def install_log_redaction(extra: Iterable[str] = ()) -> None:
    """Attach the redacting filter to our loggers and to those of msal, urllib3 and requests.

    A logger's filters only see records created on that very logger (not its children), so every existing
    logger under the watched prefixes gets it. Idempotent and cheap when no logger appeared since the last
    call; graph_mail calls it on import and whenever a client, provider or flow is built.
    """
    global _installed_for
    extra = tuple(extra)
    registry = logging.root.manager.loggerDict
    if not extra and len(registry) == _installed_for:
        return
    _installed_for = len(registry)
    prefixes = tuple(WATCHED_LOGGERS) + extra
    names = set(prefixes)
    for name in list(logging.root.manager.loggerDict):
        if name.startswith(tuple(p + "." for p in prefixes)):
            names.add(name)
    for name in names:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
