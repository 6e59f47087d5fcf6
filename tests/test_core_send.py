"""End to end against the fake Microsoft: MIME and draft paths, faults, ambiguity, re-authentication."""

from __future__ import annotations

import email.utils
import hashlib
import os
import time
from email.message import EmailMessage
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from fake_microsoft.defaults import CLIENT_ID, CLIENT_SECRET, DEFAULTS, TENANT_ID
from graph_mail import (
    AuthMode,
    DelegatedAuthFlow,
    Envelope,
    GraphMailClient,
    GraphMailError,
    InvalidGrantError,
    MailboxCredentials,
    MailboxNotFound,
    PermissionDenied,
    RetryPolicy,
    ServiceUnavailable,
    Throttled,
    Timeouts,
    TokenProvider,
    Transport,
    TransportError,
    resolve_cloud,
)
from graph_mail.message import CHUNK_SIZE

pytestmark = [
    pytest.mark.usefixtures("graph_mail_reset"),
    pytest.mark.filterwarnings("ignore:response_mode='form_post'"),
]
ADMIN = "admin@contoso.onmicrosoft.com"
SALES = "sales@contoso.onmicrosoft.com"


@pytest.fixture
def sleeps():
    return []


def app_client(fake, sleeps, retry=None, records=None, **changes):
    cloud = resolve_cloud(authority_url=fake.authority_url, graph_url=fake.graph_url)
    values = dict(client_secret=CLIENT_SECRET, mode=AuthMode.APPLICATION, cloud=cloud)
    values.update(changes)
    creds = MailboxCredentials(TENANT_ID, CLIENT_ID, **values)
    transport = Transport(timeouts=Timeouts(read=5, total=30), sleep=sleeps.append)
    return GraphMailClient(
        creds,
        transport=transport,
        retry=retry or RetryPolicy(backoff=0.01),
        on_call=records.append if records is not None else None,
    )


def make_message(sender=SALES, subject="Devis n°42 — Zoë ✓", attachments=()):
    msg = EmailMessage()
    msg["From"] = f"Ventes Société <{sender}>"
    msg["To"] = "Bob Müller <bob@example.com>"
    msg["Cc"] = "carol@example.com"
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{os.urandom(6).hex()}@odoo.example.com>"
    msg["In-Reply-To"] = "<parent@odoo.example.com>"
    msg["References"] = "<root@odoo.example.com> <parent@odoo.example.com>"
    msg["Reply-To"] = "catchall@example.com"
    msg.set_content("Bonjour Bob ✓")
    msg.add_alternative('<p>Bonjour <img src="cid:logo@odoo"></p>', subtype="html")
    msg.get_payload()[1].add_related(b"\x89PNG fake logo", "image", "png", cid="<logo@odoo>")
    for name, data in attachments:
        msg.add_attachment(data, maintype="application", subtype="pdf", filename=name)
    return msg


ENVELOPE = Envelope(SALES, ["bob@example.com", "carol@example.com", "secret-bcc@example.com"])


def test_mime_send_keeps_headers_and_hides_bcc(fake, sleeps):
    msg = make_message()
    result = app_client(fake, sleeps).send(msg, ENVELOPE)
    assert result.path == "mime"
    (stored,) = fake.messages()
    assert stored["via"] == "sendMail-mime" and stored["mailbox"] == SALES
    assert stored["internet_message_id"] == msg["Message-ID"] == result.internet_message_id
    assert stored["subject"] == "Devis n°42 — Zoë ✓"
    assert stored["bcc"] == ["secret-bcc@example.com"] and sorted(stored["cc"]) == ["carol@example.com"]
    raw = fake.raw(stored["id"])
    assert b"secret-bcc" not in raw  # Graph strips Bcc: other recipients never see it
    original = msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))
    for name in (b"In-Reply-To", b"References", b"Reply-To", b"Subject", b"From", b"To"):
        line = next(x for x in original.split(b"\r\n") if x.startswith(name + b":"))
        assert line in raw.split(b"\r\n")
    assert any(a["content_id"] == "logo@odoo" and a["is_inline"] for a in stored["attachments"])


def test_large_mail_draft_upload_send(fake, sleeps):
    data = os.urandom(4_500_000)
    records = []
    msg = make_message(attachments=[("big.pdf", data), ("small.pdf", b"%PDF small")])
    result = app_client(fake, sleeps, records=records).send(msg, ENVELOPE)
    assert result.path == "draft"
    (stored,) = fake.messages()
    assert stored["via"] == "draft-send" and stored["internet_message_id"] == msg["Message-ID"]
    by_name = {a["name"]: a for a in stored["attachments"]}
    assert by_name["big.pdf"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert by_name["big.pdf"]["size"] == len(data) and "small.pdf" in by_name
    assert stored["bcc"] == ["secret-bcc@example.com"]
    uploads = fake.calls(route="upload")
    assert uploads and not any(c["authorization"] for c in uploads)
    assert all(c["status"] in (200, 201) for c in uploads)
    assert [r.operation for r in records] == [r.operation for r in result.calls]
    assert all(c.client_request_id for c in result.calls)
    assert not fake.calls(route="deleteDraft")


def test_external_content_is_uploaded_from_its_file_and_arrives_whole(fake, sleeps, tmp_path):
    data = os.urandom(4_500_000)
    path = tmp_path / "big.pdf"
    path.write_bytes(data)

    class FileSource:
        size = len(data)

        def open(self):
            return open(path, "rb")

    msg = make_message(attachments=[("big.pdf", b"stand-in")])
    resolve = lambda part: FileSource() if part.get_payload(decode=True) == b"stand-in" else None  # noqa: E731
    result = app_client(fake, sleeps).send(msg, ENVELOPE, external=resolve)
    assert result.path == "draft"
    (stored,) = fake.messages()
    by_name = {a["name"]: a for a in stored["attachments"]}
    assert by_name["big.pdf"]["sha256"] == hashlib.sha256(data).hexdigest() and by_name["big.pdf"]["size"] == len(data)
    assert [c.operation for c in result.calls].count("uploadChunk") == -(-len(data) // CHUNK_SIZE)


def test_mid_size_attachments_go_through_add_attachment_and_arrive_complete(fake, sleeps):
    files = [(f"part-{i}.pdf", os.urandom(2_000_000)) for i in range(5)]  # 10 MB: under 3 MB each, no upload session
    msg = make_message(attachments=files)
    result = app_client(fake, sleeps).send(msg, ENVELOPE)
    assert result.path == "draft"
    (stored,) = fake.messages()
    assert stored["via"] == "draft-send" and stored["internet_message_id"] == msg["Message-ID"]
    by_name = {a["name"]: a for a in stored["attachments"]}
    for name, data in files:
        assert by_name[name]["size"] == len(data)
        assert by_name[name]["sha256"] == hashlib.sha256(data).hexdigest()
    assert len([a for a in stored["attachments"] if (a["name"] or "").startswith("part-")]) == 5  # none twice
    assert stored["bcc"] == ["secret-bcc@example.com"]
    posts = fake.calls(route="addAttachment")
    assert posts and all(c["status"] == 201 for c in posts)
    assert not fake.calls(route="createUploadSession")
    assert all(c["request_bytes"] <= 4 * 1024 * 1024 for c in fake.calls())
    assert [c.operation for c in result.calls].count("addAttachment") == len(posts)


def test_upload_resumes_after_a_dropped_chunk(fake, sleeps):
    data = os.urandom(4_500_000)
    fake.inject("upload", action="close_after_processing", count=1)
    result = app_client(fake, sleeps).send(make_message(attachments=[("big.pdf", data)]), ENVELOPE)
    (stored,) = fake.messages()
    assert stored["attachments"][-1]["sha256"] == hashlib.sha256(data).hexdigest()
    methods = [c["method"] for c in fake.calls(route="upload")]
    assert methods == ["PUT", "GET", "PUT"]  # first chunk stored, answer lost; ask, resume at chunk 2
    ranges = [c["content_range"] for c in fake.calls(route="upload") if c["method"] == "PUT"]
    assert ranges[1].startswith(f"bytes {CHUNK_SIZE}-")
    assert [c.outcome for c in result.calls if c.operation == "uploadChunk"] == ["retry", "ok"]


def test_expired_upload_session_is_replaced_once(fake, sleeps):
    data = os.urandom(4_500_000)
    fake.inject("upload", status=404, code="ErrorItemNotFound", count=1, skip=1)  # the 2nd chunk: session gone
    app_client(fake, sleeps).send(make_message(attachments=[("big.pdf", data)]), ENVELOPE)
    (stored,) = fake.messages()
    assert stored["attachments"][-1]["sha256"] == hashlib.sha256(data).hexdigest()
    assert len(fake.calls(route="createUploadSession")) == 2, "one new session, then the whole file again"


def test_draft_deleted_when_the_upload_session_fails(fake, sleeps):
    fake.inject("createUploadSession", status=403, code="ErrorAccessDenied", count=1)
    data = os.urandom(4_500_000)
    with pytest.raises(PermissionDenied) as info:
        app_client(fake, sleeps).send(make_message(attachments=[("big.pdf", data)]), ENVELOPE)
    assert info.value.nothing_sent and not info.value.retryable
    assert [c["status"] for c in fake.calls(route="deleteDraft")] == [204]
    assert fake.messages() == []
    assert "Mail.ReadWrite" in info.value.hint


def test_throttled_send_waits_and_succeeds(fake, sleeps):
    fake.inject("sendMail", status=429, code="ApplicationThrottled", retry_after="0.5", count=1)
    result = app_client(fake, sleeps).send(make_message(), ENVELOPE)
    assert sleeps == [0.5] and len(fake.messages()) == 1
    assert [c.outcome for c in result.calls] == ["retry", "ok"]


def test_throttled_too_long_goes_back_to_the_caller(fake, sleeps):
    fake.inject("sendMail", status=429, code="MailboxConcurrency", retry_after="600", count=1)
    with pytest.raises(Throttled) as info:
        app_client(fake, sleeps).send(make_message(), ENVELOPE)
    assert info.value.retry_after == 600 and info.value.retryable and info.value.nothing_sent
    assert sleeps == []


def test_503_with_http_date_retry_after(fake, sleeps):
    fake.inject("sendMail", status=503, retry_after=email.utils.formatdate(time.time() + 2, usegmt=True), count=1)
    app_client(fake, sleeps).send(make_message(), ENVELOPE)
    assert len(sleeps) == 1 and 0 < sleeps[0] <= 2.01 and len(fake.messages()) == 1


@pytest.mark.parametrize("status", [500, 502, 504])
def test_server_error_on_send_is_reported_never_resent(fake, sleeps, status):
    fake.inject("sendMail", status=status, count=1)
    with pytest.raises(ServiceUnavailable) as info:
        app_client(fake, sleeps).send(make_message(), ENVELOPE)
    assert info.value.may_have_been_sent and not info.value.retryable
    assert len(fake.calls(route="sendMail")) == 1


def test_connection_dropped_after_processing_is_ambiguous_and_checkable(fake, sleeps):
    fake.inject("sendMail", action="close_after_processing", count=1)
    client = app_client(fake, sleeps)
    msg = make_message()
    with pytest.raises(TransportError) as info:
        client.send(msg, ENVELOPE)
    assert info.value.may_have_been_sent and not info.value.nothing_sent
    assert len(fake.calls(route="sendMail")) == 1  # never resent
    assert client.find_sent(msg["Message-ID"], SALES) is True  # and the caller can verify


def test_read_timeout_on_send_is_ambiguous(fake, sleeps):
    fake.inject("sendMail", action="delay", delay=1.0, count=1)
    cloud = resolve_cloud(authority_url=fake.authority_url, graph_url=fake.graph_url)
    creds = MailboxCredentials(TENANT_ID, CLIENT_ID, client_secret=CLIENT_SECRET, mode="app", cloud=cloud)
    client = GraphMailClient(creds, transport=Transport(timeouts=Timeouts(read=0.3), sleep=sleeps.append))
    with pytest.raises(TransportError) as info:
        client.send(make_message(), ENVELOPE)
    assert info.value.may_have_been_sent
    deadline = time.monotonic() + 3
    while not fake.calls(route="sendMail") and time.monotonic() < deadline:
        time.sleep(0.05)  # the fake logs the call once its delay is over
    assert len(fake.calls(route="sendMail")) == 1
    assert len(fake.messages()) == 1  # it was in fact accepted: exactly why nothing is resent


def test_unknown_mailbox_and_send_as_denied(fake, sleeps):
    client = app_client(fake, sleeps)
    with pytest.raises(MailboxNotFound):
        client.send(
            make_message("ghost@contoso.onmicrosoft.com"),
            Envelope("ghost@contoso.onmicrosoft.com", ["bob@example.com", "carol@example.com"]),
        )
    fake.configure(allowed_mailboxes=[ADMIN])
    with pytest.raises(PermissionDenied) as info:
        client.send(make_message(), ENVELOPE)
    assert info.value.nothing_sent and info.value.hint


def test_find_sent_false_for_unknown_message(fake, sleeps):
    assert app_client(fake, sleeps).find_sent("<nobody@nowhere>", SALES) is False


def test_find_sent_tells_copies_with_one_message_id_apart(fake, sleeps):
    """Odoo sends a copy per recipient with one Message-ID: only the copy sent to these recipients counts."""
    client = app_client(fake, sleeps)
    msg = make_message()
    client.send(msg, ENVELOPE)
    assert client.find_sent(msg["Message-ID"], SALES, ENVELOPE.recipients) is True
    assert client.find_sent(msg["Message-ID"], SALES, [r.upper() for r in ENVELOPE.recipients[:1]]) is True
    assert client.find_sent(msg["Message-ID"], SALES, ["zoe@fabrikam.example"]) is False


# -- delegated --------------------------------------------------------------------------------------


def sign_in(fake):
    creds = MailboxCredentials(
        TENANT_ID, CLIENT_ID, client_secret=CLIENT_SECRET, cloud=resolve_cloud(authority_url=fake.authority_url)
    )
    flow = DelegatedAuthFlow(creds, DEFAULTS["redirect_uris"][0])
    url, state = flow.start("state-1")
    location = requests.get(url, allow_redirects=False, timeout=10).headers["Location"]
    return flow.finish(state, {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()})


def delegated(fake, sleeps, on_refresh_token=None):
    first = sign_in(fake)
    cloud = resolve_cloud(authority_url=fake.authority_url, graph_url=fake.graph_url)
    creds = MailboxCredentials(
        TENANT_ID, CLIENT_ID, client_secret=CLIENT_SECRET, cloud=cloud, refresh_token=first.refresh_token
    )
    transport = Transport(sleep=sleeps.append)
    return GraphMailClient(creds, transport=transport, on_refresh_token=on_refresh_token), first


def test_delegated_send_as_the_signed_in_mailbox_uses_me(fake, sleeps):
    client, _ = delegated(fake, sleeps)
    msg = make_message(ADMIN)
    client.send(msg, Envelope(ADMIN, ["bob@example.com", "carol@example.com"]))
    assert [c["path"] for c in fake.calls(route="sendMail")] == ["/v1.0/me/sendMail"]
    assert client.whoami()["userPrincipalName"] == ADMIN


def test_expired_token_refreshes_once_and_replays_once(fake, sleeps):
    rotated = []
    client, first = delegated(fake, sleeps, on_refresh_token=lambda rt, token: rotated.append(rt))
    fake.expire_tokens()
    result = client.send(make_message(ADMIN), Envelope(ADMIN, ["bob@example.com", "carol@example.com"]))
    assert [c["status"] for c in fake.calls(route="sendMail")] == [401, 202]
    assert len([c for c in fake.calls(route="token") if c["grant_type"] == "refresh_token"]) == 1
    assert [c.outcome for c in result.calls] == ["retry", "ok"]
    assert rotated and rotated[0] != first.refresh_token
    assert len(fake.messages()) == 1


def test_revoked_grant_during_send_needs_reauthentication(fake, sleeps):
    client, _ = delegated(fake, sleeps)
    fake.expire_tokens()
    fake.revoke_refresh_tokens()
    with pytest.raises(InvalidGrantError) as info:
        client.send(make_message(ADMIN), Envelope(ADMIN, ["bob@example.com", "carol@example.com"]))
    assert info.value.nothing_sent and not info.value.retryable
    assert fake.messages() == []


def test_batch_reuses_one_token(fake, sleeps):
    client = app_client(fake, sleeps)
    for _ in range(5):
        app_client(fake, sleeps).send(make_message(), ENVELOPE)
    client.send(make_message(), ENVELOPE)
    assert len(fake.calls(route="token")) == 1 and len(fake.messages()) == 6
    assert TokenProvider is not None


@pytest.mark.parametrize("status", [503, 429])
def test_identity_platform_outage_leaves_the_mail_retryable(fake, sleeps, status):
    """A 5xx or 429 from the token endpoint: nothing was sent and the outage is temporary."""
    fake.inject("token", status=status, count=10, code="temporarily_unavailable")
    client = app_client(fake, sleeps)
    with pytest.raises(GraphMailError) as info:
        client.send(make_message(), ENVELOPE)
    assert info.value.nothing_sent and not info.value.may_have_been_sent
    assert info.value.retryable, "the mail stays queued"
    assert fake.messages() == []
    if status == 503:  # (after a 429, msal itself holds sign-ins back for the Retry-After period)
        fake.clear_faults()
        client.send(make_message(), ENVELOPE)  # the next queue run gets through
        assert len(fake.messages()) == 1
