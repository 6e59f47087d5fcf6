"""Drafts, upload sessions and draft send: Microsoft's chunk, range, size and header rules."""

from __future__ import annotations

import base64
import hashlib
import http.client
from email.message import EmailMessage
from urllib.parse import urlsplit

import pytest
import requests

from fake_microsoft.testing import app_token, delegated_token

CHUNK = 327680
BIG = 3 * 1024 * 1024 + 1000  # just over the 3 MB minimum of an upload session
DATA = bytes(range(256)) * (BIG // 256) + b"z" * (BIG % 256)


def graph(fake, method, path, token=None, **kwargs):
    headers = kwargs.pop("headers", {})
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return requests.request(method, fake.graph_url + path, headers=headers, timeout=10, **kwargs)


def mime_draft(fake, token) -> dict:
    message = EmailMessage()
    message["From"] = "admin@contoso.onmicrosoft.com"
    message["To"] = "alice@example.com"
    message["Bcc"] = "hidden@example.com"
    message["Subject"] = "Big report"
    message["Message-ID"] = "<big-1@odoo.example.com>"
    message["Date"] = "Mon, 06 May 2024 10:00:00 +0000"
    message.set_content("see attachment")
    body = base64.b64encode(message.as_bytes())
    answer = graph(fake, "POST", "/me/messages", token, data=body, headers={"Content-Type": "text/plain"})
    assert answer.status_code == 201, answer.text
    return answer.json()


def upload_session(fake, token, draft_id: str, size: int = BIG) -> requests.Response:
    item = {"AttachmentItem": {"attachmentType": "file", "name": "report.bin", "size": size,
                               "contentType": "application/octet-stream"}}  # fmt: skip
    return graph(fake, "POST", f"/me/messages/{draft_id}/attachments/createUploadSession", token, json=item)


def put(url: str, start: int, chunk: bytes, total: int = BIG, **headers) -> requests.Response:
    end = start + len(chunk) - 1
    headers.setdefault("Content-Range", f"bytes {start}-{end}/{total}")
    return requests.put(url, data=chunk, headers={"Content-Type": "application/octet-stream", **headers}, timeout=10)


def send_draft(fake, token, draft_id: str) -> requests.Response:
    return graph(fake, "POST", f"/me/messages/{draft_id}/send", token, data=b"")


@pytest.fixture
def token(fake) -> str:
    return delegated_token(fake.url)


@pytest.fixture
def session(fake, token):
    draft = mime_draft(fake, token)
    answer = upload_session(fake, token, draft["id"])
    assert answer.status_code == 201, answer.text
    return draft, answer.json()


def test_draft_upload_and_send_delivers_the_attachment(fake, token, session):
    draft, created = session
    assert draft["isDraft"] is True
    assert draft["internetMessageId"] == "<big-1@odoo.example.com>"
    assert created["nextExpectedRanges"] == ["0-"]
    url = created["uploadUrl"]
    first = put(url, 0, DATA[: 5 * CHUNK])
    assert first.status_code == 200
    assert first.json()["nextExpectedRanges"] == [f"{5 * CHUNK}-"]
    assert "expirationDateTime" in first.json()
    assert requests.get(url, timeout=10).json()["nextExpectedRanges"] == [f"{5 * CHUNK}-"]
    last = put(url, 5 * CHUNK, DATA[5 * CHUNK :])
    assert last.status_code == 201
    assert "/attachments(" in last.headers["Location"]
    answer = send_draft(fake, token, draft["id"])
    assert answer.status_code == 202 and answer.content == b""
    [message] = fake.messages()
    assert message["via"] == "draft-send"
    assert message["internet_message_id"] == "<big-1@odoo.example.com>"
    assert message["bcc"] == ["hidden@example.com"]
    assert message["text"].strip() == "see attachment"
    [attachment] = message["attachments"]
    assert attachment["name"] == "report.bin"
    assert attachment["sha256"] == hashlib.sha256(DATA).hexdigest()
    raw = fake.raw(message["id"])
    assert b"hidden@example.com" not in raw
    assert b"Message-ID: <big-1@odoo.example.com>" in raw
    assert graph(fake, "DELETE", f"/me/messages/{draft['id']}", token).status_code == 404  # sent: no draft


def test_json_draft_with_upload_and_own_internet_message_id(fake, token):
    message = {
        "subject": "json draft",
        "toRecipients": [{"emailAddress": {"address": "bob@example.com"}}],
        "internetMessageId": "<json-draft@odoo.example.com>",
    }
    draft = graph(fake, "POST", "/me/messages", token, json=message).json()
    url = upload_session(fake, token, draft["id"]).json()["uploadUrl"]
    assert put(url, 0, DATA).status_code == 201
    assert send_draft(fake, token, draft["id"]).status_code == 202
    [sent] = fake.messages()
    assert sent["internet_message_id"] == "<json-draft@odoo.example.com>"
    assert sent["attachments"][0]["sha256"] == hashlib.sha256(DATA).hexdigest()


def test_upload_session_refused_under_3mb(fake, token):
    draft = mime_draft(fake, token)
    answer = upload_session(fake, token, draft["id"], size=3 * 1024 * 1024 - 1)
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "ErrorAttachmentSizeShouldNotBeLessThanMinimumSize"


def test_upload_session_over_mailbox_limit_is_refused(fake, token):
    fake.configure(max_message_size=BIG - 1)
    draft = mime_draft(fake, token)
    answer = upload_session(fake, token, draft["id"])
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "ErrorMessageSizeExceeded"


def test_authorization_header_on_upload_url_is_refused(fake, token, session):
    url = session[1]["uploadUrl"]
    answer = put(url, 0, DATA[:CHUNK], Authorization=f"Bearer {token}")
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "InvalidAuthenticationToken"
    assert requests.get(url, timeout=10).json()["nextExpectedRanges"] == ["0-"]  # nothing stored


def test_upload_url_needs_its_tempauth(fake, session):
    url = session[1]["uploadUrl"].split("?")[0]
    assert put(url, 0, DATA[:CHUNK]).status_code == 401


def test_middle_chunk_must_be_a_multiple_of_320_kib(fake, session):
    url = session[1]["uploadUrl"]
    answer = put(url, 0, DATA[: CHUNK + 1])
    assert answer.status_code == 400
    assert "327680" in answer.json()["error"]["message"]


def test_chunk_over_4mb_is_413(fake, token):
    fake.configure(max_message_size=20 * 1024 * 1024)
    draft = mime_draft(fake, token)
    url = upload_session(fake, token, draft["id"], size=8 * 1024 * 1024).json()["uploadUrl"]
    answer = put(url, 0, b"\0" * (13 * CHUNK), total=8 * 1024 * 1024)
    assert answer.status_code == 413


def test_content_range_must_start_at_the_next_expected_byte(fake, session):
    url = session[1]["uploadUrl"]
    assert put(url, CHUNK, DATA[CHUNK : 2 * CHUNK]).status_code == 416
    assert put(url, 0, DATA[:CHUNK]).status_code == 200
    assert put(url, 0, DATA[:CHUNK]).status_code == 416  # already received


def test_content_range_total_must_match_declared_size(fake, session):
    url = session[1]["uploadUrl"]
    answer = put(url, 0, DATA[:CHUNK], total=BIG + 1)
    assert answer.status_code == 400


def test_content_range_must_match_the_body_length(fake, session):
    url = session[1]["uploadUrl"]
    answer = put(url, 0, DATA[: 2 * CHUNK], **{"Content-Range": f"bytes 0-{CHUNK - 1}/{BIG}"})
    assert answer.status_code == 400
    malformed = put(url, 0, DATA[:CHUNK], **{"Content-Range": "0-327679"})
    assert malformed.status_code == 400


def test_expired_upload_session_is_404(fake, token):
    fake.configure(upload_session_lifetime=0)
    draft = mime_draft(fake, token)
    url = upload_session(fake, token, draft["id"]).json()["uploadUrl"]
    assert put(url, 0, DATA[:CHUNK]).status_code == 404
    assert requests.get(url, timeout=10).status_code == 404


def test_upload_session_cancel(fake, session):
    url = session[1]["uploadUrl"]
    assert requests.delete(url, timeout=10).status_code == 204
    assert requests.get(url, timeout=10).status_code == 404


def test_send_requires_content_length(fake, token):
    draft = mime_draft(fake, token)
    parts = urlsplit(fake.graph_url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    connection.putrequest("POST", f"/v1.0/me/messages/{draft['id']}/send")
    connection.putheader("Authorization", f"Bearer {token}")
    connection.endheaders()
    answer = connection.getresponse()
    assert answer.status == 411
    connection.close()
    assert graph(fake, "POST", f"/me/messages/{draft['id']}/send", token, data=b"{}").status_code == 400
    assert fake.messages() == []


def test_send_over_mailbox_limit_is_refused_and_draft_kept(fake, token, session):
    draft, created = session
    url = created["uploadUrl"]
    assert put(url, 0, DATA).status_code == 201
    fake.configure(max_message_size=BIG + 1000)  # the base64 MIME is a third bigger than that
    answer = send_draft(fake, token, draft["id"])
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "ErrorMessageSizeExceeded"
    assert graph(fake, "DELETE", f"/me/messages/{draft['id']}", token).status_code == 204


def test_delete_draft(fake, token):
    draft = mime_draft(fake, token)
    assert graph(fake, "DELETE", f"/me/messages/{draft['id']}", token).status_code == 204
    assert graph(fake, "DELETE", f"/me/messages/{draft['id']}", token).status_code == 404
    assert send_draft(fake, token, draft["id"]).status_code == 404


def test_drafts_need_mail_readwrite(fake):
    token = delegated_token(fake.url, scopes="Mail.Send User.Read")
    answer = graph(fake, "POST", "/me/messages", token, json={"subject": "x"})
    assert answer.status_code == 403 and answer.json()["error"]["code"] == "ErrorAccessDenied"
    fake.configure(app_roles=["Mail.Send"])
    app = app_token(fake.url)
    answer = graph(fake, "POST", "/users/admin@contoso.onmicrosoft.com/messages", app, json={"subject": "x"})
    assert answer.status_code == 403


def test_draft_without_recipients_cannot_be_sent(fake, token):
    draft = graph(fake, "POST", "/me/messages", token, json={"subject": "nobody"}).json()
    answer = send_draft(fake, token, draft["id"])
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "ErrorInvalidRecipients"
