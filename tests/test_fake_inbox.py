"""Reading mailboxes on the fake: folders, message delta, $value, mark read, move, NDRs, inbox control API."""

from __future__ import annotations

import base64
import email
import email.policy
import time
from email.message import EmailMessage
from typing import Any, Dict, List, Tuple

import pytest
import requests

from fake_microsoft import FakeControl
from fake_microsoft.ndr import build_ndr, daily_limit
from fake_microsoft.testing import app_token, assert_graph_error, delegated_token

ADMIN = "admin@contoso.onmicrosoft.com"
SALES = "sales@contoso.onmicrosoft.com"


def graph(fake, method: str, path: str, token=None, **kwargs) -> requests.Response:
    headers = kwargs.pop("headers", {})
    if token:
        headers["Authorization"] = f"Bearer {token}"
    url = path if path.startswith("http") else fake.graph_url + path
    return requests.request(method, url, headers=headers, timeout=10, **kwargs)


def incoming(subject: str, sender: str = "alice@example.com", message_id: str = "") -> bytes:
    message = EmailMessage()
    message["From"] = f"Alice <{sender}>"
    message["To"] = ADMIN
    message["Subject"] = subject
    message["Message-ID"] = message_id or f"<{subject.replace(' ', '-')}@example.com>"
    message["Date"] = "Mon, 06 May 2024 10:00:00 +0000"
    message.set_content(f"body of {subject}")
    return message.as_bytes()


def delta_round(fake, token: str, url: str, page_size: int = 0) -> Tuple[List[Dict[str, Any]], str, int]:
    """Follow nextLinks to the deltaLink: (items, deltaLink, pages)."""
    headers = {"Prefer": f"odata.maxpagesize={page_size}"} if page_size else {}
    items: List[Dict[str, Any]] = []
    pages = 0
    while True:
        answer = graph(fake, "GET", url, token, headers=dict(headers))
        assert answer.status_code == 200, answer.text
        pages += 1
        body = answer.json()
        items += body["value"]
        if "@odata.deltaLink" in body:
            assert "@odata.nextLink" not in body
            return items, body["@odata.deltaLink"], pages
        url = body["@odata.nextLink"]


def send_mime(fake, token: str, raw: bytes) -> requests.Response:
    return graph(
        fake, "POST", "/me/sendMail", token, data=base64.b64encode(raw), headers={"Content-Type": "text/plain"}
    )


@pytest.fixture
def token(fake) -> str:
    return delegated_token(fake.url)


DELTA = "/me/mailFolders/inbox/messages/delta"


# --- folders -----------------------------------------------------------------------------------------


def test_folders_list_get_by_well_known_name_and_create(fake, token):
    listed = graph(fake, "GET", "/me/mailFolders", token).json()["value"]
    names = {f["displayName"] for f in listed}
    assert names == {"Inbox", "Sent Items", "Deleted Items", "Junk Email", "Drafts", "Archive"}
    inbox = graph(fake, "GET", "/me/mailFolders/InBox", token).json()
    assert inbox["displayName"] == "Inbox" and inbox["id"] in {f["id"] for f in listed}
    assert graph(fake, "GET", f"/me/mailFolders/{inbox['id']}", token).json()["displayName"] == "Inbox"
    fake.deliver(ADMIN, incoming("one"))
    inbox = graph(fake, "GET", "/me/mailFolders/inbox", token).json()
    assert (inbox["totalItemCount"], inbox["unreadItemCount"]) == (1, 1)

    created = graph(fake, "POST", "/me/mailFolders", token, json={"displayName": "Processed"})
    assert created.status_code == 201, created.text
    assert created.json()["displayName"] == "Processed"
    assert created.json()["parentFolderId"] == inbox["parentFolderId"]
    found = graph(fake, "GET", "/me/mailFolders", token, params={"$filter": "displayName eq 'Processed'"})
    assert [f["id"] for f in found.json()["value"]] == [created.json()["id"]]
    assert len(graph(fake, "GET", "/me/mailFolders", token, params={"$top": "2"}).json()["value"]) == 2

    duplicate = graph(fake, "POST", "/me/mailFolders", token, json={"displayName": "processed"})
    assert assert_graph_error(duplicate, 409, "ErrorFolderExists")["message"] == (
        "A folder with the specified name already exists."
    )
    assert_graph_error(graph(fake, "POST", "/me/mailFolders", token, json={"displayName": ""}), 400,
                       "ErrorInvalidParameter")  # fmt: skip
    missing = assert_graph_error(graph(fake, "GET", "/me/mailFolders/nosuch", token), 404, "ErrorItemNotFound")
    assert missing["message"] == "The specified object was not found in the store."


def test_create_folder_needs_mail_readwrite(fake):
    token = delegated_token(fake.url, scopes="Mail.Read User.Read")
    assert graph(fake, "GET", "/me/mailFolders", token).status_code == 200
    assert_graph_error(graph(fake, "POST", "/me/mailFolders", token, json={"displayName": "X"}), 403,
                       "ErrorAccessDenied")  # fmt: skip


# --- delta -------------------------------------------------------------------------------------------


def test_delta_pages_with_maxpagesize_then_delta_link(fake, token):
    ids = [fake.deliver(ADMIN, incoming(f"m{i}")) for i in range(7)]
    first = graph(fake, "GET", DELTA, token, headers={"Prefer": "odata.maxpagesize=3"})
    assert first.headers["Preference-Applied"] == "odata.maxpagesize=3"
    body = first.json()
    assert len(body["value"]) == 3 and "@odata.nextLink" in body and "@odata.deltaLink" not in body
    assert body["@odata.nextLink"].startswith(fake.graph_url + DELTA + "?") and "$skiptoken=" in body["@odata.nextLink"]
    items, delta_link, pages = delta_round(fake, token, DELTA, page_size=3)
    assert pages == 3
    assert sorted(i["id"] for i in items) == sorted(ids)
    item = items[0]
    assert item["@odata.type"] == "#microsoft.graph.message" and item["@odata.etag"] and item["changeKey"]
    assert set(item) >= {"receivedDateTime", "subject", "internetMessageId", "isRead", "from", "parentFolderId"}
    assert item["from"] == {"emailAddress": {"name": "Alice", "address": "alice@example.com"}}
    assert item["isRead"] is False and "body" not in item
    assert "$deltatoken=" in delta_link
    # Nothing changed: the next round is empty.
    assert delta_round(fake, token, delta_link)[0] == []


def test_second_round_shows_new_changed_and_removed_after_move(fake, token):
    keep, read, moved = (fake.deliver(ADMIN, incoming(s)) for s in ("keep", "read", "moved"))
    _, delta_link, _ = delta_round(fake, token, DELTA)
    archive_link = delta_round(fake, token, "/me/mailFolders/archive/messages/delta")[1]
    new = fake.deliver(ADMIN, incoming("new"))
    assert graph(fake, "PATCH", f"/me/messages/{read}", token, json={"isRead": True}).status_code == 200
    answer = graph(fake, "POST", f"/me/messages/{moved}/move", token, json={"destinationId": "archive"})
    assert answer.status_code == 201
    new_id = answer.json()["id"]
    items, delta_link, _ = delta_round(fake, token, delta_link)
    by_id = {i["id"]: i for i in items}
    assert set(by_id) == {new, read, moved}
    assert keep not in by_id
    assert by_id[read]["isRead"] is True
    assert by_id[moved] == {"id": moved, "@removed": {"reason": "deleted"}}
    assert by_id[new]["subject"] == "new"
    archived = delta_round(fake, token, archive_link)[0]
    assert [i["id"] for i in archived] == [new_id] and archived[0]["subject"] == "moved"
    assert delta_round(fake, token, delta_link)[0] == []


def test_select_keeps_only_named_properties_and_unknown_is_400(fake, token):
    fake.deliver(ADMIN, incoming("sel"))
    answer = graph(fake, "GET", DELTA, token, params={"$select": "subject,body"})
    item = answer.json()["value"][0]
    assert set(item) == {"@odata.type", "@odata.etag", "id", "changeKey", "subject", "body"}
    assert "$select=subject,body" in answer.json()["@odata.deltaLink"]
    error = assert_graph_error(graph(fake, "GET", DELTA, token, params={"$select": "subject,nope"}), 400,
                               "RequestBroker--ParseUri")  # fmt: skip
    assert error["message"] == "Could not find a property named 'nope' on type 'microsoft.graph.message'."


def test_filter_received_ge_excludes_older_messages(fake, token):
    now = time.time()
    fake.state.clock = lambda: now - 3 * 3600
    fake.deliver(ADMIN, incoming("old"))
    fake.state.clock = time.time
    fake.deliver(ADMIN, incoming("recent"))
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 3600))
    url = DELTA + f"?$filter=receivedDateTime ge {since}"
    items, delta_link, _ = delta_round(fake, token, url)
    assert [i["subject"] for i in items] == ["recent"]
    assert "$filter=receivedDateTime%20ge%20" in delta_link
    assert len(delta_round(fake, token, DELTA)[0]) == 2
    bad = graph(fake, "GET", DELTA, token, params={"$filter": "subject eq 'x'"})
    assert_graph_error(bad, 400, "ErrorInvalidUrlQueryFilter")


def test_top_caps_the_whole_round(fake, token):
    for i in range(5):
        fake.deliver(ADMIN, incoming(f"t{i}"))
    items, delta_link, pages = delta_round(fake, token, DELTA + "?$top=2", page_size=1)
    assert (len(items), pages) == (2, 2)
    assert "$top" not in delta_link
    # The three others were never returned and never will be: nothing changed since the round.
    assert delta_round(fake, token, delta_link)[0] == []


def test_expired_delta_tokens_answer_410_sync_state_not_found(fake, token):
    fake.deliver(ADMIN, incoming("a"))
    fake.deliver(ADMIN, incoming("b"))
    first = graph(fake, "GET", DELTA, token, headers={"Prefer": "odata.maxpagesize=1"}).json()
    _, delta_link, _ = delta_round(fake, token, DELTA)
    fake.expire_delta_tokens()
    for url in (delta_link, first["@odata.nextLink"]):
        error = assert_graph_error(graph(fake, "GET", url, token), 410, "SyncStateNotFound")
        assert error["message"] == (
            "The sync state generation is not found. Start the sync again without a delta token."
        )
    # Tokens also age out after delta_token_lifetime seconds of the fake's clock.
    _, delta_link, _ = delta_round(fake, token, DELTA)
    start = time.time()
    fake.state.clock = lambda: start + 8 * 24 * 3600
    fresh = delegated_token(fake.url)  # issued on the shifted clock
    assert_graph_error(graph(fake, "GET", delta_link, fresh), 410, "SyncStateNotFound")
    fake.state.clock = time.time
    assert_graph_error(graph(fake, "GET", DELTA + "?$deltatoken=garbage", token), 400, "BadRequest")


def test_fault_injection_on_delta_route(fake, token):
    fake.inject("delta", status=429, code="ApplicationThrottled", retry_after="3")
    answer = graph(fake, "GET", DELTA, token)
    assert_graph_error(answer, 429, "ApplicationThrottled")
    assert answer.headers["Retry-After"] == "3"
    assert graph(fake, "GET", DELTA, token).status_code == 200
    assert [c["status"] for c in fake.calls("delta")] == [429, 200]


# --- messages ----------------------------------------------------------------------------------------


def test_value_returns_exact_bytes_also_percent_encoded(fake, token):
    raw = incoming("exact").replace(b"\n", b"\r\n") + b"trailing bytes \xff kept\r\n"
    message_id = fake.deliver(ADMIN, raw)
    for suffix in ("$value", "%24value"):
        answer = graph(fake, "GET", f"/me/messages/{message_id}/{suffix}", token)
        assert answer.status_code == 200
        assert answer.content == raw
        assert answer.headers["Content-Type"].startswith("text/plain")
    assert fake.calls("messageValue")[-1]["status"] == 200
    resource = graph(fake, "GET", f"/me/messages/{message_id}", token).json()
    assert resource["internetMessageId"] == "<exact@example.com>" and resource["body"]["content"]
    assert_graph_error(graph(fake, "GET", "/me/messages/nosuch/$value", token), 404, "ErrorItemNotFound")


def test_read_basic_lists_but_cannot_get_value(fake):
    message_id = fake.deliver(ADMIN, incoming("basic"))
    token = delegated_token(fake.url, scopes="Mail.ReadBasic User.Read")
    items, _, _ = delta_round(fake, token, DELTA)
    assert [i["id"] for i in items] == [message_id]
    resource = graph(fake, "GET", f"/me/messages/{message_id}", token).json()
    assert resource["subject"] == "basic" and "body" not in resource
    error = assert_graph_error(graph(fake, "GET", f"/me/messages/{message_id}/$value", token), 403,
                               "ErrorAccessDenied")  # fmt: skip
    assert error["message"]
    # App-only with Mail.ReadBasic.All only: same rule.
    fake.configure(app_roles=["Mail.ReadBasic.All"])
    app = app_token(fake.url)
    assert graph(fake, "GET", f"/users/{ADMIN}/mailFolders/inbox/messages/delta", app).status_code == 200
    assert_graph_error(graph(fake, "GET", f"/users/{ADMIN}/messages/{message_id}/$value", app), 403,
                       "ErrorAccessDenied")  # fmt: skip


def test_permission_failures_are_403(fake):
    fake.deliver(ADMIN, incoming("p"))
    fake.configure(app_roles=["Mail.Send"])
    app = app_token(fake.url)
    assert_graph_error(graph(fake, "GET", f"/users/{ADMIN}/mailFolders/inbox/messages/delta", app), 403,
                       "ErrorAccessDenied")  # fmt: skip
    delegated = delegated_token(fake.url, scopes="Mail.Send User.Read")
    assert_graph_error(graph(fake, "GET", DELTA, delegated), 403, "ErrorAccessDenied")
    reader = delegated_token(fake.url, scopes="Mail.Read User.Read")
    message_id = fake.mailbox_messages(ADMIN)[0]["id"]
    assert_graph_error(graph(fake, "PATCH", f"/me/messages/{message_id}", reader, json={"isRead": True}), 403,
                       "ErrorAccessDenied")  # fmt: skip
    # Another mailbox needs a .Shared scope and a grant.
    assert_graph_error(graph(fake, "GET", f"/users/{SALES}/mailFolders/inbox/messages/delta", reader), 403,
                       "ErrorAccessDenied")  # fmt: skip
    missing = graph(fake, "GET", DELTA, None)
    assert_graph_error(missing, 401, "InvalidAuthenticationToken")


def test_patch_is_read_and_read_only_properties(fake, token):
    message_id = fake.deliver(ADMIN, incoming("patch"))
    before = graph(fake, "GET", f"/me/messages/{message_id}", token).json()
    answer = graph(fake, "PATCH", f"/me/messages/{message_id}", token, json={"isRead": True, "categories": ["Odoo"]})
    assert answer.status_code == 200, answer.text
    assert answer.json()["isRead"] is True and answer.json()["categories"] == ["Odoo"]
    assert answer.json()["changeKey"] != before["changeKey"]
    assert fake.mailbox_messages(ADMIN, "inbox")[0]["isRead"] is True
    assert_graph_error(graph(fake, "PATCH", f"/me/messages/{message_id}", token, json={"subject": "x"}), 400,
                       "ErrorInvalidPropertySet")  # fmt: skip
    assert_graph_error(graph(fake, "PATCH", f"/me/messages/{message_id}", token, json={"isRead": "yes"}), 400,
                       "RequestBodyRead")  # fmt: skip
    assert_graph_error(graph(fake, "PATCH", f"/me/messages/{message_id}", token, json={"bogus": 1}), 400,
                       "RequestBodyRead")  # fmt: skip
    assert_graph_error(graph(fake, "PATCH", "/me/messages/nosuch", token, json={"isRead": True}), 404,
                       "ErrorItemNotFound")  # fmt: skip


def test_move_gives_a_new_id_unless_immutable_ids_are_asked(fake, token):
    folder = graph(fake, "POST", "/me/mailFolders", token, json={"displayName": "Done"}).json()
    first = fake.deliver(ADMIN, incoming("first"))
    answer = graph(fake, "POST", f"/me/messages/{first}/move", token, json={"destinationId": folder["id"]})
    assert answer.status_code == 201, answer.text
    moved = answer.json()
    assert moved["id"] != first and moved["parentFolderId"] == folder["id"]
    assert_graph_error(graph(fake, "GET", f"/me/messages/{first}", token), 404, "ErrorItemNotFound")
    assert graph(fake, "GET", f"/me/messages/{moved['id']}", token).json()["subject"] == "first"
    assert [m["folder"] for m in fake.mailbox_messages(ADMIN)] == ["Done"]

    second = fake.deliver(ADMIN, incoming("second"))
    immutable = {"Prefer": 'IdType="ImmutableId"'}
    answer = graph(fake, "POST", f"/me/messages/{second}/move", token, json={"destinationId": "Archive"},
                   headers=immutable)  # fmt: skip
    assert answer.status_code == 201 and answer.json()["id"] == second
    assert graph(fake, "GET", f"/me/messages/{second}", token).json()["parentFolderId"] != folder["id"]
    unknown = graph(fake, "POST", f"/me/messages/{second}/move", token, json={"destinationId": "nowhere"})
    assert_graph_error(unknown, 404, "ErrorItemNotFound")


# --- non-delivery reports ----------------------------------------------------------------------------


def _parse(raw: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(raw, policy=email.policy.default)  # type: ignore[return-value]


def _sent(subject: str) -> bytes:
    message = EmailMessage()
    message["From"] = ADMIN
    message["To"] = "bob@refused.example, carol@fine.example"
    message["Cc"] = "dan@REFUSED.example"
    message["Bcc"] = "secret@refused.example"
    message["Subject"] = subject
    message["Message-ID"] = "<original-1@odoo.example.com>"
    message.set_content("hello")
    return message.as_bytes()


@pytest.mark.parametrize("shape", ["message", "headers"])
def test_refused_domain_bounces_an_ndr_into_the_senders_inbox(fake, token, shape):
    fake.configure(refused_recipients=["@refused.example"], ndr_original=shape)
    assert send_mime(fake, token, _sent("Caf\u00e9 quote")).status_code == 202
    assert fake.messages()[-1]["refused"] == ["bob@refused.example", "dan@REFUSED.example", "secret@refused.example"]
    inbox = fake.mailbox_messages(ADMIN, "inbox")
    assert len(inbox) == 1 and inbox[0]["subject"] == "Undeliverable: Caf\u00e9 quote"
    raw = graph(fake, "GET", f"/me/messages/{inbox[0]['id']}/$value", token).content
    report = _parse(raw)
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    assert report["From"].addresses[0].addr_spec.startswith("MicrosoftExchange329e71ec88ae4615bbc36ab6ce41109e@")
    assert report["In-Reply-To"] == report["References"] == "<original-1@odoo.example.com>"
    assert report["Auto-Submitted"] == "auto-replied" and "X-MS-Exchange-Message-Is-Ndr" in report
    human, status, original = report.get_payload()
    assert human.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in human.get_payload()] == ["text/plain", "text/html"]
    assert "couldn't be delivered" in human.get_payload()[0].get_content()
    assert status.get_content_type() == "message/delivery-status"
    blocks = status.get_payload()
    assert blocks[0]["Reporting-MTA"].endswith(".prod.outlook.com")
    # What Odoo reads: the second block's Final-Recipient, then the original's Message-Id.
    assert [b["Final-Recipient"] for b in blocks[1:]] == [
        "rfc822;bob@refused.example",
        "rfc822;dan@REFUSED.example",
        "rfc822;secret@refused.example",
    ]
    assert blocks[1]["Status"] == "5.1.10" and blocks[1]["Action"] == "failed"
    assert "RESOLVER.ADR.RecipientNotFound" in blocks[1]["Diagnostic-Code"]
    if shape == "message":
        assert original.get_content_type() == "message/rfc822"
        inner = original.get_payload()[0]
        assert inner.get_content().strip() == "hello"
    else:
        assert original.get_content_type() == "text/rfc822-headers"
        inner = email.message_from_string(original.get_content(), policy=email.policy.SMTP)
    assert inner["Message-Id"] == "<original-1@odoo.example.com>"
    assert inner["Bcc"] is None  # the copy as delivered
    # The delta query finds it like any new mail.
    assert [i["subject"] for i in delta_round(fake, token, DELTA)[0]] == ["Undeliverable: Caf\u00e9 quote"]


def test_no_ndr_without_refused_recipients_and_json_path_bounces_too(fake, token):
    assert send_mime(fake, token, _sent("fine")).status_code == 202
    assert fake.messages()[-1]["refused"] == []
    assert fake.mailbox_messages(ADMIN, "inbox") == []
    assert [m["subject"] for m in fake.mailbox_messages(ADMIN, "sentitems")] == ["fine"]
    fake.configure(refused_recipients=["bob@refused.example"])
    payload = {"message": {"subject": "json", "toRecipients": [{"emailAddress": {"address": "Bob@Refused.example"}}]}}
    assert graph(fake, "POST", "/me/sendMail", token, json=payload).status_code == 202
    assert [m["subject"] for m in fake.mailbox_messages(ADMIN, "inbox")] == ["Undeliverable: json"]


def test_build_ndr_daily_limit_shape():
    raw = build_ndr(_sent("limit"), ADMIN, [daily_limit("bob@x.example")], "contoso.onmicrosoft.com", time.time())
    blocks = _parse(raw).get_payload()[1].get_payload()
    assert blocks[1]["Status"] == "5.1.90"
    assert "daily limit for message recipients" in blocks[1]["Diagnostic-Code"]


def test_refused_recipients_config_is_validated(fake):
    with pytest.raises(ValueError):
        fake.configure(refused_recipients="example.com")
    with pytest.raises(ValueError):
        fake.configure(ndr_original="body")
    with pytest.raises(ValueError):
        fake.configure(delta_token_lifetime="soon")


# --- control API over HTTP ---------------------------------------------------------------------------


def test_control_deliver_list_and_expire_over_http(fake, token):
    raw = incoming("over http")
    answer = requests.post(
        fake.control_url + f"/mailboxes/{ADMIN}/messages",
        data=raw,
        params={"folder": "junkemail"},
        headers={"Content-Type": "message/rfc822"},
        timeout=10,
    )
    assert answer.status_code == 201
    message_id = answer.json()["id"]
    listed = requests.get(fake.control_url + f"/mailboxes/{ADMIN}/messages", timeout=10).json()
    assert listed == [
        {
            "id": message_id,
            "folder": "Junk Email",
            "isRead": False,
            "internetMessageId": "<over-http@example.com>",
            "subject": "over http",
            "receivedDateTime": listed[0]["receivedDateTime"],
            "from": "alice@example.com",
        }
    ]
    assert requests.get(fake.control_url + f"/mailboxes/{ADMIN}/messages?folder=inbox", timeout=10).json() == []
    assert requests.get(fake.control_url + "/mailboxes/ghost@x/messages", timeout=10).status_code == 400
    _, delta_link, _ = delta_round(fake, token, "/me/mailFolders/junkemail/messages/delta")
    assert requests.post(fake.control_url + "/delta/expire", timeout=10).status_code == 200
    assert_graph_error(graph(fake, "GET", delta_link, token), 410, "SyncStateNotFound")
    client = FakeControl(fake.url)
    second = client.deliver(SALES, incoming("client"), folder="inbox")
    assert [m["id"] for m in client.mailbox_messages(SALES, "inbox")] == [second]
    client.expire_delta_tokens()
    fake.reset()
    assert fake.mailbox_messages(ADMIN) == []
