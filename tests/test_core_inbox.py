"""MailboxReader against the fake Microsoft: delta rounds, MIME and filing in batches, throttling, lost sync."""

from __future__ import annotations

import datetime
import email.utils

import pytest

from fake_microsoft.defaults import CLIENT_ID, CLIENT_SECRET, TENANT_ID
from graph_mail import (
    AuthMode,
    GraphMailClient,
    MailboxCredentials,
    MailboxReader,
    PermissionDenied,
    RetryPolicy,
    SyncStateLost,
    Timeouts,
    Transport,
    resolve_cloud,
)

pytestmark = [pytest.mark.usefixtures("graph_mail_reset")]
MAILBOX = "sales@contoso.onmicrosoft.com"


def raw(subject: str, body: str = "Hello") -> bytes:
    return (
        f"From: Zoe <zoe@fabrikam.example>\r\nTo: {MAILBOX}\r\nSubject: {subject}\r\n"
        f"Message-ID: {email.utils.make_msgid(domain='fabrikam.example')}\r\n"
        f"Date: {email.utils.formatdate(usegmt=True)}\r\nContent-Type: text/plain\r\n\r\n{body}\r\n"
    ).encode()


@pytest.fixture
def sleeps():
    return []


@pytest.fixture
def records():
    return []


@pytest.fixture
def reader(fake, sleeps, records):
    cloud = resolve_cloud(authority_url=fake.authority_url, graph_url=fake.graph_url)
    creds = MailboxCredentials(
        TENANT_ID, CLIENT_ID, client_secret=CLIENT_SECRET, mode=AuthMode.APPLICATION, cloud=cloud
    )
    transport = Transport(timeouts=Timeouts(read=5, total=30), sleep=sleeps.append)
    client = GraphMailClient(creds, transport=transport, retry=RetryPolicy(backoff=0.01), on_call=records.append)
    return MailboxReader(client, MAILBOX, page_size=3)


def whole_round(reader, link):
    messages, pages = [], 0
    while True:
        page = reader.delta_page(link)
        pages += 1
        messages += page.messages
        if page.delta_link:
            return messages, page.delta_link, pages
        link = page.next_link


def test_a_round_pages_through_everything_then_only_what_is_new(fake, reader):
    for n in range(7):
        fake.deliver(MAILBOX, raw(f"mail {n}"))
    messages, delta_link, pages = whole_round(reader, reader.start_link("inbox"))
    assert sorted(m.subject for m in messages) == [f"mail {n}" for n in range(7)]
    assert pages == 3  # 3 + 3 + 1 with odata.maxpagesize=3
    fake.deliver(MAILBOX, raw("mail 7"))
    messages, _, _ = whole_round(reader, delta_link)
    assert [m.subject for m in messages] == ["mail 7"]


def test_since_leaves_history_out(fake, reader):
    fake.deliver(MAILBOX, raw("old"))
    later = datetime.datetime.utcnow() + datetime.timedelta(minutes=5)
    messages, _, _ = whole_round(reader, reader.start_link("inbox", since=later))
    assert messages == []


def test_mime_and_filing_go_twenty_and_ten_per_request(fake, reader):
    sent = {}
    for n in range(25):
        body = raw(f"mail {n}", body="x" * n)
        sent[fake.deliver(MAILBOX, body)] = body
    ids = list(sent)
    mark = len(fake.calls())
    mimes = reader.fetch_mimes(ids)
    assert mimes == sent, "the exact bytes of each message"
    folder = reader.ensure_folder("Odoo Processed")
    assert reader.ensure_folder("Odoo Processed") == folder, "found, not created twice"
    assert reader.file_many([(i, folder) for i in ids]) == {i: None for i in ids}
    outer = [c for c in fake.calls()[mark:] if c["route"] == "batch"]
    assert len(outer) == 2 + 3  # 25 MIME in 2 batches, 25 filings (2 operations each) in 3
    kept = {m["id"]: m for m in fake.mailbox_messages(MAILBOX)}
    assert all(kept[i]["folder"] == "Odoo Processed" and kept[i]["isRead"] for i in ids), "immutable ids"


def test_a_throttled_item_is_retried_alone_after_its_wait(fake, reader, sleeps, records):
    first, second = fake.deliver(MAILBOX, raw("one")), fake.deliver(MAILBOX, raw("two"))
    fake.inject("messageValue", status=429, retry_after=2, code="ApplicationThrottled")
    mimes = reader.fetch_mimes([first, second])
    assert all(isinstance(v, bytes) and b"Subject" in v for v in mimes.values())
    assert sleeps == [2.0]
    assert [(r.operation, r.status, r.outcome) for r in records if r.outcome == "retry"] == [
        ("messageValue", 429, "retry")
    ]


def test_an_item_that_is_gone_is_reported_not_fatal(fake, reader):
    kept = fake.deliver(MAILBOX, raw("kept"))
    mimes = reader.fetch_mimes([kept, "AAMkAGI2-no-such-message"])
    assert isinstance(mimes[kept], bytes)
    assert mimes["AAMkAGI2-no-such-message"].status == 404


def test_an_expired_delta_token_says_start_again(fake, reader):
    fake.deliver(MAILBOX, raw("one"))
    _, delta_link, _ = whole_round(reader, reader.start_link("inbox"))
    fake.expire_delta_tokens()
    with pytest.raises(SyncStateLost) as lost:
        reader.delta_page(delta_link)
    assert lost.value.status == 410
    assert "restarts" in lost.value.hint


def test_without_read_permission_the_hint_names_it(fake, reader):
    fake.configure(app_roles=["Mail.Send"])
    with pytest.raises(PermissionDenied) as denied:
        reader.delta_page(reader.start_link("inbox"))
    assert "Mail.ReadWrite" in denied.value.hint
