"""``FakeControl``: the control API of an out-of-process fake, over HTTP (standard library only)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any, Dict, List, Optional
from urllib.parse import quote, urlencode


class FakeControlError(RuntimeError):
    pass


class FakeControl:
    """Same methods as ``FakeMicrosoft``'s control API, for a fake started with ``python -m fake_microsoft``."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    @property
    def authority_url(self) -> str:
        return self.url

    @property
    def graph_url(self) -> str:
        return self.url + "/v1.0"

    def _call(
        self, method: str, path: str, payload: Optional[Dict[str, Any]] = None, raw: Optional[bytes] = None
    ) -> bytes:
        data = json.dumps(payload).encode("utf-8") if payload is not None else raw
        request = urllib.request.Request(self.url + "/_fake/" + path, data=data, method=method)  # noqa: S310
        if data is not None:
            request.add_header("Content-Type", "application/json" if raw is None else "message/rfc822")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:  # noqa: S310 - loopback URL
                return answer.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")
            if exc.code == 400:
                raise ValueError(json.loads(detail).get("error", detail))
            if exc.code == 404:
                raise KeyError(detail)
            raise FakeControlError(f"{method} /_fake/{path}: HTTP {exc.code}: {detail}")

    def _json(self, method: str, path: str, payload: Optional[Dict[str, Any]] = None) -> Any:
        return json.loads(self._call(method, path, payload) or b"null")

    def reset(self) -> None:
        self._call("POST", "reset")

    def config(self) -> Dict[str, Any]:
        return self._json("GET", "config")

    def configure(self, **changes: Any) -> Dict[str, Any]:
        return self._json("PATCH", "config", changes)

    def now(self) -> float:
        return float(self._json("GET", "clock")["now"])

    def advance_clock(self, seconds: float) -> float:
        return float(self._json("POST", "clock", {"advance": seconds})["now"])

    def messages(self) -> List[Dict[str, Any]]:
        return self._json("GET", "messages")

    def raw(self, message_id: str) -> bytes:
        return self._call("GET", f"messages/{quote(message_id, safe='')}/raw")

    def deliver(self, mailbox: str, raw: bytes, folder: str = "inbox") -> str:
        path = f"mailboxes/{quote(mailbox, safe='@')}/messages?" + urlencode({"folder": folder})
        return str(json.loads(self._call("POST", path, raw=raw))["id"])

    def mailbox_messages(self, mailbox: str, folder: Optional[str] = None) -> List[Dict[str, Any]]:
        query = "?" + urlencode({"folder": folder}) if folder is not None else ""
        return self._json("GET", f"mailboxes/{quote(mailbox, safe='@')}/messages{query}")

    def expire_delta_tokens(self) -> None:
        self._call("POST", "delta/expire")

    def calls(self, route: Optional[str] = None) -> List[Dict[str, Any]]:
        return self._json("GET", "calls" + ("?" + urlencode({"route": route}) if route else ""))

    def inject(self, route: str, **fault: Any) -> Dict[str, Any]:
        return self._json("POST", "faults", {"route": route, **fault})

    def faults(self) -> List[Dict[str, Any]]:
        return self._json("GET", "faults")

    def clear_faults(self) -> None:
        self._call("DELETE", "faults")

    def expire_tokens(self) -> None:
        self._call("POST", "tokens/expire")

    def revoke_refresh_tokens(self) -> None:
        self._call("POST", "tokens/revoke")

    def tokens(self) -> List[Dict[str, Any]]:
        return self._json("GET", "tokens")
