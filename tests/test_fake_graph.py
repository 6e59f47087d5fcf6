"""Graph mail endpoints: authentication, mailbox permissions, sendMail (MIME and JSON), Sent Items."""

from __future__ import annotations

import base64
import hashlib
import json
from email.message import EmailMessage
from urllib.parse import quote

import pytest
import requests

from fake_microsoft import DEFAULTS
from fake_microsoft.testing import app_token, assert_graph_error, delegated_token

ADMIN = "admin@contoso.onmicrosoft.com"
SALES = "sales@contoso.onmicrosoft.com"
LONG_REFERENCES = " ".join(f"<ref-{i}-{'x' * 20}@example.com>" for i in range(6))


def graph(fake, method: str, path: str, token=None, **kwargs) -> requests.Response:
    headers = kwargs.pop("headers", {})
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return requests.request(method, fake.graph_url + path, headers=headers, timeout=10, **kwargs)


def mime_message(sender: str = ADMIN, bcc: bool = True, to: str = "alice@example.com") -> bytes:
    message = EmailMessage()
    message["From"] = f"Admin <{sender}>"
    if to:
        message["To"] = to
    message["Cc"] = "carol@example.com"
    if bcc:
        message["Bcc"] = "secret@example.com"
    message["Subject"] = "Caf\u00e9 r\u00e9union"
    message["Message-ID"] = "<unique-1@odoo.example.com>"
    message["Date"] = "Mon, 06 May 2024 10:00:00 +0000"
    message["References"] = LONG_REFERENCES
    message.set_content("plain body")
    message.add_alternative("<p>html body</p>", subtype="html")
    message.add_attachment(b"%PDF-1.4 data", maintype="application", subtype="pdf", filename="quote.pdf")
    return message.as_bytes()


def send_mime(fake, token: str, raw: bytes, mailbox: str = "me", **kwargs) -> requests.Response:
    path = "/me/sendMail" if mailbox == "me" else f"/users/{mailbox}/sendMail"
    return graph(
        fake, "POST", path, token, data=base64.b64encode(raw), headers={"Content-Type": "text/plain", **kwargs}
    )


def json_mail(**message_overrides) -> dict:
    message = {
        "subject": "Hello",
        "body": {"contentType": "HTML", "content": "<b>hi</b>"},
        "toRecipients": [{"emailAddress": {"address": "alice@example.com", "name": "Alice"}}],
        "bccRecipients": [{"emailAddress": {"address": "hidden@example.com"}}],
        "internetMessageHeaders": [{"name": "X-Odoo-Id", "value": "42"}],
    }
    message.update(message_overrides)
    return {"message": message}


@pytest.fixture
def token(fake) -> str:
    return delegated_token(fake.url)


# --- users and authentication ------------------------------------------------------------------------


def test_me_returns_the_signed_in_user_with_request_ids(fake, token):
    answer = graph(fake, "GET", "/me", token, headers={"client-request-id": "my-id-1"})
    assert answer.status_code == 200
    assert answer.json()["userPrincipalName"] == ADMIN
    assert answer.json()["mail"] == ADMIN
    assert answer.headers["client-request-id"] == "my-id-1"
    assert answer.headers["request-id"]
    assert fake.calls("me")[-1]["client_request_id"] == "my-id-1"


def test_request_id_headers_are_generated_when_client_sends_none(fake, token):
    answer = graph(fake, "GET", "/me", token)
    assert answer.headers["request-id"] and answer.headers["client-request-id"]


def test_users_by_upn_with_app_token_and_unknown_user(fake):
    token = app_token(fake.url)
    assert graph(fake, "GET", f"/users/{SALES}", token).json()["userPrincipalName"] == SALES
    assert_graph_error(
        graph(fake, "GET", "/users/ghost@contoso.onmicrosoft.com", token), 404, "Request_ResourceNotFound"
    )
    assert_graph_error(graph(fake, "GET", "/me", token), 400, "BadRequest")


def test_missing_token_is_401(fake):
    error = assert_graph_error(graph(fake, "GET", "/me"), 401, "InvalidAuthenticationToken")
    assert error["message"] == "Access token is empty."


def test_garbage_token_is_401(fake):
    assert_graph_error(graph(fake, "GET", "/me", "not-a-token"), 401, "InvalidAuthenticationToken")


def test_expired_token_is_401_lifetime_validation_failed(fake, token):
    fake.expire_tokens()
    error = assert_graph_error(graph(fake, "GET", "/me", token), 401, "InvalidAuthenticationToken")
    assert error["message"] == "Lifetime validation failed, the token is expired."


def test_token_lifetime_zero_expires_immediately(fake):
    fake.configure(token_lifetime=0)
    token = delegated_token(fake.url)
    assert graph(fake, "GET", "/me", token).status_code == 401


# --- sendMail MIME ------------------------------------------------------------------------------------


def test_mime_send_is_202_empty_and_recorded_without_bcc(fake, token):
    raw = mime_message()
    answer = send_mime(fake, token, raw, **{"client-request-id": "cr-1"})
    assert answer.status_code == 202
    assert answer.content == b""
    [message] = fake.messages()
    assert message["via"] == "sendMail-mime"
    assert message["mailbox"] == ADMIN
    assert message["to"] == ["alice@example.com"]
    assert message["cc"] == ["carol@example.com"]
    assert message["bcc"] == ["secret@example.com"]
    assert message["recipients"] == ["alice@example.com", "carol@example.com", "secret@example.com"]
    assert message["subject"] == "Caf\u00e9 r\u00e9union"
    assert message["text"].strip() == "plain body"
    assert message["html"].strip() == "<p>html body</p>"
    assert message["internet_message_id"] == "<unique-1@odoo.example.com>"
    assert message["client_request_id"] == "cr-1"
    [attachment] = message["attachments"]
    assert attachment["name"] == "quote.pdf" and attachment["size"] == len(b"%PDF-1.4 data")
    stored = fake.raw(message["id"])
    assert b"Bcc:" not in stored and b"secret@example.com" not in stored
    assert stored == raw.replace(b"Bcc: secret@example.com\n", b"")  # every other byte kept
    assert message["size"] == len(stored)


def test_headers_are_listed_with_exact_unfolded_values(fake, token):
    raw = mime_message()
    assert b"\n " in raw.split(b"\n\n")[0]  # the References header really is folded
    send_mime(fake, token, raw)
    headers = fake.messages()[0]["headers"]
    assert ["References", LONG_REFERENCES] in headers
    assert ["Subject", "=?utf-8?q?Caf=C3=A9_r=C3=A9union?="] in headers
    assert not any(name.lower() == "bcc" for name, _ in headers)


def test_missing_message_id_and_date_are_added_like_exchange(fake, token):
    raw = mime_message().replace(b"Message-ID: <unique-1@odoo.example.com>\n", b"")
    raw = raw.replace(b"Date: Mon, 06 May 2024 10:00:00 +0000\n", b"")
    assert send_mime(fake, token, raw).status_code == 202
    message = fake.messages()[0]
    assert message["internet_message_id"].endswith("@contoso.onmicrosoft.com>")
    assert any(name == "Date" for name, _ in message["headers"])


def test_mime_without_recipients_is_refused(fake, token):
    answer = send_mime(fake, token, mime_message(bcc=False, to="").replace(b"Cc: carol@example.com\n", b""))
    assert_graph_error(answer, 400, "ErrorInvalidRecipients")
    assert fake.messages() == []


def test_mime_invalid_base64_is_refused(fake, token):
    answer = graph(fake, "POST", "/me/sendMail", token, data=b"not base64 !!!", headers={"Content-Type": "text/plain"})
    assert_graph_error(answer, 400, "ErrorMimeContentInvalidBase64String")


def test_request_over_4mb_is_413(fake, token):
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = ADMIN, "a@example.com", "big"
    message.set_content("x")
    message.add_attachment(b"\0" * (3 * 1024 * 1024 + 100), maintype="application", subtype="octet-stream")
    body = base64.b64encode(message.as_bytes())
    assert len(body) > 4 * 1024 * 1024
    answer = graph(fake, "POST", "/me/sendMail", token, data=body, headers={"Content-Type": "text/plain"})
    assert_graph_error(answer, 413, "RequestBodyTooLarge")


def test_message_over_mailbox_limit_is_refused(fake, token):
    fake.configure(max_message_size=1000)
    assert_graph_error(send_mime(fake, token, mime_message()), 400, "ErrorMessageSizeExceeded")


def test_unsupported_content_type_is_refused(fake, token):
    answer = graph(fake, "POST", "/me/sendMail", token, data=b"x", headers={"Content-Type": "application/xml"})
    assert answer.status_code == 415


# --- sendMail JSON ------------------------------------------------------------------------------------


def test_json_send_records_message_with_generated_message_id(fake, token):
    answer = graph(fake, "POST", "/me/sendMail", token, json=json_mail())
    assert answer.status_code == 202 and answer.content == b""
    [message] = fake.messages()
    assert message["via"] == "sendMail-json"
    assert message["internet_message_id"].endswith("@contoso.onmicrosoft.com>")
    assert message["bcc"] == ["hidden@example.com"]
    assert message["to"] == ["alice@example.com"]
    assert ["X-Odoo-Id", "42"] in message["headers"]
    assert message["html"].strip() == "<b>hi</b>"
    assert b"hidden@example.com" not in fake.raw(message["id"])


def test_json_non_x_header_is_refused(fake, token):
    mail = json_mail(internetMessageHeaders=[{"name": "In-Reply-To", "value": "<a@b>"}])
    assert_graph_error(graph(fake, "POST", "/me/sendMail", token, json=mail), 400, "InvalidInternetMessageHeader")


def test_json_without_recipients_is_refused(fake, token):
    mail = json_mail(toRecipients=[], bccRecipients=[])
    assert_graph_error(graph(fake, "POST", "/me/sendMail", token, json=mail), 400, "ErrorInvalidRecipients")


def test_json_unknown_property_is_refused(fake, token):
    mail = json_mail(inReplyTo="<x@y>")
    assert_graph_error(graph(fake, "POST", "/me/sendMail", token, json=mail), 400, "RequestBodyRead")


def test_json_inline_attachment_over_3mb_is_refused(fake, token):
    data = base64.b64encode(b"\0" * (3 * 1024 * 1024 + 1)).decode()
    attachment = {"@odata.type": "#microsoft.graph.fileAttachment", "name": "big.bin", "contentBytes": data}
    answer = graph(fake, "POST", "/me/sendMail", token, json=json_mail(attachments=[attachment]))
    assert answer.status_code == 413


def test_json_save_to_sent_items_false_is_not_filed(fake, token):
    mail = {**json_mail(), "saveToSentItems": False}
    assert graph(fake, "POST", "/me/sendMail", token, json=mail).status_code == 202
    listing = graph(fake, "GET", "/me/mailFolders/SentItems/messages", token).json()
    assert listing["value"] == []


# --- mailbox permissions ------------------------------------------------------------------------------


def test_delegated_send_from_another_mailbox_needs_send_as(fake, token):
    answer = send_mime(fake, token, mime_message(sender=SALES), mailbox=SALES)
    assert_graph_error(answer, 403, "ErrorSendAsDenied")
    fake.configure(send_as={ADMIN: [SALES]})
    assert send_mime(fake, token, mime_message(sender=SALES), mailbox=SALES).status_code == 202
    assert fake.messages()[0]["mailbox"] == SALES


def test_delegated_send_as_needs_mail_send_shared_scope(fake):
    fake.configure(send_as={ADMIN: [SALES]})
    token = delegated_token(fake.url, scopes="Mail.Send User.Read")
    assert_graph_error(send_mime(fake, token, mime_message(sender=SALES), mailbox=SALES), 403, "ErrorSendAsDenied")


def test_from_address_without_send_as_right_is_refused(fake, token):
    answer = send_mime(fake, token, mime_message(sender="ceo@contoso.onmicrosoft.com"))
    assert_graph_error(answer, 403, "ErrorSendAsDenied")


def test_own_mailbox_via_users_path_is_allowed(fake, token):
    assert send_mime(fake, token, mime_message(), mailbox=ADMIN).status_code == 202


def test_delegated_without_mail_send_scope_is_denied(fake):
    token = delegated_token(fake.url, scopes="User.Read")
    assert_graph_error(send_mime(fake, token, mime_message()), 403, "ErrorAccessDenied")


def test_app_token_sends_as_any_mailbox_unless_policy_restricts(fake):
    token = app_token(fake.url)
    assert send_mime(fake, token, mime_message(sender=SALES), mailbox=SALES).status_code == 202
    fake.configure(allowed_mailboxes=[ADMIN])
    assert_graph_error(send_mime(fake, token, mime_message(sender=SALES), mailbox=SALES), 403, "ErrorAccessDenied")
    assert send_mime(fake, token, mime_message(), mailbox=ADMIN).status_code == 202


def test_app_token_without_mail_send_role_is_denied(fake):
    fake.configure(app_roles=["User.Read.All"])
    token = app_token(fake.url)
    assert_graph_error(send_mime(fake, token, mime_message(), mailbox=ADMIN), 403, "ErrorAccessDenied")


def test_unknown_mailbox_and_disabled_mailbox(fake):
    users = [*DEFAULTS["users"], {"id": "u-4", "userPrincipalName": "onprem@contoso.onmicrosoft.com",
                                  "mail": "onprem@contoso.onmicrosoft.com", "displayName": "On Prem",
                                  "mailbox_enabled": False}]  # fmt: skip
    fake.configure(users=users)
    token = app_token(fake.url)
    answer = send_mime(fake, token, mime_message(), mailbox="ghost@contoso.onmicrosoft.com")
    assert_graph_error(answer, 404, "ResourceNotFound")
    answer = send_mime(
        fake, token, mime_message(sender="onprem@contoso.onmicrosoft.com"), mailbox="onprem@contoso.onmicrosoft.com"
    )
    assert_graph_error(answer, 404, "MailboxNotEnabledForRESTAPI")


# --- Sent Items ---------------------------------------------------------------------------------------


def sent_items_filter(message_id: str) -> str:
    return "/me/mailFolders/SentItems/messages?$filter=" + quote(f"internetMessageId eq '{message_id}'")


def test_sent_items_filtered_by_internet_message_id(fake, token):
    send_mime(fake, token, mime_message())
    found = graph(fake, "GET", sent_items_filter("<unique-1@odoo.example.com>"), token)
    assert found.status_code == 200
    [item] = found.json()["value"]
    assert item["internetMessageId"] == "<unique-1@odoo.example.com>"
    missing = graph(fake, "GET", sent_items_filter("<other@odoo.example.com>"), token)
    assert missing.json()["value"] == []


def test_sent_items_need_a_read_permission(fake):
    token = delegated_token(fake.url, scopes="Mail.Send User.Read")
    answer = graph(fake, "GET", sent_items_filter("<x@y>"), token)
    assert_graph_error(answer, 403, "ErrorAccessDenied")


def test_sent_items_other_filters_are_refused(fake, token):
    answer = graph(fake, "GET", "/me/mailFolders/SentItems/messages?$filter=subject eq 'x'", token)
    assert_graph_error(answer, 400, "BadRequest")


# --- addAttachment: POST .../messages/{id}/attachments (fileAttachment under 3 MB) --------------------


def create_mime_draft(fake, token, mailbox: str = "me") -> str:
    path = "/me/messages" if mailbox == "me" else f"/users/{mailbox}/messages"
    raw = mime_message(bcc=False)
    answer = graph(fake, "POST", path, token, data=base64.b64encode(raw), headers={"Content-Type": "text/plain"})
    assert answer.status_code == 201, answer.text
    return answer.json()["id"]


def file_attachment(data: bytes, name: str = "notes.pdf", **extra) -> dict:
    body = {
        "@odata.type": "#microsoft.graph.fileAttachment",
        "name": name,
        "contentType": "application/pdf",
        "contentBytes": base64.b64encode(data).decode("ascii"),
    }
    body.update(extra)
    return body


def test_add_attachment_to_a_draft_is_delivered_with_the_message(fake, token):
    draft_id = create_mime_draft(fake, token)
    data = bytes(range(256)) * 8000  # ~2 MB, under the 3 MB limit
    answer = graph(fake, "POST", f"/me/messages/{draft_id}/attachments", token, json=file_attachment(data))
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body["@odata.type"] == "#microsoft.graph.fileAttachment" and body["id"]
    assert body["name"] == "notes.pdf" and body["size"] == len(data) and body["isInline"] is False
    assert answer.headers["request-id"]
    logo = file_attachment(b"\x89PNG", name="logo.png", contentType="image/png", isInline=True, contentId="logo@x")
    assert graph(fake, "POST", f"/me/messages/{draft_id}/attachments", token, json=logo).status_code == 201
    assert graph(fake, "POST", f"/me/messages/{draft_id}/send", token, data=b"").status_code == 202
    (stored,) = fake.messages()
    by_name = {a["name"]: a for a in stored["attachments"]}
    assert by_name["notes.pdf"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert by_name["notes.pdf"]["size"] == len(data)
    assert by_name["logo.png"]["is_inline"] and by_name["logo.png"]["content_id"] == "logo@x"
    assert "quote.pdf" in by_name  # the draft's own attachment is kept
    assert [c["status"] for c in fake.calls(route="addAttachment")] == [201, 201]


def test_add_attachment_to_a_json_draft(fake, token):
    message = json_mail()["message"]
    created = graph(fake, "POST", "/me/messages", token, json=message)
    assert created.status_code == 201, created.text
    draft_id = created.json()["id"]
    answer = graph(fake, "POST", f"/me/messages/{draft_id}/attachments", token, json=file_attachment(b"%PDF tiny"))
    assert answer.status_code == 201, answer.text
    assert graph(fake, "POST", f"/me/messages/{draft_id}/send", token, data=b"").status_code == 202
    (stored,) = fake.messages()
    assert [a["name"] for a in stored["attachments"]] == ["notes.pdf"]


def test_add_attachment_just_under_3mb_is_accepted_over_is_413(fake, token):
    draft_id = create_mime_draft(fake, token)
    data = b"\0" * (3 * 1024 * 1024 + 1)  # base64 alone is then over the 4 MB request limit
    answer = graph(fake, "POST", f"/me/messages/{draft_id}/attachments", token, json=file_attachment(data[:3_000_000]))
    assert answer.status_code == 201, answer.text
    body = json.dumps(file_attachment(data)).encode()
    answer = graph(
        fake, "POST", f"/me/messages/{draft_id}/attachments", token, data=body,
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    assert_graph_error(answer, 413, "RequestBodyTooLarge")


def test_add_attachment_over_3mb_with_a_small_request_is_413(fake, token, monkeypatch):
    from fake_microsoft import graph as fake_graph

    monkeypatch.setattr(fake_graph, "INLINE_ATTACHMENT_LIMIT", 1000)  # decoded size rule alone, whatever the request
    draft_id = create_mime_draft(fake, token)
    answer = graph(fake, "POST", f"/me/messages/{draft_id}/attachments", token, json=file_attachment(b"x" * 1001))
    error = assert_graph_error(answer, 413, "RequestBodyTooLarge")
    assert "upload session" in error["message"]


def test_add_attachment_request_over_4mb_is_413_before_authentication(fake):
    body = b'{"contentBytes": "' + b"A" * (4 * 1024 * 1024) + b'"}'
    answer = graph(fake, "POST", "/me/messages/whatever/attachments", None, data=body,
                   headers={"Content-Type": "application/json"})  # fmt: skip
    assert_graph_error(answer, 413, "RequestBodyTooLarge")


def test_add_attachment_needs_mail_readwrite(fake):
    writer = delegated_token(fake.url)
    draft_id = create_mime_draft(fake, writer)
    reader = delegated_token(fake.url, scopes="Mail.Send User.Read")
    answer = graph(fake, "POST", f"/me/messages/{draft_id}/attachments", reader, json=file_attachment(b"x"))
    assert_graph_error(answer, 403, "ErrorAccessDenied")
    fake.configure(app_roles=["Mail.Send"])
    app = app_token(fake.url)
    answer = graph(fake, "POST", f"/users/{ADMIN}/messages/{draft_id}/attachments", app, json=file_attachment(b"x"))
    assert_graph_error(answer, 403, "ErrorAccessDenied")


def test_add_attachment_needs_an_existing_draft(fake, token):
    answer = graph(fake, "POST", "/me/messages/AAMkAGI2-missing/attachments", token, json=file_attachment(b"x"))
    assert_graph_error(answer, 404, "ErrorItemNotFound")
    draft_id = create_mime_draft(fake, token)
    assert graph(fake, "POST", f"/me/messages/{draft_id}/send", token, data=b"").status_code == 202
    answer = graph(fake, "POST", f"/me/messages/{draft_id}/attachments", token, json=file_attachment(b"x"))
    assert_graph_error(answer, 404, "ErrorItemNotFound")  # sent: no longer a draft


def test_add_attachment_in_another_users_draft_is_not_found(fake):
    app = app_token(fake.url)
    draft_id = create_mime_draft(fake, app, mailbox=ADMIN)
    answer = graph(fake, "POST", f"/users/{SALES}/messages/{draft_id}/attachments", app, json=file_attachment(b"x"))
    assert_graph_error(answer, 404, "ErrorItemNotFound")


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"name": "a.txt", "contentBytes": "eA=="}, 400, "ErrorInvalidAttachmentType"),
        (file_attachment(b"x", unknownProperty=1), 400, "RequestBodyRead"),
        (file_attachment(b"x", name=""), 400, "ErrorInvalidParameter"),
        ({"@odata.type": "#microsoft.graph.fileAttachment", "name": "a"}, 400, "ErrorInvalidParameter"),
        (file_attachment(b"x", contentBytes="not base64!"), 400, "ErrorInvalidRequest"),
    ],
)
def test_add_attachment_bad_bodies(fake, token, body, status, code):
    draft_id = create_mime_draft(fake, token)
    answer = graph(fake, "POST", f"/me/messages/{draft_id}/attachments", token, json=body)
    assert_graph_error(answer, status, code)


def test_add_attachment_is_json_only_and_injectable(fake, token):
    draft_id = create_mime_draft(fake, token)
    answer = graph(fake, "POST", f"/me/messages/{draft_id}/attachments", token, data=b"eA==",
                   headers={"Content-Type": "text/plain"})  # fmt: skip
    assert_graph_error(answer, 415, "UnsupportedMediaType")
    fake.inject("addAttachment", status=503, retry_after="1", count=1)
    answer = graph(fake, "POST", f"/me/messages/{draft_id}/attachments", token, json=file_attachment(b"x"))
    assert_graph_error(answer, 503, "ServiceUnavailable")
    assert answer.headers["Retry-After"] == "1"


def test_a_client_hanging_up_first_prints_no_traceback(fake, capsys):
    server = fake._server
    for exc in (BrokenPipeError(32, "Broken pipe"), ConnectionResetError(104, "reset"), ValueError("real bug")):
        try:
            raise exc
        except Exception:
            server.handle_error(None, ("127.0.0.1", 50000))
    err = capsys.readouterr().err
    assert "BrokenPipeError" not in err and "ConnectionResetError" not in err
    assert "real bug" in err  # anything else is still reported
