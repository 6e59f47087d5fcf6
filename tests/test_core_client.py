"""GraphMailClient against a scripted HTTP adapter: exact control of every answer and failure."""

from __future__ import annotations

import base64
import datetime
import json
import os
import re
from email.message import EmailMessage

import pytest
import requests
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict

from graph_mail import (
    AuthenticationError,
    Envelope,
    GraphApiError,
    GraphMailClient,
    MailboxCredentials,
    PermissionDenied,
    RetryPolicy,
    ServiceUnavailable,
    Throttled,
    Timeouts,
    Transport,
    TransportError,
    resolve_cloud,
)
from graph_mail.message import CHUNK_SIZE, CHUNK_UNIT

BASE = "http://127.0.0.1:9"
SENDER = "admin@contoso.onmicrosoft.com"
pytestmark = pytest.mark.usefixtures("graph_mail_reset")


class Script(BaseAdapter):
    """Answers each request with the first matching rule; records everything it saw."""

    def __init__(self):
        super().__init__()
        self.rules = []
        self.seen = []

    def on(self, method, pattern, *answers):
        """Answers are used in order, the last one repeats; each is (status, body, headers) or an exception."""
        self.rules.append((method, re.compile(pattern), list(answers)))
        return self

    def send(self, request, **kwargs):
        self.seen.append(request)
        for method, pattern, answers in self.rules:
            if request.method == method and pattern.search(request.url):
                answer = answers.pop(0) if len(answers) > 1 else answers[0]
                if isinstance(answer, Exception):
                    raise answer
                if callable(answer):
                    answer = answer(request)
                status, body, headers = [*list(answer), None, None][:3]
                response = requests.Response()
                response.status_code = status
                response._content = json.dumps(body).encode() if isinstance(body, (dict, list)) else (body or b"")
                response.headers = CaseInsensitiveDict(headers or {})
                response.headers.setdefault("request-id", f"req-{len(self.seen)}")
                response.url = request.url
                response.request = request
                return response
        raise AssertionError(f"unexpected {request.method} {request.url}")

    def close(self):
        pass

    def calls(self, method=None, pattern=""):
        return [r for r in self.seen if (method is None or r.method == method) and re.search(pattern, r.url)]


class Tokens:
    """A token provider stub: counts refreshes and invalidations."""

    def __init__(self, account=SENDER):
        self.generation = 0
        self.invalidated = []
        self.account = account

    def access_token(self):
        return f"token-{self.generation}"

    def invalidate(self, token=None):
        self.invalidated.append(token)
        self.generation += 1


@pytest.fixture
def script():
    return Script()


@pytest.fixture
def sleeps():
    return []


def make_client(script, sleeps, mode="delegated", retry=None, records=None, tokens=None):
    session = requests.Session()
    session.mount("http://", script)
    transport = Transport(session=session, timeouts=Timeouts(total=60), sleep=sleeps.append)
    credentials = MailboxCredentials(
        "tenant-1", "client-1", client_secret="s3cret-value", mode=mode, cloud=resolve_cloud(graph_url=BASE)
    )
    return GraphMailClient(
        credentials,
        token_provider=tokens or Tokens(),
        transport=transport,
        retry=retry or RetryPolicy(attempts=3, backoff=0.01, jitter=0),
        on_call=(records.append if records is not None else None),
    )


def message(attachment=None):
    msg = EmailMessage()
    msg["From"] = SENDER
    msg["To"] = "bob@example.com"
    msg["Subject"] = "Quote"
    msg["Message-ID"] = "<q1@odoo>"
    msg.set_content("Hello")
    if attachment is not None:
        msg.add_attachment(attachment, maintype="application", subtype="octet-stream", filename="big.bin")
    return msg


ENVELOPE = Envelope(SENDER, ["bob@example.com", "hidden@example.com"])


def test_mime_send_to_me_when_sender_is_the_signed_in_mailbox(script, sleeps):
    records = []
    script.on("POST", r"/v1.0/me/sendMail$", (202, b""))
    result = make_client(script, sleeps, records=records).send(message(), ENVELOPE)
    request = script.seen[0]
    assert request.headers["Content-Type"] == "text/plain"
    assert request.headers["Authorization"] == "Bearer token-0"
    raw = base64.b64decode(request.body)
    assert raw.startswith(b"Bcc: hidden@example.com\r\n") and b"Message-ID: <q1@odoo>" in raw
    assert result.path == "mime" and result.internet_message_id == "<q1@odoo>"
    assert records == result.calls and records[0].outcome == "ok" and records[0].status == 202
    assert records[0].path == "/v1.0/me/sendMail" and records[0].request_bytes == len(request.body)


def test_other_mailbox_and_app_mode_use_users_path(script, sleeps):
    script.on("POST", r"/v1.0/users/sales@contoso.onmicrosoft.com/sendMail$", (202, b""))
    envelope = Envelope("sales@contoso.onmicrosoft.com", ["bob@example.com"])
    make_client(script, sleeps).send(message(), envelope)
    script.on("POST", r"/v1.0/users/admin@contoso.onmicrosoft.com/sendMail$", (202, b""))
    make_client(script, sleeps, mode="application").send(message(), Envelope(SENDER, ["bob@example.com"]))
    assert len(script.seen) == 2


def test_401_refreshes_once_and_replays_once(script, sleeps):
    tokens = Tokens()
    script.on(
        "POST",
        r"/sendMail$",
        (401, {"error": {"code": "InvalidAuthenticationToken", "message": "expired"}}),
        (202, b""),
    )
    result = make_client(script, sleeps, tokens=tokens).send(message(), ENVELOPE)
    assert [r.headers["Authorization"] for r in script.seen] == ["Bearer token-0", "Bearer token-1"]
    assert tokens.invalidated == ["token-0"]
    assert [c.outcome for c in result.calls] == ["retry", "ok"]
    assert sleeps == []


def test_second_401_is_an_authentication_error(script, sleeps):
    tokens = Tokens()
    script.on("POST", r"/sendMail$", (401, {"error": {"code": "InvalidAuthenticationToken", "message": "no"}}))
    with pytest.raises(AuthenticationError) as info:
        make_client(script, sleeps, tokens=tokens).send(message(), ENVELOPE)
    assert len(script.seen) == 2 and len(tokens.invalidated) == 1
    assert info.value.nothing_sent and [c.outcome for c in info.value.calls] == ["retry", "error"]


def test_429_waits_retry_after_then_sends(script, sleeps):
    script.on(
        "POST",
        r"/sendMail$",
        (429, {"error": {"code": "ApplicationThrottled", "message": "slow"}}, {"Retry-After": "1.5"}),
        (202, b""),
    )
    result = make_client(script, sleeps).send(message(), ENVELOPE)
    assert sleeps == [1.5] and len(script.seen) == 2
    assert result.calls[0].outcome == "retry" and result.calls[0].graph_code == "ApplicationThrottled"


def test_429_beyond_attempts_raises_throttled_with_retry_after(script, sleeps):
    script.on("POST", r"/sendMail$", (429, {"error": {"code": "MailboxConcurrency"}}, {"Retry-After": "2"}))
    with pytest.raises(Throttled) as info:
        make_client(script, sleeps).send(message(), ENVELOPE)
    assert len(script.seen) == 3 and info.value.retry_after == 2.0 and info.value.retryable


def test_503_with_retry_after_is_retried_without_it_is_not(script, sleeps):
    script.on("POST", r"/sendMail$", (503, b"", {"Retry-After": "1"}), (202, b""))
    make_client(script, sleeps).send(message(), ENVELOPE)
    assert sleeps == [1.0]
    other = Script().on("POST", r"/sendMail$", (503, b""), (202, b""))
    with pytest.raises(ServiceUnavailable) as info:
        make_client(other, sleeps).send(message(), ENVELOPE)
    assert len(other.seen) == 1 and info.value.may_have_been_sent


@pytest.mark.parametrize("status", [500, 502, 504])
def test_ambiguous_server_errors_are_never_resent(script, sleeps, status):
    script.on("POST", r"/sendMail$", (status, b""), (202, b""))
    with pytest.raises(ServiceUnavailable) as info:
        make_client(script, sleeps).send(message(), ENVELOPE)
    assert len(script.seen) == 1
    assert info.value.may_have_been_sent and not info.value.nothing_sent and not info.value.retryable
    assert "may have been sent" in str(info.value)


def test_read_timeout_is_never_resent(script, sleeps):
    script.on("POST", r"/sendMail$", requests.ReadTimeout("slow"), (202, b""))
    with pytest.raises(TransportError) as info:
        make_client(script, sleeps).send(message(), ENVELOPE)
    assert len(script.seen) == 1 and info.value.may_have_been_sent


def test_connection_refused_is_retried(script, sleeps):
    script.on("POST", r"/sendMail$", requests.ConnectTimeout("refused"), (202, b""))
    result = make_client(script, sleeps).send(message(), ENVELOPE)
    assert len(script.seen) == 2 and len(sleeps) == 1
    assert [c.status for c in result.calls] == [None, 202]


# -- draft + upload session -------------------------------------------------------------------------


def draft_script(script, chunk_answers=None):
    upload_url = f"{BASE}/upload/session-1?tempauth=opaque-upload-token"
    script.on("POST", r"/me/messages$", (201, {"id": "draft/1="}))
    script.on("POST", r"/messages/draft%2F1%3D/attachments/createUploadSession$", (201, {"uploadUrl": upload_url}))
    script.on("PUT", r"/upload/session-1", *(chunk_answers or [_chunk_ok]))
    script.on("GET", r"/upload/session-1", lambda r: (200, {"nextExpectedRanges": [f"{CHUNK_SIZE}-"]}))
    script.on("POST", r"/messages/draft%2F1%3D/send$", (202, b""))
    script.on("DELETE", r"/messages/draft%2F1%3D$", (204, b""))
    return script


def _chunk_ok(request):
    _, end, total = map(int, re.match(r"bytes (\d+)-(\d+)/(\d+)", request.headers["Content-Range"]).groups())
    if end + 1 == total:
        return 201, b""
    return 200, {"nextExpectedRanges": [f"{end + 1}-"]}


def test_large_mail_goes_draft_upload_send(script, sleeps):
    data = os.urandom(4_500_000)
    draft_script(script)
    result = make_client(script, sleeps).send(message(data), ENVELOPE)
    assert result.path == "draft"
    puts = script.calls("PUT")
    assert all("Authorization" not in r.headers for r in puts)  # the upload URL carries its own token
    assert all(len(r.body) % CHUNK_UNIT == 0 for r in puts[:-1])
    assert b"".join(r.body for r in puts) == data
    assert puts[0].headers["Content-Range"] == f"bytes 0-{CHUNK_SIZE - 1}/{len(data)}"
    send = script.calls("POST", r"/send$")[0]
    assert send.headers["Content-Length"] == "0"
    assert [c.operation for c in result.calls] == [
        "createDraft",
        "createUploadSession",
        "uploadChunk",
        "uploadChunk",
        "send",
    ]
    session = json.loads(script.calls("POST", "createUploadSession")[0].body)["AttachmentItem"]
    assert session["size"] == len(data) and session["name"] == "big.bin"
    assert all("tempauth" not in c.path for c in result.calls)
    assert not script.calls("DELETE")


def test_failed_chunk_resumes_from_next_expected_ranges(script, sleeps):
    data = os.urandom(4_500_000)
    draft_script(script, chunk_answers=[_chunk_ok, requests.ConnectionError("reset"), _chunk_ok])
    result = make_client(script, sleeps).send(message(data), ENVELOPE)
    puts = script.calls("PUT")
    assert len(puts) == 3
    assert puts[2].headers["Content-Range"].startswith(f"bytes {CHUNK_SIZE}-")  # resumed where Graph said
    assert len(script.calls("GET", "/upload/")) == 1
    assert puts[0].body + puts[2].body == data
    assert [c.outcome for c in result.calls if c.operation == "uploadChunk"] == ["ok", "retry", "ok"]


def test_draft_is_deleted_when_the_upload_cannot_complete(script, sleeps):
    data = os.urandom(4_500_000)
    draft_script(script, chunk_answers=[(400, {"error": {"code": "invalidRange", "message": "bad"}})])
    with pytest.raises(Exception) as info:
        make_client(script, sleeps).send(message(data), ENVELOPE)
    assert info.value.nothing_sent and not info.value.may_have_been_sent
    assert len(script.calls("DELETE", r"/messages/draft%2F1%3D$")) == 1
    assert not script.calls("POST", r"/send$")
    assert info.value.calls[-1].operation == "deleteDraft"


def test_draft_is_kept_when_the_send_itself_is_ambiguous(script, sleeps):
    data = os.urandom(4_500_000)
    draft_script(script)
    script.rules.insert(0, ("POST", re.compile(r"/send$"), [requests.ReadTimeout("slow")]))
    with pytest.raises(TransportError) as info:
        make_client(script, sleeps).send(message(data), ENVELOPE)
    assert info.value.may_have_been_sent
    assert not script.calls("DELETE")  # deleting could race a send that did happen


def test_on_call_failure_never_breaks_a_send(script, sleeps):
    script.on("POST", r"/sendMail$", (202, b""))
    client = make_client(script, sleeps)
    client.on_call = lambda record: 1 / 0
    assert client.send(message(), ENVELOPE).path == "mime"


def test_find_sent_and_whoami(script, sleeps):
    script.on("GET", r"/me/mailFolders/SentItems/messages\?", (200, {"value": [{"id": "x"}]}))
    script.on(
        "GET",
        r"/users/sales@contoso.onmicrosoft.com/mailFolders/SentItems",
        (403, {"error": {"code": "ErrorAccessDenied"}}),
    )
    script.on("GET", r"/v1.0/me$", (200, {"mail": SENDER}))
    client = make_client(script, sleeps)
    assert client.find_sent("<q'1@odoo>", SENDER) is True
    query = script.seen[0].url.split("?", 1)[1]
    assert "%24filter=internetMessageId%20eq%20%27%3Cq%27%271%40odoo%3E%27" in query
    assert client.find_sent("<q1@odoo>", "sales@contoso.onmicrosoft.com") is None
    assert client.whoami() == {"mail": SENDER}


def test_413_on_the_mime_path_falls_back_to_the_draft_path(script, sleeps):
    data = os.urandom(1_500_000)
    draft_script(script)
    script.rules.insert(0, ("POST", re.compile(r"/me/sendMail$"), [(413, {"error": {"code": "RequestBodyTooLarge"}})]))
    script.on("POST", r"/messages/draft%2F1%3D/attachments$", (201, {"id": "att-1"}))
    result = make_client(script, sleeps).send(message(data), ENVELOPE)
    assert result.path == "draft"
    assert [c.operation for c in result.calls][:2] == ["sendMail", "createDraft"]
    assert result.calls[0].outcome == "error" and result.calls[-1].operation == "send"
    posted = [json.loads(r.body) for r in script.calls("POST", r"/attachments$")]
    assert posted and base64.b64decode(posted[0]["contentBytes"]) == data


def test_credential_expiry_reads_graphs_application_resource(script, sleeps):
    application = {
        "appId": "client-1",
        "passwordCredentials": [
            {"customKeyIdentifier": None, "displayName": "odoo", "endDateTime": "2027-03-01T10:00:00.1234567Z",
             "hint": "s3c", "keyId": "k-1", "secretText": None, "startDateTime": "2025-03-01T10:00:00Z"},
            {"displayName": "old", "endDateTime": "2026-01-01T12:00:00+02:00", "hint": "s3c", "keyId": "k-0"},
            "not an object",
        ],
        "keyCredentials": [
            {"customKeyIdentifier": "52ED9B5038A47B9E2E2190715CC238359D4F8F73", "displayName": "CN=odoo",
             "endDateTime": "2026-06-30T00:00:00Z", "keyId": "k-2", "startDateTime": "bogus",
             "type": "AsymmetricX509Cert", "usage": "Verify", "key": None},
            {"customKeyIdentifier": None, "keyId": "k-3", "type": "Symmetric", "usage": "Sign"},
        ],
    }  # fmt: skip
    script.on("GET", r"/applications\(appId='client-1'\)\?", (200, application))
    records = []
    client = make_client(script, sleeps, mode="app", records=records)
    expiry = client.credential_expiry()
    (request,) = script.seen
    assert (
        request.url
        == f"{BASE}/v1.0/applications(appId='client-1')?%24select=passwordCredentials%2CkeyCredentials%2CappId"
    )
    assert request.headers["Authorization"] == "Bearer token-0"
    assert [s.key_id for s in expiry.secrets] == ["k-1", "k-0"]
    assert expiry.secrets[0].end == datetime.datetime(2027, 3, 1, 10, 0, 0, 123456)
    assert expiry.secrets[1].end == datetime.datetime(2026, 1, 1, 10, 0)  # offsets folded into naive UTC
    assert expiry.secret_for("s3cret-value").key_id == "k-0"  # two match the hint: the one ending first
    (certificate,) = expiry.certificates  # the symmetric key is not a certificate
    assert certificate.start is None and certificate.end == datetime.datetime(2026, 6, 30)
    assert expiry.certificate_for("52:ed:9b:50:38:a4:7b:9e:2e:21:90:71:5c:c2:38:35:9d:4f:8f:73") == certificate
    assert [r.operation for r in records] == ["credentialExpiry"]


def test_credential_expiry_hints_on_403_and_404(script, sleeps):
    denied = {"error": {"code": "Authorization_RequestDenied", "message": "Insufficient privileges to complete the operation."}}  # fmt: skip
    missing = {"error": {"code": "Request_ResourceNotFound", "message": "Resource 'client-1' does not exist"}}
    script.on("GET", r"/applications", (403, denied), (404, missing), (503, {}, {"Retry-After": "1"}), (200, {}))
    client = make_client(script, sleeps, mode="app")
    with pytest.raises(PermissionDenied) as info:
        client.credential_expiry()
    assert info.value.hint.startswith("Grant the application permission Application.Read.All, or fill in")
    with pytest.raises(GraphApiError) as info:
        client.credential_expiry()
    assert type(info.value) is GraphApiError and info.value.status == 404
    assert "multi-tenant" in info.value.hint and info.value.code == "Request_ResourceNotFound"
    expiry = client.credential_expiry()  # a 503 with Retry-After is retried like every call
    assert sleeps == [1.0] and expiry.app_id == "client-1" and expiry.secrets == []
