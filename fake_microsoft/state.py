"""Everything the fake remembers, behind one lock: registration, codes, tokens, mail, faults, calls."""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from .defaults import UPLOAD_MAX, default_config

ROUTES = (
    "openid",
    "instance",
    "keys",
    "authorize",
    "token",
    "me",
    "users",
    "sendMail",
    "createDraft",
    "createUploadSession",
    "addAttachment",
    "upload",
    "send",
    "deleteDraft",
    "sentItems",
    "listFolders",
    "getFolder",
    "createFolder",
    "delta",
    "getMessage",
    "messageValue",
    "updateMessage",
    "moveMessage",
    "batch",
    "getApplication",
    "listApplications",
)
ACTIONS = ("status", "delay", "close_before_processing", "close_after_processing", "authorize_error")


@dataclass
class AuthCode:
    code: str
    client_id: str
    redirect_uri: str
    scopes: List[str]
    user: str  # userPrincipalName
    nonce: Optional[str]
    code_challenge: Optional[str]
    code_challenge_method: Optional[str]
    issued_at: float
    expires_at: float
    redeemed: bool = False


@dataclass
class AccessToken:
    token: str
    kind: str  # "delegated" | "app"
    client_id: str
    user: Optional[str]  # userPrincipalName for delegated tokens
    scopes: List[str]  # delegated permissions (scp)
    roles: List[str]  # application permissions (roles)
    issued_at: float
    expires_at: float

    def describe(self) -> Dict[str, Any]:
        return {
            "kind": self.kind,
            "client_id": self.client_id,
            "user": self.user,
            "scopes": self.scopes,
            "roles": self.roles,
            "issued_at": self.issued_at,
            "expires_at": self.expires_at,
            "token_tail": self.token[-8:],
        }


@dataclass
class RefreshToken:
    token: str
    client_id: str
    user: str
    scopes: List[str]  # the grant, including openid/offline_access when consented
    issued_at: float
    expires_at: float
    revoked: bool = False
    parent: Optional[str] = None  # the refresh token this one was rotated from
    rotated_to: List[str] = field(default_factory=list)
    uses: int = 0

    def describe(self) -> Dict[str, Any]:
        return {
            "kind": "refresh",
            "client_id": self.client_id,
            "user": self.user,
            "scopes": self.scopes,
            "issued_at": self.issued_at,
            "expires_at": self.expires_at,
            "revoked": self.revoked,
            "uses": self.uses,
            "rotated_from_tail": self.parent[-8:] if self.parent else None,
            "rotated_to_tails": [t[-8:] for t in self.rotated_to],
            "token_tail": self.token[-8:],
        }


@dataclass
class Draft:
    id: str
    mailbox: str  # userPrincipalName
    kind: str  # "json" | "mime"
    message: Dict[str, Any]  # the JSON message (json drafts)
    raw: bytes  # the MIME as posted (mime drafts)
    internet_message_id: str
    created_at: float
    attachments: List[Dict[str, Any]] = field(default_factory=list)  # uploaded: name, data, ...


@dataclass
class UploadSession:
    id: str
    tempauth: str
    draft_id: str
    mailbox: str
    name: str
    size: int
    content_type: str
    is_inline: bool
    content_id: Optional[str]
    expires_at: float
    data: bytearray = field(default_factory=bytearray)


@dataclass
class Fault:
    id: int
    route: str
    action: str
    count: int
    status: Optional[int] = None
    code: Optional[str] = None
    message: Optional[str] = None
    retry_after: Optional[str] = None
    delay: float = 0.0
    error: Optional[str] = None
    aadsts: Optional[int] = None
    error_description: Optional[str] = None
    skip: int = 0  # calls of the route let through before the fault applies ("the 2nd call fails")
    used: int = 0

    def describe(self) -> Dict[str, Any]:
        return {
            "id": self.id,
            "route": self.route,
            "action": self.action,
            "count": self.count,
            "remaining": self.count - self.used,
            "status": self.status,
            "code": self.code,
            "message": self.message,
            "retry_after": self.retry_after,
            "delay": self.delay,
            "error": self.error,
            "aadsts": self.aadsts,
            "error_description": self.error_description,
        }


def new_id(prefix: str = "") -> str:
    return prefix + secrets.token_urlsafe(32)


class State:
    """Shared by every handler thread; hold ``lock`` while reading or changing anything.

    ``clock()`` is the fake's time: ``base_clock`` (``time.time`` unless given) plus ``clock_offset``, which the
    control API moves forward (``Control.advance_clock``) so that tests cross hours or days in no time.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.lock = threading.RLock()
        self.base_clock = clock
        self.clock_offset = 0.0
        self.started_at = clock()  # the embedded secret was "created" now (directory.py)
        # Requests in flight per (client id, mailbox): live connections, so not forgotten by reset (limits.py).
        self.in_flight: Dict[Tuple[str, str], int] = {}
        self.reset()

    def clock(self) -> float:
        return self.base_clock() + self.clock_offset

    def reset(self) -> None:
        with self.lock:
            self.clock_offset = 0.0
            self.config: Dict[str, Any] = default_config()
            self.codes: Dict[str, AuthCode] = {}
            self.access_tokens: Dict[str, AccessToken] = {}
            self.refresh_tokens: Dict[str, RefreshToken] = {}
            self.messages: List[Dict[str, Any]] = []
            self.raw: Dict[str, bytes] = {}
            self.sent_items: Dict[str, List[Dict[str, Any]]] = {}
            self.drafts: Dict[str, Draft] = {}
            self.uploads: Dict[str, UploadSession] = {}
            self.faults: List[Fault] = []
            # Mailbox contents (mailbox.py) by lowercased userPrincipalName, and delta/skip tokens (inbox.py).
            self.mailboxes: Dict[str, Any] = {}
            self.mail_seq = 0
            self.delta_tokens: Dict[str, Any] = {}
            self.calls: List[Dict[str, Any]] = []
            self._fault_seq = 0
            # Sending limits (limits.py), by lowercased userPrincipalName: when each of the latest messages
            # leaves the Outbox, and (submission time, recipients) of delivered messages.
            self.departures: Dict[str, List[float]] = {}
            self.recipient_log: Dict[str, List[Tuple[float, int]]] = {}

    # --- registration lookups -------------------------------------------------------------------

    def tenant_matches(self, tenant: str) -> bool:
        return tenant.lower() in (self.config["tenant_id"].lower(), self.config["tenant_domain"].lower())

    def find_user(self, key: str) -> Optional[Dict[str, Any]]:
        wanted = key.lower()
        for user in self.config["users"]:
            names = (user.get("id"), user.get("userPrincipalName"), user.get("mail"))
            if any(isinstance(n, str) and n.lower() == wanted for n in names):
                return user
        return None

    def send_as_grants(self, who: str) -> List[str]:
        """Mailboxes ``who`` may send as (config keys and values compared case-insensitively)."""
        for key, values in self.config["send_as"].items():
            if key.lower() == who.lower():
                return [v.lower() for v in values]
        return []

    # --- faults -----------------------------------------------------------------------------------

    def add_fault(self, route: str, **spec: Any) -> Fault:
        if route not in ROUTES and route != "*":
            raise ValueError(f"unknown route {route!r}; routes: {', '.join(ROUTES)}")
        action = spec.pop("action", None)
        if action is None:
            if spec.get("status") is not None:
                action = "status"
            elif spec.get("error") is not None or spec.get("aadsts") is not None:
                action = "authorize_error"
            elif spec.get("delay"):
                action = "delay"
            else:
                raise ValueError("a fault needs an action, a status, an error or a delay")
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}; actions: {', '.join(ACTIONS)}")
        if action == "status" and spec.get("status") is None:
            raise ValueError("action 'status' needs a status")
        if action == "authorize_error" and route != "authorize":
            raise ValueError("action 'authorize_error' only applies to route 'authorize'")
        retry_after = spec.pop("retry_after", None)
        if retry_after is not None and not isinstance(retry_after, str):
            # numbers pass through as written (2 -> "2", 0.5 -> "0.5"); strings untouched (HTTP dates)
            retry_after = str(retry_after)
        known = {"status", "count", "code", "message", "delay", "error", "aadsts", "error_description", "skip"}
        unknown = set(spec) - known
        if unknown:
            raise ValueError(f"unknown fault keys: {', '.join(sorted(unknown))}")
        with self.lock:
            self._fault_seq += 1
            fault = Fault(
                id=self._fault_seq,
                route=route,
                action=action,
                count=int(spec.get("count") if spec.get("count") is not None else 1),
                status=int(spec["status"]) if spec.get("status") is not None else None,
                code=spec.get("code"),
                message=spec.get("message"),
                retry_after=retry_after,
                delay=float(spec.get("delay") or 0.0),
                error=spec.get("error"),
                aadsts=int(spec["aadsts"]) if spec.get("aadsts") is not None else None,
                error_description=spec.get("error_description"),
                skip=int(spec.get("skip") or 0),
            )
            self.faults.append(fault)
            return fault

    def take_fault(self, route: str) -> Optional[Fault]:
        """The first live fault for this route, counted as used."""
        with self.lock:
            for fault in self.faults:
                if fault.route in (route, "*") and fault.used < fault.count:
                    if fault.skip > 0:
                        fault.skip -= 1
                        return None
                    fault.used += 1
                    return fault
        return None

    # --- tokens -----------------------------------------------------------------------------------

    def expire_tokens(self) -> None:
        with self.lock:
            past = self.clock() - 1
            for token in self.access_tokens.values():
                token.expires_at = min(token.expires_at, past)

    def revoke_refresh_tokens(self) -> None:
        with self.lock:
            for token in self.refresh_tokens.values():
                token.revoked = True

    def max_upload(self) -> int:
        return min(int(self.config["max_message_size"]), UPLOAD_MAX)
