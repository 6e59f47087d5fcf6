from __future__ import annotations

import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from graph_mail import Timeouts, Transport, TransportError
from graph_mail import transport as transport_module
from graph_mail.transport import classify, get_session, set_session


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: list = []

    def log_message(self, *args):  # keep test output quiet
        pass

    def _body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _answer(self, status=200, body=b"ok"):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("client-request-id", self.headers.get("client-request-id", ""))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self._route()

    def do_POST(self):
        self._route()

    def _route(self):
        body = self._body()
        type(self).seen.append((self.command, self.path, dict(self.headers), body))
        if self.path == "/slow":
            time.sleep(1.0)
            return self._answer()
        if self.path == "/close-after-body":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return None
        return self._answer()


class _Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address):  # clients hang up on purpose in these tests
        pass


@pytest.fixture(scope="module")
def stub():
    server = _Server(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def transport():
    return Transport(session=requests.Session(), timeouts=Timeouts(connect=2, read=0.3, total=10))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_each_call_gets_its_own_client_request_id(stub, transport):
    _Handler.seen.clear()
    first = transport.request("GET", f"{stub}/ok")
    second = transport.request("POST", f"{stub}/ok", data=b"x")
    ids = [h["client-request-id"] for _, _, h, _ in _Handler.seen]
    assert len(set(ids)) == 2 and all(uuid.UUID(i).version == 4 for i in ids)
    assert first.client_request_id == ids[0] and second.client_request_id == ids[1]
    assert all(h.get("return-client-request-id") == "true" for _, _, h, _ in _Handler.seen)


def test_explicit_connect_and_read_timeouts_are_passed():
    seen = {}

    class Recorder(requests.Session):
        def request(self, method, url, **kwargs):
            seen.update(kwargs)
            raise requests.ConnectTimeout("stop here")

    transport = Transport(session=Recorder(), timeouts=Timeouts(connect=3.5, read=42, total=100))
    with pytest.raises(TransportError):
        transport.request("GET", "http://127.0.0.1:9/")
    assert seen["timeout"] == (3.5, 42)
    assert seen["allow_redirects"] is False


def test_read_timeout_is_capped_by_the_deadline():
    seen = {}
    now = [100.0]

    class Recorder(requests.Session):
        def request(self, method, url, **kwargs):
            seen.update(kwargs)
            raise requests.ConnectTimeout("stop")

    transport = Transport(session=Recorder(), timeouts=Timeouts(connect=5, read=60, total=300), clock=lambda: now[0])
    with pytest.raises(TransportError):
        transport.request("GET", "http://127.0.0.1:9/", deadline=102.0)
    assert seen["timeout"] == (2.0, 2.0)


def test_deadline_already_passed_sends_nothing(transport):
    with pytest.raises(TransportError) as info:
        transport.request("GET", "http://127.0.0.1:9/", deadline=transport.clock() - 1)
    assert info.value.nothing_sent and not info.value.may_have_been_sent and info.value.retryable


def test_read_timeout_may_have_been_sent(stub, transport):
    started = time.monotonic()
    with pytest.raises(TransportError) as info:
        transport.request("POST", f"{stub}/slow", data=b"mail")
    assert time.monotonic() - started < 0.9
    err = info.value
    assert err.may_have_been_sent and not err.nothing_sent and not err.retryable
    assert err.client_request_id


def test_connection_closed_after_the_body_may_have_been_sent(stub, transport):
    with pytest.raises(TransportError) as info:
        transport.request("POST", f"{stub}/close-after-body", data=b"mail" * 1000)
    assert info.value.may_have_been_sent and not info.value.nothing_sent


def test_connection_refused_sent_nothing(transport):
    with pytest.raises(TransportError) as info:
        transport.request("POST", f"http://127.0.0.1:{free_port()}/x", data=b"mail")
    assert info.value.nothing_sent and not info.value.may_have_been_sent and info.value.retryable


def test_dns_failure_sent_nothing(transport):
    with pytest.raises(TransportError) as info:
        transport.request("POST", "http://graph-mail-test.invalid/x", data=b"mail")
    assert info.value.nothing_sent


def test_tls_failure_before_the_request_sent_nothing(stub, transport):
    with pytest.raises(TransportError) as info:
        transport.request("POST", stub.replace("http://", "https://") + "/ok", data=b"mail")
    assert info.value.nothing_sent


@pytest.mark.parametrize(
    ("exc", "nothing_sent"),
    [
        (requests.ConnectTimeout("connect"), True),
        (requests.exceptions.SSLError("handshake"), True),
        (requests.ReadTimeout("read"), False),
        (requests.exceptions.ChunkedEncodingError("broken answer"), False),
        (requests.ConnectionError(ConnectionResetError(104, "reset")), False),
    ],
)
def test_classification(exc, nothing_sent):
    err = classify(exc, "https://graph.microsoft.com/v1.0/me/sendMail")
    assert err.nothing_sent is nothing_sent and err.may_have_been_sent is (not nothing_sent)
    assert "graph.microsoft.com" in err.message


def test_one_shared_session_per_process_thread_safe():
    set_session(None)
    sessions = []
    threads = [threading.Thread(target=lambda: sessions.append(get_session())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(s) for s in sessions}) == 1
    adapter = sessions[0].get_adapter("https://graph.microsoft.com")
    assert adapter.max_retries.total == 0  # no silent resend by urllib3
    assert Transport().session is sessions[0]
    custom = requests.Session()
    assert Transport(session=custom).session is custom


def test_injected_session_replaces_the_shared_one():
    custom = requests.Session()
    set_session(custom)
    try:
        assert get_session() is custom
    finally:
        set_session(None)
    assert transport_module.get_session() is not custom


def test_the_environment_is_read_once_per_host(monkeypatch):
    """requests reads proxies and CA bundle from the environment on every request; ours once per host."""
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    reads = []
    parent = requests.Session.merge_environment_settings

    def spy(self, url, *args):
        reads.append(url)
        return parent(self, url, *args)

    monkeypatch.setattr(requests.Session, "merge_environment_settings", spy)
    session = transport_module._new_session()
    for path in ("a", "b", "c"):
        settings = session.merge_environment_settings(f"https://graph.example/{path}", {}, None, None, None)
        assert settings["proxies"]["https"] == "http://proxy.example:3128"  # the proxy still applies
    session.merge_environment_settings("https://login.example/token", {}, None, None, None)
    assert reads == ["https://graph.example/a", "https://login.example/token"]
    # A request with its own settings is not cached.
    session.merge_environment_settings("https://graph.example/d", {}, None, False, None)
    assert len(reads) == 3


def test_a_netrc_entry_never_replaces_the_bearer_token(monkeypatch, tmp_path):
    netrc = tmp_path / "netrc"
    netrc.write_text("machine graph.example login someone password secret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    request = requests.Request("GET", "https://graph.example/v1.0/me", headers={"Authorization": "Bearer token"})
    assert requests.Session().prepare_request(request).headers["Authorization"].startswith("Basic")  # requests' own
    prepared = transport_module._new_session().prepare_request(request)
    assert prepared.headers["Authorization"] == "Bearer token"
