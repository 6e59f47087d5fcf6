"""The HTTP server: routing, fault injection, the call log, and ``FakeMicrosoft`` serving in a thread."""

from __future__ import annotations

import re
import socket
import sys
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, List, Optional, Pattern, Set, Tuple
from urllib.parse import unquote, urlsplit

from . import batch, control, delta, directory, graph, identity, inbox, limits
from .control import Control
from .state import Fault, State
from .web import AadError, AadErrorPage, GraphError, Request, Response

Handler = Callable[..., Response]
_MAILBOX = r"(?:me|users/(?P<user>[^/]+))"
GRAPH_ROUTES = {
    "me", "users", "sendMail", "createDraft", "createUploadSession", "addAttachment", "upload", "send", "deleteDraft",
    "sentItems", "listFolders", "getFolder", "createFolder", "delta", "getMessage", "messageValue", "updateMessage",
    "moveMessage", "batch", "getApplication", "listApplications",
}  # fmt: skip
DEFAULT_CODES = {
    400: "BadRequest",
    401: "InvalidAuthenticationToken",
    403: "ErrorAccessDenied",
    404: "ResourceNotFound",
    409: "ErrorIrresolvableConflict",
    413: "RequestBodyTooLarge",
    429: "ApplicationThrottled",
    500: "InternalServerError",
    502: "BadGateway",
    503: "ServiceUnavailable",
    504: "GatewayTimeout",
}


def _target(params: Dict[str, str]) -> str:
    return params["user"] if params.get("user") else "me"


def _route_table() -> List[Tuple[Set[str], Pattern[str], str, Handler]]:
    def compile_(pattern: str) -> Pattern[str]:
        return re.compile("^" + pattern + "/?$", re.IGNORECASE)

    table: List[Tuple[str, str, str, Handler]] = [
        ("GET", r"/(?P<tenant>[^/]+)/discovery/instance", "instance",
         lambda s, r, p: identity.instance_discovery(s, r)),
        ("GET", r"/(?P<tenant>[^/]+)/v2\.0/\.well-known/openid-configuration", "openid",
         lambda s, r, p: identity.openid_configuration(s, r, p["tenant"])),
        ("GET", r"/(?P<tenant>[^/]+)/discovery/v2\.0/keys", "keys",
         lambda s, r, p: identity.keys(s, r, p["tenant"])),
        ("GET", r"/(?P<tenant>[^/]+)/oauth2/v2\.0/authorize", "authorize",
         lambda s, r, p: identity.authorize(s, r, p["tenant"], p.get("_fault"))),
        ("POST", r"/(?P<tenant>[^/]+)/oauth2/v2\.0/token", "token",
         lambda s, r, p: identity.token(s, r, p["tenant"])),
        ("GET", r"/v1\.0/me", "me", lambda s, r, p: graph.me(s, r)),
        ("GET", r"/v1\.0/users/(?P<user>[^/]+)", "users", lambda s, r, p: graph.users(s, r, p["user"])),
        ("POST", rf"/v1\.0/{_MAILBOX}/sendMail", "sendMail",
         lambda s, r, p: graph.send_mail(s, r, _target(p))),
        ("POST", rf"/v1\.0/{_MAILBOX}/messages", "createDraft",
         lambda s, r, p: graph.create_draft(s, r, _target(p))),
        ("DELETE", rf"/v1\.0/{_MAILBOX}/messages/(?P<id>[^/]+)", "deleteDraft",
         lambda s, r, p: graph.delete_draft(s, r, _target(p), p["id"])),
        ("POST", rf"/v1\.0/{_MAILBOX}/messages/(?P<id>[^/]+)/send", "send",
         lambda s, r, p: graph.send_draft(s, r, _target(p), p["id"])),
        ("POST", rf"/v1\.0/{_MAILBOX}/messages/(?P<id>[^/]+)/attachments/createUploadSession",
         "createUploadSession", lambda s, r, p: graph.create_upload_session(s, r, _target(p), p["id"])),
        ("POST", rf"/v1\.0/{_MAILBOX}/messages/(?P<id>[^/]+)/attachments", "addAttachment",
         lambda s, r, p: graph.add_attachment(s, r, _target(p), p["id"])),
        ("GET", rf"/v1\.0/{_MAILBOX}/mailFolders/(?P<folder>[^/]+)/messages", "sentItems",
         lambda s, r, p: graph.sent_items(s, r, _target(p), p["folder"])),
        ("GET", rf"/v1\.0/{_MAILBOX}/mailFolders", "listFolders",
         lambda s, r, p: inbox.list_folders(s, r, _target(p))),
        ("POST", rf"/v1\.0/{_MAILBOX}/mailFolders", "createFolder",
         lambda s, r, p: inbox.create_mail_folder(s, r, _target(p))),
        ("GET", rf"/v1\.0/{_MAILBOX}/mailFolders/(?P<folder>[^/]+)", "getFolder",
         lambda s, r, p: inbox.get_folder(s, r, _target(p), p["folder"])),
        ("GET", rf"/v1\.0/{_MAILBOX}/mailFolders/(?P<folder>[^/]+)/messages/delta", "delta",
         lambda s, r, p: delta.delta(s, r, _target(p), p["folder"])),
        ("GET", rf"/v1\.0/{_MAILBOX}/messages/(?P<id>[^/]+)", "getMessage",
         lambda s, r, p: inbox.get_message(s, r, _target(p), p["id"])),
        ("PATCH", rf"/v1\.0/{_MAILBOX}/messages/(?P<id>[^/]+)", "updateMessage",
         lambda s, r, p: inbox.update_message(s, r, _target(p), p["id"])),
        # The path is percent-decoded before matching, so "%24value" arrives here as "$value".
        ("GET", rf"/v1\.0/{_MAILBOX}/messages/(?P<id>[^/]+)/\$value", "messageValue",
         lambda s, r, p: inbox.message_value(s, r, _target(p), p["id"])),
        ("POST", rf"/v1\.0/{_MAILBOX}/messages/(?P<id>[^/]+)/move", "moveMessage",
         lambda s, r, p: inbox.move_message(s, r, _target(p), p["id"])),
        # JSON batching: each inner request goes through process() below, like a request of its own.
        ("POST", r"/v1\.0/\$batch", "batch", lambda s, r, p: batch.run_batch(s, r, process)),
        # The directory: the app's own registration (its credentials' expiry dates).
        ("GET", r"/v1\.0/applications\(appId='(?P<app_id>[^'/]*)'\)", "getApplication",
         lambda s, r, p: directory.get_application(s, r, app_id=p["app_id"])),
        ("GET", r"/v1\.0/applications/(?P<object_id>[^/()]+)", "getApplication",
         lambda s, r, p: directory.get_application(s, r, object_key=p["object_id"])),
        ("GET", r"/v1\.0/applications", "listApplications", lambda s, r, p: directory.list_applications(s, r)),
        ("GET PUT DELETE", r"/upload/(?P<session>[^/]+)", "upload",
         lambda s, r, p: graph.upload(s, r, p["session"])),
    ]  # fmt: skip
    return [(set(m.split()), compile_(pattern), name, fn) for m, pattern, name, fn in table]


ROUTE_TABLE = _route_table()


def match_route(method: str, path: str) -> Tuple[Optional[str], Optional[Handler], Dict[str, Any], bool]:
    """(route name, handler, path params, path known with another method)."""
    path_known = False
    for methods, pattern, name, handler in ROUTE_TABLE:
        found = pattern.match(path)
        if found:
            if method in methods:
                return name, handler, {k: v for k, v in found.groupdict().items() if v is not None}, False
            path_known = True
    return None, None, {}, path_known


def fault_response(fault: Fault, route: str, request: Request) -> Response:
    """What a ``status`` fault answers: Microsoft's error shape for that host, with Retry-After if given."""
    status = int(fault.status or 500)
    headers = [("Retry-After", fault.retry_after)] if fault.retry_after is not None else []
    if route in GRAPH_ROUTES:
        code = fault.code or DEFAULT_CODES.get(status, "UnknownError")
        message = fault.message or f"Injected fault: {code}."
        return GraphError(status, code, message, headers).render(request)
    error = fault.error or ("temporarily_unavailable" if status >= 500 or status == 429 else "invalid_request")
    aadsts = fault.aadsts or (50196 if error == "temporarily_unavailable" else 90000)
    cls = AadErrorPage if route == "authorize" else AadError
    response = cls(status, error, aadsts, fault.message or "Injected fault.").render(request)
    response.headers.extend(headers)
    return response


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # never wait for idle keep-alive connections on shutdown
    allow_reuse_address = True

    def __init__(self, address: Tuple[str, int], state: State, ctl: Control) -> None:
        self.state = state
        self.control = ctl
        self.open_sockets: Set[socket.socket] = set()
        self.sockets_lock = threading.Lock()
        super().__init__(address, _RequestHandler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.sockets_lock:
            self.open_sockets.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.sockets_lock:
            self.open_sockets.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up first (read timeout, ``delay`` fault) is not a server error: stay quiet."""
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)):
            return
        super().handle_error(request, client_address)

    def drop_connections(self) -> None:
        """Wake handler threads blocked on idle keep-alive connections so they exit."""
        with self.sockets_lock:
            sockets = list(self.open_sockets)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive like Microsoft's front doors; clients pool connections
    server_version = "Microsoft-IIS/10.0"
    sys_version = ""
    timeout = 120
    server: _Server

    def version_string(self) -> str:
        return self.server_version

    def date_time_string(self, timestamp: Optional[float] = None) -> str:
        """The ``Date`` header, on the fake's clock."""
        return super().date_time_string(self.server.state.clock() if timestamp is None else timestamp)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: the call log is the record

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    # --- plumbing ------------------------------------------------------------------------------

    def _read_body(self) -> Tuple[bytes, Optional[int]]:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks), None
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        declared = self.headers.get("Content-Length")
        if declared is None:
            return b"", None
        length = int(declared)
        return (self.rfile.read(length) if length > 0 else b""), length

    def _write(self, response: Response, request: Request, route: Optional[str]) -> None:
        self.send_response(response.status)
        headers = list(response.headers)
        if route in GRAPH_ROUTES or (route is None and request.path.lower().startswith("/v1.0")):
            headers += [("request-id", request.request_id), ("client-request-id", request.client_request_id)]
        elif route is not None:
            headers.append(("x-ms-request-id", request.request_id))
            if request.echo_client_request_id:
                headers.append(("client-request-id", request.client_request_id))
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if self.command != "HEAD" and response.body:
            self.wfile.write(response.body)

    def _close_without_answer(self) -> None:
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _handle(self) -> None:
        started = time.monotonic()
        split = urlsplit(self.path)
        path = unquote(split.path)
        try:
            body, content_length = self._read_body()
        except ValueError:
            self.send_error(400, "Bad Content-Length")
            return
        request = Request(self.command, path, split.query, dict(self.headers.items()), body, content_length)
        if path.startswith("/_fake/") or path == "/_fake":
            if self.client_address[0] not in ("127.0.0.1", "::1", "::ffff:127.0.0.1"):
                self._write(Response(403, b"control API is loopback only"), request, None)
                return
            self._write(control.handle(self.server.control, request, path[len("/_fake/") :]), request, None)
            return
        route, response, _action = process(self.server.state, request, started)
        if response is None:
            self._close_without_answer()
        else:
            self._write(response, request, route)


def process(
    state: State, request: Request, started: Optional[float] = None, batch_item: Optional[str] = None
) -> Tuple[Optional[str], Optional[Response], Optional[str]]:
    """Route, fault injection, handler and call log for one request: (route, response or None, fault action).

    The HTTP handler calls it for every non-control request; ``batch.run_batch`` calls it for each inner
    request of a JSON batch (``batch_item`` = the inner id, logged with ``batched: True``). None as the response
    means no answer (a ``close_*`` fault).
    """
    if started is None:
        started = time.monotonic()
    request.clock = state.clock
    route, handler, params, path_known = match_route(request.method, request.path)
    # Exchange counts requests in flight per app and mailbox; the one over the limit is refused before
    # anything else happens to it (no fault taken, nothing processed).
    slot = limits.concurrency_key(state, request, route, params)
    if slot is not None and not limits.enter(state, slot):
        refused = limits.concurrency_refusal().render(request)
        _log(state, request, route, refused, None, started, batch_item)
        return route, refused, None
    try:
        return _process(state, request, started, batch_item, route, handler, params, path_known)
    finally:
        if slot is not None:
            limits.leave(state, slot)


def _process(
    state: State,
    request: Request,
    started: float,
    batch_item: Optional[str],
    route: Optional[str],
    handler: Optional[Handler],
    params: Dict[str, Any],
    path_known: bool,
) -> Tuple[Optional[str], Optional[Response], Optional[str]]:
    fault = state.take_fault(route) if route else None
    action = fault.action if fault else None
    if fault is not None and fault.delay > 0:
        time.sleep(fault.delay)
    response: Optional[Response] = None
    if action == "status" and fault is not None and route is not None:
        response = fault_response(fault, route, request)
    elif action != "close_before_processing":
        if fault is not None:
            params["_fault"] = fault  # authorize reads it (authorize_error)
        response = _dispatch(state, request, route, handler, params, path_known)
    if action in ("close_before_processing", "close_after_processing"):
        response = None  # processed or not, the client gets no answer: the ambiguous case
    # Log before answering, so a client that has its answer also finds the call in the log.
    _log(state, request, route, response, action, started, batch_item)
    return route, response, action


def _dispatch(
    state: State,
    request: Request,
    route: Optional[str],
    handler: Optional[Handler],
    params: Dict[str, Any],
    known: bool,
) -> Response:
    graph_like = route in GRAPH_ROUTES or (route is None and request.path.lower().startswith(("/v1.0", "/upload")))
    try:
        if handler is None:
            if known:
                raise GraphError(405, "Request_BadRequest", f"Method {request.method} is not allowed here.")
            if graph_like:
                return graph.not_found(state, request)
            raise GraphError(404, "NotFound", f"No such endpoint: {request.path}")
        return handler(state, request, params)
    except (GraphError, AadError) as exc:
        return exc.render(request)
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        return GraphError(500, "InternalServerError", f"fake_microsoft bug: {exc!r}").render(request)


def _log(
    state: State,
    request: Request,
    route: Optional[str],
    response: Optional[Response],
    action: Optional[str],
    started: float,
    batch_item: Optional[str] = None,
) -> None:
    grant_type = None
    if route == "token":
        grant_type = request.form().get("grant_type")
    record = {
        "method": request.method,
        "path": request.path,
        "route": route,
        "status": response.status if response is not None else None,
        "code": response.graph_code if response is not None else None,
        "fault": action,
        "grant_type": grant_type,
        "request_bytes": len(request.body),
        "response_bytes": len(response.body) if response is not None else 0,
        "content_type": request.header("content-type"),
        "content_range": request.header("content-range"),
        "authorization": request.header("authorization") is not None,
        "client_request_id": request.header("client-request-id"),
        "request_id": request.request_id,
        "duration_ms": round((time.monotonic() - started) * 1000, 1),
        "at": state.clock(),
        "batched": batch_item is not None,  # an inner request of a JSON batch (the outer one is route "batch")
        "batch_item": batch_item,
    }
    with state.lock:
        record["seq"] = len(state.calls) + 1
        state.calls.append(record)


class FakeMicrosoft(Control):
    """The fake served from a daemon thread: ``with FakeMicrosoft() as fake: ...``.

    Ready as soon as the constructor-started server has bound its port (``port=0`` picks a free one).
    Carries the control methods of ``Control`` (reset, configure, messages, inject, ...).
    """

    def __init__(self, port: int = 0, host: str = "127.0.0.1") -> None:
        super().__init__(State())
        self.host = host
        self._requested_port = port
        self._server: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None

    def start(self) -> FakeMicrosoft:
        if self._server is not None:
            return self
        self._server = _Server((self.host, self._requested_port), self.state, self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-microsoft", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        server.shutdown()
        server.drop_connections()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> FakeMicrosoft:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FakeMicrosoft is not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        return f"http://{host}:{self.port}"

    @property
    def authority_url(self) -> str:
        """Where the identity platform lives; the core appends the tenant."""
        return self.url

    @property
    def graph_url(self) -> str:
        return self.url + "/v1.0"

    @property
    def control_url(self) -> str:
        return self.url + "/_fake"
