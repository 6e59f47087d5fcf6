"""Request/response values passed between the HTTP server and the handlers, and Microsoft's error shapes.

Handlers are plain functions from a ``Request`` to a ``Response``; they raise ``GraphError`` or the
identity errors below, which the server renders exactly as Microsoft does.
"""

from __future__ import annotations

import datetime
import html
import json
import time
import uuid
from typing import Any, Callable, Dict, List, Optional, Tuple
from urllib.parse import parse_qs, urlencode

Headers = List[Tuple[str, str]]


def utcnow_iso(epoch: Optional[float] = None) -> str:
    """Graph's timestamp format, e.g. ``2024-05-01T10:00:00Z``."""
    moment = (
        datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc)
        if epoch is not None
        else datetime.datetime.now(datetime.timezone.utc)
    )
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class Request:
    """One HTTP request as the handlers see it (headers are case-insensitive)."""

    def __init__(
        self,
        method: str,
        path: str,
        query: str,
        headers: Dict[str, str],
        body: bytes,
        content_length: Optional[int],
    ) -> None:
        self.method = method
        self.path = path
        self.query_string = query
        self.query: Dict[str, List[str]] = parse_qs(query, keep_blank_values=True)
        self._headers = {k.lower(): v for k, v in headers.items()}
        self.body = body
        self.content_length = content_length  # None when the client sent no Content-Length
        self.request_id = str(uuid.uuid4())
        # Graph answers with the caller's client-request-id, or repeats its own request-id.
        self.client_request_id = self.header("client-request-id") or self.request_id
        self.echo_client_request_id = self.header("client-request-id") is not None
        self.clock: Callable[[], float] = time.time  # the fake's clock once the server has it (error stamps)

    def header(self, name: str) -> Optional[str]:
        return self._headers.get(name.lower())

    def arg(self, name: str) -> Optional[str]:
        values = self.query.get(name)
        return values[0] if values else None

    @property
    def host(self) -> str:
        return self.header("host") or "127.0.0.1"

    @property
    def https_base(self) -> str:
        # msal refuses http:// authorities: the core hands it https://127.0.0.1:<port> and rewrites the
        # scheme in its http_client, so discovery must name https endpoints on the same host.
        return "https://" + self.host

    @property
    def http_base(self) -> str:
        return "http://" + self.host

    def form(self) -> Dict[str, str]:
        parsed = parse_qs(self.body.decode("utf-8", "replace"), keep_blank_values=True)
        return {k: v[0] for k, v in parsed.items()}

    def media_type(self) -> str:
        return (self.header("content-type") or "").split(";")[0].strip().lower()


class Response:
    def __init__(self, status: int, body: bytes = b"", headers: Optional[Headers] = None) -> None:
        self.status = status
        self.body = body
        self.headers: Headers = list(headers or [])
        self.graph_code: Optional[str] = None  # for the call log

    def header(self, name: str) -> Optional[str]:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None


def json_response(status: int, payload: Any, headers: Optional[Headers] = None) -> Response:
    body = json.dumps(payload).encode("utf-8")
    return Response(status, body, [("Content-Type", "application/json; charset=utf-8"), *(headers or [])])


# --- Graph errors -----------------------------------------------------------------------------------


class GraphError(Exception):
    """``{"error": {"code", "message", "innerError": {...}}}`` with the given status."""

    def __init__(self, status: int, code: str, message: str, headers: Optional[Headers] = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = list(headers or [])

    def render(self, request: Request) -> Response:
        payload = {
            "error": {
                "code": self.code,
                "message": self.message,
                "innerError": {
                    "date": utcnow_iso(request.clock())[:-1],  # Graph writes it without the Z
                    "request-id": request.request_id,
                    "client-request-id": request.client_request_id,
                },
            }
        }
        response = json_response(self.status, payload, self.headers)
        response.graph_code = self.code
        return response


# --- identity platform errors -------------------------------------------------------------------------


def _aad_stamp(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def _aad_description(aadsts: int, message: str, trace_id: str, correlation_id: str, now: float) -> str:
    stamp = _aad_stamp(now)
    return (
        f"AADSTS{aadsts}: {message}\r\nTrace ID: {trace_id}\r\nCorrelation ID: {correlation_id}\r\nTimestamp: {stamp}"
    )


class AadError(Exception):
    """Token-endpoint style JSON error: error, error_description (AADSTSnnnn: ...), error_codes, ids."""

    def __init__(self, status: int, error: str, aadsts: int, message: str) -> None:
        super().__init__(f"{error} AADSTS{aadsts}: {message}")
        self.status = status
        self.error = error
        self.aadsts = aadsts
        self.message = message

    def render(self, request: Request) -> Response:
        trace_id = request.request_id
        correlation_id = request.client_request_id
        payload = {
            "error": self.error,
            "error_description": _aad_description(self.aadsts, self.message, trace_id, correlation_id, request.clock()),
            "error_codes": [self.aadsts],
            "timestamp": _aad_stamp(request.clock()),
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "error_uri": f"{request.https_base}/error?code={self.aadsts}",
        }
        response = json_response(self.status, payload, [("Cache-Control", "no-store, no-cache")])
        response.graph_code = f"{self.error}/AADSTS{self.aadsts}"
        return response


class AadErrorPage(AadError):
    """What the browser shows when Microsoft cannot redirect back (bad tenant, client or redirect URI)."""

    def render(self, request: Request) -> Response:
        text = _aad_description(
            self.aadsts, self.message, request.request_id, request.client_request_id, request.clock()
        )
        body = (
            "<!DOCTYPE html><html><head><title>Sign in to your account</title></head><body>"
            "<h1>Sorry, but we're having trouble signing you in.</h1>"
            f"<pre id='error'>{html.escape(text)}</pre></body></html>"
        ).encode()
        response = Response(self.status, body, [("Content-Type", "text/html; charset=utf-8")])
        response.graph_code = f"{self.error}/AADSTS{self.aadsts}"
        return response


class AadRedirectError(AadError):
    """An authorize error delivered to the client's redirect URI (``?error=..&error_description=..``)."""

    def __init__(
        self, error: str, aadsts: int, message: str, redirect_uri: str, state: Optional[str], mode: str
    ) -> None:
        super().__init__(302, error, aadsts, message)
        self.redirect_uri = redirect_uri
        self.state = state
        self.mode = mode

    def render(self, request: Request) -> Response:
        params = {
            "error": self.error,
            "error_description": _aad_description(
                self.aadsts, self.message, request.request_id, request.client_request_id, request.clock()
            ),
            "error_uri": f"{request.https_base}/error?code={self.aadsts}",
        }
        if self.state is not None:
            params["state"] = self.state
        response = redirect(self.redirect_uri, params, self.mode)
        response.graph_code = f"{self.error}/AADSTS{self.aadsts}"
        return response


def redirect(redirect_uri: str, params: Dict[str, str], mode: str = "query") -> Response:
    """Send the browser back to the client (query, fragment or an auto-submitted form_post)."""
    if mode == "form_post":
        inputs = "".join(
            f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}"/>' for k, v in params.items()
        )
        body = (
            f'<html><body onload="document.forms[0].submit()"><form method="POST" '
            f'action="{html.escape(redirect_uri)}">{inputs}</form></body></html>'
        ).encode()
        return Response(200, body, [("Content-Type", "text/html; charset=utf-8")])
    separator = "#" if mode == "fragment" else ("&" if "?" in redirect_uri else "?")
    location = redirect_uri + separator + urlencode(params)
    return Response(302, b"", [("Location", location)])
