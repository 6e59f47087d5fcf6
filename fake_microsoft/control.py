"""The control API: reset, configure, inspect and script the fake (Python methods and ``/_fake/`` routes)."""

from __future__ import annotations

import copy
import json
from typing import Any, Dict, List, Optional

from . import delta, directory
from . import mailbox as store
from .defaults import DEFAULTS, UPLOAD_MAX
from .jwt import Certificate
from .state import State
from .web import Request, Response, json_response


class Control:
    """Python API shared by the in-process ``FakeMicrosoft`` and the HTTP ``/_fake/`` routes."""

    def __init__(self, state: State) -> None:
        self.state = state

    def reset(self) -> None:
        """Forget messages, drafts, tokens, faults and calls; restore the default registration."""
        self.state.reset()

    def config(self) -> Dict[str, Any]:
        with self.state.lock:
            return copy.deepcopy(self.state.config)

    def configure(self, **changes: Any) -> Dict[str, Any]:
        """Replace top-level config keys (see DEFAULTS); unknown keys or wrong types raise ValueError."""
        for key, value in changes.items():
            if key not in DEFAULTS:
                raise ValueError(f"unknown config key {key!r}; keys: {', '.join(sorted(DEFAULTS))}")
            default = DEFAULTS[key]
            if key == "client_secret_expires":
                directory.parse_moment(value)  # epoch seconds, an ISO-8601 string or None; else ValueError
            elif key == "allowed_mailboxes":
                if value is not None and not isinstance(value, list):
                    raise ValueError("allowed_mailboxes must be a list of mailboxes or null")
            elif isinstance(default, bool):
                if not isinstance(value, bool):
                    raise ValueError(f"{key} must be a boolean")
            elif isinstance(default, (int, float)):
                if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                    raise ValueError(f"{key} must be a non-negative number")
            elif not isinstance(value, type(default)):
                raise ValueError(f"{key} must be a {type(default).__name__}")
            if key == "max_message_size" and value > UPLOAD_MAX:
                raise ValueError("max_message_size may be at most 150 MB (157286400 bytes)")
            if key == "users" and not all(
                isinstance(u, dict) and u.get("userPrincipalName") and u.get("id") for u in value
            ):
                raise ValueError("each user needs at least an id and a userPrincipalName")
            if key == "refused_recipients" and not all(isinstance(r, str) and r.strip() for r in value):
                raise ValueError("refused_recipients must be a list of addresses or domains")
            if key == "ndr_original" and value not in ("message", "headers"):
                raise ValueError("ndr_original must be 'message' or 'headers'")
            if key == "certificates":
                for pem in value:
                    Certificate(pem)  # refuse what cannot be loaded now, not at the next token request
        with self.state.lock:
            self.state.config.update(copy.deepcopy(changes))
            return copy.deepcopy(self.state.config)

    def now(self) -> float:
        """The fake's clock (epoch seconds): real time plus what ``advance_clock`` added since the last reset."""
        return self.state.clock()

    def advance_clock(self, seconds: float) -> float:
        """Move the fake's clock forward (tokens, codes, delta tokens, sending limits, credential expiry all
        follow it); the new time. ``reset()`` puts it back to real time."""
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds < 0:
            raise ValueError("advance must be a non-negative number of seconds")
        with self.state.lock:
            self.state.clock_offset += float(seconds)
            return self.state.clock()

    def messages(self) -> List[Dict[str, Any]]:
        """Every accepted message, parsed (see docs/architecture.md for the keys)."""
        with self.state.lock:
            return copy.deepcopy(self.state.messages)

    def raw(self, message_id: str) -> bytes:
        """The exact MIME bytes as delivered (without Bcc); KeyError for an unknown id."""
        with self.state.lock:
            return self.state.raw[message_id]

    def deliver(self, mailbox: str, raw: bytes, folder: str = "inbox") -> str:
        """File ``raw`` in a mailbox folder as if it came from outside (a reply, mail to an alias); its id."""
        if not isinstance(raw, bytes) or not raw:
            raise TypeError("raw must be the message's MIME bytes")
        with self.state.lock:
            user = self._user(mailbox)
            return store.store(self.state, user["userPrincipalName"], raw, folder).id

    def mailbox_messages(self, mailbox: str, folder: Optional[str] = None) -> List[Dict[str, Any]]:
        """What a mailbox holds (every folder, or one by id, well-known name or displayName), oldest first."""
        with self.state.lock:
            box = store.get_mailbox(self.state, self._user(mailbox)["userPrincipalName"])
            wanted = store.find_folder(box, folder, by_name=True) if folder is not None else None
            if folder is not None and wanted is None:
                raise ValueError(f"no folder {folder!r} in mailbox {mailbox}")
            found = [m for m in box.messages.values() if wanted is None or m.folder_id == wanted.id]
            return [store.summary(box, m) for m in sorted(found, key=lambda m: (m.received, m.seq))]

    def expire_delta_tokens(self) -> None:
        """Every delta and skip token issued so far answers 410 SyncStateNotFound from now on."""
        delta.expire_all(self.state)

    def _user(self, key: str) -> Dict[str, Any]:
        user = self.state.find_user(key)
        if user is None:
            raise ValueError(f"no mailbox {key!r}")
        return user

    def calls(self, route: Optional[str] = None) -> List[Dict[str, Any]]:
        with self.state.lock:
            return [dict(c) for c in self.state.calls if route is None or c["route"] == route]

    def inject(self, route: str, **fault: Any) -> Dict[str, Any]:
        """Add a fault for the next ``count`` calls of ``route`` (keys: see docs/architecture.md)."""
        return self.state.add_fault(route, **fault).describe()

    def faults(self) -> List[Dict[str, Any]]:
        with self.state.lock:
            return [f.describe() for f in self.state.faults]

    def clear_faults(self) -> None:
        with self.state.lock:
            self.state.faults.clear()

    def expire_tokens(self) -> None:
        """Every access token issued so far is expired from now on (401 on Graph)."""
        self.state.expire_tokens()

    def revoke_refresh_tokens(self) -> None:
        """Every refresh token issued so far is revoked (AADSTS50173 on its next use)."""
        self.state.revoke_refresh_tokens()

    def tokens(self) -> List[Dict[str, Any]]:
        """Issued access and refresh tokens (no secrets: only their last 8 characters)."""
        with self.state.lock:
            described = [t.describe() for t in self.state.access_tokens.values()]
            described += [t.describe() for t in self.state.refresh_tokens.values()]
            return described


def _read_json(request: Request) -> Dict[str, Any]:
    if not request.body:
        return {}
    payload = json.loads(request.body.decode("utf-8"))
    if not isinstance(payload, dict):
        raise ValueError("expected a JSON object")
    return payload


def handle(control: Control, request: Request, subpath: str) -> Response:
    """Dispatch ``/_fake/<subpath>``; 400 with ``{"error": ...}`` for bad input."""
    method = request.method
    parts = [p for p in subpath.split("/") if p]
    try:
        if parts == ["reset"] and method == "POST":
            control.reset()
            return json_response(200, {"ok": True})
        if parts == ["config"] and method == "GET":
            return json_response(200, control.config())
        if parts == ["config"] and method in ("PATCH", "POST"):
            return json_response(200, control.configure(**_read_json(request)))
        if parts == ["clock"] and method == "GET":
            return json_response(200, {"now": control.now()})
        if parts == ["clock"] and method == "POST":
            return json_response(200, {"now": control.advance_clock(_read_json(request).get("advance"))})
        if parts == ["messages"] and method == "GET":
            return json_response(200, control.messages())
        if len(parts) == 2 and parts[0] == "messages" and method == "GET":
            found = [m for m in control.messages() if m["id"] == parts[1]]
            if found:
                return json_response(200, found[0])
            return json_response(404, {"error": f"no message {parts[1]}"})
        if len(parts) == 3 and parts[0] == "messages" and parts[2] == "raw" and method == "GET":
            try:
                return Response(200, control.raw(parts[1]), [("Content-Type", "message/rfc822")])
            except KeyError:
                return json_response(404, {"error": f"no message {parts[1]}"})
        if len(parts) == 3 and parts[0] == "mailboxes" and parts[2] == "messages" and method == "POST":
            message_id = control.deliver(parts[1], request.body, request.arg("folder") or "inbox")
            return json_response(201, {"id": message_id})
        if len(parts) == 3 and parts[0] == "mailboxes" and parts[2] == "messages" and method == "GET":
            return json_response(200, control.mailbox_messages(parts[1], request.arg("folder")))
        if parts == ["delta", "expire"] and method == "POST":
            control.expire_delta_tokens()
            return json_response(200, {"ok": True})
        if parts == ["calls"] and method == "GET":
            return json_response(200, control.calls(request.arg("route")))
        if parts == ["faults"] and method == "POST":
            spec = _read_json(request)
            route = spec.pop("route", None)
            if not isinstance(route, str):
                raise ValueError("a fault needs a route")
            return json_response(201, control.inject(route, **spec))
        if parts == ["faults"] and method == "GET":
            return json_response(200, control.faults())
        if parts == ["faults"] and method == "DELETE":
            control.clear_faults()
            return json_response(200, {"ok": True})
        if parts == ["tokens"] and method == "GET":
            return json_response(200, control.tokens())
        if parts == ["tokens", "expire"] and method == "POST":
            control.expire_tokens()
            return json_response(200, {"ok": True})
        if parts == ["tokens", "revoke"] and method == "POST":
            control.revoke_refresh_tokens()
            return json_response(200, {"ok": True})
    except (ValueError, TypeError) as exc:
        return json_response(400, {"error": str(exc)})
    return json_response(404, {"error": f"no control route {method} /_fake/{subpath}"})
